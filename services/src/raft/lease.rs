//! A leader's lease on its group: while a majority acknowledges it, it
//! refuses to be deposed by a candidate that cannot hear it; once none has
//! for a while, it stops serving as leader.
//!
//! **Sticky leader.** A follower that stops hearing its leader while its
//! own packets still reach it (a lossy link that drops the heartbeats it
//! should get) campaigns with a higher term. openraft's followers refuse a
//! vote within their leader's lease, but the leader itself takes the higher
//! term as a reason to step down, and the group loses its leader for an
//! election though a majority was in touch all along; on a link that keeps
//! losing, again and again. So a leader that a majority acknowledged within
//! the election timeout refuses a higher-term vote request (Raft's thesis,
//! §4.2.3: a server that has heard from a current leader within the
//! minimum election timeout neither updates its term nor grants its vote).
//! That costs only liveness, never safety: a vote not granted cannot make
//! two leaders.
//!
//! **Fence.** openraft 0.9 keeps a leader a leader until it hears of a
//! higher term, and has no call to step down (`trigger().elect()` is
//! ignored on a leader). A leader isolated from its followers would go on
//! taking writes it can never commit, each waiting for the client's
//! timeout. So once a leader has gone longer than its fence (twice the
//! election timeout) without a majority acknowledging it
//! (`millis_since_quorum_ack`), the node refuses writes and reads at once
//! with 503, answers the writes still waiting for a majority with 503 too
//! (`proposer`), and reports itself not ready: coordinators move on to the
//! nodes that elected a new leader meanwhile. Safety does not rest on this
//! either (Raft commits nothing without a majority, and reads confirm the
//! leadership with a majority first); it makes the failure fast and
//! visible. The fence lifts as soon as a majority answers again, or the
//! node learns of the new term and becomes a follower.
//!
//! **Restart hold.** For the election timeout's upper bound after it
//! starts, a node neither campaigns nor votes: it forgot when it last
//! heard its leader, whose read lease may still count on it
//! (`read_lease`). A node with no Raft state (a new group forming, or one
//! that lost its data) still grants votes of term 1: no leader came before
//! that term, and the group's first election is not delayed.
//!
//! **Handing over.** A leader handing its shard's leadership to another
//! node (`handover`) refuses writes and reads and no longer refuses votes
//! until the handover ends, so that its followers' leases run out and the
//! chosen node can win an election.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cart_common::metrics::Label;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{BasicNode, RaftMetrics, ServerState};
use strum::{IntoStaticStr, VariantArray};

use super::NodeId;
use crate::metrics::{GroupMetrics, METRICS};

/// How long a leader may go without a majority's acknowledgement.
#[derive(Clone)]
pub struct Fence {
    after: Duration,
    /// A majority's acknowledgement within this keeps a leader sticky.
    sticky: Duration,
    /// Set while this leader hands its leadership over (`handover`).
    handing_over: Arc<AtomicBool>,
    /// This node's restart hold, when lease reads are on.
    hold: Option<RestartHold>,
    metrics: GroupMetrics,
}

impl Fence {
    /// The lease of a group whose election timeout is `election_timeout_ms`,
    /// with this node's restart hold if it has one.
    pub fn new(election_timeout_ms: u64, hold: Option<RestartHold>, metrics: GroupMetrics) -> Self {
        Self {
            after: Duration::from_millis(election_timeout_ms.saturating_mul(2)),
            sticky: Duration::from_millis(election_timeout_ms),
            handing_over: Arc::default(),
            hold,
            metrics,
        }
    }

    /// When this node's restart hold ends, if it has one.
    pub fn held_until(&self) -> Option<Instant> {
        self.hold.map(|h| h.until)
    }

    fn holding(&self) -> Option<RestartHold> {
        self.hold.filter(|h| Instant::now() < h.until)
    }

    /// Whether this node may campaign: its storage is `healthy` and its
    /// restart hold is over.
    pub fn may_campaign(&self, healthy: bool) -> bool {
        healthy && self.holding().is_none()
    }

    /// Starts or ends a handover of this node's leadership.
    pub fn set_handing_over(&self, on: bool) {
        self.handing_over.store(on, Ordering::SeqCst);
    }

    fn is_handing_over(&self) -> bool {
        self.handing_over.load(Ordering::SeqCst)
    }

    /// The refusal of `req`: any request during this node's restart hold
    /// (but one of term 1 to a node with no Raft state); for a leader a
    /// majority acknowledged within the election timeout, a request of a
    /// higher term. `None`: let Raft decide. The answer carries this
    /// node's vote and last applied log id (so a candidate behind it waits
    /// longer before its next campaign).
    pub fn refuse_vote(
        &self,
        m: &RaftMetrics<NodeId, BasicNode>,
        req: &VoteRequest<NodeId>,
    ) -> Option<VoteResponse<NodeId>> {
        if self
            .holding()
            .is_some_and(|h| h.had_state || req.vote.leader_id().term > 1)
        {
            self.metrics.votes_held.inc();
            tracing::info!(candidate = %req.vote, "refused a vote: restarted less than the lease ago");
            return Some(refusal(m));
        }
        let acked = m.millis_since_quorum_ack?;
        let sticky = !self.is_handing_over()
            && m.state == ServerState::Leader
            && u128::from(acked) < self.sticky.as_millis()
            && req.vote.leader_id().term > m.current_term;
        if !sticky {
            return None;
        }
        self.metrics.votes_refused.inc();
        tracing::info!(
            candidate = %req.vote,
            acked_ms_ago = acked,
            "refused a vote: a majority still acknowledges this leader"
        );
        Some(refusal(m))
    }

    /// Milliseconds since a majority last acknowledged this leader, when
    /// that is longer than the fence; `None` for a follower, a leader in
    /// touch with its group, or one not yet acknowledged at all.
    pub fn cut_off_ms(&self, m: &RaftMetrics<NodeId, BasicNode>) -> Option<u64> {
        if m.state != ServerState::Leader {
            return None;
        }
        let since = m.millis_since_quorum_ack?;
        (u128::from(since) > self.after.as_millis()).then_some(since)
    }

    /// Why a request is refused, when it is (and counts it).
    pub fn refusal(&self, m: &RaftMetrics<NodeId, BasicNode>, kind: Refused) -> Option<String> {
        if self.is_handing_over() && m.state == ServerState::Leader {
            self.count_refusal(kind);
            return Some(
                "this leader is handing its leadership to another node; retry there".into(),
            );
        }
        let ms = self.cut_off_ms(m)?;
        self.count_refusal(kind);
        Some(format!(
            "this leader has not heard from a majority of its group for {ms} ms; \
             it serves again once it does"
        ))
    }

    fn count_refusal(&self, kind: Refused) {
        self.metrics
            .of_family(&METRICS.cut_off_refusals, &[kind.as_str()])
            .inc();
    }
}

/// A node's restart hold (`Fence`).
#[derive(Clone, Copy, Debug)]
pub struct RestartHold {
    /// It ends here: the node's start plus the election timeout's upper
    /// bound (the longest a follower refuses votes after hearing its leader).
    pub until: Instant,
    /// The node held Raft state (a log or a vote) when it started.
    pub had_state: bool,
}

/// A vote not granted, with this node's vote and last applied log id.
fn refusal(m: &RaftMetrics<NodeId, BasicNode>) -> VoteResponse<NodeId> {
    VoteResponse {
        vote: m.vote,
        vote_granted: false,
        last_log_id: m.last_applied,
    }
}

/// What a cut-off leader refused, as the `kind` metric label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, VariantArray, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Refused {
    Write,
    Read,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(state: ServerState, since: Option<u64>) -> RaftMetrics<NodeId, BasicNode> {
        let mut m = RaftMetrics::new_initial(1);
        m.state = state;
        m.millis_since_quorum_ack = since;
        m
    }

    #[test]
    fn a_leader_is_cut_off_only_past_twice_the_election_timeout() {
        let fence = Fence::new(1000, None, GroupMetrics::of(cart_common::shard::Shard(0)));
        assert_eq!(
            fence.cut_off_ms(&metrics(ServerState::Leader, Some(150))),
            None
        );
        assert_eq!(
            fence.cut_off_ms(&metrics(ServerState::Leader, Some(2000))),
            None
        );
        assert_eq!(
            fence.cut_off_ms(&metrics(ServerState::Leader, Some(2001))),
            Some(2001)
        );
        // Not yet acknowledged at all: a leader just elected.
        assert_eq!(fence.cut_off_ms(&metrics(ServerState::Leader, None)), None);
        // Followers and candidates are not leaders to fence.
        assert_eq!(
            fence.cut_off_ms(&metrics(ServerState::Follower, Some(9000))),
            None
        );
        assert_eq!(
            fence.cut_off_ms(&metrics(ServerState::Candidate, Some(9000))),
            None
        );
    }

    #[test]
    fn a_leader_in_touch_with_its_group_refuses_a_higher_term_vote() {
        let fence = Fence::new(1000, None, GroupMetrics::of(cart_common::shard::Shard(0)));
        let request = |term| {
            VoteRequest::new(
                openraft::Vote::new(term, 2),
                Some(openraft::LogId::new(
                    openraft::CommittedLeaderId::new(1, 1),
                    3,
                )),
            )
        };
        let mut leader = metrics(ServerState::Leader, Some(100));
        leader.current_term = 5;
        let refused = fence.refuse_vote(&leader, &request(6)).expect("refused");
        assert!(!refused.vote_granted);
        assert_eq!(refused.vote, leader.vote);
        // The same term, an old acknowledgement, or a follower: Raft decides.
        assert!(fence.refuse_vote(&leader, &request(5)).is_none());
        leader.millis_since_quorum_ack = Some(1000);
        assert!(fence.refuse_vote(&leader, &request(6)).is_none());
        let mut follower = metrics(ServerState::Follower, Some(100));
        follower.current_term = 5;
        assert!(fence.refuse_vote(&follower, &request(6)).is_none());
    }

    #[test]
    fn a_restarted_node_holds_its_votes_and_campaigns_until_its_hold_ends() {
        let request = |term| VoteRequest::new(openraft::Vote::new(term, 2), None);
        let follower = metrics(ServerState::Follower, None);
        let metrics = || GroupMetrics::of(cart_common::shard::Shard(0));
        let later = Instant::now() + Duration::from_secs(60);
        let held = |had_state| {
            Fence::new(
                1000,
                Some(RestartHold {
                    until: later,
                    had_state,
                }),
                metrics(),
            )
        };
        // With Raft state from before: every vote is refused, and no campaign.
        let restarted = held(true);
        assert!(restarted.refuse_vote(&follower, &request(1)).is_some());
        assert!(restarted.refuse_vote(&follower, &request(7)).is_some());
        assert!(!restarted.may_campaign(true));
        // Without: a new group's first election (term 1) goes ahead.
        let pristine = held(false);
        assert!(pristine.refuse_vote(&follower, &request(1)).is_none());
        assert!(pristine.refuse_vote(&follower, &request(2)).is_some());
        // Once the hold is over (or with none), Raft decides.
        let over = Fence::new(
            1000,
            Some(RestartHold {
                until: Instant::now(),
                had_state: true,
            }),
            metrics(),
        );
        assert!(over.refuse_vote(&follower, &request(7)).is_none());
        assert!(over.may_campaign(true));
        assert!(!over.may_campaign(false));
        assert!(Fence::new(1000, None, metrics()).may_campaign(true));
    }

    #[test]
    fn a_refusal_says_how_long_the_leader_has_been_cut_off() {
        let fence = Fence::new(1000, None, GroupMetrics::of(cart_common::shard::Shard(0)));
        let why = fence
            .refusal(&metrics(ServerState::Leader, Some(4321)), Refused::Write)
            .expect("refused");
        assert!(why.contains("4321 ms"), "{why}");
        assert!(fence
            .refusal(&metrics(ServerState::Leader, Some(10)), Refused::Read)
            .is_none());
    }
}
