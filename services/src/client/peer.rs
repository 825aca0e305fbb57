//! How a coordinator reaches another service: straight to that service's Raft
//! leader (`direct`, the default) or through that service's coordinators'
//! internal endpoint (`coordinator`, as the seed did). Both carry the same
//! request ids, so retries stay idempotent either way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::api::{ReadRequest, WriteRequest};
use crate::domain::{Command, Outcome, Query};
use crate::request_key::RequestKey;
use cart_common::backoff::Backoff;
use cart_common::http::InternalClient;
use cart_common::paths::{READ_PATH, WRITE_PATH};
use cart_common::shard::Shard;
use cart_common::spec::CrossService;
use cart_common::{ApiError, ClusterSpec, Service};
use reqwest::StatusCode;
use serde::Serialize;

use super::metrics::METRICS;
use super::service::ServiceClient;

pub enum PeerService {
    Direct(ServiceClient),
    Coordinators(CoordinatorPool),
}

impl PeerService {
    pub fn new(spec: &ClusterSpec, service: Service) -> Self {
        let mode = match spec.cluster.cross_service {
            CrossService::Direct => "direct",
            CrossService::Coordinator => "coordinator",
        };
        let calls = ["ok", "rejected", "failed"].map(|result| [service.name(), mode, result]);
        cart_common::metrics::precreate(&METRICS.cross_service_calls, calls);
        cart_common::metrics::precreate(&METRICS.cross_service_duration, [[service.name(), mode]]);
        match spec.cluster.cross_service {
            CrossService::Direct => PeerService::Direct(ServiceClient::new(spec, service)),
            CrossService::Coordinator => {
                PeerService::Coordinators(CoordinatorPool::new(spec, service))
            }
        }
    }

    fn labels(&self) -> (&'static str, &'static str) {
        match self {
            PeerService::Direct(s) => (s.service().name(), "direct"),
            PeerService::Coordinators(p) => (p.service.name(), "coordinator"),
        }
    }

    /// A write at the shard of its key (or every shard: `Routing`).
    pub async fn write(&self, key: &RequestKey, cmd: Command) -> Result<Outcome, ApiError> {
        self.write_at(None, key, cmd).await
    }

    /// A write at the shard the caller names (a saga step).
    pub async fn write_to(
        &self,
        shard: Shard,
        key: &RequestKey,
        cmd: Command,
    ) -> Result<Outcome, ApiError> {
        self.write_at(Some(shard), key, cmd).await
    }

    async fn write_at(
        &self,
        shard: Option<Shard>,
        key: &RequestKey,
        cmd: Command,
    ) -> Result<Outcome, ApiError> {
        let started = Instant::now();
        let result = match (self, shard) {
            (PeerService::Direct(s), Some(shard)) => s.write_to(shard, key, cmd).await,
            (PeerService::Direct(s), None) => s.write(key, cmd).await,
            (PeerService::Coordinators(p), shard) => {
                let body = WriteRequest {
                    key: key.clone(),
                    cmd,
                };
                p.call(WRITE_PATH, shard, &body).await
            }
        };
        self.observe(started, &result);
        result
    }

    /// The shard of the service holding `key`.
    pub fn shard_of(&self, key: &str) -> Shard {
        match self {
            PeerService::Direct(s) => s.shard_of(key),
            PeerService::Coordinators(p) => Shard::of(key, p.shards),
        }
    }

    /// Every shard of the service.
    pub fn shards(&self) -> impl Iterator<Item = Shard> {
        Shard::all(match self {
            PeerService::Direct(s) => s.groups().len() as u16,
            PeerService::Coordinators(p) => p.shards,
        })
    }

    pub async fn read(&self, query: Query) -> Result<Outcome, ApiError> {
        let started = Instant::now();
        let result = match self {
            PeerService::Direct(s) => s.read(query).await,
            PeerService::Coordinators(p) => p.call(READ_PATH, None, &ReadRequest { query }).await,
        };
        self.observe(started, &result);
        result
    }

    fn observe(&self, started: Instant, result: &Result<Outcome, ApiError>) {
        let (target, mode) = self.labels();
        let outcome = match result {
            Ok(Ok(_)) => "ok",
            Ok(Err(_)) => "rejected",
            Err(_) => "failed",
        };
        METRICS
            .cross_service_calls
            .with_label_values(&[target, mode, outcome])
            .inc();
        METRICS
            .cross_service_duration
            .with_label_values(&[target, mode])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Waits between coordinators: the first retry soon (another coordinator
/// likely answers), later ones spread out.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// Round robin over a service's coordinators' admin ports, skipping ones that
/// fail, until the deadline.
pub struct CoordinatorPool {
    service: Service,
    shards: u16,
    client: InternalClient,
    admins: Vec<String>,
    cursor: AtomicUsize,
    deadline: Duration,
}

impl CoordinatorPool {
    fn new(spec: &ClusterSpec, service: Service) -> Self {
        let limits = &spec.limits;
        Self {
            service,
            shards: spec.shards(service),
            client: InternalClient::for_cluster(
                spec,
                Duration::from_millis(limits.request_timeout_ms),
            ),
            admins: spec
                .coordinators(service)
                .into_iter()
                .map(|c| c.admin)
                .collect(),
            cursor: AtomicUsize::new(0),
            deadline: Duration::from_millis(limits.request_timeout_ms),
        }
    }

    /// Calls a coordinator's internal `path`; with a shard, for that shard
    /// (the `cart-shard` header), else the coordinator routes by key.
    async fn call<B: Serialize>(
        &self,
        path: &str,
        shard: Option<Shard>,
        body: &B,
    ) -> Result<Outcome, ApiError> {
        let client = match shard {
            Some(shard) => &self.client.for_shard(shard),
            None => &self.client,
        };
        let give_up = Instant::now() + self.deadline;
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut last_error: String;
        loop {
            let i = self.cursor.fetch_add(1, Ordering::Relaxed);
            let target = &self.admins[i % self.admins.len().max(1)];
            let sent = client
                .post(target, path, body)
                .timeout(give_up.saturating_duration_since(Instant::now()))
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status() == StatusCode::OK => {
                    return resp.json::<Outcome>().await.map_err(|e| {
                        ApiError::unavailable(format!("{target}: unreadable answer: {e}"))
                    });
                }
                Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => {
                    return Err(ApiError::overloaded())
                }
                Ok(resp) => last_error = format!("{target}: {}", resp.status()),
                Err(e) => last_error = format!("{target}: {e}"),
            }
            METRICS
                .group_retries
                .with_label_values(&[self.service.name(), "coordinator_failed"])
                .inc();
            if Instant::now() >= give_up {
                return Err(ApiError::unavailable(format!(
                    "{} coordinators could not answer ({last_error})",
                    self.service
                )));
            }
            backoff.wait().await;
        }
    }
}
