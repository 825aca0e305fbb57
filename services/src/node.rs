//! The node process: opens its storage, starts the Raft group member and serves
//! Raft RPCs, coordinator reads and writes, readiness, status and metrics.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cart_common::http::{self as chttp, ServerLabels, Shutdown};
use cart_common::spec::{NodeId, StorageBackend};
use cart_common::{ApiError, ClusterSpec, Service};
use openraft::error::{CheckIsLeaderError, ForwardToLeader, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, Config, SnapshotPolicy};
use tokio::sync::Semaphore;

use crate::api::{
    self, CheckoutReply, CheckoutRequest, FollowerProgress, NodeStatus, NotLeader, ReadRequest,
    WriteRequest,
};
use crate::consistency::{
    self,
    checker::{Checker, CONSISTENCY_PATH, DIGEST_PATH, REPAIRED_PATH, WIPE_PATH},
    replica::Replica,
};
use crate::domain::{self, Outcome};
use crate::membership;
use crate::metrics::METRICS;
use crate::raft::log_store::LogStore;
use crate::raft::network::{self, Network};
use crate::raft::progress::Progress;
use crate::raft::proposer::{ProposeError, Proposer};
use crate::raft::state_machine::StateMachine;
use crate::raft::{Raft, TypeConfig};
use crate::saga::{CheckoutAnswer, Sagas};
use crate::storage::{self, embedded, Backend, Health};

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

pub(crate) struct Node {
    pub(crate) service: Service,
    id: NodeId,
    addr: String,
    pub(crate) raft: Raft,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) health: Arc<Health>,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) replica: Arc<Replica>,
    pub(crate) checker: Arc<Checker>,
    pub(crate) fault_injection: bool,
    pub(crate) admin_token: String,
    proposer: Proposer,
    progress: Arc<Progress>,
    /// The order group's checkout sagas (order nodes only).
    sagas: Option<Arc<Sagas>>,
    /// What `/status` reports from the storage; from a MongoDB server read
    /// at most every `STORED_SUMMARY_TTL` (coordinators probe several times
    /// a second).
    stored: std::sync::Mutex<Option<(std::time::Instant, StoredSummary)>>,
}

#[derive(Clone, Default)]
struct StoredSummary {
    table_sizes: BTreeMap<String, u64>,
    last_check: Option<cart_common::admin::CheckReport>,
}

const STORED_SUMMARY_TTL: std::time::Duration = std::time::Duration::from_secs(2);

impl Node {
    /// Table sizes and the latest check, as last read from the storage; not
    /// read again while the storage fails (the probe must answer quickly).
    fn stored_summary(&self) -> StoredSummary {
        let Ok(mut cached) = self.stored.lock() else {
            return StoredSummary::default();
        };
        // The embedded store answers these from memory-mapped pages: always
        // read afresh. A server is asked at most every TTL.
        let ttl = match self.backend.kind() {
            StorageBackend::Redb => std::time::Duration::ZERO,
            StorageBackend::Mongodb => STORED_SUMMARY_TTL,
        };
        let fresh = cached.as_ref().is_some_and(|(at, _)| at.elapsed() < ttl);
        if fresh || !self.health.is_healthy() {
            return cached.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
        }
        // The first failure ends the refresh: the probe must answer quickly.
        let sizes: Result<BTreeMap<String, u64>, _> = domain::Table::ALL
            .into_iter()
            .map(|t| Ok((t.name().to_string(), self.backend.count(t)?)))
            .collect::<Result<_, crate::domain::StoreError>>();
        let Ok(table_sizes) = sizes else {
            return cached.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
        };
        let summary = StoredSummary {
            table_sizes,
            last_check: latest_check(self.backend.as_ref()),
        };
        *cached = Some((std::time::Instant::now(), summary.clone()));
        summary
    }
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
    let dir = spec.node_data_dir(service, id);
    // The Raft log always lives in the embedded store; the replicated state
    // in the backend the spec chooses (the embedded store by default).
    let fresh = embedded::Store::is_new(&dir);
    let store = embedded::Store::open(&dir, spec.storage.redb_cache_mib)?;
    let health = Arc::new(Health::default());
    let backend = storage::open(&spec, service, id, &store, fresh, health.clone()).await?;
    let window_ms = spec.raft.request_id_window_secs.saturating_mul(1000);
    let replica = Arc::new(Replica::default());
    Replica::init_metrics();
    crate::metrics::init_series();
    let sm = StateMachine::new(backend.clone(), dir.clone(), window_ms, id, replica.clone());
    let et = spec.raft.election_timeout_ms;
    // The replicas of a group reach the same entry count together; staggering
    // their thresholds (by up to 40%) keeps their snapshot builds, a full scan
    // each, from landing on the machine at once.
    let snapshot_every = spec.raft.snapshot_every + spec.raft.snapshot_every / 10 * ((id - 1) % 5);
    let config = Config {
        cluster_name: service.to_string(),
        heartbeat_interval: spec.raft.heartbeat_ms,
        election_timeout_min: et,
        election_timeout_max: et + et / 2,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: spec.raft.snapshot_every / 2,
        // A follower further behind than this gets a snapshot instead of
        // entries; past a snapshot's worth it could never catch up by entries.
        replication_lag_threshold: spec.raft.snapshot_every.saturating_mul(2).max(5000),
        // Snapshots of 100k-key tables travel in 1 MiB chunks; the last one
        // also covers installing the whole table on the follower.
        snapshot_max_chunk_size: 1024 * 1024,
        install_snapshot_timeout: 30_000,
        ..Default::default()
    }
    .validate()?;
    let progress = Arc::new(Progress::default());
    let raft = Raft::new(
        id,
        Arc::new(config),
        Network::new(&spec.cluster.internal_secret, progress.clone()),
        LogStore::new(store.clone(), progress.clone())?,
        sm.clone(),
    )
    .await?;

    // The first node of a pristine group forms it from the spec. Once formed,
    // the membership in the log wins over the spec.
    if id == 1 && !options.join && !raft.is_initialized().await? {
        let members: BTreeMap<NodeId, BasicNode> = spec
            .nodes(service)
            .into_iter()
            .map(|n| (n.id, BasicNode { addr: n.addr }))
            .collect();
        tracing::info!(?members, "initializing new Raft group");
        if let Err(e) = raft.initialize(members).await {
            tracing::warn!(error = %e, "initialize refused");
        }
    }

    let proposer = Proposer::start(raft.clone(), sm.clone());
    let sagas = (service == Service::Order).then(|| {
        Arc::new(Sagas::new(
            &spec,
            id,
            raft.clone(),
            proposer.clone(),
            backend.clone(),
            health.clone(),
        ))
    });
    if let Some(sagas) = &sagas {
        tokio::spawn(sagas.clone().sweep());
    }
    let checker = Arc::new(Checker::new(
        &spec,
        service,
        id,
        raft.clone(),
        proposer.clone(),
    ));
    tokio::spawn(checker.clone().schedule(progress.clone()));
    let node = Arc::new(Node {
        service,
        id,
        addr: addr.clone(),
        raft: raft.clone(),
        backend,
        health: health.clone(),
        dir: dir.clone(),
        replica,
        checker,
        fault_injection: options.fault_injection,
        admin_token: spec.cluster.admin_token.clone(),
        proposer,
        progress: progress.clone(),
        sagas,
        stored: std::sync::Mutex::new(None),
    });
    tokio::spawn(export_raft_metrics(raft.clone(), progress));
    tokio::spawn(follow_storage_health(raft.clone(), health));
    tokio::spawn(ping_storage(node.backend.clone()));

    let limit = Arc::new(Semaphore::new(spec.limits.max_in_flight));
    let internal = chttp::internal_only(
        Router::new()
            .route(network::APPEND_PATH, post(append))
            .route(network::VOTE_PATH, post(vote))
            .route(network::SNAPSHOT_PATH, post(snapshot))
            .route(api::WRITE_PATH, post(write))
            .route(api::READ_PATH, post(read))
            .route(api::LOCAL_READ_PATH, post(local_read))
            .route(api::CHECKOUT_PATH, post(checkout))
            .route(
                &format!("{DIGEST_PATH}/{{check_id}}"),
                get(consistency::api::digest),
            )
            .route(
                &format!("{DIGEST_PATH}/{{check_id}}/leaves"),
                post(consistency::api::leaves),
            )
            .route(
                &format!("{DIGEST_PATH}/{{check_id}}/rows"),
                post(consistency::api::rows),
            )
            .route(
                &format!("{REPAIRED_PATH}/{{check_id}}"),
                get(consistency::api::repaired),
            )
            .route(CONSISTENCY_PATH, post(consistency::api::start))
            .route(WIPE_PATH, post(consistency::api::wipe))
            .route(api::ADD_MEMBER_PATH, post(membership::add))
            .route(api::REMOVE_MEMBER_PATH, post(membership::remove))
            // Snapshot chunks (1 MiB, JSON-encoded bytes) and entry batches
            // exceed axum's 2 MB default.
            .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT)),
        &spec.cluster.internal_secret,
        limit,
        chttp::BodyLimits::new(&spec.limits, RAFT_BODY_LIMIT),
    );
    let open = Router::new()
        .route(api::READY_PATH, get(ready))
        .route(api::STATUS_PATH, get(status))
        .route(
            consistency::api::FAULT_PATH,
            post(consistency::api::corrupt),
        )
        .route("/metrics", get(chttp::metrics_handler));
    let router = chttp::instrument(
        internal.merge(open).with_state(node),
        ServerLabels {
            service: service.name(),
            role: "node",
        },
    );

    let listener = chttp::bind(&spec.bind_addr(&addr)).await?;
    tracing::info!(%service, id, %addr, "node serving");
    let shutdown = Shutdown::on_signals();
    chttp::serve(listener, router, shutdown, (&spec.limits).into()).await?;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    tracing::info!("node stopped");
    Ok(())
}

async fn export_raft_metrics(raft: Raft, progress: Arc<Progress>) {
    let mut rx = raft.metrics();
    loop {
        {
            let m = rx.borrow_and_update();
            let dead = match &m.running_state {
                Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
                Err(fatal) => Some(fatal),
            };
            if let Some(fatal) = dead {
                // A dead Raft core cannot recover in place: exit, so the node
                // is seen down and its supervisor restarts it from its log.
                tracing::error!(error = %fatal, "raft core stopped; exiting");
                std::process::exit(70);
            }
            METRICS.term.set(m.current_term as i64);
            METRICS
                .committed
                .set(progress.committed().map_or(0, |c| c as i64));
            METRICS
                .last_applied
                .set(m.last_applied.map_or(0, |l| l.index as i64));
            METRICS
                .last_log_index
                .set(m.last_log_index.unwrap_or(0) as i64);
            METRICS
                .is_leader
                .set(i64::from(m.current_leader == Some(m.id)));
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn append(
    State(n): State<Arc<Node>>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> impl IntoResponse {
    Json(n.raft.append_entries(req).await)
}

async fn vote(
    State(n): State<Arc<Node>>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> impl IntoResponse {
    Json(n.raft.vote(req).await)
}

async fn snapshot(
    State(n): State<Arc<Node>>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> impl IntoResponse {
    Json(n.raft.install_snapshot(req).await)
}

/// Pings the storage every second: an idle node notices a failing storage
/// (and its recovery) without waiting for a write.
async fn ping_storage(backend: Arc<dyn Backend>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let b = backend.clone();
        // The result goes to the node's health; nothing else to do here.
        let _ = tokio::task::spawn_blocking(move || b.ping()).await;
    }
}

/// Returns once the storage is known to fail.
async fn storage_failing(health: &Health) {
    let _ = health.watch().wait_for(|healthy| !healthy).await;
}

/// While its storage fails a node neither campaigns nor sends heartbeats:
/// as leader it could not apply, so its followers elect another leader.
async fn follow_storage_health(raft: Raft, health: Arc<Health>) {
    let mut watch = health.watch();
    while watch.changed().await.is_ok() {
        let healthy = *watch.borrow_and_update();
        tracing::warn!(
            healthy,
            "storage health changed; elections and heartbeats follow it"
        );
        raft.runtime_config().heartbeat(healthy);
        raft.runtime_config().elect(healthy);
    }
}

pub(crate) fn not_leader(f: ForwardToLeader<NodeId, BasicNode>) -> Response {
    let body = NotLeader {
        leader_id: f.leader_id,
        leader_addr: f.leader_node.map(|n| n.addr),
    };
    (StatusCode::MISDIRECTED_REQUEST, Json(body)).into_response()
}

fn answer(outcome: Outcome) -> Response {
    Json(outcome).into_response()
}

fn storage_failure(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "store read failed");
    ApiError::unavailable(format!("replica store failed: {e}")).into_response()
}

async fn write(State(n): State<Arc<Node>>, Json(req): Json<WriteRequest>) -> Response {
    if req.key.is_empty() {
        return ApiError::bad_request("missing_request_id", "writes need a request id")
            .into_response();
    }
    // A node whose storage fails takes no write (as leader it could not
    // apply it; refusing lets the group elect a healthy leader), and a write
    // waiting on an apply the storage cannot finish is answered 503 as soon
    // as the failure is known: the coordinator retries (same request id) at
    // the leader that takes over.
    let proposed = tokio::select! {
        biased;
        _ = storage_failing(&n.health) => {
            return ApiError::unavailable("this node's storage is failing").into_response();
        }
        proposed = n.proposer.propose(&req.key, req.cmd) => proposed,
    };
    match proposed {
        Ok(outcome) => answer(outcome),
        Err(ProposeError::NotLeader(f)) => not_leader(f),
        Err(ProposeError::Overloaded) => ApiError::overloaded().into_response(),
        Err(ProposeError::Unavailable(e)) => ApiError::unavailable(e).into_response(),
    }
}

async fn checkout(State(n): State<Arc<Node>>, Json(req): Json<CheckoutRequest>) -> Response {
    let Some(sagas) = &n.sagas else {
        return ApiError::bad_request("wrong_service", "only order nodes check out")
            .into_response();
    };
    if req.key.is_empty() {
        return ApiError::bad_request("missing_request_id", "checkouts need a request id")
            .into_response();
    }
    match sagas.checkout(&req.key, &req.order_id).await {
        CheckoutAnswer::Done(outcome) => Json(CheckoutReply::Ended(outcome)).into_response(),
        CheckoutAnswer::NotLeader(f) => not_leader(f),
        CheckoutAnswer::Overloaded => ApiError::overloaded().into_response(),
        // Begun: hand over what the coordinator can follow, not a guess.
        CheckoutAnswer::Pending {
            tx_id: Some(tx_id), ..
        } => Json(CheckoutReply::Unfinished { tx_id }).into_response(),
        CheckoutAnswer::Pending {
            reason,
            tx_id: None,
        } => ApiError::unavailable(reason).into_response(),
    }
}

async fn read(State(n): State<Arc<Node>>, Json(req): Json<ReadRequest>) -> Response {
    match n.raft.ensure_linearizable().await {
        Ok(_) => local_query(&n, &req),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => not_leader(f),
        Err(e) => ApiError::unavailable(format!("cannot confirm leadership: {e}")).into_response(),
    }
}

async fn local_read(State(n): State<Arc<Node>>, Json(req): Json<ReadRequest>) -> Response {
    local_query(&n, &req)
}

fn local_query(n: &Node, req: &ReadRequest) -> Response {
    let result = n
        .backend
        .reader()
        .and_then(|view| domain::query(view.as_ref(), &req.query));
    match result {
        Ok(outcome) => answer(outcome),
        Err(e) => storage_failure(e),
    }
}

async fn ready(State(n): State<Arc<Node>>) -> Response {
    if !n.health.is_healthy() {
        return ApiError::unavailable("this node's storage is failing").into_response();
    }
    let leader = n.raft.metrics().borrow().current_leader;
    match leader {
        Some(l) => Json(serde_json::json!({ "ready": true, "leader": l })).into_response(),
        None => ApiError::unavailable("no leader known yet").into_response(),
    }
}

async fn status(State(n): State<Arc<Node>>) -> Json<NodeStatus> {
    // May wait on the storage (or on another probe reading it): never on a
    // runtime worker, which Raft RPCs need.
    let stored = tokio::task::block_in_place(|| n.stored_summary());
    let m = n.raft.metrics().borrow().clone();
    let members = m
        .membership_config
        .nodes()
        .map(|(id, node)| (*id, node.addr.clone()))
        .collect();
    let voters = m.membership_config.membership().voter_ids().collect();
    let replication = m.replication.as_ref().map(|followers| {
        followers
            .iter()
            .filter(|(id, _)| **id != n.id)
            .map(|(id, matched)| {
                let matched = matched.as_ref().map(|l| l.index);
                let (lag_entries, lag_seconds) = n.progress.lag(matched, m.last_log_index);
                let contact = n.progress.contact(*id);
                let progress = FollowerProgress {
                    matched,
                    lag_entries,
                    lag_seconds,
                    last_contact_ms_ago: contact.and_then(|c| c.last_ok_ms_ago),
                    failing: contact.is_some_and(|c| c.failing),
                };
                (*id, progress)
            })
            .collect()
    });
    Json(NodeStatus {
        service: n.service.to_string(),
        id: n.id,
        addr: n.addr.clone(),
        state: format!("{:?}", m.state),
        term: m.current_term,
        leader: m.current_leader,
        last_log_index: m.last_log_index,
        last_applied: m.last_applied.map(|l| l.index),
        snapshot: m.snapshot.map(|l| l.index),
        purged: m.purged.map(|l| l.index),
        members,
        voters,
        committed: n.progress.committed(),
        replication,
        saga_recovery: n.sagas.as_ref().and_then(|s| s.last_recovery()),
        last_check: stored.last_check,
        table_sizes: stored.table_sizes,
        storage: n.health.status(),
    })
}

fn latest_check(backend: &dyn Backend) -> Option<cart_common::admin::CheckReport> {
    let view = backend.reader().ok()?;
    match domain::query(view.as_ref(), &domain::Query::LatestCheck) {
        Ok(Ok(domain::Reply::Check(report))) => report,
        _ => None,
    }
}
