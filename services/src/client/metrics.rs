//! Metrics of the group clients, kept apart from the node's so a
//! coordinator exports these without the node's Raft series.

use std::sync::LazyLock;

use cart_common::metrics::{counter_vec, histogram_vec, LATENCY_BUCKETS};
use prometheus::{HistogramVec, IntCounterVec};

pub struct ClientMetrics {
    /// Retries towards a Raft group, by target service and reason.
    pub group_retries: IntCounterVec,
    /// Calls to another service, by target service, mode and result.
    pub cross_service_calls: IntCounterVec,
    pub cross_service_duration: HistogramVec,
}

pub static METRICS: LazyLock<ClientMetrics> = LazyLock::new(|| ClientMetrics {
    group_retries: counter_vec(
        "group_client_retries_total",
        "Attempts towards a Raft group that were retried, by target service and reason \
         (not_leader, unreachable, unavailable, coordinator_failed).",
        &["target", "reason"],
    ),
    cross_service_calls: counter_vec(
        "cross_service_calls_total",
        "Calls from this service to another, by target service, mode (direct, coordinator) \
         and result (ok, rejected, failed).",
        &["target", "mode", "result"],
    ),
    cross_service_duration: histogram_vec(
        "cross_service_duration_seconds",
        "Time of a call to another service, by target service and mode.",
        &["target", "mode"],
        LATENCY_BUCKETS,
    ),
});
