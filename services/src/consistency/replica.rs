//! A replica's side of consistency checks: when it applies a check entry it
//! freezes its storage at exactly that log position (a clone of the embedded store's persistent maps,
//! or with MongoDB a copy read while applies wait) and digests it in the
//! background (the replica keeps serving); it keeps the frozen view for a
//! while so the checker can ask which rows sit in differing leaves. It also
//! applies repairs aimed at it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::digest::{self, Tree, TreeBuilder, DIGEST_TABLES};
use crate::domain::{RepairRow, StateStore, StoreError, Table};
use crate::storage::Frozen;

/// Captures kept per replica; older ones are dropped with their snapshots.
const CAPTURES_KEPT: usize = 4;
/// A capture's frozen view is released after this long (it holds on to the
/// old versions of every row changed since; a MongoDB copy holds memory).
const SNAPSHOT_TTL: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestStatus {
    Computing,
    Done,
    Failed,
    /// This replica has not applied the check entry (yet), or forgot it.
    Unknown,
}

/// What a replica says about one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestSummary {
    pub status: DigestStatus,
    pub log_index: Option<u64>,
    pub root: Option<String>,
    /// The 256 level-1 digests, hex.
    pub level1: Vec<String>,
    pub keys: Option<u64>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
}

/// A stored row in a differing leaf, as the check's snapshot holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowDigest {
    pub table: String,
    pub key: String,
    pub hash: String,
    pub value: String,
}

struct Capture {
    check_id: String,
    log_index: u64,
    started: Instant,
    result: Option<Result<(Arc<Tree>, u64), String>>,
    snapshot: Option<Arc<dyn Frozen>>,
}

/// The captures and repairs of one replica.
#[derive(Default)]
pub struct Replica {
    captures: Mutex<VecDeque<Capture>>,
    /// check id → rows a repair overwrote here.
    repairs: Mutex<HashMap<String, u64>>,
}

impl Replica {
    /// Exports this replica's series (at 0) from start-up.
    pub fn init_metrics() {
        LazyLock::force(&METRICS);
    }

    /// Called right after the batch that applied the check entry
    /// committed: `snapshot` holds exactly the state at `log_index`.
    pub fn capture(self: &Arc<Self>, check_id: &str, log_index: u64, snapshot: Arc<dyn Frozen>) {
        {
            let mut captures = self.lock_captures();
            captures.push_back(Capture {
                check_id: check_id.to_string(),
                log_index,
                started: Instant::now(),
                result: None,
                snapshot: Some(snapshot.clone()),
            });
            while captures.len() > CAPTURES_KEPT {
                captures.pop_front();
            }
        }
        let me = self.clone();
        let check_id = check_id.to_string();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = scan(snapshot.as_ref())
                .map(|tree| (Arc::new(tree), started.elapsed().as_millis() as u64))
                .map_err(|e| e.to_string());
            if let Err(e) = &result {
                tracing::error!(%check_id, error = %e, "digest failed");
            }
            METRICS
                .digest_duration
                .observe(started.elapsed().as_secs_f64());
            let mut captures = me.lock_captures();
            if let Some(c) = captures.iter_mut().find(|c| c.check_id == check_id) {
                c.result = Some(result);
            }
        });
    }

    pub fn summary(&self, check_id: &str) -> DigestSummary {
        let mut captures = self.lock_captures();
        expire(&mut captures);
        let Some(c) = captures.iter().find(|c| c.check_id == check_id) else {
            return DigestSummary {
                status: DigestStatus::Unknown,
                log_index: None,
                root: None,
                level1: vec![],
                keys: None,
                duration_ms: None,
                error: None,
            };
        };
        let (status, tree, duration, error) = match &c.result {
            None => (DigestStatus::Computing, None, None, None),
            Some(Ok((tree, ms))) => (DigestStatus::Done, Some(tree.clone()), Some(*ms), None),
            Some(Err(e)) => (DigestStatus::Failed, None, None, Some(e.clone())),
        };
        DigestSummary {
            status,
            log_index: Some(c.log_index),
            root: tree.as_ref().map(|t| digest::hex(&t.root)),
            level1: tree
                .as_ref()
                .map(|t| t.level1.iter().map(digest::hex).collect())
                .unwrap_or_default(),
            keys: tree.as_ref().map(|t| t.keys),
            duration_ms: duration,
            error,
        }
    }

    fn tree(&self, check_id: &str) -> Option<Arc<Tree>> {
        let captures = self.lock_captures();
        let c = captures.iter().find(|c| c.check_id == check_id)?;
        match &c.result {
            Some(Ok((tree, _))) => Some(tree.clone()),
            _ => None,
        }
    }

    /// The leaf digests under the given level-1 buckets.
    pub fn leaves(&self, check_id: &str, buckets: &[u8]) -> Option<Vec<(u16, String)>> {
        let tree = self.tree(check_id)?;
        Some(
            buckets
                .iter()
                .flat_map(|b| digest::leaves_under(*b))
                .map(|i| (i as u16, digest::hex(&tree.leaves[i])))
                .collect(),
        )
    }

    /// Every row of the check's snapshot in the given leaves.
    pub fn rows(
        &self,
        check_id: &str,
        leaves: &[u16],
    ) -> Result<Option<Vec<RowDigest>>, StoreError> {
        let snapshot = {
            let mut captures = self.lock_captures();
            expire(&mut captures);
            captures
                .iter()
                .find(|c| c.check_id == check_id)
                .and_then(|c| c.snapshot.clone())
        };
        let Some(snapshot) = snapshot else {
            return Ok(None);
        };
        let wanted: std::collections::HashSet<u16> = leaves.iter().copied().collect();
        let mut out = Vec::new();
        for table in DIGEST_TABLES {
            snapshot.scan(table, &mut |key, value| {
                if wanted.contains(&digest::leaf_of(table, key.as_bytes())) {
                    out.push(RowDigest {
                        table: table.name().to_string(),
                        key: key.to_string(),
                        hash: digest::hex(&digest::entry_hash(table, key.as_bytes(), value)),
                        value: String::from_utf8_lossy(value).into_owned(),
                    });
                }
            })?;
        }
        Ok(Some(out))
    }

    pub fn repaired(&self, check_id: &str) -> Option<u64> {
        self.repairs.lock().ok()?.get(check_id).copied()
    }

    /// Applies a repair aimed at this replica, inside the apply transaction
    /// (so it is ordered with every write): each row is overwritten only if
    /// it still holds what the check saw; a row a later write changed is
    /// left for the next check.
    pub fn repair(
        &self,
        store: &mut dyn StateStore,
        check_id: &str,
        rows: &[RepairRow],
    ) -> Result<u64, StoreError> {
        let mut repaired = 0;
        for row in rows {
            let Some(table) = Table::from_name(&row.table) else {
                continue;
            };
            let current = store.get(table, &row.key)?;
            let current_hash = current
                .as_deref()
                .map(|v| digest::hex(&digest::entry_hash(table, row.key.as_bytes(), v)));
            if current_hash != row.bad_hash {
                continue;
            }
            match &row.good {
                Some(good) => store.put(table, &row.key, good.as_bytes())?,
                None => store.delete(table, &row.key)?,
            }
            repaired += 1;
        }
        METRICS.rows_repaired_here.inc_by(repaired);
        if let Ok(mut r) = self.repairs.lock() {
            r.insert(check_id.to_string(), repaired);
            if r.len() > 64 {
                r.clear();
                r.insert(check_id.to_string(), repaired);
            }
        }
        Ok(repaired)
    }

    fn lock_captures(&self) -> std::sync::MutexGuard<'_, VecDeque<Capture>> {
        self.captures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn expire(captures: &mut VecDeque<Capture>) {
    for c in captures.iter_mut() {
        if c.started.elapsed() > SNAPSHOT_TTL {
            c.snapshot = None;
        }
    }
}

/// Digests every digest table of a frozen view: the bytes as stored.
pub fn scan(snapshot: &dyn Frozen) -> Result<Tree, StoreError> {
    let mut builder = TreeBuilder::default();
    for table in DIGEST_TABLES {
        snapshot.scan(table, &mut |key, value| {
            builder.add(table, key.as_bytes(), value)
        })?;
    }
    Ok(builder.finish())
}

struct ReplicaMetrics {
    digest_duration: prometheus::Histogram,
    rows_repaired_here: prometheus::IntCounter,
}

static METRICS: LazyLock<ReplicaMetrics> = LazyLock::new(|| ReplicaMetrics {
    digest_duration: cart_common::metrics::histogram_vec(
        "consistency_digest_duration_seconds",
        "Time this replica took to digest its stored state for a check.",
        &[],
        cart_common::metrics::LATENCY_BUCKETS,
    )
    .with_label_values::<&str>(&[]),
    rows_repaired_here: cart_common::metrics::counter(
        "consistency_rows_repaired_here_total",
        "Rows a repair overwrote on this replica.",
    ),
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repair_overwrites_only_rows_that_still_hold_what_the_check_saw() {
        let mut store = crate::domain::memory::MemoryStore::default();
        store.put(Table::Items, "a", b"bad").unwrap();
        store.put(Table::Items, "b", b"changed-since").unwrap();
        let bad = |v: &str, k: &str| {
            Some(digest::hex(&digest::entry_hash(
                Table::Items,
                k.as_bytes(),
                v.as_bytes(),
            )))
        };
        let rows = vec![
            RepairRow {
                table: "items".into(),
                key: "a".into(),
                bad_hash: bad("bad", "a"),
                good: Some("good".into()),
            },
            // A later write changed it: left alone.
            RepairRow {
                table: "items".into(),
                key: "b".into(),
                bad_hash: bad("bad", "b"),
                good: Some("good".into()),
            },
            // Missing here, present in the majority: created.
            RepairRow {
                table: "items".into(),
                key: "c".into(),
                bad_hash: None,
                good: Some("good".into()),
            },
        ];
        let replica = Replica::default();
        assert_eq!(replica.repair(&mut store, "c1", &rows).unwrap(), 2);
        let view = &store;
        assert_eq!(view.get(Table::Items, "a").unwrap().unwrap(), b"good");
        assert_eq!(
            view.get(Table::Items, "b").unwrap().unwrap(),
            b"changed-since"
        );
        assert_eq!(view.get(Table::Items, "c").unwrap().unwrap(), b"good");
        assert_eq!(replica.repaired("c1"), Some(2));
    }
}
