//! The checker's metrics. Leaders run checks, so these live on whichever
//! node led.

use std::sync::LazyLock;

use cart_common::metrics::{counter_vec, histogram_vec};
use prometheus::{HistogramVec, IntCounterVec};

use crate::raft::NodeId;

pub(super) struct CheckerMetrics {
    pub(super) checks: IntCounterVec,
    pub(super) mismatches: IntCounterVec,
    pub(super) buckets_repaired: IntCounterVec,
    pub(super) keys_repaired: IntCounterVec,
    pub(super) rebuilds: prometheus::IntCounter,
    pub(super) repairs: IntCounterVec,
    pub(super) repair_duration: HistogramVec,
}

pub(super) static METRICS: LazyLock<CheckerMetrics> = LazyLock::new(|| CheckerMetrics {
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

pub(super) fn init_series() {
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
