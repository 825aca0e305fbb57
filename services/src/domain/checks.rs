//! Consistency-check reports in the group's log, so every replica (and so
//! every coordinator asking any leader) reports the same results. The latest
//! `CHECKS_KEPT` are kept.

use cart_common::admin::CheckReport;
use serde::{Deserialize, Serialize};

use super::steps::time_key;
use super::{get_value, put_value, Outcome, Reply, StateStore, StoreError, Table};

pub const CHECKS_KEPT: usize = 20;

/// One row a repair overwrites on its target replica, if the row still
/// holds what the check saw there (`bad_hash`, hex; `None`: absent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairRow {
    pub table: String,
    pub key: String,
    pub bad_hash: Option<String>,
    /// The majority's value; `None`: the row must not exist.
    pub good: Option<String>,
}

pub(super) fn record(
    store: &mut dyn StateStore,
    report: &CheckReport,
) -> Result<Outcome, StoreError> {
    put_value(
        store,
        Table::Checks,
        &time_key(report.finished_ms, &report.check_id),
        report,
    )?;
    let all = store.keys(Table::Checks, None, usize::MAX)?;
    for old in all.iter().take(all.len().saturating_sub(CHECKS_KEPT)) {
        store.delete(Table::Checks, old)?;
    }
    Ok(Ok(Reply::Done))
}

/// The kept report of `check_id`, if any. Keys are `time|check_id`, and
/// only `CHECKS_KEPT` of them exist, so a scan is cheap.
pub(super) fn find(store: &dyn StateStore, check_id: &str) -> Result<Outcome, StoreError> {
    let keys = store.keys(Table::Checks, None, usize::MAX)?;
    let key = keys
        .iter()
        .rev()
        .find(|k| k.split_once('|').map(|(_, id)| id) == Some(check_id));
    report_at(store, key)
}

/// The most recent report.
pub(super) fn latest(store: &dyn StateStore) -> Result<Outcome, StoreError> {
    let keys = store.keys(Table::Checks, None, usize::MAX)?;
    report_at(store, keys.last())
}

/// How many of the newest reports a node's status carries, and how recent
/// they must be: enough for the coordinators, which read the status a few
/// times a second, to turn every report into events even when several
/// land between two of their reads (`NodeStatus::recent_checks`).
pub const RECENT_CHECKS: usize = 5;
pub const RECENT_CHECKS_WITHIN_MS: u64 = 60_000;

/// The reports finished at or after `since_ms`, at most the newest `max`,
/// oldest first.
pub fn recent(
    store: &dyn StateStore,
    since_ms: u64,
    max: usize,
) -> Result<Vec<CheckReport>, StoreError> {
    let keys = store.keys(Table::Checks, None, usize::MAX)?;
    let mut reports = Vec::new();
    for key in keys.iter().rev().take(max) {
        match get_value::<CheckReport>(store, Table::Checks, key)? {
            Some(r) if r.finished_ms >= since_ms => reports.push(r),
            Some(_) => break,
            None => {}
        }
    }
    reports.reverse();
    Ok(reports)
}

/// The report under `key`, if there is one.
fn report_at(store: &dyn StateStore, key: Option<&String>) -> Result<Outcome, StoreError> {
    let report = match key {
        Some(k) => get_value::<CheckReport>(store, Table::Checks, k)?,
        None => None,
    };
    Ok(Ok(Reply::Check { report }))
}

#[cfg(test)]
mod tests {
    use super::super::memory::MemoryStore;
    use super::*;

    fn report(id: &str, finished_ms: u64) -> CheckReport {
        CheckReport {
            check_id: id.to_string(),
            reason: "manual".into(),
            started_ms: finished_ms,
            finished_ms,
            log_index: 1,
            verdict: "clean".into(),
            majority_root: None,
            replicas: vec![],
            repair: None,
            shard: Default::default(),
        }
    }

    fn found(store: &MemoryStore, id: &str) -> Option<CheckReport> {
        match find(store, id) {
            Ok(Ok(Reply::Check { report })) => report,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_report_is_found_by_id_after_later_ones_until_it_is_no_longer_kept() {
        let mut s = MemoryStore::default();
        record(&mut s, &report("mine", 10)).unwrap().unwrap();
        for i in 0..(CHECKS_KEPT as u64 - 1) {
            record(&mut s, &report(&format!("later-{i}"), 20 + i))
                .unwrap()
                .unwrap();
        }
        assert_eq!(found(&s, "mine"), Some(report("mine", 10)));
        assert_eq!(found(&s, "min"), None, "a prefix is not the id");
        assert_eq!(found(&s, "unknown"), None);
        record(&mut s, &report("one-too-many", 100))
            .unwrap()
            .unwrap();
        assert_eq!(found(&s, "mine"), None, "only the latest are kept");
        assert!(found(&s, "one-too-many").is_some());
    }

    #[test]
    fn recent_reports_are_the_newest_within_the_window_oldest_first() {
        let mut s = MemoryStore::default();
        assert_eq!(recent(&s, 0, 5).unwrap(), vec![]);
        for (id, at) in [("old", 10), ("a", 100), ("b", 200), ("c", 300)] {
            record(&mut s, &report(id, at)).unwrap().unwrap();
        }
        let ids = |since, max| -> Vec<String> {
            recent(&s, since, max)
                .unwrap()
                .into_iter()
                .map(|r| r.check_id)
                .collect()
        };
        assert_eq!(ids(100, 5), ["a", "b", "c"], "too old a report is left out");
        assert_eq!(ids(0, 2), ["b", "c"], "at most the newest `max`");
        assert_eq!(ids(301, 5), Vec::<String>::new());
    }

    #[test]
    fn a_found_or_missing_report_crosses_the_wire() {
        for report in [None, Some(report("mine", 10))] {
            let reply: Outcome = Ok(Reply::Check { report });
            let text = serde_json::to_string(&reply).unwrap();
            assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), reply);
        }
    }
}
