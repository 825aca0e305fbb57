//! What a node knows about replication beyond openraft's metrics: when each
//! log entry was appended here (for lag in seconds), the committed index, and
//! whether each peer answered its last Raft RPC (so a leader can tell the
//! coordinators which followers it cannot reach).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::{now_ms, NodeId};

/// Append times kept; older ones are forgotten (a follower that far behind
/// gets a snapshot, and its lag is reported from the oldest time kept).
const TIMES_KEPT: usize = 200_000;

#[derive(Default)]
pub struct Progress {
    /// Log index → wall-clock ms when this node appended it.
    appended: Mutex<BTreeMap<u64, u64>>,
    /// Committed index + 1 (0: nothing committed yet).
    committed: AtomicU64,
    contacts: Mutex<HashMap<NodeId, Contact>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Contact {
    last_ok: Option<Instant>,
    failing: bool,
}

/// How the last Raft RPCs to a peer went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerContact {
    /// Milliseconds since the last RPC the peer answered, if it ever did.
    pub last_ok_ms_ago: Option<u64>,
    /// Whether the most recent RPC failed (refused, timed out, bad status).
    pub failing: bool,
}

impl Progress {
    pub fn appended(&self, indexes: impl IntoIterator<Item = u64>) {
        let now = now_ms();
        if let Ok(mut times) = self.appended.lock() {
            for index in indexes {
                times.insert(index, now);
            }
            while times.len() > TIMES_KEPT {
                times.pop_first();
            }
        }
    }

    /// Entries from `index` on were removed (a conflicting suffix).
    pub fn truncated(&self, index: u64) {
        if let Ok(mut times) = self.appended.lock() {
            times.split_off(&index);
        }
    }

    /// Wall-clock ms when the first entry at or after `index` still known
    /// was appended here.
    pub fn appended_at(&self, index: u64) -> Option<u64> {
        let times = self.appended.lock().ok()?;
        times.range(index..).next().map(|(_, t)| *t)
    }

    pub fn set_committed(&self, index: Option<u64>) {
        self.committed
            .store(index.map_or(0, |i| i + 1), Ordering::Relaxed);
    }

    pub fn committed(&self) -> Option<u64> {
        self.committed.load(Ordering::Relaxed).checked_sub(1)
    }

    pub fn rpc_result(&self, peer: NodeId, ok: bool) {
        if let Ok(mut contacts) = self.contacts.lock() {
            let c = contacts.entry(peer).or_default();
            c.failing = !ok;
            if ok {
                c.last_ok = Some(Instant::now());
            }
        }
    }

    pub fn contact(&self, peer: NodeId) -> Option<PeerContact> {
        let contacts = self.contacts.lock().ok()?;
        contacts.get(&peer).map(|c| PeerContact {
            last_ok_ms_ago: c.last_ok.map(|t| t.elapsed().as_millis() as u64),
            failing: c.failing,
        })
    }

    /// Replication lag of a follower that has `matched` while the leader's
    /// log ends at `last`: (entries, seconds). Unknown while the leader has
    /// not yet heard what the follower holds (`matched` is none right after
    /// an election, or for a follower never reached): counting the whole
    /// log then reported tens of seconds of lag for a follower in step.
    pub fn lag(&self, matched: Option<u64>, last: Option<u64>) -> Option<(u64, f64)> {
        let next = matched? + 1;
        let Some(last) = last.filter(|l| *l >= next) else {
            return Some((0, 0.0));
        };
        let entries = last - next + 1;
        let seconds = self
            .appended_at(next)
            .map_or(0.0, |t| now_ms().saturating_sub(t) as f64 / 1000.0);
        Some((entries, seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_missing_entries_and_ages_the_oldest() {
        let p = Progress::default();
        p.appended([1, 2, 3]);
        assert_eq!(p.lag(Some(3), Some(3)), Some((0, 0.0)));
        let (entries, seconds) = p.lag(Some(1), Some(3)).unwrap();
        assert_eq!(entries, 2);
        assert!(seconds >= 0.0);
        assert_eq!(p.lag(None, Some(3)), None, "not known yet");
        p.truncated(2);
        assert_eq!(p.appended_at(2), None);
    }

    #[test]
    fn committed_distinguishes_none_from_zero() {
        let p = Progress::default();
        assert_eq!(p.committed(), None);
        p.set_committed(Some(0));
        assert_eq!(p.committed(), Some(0));
    }

    #[test]
    fn contact_tracks_the_last_rpc() {
        let p = Progress::default();
        assert_eq!(p.contact(2), None);
        p.rpc_result(2, true);
        p.rpc_result(2, false);
        let c = p.contact(2).unwrap();
        assert!(c.failing);
        assert!(c.last_ok_ms_ago.is_some());
    }
}
