//! The one outbound HTTP client of the cluster's own calls: Raft RPCs,
//! coordinator → node, node → node (saga steps, consistency checks), health
//! probes, event sync, the gateway's forwarding and the admin tools.
//!
//! It owns what every such call shares: the connect and overall timeouts,
//! the cluster-internal secret (for callers that carry it), the caller's
//! trace context, the pool settings, and one reading of an answer
//! (`CallError`). What differs between callers stays with them and is passed
//! in: per-call timeouts, and the retry policy (`GroupClient` follows the
//! leader, `CoordinatorPool` goes round the coordinators, both waiting with
//! `backoff::Backoff`), each with its own retry counters.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::INTERNAL_SECRET;
use crate::shard::{Shard, SHARD_HEADER};

#[derive(Clone)]
pub struct InternalClient {
    http: reqwest::Client,
    /// Sent as `x-cart-internal-secret` with every request when set.
    secret: Option<Arc<str>>,
    /// Sent as `cart-shard` with every request when set: the shard of the
    /// node's service the calls are for (`crate::shard`).
    shard: Option<Shard>,
}

/// Why a call got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: refused, reset, or timed out (`timed_out`).
    #[error("{reason}")]
    Unreachable { reason: String, timed_out: bool },
    /// An answer other than 2xx, with its body.
    #[error("answered {status}")]
    Status { status: StatusCode, body: String },
    /// A 2xx answer whose body could not be read or decoded: the call may
    /// have taken effect.
    #[error("unreadable answer: {0}")]
    Unreadable(String),
}

impl CallError {
    fn transport(e: reqwest::Error) -> Self {
        let reason = if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "connection refused or no route".to_string()
        } else {
            e.to_string()
        };
        CallError::Unreachable {
            timed_out: e.is_timeout(),
            reason,
        }
    }
}

impl InternalClient {
    /// A client whose connections take at most `connect` to open and whose
    /// calls take at most `timeout` unless a call says otherwise.
    pub fn new(connect: Duration, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(connect)
            .timeout(timeout)
            // Below every server's header_read_timeout_ms (which closes idle
            // keep-alive connections): a pooled connection is dropped here
            // before the server could close it under a request being sent.
            .pool_idle_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "building HTTP client; using defaults");
                reqwest::Client::new()
            });
        Self {
            http,
            secret: None,
            shard: None,
        }
    }

    /// The spec's `connect_timeout_ms`, `timeout` per call, and the
    /// cluster-internal secret on every request.
    pub fn for_cluster(spec: &crate::ClusterSpec, timeout: Duration) -> Self {
        Self::new(
            Duration::from_millis(spec.limits.connect_timeout_ms),
            timeout,
        )
        .with_secret(&spec.cluster.internal_secret)
    }

    /// Carries `secret` with every request.
    pub fn with_secret(mut self, secret: &str) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// The same client (and connection pool), its calls for `shard`.
    pub fn for_shard(&self, shard: Shard) -> Self {
        Self {
            shard: Some(shard),
            ..self.clone()
        }
    }

    /// A request to `path` at `addr` (`host:port`, or a URL base with a
    /// scheme), with the secret if this client has one and the current
    /// span's trace context: build it inside the span it belongs to.
    pub fn request(&self, method: Method, addr: &str, path: &str) -> RequestBuilder {
        let mut request = self.http.request(method, url(addr, path));
        if let Some(secret) = &self.secret {
            request = request.header(INTERNAL_SECRET, &**secret);
        }
        if let Some(shard) = self.shard {
            request = request.header(SHARD_HEADER, shard.header_value());
        }
        crate::telemetry::inject(request)
    }

    pub fn get(&self, addr: &str, path: &str) -> RequestBuilder {
        self.request(Method::GET, addr, path)
    }

    pub fn post<B: Serialize + ?Sized>(&self, addr: &str, path: &str, body: &B) -> RequestBuilder {
        self.request(Method::POST, addr, path).json(body)
    }

    /// Sends `request` and decodes a 2xx answer's JSON body as `T`.
    pub async fn json<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, CallError> {
        let response = Self::send(request).await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(CallError::Status { status, body });
        }
        response
            .json()
            .await
            .map_err(|e| CallError::Unreadable(e.to_string()))
    }

    /// Sends `request`; any status is an answer.
    pub async fn send(request: RequestBuilder) -> Result<reqwest::Response, CallError> {
        request.send().await.map_err(CallError::transport)
    }

    /// `GET path` at `addr`, decoded.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
    ) -> Result<T, CallError> {
        Self::json(self.get(addr, path)).await
    }

    /// `POST path` at `addr` with a JSON body, decoded.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        Self::json(self.post(addr, path, body)).await
    }
}

/// `http://addr/path`, or `addr/path` when `addr` carries its scheme.
pub fn url(addr: &str, path: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        format!("{}{path}", addr.trim_end_matches('/'))
    } else {
        format!("http://{addr}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_may_carry_a_scheme() {
        assert_eq!(url("127.0.0.1:8101", "/x"), "http://127.0.0.1:8101/x");
        assert_eq!(url("http://h:1/", "/x"), "http://h:1/x");
    }

    #[tokio::test]
    async fn the_secret_goes_with_every_request_of_a_client_that_has_one() {
        let with = InternalClient::new(Duration::from_secs(1), Duration::from_secs(1))
            .with_secret("s3cret")
            .get("127.0.0.1:1", "/status")
            .build()
            .unwrap();
        assert_eq!(with.headers()[INTERNAL_SECRET], "s3cret");
        assert_eq!(with.url().as_str(), "http://127.0.0.1:1/status");
        let without = InternalClient::new(Duration::from_secs(1), Duration::from_secs(1))
            .get("127.0.0.1:1", "/status")
            .build()
            .unwrap();
        assert!(without.headers().get(INTERNAL_SECRET).is_none());
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable() {
        // Port 1 on loopback: nothing listens there.
        let client = InternalClient::new(Duration::from_secs(1), Duration::from_secs(1));
        let e = client
            .get_json::<serde_json::Value>("127.0.0.1:1", "/status")
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Unreachable { .. }), "{e:?}");
    }
}
