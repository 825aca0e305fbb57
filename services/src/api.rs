//! The node's internal HTTP API (coordinator → node), shared with the
//! coordinator so both sides agree on paths and bodies. Every route here
//! requires the cluster-internal secret.
//!
//! Answers: 200 with an `Outcome` (a reply or a business rejection),
//! 421 with `NotLeader` (ask the leader instead), 429 overloaded,
//! 503 when the group cannot answer (no quorum).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::domain::CheckoutReply;
use crate::domain::{Command, Query};
use crate::request_key::RequestKey;
pub use crate::storage::health::StorageStatus;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WriteRequest {
    #[serde(flatten)]
    pub key: RequestKey,
    pub cmd: Command,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadRequest {
    pub query: Query,
}

/// A leader's answer to `READ_INDEX_PATH`: the log index a replica must
/// have applied before it serves a read begun now (`raft::read_index`);
/// `None` while nothing has been committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndex {
    pub index: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NotLeader {
    pub leader_id: Option<u64>,
    pub leader_addr: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub service: String,
    /// The shard whose group this status is of (the `cart-shard` header of
    /// the request; 0 without it).
    #[serde(default)]
    pub shard: cart_common::shard::Shard,
    /// Every shard this node hosts, in brief (the node's other groups).
    #[serde(default)]
    pub shards: Vec<cart_common::admin::ShardRole>,
    pub id: u64,
    pub addr: String,
    /// Leader, Follower, Candidate or Learner.
    pub state: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot: Option<u64>,
    /// Entries up to here are gone from the log (covered by the snapshot).
    pub purged: Option<u64>,
    /// Voters and learners with their addresses, as the Raft log says.
    pub members: Vec<(u64, String)>,
    #[serde(default)]
    pub voters: Vec<u64>,
    /// Highest index this node knows to be committed.
    #[serde(default)]
    pub committed: Option<u64>,
    /// On the leader only: every other member's replication progress.
    #[serde(default)]
    pub replication: Option<BTreeMap<u64, FollowerProgress>>,
    /// Order leaders: the last time this node took over open checkouts.
    #[serde(default)]
    pub saga_recovery: Option<SagaRecovery>,
    /// The group's latest consistency check, from this replica's log.
    #[serde(default)]
    pub last_check: Option<cart_common::admin::CheckReport>,
    /// The newest reports finished within the last minute, oldest first
    /// (at most `domain::checks::RECENT_CHECKS`), so that a coordinator sees
    /// every report even when several finish between two of its reads.
    #[serde(default)]
    pub recent_checks: Vec<cart_common::admin::CheckReport>,
    /// Keys per replicated table on this replica (bounded tables stay small).
    #[serde(default)]
    pub table_sizes: BTreeMap<String, u64>,
    /// Whether this replica's storage answers.
    #[serde(default)]
    pub storage: StorageStatus,
}

/// A follower (or learner) as its leader sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FollowerProgress {
    /// Last log index the follower has acknowledged.
    pub matched: Option<u64>,
    /// Entries the leader has that it lacks; none while `matched` is none
    /// (the leader has not heard from it yet).
    pub lag_entries: Option<u64>,
    /// Now minus the append time of the oldest entry it lacks; 0 when
    /// caught up; none while `matched` is none.
    pub lag_seconds: Option<f64>,
    /// Milliseconds since it last answered a Raft RPC.
    pub last_contact_ms_ago: Option<u64>,
    /// Whether the leader's most recent RPC to it failed.
    pub failing: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckoutRequest {
    /// The client's request id: a retry joins the same transaction.
    #[serde(flatten)]
    pub key: RequestKey,
    pub order_id: String,
}

/// A new order leader resuming the checkouts its predecessor left open.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SagaRecovery {
    pub term: u64,
    pub at_ms: u64,
    /// Open checkouts it took over.
    pub resumed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoveMember {
    pub id: u64,
}
