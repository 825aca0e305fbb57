//! Coordinator metrics, declared once through the common helper.

use std::sync::LazyLock;

use cart_common::metrics::{counter_vec, histogram_vec, LATENCY_BUCKETS};
use prometheus::{HistogramVec, IntCounterVec};

pub struct CoordinatorMetrics {
    /// Retries towards a Raft group, by target service and reason.
    pub group_retries: IntCounterVec,
    /// Calls to another service, by target service, mode and result.
    pub cross_service_calls: IntCounterVec,
    pub cross_service_duration: HistogramVec,
    pub checkouts: IntCounterVec,
}

pub static METRICS: LazyLock<CoordinatorMetrics> = LazyLock::new(|| CoordinatorMetrics {
    group_retries: counter_vec(
        "coordinator_group_retries_total",
        "Attempts towards a Raft group that were retried, by target service and reason \
         (not_leader, unreachable, unavailable).",
        &["target", "reason"],
    ),
    cross_service_calls: counter_vec(
        "coordinator_cross_service_calls_total",
        "Calls from this service to another, by target service, mode (direct, coordinator) \
         and result (ok, rejected, failed).",
        &["target", "mode", "result"],
    ),
    cross_service_duration: histogram_vec(
        "coordinator_cross_service_duration_seconds",
        "Time of a call to another service, by target service and mode.",
        &["target", "mode"],
        LATENCY_BUCKETS,
    ),
    checkouts: counter_vec(
        "checkouts_total",
        "Checkouts answered, by outcome (paid, already_paid, insufficient_credit, \
         insufficient_stock, rejected, failed).",
        &["outcome"],
    ),
});
