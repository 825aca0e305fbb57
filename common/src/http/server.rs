//! Serving HTTP/1.1 connections so that slow or stalled clients cannot lock
//! others out: at most `max_connections` open connections per listener (more
//! wait in the kernel's accept queue, none is refused for want of a slot),
//! a request head must arrive within `header_read_timeout_ms` (hyper closes
//! the connection otherwise, also one idle between requests), and every
//! head is checked by the `HeadGuard` first. The body timeout and the
//! in-flight bound are middleware (`buffer_body`, `shed_load`), so a request
//! counts against the in-flight bound only once it has fully arrived.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::{IntCounterVec, IntGauge};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::head_guard::{self, HeadGuard};
use super::Shutdown;
use crate::metrics;
use crate::spec::LimitsSection;

/// How long open requests may take to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

struct ConnMetrics {
    open: IntGauge,
    ended: IntCounterVec,
}

static CONNS: LazyLock<ConnMetrics> = LazyLock::new(|| ConnMetrics {
    open: metrics::gauge(
        "http_connections_open",
        "HTTP connections this process has open (all its listeners).",
    ),
    ended: metrics::counter_vec(
        "http_connections_closed_total",
        "HTTP connections closed, by how: done (the peer or keep-alive ended it), error (an I/O \
         error or a head that did not arrive within header_read_timeout_ms).",
        &["how"],
    ),
});

/// The connection limits of one process, from the spec's `[limits]`.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl From<&LimitsSection> for ConnLimits {
    fn from(l: &LimitsSection) -> Self {
        Self {
            header_read_timeout: Duration::from_millis(l.header_read_timeout_ms),
            max_connections: l.max_connections,
        }
    }
}

/// Serves until shutdown, then stops accepting and gives open requests up to
/// `DRAIN` to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    limits: ConnLimits,
) -> std::io::Result<()> {
    head_guard::init_metrics();
    super::BODY_TIMEOUTS.inc_by(0);
    crate::metrics::precreate(&CONNS.ended, [["done"], ["error"]]);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // The guard refuses larger heads with a JSON answer first.
        .max_headers(head_guard::MAX_HEADERS);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = &mut stop => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or the peer gave up before the
                // accept: wait a moment rather than spin.
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(HeadGuard::new(stream));
        let conn =
            graceful.watch(http.serve_connection(io, TowerToHyperService::new(router.clone())));
        CONNS.open.inc();
        tokio::spawn(async move {
            let how = if conn.await.is_ok() { "done" } else { "error" };
            CONNS.ended.with_label_values(&[how]).inc();
            CONNS.open.dec();
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open after the drain time; stopping anyway");
    }
    Ok(())
}
