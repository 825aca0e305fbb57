//! How many entries one AppendEntries to a follower may carry.
//!
//! openraft 0.9 gives every AppendEntries the heartbeat interval to be
//! answered and, when it is not, sends the same range again. A follower far
//! behind (thawed, restarted, or slow under load) is sent up to
//! `max_payload_entries` entries at once; encoding and decoding that much on
//! a loaded machine can take longer than the interval, and then the same
//! append times out again and again: the follower never catches up, and
//! when it is needed for a majority the group commits nothing (seen: order
//! reads unanswered for minutes after a frozen leader was thawed, with every
//! replica busy re-decoding the same 300 entries).
//!
//! The budget keeps every append answerable. An append larger than the
//! spec's `raft.max_append_kib` once encoded, or carrying more entries than the budget
//! allows, is refused to openraft as `PayloadTooLarge` with the number of
//! entries to send instead (openraft retries at once with that many, for its
//! next few sends). An append that goes unanswered halves the budget; an
//! answered one doubles it back, so a healthy follower soon gets full
//! batches again. An append that could not even connect (the follower is
//! down) says nothing about its size and leaves the budget as it was: a
//! follower that was down for a while is caught up in full-size pieces at
//! once, not from one entry per append upwards. A single entry is always
//! sent: it cannot be split.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// No bound from timeouts (openraft's own `max_payload_entries` applies).
const UNBOUNDED: u64 = u64::MAX;

/// Why an append was sent in smaller pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Its encoding exceeds the byte bound.
    Bytes,
    /// An earlier append to this follower went unanswered.
    Unanswered,
}

impl Split {
    pub fn label(self) -> &'static str {
        match self {
            Split::Bytes => "bytes",
            Split::Unanswered => "unanswered",
        }
    }
}

/// The budget of one replication stream (one leader term, one follower).
#[derive(Clone, Debug)]
pub struct AppendBudget {
    max_entries: Arc<AtomicU64>,
    /// Largest encoded append sent in one piece, unless it has one entry.
    /// Steady-state appends are a few KiB; the default (256 KiB) bounds
    /// catch-up appends to a few milliseconds of encoding and decoding.
    max_bytes: usize,
}

impl AppendBudget {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_entries: Arc::new(AtomicU64::new(UNBOUNDED)),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Before encoding: how many of `entries` to send instead, if fewer.
    pub fn before_encoding(&self, entries: usize) -> Option<(u64, Split)> {
        let allowed = self.max_entries.load(Ordering::Relaxed);
        (entries > 1 && (entries as u64) > allowed).then_some((allowed.max(1), Split::Unanswered))
    }

    /// After encoding to `bytes`: how many of `entries` to send instead, if
    /// fewer (in proportion, assuming entries of similar size).
    pub fn after_encoding(&self, entries: usize, bytes: usize) -> Option<(u64, Split)> {
        if entries <= 1 || bytes <= self.max_bytes {
            return None;
        }
        let fit = (entries as u128 * self.max_bytes as u128 / bytes as u128) as u64;
        Some((fit.clamp(1, entries as u64 - 1), Split::Bytes))
    }

    /// Tracks one append of `entries` being sent: unless `answered` or
    /// `unreached` is called before it is dropped (openraft drops a timed-out call), the
    /// budget is halved.
    pub fn sending(&self, entries: usize) -> Sending {
        Sending {
            budget: self.clone(),
            entries: entries as u64,
            settled: false,
        }
    }

    fn unanswered(&self, entries: u64) {
        if entries > 1 {
            self.max_entries
                .fetch_min((entries / 2).max(1), Ordering::Relaxed);
        }
    }

    fn answered(&self) {
        let _ = self
            .max_entries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                (m != UNBOUNDED).then(|| m.saturating_mul(2))
            });
    }
}

/// One append on its way; see `AppendBudget::sending`.
pub struct Sending {
    budget: AppendBudget,
    entries: u64,
    /// Answered, or never delivered; dropped unsettled, it went unanswered.
    settled: bool,
}

impl Sending {
    pub fn answered(mut self) {
        self.settled = true;
        self.budget.answered();
    }

    /// The follower could not be connected to: nothing was sent, so the
    /// append's size is not in question.
    pub fn unreached(mut self) {
        self.settled = true;
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if !self.settled {
            self.budget.unanswered(self.entries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: usize = 256 * 1024;

    #[test]
    fn a_large_append_is_cut_in_proportion_to_the_byte_bound() {
        let budget = AppendBudget::new(BOUND);
        assert_eq!(budget.after_encoding(300, BOUND), None);
        assert_eq!(
            budget.after_encoding(300, 3 * BOUND),
            Some((100, Split::Bytes))
        );
        // Never to zero, and always fewer than it had.
        assert_eq!(
            budget.after_encoding(2, 100 * BOUND),
            Some((1, Split::Bytes))
        );
        assert_eq!(
            budget.after_encoding(10, BOUND + 1),
            Some((9, Split::Bytes))
        );
        // One entry goes as it is, however large.
        assert_eq!(budget.after_encoding(1, 100 * BOUND), None);
    }

    #[test]
    fn an_unanswered_append_halves_the_budget_and_answers_grow_it_back() {
        let budget = AppendBudget::new(BOUND);
        assert_eq!(budget.before_encoding(300), None, "unbounded at first");

        drop(budget.sending(300));
        assert_eq!(budget.before_encoding(300), Some((150, Split::Unanswered)));
        assert_eq!(budget.before_encoding(150), None);
        drop(budget.sending(150));
        drop(budget.sending(150)); // a second loss of the same size: no lower
        assert_eq!(budget.before_encoding(300), Some((75, Split::Unanswered)));

        budget.sending(75).answered();
        assert_eq!(budget.before_encoding(300), Some((150, Split::Unanswered)));
        budget.sending(150).answered();
        budget.sending(300).answered();
        assert_eq!(budget.before_encoding(300), None);
    }

    #[test]
    fn heartbeats_and_single_entries_are_never_held_back() {
        let budget = AppendBudget::new(BOUND);
        for _ in 0..70 {
            drop(budget.sending(2));
            drop(budget.sending(0));
        }
        assert_eq!(budget.before_encoding(1), None);
        assert_eq!(budget.before_encoding(0), None);
        assert_eq!(budget.before_encoding(2), Some((1, Split::Unanswered)));
    }

    #[test]
    fn an_append_that_could_not_connect_leaves_the_budget_as_it_was() {
        let budget = AppendBudget::new(BOUND);
        for _ in 0..20 {
            budget.sending(300).unreached();
        }
        assert_eq!(budget.before_encoding(300), None, "still unbounded");

        drop(budget.sending(300));
        budget.sending(150).unreached();
        assert_eq!(budget.before_encoding(300), Some((150, Split::Unanswered)));
    }

    #[test]
    fn the_byte_bound_is_the_one_configured() {
        let budget = AppendBudget::new(16 * 1024);
        assert_eq!(budget.after_encoding(300, 16 * 1024), None);
        assert_eq!(
            budget.after_encoding(300, 64 * 1024),
            Some((75, Split::Bytes))
        );
    }
}
