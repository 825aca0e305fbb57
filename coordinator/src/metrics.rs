//! Coordinator metrics, declared once through the common helper.

use std::sync::LazyLock;

use cart_common::metrics::{counter, counter_vec, float_gauge_vec, gauge_vec, histogram_vec};
use prometheus::{GaugeVec, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec};

/// Detection times: a probe interval is 0.25 s, the target is under 2 s.
const DETECTION_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0];

pub struct CoordinatorMetrics {
    pub checkouts: IntCounterVec,
    pub checkouts_followed: IntCounter,
    pub node_is_up: IntGaugeVec,
    pub node_down: IntCounterVec,
    pub node_up: IntCounterVec,
    pub caught_up: IntCounterVec,
    pub detection: HistogramVec,
    pub leader_changes: IntCounterVec,
    pub lag_entries: IntGaugeVec,
    pub lag_seconds: GaugeVec,
    pub group_members: IntGaugeVec,
    pub probe_failures: IntCounterVec,
    pub events: IntCounterVec,
    pub last_clean_check_age: GaugeVec,
    pub event_sync_failures: IntCounterVec,
    pub event_pulls: IntCounterVec,
}

pub static METRICS: LazyLock<CoordinatorMetrics> = LazyLock::new(|| CoordinatorMetrics {
    checkouts: counter_vec(
        "checkouts_total",
        "Checkouts answered, by outcome (paid, already_paid, insufficient_credit, \
         insufficient_stock, rejected, failed).",
        &["outcome"],
    ),
    checkouts_followed: counter(
        "checkouts_followed_total",
        "Checkouts the order leader handed back unfinished (past checkout_timeout_ms) that this \
         coordinator then followed by their transaction id.",
    ),
    node_is_up: gauge_vec(
        "node_up",
        "1 while the node is up (answers and is caught up), 0 while down or catching up; \
         as this coordinator sees it.",
        &["service", "node"],
    ),
    node_down: counter_vec(
        "node_down_total",
        "Times this coordinator marked the node down.",
        &["service", "node"],
    ),
    node_up: counter_vec(
        "node_up_total",
        "Times a down node answered again (it is then catching up).",
        &["service", "node"],
    ),
    caught_up: counter_vec(
        "node_caught_up_total",
        "Times a returning node caught up with the leader's log.",
        &["service", "node"],
    ),
    detection: histogram_vec(
        "node_down_detection_seconds",
        "Time from last hearing from a node (probe or leader contact) to marking it down.",
        &["service"],
        DETECTION_BUCKETS,
    ),
    leader_changes: counter_vec(
        "leader_changes_total",
        "Leader changes this coordinator observed in its service's group.",
        &["service"],
    ),
    lag_entries: gauge_vec(
        "replication_lag_entries",
        "Log entries the leader has that the follower has not acknowledged.",
        &["service", "node"],
    ),
    lag_seconds: float_gauge_vec(
        "replication_lag_seconds",
        "Now minus the append time of the oldest entry the follower lacks (0 when caught up).",
        &["service", "node"],
    ),
    group_members: gauge_vec(
        "group_members",
        "Members (voters and learners) of the service's Raft group.",
        &["service"],
    ),
    probe_failures: counter_vec(
        "node_probe_failures_total",
        "Health probes of a node that failed (refused, timed out, bad answer).",
        &["service", "node"],
    ),
    last_clean_check_age: float_gauge_vec(
        "consistency_last_clean_check_age_seconds",
        "Seconds since the service's group last passed a consistency check (all replicas \
         agreeing, possibly after a repair).",
        &["service"],
    ),
    events: counter_vec(
        "events_total",
        "Cluster events this coordinator recorded, by service and kind.",
        &["service", "kind"],
    ),
    event_sync_failures: counter_vec(
        "coordinator_event_sync_failures_total",
        "Failed pulls of another coordinator's events, by that coordinator's admin address.",
        &["peer"],
    ),
    event_pulls: counter_vec(
        "coordinator_event_pulls_total",
        "Answered pulls of another coordinator's events (long polls: about one per \
         event_wait_ms while no events happen), by that coordinator's admin address.",
        &["peer"],
    ),
});
