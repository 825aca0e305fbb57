//! Repairs and rebuilds after a check: overwrite exactly the differing rows
//! of a replica through the log, or, when that cannot help, remove the
//! replica, wipe it, and add it back to receive a snapshot.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cart_common::admin::{NodeRepair, RepairReport};
use cart_common::paths;

use super::metrics::METRICS;
use super::{CheckRun, Checker, WIPE_TIMEOUT};
use crate::consistency::replica::RowDigest;
use crate::consistency::wire::RowsRequest;
use crate::domain::{Command, RepairRow};
use crate::membership;
use crate::raft::NodeId;

impl Checker {
    pub(super) async fn repair(&self, run: &CheckRun, only: Option<NodeId>) -> RepairReport {
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

    pub(super) async fn rebuild_all(&self, run: &CheckRun, targets: &[NodeId]) -> RepairReport {
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
        let path = paths::digest_rows_path(check_id);
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
            let path = paths::repaired_path(check_id);
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
            .request(reqwest::Method::POST, &addr, paths::WIPE_PATH)
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
            let status: Option<crate::api::NodeStatus> = self.get(&addr, paths::STATUS_PATH).await;
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
