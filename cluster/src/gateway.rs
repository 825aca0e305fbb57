//! The built-in gateway for local runs: routes `/orders/*`, `/payment/*` and
//! `/stock/*` round-robin over that service's coordinators, gives every
//! request an `X-Request-Id`, and skips coordinators that refuse connections
//! or hang. A coordinator is dropped from rotation passively (a failed or
//! timed-out attempt ejects it for a while) and actively (health checks of its
//! admin `/ready`); a request in flight to a coordinator that fails its health
//! check is abandoned and sent to another. Retrying elsewhere is safe because
//! the retry carries the same request id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use cart_common::http::{self as chttp, BodyLimits, ServerLabels, REQUEST_ID};
use cart_common::metrics::{counter_vec, precreate};
use cart_common::paths::{METRICS_PATH, READY_PATH};
use cart_common::{ApiError, ClusterSpec, Service};
use prometheus::IntCounterVec;
use tokio::sync::{watch, Semaphore};

/// Largest request body forwarded (the cart API has no bodies at all).
const MAX_BODY: usize = 64 * 1024;
/// How long a coordinator stays out of rotation after a failed attempt,
/// unless a health check brings it back sooner.
const EJECTION: Duration = Duration::from_secs(5);

static UPSTREAM_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "gateway_upstream_failures_total",
        "Gateway attempts at a coordinator that failed and were retried elsewhere, by service, \
         coordinator and reason (connect, timeout, unhealthy).",
        &["service", "upstream", "reason"],
    )
});

static HEALTH_TRANSITIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "gateway_upstream_health_changes_total",
        "Coordinators going in or out of the gateway's rotation, by service, coordinator and new \
         state (healthy, unhealthy).",
        &["service", "upstream", "state"],
    )
});

struct Upstream {
    service: Service,
    public: String,
    admin: String,
    healthy: watch::Sender<bool>,
    ejected_until: Mutex<Option<Instant>>,
}

impl Upstream {
    fn available(&self) -> bool {
        let ejected = self
            .ejected_until
            .lock()
            .map(|u| u.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false);
        *self.healthy.borrow() && !ejected
    }

    fn eject(&self, reason: &str) {
        UPSTREAM_FAILURES
            .with_label_values(&[self.service.name(), &self.public, reason])
            .inc();
        if let Ok(mut u) = self.ejected_until.lock() {
            *u = Some(Instant::now() + EJECTION);
        }
    }

    fn set_health(&self, healthy: bool) {
        if healthy {
            if let Ok(mut u) = self.ejected_until.lock() {
                *u = None;
            }
        }
        let changed = self
            .healthy
            .send_if_modified(|h| std::mem::replace(h, healthy) != healthy);
        if changed {
            let state = if healthy { "healthy" } else { "unhealthy" };
            HEALTH_TRANSITIONS
                .with_label_values(&[self.service.name(), &self.public, state])
                .inc();
            tracing::info!(upstream = %self.public, state, "coordinator health changed");
        }
    }
}

struct Pool {
    upstreams: Vec<Arc<Upstream>>,
    cursor: AtomicUsize,
}

impl Pool {
    /// The next coordinator in rotation, preferring available ones.
    fn pick(&self) -> Option<Arc<Upstream>> {
        let n = self.upstreams.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.upstreams[(start + i) % n])
            .find(|u| u.available())
            .or_else(|| self.upstreams.get(start % n.max(1)))
            .cloned()
    }
}

struct Gateway {
    pools: HashMap<Service, Pool>,
    client: chttp::InternalClient,
    attempt_timeout: Duration,
}

enum Failure {
    Connect,
    Timeout,
    Unhealthy,
}

pub async fn run(spec: ClusterSpec) -> anyhow::Result<()> {
    let limits = &spec.limits;
    let mut pools = HashMap::new();
    for service in Service::ALL {
        let upstreams = spec
            .coordinators(service)
            .into_iter()
            .map(|c| {
                Arc::new(Upstream {
                    service,
                    public: c.public,
                    admin: c.admin,
                    healthy: watch::channel(true).0,
                    ejected_until: Mutex::new(None),
                })
            })
            .collect();
        pools.insert(
            service,
            Pool {
                upstreams,
                cursor: AtomicUsize::new(0),
            },
        );
    }
    let gateway = Arc::new(Gateway {
        pools,
        client: chttp::InternalClient::new(
            Duration::from_millis(limits.connect_timeout_ms),
            Duration::from_millis(limits.gateway_timeout_ms),
        ),
        attempt_timeout: Duration::from_millis(limits.gateway_timeout_ms),
    });
    for pool in gateway.pools.values() {
        for upstream in &pool.upstreams {
            // Alerted-on series exist at 0 from start-up.
            let labels = |last| [upstream.service.name(), upstream.public.as_str(), last];
            let reasons = ["connect", "timeout", "unhealthy"];
            precreate(&*UPSTREAM_FAILURES, reasons.map(labels));
            precreate(&*HEALTH_TRANSITIONS, ["healthy", "unhealthy"].map(labels));
            tokio::spawn(health_check(
                upstream.clone(),
                Duration::from_millis(spec.health.interval_ms),
                Duration::from_millis(spec.health.timeout_ms),
            ));
        }
    }

    let labels = ServerLabels {
        service: "all",
        role: "gateway",
    };
    let limit = Arc::new(Semaphore::new(limits.max_in_flight));
    let mut public = Router::new();
    for service in Service::ALL {
        let path = format!("{}{{*rest}}", service.path_prefix());
        public = public.route(
            &path,
            any(move |s: State<Arc<Gateway>>, r: Request| proxy(s, service, r)),
        );
    }
    // Paths are checked before anything else, bodies read (with their
    // timeout) before a request takes an in-flight slot.
    let public = chttp::instrument(
        chttp::bounded(public, limit, BodyLimits::new(limits, MAX_BODY))
            .layer(axum::middleware::from_fn(chttp::require_literal_path))
            .with_state(gateway),
        labels,
    );
    let admin = chttp::instrument(
        Router::new()
            .route(READY_PATH, get(chttp::ready_handler))
            .route(METRICS_PATH, get(chttp::metrics_handler)),
        ServerLabels {
            service: "all",
            role: "gateway_admin",
        },
    );

    tracing::info!(public = %spec.gateway_addr(), admin = %spec.gateway_admin_addr(), "gateway serving");
    chttp::serve_public_and_admin(
        (&spec.bind_addr(&spec.gateway_addr()), public),
        (&spec.bind_addr(&spec.gateway_admin_addr()), admin),
        limits.into(),
    )
    .await
}

async fn health_check(upstream: Arc<Upstream>, interval: Duration, timeout: Duration) {
    let client = chttp::InternalClient::new(timeout, timeout);
    loop {
        let ready = client.get(&upstream.admin, READY_PATH).send().await;
        let ok = matches!(ready, Ok(r) if r.status().is_success());
        upstream.set_health(ok);
        tokio::time::sleep(interval).await;
    }
}

async fn proxy(State(g): State<Arc<Gateway>>, service: Service, request: Request) -> Response {
    let Some(pool) = g.pools.get(&service) else {
        return ApiError::not_found_route().into_response();
    };
    let (parts, body) = request.into_parts();
    // A client's id is forwarded exactly as sent, or refused.
    let request_id = match chttp::request_id(&parts.headers) {
        Ok(id) => id.unwrap_or_else(chttp::new_request_id),
        Err(e) => return e.into_response(),
    };
    // Already read in full by `buffer_body`.
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::bad_request("bad_request", "the request body could not be read")
                .into_response()
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let deadline = Instant::now() + g.attempt_timeout;
    // Each coordinator twice at most: enough to ride over one that died.
    let attempts = pool.upstreams.len() * 2;
    for _ in 0..attempts {
        let Some(upstream) = pool.pick() else { break };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let send = g
            .client
            .request(parts.method.clone(), &upstream.public, &path)
            .header(REQUEST_ID, &request_id)
            .timeout(remaining)
            .body(body.clone())
            .send();
        // Abandon the attempt if the coordinator fails a health check while
        // we wait (a hung process never answers). One picked while already
        // unhealthy (nothing else left) gets the full attempt.
        let mut health = upstream.healthy.subscribe();
        let was_healthy = *health.borrow();
        let goes_unhealthy = async move {
            if was_healthy {
                let _ = health.wait_for(|h| !*h).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let attempt = async {
            let resp = send.await.map_err(|e| {
                if e.is_connect() {
                    Failure::Connect
                } else {
                    Failure::Timeout
                }
            })?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.map_err(|_| Failure::Timeout)?;
            Ok::<_, Failure>((status, headers, bytes))
        };
        let result = tokio::select! {
            r = attempt => r,
            _ = goes_unhealthy => Err(Failure::Unhealthy),
        };
        match result {
            Ok((status, headers, bytes)) => {
                let mut response = Response::new(Body::from(bytes));
                *response.status_mut() =
                    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
                    if let Some(v) = headers
                        .get(name.as_str())
                        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
                    {
                        response.headers_mut().insert(name, v);
                    }
                }
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(REQUEST_ID, v);
                }
                return response;
            }
            Err(failure) => {
                let reason = match failure {
                    Failure::Connect => "connect",
                    Failure::Timeout => "timeout",
                    Failure::Unhealthy => "unhealthy",
                };
                tracing::warn!(upstream = %upstream.public, reason, %request_id, "retrying on another coordinator");
                upstream.eject(reason);
            }
        }
    }
    ApiError::unavailable(format!("no {service} coordinator answered")).into_response()
}
