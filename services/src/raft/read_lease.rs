//! A leader's read lease: reads confirmed by the majority's recent
//! acknowledgements instead of a round of their own.
//!
//! A follower that accepts an append (or heartbeat) of its leader refuses
//! every vote request for openraft's `leader_lease` after it (the election
//! timeout's upper bound). So once a majority has accepted appends the
//! leader *sent* at `t` or later, no other leader can be elected before
//! `t + leader_lease` (measured on those followers' clocks), and until then
//! this leader's commit index covers every write acknowledged anywhere.
//! A read can then be served after applying up to the commit index, with
//! no heartbeat round: the lease's span is the election timeout's *lower*
//! bound, a third less than the followers' lease, which leaves room for
//! their clocks to run slower than the leader's (as Raft's thesis §6.4,
//! etcd and TiKV do). The acknowledgements come from the appends this
//! node really sent and was answered (`network`): not openraft's own clock,
//! which also counts commit pushes answered in place (`commit_push`).
//!
//! What else it rests on:
//! - A follower that restarts forgets when it last heard its leader, and
//!   would vote at once. So for the followers' lease after it starts, a
//!   node neither votes nor campaigns (`lease`, the restart hold; a node
//!   with no Raft state at all still grants term 1, which no leader came
//!   before).
//! - A leader that has not committed an entry of its own term does not
//!   know the commit index yet; it confirms with a round, as before.
//! - A follower applies up to a read index only once it hears that index
//!   is committed; the lease records which commit index each follower was
//!   sent, and a follower's read waits for a round when one was not
//!   (`read_barrier`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::Vote;

use super::NodeId;

pub struct ReadLease {
    /// How long after a send a majority acknowledged the lease holds.
    span: Duration,
    /// What each peer accepted, updated with every answered append.
    peers: Mutex<HashMap<NodeId, Accepted>>,
}

struct Accepted {
    /// The latest send it accepted, and whose (the leader's vote) it was.
    vote: Vote<NodeId>,
    sent_at: Instant,
    /// The highest commit index an append it accepted carried.
    commit: u64,
}

impl ReadLease {
    /// The lease of a group whose election timeout is at least
    /// `election_timeout_min`.
    pub fn new(election_timeout_min: Duration) -> Self {
        Self {
            span: election_timeout_min,
            peers: Mutex::default(),
        }
    }

    /// `peer` accepted an append that the leader voted `vote` sent at
    /// `sent_at`, carrying commit index `committed`: it took `vote` as its
    /// leader's, holds off elections for its lease from some time after
    /// `sent_at`, and knows `committed` is committed.
    pub fn acknowledged(
        &self,
        peer: NodeId,
        vote: &Vote<NodeId>,
        sent_at: Instant,
        committed: Option<u64>,
    ) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let commit = committed.unwrap_or(0);
        match peers.get_mut(&peer) {
            Some(a) => {
                if a.vote != *vote || a.sent_at < sent_at {
                    a.vote = *vote;
                    a.sent_at = sent_at;
                }
                a.commit = a.commit.max(commit);
            }
            None => {
                peers.insert(
                    peer,
                    Accepted {
                        vote: *vote,
                        sent_at,
                        commit,
                    },
                );
            }
        }
    }

    /// Whether some voter of `configs` but `me` has not been sent commit
    /// index `index` yet.
    pub fn commit_unsent(&self, me: NodeId, configs: &[BTreeSet<NodeId>], index: u64) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        configs
            .iter()
            .flatten()
            .filter(|id| **id != me)
            .any(|id| peers.get(id).is_none_or(|a| a.commit < index))
    }

    /// Until when `me`, leading as `vote` over the voter sets `configs` (two
    /// during a joint membership change; a majority of each is needed),
    /// holds the lease; `None` if some set has no majority acknowledging
    /// `vote` yet. `now` stands for `me`'s own acknowledgement.
    pub fn holds_until(
        &self,
        me: NodeId,
        vote: &Vote<NodeId>,
        configs: &[BTreeSet<NodeId>],
        now: Instant,
    ) -> Option<Instant> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let acked = |id: &NodeId| {
            if *id == me {
                return Some(now);
            }
            peers.get(id).filter(|a| a.vote == *vote).map(|a| a.sent_at)
        };
        let mut oldest: Option<Instant> = None;
        for voters in configs {
            let mut times: Vec<Instant> = voters.iter().filter_map(acked).collect();
            let majority = voters.len() / 2 + 1;
            if times.len() < majority {
                return None;
            }
            // The majority-th latest acknowledgement: a majority acknowledged
            // a send at or after it.
            times.sort_unstable_by(|a, b| b.cmp(a));
            let t = times[majority - 1];
            oldest = Some(oldest.map_or(t, |o| o.min(t)));
        }
        oldest.map(|t| t + self.span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAN: Duration = Duration::from_millis(1000);

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn the_lease_runs_from_the_send_a_majority_acknowledged() {
        let lease = ReadLease::new(SPAN);
        let vote = Vote::new_committed(3, 1);
        let t0 = Instant::now();
        let now = t0 + Duration::from_millis(300);
        // No follower has answered yet: the leader alone is no majority.
        assert_eq!(lease.holds_until(1, &vote, &[set(&[1, 2, 3])], now), None);
        lease.acknowledged(2, &vote, t0, None);
        lease.acknowledged(3, &vote, t0 + Duration::from_millis(100), None);
        // The leader and the latest follower make the majority of three.
        assert_eq!(
            lease.holds_until(1, &vote, &[set(&[1, 2, 3])], now),
            Some(t0 + Duration::from_millis(100) + SPAN)
        );
        // Of five, the third latest: the leader, node 3, then node 2.
        assert_eq!(
            lease.holds_until(1, &vote, &[set(&[1, 2, 3, 4, 5])], now),
            Some(t0 + SPAN)
        );
        // An older answer arriving late does not move it back.
        lease.acknowledged(3, &vote, t0, None);
        assert_eq!(
            lease.holds_until(1, &vote, &[set(&[1, 2, 3])], now),
            Some(t0 + Duration::from_millis(100) + SPAN)
        );
    }

    #[test]
    fn only_acknowledgements_of_this_leadership_count() {
        let lease = ReadLease::new(SPAN);
        let old = Vote::new_committed(3, 1);
        let new = Vote::new_committed(4, 1);
        let t0 = Instant::now();
        lease.acknowledged(2, &old, t0, None);
        lease.acknowledged(3, &old, t0, None);
        assert_eq!(lease.holds_until(1, &new, &[set(&[1, 2, 3])], t0), None);
        lease.acknowledged(2, &new, t0, None);
        assert_eq!(
            lease.holds_until(1, &new, &[set(&[1, 2, 3])], t0),
            Some(t0 + SPAN)
        );
    }

    #[test]
    fn a_follower_not_yet_sent_the_commit_index_is_told() {
        let lease = ReadLease::new(SPAN);
        let voters = [set(&[1, 2, 3])];
        let vote = Vote::new_committed(3, 1);
        let t0 = Instant::now();
        assert!(lease.commit_unsent(1, &voters, 5));
        lease.acknowledged(2, &vote, t0, Some(5));
        assert!(lease.commit_unsent(1, &voters, 5), "node 3 has not heard");
        lease.acknowledged(3, &vote, t0, Some(7));
        lease.acknowledged(3, &vote, t0, Some(6));
        assert!(!lease.commit_unsent(1, &voters, 5));
        assert!(lease.commit_unsent(1, &voters, 7), "node 2 heard only 5");
    }

    #[test]
    fn a_joint_membership_needs_a_majority_of_each_set() {
        let lease = ReadLease::new(SPAN);
        let vote = Vote::new_committed(2, 1);
        let t0 = Instant::now();
        lease.acknowledged(2, &vote, t0, None);
        let joint = [set(&[1, 2, 3]), set(&[4, 5, 6])];
        assert_eq!(lease.holds_until(1, &vote, &joint, t0), None);
        lease.acknowledged(4, &vote, t0 + Duration::from_millis(50), None);
        lease.acknowledged(5, &vote, t0 + Duration::from_millis(20), None);
        assert_eq!(
            lease.holds_until(1, &vote, &joint, t0 + Duration::from_millis(60)),
            Some(t0 + SPAN)
        );
    }
}
