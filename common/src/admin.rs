//! Wire types of the coordinators' admin API (docs/admin-api.md), shared by
//! the coordinators that serve it and the tools that read it (tests, the
//! launcher, the admin console).

use serde::{Deserialize, Serialize};

use crate::shard::Shard;

use crate::spec::NodeId;

/// How a coordinator sees a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeHealth {
    /// Answers and is within the caught-up bound of the leader's log.
    Up,
    /// Does not answer probes, or the leader cannot reach it. Gets no
    /// requests.
    Down,
    /// Answers again after being down; its log is still behind the leader's.
    CatchingUp,
    /// Not probed yet (a coordinator that just started).
    Unknown,
}

impl NodeHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeHealth::Up => "up",
            NodeHealth::Down => "down",
            NodeHealth::CatchingUp => "catching_up",
            NodeHealth::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    pub addr: String,
    pub status: NodeHealth,
    /// Why it is down (`probe`: probes failed; `leader`: the leader cannot
    /// reach it; `storage`: its storage fails).
    pub down_reason: Option<String>,
    /// Leader, Follower, Learner or Candidate, as the node last said.
    pub role: Option<String>,
    /// Whether the node votes (a learner does not).
    pub voter: bool,
    pub term: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    /// Entries the leader has that this node has not acknowledged.
    pub lag_entries: Option<u64>,
    /// Now minus the append time of the oldest entry the node lacks; 0 when
    /// caught up.
    pub lag_seconds: Option<f64>,
    /// Milliseconds since this coordinator last heard from the node.
    pub last_seen_ms_ago: Option<u64>,
    /// The node's storage backend and whether it answers, as the node last
    /// said.
    #[serde(default)]
    pub storage: Option<StorageStatus>,
    /// The shards whose group this node leads, as it last said.
    #[serde(default)]
    pub leads: Vec<Shard>,
}

/// One shard's group as one of its nodes sees it (part of a node's status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRole {
    pub shard: Shard,
    /// Leader, Follower, Candidate or Learner.
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_applied: Option<u64>,
    /// The shard's latest consistency check, as this replica holds it.
    #[serde(default)]
    pub last_check: Option<CheckReport>,
}

/// One shard's group in a service's view: its leader as the nodes report
/// it (the one of the highest term any up node names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardView {
    pub shard: Shard,
    pub leader: Option<NodeId>,
    pub term: Option<u64>,
    /// The shard's latest consistency check, as its leader holds it.
    #[serde(default)]
    pub last_check: Option<CheckReport>,
}

/// What a node says about its storage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStatus {
    /// `embedded` or `mongodb`.
    pub backend: String,
    pub healthy: bool,
    /// The latest failure while unhealthy.
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorView {
    pub index: u16,
    pub public: String,
    pub admin: String,
    /// Whether the reporting coordinator reached it on its last event sync.
    pub reachable: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    pub service: String,
    /// The coordinator that produced this view.
    pub reported_by: String,
    pub leader: Option<NodeId>,
    pub term: Option<u64>,
    pub nodes: Vec<NodeView>,
    pub coordinators: Vec<CoordinatorView>,
    /// Set when no coordinator of the service answered; `nodes` is then empty.
    pub error: Option<String>,
    /// The group's latest consistency check, from its log.
    #[serde(default)]
    pub last_check: Option<CheckReport>,
    /// Every shard's group (`leader` and `term` above are shard 0's).
    #[serde(default)]
    pub shards: Vec<ShardView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub generated_at_ms: u64,
    pub reported_by: String,
    pub services: Vec<ServiceView>,
    /// Newest first, merged from every coordinator.
    pub events: Vec<Event>,
}

/// Something that happened to the cluster, as one coordinator observed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique: the observer's incarnation and a sequence number.
    pub id: String,
    pub at_ms: u64,
    pub service: String,
    /// node_down, node_up, caught_up, leader_change, member_added,
    /// member_removed (later: check and repair events).
    pub kind: String,
    pub node: Option<NodeId>,
    /// The coordinator that observed it first; `observers` lists every
    /// coordinator that observed the same occurrence.
    pub observer: String,
    #[serde(default)]
    pub observers: Vec<String>,
    pub message: String,
    /// Kind-specific facts, e.g. `detect_ms` and `source` of a node_down.
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// A coordinator's own events after a sequence number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OwnEvents {
    /// The observer's incarnation (name and start time): its sequence
    /// numbers restart with a new incarnation.
    pub incarnation: String,
    pub events: Vec<(u64, Event)>,
}

/// Body of a membership addition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddNode {
    pub id: NodeId,
    /// Defaults to the port layout's address for `id`.
    #[serde(default)]
    pub addr: Option<String>,
}

/// Answer of a membership change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MembershipChanged {
    pub service: String,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Log index of the membership entry that made the change (or of the
    /// current one, when there was nothing to change).
    pub log_index: u64,
    /// False when the node already was (or was not) a member.
    pub changed: bool,
}

/// Body of `POST /admin/services/{service}/repair`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RepairRequest {
    /// One node; all mismatching nodes when absent.
    #[serde(default)]
    pub node: Option<NodeId>,
}

/// Answer of a check, repair or rebuild: its result appears in the cluster
/// view (`ServiceView::last_check`) under this id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckStarted {
    pub service: String,
    pub check_id: String,
    /// The shard whose group runs it.
    #[serde(default)]
    pub shard: crate::shard::Shard,
    /// Started on the service's other shards by the same call (a call
    /// naming no shard starts one per shard); each has its own report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<CheckStarted>,
}

/// The outcome of one consistency check (and of the repair it led to), as
/// recorded in the group's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub check_id: String,
    /// periodic, rejoin, manual, repair, recheck.
    pub reason: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// Log index of the check entry: every replica digested its state there.
    pub log_index: u64,
    /// clean, mismatch, no_majority.
    pub verdict: String,
    /// Root digest of the majority (hex), if there is one.
    pub majority_root: Option<String>,
    pub replicas: Vec<ReplicaDigest>,
    /// The repair this check led to, if one was asked for.
    #[serde(default)]
    pub repair: Option<RepairReport>,
    /// The shard whose group was checked.
    #[serde(default)]
    pub shard: Shard,
}

impl CheckReport {
    /// Of several shards' latest checks, the one to show first: a
    /// mismatch before anything else, anything before clean, the latest
    /// finished among equals.
    pub fn worst<'a>(
        reports: impl IntoIterator<Item = &'a CheckReport>,
    ) -> Option<&'a CheckReport> {
        let rank = |r: &CheckReport| match r.verdict.as_str() {
            "mismatch" => 2,
            "clean" => 0,
            _ => 1,
        };
        reports.into_iter().max_by_key(|r| (rank(r), r.finished_ms))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDigest {
    pub node: NodeId,
    /// match, mismatch, unreachable (no digest within the timeout).
    pub status: String,
    pub root: Option<String>,
    pub applied_index: Option<u64>,
    pub keys: Option<u64>,
    pub duration_ms: Option<u64>,
    /// How many leaf buckets differ from the majority's.
    pub mismatching_buckets: u64,
    /// The first of them (leaf numbers, 0..65536).
    pub buckets: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    pub nodes: Vec<NodeRepair>,
    pub duration_ms: u64,
    /// The check run after the repair.
    pub recheck_id: Option<String>,
    pub recheck_verdict: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRepair {
    pub node: NodeId,
    /// repaired (keys overwritten), rebuilt (wiped and re-added), failed.
    pub action: String,
    pub buckets: u64,
    pub keys_repaired: u64,
    pub message: String,
}
