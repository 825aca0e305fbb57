//! The node process: opens its state (`state`), wires its router — Raft
//! RPCs, coordinator reads, writes and checkouts (`http`), consistency
//! (`consistency::api`), membership (`membership`), readiness, status and
//! metrics — and serves it until a signal.

pub(crate) mod http;
pub(crate) mod shards;
pub(crate) mod state;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use cart_common::http::{self as chttp, ServerLabels, Shutdown};
use cart_common::paths;
use cart_common::spec::NodeId;
use cart_common::{ClusterSpec, Service};
use tokio::sync::Semaphore;

use self::http::{
    append, checkout, handover, local_read, read, read_index, ready, snapshot, status, vote, write,
};
use self::shards::Node;
use crate::consistency;
use crate::membership;

/// Largest Raft RPC or internal request body a node accepts.
const RAFT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// How a node process was started.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeOptions {
    /// Never form a new group, even as node 1 with no data: wait to be added.
    pub join: bool,
    /// Serve the fault-injection hook (tests and demos only).
    pub fault_injection: bool,
}

pub async fn run(
    spec: ClusterSpec,
    service: Service,
    id: NodeId,
    options: NodeOptions,
) -> anyhow::Result<()> {
    let addr = spec.node_addr(service, id).ok_or_else(|| {
        anyhow::anyhow!("node id {id} outside 1..={}", cart_common::spec::MAX_NODES)
    })?;
    let node = Node::open(&spec, service, id, addr.clone(), options).await?;

    let limit = Arc::new(Semaphore::new(spec.limits.max_in_flight));
    let internal = chttp::internal_only(
        Router::new()
            .route(paths::APPEND_PATH, post(append))
            .route(paths::VOTE_PATH, post(vote))
            .route(paths::SNAPSHOT_PATH, post(snapshot))
            .route(paths::READ_INDEX_PATH, post(read_index))
            .route(paths::HANDOVER_PATH, post(handover))
            .route(paths::WRITE_PATH, post(write))
            .route(paths::READ_PATH, post(read))
            .route(paths::LOCAL_READ_PATH, post(local_read))
            .route(paths::CHECKOUT_PATH, post(checkout))
            .route(paths::DIGEST_ROUTE, get(consistency::api::digest))
            .route(paths::DIGEST_LEAVES_ROUTE, post(consistency::api::leaves))
            .route(paths::DIGEST_ROWS_ROUTE, post(consistency::api::rows))
            .route(paths::REPAIRED_ROUTE, get(consistency::api::repaired))
            .route(paths::CONSISTENCY_PATH, post(consistency::api::start))
            .route(paths::WIPE_PATH, post(consistency::api::wipe))
            .route(paths::ADD_MEMBER_PATH, post(membership::add))
            .route(paths::REMOVE_MEMBER_PATH, post(membership::remove))
            // Snapshot chunks (1 MiB, JSON-encoded bytes) and entry batches
            // exceed axum's 2 MB default.
            .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT)),
        &spec.cluster.internal_secret,
        limit,
        chttp::BodyLimits::new(&spec.limits, RAFT_BODY_LIMIT),
    );
    let open = Router::new()
        .route(paths::READY_PATH, get(ready))
        .route(paths::STATUS_PATH, get(status))
        .route(paths::FAULT_PATH, post(consistency::api::corrupt))
        .route(paths::METRICS_PATH, get(chttp::metrics_handler));
    let router = chttp::instrument(
        internal.merge(open).with_state(node.clone()),
        ServerLabels {
            service: service.name(),
            role: "node",
        },
    );

    let listener = chttp::bind(&spec.bind_addr(&addr)).await?;
    tracing::info!(%service, id, %addr, shards = node.members().len(), "node serving");
    let shutdown = Shutdown::on_signals();
    chttp::serve(listener, router, shutdown, (&spec.limits).into()).await?;
    for member in node.members() {
        if let Err(e) = member.raft().shutdown().await {
            tracing::warn!(error = %e, shard = %member.shard(), "raft shutdown");
        }
    }
    tracing::info!("node stopped");
    Ok(())
}
