//! Consistency checks and repairs, run by the group's leader. This module
//! owns the checker's state and its schedule; the check itself is in
//! `check`, repairs and rebuilds in `repair`, its metrics in `metrics`.
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

mod check;
mod metrics;
mod repair;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cart_common::admin::CheckReport;
use cart_common::http::InternalClient;
use cart_common::shard::Shard;
use cart_common::spec::ConsistencySection;
use cart_common::ClusterSpec;
use openraft::ServerState;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::domain::Command;
use crate::raft::progress::Progress;
use crate::raft::proposer::{ProposeError, Proposer};
use crate::raft::{now_ms, NodeId, Raft};
use crate::request_key::RequestKey;
use metrics::{init_node_series, init_series, METRICS};

use super::wire::Operation;

/// Differing leaves listed in a report per replica (all are repaired).
const BUCKETS_LISTED: usize = 64;
/// A follower unreachable this long and back counts as a rejoin.
const REJOIN_AWAY_MS: u64 = 1000;
/// How long a wiped node may take to come back empty.
const WIPE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Checker {
    id: NodeId,
    shard: Shard,
    raft: Raft,
    proposer: Proposer,
    /// Carries the internal secret; digests may take a while to compute.
    client: InternalClient,
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
        shard: Shard,
        raft: Raft,
        proposer: Proposer,
    ) -> Self {
        init_series();
        init_node_series(spec.nodes(service).into_iter().map(|n| n.id));
        Self {
            id,
            shard,
            raft,
            proposer,
            client: InternalClient::for_cluster(
                spec,
                Duration::from_millis(spec.consistency.digest_timeout_ms.max(5_000)),
            )
            .for_shard(shard),
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

    /// A replica's answer, or `None` when it gave none: the check reports
    /// it unreachable, a repair fails naming it.
    async fn get<T: DeserializeOwned>(&self, addr: &str, path: &str) -> Option<T> {
        self.client.get_json(addr, path).await.ok()
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &B,
    ) -> Option<T> {
        self.client.post_json(addr, path, body).await.ok()
    }
}
