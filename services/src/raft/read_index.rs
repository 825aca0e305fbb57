//! Follower reads: a replica that is not the leader serves a linearizable
//! read after a read-index round with its leader (Raft thesis §6.4).
//!
//! The follower asks the leader for its read index (`READ_INDEX_PATH`):
//! the leader confirms with a majority that it still leads (openraft's
//! `get_read_log_id`, the same round a leader's own read makes) and names
//! the last index committed when the read began — at least its own term's
//! first entry, so every write acknowledged by any earlier leader is below
//! it. The follower then waits until it has applied that index and answers
//! from its own state. Applied entries are committed ones, and committed
//! entries are the same on every replica, so the follower's state then
//! holds every write acknowledged before the read began: the read is as
//! fresh as one at the leader, wherever the coordinator sent it.
//!
//! A follower that cannot catch up within the bound (a lagging or cut-off
//! replica) answers 503 and the coordinator reads elsewhere; one whose
//! leader says it no longer leads passes the hint on as a 421.

use std::time::{Duration, Instant};

use cart_common::http::{CallError, InternalClient};
use cart_common::metrics::{precreate, Label};
use cart_common::paths::READ_INDEX_PATH;
use cart_common::shard::Shard;
use cart_common::ClusterSpec;
use serde::Deserialize;
use strum::{IntoStaticStr, VariantArray};
use tracing::Instrument;

use super::Raft;
use crate::api::{NotLeader, ReadIndex};
use crate::metrics::{GroupMetrics, METRICS};

/// The query of a read-index request that hurries the leader's lazy writes.
const HURRY_QUERY: &str = "hurry=true";

/// The query a leader's read-index handler takes.
#[derive(Debug, Default, Deserialize)]
pub struct ReadIndexQuery {
    /// A read waits on the leader's lazy writes: write them now.
    #[serde(default)]
    pub hurry: bool,
}

/// How a follower read ended, as the `outcome` metric label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, VariantArray, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum FollowerReadOutcome {
    /// Caught up with the read index and answered from this replica.
    Served,
    /// The node it took for leader no longer leads: a 421 to the caller.
    NotLeader,
    /// The leader could not be asked or could not confirm its leadership.
    Unavailable,
    /// Not applied up to the read index within the bound.
    Behind,
}

/// Why a follower may not serve a read.
#[derive(Debug)]
pub enum CatchUpError {
    NotLeader(NotLeader),
    Unavailable(String),
    Behind { index: u64 },
}

impl CatchUpError {
    fn outcome(&self) -> FollowerReadOutcome {
        match self {
            Self::NotLeader(_) => FollowerReadOutcome::NotLeader,
            Self::Unavailable(_) => FollowerReadOutcome::Unavailable,
            Self::Behind { .. } => FollowerReadOutcome::Behind,
        }
    }
}

/// A follower's side of follower reads: present when the spec turns them on.
pub struct FollowerReads {
    client: InternalClient,
    /// The read-index round and the wait for the applies, together.
    bound: Duration,
    metrics: GroupMetrics,
}

impl FollowerReads {
    /// `None` when the spec's `raft.follower_reads` is off.
    pub fn new(spec: &ClusterSpec, shard: Shard, metrics: GroupMetrics) -> Option<Self> {
        precreate(
            &METRICS.follower_reads,
            FollowerReadOutcome::all().map(|o| [metrics.shard.as_str(), o.as_str()]),
        );
        // A leader that cannot confirm itself within an election timeout is
        // about to be replaced; the coordinator has other replicas to ask.
        let bound = Duration::from_millis(spec.raft.election_timeout_ms);
        spec.raft.follower_reads.then(|| Self {
            client: InternalClient::for_cluster(spec, bound).for_shard(shard),
            bound,
            metrics,
        })
    }

    /// Returns once this replica has applied everything the leader at
    /// `leader_addr` had committed when asked; counts and times the round.
    /// With `hurry` the leader also writes its lazy writes at once and
    /// answers once they are written, so what it answers covers them (a
    /// read waits on one: `saga::decided_read`).
    pub async fn catch_up(
        &self,
        raft: &Raft,
        leader_addr: &str,
        hurry: bool,
    ) -> Result<(), CatchUpError> {
        let started = Instant::now();
        let span = tracing::info_span!("raft.follower_read", leader = leader_addr, hurry);
        let result = self
            .round(raft, leader_addr, hurry, started)
            .instrument(span)
            .await;
        self.metrics
            .follower_read_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(()) => FollowerReadOutcome::Served,
            Err(e) => {
                tracing::debug!(leader = leader_addr, error = ?e, "follower read refused");
                e.outcome()
            }
        };
        self.metrics
            .of_family(&METRICS.follower_reads, &[outcome.as_str()])
            .inc();
        result
    }

    async fn round(
        &self,
        raft: &Raft,
        leader_addr: &str,
        hurry: bool,
        started: Instant,
    ) -> Result<(), CatchUpError> {
        let path = if hurry {
            format!("{READ_INDEX_PATH}?{HURRY_QUERY}")
        } else {
            READ_INDEX_PATH.to_string()
        };
        let asked = self
            .client
            .post_json::<_, ReadIndex>(leader_addr, &path, &())
            .await;
        let index = match asked {
            Ok(ReadIndex { index }) => index,
            Err(CallError::Status { status, body }) if status.as_u16() == 421 => {
                return Err(CatchUpError::NotLeader(
                    serde_json::from_str(&body).unwrap_or_default(),
                ))
            }
            Err(e) => return Err(CatchUpError::Unavailable(format!("{leader_addr}: {e}"))),
        };
        let Some(index) = index else {
            return Ok(());
        };
        let left = self.bound.saturating_sub(started.elapsed());
        raft.wait(Some(left))
            .applied_index_at_least(Some(index), "follower read")
            .await
            .map(|_| ())
            .map_err(|_| CatchUpError::Behind { index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_switch_turns_follower_reads_off() {
        let mut spec = crate::test_spec::spec();
        assert!(
            spec.raft.follower_reads,
            "on unless the spec says otherwise"
        );
        assert!(FollowerReads::new(&spec, Shard(0), GroupMetrics::of(Shard(0))).is_some());
        spec.raft.follower_reads = false;
        assert!(FollowerReads::new(&spec, Shard(0), GroupMetrics::of(Shard(0))).is_none());
    }

    #[test]
    fn every_outcome_has_its_own_label() {
        let labels: std::collections::BTreeSet<_> =
            FollowerReadOutcome::all().map(|o| o.as_str()).collect();
        assert_eq!(labels.len(), FollowerReadOutcome::all().count());
        assert!(labels.contains("not_leader"), "{labels:?}");
    }
}
