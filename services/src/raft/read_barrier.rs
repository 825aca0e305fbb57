//! Linearizable reads at a leader, their quorum rounds shared.
//!
//! openraft's `ensure_linearizable` and `get_read_log_id` confirm the
//! leadership with a round of heartbeats to the followers for every call,
//! so a leader serving hundreds of reads a second (its own, and the read
//! indexes of its followers' reads) sent hundreds of rounds. A read only
//! needs *a* round that started after it arrived and confirmed the
//! leadership (then waited for the state to apply up to that round's read
//! index; applying never goes back). Every linearizable confirmation at a
//! leader goes through here. So one round runs at a time, and every read that arrived before it
//! started is served by it, as etcd batches its read-index requests: under
//! load a round serves many reads; alone, a read costs one round as before.
//!
//! Most reads need no round at all: while the leader holds its read lease
//! (`read_lease`: a majority accepted its appends within the election
//! timeout), its commit index is the read index.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use cart_common::metrics::{counter_vec, precreate, Label};
use openraft::error::{CheckIsLeaderError, Fatal, ForwardToLeader, RaftError};
use openraft::{BasicNode, LogId, ServerState, Vote};
use prometheus::IntCounterVec;
use strum::{IntoStaticStr, VariantArray};

use super::read_lease::ReadLease;
use super::{NodeId, Raft};

pub type ReadError = RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>;

pub struct ReadBarrier {
    raft: Raft,
    id: NodeId,
    /// `None`: the spec turned lease reads off (`raft.lease_reads`).
    lease: Option<Arc<ReadLease>>,
    /// Held for the length of a round (one at a time): the latest round
    /// and how it ended.
    latest: tokio::sync::Mutex<Latest>,
    /// Rounds started so far (numbered from 1 in the order they start).
    started: AtomicU64,
}

struct Latest {
    round: u64,
    /// The read index it named, or why it could not confirm the leadership.
    outcome: Result<Option<LogId<NodeId>>, ReadError>,
}

/// What the lease needs from the leader's Raft state, read in its core.
struct Leading {
    vote: Vote<NodeId>,
    committed: LogId<NodeId>,
    configs: Vec<BTreeSet<NodeId>>,
}

impl ReadBarrier {
    pub fn new(raft: Raft, id: NodeId, lease: Option<Arc<ReadLease>>) -> Self {
        precreate(&METRICS.reads, ReadRound::all().map(|r| [r.as_str()]));
        Self {
            raft,
            id,
            lease,
            latest: tokio::sync::Mutex::new(Latest {
                round: 0,
                outcome: Ok(None),
            }),
            started: AtomicU64::new(0),
        }
    }

    /// The read index, confirmed by the lease or else by a round that
    /// started after this call and confirmed this node still leads: the
    /// last entry committed when it was taken (at least this leader's first
    /// entry). Every write acknowledged before the call is at or
    /// below it. A round that fails fails the reads it covers too: reads
    /// queued behind a leader that cannot reach its group fail together,
    /// not one round timeout after another.
    pub async fn read_index(&self) -> Result<Option<LogId<NodeId>>, ReadError> {
        if let Some(leased) = self.leased().await {
            count(ReadRound::Lease);
            return Ok(Some(leased.committed));
        }
        self.round().await
    }

    /// `read_index` for a follower's read. The follower applies up to the
    /// index only once it hears it is committed. A round's heartbeats tell
    /// it before the leader answers; the lease sends nothing, and the commit
    /// push after an append is answered in place (`commit_push`). So the
    /// lease serves a follower's read only when every follower has already
    /// been sent the commit index it names (no write since the last append
    /// or heartbeat): a read right after a write takes a round, as a
    /// heartbeat sent for it would cost the same messages and arrive later.
    pub async fn follower_read_index(&self) -> Result<Option<LogId<NodeId>>, ReadError> {
        let heard = |leased: &Leading| {
            self.lease.as_ref().is_some_and(|lease| {
                !lease.commit_unsent(self.id, &leased.configs, leased.committed.index)
            })
        };
        match self.leased().await {
            Some(leased) if heard(&leased) => {
                count(ReadRound::Lease);
                Ok(Some(leased.committed))
            }
            _ => self.round().await,
        }
    }

    async fn round(&self) -> Result<Option<LogId<NodeId>>, ReadError> {
        if let Some(forward) = self.known_follower() {
            return Err(forward);
        }
        let arrived_after = self.started.load(Ordering::SeqCst);
        let mut latest = self.latest.lock().await;
        if latest.round > arrived_after {
            count(match latest.outcome {
                Ok(_) => ReadRound::Shared,
                Err(_) => ReadRound::Failed,
            });
            return latest.outcome.clone();
        }
        let round = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let outcome = self
            .raft
            .get_read_log_id()
            .await
            .map(|(read_index, _applied)| read_index);
        count(match outcome {
            Ok(_) => ReadRound::Own,
            Err(_) => ReadRound::Failed,
        });
        *latest = Latest {
            round,
            outcome: outcome.clone(),
        };
        outcome
    }

    /// A follower that knows its leader says so without asking its Raft
    /// core or queueing behind a round: every follower read asks this
    /// first. Not counted as a leader read. Taken from the metrics, which
    /// may lag: a node that has just become leader is sent back to its
    /// predecessor, which answers 421 — a retry, never a wrong answer.
    fn known_follower(&self) -> Option<ReadError> {
        let m = self.raft.metrics();
        let m = m.borrow();
        if m.state == ServerState::Leader {
            return None;
        }
        let leader = m.current_leader.filter(|l| *l != self.id)?;
        let node = m
            .membership_config
            .nodes()
            .find(|(id, _)| **id == leader)?
            .1;
        Some(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(
            ForwardToLeader::new(leader, node.clone()),
        )))
    }

    /// The leader's state for a read without a round, while this node
    /// leads, has committed an entry of its own term (so its commit index is
    /// the group's) and holds the lease *after* reading that index: no other
    /// leader can have committed anything by then. `None`: confirm with a
    /// round.
    async fn leased(&self) -> Option<Leading> {
        let lease = self.lease.as_ref()?;
        // A follower skips the core call; the core's own state decides below.
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return None;
        }
        let me = self.id;
        let leading = self
            .raft
            .with_raft_state(move |st| {
                let vote = *st.vote_ref();
                let committed = st.committed?;
                let own_term = vote.is_committed()
                    && vote.leader_id().voted_for() == Some(me)
                    && committed.leader_id == *vote.leader_id();
                (st.server_state == ServerState::Leader && own_term).then(|| Leading {
                    vote,
                    committed,
                    configs: st
                        .membership_state
                        .effective()
                        .membership()
                        .get_joint_config()
                        .clone(),
                })
            })
            .await
            .ok()??;
        let now = Instant::now();
        let until = lease.holds_until(me, &leading.vote, &leading.configs, now)?;
        (now < until).then_some(leading)
    }

    /// Returns once this node is confirmed leader by a round that started
    /// after the call (`read_index`) and has applied up to that round's read
    /// index: a read of its own state is then linearizable.
    pub async fn confirm(&self) -> Result<(), ReadError> {
        let Some(index) = self.read_index().await? else {
            return Ok(());
        };
        self.raft
            .wait(None)
            .applied_index_at_least(Some(index.index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|_shutting_down| RaftError::Fatal(Fatal::Stopped))
    }
}

/// How a read was confirmed, as the `round` metric label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, VariantArray, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
enum ReadRound {
    /// By the leader's read lease, with no round.
    Lease,
    /// By a round another read started after this one arrived.
    Shared,
    /// By a round of its own.
    Own,
    /// The round that covered it did not confirm the leadership.
    Failed,
}

fn count(round: ReadRound) {
    METRICS.reads.with_label_values(&[round.as_str()]).inc();
}

struct ReadMetrics {
    reads: IntCounterVec,
}

static METRICS: LazyLock<ReadMetrics> = LazyLock::new(|| {
    ReadMetrics {
    reads: counter_vec(
        "raft_leader_reads_total",
        "Linearizable reads at this leader (its own, its followers' read indexes, checkouts of \
         orders seen paid, the saga's take-over after an election), by how their leadership was confirmed: lease (the read lease, \
         a majority's acknowledgement within the election timeout; no round), shared (a round \
         another read started after this one arrived), own (a round of its own), failed (the \
         round that covered it did not confirm the leadership).",
        &["round"],
    ),
}
});
