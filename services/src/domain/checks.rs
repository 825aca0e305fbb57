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

/// The most recent report.
pub(super) fn latest(store: &dyn StateStore) -> Result<Outcome, StoreError> {
    let keys = store.keys(Table::Checks, None, usize::MAX)?;
    let report = match keys.last() {
        Some(k) => get_value::<CheckReport>(store, Table::Checks, k)?,
        None => None,
    };
    Ok(Ok(Reply::Check(report)))
}
