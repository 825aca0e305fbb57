//! What a node knows of its Raft log in memory: every entry's id and size,
//! the newest entries themselves, and where on disk the older ones lie.
//!
//! Why not every entry in memory: between two snapshots a group keeps tens
//! of thousands of entries (`snapshot_every` plus the half kept after it),
//! and the order group's are a few KiB each; held decoded, they were about
//! a third of an order node's memory under load. Only a follower that fell
//! behind, or a restart's replay, reads the older ones, and those read them
//! from the segment files (mostly still in the page cache).
//!
//! An entry leaves memory only once the writer thread reports it on disk
//! (`written`), oldest first, while the resident ones are more than the
//! spec's `raft.resident_log_kib` encoded (held decoded, about twice that).

use std::collections::BTreeMap;
use std::ops::RangeBounds;

use openraft::{Entry, LogId, Vote};

use super::log_engine::{Location, Written};
use super::{NodeId, TypeConfig};
use crate::metrics::METRICS;

#[derive(Debug)]
struct Slot {
    log_id: LogId<NodeId>,
    /// Its encoded record's length: what it costs to hold and to send.
    size: usize,
    entry: Option<Entry<TypeConfig>>,
    location: Option<Location>,
}

/// One entry of a read: in hand, or to be read from disk.
#[derive(Debug)]
pub enum Planned {
    Here(Entry<TypeConfig>),
    OnDisk(Location),
}

#[derive(Debug)]
pub struct LogState {
    slots: BTreeMap<u64, Slot>,
    /// Sum of the resident entries' sizes.
    resident_bytes: usize,
    /// No entry below this index is resident.
    evicted_below: u64,
    /// At most this many encoded bytes stay resident.
    resident_limit: usize,
    /// What this state last added to the node's resident-bytes gauge,
    /// which sums every shard's.
    reported: usize,
    pub vote: Option<Vote<NodeId>>,
    pub committed: Option<LogId<NodeId>>,
    pub last_purged: Option<LogId<NodeId>>,
}

impl LogState {
    pub fn with_resident_limit(resident_limit: usize) -> Self {
        Self {
            slots: BTreeMap::new(),
            resident_bytes: 0,
            evicted_below: 0,
            resident_limit,
            reported: 0,
            vote: None,
            committed: None,
            last_purged: None,
        }
    }

    /// An entry appended here, not yet on disk.
    pub fn append(&mut self, entry: Entry<TypeConfig>, size: usize) {
        self.insert(Slot {
            log_id: entry.log_id,
            size,
            entry: Some(entry),
            location: None,
        });
    }

    /// An entry read back from disk at start.
    pub fn replayed(&mut self, entry: Entry<TypeConfig>, location: Location) {
        self.insert(Slot {
            log_id: entry.log_id,
            size: location.size(),
            entry: Some(entry),
            location: Some(location),
        });
        self.evict();
    }

    fn insert(&mut self, slot: Slot) {
        let index = slot.log_id.index;
        self.resident_bytes += slot.size;
        if let Some(old) = self.slots.insert(index, slot) {
            self.forget(&old);
        }
        // An index re-used after a truncate below the cursor.
        self.evicted_below = self.evicted_below.min(index);
        self.note_resident();
    }

    /// The writer thread put these entries on disk: note where, and let
    /// the oldest leave memory. A record of an entry since cut (a truncate
    /// queued behind it) matches no slot's id and is ignored.
    pub fn written(&mut self, written: &[Written]) {
        for w in written {
            if let Some(slot) = self.slots.get_mut(&w.log_id.index) {
                if slot.log_id == w.log_id {
                    slot.location = Some(w.location);
                }
            }
        }
        self.evict();
    }

    /// Drops resident entries that are on disk, oldest first, down to the
    /// limit.
    fn evict(&mut self) {
        let mut evicted = 0;
        for (&index, slot) in self.slots.range_mut(self.evicted_below..) {
            if self.resident_bytes <= self.resident_limit {
                break;
            }
            if slot.entry.is_some() {
                if slot.location.is_none() {
                    // Not on disk yet; nor is anything after it.
                    break;
                }
                slot.entry = None;
                self.resident_bytes -= slot.size;
                evicted += 1;
            }
            self.evicted_below = index + 1;
        }
        if evicted > 0 {
            METRICS.log_entries_evicted.inc_by(evicted);
            self.note_resident();
        }
    }

    fn forget(&mut self, slot: &Slot) {
        if slot.entry.is_some() {
            self.resident_bytes -= slot.size;
        }
    }

    fn note_resident(&mut self) {
        let change = self.resident_bytes as i64 - self.reported as i64;
        METRICS.log_resident_bytes.add(change);
        self.reported = self.resident_bytes;
    }

    /// Removes the entries from `from` on (a conflicting suffix).
    pub fn truncate(&mut self, from: u64) {
        let cut = self.slots.split_off(&from);
        cut.values().for_each(|s| self.forget(s));
        self.note_resident();
    }

    /// Removes the entries up to `upto`, which becomes the last purged.
    pub fn purge(&mut self, upto: LogId<NodeId>) {
        let kept = self.slots.split_off(&upto.index.saturating_add(1));
        let purged = std::mem::replace(&mut self.slots, kept);
        purged.values().for_each(|s| self.forget(s));
        self.last_purged = Some(upto);
        self.note_resident();
    }

    pub fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.slots
            .values()
            .next_back()
            .map(|s| s.log_id)
            .or(self.last_purged)
    }

    /// The entries in `range`, in order, each in hand or located on disk.
    pub fn plan(&self, range: impl RangeBounds<u64>) -> Vec<Planned> {
        let mut planned = Vec::new();
        for slot in self.slots.range(range).map(|(_, s)| s) {
            match (&slot.entry, slot.location) {
                (Some(entry), _) => planned.push(Planned::Here(entry.clone())),
                (None, Some(location)) => planned.push(Planned::OnDisk(location)),
                // Unreachable by construction: an entry leaves memory only
                // once it has a location.
                (None, None) => break,
            }
        }
        planned
    }

    /// Indexes held, oldest first.
    #[cfg(test)]
    pub fn indexes(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.keys().copied()
    }

    /// How many entries are in memory rather than only on disk.
    #[cfg(test)]
    pub fn resident_count(&self) -> usize {
        self.slots.values().filter(|s| s.entry.is_some()).count()
    }

    /// The entry at `index` if it is in memory.
    #[cfg(test)]
    pub fn resident(&self, index: u64) -> Option<&Entry<TypeConfig>> {
        self.slots.get(&index).and_then(|s| s.entry.as_ref())
    }
}

impl Drop for LogState {
    /// A shard's state replaced (a reset replayed) leaves the gauge too.
    fn drop(&mut self) {
        METRICS.log_resident_bytes.sub(self.reported as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::test_entries::{entry, id};

    fn written(term: u64, indexes: std::ops::Range<u64>) -> Vec<Written> {
        indexes
            .map(|i| Written {
                shard: cart_common::shard::Shard(0),
                log_id: id(term, i),
                location: Location::new(1, i * 100, 100),
            })
            .collect()
    }

    #[test]
    fn entries_leave_memory_only_once_on_disk_and_oldest_first() {
        let mut state = LogState::with_resident_limit(300);
        for i in 1..=6 {
            state.append(entry(1, i), 100);
        }
        assert_eq!(state.resident_count(), 6, "nothing is on disk yet");
        state.written(&written(1, 1..3));
        // Only 1 and 2 may go; 4 entries (400 bytes) stay, over the limit.
        assert_eq!(state.resident_count(), 4);
        assert!(state.resident(2).is_none() && state.resident(3).is_some());
        state.written(&written(1, 3..7));
        assert_eq!(state.resident_count(), 3);
        assert!(state.resident(4).is_some());
        let planned = state.plan(1..7);
        let on_disk = planned
            .iter()
            .filter(|p| matches!(p, Planned::OnDisk(_)))
            .count();
        assert_eq!((planned.len(), on_disk), (6, 3));
    }

    #[test]
    fn a_write_of_an_entry_cut_since_does_not_locate_its_replacement() {
        let mut state = LogState::with_resident_limit(0);
        state.append(entry(1, 1), 100);
        state.append(entry(1, 2), 100);
        state.truncate(2);
        state.append(entry(2, 2), 100);
        // The writer reports the old entry 2, queued before the truncate.
        state.written(&written(1, 1..3));
        assert!(state.resident(1).is_none());
        assert_eq!(
            state.resident(2).map(|e| e.log_id),
            Some(id(2, 2)),
            "the replacement stays until it is itself on disk"
        );
        state.written(&written(2, 2..3));
        assert!(state.resident(2).is_none());
    }

    #[test]
    fn an_index_reused_below_the_cursor_can_leave_memory_again() {
        let mut state = LogState::with_resident_limit(0);
        for i in 1..=4 {
            state.append(entry(1, i), 100);
        }
        state.written(&written(1, 1..5));
        assert_eq!(state.resident_count(), 0);
        state.truncate(3);
        state.append(entry(2, 3), 100);
        state.written(&written(2, 3..4));
        assert_eq!(state.resident_count(), 0);
        assert_eq!(state.last_log_id(), Some(id(2, 3)));
    }

    #[test]
    fn truncate_and_purge_keep_the_resident_count_of_bytes() {
        let mut state = LogState::with_resident_limit(250);
        for i in 1..=5 {
            state.append(entry(1, i), 100);
        }
        state.purge(id(1, 2));
        state.truncate(5);
        // 3 and 4 remain, 200 bytes: under the limit, so nothing goes.
        state.written(&written(1, 3..5));
        assert_eq!(state.resident_count(), 2);
        assert_eq!(state.indexes().collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(state.last_purged, Some(id(1, 2)));
    }

    // Run in a process of its own (nextest), so that no other test moves
    // the node's global gauge meanwhile.
    #[test]
    fn the_resident_gauge_sums_every_shards_state() {
        let gauge = || METRICS.log_resident_bytes.get();
        let before = gauge();
        let mut shard_0 = LogState::with_resident_limit(1000);
        let mut shard_1 = LogState::with_resident_limit(1000);
        shard_0.append(entry(1, 1), 100);
        shard_1.append(entry(1, 1), 50);
        shard_1.append(entry(1, 2), 50);
        assert_eq!(gauge() - before, 200);
        shard_1.truncate(2);
        assert_eq!(gauge() - before, 150);
        drop(shard_0);
        assert_eq!(gauge() - before, 50, "a state replaced leaves the sum");
    }
}
