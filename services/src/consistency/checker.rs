//! Consistency checks and repairs, run by the group's leader.
//!
//! A check appends a `ComputeDigest` entry; every replica digests its store
//! when it applies that entry (`replica.rs`), so all digests describe the
//! same log position and replication lag never looks like a mismatch. The
//! leader collects them (a replica without one by the timeout is reported
//! unreachable), and the replicas whose root is held by a majority of the
//! group are correct. For a mismatching replica it descends the bucket tree
//! to the differing leaves and, to repair, compares just their rows with a
//! correct replica's and logs a `RepairRows` entry that overwrites exactly
//! the differing rows on that replica (conditionally, see `replica.rs`).
//! With no majority, or too many differing leaves, the replica is rebuilt:
//! removed from the group, wiped, re-added as a learner that receives a
//! snapshot, and promoted. Every result is logged (`RecordCheck`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use cart_common::admin::{CheckReport, NodeRepair, RepairReport, ReplicaDigest};
use cart_common::http::INTERNAL_SECRET;
use cart_common::metrics::{counter_vec, histogram_vec};
use cart_common::spec::ConsistencySection;
use cart_common::ClusterSpec;
use openraft::ServerState;
use prometheus::{HistogramVec, IntCounterVec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::digest::{differing_level1, leaves_under};
use super::replica::{DigestStatus, DigestSummary, RowDigest};
use crate::domain::{Command, RepairRow};
use crate::membership;
use crate::raft::progress::Progress;
use crate::raft::proposer::{ProposeError, Proposer};
use crate::raft::{now_ms, NodeId, Raft};
use crate::request_key::RequestKey;

pub const DIGEST_PATH: &str = "/internal/digest";
pub const REPAIRED_PATH: &str = "/internal/repaired";
pub const WIPE_PATH: &str = "/internal/wipe";
/// Leader only: start a check, repair or rebuild.
pub const CONSISTENCY_PATH: &str = "/internal/consistency";

/// Differing leaves listed in a report per replica (all are repaired).
const BUCKETS_LISTED: usize = 64;
/// A follower unreachable this long and back counts as a rejoin.
const REJOIN_AWAY_MS: u64 = 1000;
/// How long a wiped node may take to come back empty.
const WIPE_TIMEOUT: Duration = Duration::from_secs(30);

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    Check {
        reason: String,
    },
    /// Repair one node, or every mismatching one.
    Repair {
        node: Option<NodeId>,
    },
    Rebuild {
        node: NodeId,
    },
}

#[derive(Serialize, Deserialize)]
pub struct LeavesRequest {
    pub buckets: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
pub struct RowsRequest {
    pub leaves: Vec<u16>,
}

pub struct Checker {
    id: NodeId,
    raft: Raft,
    proposer: Proposer,
    client: reqwest::Client,
    secret: String,
    cfg: ConsistencySection,
    /// One operation at a time per group.
    busy: tokio::sync::Mutex<()>,
}

/// A check's report and what a repair needs from it.
struct CheckRun {
    report: CheckReport,
    /// Per mismatching replica: every differing leaf.
    leaves: HashMap<NodeId, Vec<u16>>,
    /// A replica holding the majority's digest.
    good: Option<NodeId>,
    members: BTreeMap<NodeId, String>,
}

impl Checker {
    pub fn new(
        spec: &ClusterSpec,
        service: cart_common::Service,
        id: NodeId,
        raft: Raft,
        proposer: Proposer,
    ) -> Self {
        init_series();
        init_node_series(spec.nodes(service).into_iter().map(|n| n.id));
        Self {
            id,
            raft,
            proposer,
            client: cart_common::http::client(
                Duration::from_millis(spec.limits.connect_timeout_ms),
                Duration::from_millis(spec.consistency.digest_timeout_ms.max(5_000)),
            ),
            secret: spec.cluster.internal_secret.clone(),
            cfg: spec.consistency.clone(),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Starts an operation in the background; its id names the report.
    pub fn start(self: &Arc<Self>, op: Operation) -> Result<String, ProposeError> {
        if !self.is_leader() {
            return Err(match crate::saga::leader_hint(&self.raft) {
                Some(f) => ProposeError::NotLeader(f),
                None => ProposeError::Unavailable("no leader".into()),
            });
        }
        let check_id = uuid::Uuid::new_v4().to_string();
        let me = self.clone();
        let id = check_id.clone();
        tokio::spawn(async move { me.run(op, id).await });
        Ok(check_id)
    }

    async fn run(self: Arc<Self>, op: Operation, check_id: String) {
        let _one_at_a_time = self.busy.lock().await;
        let reason = match &op {
            Operation::Check { reason } => reason.clone(),
            Operation::Repair { .. } => "repair".into(),
            Operation::Rebuild { .. } => "rebuild".into(),
        };
        let run = match self.check(&check_id, &reason).await {
            Ok(run) => run,
            Err(e) => {
                tracing::warn!(%check_id, error = %e, "check did not run");
                METRICS.checks.with_label_values(&["failed"]).inc();
                return;
            }
        };
        let mut report = run.report.clone();
        let repair = match op {
            Operation::Check { .. } => None,
            Operation::Repair { node } => Some(self.repair(&run, node).await),
            Operation::Rebuild { node } => Some(self.rebuild_all(&run, &[node]).await),
        };
        if let Some(mut repair) = repair {
            // The re-check is logged on its own, then the repair's report.
            let recheck_id = uuid::Uuid::new_v4().to_string();
            if let Ok(recheck) = self.check(&recheck_id, "recheck").await {
                repair.recheck_verdict = Some(recheck.report.verdict.clone());
                repair.recheck_id = Some(recheck_id);
                self.record(recheck.report).await;
            }
            report.repair = Some(repair);
            report.finished_ms = now_ms();
        }
        self.record(report).await;
    }

    async fn record(&self, report: CheckReport) {
        let id = format!("record:{}", report.check_id);
        let check_id = report.check_id.clone();
        match self
            .proposer
            .propose(&RequestKey::internal(id), Command::RecordCheck { report })
            .await
        {
            Ok(_) => {}
            Err(ProposeError::NotLeader(_)) => {
                tracing::warn!(%check_id, "check report not logged: no longer leader")
            }
            Err(e) => {
                tracing::warn!(%check_id, error = ?e, "check report not logged")
            }
        }
    }

    /// While leader: a periodic check every `check_interval_secs`, and a
    /// check whenever a follower that was away is back and caught up.
    pub async fn schedule(self: Arc<Self>, progress: Arc<Progress>) {
        let interval = Duration::from_secs(self.cfg.check_interval_secs);
        let mut next_periodic: Option<Instant> = None;
        let mut away: HashSet<NodeId> = HashSet::new();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !self.is_leader() {
                next_periodic = None;
                away.clear();
                continue;
            }
            if !interval.is_zero() {
                let next = *next_periodic.get_or_insert_with(|| Instant::now() + interval);
                if Instant::now() >= next {
                    next_periodic = Some(Instant::now() + interval);
                    let _ = self.start(Operation::Check {
                        reason: "periodic".into(),
                    });
                }
            }
            let m = self.raft.metrics().borrow().clone();
            let Some(replication) = &m.replication else {
                continue;
            };
            for (id, matched) in replication.iter() {
                let contact = progress.contact(*id);
                let failing = contact.is_some_and(|c| {
                    c.failing && c.last_ok_ms_ago.is_none_or(|ms| ms >= REJOIN_AWAY_MS)
                });
                if failing {
                    away.insert(*id);
                    continue;
                }
                let caught_up = matched.map(|l| l.index) == m.last_log_index;
                if caught_up && away.remove(id) {
                    tracing::info!(node = id, "follower rejoined; checking the group");
                    let _ = self.start(Operation::Check {
                        reason: "rejoin".into(),
                    });
                }
            }
        }
    }

    /// Logs the check entry, collects every member's digest at it and
    /// compares them.
    async fn check(&self, check_id: &str, reason: &str) -> Result<CheckRun, String> {
        let started_ms = now_ms();
        let members = self.members();
        let entry = Command::ComputeDigest {
            check_id: check_id.to_string(),
        };
        let log_index = match self.append(&format!("check:{check_id}"), entry).await {
            Ok(index) => index,
            Err(e) => return Err(e),
        };
        let deadline = Instant::now() + Duration::from_millis(self.cfg.digest_timeout_ms);
        let summaries = futures::future::join_all(members.iter().map(|(id, addr)| async move {
            (*id, self.digest_of(addr, check_id, deadline).await)
        }))
        .await;

        let mut by_root: BTreeMap<String, Vec<NodeId>> = BTreeMap::new();
        for (id, s) in &summaries {
            if let Some(root) = s.as_ref().and_then(|s| s.root.clone()) {
                by_root.entry(root).or_default().push(*id);
            }
        }
        let majority = by_root
            .iter()
            .find(|(_, ids)| ids.len() > members.len() / 2)
            .map(|(root, ids)| (root.clone(), ids[0]));
        let good_summary = majority.as_ref().and_then(|(_, good)| {
            summaries
                .iter()
                .find(|(id, _)| id == good)
                .and_then(|(_, s)| s.clone())
        });

        let mut replicas = Vec::new();
        let mut leaves = HashMap::new();
        for (id, summary) in &summaries {
            let Some(s) = summary.as_ref().filter(|s| s.status == DigestStatus::Done) else {
                replicas.push(ReplicaDigest {
                    node: *id,
                    status: "unreachable".into(),
                    root: None,
                    applied_index: summary.as_ref().and_then(|s| s.log_index),
                    keys: None,
                    duration_ms: None,
                    mismatching_buckets: 0,
                    buckets: vec![],
                });
                continue;
            };
            let matches = majority
                .as_ref()
                .is_some_and(|(root, _)| s.root.as_ref() == Some(root));
            let differing = match (&majority, &good_summary, matches) {
                (Some((_, good)), Some(g), false) => {
                    self.differing_leaves(&members, *id, *good, check_id, s, g)
                        .await
                }
                _ => vec![],
            };
            if !matches {
                METRICS
                    .mismatches
                    .with_label_values(&[&id.to_string()])
                    .inc();
            }
            replicas.push(ReplicaDigest {
                node: *id,
                status: if matches { "match" } else { "mismatch" }.into(),
                root: s.root.clone(),
                applied_index: s.log_index,
                keys: s.keys,
                duration_ms: s.duration_ms,
                mismatching_buckets: differing.len() as u64,
                buckets: differing.iter().take(BUCKETS_LISTED).copied().collect(),
            });
            if !matches {
                leaves.insert(*id, differing);
            }
        }
        let verdict = if majority.is_none() {
            "no_majority"
        } else if replicas.iter().any(|r| r.status == "mismatch") {
            "mismatch"
        } else if replicas.iter().any(|r| r.status == "unreachable") {
            "incomplete"
        } else {
            "clean"
        };
        METRICS.checks.with_label_values(&[verdict]).inc();
        Ok(CheckRun {
            report: CheckReport {
                check_id: check_id.to_string(),
                reason: reason.to_string(),
                started_ms,
                finished_ms: now_ms(),
                log_index,
                verdict: verdict.into(),
                majority_root: majority.as_ref().map(|(root, _)| root.clone()),
                replicas,
                repair: None,
            },
            leaves,
            good: majority.map(|(_, good)| good),
            members,
        })
    }

    /// Leaves in which `bad` differs from `good`: compare level-1 digests,
    /// then the leaves under the differing ones.
    async fn differing_leaves(
        &self,
        members: &BTreeMap<NodeId, String>,
        bad: NodeId,
        good: NodeId,
        check_id: &str,
        bad_summary: &DigestSummary,
        good_summary: &DigestSummary,
    ) -> Vec<u16> {
        let buckets = differing_level1_hex(&bad_summary.level1, &good_summary.level1);
        if buckets.is_empty() {
            return vec![];
        }
        let req = LeavesRequest {
            buckets: buckets.clone(),
        };
        let path = format!("{DIGEST_PATH}/{check_id}/leaves");
        let (Some(bad_addr), Some(good_addr)) = (members.get(&bad), members.get(&good)) else {
            return vec![];
        };
        let bad_leaves: Option<Vec<(u16, String)>> = self.post(bad_addr, &path, &req).await;
        let good_leaves: Option<Vec<(u16, String)>> = self.post(good_addr, &path, &req).await;
        match (bad_leaves, good_leaves) {
            (Some(b), Some(g)) => b
                .iter()
                .zip(g.iter())
                .filter(|(x, y)| x != y)
                .map(|(x, _)| x.0)
                .collect(),
            // Cannot descend: report every leaf under the differing buckets.
            _ => buckets
                .iter()
                .flat_map(|b| leaves_under(*b))
                .map(|l| l as u16)
                .collect(),
        }
    }

    async fn repair(&self, run: &CheckRun, only: Option<NodeId>) -> RepairReport {
        let started = Instant::now();
        let targets: Vec<NodeId> = match only {
            Some(n) => vec![n],
            None => run.leaves.keys().copied().collect(),
        };
        let mut nodes = Vec::new();
        for target in targets {
            let leaves = run.leaves.get(&target).cloned().unwrap_or_default();
            let result = if run.good.is_none() {
                // No majority to copy from: only a rebuild can help.
                self.rebuild(run, target).await
            } else if leaves.is_empty() {
                Ok(NodeRepair {
                    node: target,
                    action: "none".into(),
                    buckets: 0,
                    keys_repaired: 0,
                    message: "matches the majority".into(),
                })
            } else if leaves.len() as u64 > self.cfg.rebuild_threshold_buckets {
                self.rebuild(run, target).await
            } else {
                self.repair_rows(run, target, &leaves).await
            };
            nodes.push(result.unwrap_or_else(|message| failed(target, message)));
        }
        finish_repair(nodes, started)
    }

    async fn rebuild_all(&self, run: &CheckRun, targets: &[NodeId]) -> RepairReport {
        let started = Instant::now();
        let mut nodes = Vec::new();
        for target in targets {
            let result = self.rebuild(run, *target).await;
            nodes.push(result.unwrap_or_else(|message| failed(*target, message)));
        }
        finish_repair(nodes, started)
    }

    /// Overwrites exactly the rows of `leaves` that differ from a correct
    /// replica's, on `target`, through the log.
    async fn repair_rows(
        &self,
        run: &CheckRun,
        target: NodeId,
        leaves: &[u16],
    ) -> Result<NodeRepair, String> {
        let check_id = &run.report.check_id;
        let good = run.good.ok_or("no majority")?;
        let addr = |id: NodeId| {
            run.members
                .get(&id)
                .cloned()
                .ok_or(format!("node {id} not a member"))
        };
        let path = format!("{DIGEST_PATH}/{check_id}/rows");
        let req = RowsRequest {
            leaves: leaves.to_vec(),
        };
        let bad_rows: Vec<RowDigest> = self
            .post(&addr(target)?, &path, &req)
            .await
            .ok_or(format!("node {target} did not list its rows"))?;
        let good_rows: Vec<RowDigest> = self
            .post(&addr(good)?, &path, &req)
            .await
            .ok_or(format!("node {good} did not list its rows"))?;
        let rows = diff_rows(&bad_rows, &good_rows);
        let keys = rows.len() as u64;
        let entry = Command::RepairRows {
            check_id: check_id.clone(),
            target,
            rows,
        };
        self.append(&format!("repair:{check_id}:{target}"), entry)
            .await?;
        // Ordered in the log: the target reports what it overwrote once it
        // has applied the entry.
        let deadline = Instant::now() + Duration::from_millis(self.cfg.digest_timeout_ms);
        let repaired = loop {
            let path = format!("{REPAIRED_PATH}/{check_id}");
            if let Some(Some(n)) = self.get::<Option<u64>>(&addr(target)?, &path).await {
                break n;
            }
            if Instant::now() > deadline {
                return Err(format!("node {target} did not apply the repair in time"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        METRICS
            .buckets_repaired
            .with_label_values(&[&target.to_string()])
            .inc_by(leaves.len() as u64);
        METRICS
            .keys_repaired
            .with_label_values(&[&target.to_string()])
            .inc_by(repaired);
        Ok(NodeRepair {
            node: target,
            action: "repaired".into(),
            buckets: leaves.len() as u64,
            keys_repaired: repaired,
            message: format!("{repaired} of {keys} differing rows overwritten"),
        })
    }

    /// Removes `target` from the group, has it wipe its data and restart
    /// empty, adds it back as a learner (it gets a snapshot) and promotes it.
    async fn rebuild(&self, run: &CheckRun, target: NodeId) -> Result<NodeRepair, String> {
        if target == self.id {
            return Err("is the leader: rebuild it once another node leads".into());
        }
        let addr = run
            .members
            .get(&target)
            .cloned()
            .or_else(|| self.members().get(&target).cloned())
            .ok_or(format!("node {target} is not a member"))?;
        tracing::info!(target, %addr, "rebuilding node");
        membership::remove_member(&self.raft, target)
            .await
            .map_err(|e| format!("removing node {target}: {e}"))?;
        let wiped = self
            .client
            .post(format!("http://{addr}{WIPE_PATH}"))
            .header(INTERNAL_SECRET, &self.secret)
            .send()
            .await
            .map_err(|e| format!("asking node {target} to wipe: {e}"))?;
        if !wiped.status().is_success() {
            return Err(format!("node {target} refused to wipe: {}", wiped.status()));
        }
        // It restarts empty: its log is empty once it answers again.
        let deadline = Instant::now() + WIPE_TIMEOUT;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let status: Option<crate::api::NodeStatus> =
                self.get(&addr, crate::api::STATUS_PATH).await;
            if status.is_some_and(|s| s.last_log_index.is_none()) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("node {target} did not come back empty"));
            }
        }
        membership::add_voter(&self.raft, target, addr)
            .await
            .map_err(|e| format!("re-adding node {target}: {e}"))?;
        METRICS.rebuilds.inc();
        let buckets = run.leaves.get(&target).map_or(0, |l| l.len() as u64);
        Ok(NodeRepair {
            node: target,
            action: "rebuilt".into(),
            buckets,
            keys_repaired: 0,
            message: "wiped, re-added as a learner, sent a snapshot, promoted".into(),
        })
    }

    /// Appends a command to the group's log; its log index.
    async fn append(&self, request_id: &str, cmd: Command) -> Result<u64, String> {
        self.proposer
            .append_alone(&RequestKey::internal(request_id), cmd)
            .await
    }

    fn members(&self) -> BTreeMap<NodeId, String> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// A replica's digest for the check, waiting while it computes.
    async fn digest_of(
        &self,
        addr: &str,
        check_id: &str,
        deadline: Instant,
    ) -> Option<DigestSummary> {
        let path = format!("{DIGEST_PATH}/{check_id}");
        let mut last = None;
        loop {
            let summary: Option<DigestSummary> = self.get(addr, &path).await;
            if let Some(s) = &summary {
                if matches!(s.status, DigestStatus::Done | DigestStatus::Failed) {
                    return summary;
                }
            }
            last = summary.or(last);
            if Instant::now() > deadline {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get<T: DeserializeOwned>(&self, addr: &str, path: &str) -> Option<T> {
        let resp = self
            .client
            .get(format!("http://{addr}{path}"))
            .header(INTERNAL_SECRET, &self.secret)
            .send()
            .await
            .ok()?;
        resp.status().is_success().then_some(())?;
        resp.json().await.ok()
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &B,
    ) -> Option<T> {
        let resp = self
            .client
            .post(format!("http://{addr}{path}"))
            .header(INTERNAL_SECRET, &self.secret)
            .json(body)
            .send()
            .await
            .ok()?;
        resp.status().is_success().then_some(())?;
        resp.json().await.ok()
    }
}

fn failed(node: NodeId, message: String) -> NodeRepair {
    tracing::warn!(node, %message, "repair failed");
    NodeRepair {
        node,
        action: "failed".into(),
        buckets: 0,
        keys_repaired: 0,
        message,
    }
}

fn finish_repair(nodes: Vec<NodeRepair>, started: Instant) -> RepairReport {
    for n in &nodes {
        METRICS.repairs.with_label_values(&[&n.action]).inc();
    }
    METRICS
        .repair_duration
        .with_label_values::<&str>(&[])
        .observe(started.elapsed().as_secs_f64());
    RepairReport {
        nodes,
        duration_ms: started.elapsed().as_millis() as u64,
        recheck_id: None,
        recheck_verdict: None,
    }
}

fn differing_level1_hex(a: &[String], b: &[String]) -> Vec<u8> {
    let parse = |v: &[String]| -> Vec<[u8; 32]> {
        v.iter()
            .map(|h| {
                let mut out = [0u8; 32];
                for (i, chunk) in h.as_bytes().chunks(2).take(32).enumerate() {
                    let s = std::str::from_utf8(chunk).unwrap_or("00");
                    out[i] = u8::from_str_radix(s, 16).unwrap_or(0);
                }
                out
            })
            .collect()
    };
    differing_level1(&parse(a), &parse(b))
}

/// The rows a repair must write on the bad replica: every (table, key)
/// whose hash differs, with what the bad replica holds now (to write only if
/// unchanged) and the good replica's value (`None`: delete it).
pub fn diff_rows(bad: &[RowDigest], good: &[RowDigest]) -> Vec<RepairRow> {
    let key = |r: &RowDigest| (r.table.clone(), r.key.clone());
    let bad_map: HashMap<_, _> = bad.iter().map(|r| (key(r), r)).collect();
    let good_map: HashMap<_, _> = good.iter().map(|r| (key(r), r)).collect();
    let mut keys: Vec<_> = bad_map.keys().chain(good_map.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let b = bad_map.get(&k);
            let g = good_map.get(&k);
            if b.map(|r| &r.hash) == g.map(|r| &r.hash) {
                return None;
            }
            Some(RepairRow {
                table: k.0,
                key: k.1,
                bad_hash: b.map(|r| r.hash.clone()),
                good: g.map(|r| r.value.clone()),
            })
        })
        .collect()
}

struct CheckerMetrics {
    checks: IntCounterVec,
    mismatches: IntCounterVec,
    buckets_repaired: IntCounterVec,
    keys_repaired: IntCounterVec,
    rebuilds: prometheus::IntCounter,
    repairs: IntCounterVec,
    repair_duration: HistogramVec,
}

/// Leaders run checks, so these live on whichever node led.
static METRICS: LazyLock<CheckerMetrics> = LazyLock::new(|| CheckerMetrics {
    checks: counter_vec(
        "consistency_checks_total",
        "Consistency checks this node ran as leader, by verdict (clean, mismatch, \
         no_majority, incomplete, failed).",
        &["verdict"],
    ),
    mismatches: counter_vec(
        "consistency_mismatches_total",
        "Replicas found not matching the majority's digest, by node.",
        &["node"],
    ),
    buckets_repaired: counter_vec(
        "consistency_buckets_repaired_total",
        "Differing leaf buckets repaired, by node.",
        &["node"],
    ),
    keys_repaired: counter_vec(
        "consistency_keys_repaired_total",
        "Rows a repair overwrote, by node.",
        &["node"],
    ),
    rebuilds: cart_common::metrics::counter(
        "consistency_rebuilds_total",
        "Replicas rebuilt (wiped, re-added, sent a snapshot).",
    ),
    repairs: counter_vec(
        "consistency_repairs_total",
        "Nodes a repair or rebuild operation handled, by action (repaired, rebuilt, failed, none).",
        &["action"],
    ),
    repair_duration: histogram_vec(
        "consistency_repair_duration_seconds",
        "Time of a repair (or rebuild), before its re-check.",
        &[],
        &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0],
    ),
});

fn init_series() {
    let verdicts = ["clean", "mismatch", "no_majority", "incomplete", "failed"];
    cart_common::metrics::precreate(&METRICS.checks, verdicts.map(|v| [v]));
    METRICS.rebuilds.inc_by(0);
    let actions = ["repaired", "rebuilt", "failed", "none"];
    cart_common::metrics::precreate(&METRICS.repairs, actions.map(|a| [a]));
    METRICS.repair_duration.with_label_values::<&str>(&[]);
}

/// Series operators alert on exist at 0 for every member from the start.
pub fn init_node_series(nodes: impl IntoIterator<Item = NodeId>) {
    for node in nodes {
        let node = node.to_string();
        let labels = [[node.as_str()]];
        cart_common::metrics::precreate(&METRICS.mismatches, labels);
        cart_common::metrics::precreate(&METRICS.buckets_repaired, labels);
        cart_common::metrics::precreate(&METRICS.keys_repaired, labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, hash: &str) -> RowDigest {
        RowDigest {
            table: "items".into(),
            key: key.into(),
            hash: hash.into(),
            value: format!("value-{hash}"),
        }
    }

    #[test]
    fn only_differing_rows_are_repaired() {
        let bad = vec![row("same", "1"), row("changed", "2"), row("extra", "3")];
        let good = vec![row("same", "1"), row("changed", "9"), row("missing", "4")];
        let rows = diff_rows(&bad, &good);
        let summary: Vec<(&str, Option<&str>, Option<&str>)> = rows
            .iter()
            .map(|r| (r.key.as_str(), r.bad_hash.as_deref(), r.good.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("changed", Some("2"), Some("value-9")),
                ("extra", Some("3"), None),
                ("missing", None, Some("value-4")),
            ]
        );
    }
}
