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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use cart_common::metrics::{counter_vec, precreate, Label};
use openraft::error::{CheckIsLeaderError, Fatal, RaftError};
use openraft::{BasicNode, LogId};
use prometheus::IntCounterVec;
use strum::{IntoStaticStr, VariantArray};

use super::{NodeId, Raft};

pub type ReadError = RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>;

pub struct ReadBarrier {
    raft: Raft,
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

impl ReadBarrier {
    pub fn new(raft: Raft) -> Self {
        precreate(&METRICS.reads, ReadRound::all().map(|r| [r.as_str()]));
        Self {
            raft,
            latest: tokio::sync::Mutex::new(Latest {
                round: 0,
                outcome: Ok(None),
            }),
            started: AtomicU64::new(0),
        }
    }

    /// The read index of a round that started after this call and
    /// confirmed this node still leads: the last entry committed when it
    /// started (at least this leader's first entry). Every write
    /// acknowledged before the call is at or below it. A round that fails
    /// fails the reads it covers too: reads queued behind a leader that cannot
    /// reach its group fail together, not one round timeout after another.
    pub async fn read_index(&self) -> Result<Option<LogId<NodeId>>, ReadError> {
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
         orders seen paid, the saga's take-over after an election), by how their leadership round went: shared (a round \
         another read started after this one arrived), own (a round of its own), failed (the \
         round that covered it did not confirm the leadership).",
        &["round"],
    ),
}
});
