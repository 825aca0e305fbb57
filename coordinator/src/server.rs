//! The coordinator process: the service's public API on one port; the admin
//! API, metrics, readiness and the internal cross-service endpoint on the
//! admin port. In the background it runs the node-down protocol for its
//! service and merges the other coordinators' events.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cart_common::http::{self as chttp, BodyLimits, ServerLabels};
use cart_common::{ApiError, ClusterSpec, Service};
use cart_services::api::{ReadRequest, WriteRequest, READY_PATH, READ_PATH, WRITE_PATH};
use tokio::sync::Semaphore;

use cart_services::client::{GroupClient, PeerService};

use crate::events::EventLog;
use crate::health::Health;
use crate::routes::public_routes;

/// The cart API has no request bodies; anything larger is refused (413).
const PUBLIC_BODY_LIMIT: usize = 64 * 1024;
/// A cross-service write or read (axum's default JSON limit).
const INTERNAL_BODY_LIMIT: usize = 2 * 1024 * 1024;

pub struct Coordinator {
    pub service: Service,
    pub spec: ClusterSpec,
    /// This coordinator's admin address (it counts itself as reachable).
    pub admin_addr: String,
    /// This service's own Raft group.
    pub own: GroupClient,
    /// The other services this one calls.
    peers: HashMap<Service, PeerService>,
    pub health: Arc<Health>,
    pub events: Arc<EventLog>,
    /// For admin calls forwarded to other coordinators.
    pub admin_client: cart_common::http::InternalClient,
}

impl Coordinator {
    pub fn new(spec: &ClusterSpec, service: Service, index: u16) -> Self {
        let name = format!("{service}-coordinator-{index}");
        let events = Arc::new(EventLog::new(name, spec.health.events_kept));
        let health = Arc::new(Health::new(spec, service, events.clone()));
        // Only the order service calls others (addItem, checkout, create).
        if service == Service::Order {
            for outcome in [
                "paid",
                "already_paid",
                "insufficient_credit",
                "insufficient_stock",
                "rejected",
                "failed",
            ] {
                crate::metrics::METRICS
                    .checkouts
                    .with_label_values(&[outcome])
                    .inc_by(0);
            }
        }
        let peers = match service {
            Service::Order => [Service::Payment, Service::Stock]
                .into_iter()
                .map(|s| (s, PeerService::new(spec, s)))
                .collect(),
            _ => HashMap::new(),
        };
        Self {
            service,
            spec: spec.clone(),
            admin_addr: spec
                .coordinator(service, index)
                .map(|c| c.admin)
                .unwrap_or_default(),
            own: GroupClient::new(spec, service).with_health(health.clone()),
            peers,
            health,
            events,
            admin_client: cart_common::http::InternalClient::new(
                std::time::Duration::from_millis(spec.limits.connect_timeout_ms),
                std::time::Duration::from_millis(spec.limits.bulk_timeout_ms),
            ),
        }
    }

    pub fn peer(&self, service: Service) -> Result<&PeerService, ApiError> {
        self.peers.get(&service).ok_or_else(|| {
            ApiError::internal(format!("{} has no route to {service}", self.service))
        })
    }
}

pub async fn run(spec: ClusterSpec, service: Service, index: u16) -> anyhow::Result<()> {
    let me = spec
        .coordinator(service, index)
        .ok_or_else(|| anyhow::anyhow!("{service} has no coordinator {index} in the spec"))?;
    let state = Arc::new(Coordinator::new(&spec, service, index));
    tokio::spawn(state.health.clone().run());
    tokio::spawn(crate::events::sync_loop(
        state.events.clone(),
        spec.clone(),
        me.admin.clone(),
    ));
    let labels = ServerLabels {
        service: service.name(),
        role: "coordinator",
    };
    let limit = Arc::new(Semaphore::new(spec.limits.max_in_flight));

    let public = chttp::instrument(
        chttp::bounded(
            public_routes(service),
            limit.clone(),
            BodyLimits::new(&spec.limits, PUBLIC_BODY_LIMIT),
        )
        .layer(axum::middleware::from_fn(chttp::require_literal_path))
        .with_state(state.clone()),
        labels,
    );
    let internal = chttp::internal_only(
        Router::new()
            .route(WRITE_PATH, post(internal_write))
            .route(READ_PATH, post(internal_read)),
        &spec.cluster.internal_secret,
        limit,
        BodyLimits::new(&spec.limits, INTERNAL_BODY_LIMIT),
    );
    let admin = chttp::instrument(
        internal
            .merge(crate::admin::routes(&spec))
            .route(READY_PATH, get(chttp::ready_handler))
            .route("/metrics", get(chttp::metrics_handler))
            .with_state(state),
        ServerLabels {
            service: service.name(),
            role: "coordinator_admin",
        },
    );

    tracing::info!(%service, index, public = %me.public, admin = %me.admin, "coordinator serving");
    chttp::serve_public_and_admin(
        (&spec.bind_addr(&me.public), public),
        (&spec.bind_addr(&me.admin), admin),
        (&spec.limits).into(),
    )
    .await?;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// Another service's coordinator asking this one to write to its group.
async fn internal_write(
    State(c): State<Arc<Coordinator>>,
    Json(req): Json<WriteRequest>,
) -> Response {
    match c.own.write(&req.key, req.cmd).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn internal_read(
    State(c): State<Arc<Coordinator>>,
    Json(req): Json<ReadRequest>,
) -> Response {
    match c.own.read(req.query).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => e.into_response(),
    }
}
