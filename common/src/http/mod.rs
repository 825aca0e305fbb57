//! HTTP plumbing shared by every process: header names, the outbound client
//! (`client`), the RED metrics middleware, load shedding (429), body-read
//! timeouts, literal paths, the internal-secret check and serving (`server`:
//! bounded connections, head timeouts, checked heads).

mod client;
pub mod head_guard;
mod server;

pub use client::{url, CallError, InternalClient};
pub use server::{serve, ConnLimits};

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

/// A fresh request id for requests that arrived without one.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The longest `X-Request-Id` kept (docs/api.md).
pub const MAX_REQUEST_ID_LEN: usize = 200;

/// The client's `X-Request-Id`, exactly as sent; `None` if it sent none.
/// An id that could not be kept as sent — empty, longer than
/// `MAX_REQUEST_ID_LEN`, a byte outside visible ASCII, or the header given
/// twice — is refused, never replaced: a replaced id would let a retry apply
/// twice.
pub fn request_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(REQUEST_ID).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |why: &str| {
        ApiError::bad_request(
            "invalid_request_id",
            format!(
                "X-Request-Id {why}: it must be given once, as 1 to {MAX_REQUEST_ID_LEN} visible \
                 ASCII characters (0x21-0x7E)"
            ),
        )
    };
    if values.next().is_some() {
        return Err(invalid("is given more than once"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_REQUEST_ID_LEN {
        return Err(invalid("has the wrong length"));
    }
    if !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(invalid("holds a byte outside visible ASCII"));
    }
    // All visible ASCII: the conversion cannot fail.
    Ok(value.to_str().ok().map(str::to_string))
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
    let span = if crate::paths::QUIET_ROUTES.contains(&route.as_str()) {
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
/// instead of queueing without bound. Layer it inside `buffer_body`, so that
/// a request takes a slot only once it has fully arrived.
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
    if given.is_some_and(|g| same_secret(g.as_bytes(), secret.as_bytes())) {
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
    if has_bearer_token(request.headers(), &token) {
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

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in
/// constant time. Every token check (admin calls, the fault hook) uses it.
pub fn has_bearer_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| same_secret(given, token.as_bytes()))
}

/// Compares a secret in time that depends neither on where it differs nor
/// on its length: both sides are hashed, then the digests compared with
/// `subtle`'s constant-time equality.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(given)
        .ct_eq(&Sha256::digest(expected))
        .into()
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
/// required (checked on the head, before any body is read), the body must
/// arrive within `body.timeout`, and at most `limit` complete requests are
/// worked on at once (429 beyond).
pub fn internal_only<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    secret: &str,
    limit: Arc<Semaphore>,
    body: BodyLimits,
) -> Router<S> {
    let secret: Arc<str> = secret.into();
    bounded(router, limit, body).layer(axum::middleware::from_fn_with_state(secret, require_secret))
}

/// At most `limit` requests worked on at once, counted once their body has
/// arrived within `body.timeout` (`buffer_body`, then `shed_load`).
pub fn bounded<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    limit: Arc<Semaphore>,
    body: BodyLimits,
) -> Router<S> {
    router
        .layer(axum::middleware::from_fn_with_state(limit, shed_load))
        .layer(axum::middleware::from_fn_with_state(body, buffer_body))
}

/// How long a request body may take to arrive, and how large it may be.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    pub timeout: Duration,
    pub max_bytes: usize,
}

impl BodyLimits {
    pub fn new(limits: &crate::spec::LimitsSection, max_bytes: usize) -> Self {
        Self {
            timeout: Duration::from_millis(limits.body_read_timeout_ms),
            max_bytes,
        }
    }
}

pub(crate) static BODY_TIMEOUTS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    metrics::counter(
        "http_body_timeouts_total",
        "Requests whose body did not arrive within body_read_timeout_ms (answered 408).",
    )
});

/// Reads the whole body within the timeout (408 after) and the size limit
/// (413 beyond) before the request goes on, so a client that stalls halfway
/// holds no in-flight slot and no handler.
pub async fn buffer_body(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, limits.max_bytes);
    let bytes = match tokio::time::timeout(limits.timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_too_large(&e) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {} bytes", limits.max_bytes),
            )
            .into_response()
        }
        Ok(Err(_)) => {
            return ApiError::bad_request("bad_request", "the request body could not be read")
                .into_response()
        }
        Err(_) => {
            BODY_TIMEOUTS.inc();
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {:?}",
                    limits.timeout
                ),
            )
            .into_response();
            // The rest of the body may still come: do not read it as a head.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            return response;
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

fn is_too_large(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Refuses a path that is not taken literally by every hop: a `.` or `..`
/// segment (raw or percent-encoded), an empty segment (`//`, a trailing
/// `/`) or a backslash (which URL parsers on the way read as `/`). Such a
/// path could otherwise name one route here and reach another.
pub fn literal_path(path: &str) -> Result<(), ApiError> {
    let refuse = |why: &str| {
        Err(ApiError::bad_request(
            "invalid_path",
            format!("the path {why}; paths are taken literally"),
        ))
    };
    let Some(rest) = path.strip_prefix('/') else {
        return refuse("does not start with /");
    };
    if path.contains('\\') {
        return refuse("holds a backslash");
    }
    for segment in rest.split('/') {
        if segment.is_empty() {
            return refuse("has an empty segment");
        }
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return refuse("has a . or .. segment");
        }
    }
    Ok(())
}

/// `literal_path` as middleware, before anything else looks at the request.
pub async fn require_literal_path(request: Request, next: Next) -> Response {
    match literal_path(request.uri().path()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
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
    limits: ConnLimits,
) -> anyhow::Result<()> {
    let public_listener = bind(public.0).await?;
    let admin_listener = bind(admin.0).await?;
    let shutdown = Shutdown::on_signals();
    let (a, b) = tokio::join!(
        serve(public_listener, public.1, shutdown.clone(), limits),
        serve(admin_listener, admin.1, shutdown, limits),
    );
    a?;
    b?;
    Ok(())
}

pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(REQUEST_ID, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn a_request_id_is_kept_exactly_or_refused() {
        assert_eq!(request_id(&headers(&[])).unwrap(), None);
        let id = "Abc-123_~!{}".to_string();
        assert_eq!(request_id(&headers(&[id.as_bytes()])).unwrap(), Some(id));
        let longest = "x".repeat(MAX_REQUEST_ID_LEN);
        assert!(request_id(&headers(&[longest.as_bytes()])).is_ok());
        let too_long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in [
            &[too_long.as_bytes()][..],
            &[b"has space"],
            &[b"tab\there"],
            &[b"caf\xc3\xa9"],
            &[b""],
            &[b"a", b"b"],
        ] {
            let e = request_id(&headers(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert_eq!(e.body.error, "invalid_request_id");
        }
    }

    #[test]
    fn paths_with_dot_empty_or_backslash_segments_are_refused() {
        for good in [
            "/stock/find/1",
            "/payment/add_funds/u/5",
            "/stock/find/a.b",
            "/stock/find/...",
            "/stock/find/%2e%2e%2e",
            "/stock/find/a%2Fb",
        ] {
            assert!(literal_path(good).is_ok(), "{good}");
        }
        for bad in [
            "/payment/add_funds/U/5/../../../pay/U/5",
            "/stock/./add/1/1",
            "/stock/%2e/add/1/1",
            "/stock/%2E%2e/find/1",
            "/stock/.%2E/find/1",
            "/stock/find/1/",
            "/stock//find/1",
            "//stock/find/1",
            "/stock/find/a\\..\\b",
            "stock/find/1",
        ] {
            let e = literal_path(bad).unwrap_err();
            assert_eq!(e.body.error, "invalid_path", "{bad}");
        }
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"token", b"tokem"));
        assert!(!same_secret(b"token", b"token2"));
        assert!(!same_secret(b"", b"token"));
        let mut h = HeaderMap::new();
        assert!(!has_bearer_token(&h, "token"));
        h.insert("authorization", HeaderValue::from_static("Bearer token"));
        assert!(has_bearer_token(&h, "token"));
        assert!(!has_bearer_token(&h, "toke"));
        h.insert("authorization", HeaderValue::from_static("Basic token"));
        assert!(!has_bearer_token(&h, "token"));
    }
}
