//! One consistency check: log a `ComputeDigest` entry, collect every
//! member's digest at it, find the majority's root, and descend the bucket
//! tree of each mismatching replica to the leaves that differ.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use cart_common::admin::{CheckReport, ReplicaDigest};
use cart_common::paths;

use super::metrics::METRICS;
use super::{CheckRun, Checker, BUCKETS_LISTED};
use crate::consistency::digest::{differing_level1, leaves_under};
use crate::consistency::replica::{DigestStatus, DigestSummary};
use crate::consistency::wire::LeavesRequest;
use crate::domain::Command;
use crate::raft::{now_ms, NodeId};

impl Checker {
    /// Logs the check entry, collects every member's digest at it and
    /// compares them.
    pub(super) async fn check(&self, check_id: &str, reason: &str) -> Result<CheckRun, String> {
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
                shard: self.shard,
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
        let path = paths::digest_leaves_path(check_id);
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

    /// A replica's digest for the check, waiting while it computes.
    async fn digest_of(
        &self,
        addr: &str,
        check_id: &str,
        deadline: Instant,
    ) -> Option<DigestSummary> {
        let path = paths::digest_path(check_id);
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
