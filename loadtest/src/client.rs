//! The one HTTP client of the load test: a gateway base URL over a shared
//! reqwest connection pool, answers as status + JSON, timings recorded.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use reqwest::Method;
use serde_json::Value;

use crate::stats::{Stats, Status};

/// The header the gateway keeps as the request's idempotency id (docs/api.md).
pub const REQUEST_ID: &str = "x-request-id";

#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: Status,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.ok()
    }

    pub fn str(&self, field: &str) -> Option<String> {
        self.body.get(field)?.as_str().map(str::to_string)
    }

    pub fn int(&self, field: &str) -> Option<i64> {
        self.body.get(field)?.as_i64()
    }
}

impl Api {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            // Every simulated user keeps its connection between requests,
            // as a browser session would, but forgets one idle for 4 s: our
            // servers close a connection idle for 5 s (`header_read_timeout_ms`),
            // and reusing one just closed fails the request with a reset.
            .pool_idle_timeout(Duration::from_secs(4))
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request; a transport failure is an answer with a non-HTTP status.
    pub async fn call(&self, method: Method, path: &str, request_id: Option<&str>) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(id) = request_id {
            req = req.header(REQUEST_ID, id);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Answer {
                    status: transport_status(&e),
                    body: Value::Null,
                }
            }
        };
        let status = Status::Http(resp.status().as_u16());
        match resp.bytes().await {
            Ok(bytes) => Answer {
                status,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            },
            Err(e) => Answer {
                status: transport_status(&e),
                body: Value::Null,
            },
        }
    }

    /// `call`, with its latency and status recorded under `op`.
    pub async fn timed(
        &self,
        stats: &Stats,
        op: &'static str,
        method: Method,
        path: &str,
        request_id: Option<&str>,
    ) -> Answer {
        let started = Instant::now();
        let answer = self.call(method, path, request_id).await;
        stats.record(op, started.elapsed(), answer.status);
        answer
    }

    pub async fn post(&self, path: &str) -> Answer {
        self.call(Method::POST, path, None).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    /// A POST that must succeed (population, setup), with a clear error.
    pub async fn must_post(&self, path: &str) -> anyhow::Result<Answer> {
        let a = self.post(path).await;
        if !a.ok() {
            bail!(
                "POST {}{path} answered {}: {}",
                self.base,
                a.status.key(),
                a.body
            );
        }
        Ok(a)
    }

    /// A GET that must succeed, with a clear error.
    pub async fn must_get(&self, path: &str) -> anyhow::Result<Answer> {
        let a = self.get(path).await;
        if !a.ok() {
            bail!(
                "GET {}{path} answered {}: {}",
                self.base,
                a.status.key(),
                a.body
            );
        }
        Ok(a)
    }

    /// Waits until the gateway answers a public route with anything but a
    /// 5xx or a transport error (a cluster just started may still be
    /// electing leaders).
    pub async fn wait_serving(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let a = self.get("/stock/find/cart-load-probe").await;
            if matches!(a.status, Status::Http(200..=499)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "{} not serving after {timeout:?} (last answer {})",
                    self.base,
                    a.status.key()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn transport_status(e: &reqwest::Error) -> Status {
    if e.is_timeout() {
        Status::Timeout
    } else if e.is_connect() {
        Status::Connect
    } else {
        Status::Transport
    }
}
