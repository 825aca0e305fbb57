//! The coordinator process: wires the service's public API on one port; the
//! admin API, metrics, readiness and the internal cross-service endpoint on
//! the admin port, all over its state (`state::Coordinator`). In the
//! background it runs the node-down protocol for its service and merges the
//! other coordinators' events.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cart_common::http::{self as chttp, BodyLimits, ServerLabels};
use cart_common::paths::{METRICS_PATH, READY_PATH, READ_PATH, WRITE_PATH};
use cart_common::shard::Shard;
use cart_common::{ApiError, ClusterSpec, Service};
use cart_services::api::{ReadRequest, WriteRequest};
use tokio::sync::Semaphore;

use crate::routes::public_routes;
use crate::state::Coordinator;

/// The cart API has no request bodies; anything larger is refused (413).
const PUBLIC_BODY_LIMIT: usize = 64 * 1024;
/// A cross-service write or read (axum's default JSON limit).
const INTERNAL_BODY_LIMIT: usize = 2 * 1024 * 1024;

pub async fn run(spec: ClusterSpec, service: Service, index: u16) -> anyhow::Result<()> {
    let me = spec
        .coordinator(service, index)
        .ok_or_else(|| anyhow::anyhow!("{service} has no coordinator {index} in the spec"))?;
    let state = Arc::new(Coordinator::new(&spec, service, index));
    // Only the order service checks out.
    if service == Service::Order {
        crate::checkout::init_series();
    }
    tokio::spawn(state.health().clone().run());
    tokio::spawn(crate::events::sync_loop(
        state.events().clone(),
        spec.clone(),
        me.admin.clone(),
    ));
    let (stop, events) = (chttp::Shutdown::on_signals(), state.events().clone());
    tokio::spawn(async move {
        stop.wait().await;
        events.close();
    });
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
            .route(METRICS_PATH, get(chttp::metrics_handler))
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

/// Another service's coordinator asking this one to write to its group:
/// to the shard its `cart-shard` header names (a saga step), else to the
/// shard of the write's key.
async fn internal_write(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    Json(req): Json<WriteRequest>,
) -> Response {
    let shard = match Shard::named_in(&headers) {
        Ok(shard) => shard,
        Err(e) => return ApiError::bad_request("bad_shard", e).into_response(),
    };
    let written = match shard {
        Some(shard) => c.own().write_to(shard, &req.key, req.cmd).await,
        None => c.own().write(&req.key, req.cmd).await,
    };
    match written {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn internal_read(
    State(c): State<Arc<Coordinator>>,
    Json(req): Json<ReadRequest>,
) -> Response {
    match c.own().read(req.query).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => e.into_response(),
    }
}
