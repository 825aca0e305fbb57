//! Whether the node's storage answers. A backend reports every operation's
//! result here; the node shows it in `/status` and `/ready` (so
//! coordinators mark the node down), stops campaigning and heartbeating
//! while it is unhealthy (so a leader that cannot apply hands over), and
//! exports it as metrics.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

pub use cart_common::admin::StorageStatus;
use cart_common::spec::StorageBackend;
use prometheus::{HistogramVec, IntCounterVec, IntGauge};

/// Failed operations in a row before the storage counts as failing: one
/// slow answer under load is not an outage worth a leader change.
const FAILURES_BEFORE_UNHEALTHY: u32 = 2;

pub struct Health {
    /// Whether the storage answers; watched by what follows it.
    healthy: tokio::sync::watch::Sender<bool>,
    failures_in_a_row: AtomicU32,
    backend: Mutex<StorageBackend>,
    error: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        LazyLock::force(&METRICS);
        METRICS.healthy.set(1);
        Self {
            healthy: tokio::sync::watch::Sender::new(true),
            failures_in_a_row: AtomicU32::new(0),
            backend: Mutex::new(StorageBackend::Embedded),
            error: Mutex::new(None),
        }
    }
}

impl Health {
    pub fn set_backend(&self, backend: StorageBackend) {
        if let Ok(mut b) = self.backend.lock() {
            *b = backend;
        }
    }

    pub fn is_healthy(&self) -> bool {
        *self.healthy.borrow()
    }

    /// Records the outcome of one storage operation `op`.
    pub fn record<T, E: std::fmt::Display>(
        &self,
        op: &'static str,
        took: Duration,
        result: &Result<T, E>,
    ) {
        METRICS
            .duration
            .with_label_values(&[op])
            .observe(took.as_secs_f64());
        match result {
            Ok(_) => {
                self.failures_in_a_row.store(0, Ordering::Relaxed);
                self.set(true, None);
            }
            Err(e) => {
                METRICS.errors.with_label_values(&[op]).inc();
                let failures = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= FAILURES_BEFORE_UNHEALTHY {
                    self.set(false, Some(format!("{op}: {e}")));
                }
            }
        }
    }

    fn set(&self, healthy: bool, error: Option<String>) {
        // Only a change wakes the watchers: every storage operation ends
        // here, and `send_replace` would wake them for each (the node then
        // logged a health change several times a second on MongoDB).
        let mut was = healthy;
        self.healthy.send_if_modified(|current| {
            was = std::mem::replace(current, healthy);
            was != healthy
        });
        if !healthy {
            if let Ok(mut e) = self.error.lock() {
                *e = error;
            }
        }
        if was != healthy {
            METRICS.healthy.set(i64::from(healthy));
            if healthy {
                tracing::info!("storage healthy again");
            } else {
                tracing::error!(error = ?self.status().error, "storage unhealthy");
            }
        }
    }

    /// Follows every change between healthy and unhealthy.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.healthy.subscribe()
    }

    pub fn status(&self) -> StorageStatus {
        let healthy = self.is_healthy();
        StorageStatus {
            backend: match self.backend.lock().map(|b| b.clone()) {
                Ok(StorageBackend::Mongodb) => "mongodb",
                _ => "redb",
            }
            .to_string(),
            healthy,
            error: if healthy {
                None
            } else {
                self.error.lock().ok().and_then(|e| e.clone())
            },
        }
    }
}

struct StorageMetrics {
    healthy: IntGauge,
    errors: IntCounterVec,
    duration: HistogramVec,
    stale_writes: prometheus::IntCounter,
}

/// The operations a backend reports.
pub const OPS: [&str; 6] = ["read", "commit", "recover", "freeze", "replace", "ping"];

static METRICS: LazyLock<StorageMetrics> = LazyLock::new(|| {
    let m = StorageMetrics {
        healthy: cart_common::metrics::gauge(
            "storage_healthy",
            "1 while this node's storage answers, 0 while its operations fail (the node \
             is then reported down).",
        ),
        errors: cart_common::metrics::counter_vec(
            "storage_errors_total",
            "Storage operations that failed (unreachable, timeout, refused), by operation; \
             failed commits are retried until they succeed.",
            &["op"],
        ),
        duration: cart_common::metrics::histogram_vec(
            "storage_operation_duration_seconds",
            "Time of one storage operation (a query read, a batch commit, ...), by operation.",
            &["op"],
            cart_common::metrics::LATENCY_BUCKETS,
        ),
        stale_writes: cart_common::metrics::counter(
            "storage_stale_writes_skipped_total",
            "MongoDB writes skipped because the document already carries a later log index.",
        ),
    };
    cart_common::metrics::precreate(&m.errors, OPS.map(|op| [op]));
    cart_common::metrics::precreate(&m.duration, OPS.map(|op| [op]));
    m
});

pub(crate) fn stale_write_skipped(n: u64) {
    METRICS.stale_writes.inc_by(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_hear_changes_of_health_and_not_every_operation() {
        let health = Health::default();
        let mut watch = health.watch();
        let ok: Result<(), String> = Ok(());
        for _ in 0..10 {
            health.record("ping", Duration::ZERO, &ok);
        }
        assert!(!watch.has_changed().unwrap(), "healthy stayed healthy");
        let failed: Result<(), String> = Err("down".into());
        for _ in 0..FAILURES_BEFORE_UNHEALTHY {
            health.record("ping", Duration::ZERO, &failed);
        }
        assert!(watch.has_changed().unwrap());
        assert!(!*watch.borrow_and_update());
        health.record("ping", Duration::ZERO, &failed);
        assert!(!watch.has_changed().unwrap(), "unhealthy stayed unhealthy");
        health.record("ping", Duration::ZERO, &ok);
        assert!(watch.has_changed().unwrap());
        assert!(*watch.borrow_and_update());
    }
}
