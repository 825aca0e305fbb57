//! HTTP plumbing shared by every process: header names, the outbound client,
//! the RED metrics middleware, load shedding (429), the internal-secret check
//! and graceful serving.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use prometheus::{HistogramVec, IntCounterVec};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

use crate::api_error::ApiError;
use crate::metrics;

/// Every write carries one; the gateway sets it when the client did not.
pub const REQUEST_ID: &str = "x-request-id";
/// Cluster-internal calls (Raft RPCs, coordinator → node) carry the secret.
pub const INTERNAL_SECRET: &str = "x-cart-internal-secret";

/// An outbound client with the given timeouts; one per peer set, reused.
pub fn client(connect_timeout: Duration, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "building HTTP client; using defaults");
            reqwest::Client::new()
        })
}

/// A fresh request id for requests that arrived without one.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_string)
}

struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

static HTTP: LazyLock<HttpMetrics> = LazyLock::new(|| HttpMetrics {
    requests: metrics::counter_vec(
        "http_requests_total",
        "HTTP requests served, by service, role, route and status code.",
        &["service", "role", "route", "status"],
    ),
    duration: metrics::histogram_vec(
        "http_request_duration_seconds",
        "Time to serve an HTTP request, by service, role and route.",
        &["service", "role", "route"],
        metrics::LATENCY_BUCKETS,
    ),
});

/// Who is serving: the `service` and `role` labels of the RED metrics.
#[derive(Clone, Copy, Debug)]
pub struct ServerLabels {
    pub service: &'static str,
    pub role: &'static str,
}

/// Routes served all the time for housekeeping, never traced.
const QUIET_ROUTES: &[&str] = &[
    "/status",
    "/ready",
    "/metrics",
    "/admin/events/own",
    "/raft/append",
    "/raft/vote",
];

/// Counts and times every request by matched route and status, inside a
/// span that continues the caller's trace.
pub async fn track_requests(
    State(labels): State<ServerLabels>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // Probes, scrapes, event sync and Raft heartbeats are not traced: they
    // would bury the requests in noise.
    let span = if QUIET_ROUTES.contains(&route.as_str()) {
        tracing::Span::none()
    } else {
        tracing::info_span!(
        "http.request",
        otel.name = %format!("{} {route}", request.method()),
        otel.kind = "server",
        http.method = %request.method(),
        http.route = %route,
        service = labels.service,
        role = labels.role,
        trace_id = tracing::field::Empty,
        )
    };
    crate::telemetry::extract(request.headers(), &span);
    let started = Instant::now();
    let response = next.run(request).instrument(span).await;
    let m = &*HTTP;
    m.duration
        .with_label_values(&[labels.service, labels.role, &route])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[
            labels.service,
            labels.role,
            &route,
            response.status().as_str(),
        ])
        .inc();
    response
}

/// Bounded concurrency: beyond the limit a request is answered 429 at once
/// instead of queueing without bound.
pub async fn shed_load(
    State(limit): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    match limit.try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::overloaded().into_response(),
    }
}

/// Refuses calls that do not carry the cluster-internal secret.
pub async fn require_secret(
    State(secret): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(INTERNAL_SECRET)
        .and_then(|v| v.to_str().ok());
    if given.is_some_and(|g| same_secret(g, &secret)) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Refuses mutating admin calls without `Authorization: Bearer <admin token>`.
pub async fn require_admin_token(
    State(token): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| same_secret(g, &token)) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this admin call needs `Authorization: Bearer <admin_token>` from the cluster spec",
        )
        .into_response()
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Adds the RED metrics layer and JSON 404/405 fallbacks to a router.
pub fn instrument(router: Router, labels: ServerLabels) -> Router {
    router
        .fallback(|| async { ApiError::not_found_route() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(axum::middleware::from_fn_with_state(labels, track_requests))
}

pub async fn metrics_handler() -> impl IntoResponse {
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        metrics::render(),
    )
}

/// A shutdown flag every server and background loop of a process watches.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Trips on SIGTERM or SIGINT.
    pub fn on_signals() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            crate::process::shutdown_signal().await;
            let _ = tx.send(true);
        });
        Self { rx }
    }

    pub async fn wait(mut self) {
        let _ = self.rx.wait_for(|stop| *stop).await;
    }

    pub fn is_set(&self) -> bool {
        *self.rx.borrow()
    }
}

/// Guards a router of cluster-internal routes: the internal secret is
/// required, and at most `limit` requests are worked on at once (429 beyond).
pub fn internal_only<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    secret: &str,
    limit: Arc<Semaphore>,
) -> Router<S> {
    let secret: Arc<str> = secret.into();
    router
        .layer(axum::middleware::from_fn_with_state(limit, shed_load))
        .layer(axum::middleware::from_fn_with_state(secret, require_secret))
}

/// Readiness of a process that is ready as soon as it serves.
pub async fn ready_handler() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "ready": true }))
}

/// Binds a public and an admin listener and serves both until SIGTERM or
/// SIGINT, then drains both.
pub async fn serve_public_and_admin(
    public: (&str, Router),
    admin: (&str, Router),
) -> anyhow::Result<()> {
    let public_listener = bind(public.0).await?;
    let admin_listener = bind(admin.0).await?;
    let shutdown = Shutdown::on_signals();
    let (a, b) = tokio::join!(
        serve(public_listener, public.1, shutdown.clone()),
        serve(admin_listener, admin.1, shutdown),
    );
    a?;
    b?;
    Ok(())
}

/// Serves until shutdown, then stops accepting and finishes in-flight
/// requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.wait())
        .await
}

pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))
}
