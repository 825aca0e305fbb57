//! Linearizable reads at a leader, their quorum rounds shared.
//!
//! openraft's `ensure_linearizable` confirms the leadership with a round of
//! heartbeats to the followers for every call, so a leader serving hundreds
//! of reads a second sent hundreds of rounds. A read only needs *a* round
//! that started after it arrived and confirmed the leadership (then waited
//! for the state to apply up to that round's read index; applying never goes
//! back). So one round runs at a time, and every read that arrived before it
//! started is served by it, as etcd batches its read-index requests: under
//! load a round serves many reads; alone, a read costs one round as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use cart_common::metrics::{counter_vec, precreate};
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::BasicNode;
use prometheus::IntCounterVec;

use super::{NodeId, Raft};

pub type ReadError = RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>;

pub struct ReadBarrier {
    raft: Raft,
    /// Held for the length of a round: one at a time.
    round: tokio::sync::Mutex<()>,
    /// Rounds started so far.
    started: AtomicU64,
    /// The latest round that confirmed the leadership (rounds are numbered
    /// from 1 in the order they start).
    confirmed: AtomicU64,
}

impl ReadBarrier {
    pub fn new(raft: Raft) -> Self {
        precreate(&METRICS.reads, ReadRound::ALL.map(|r| [r.as_str()]));
        Self {
            raft,
            round: tokio::sync::Mutex::new(()),
            started: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
        }
    }

    /// Returns once this node is confirmed leader by a round that started
    /// after the call, and its state has applied everything committed before
    /// that round: a read of the local state is then linearizable.
    pub async fn confirm(&self) -> Result<(), ReadError> {
        let arrived_after = self.started.load(Ordering::SeqCst);
        let _one_round = self.round.lock().await;
        if self.confirmed.load(Ordering::SeqCst) > arrived_after {
            count(ReadRound::Shared);
            return Ok(());
        }
        let round = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        match self.raft.ensure_linearizable().await {
            Ok(_) => {
                self.confirmed.store(round, Ordering::SeqCst);
                count(ReadRound::Own);
                Ok(())
            }
            Err(e) => {
                count(ReadRound::Failed);
                Err(e)
            }
        }
    }
}

/// How a read was confirmed, as the `round` metric label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadRound {
    /// By a round another read started after this one arrived.
    Shared,
    /// By a round of its own.
    Own,
    /// Its own round did not confirm the leadership.
    Failed,
}

impl ReadRound {
    const ALL: [Self; 3] = [Self::Shared, Self::Own, Self::Failed];

    fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Own => "own",
            Self::Failed => "failed",
        }
    }
}

fn count(round: ReadRound) {
    METRICS.reads.with_label_values(&[round.as_str()]).inc();
}

struct ReadMetrics {
    reads: IntCounterVec,
}

static METRICS: LazyLock<ReadMetrics> = LazyLock::new(|| ReadMetrics {
    reads: counter_vec(
        "raft_leader_reads_total",
        "Linearizable reads at this leader (and checkouts of orders seen paid), by how their \
         leadership round went: shared (a round another read started after this one arrived), \
         own (a round of its own), failed (its round did not confirm the leadership).",
        &["round"],
    ),
});
