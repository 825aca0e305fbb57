//! openraft's commit-index push, answered without an RPC of its own.
//!
//! As soon as a leader's commit index moves, openraft 0.9 sends every
//! follower an empty AppendEntries carrying only the new index
//! (`Replicate::Committed` becomes a heartbeat in its replication loop),
//! right after the append that carried the entry. So with one entry in
//! flight a follower gets two RPCs per entry, and each costs it a wake, a
//! hand-off to its Raft core and the log writer, and an answer: about half
//! of a follower's CPU (docs/loadtest.md, "Where a follower's time goes").
//!
//! Nothing waits on a follower knowing the commit index at once: the client
//! was answered when the leader applied the entry, and a follower only needs
//! the index to apply, which it does when the next append or heartbeat
//! brings it (every append carries it). So the replication stream's
//! connection answers such a push itself, with the answer the follower gave
//! a moment ago: when the push follows an append this connection sent less
//! than `FOLD_WITHIN` earlier and had answered `Success`, in the same term,
//! with `prev_log_id` at that append's last entry and nothing new to send.
//!
//! Why this is safe: the answer claims only that the follower's log matches
//! up to an entry it has already acknowledged, durably, so the leader's
//! matching index does not move and nothing is committed on it. A follower
//! that meanwhile heard of a higher term is learned of at the next real
//! append or heartbeat (at most a heartbeat interval later), as it would be
//! had the push been lost. The only thing a folded push moves is the
//! leader's time of its follower's last acknowledgement (openraft takes an
//! append's send time), by less than `FOLD_WITHIN`, and that feeds only
//! liveness decisions (the lease's sticky leader and fence, `lease`), never
//! safety. The read lease (`read_lease`) counts only appends really sent
//! and answered, and reads without it confirm leadership with a quorum
//! round that openraft sends on connections of its own, which never fold.
//! At most one push is folded per answered append, so the next heartbeat
//! always goes out.

use std::time::{Duration, Instant};

use openraft::raft::AppendEntriesRequest;
use openraft::{LogId, Vote};

use super::{NodeId, TypeConfig};

/// How soon after an append was sent its commit push may be answered in
/// place. On loopback a push follows its append within a few milliseconds
/// (the follower's fsync, the leader's own flush, the core's turn); a later
/// one, as over a slow link, is sent.
pub const FOLD_WITHIN: Duration = Duration::from_millis(50);

/// The last append a replication stream had answered `Success`.
#[derive(Default)]
pub struct CommitPush {
    answered: Option<Answered>,
}

struct Answered {
    vote: Vote<NodeId>,
    /// The last entry it carried: the follower matches up to here.
    last: Option<LogId<NodeId>>,
    committed: Option<LogId<NodeId>>,
    sent_at: Instant,
}

impl CommitPush {
    /// True if `req` is only the commit-index push after the append last
    /// answered on this stream, and may be answered `Success` unsent.
    /// Either way, the next push is judged against a later answer.
    pub fn folds(&mut self, req: &AppendEntriesRequest<TypeConfig>, now: Instant) -> bool {
        let Some(a) = self.answered.take() else {
            return false;
        };
        req.entries.is_empty()
            && req.vote == a.vote
            && req.prev_log_id == a.last
            && req.leader_commit > a.committed
            && now.saturating_duration_since(a.sent_at) < FOLD_WITHIN
    }

    /// Records how `req`, sent at `sent_at`, was answered.
    pub fn sent(
        &mut self,
        req: &AppendEntriesRequest<TypeConfig>,
        success: bool,
        sent_at: Instant,
    ) {
        self.answered = match req.entries.last() {
            Some(last) if success => Some(Answered {
                vote: req.vote,
                last: Some(last.log_id),
                committed: req.leader_commit,
                sent_at,
            }),
            _ => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::test_entries::{entry, id};

    fn append(
        term: u64,
        prev: u64,
        entries: &[u64],
        commit: u64,
    ) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(term, 1),
            prev_log_id: Some(id(term, prev)),
            leader_commit: Some(id(term, commit)),
            entries: entries.iter().map(|&i| entry(term, i)).collect(),
        }
    }

    /// A stream that sent entries 5..=6 (commit 4) at `now` and had them
    /// answered.
    fn after_answered_append(now: Instant) -> CommitPush {
        let mut push = CommitPush::default();
        push.sent(&append(2, 4, &[5, 6], 4), true, now);
        push
    }

    #[test]
    fn the_push_right_after_an_answered_append_is_folded_once() {
        let now = Instant::now();
        let mut push = after_answered_append(now);
        let commit_6 = append(2, 6, &[], 6);
        assert!(push.folds(&commit_6, now + Duration::from_millis(3)));
        // The next one, a heartbeat carrying the same index, goes out.
        assert!(!push.folds(&commit_6, now + Duration::from_millis(4)));
    }

    #[test]
    fn a_heartbeat_with_nothing_new_to_commit_is_sent() {
        let now = Instant::now();
        let mut push = after_answered_append(now);
        assert!(!push.folds(&append(2, 6, &[], 4), now));
    }

    #[test]
    fn a_push_too_long_after_its_append_was_sent_is_sent() {
        let now = Instant::now();
        let mut push = after_answered_append(now);
        assert!(!push.folds(&append(2, 6, &[], 6), now + FOLD_WITHIN));
    }

    #[test]
    fn a_push_of_another_term_or_position_is_sent() {
        let now = Instant::now();
        assert!(!after_answered_append(now).folds(&append(3, 6, &[], 6), now));
        assert!(!after_answered_append(now).folds(&append(2, 5, &[], 6), now));
    }

    #[test]
    fn nothing_is_folded_after_an_append_that_was_refused_or_empty() {
        let now = Instant::now();
        let mut push = CommitPush::default();
        push.sent(&append(2, 4, &[5, 6], 4), false, now);
        assert!(!push.folds(&append(2, 6, &[], 6), now));
        let mut push = CommitPush::default();
        push.sent(&append(2, 6, &[], 4), true, now);
        assert!(!push.folds(&append(2, 6, &[], 6), now));
    }

    #[test]
    fn an_append_with_entries_is_never_folded() {
        let now = Instant::now();
        let mut push = after_answered_append(now);
        assert!(!push.folds(&append(2, 6, &[7], 6), now));
    }
}
