//! The admin API on every coordinator's admin port (docs/admin-api.md).
//! Reads need no token; mutating calls need the spec's admin bearer token.
//! Any coordinator answers for the whole cluster: views and membership calls
//! for another service are forwarded to one of that service's coordinators.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cart_common::admin::{
    AddNode, CheckReport, CheckStarted, ClusterView, CoordinatorView, MembershipChanged,
    RepairRequest, ServiceView,
};
use cart_common::http as chttp;
use cart_common::paths::{self, ADD_MEMBER_PATH, CONSISTENCY_PATH, REMOVE_MEMBER_PATH};
use cart_common::shard::Shard;
use cart_common::spec::{NodeId, MAX_NODES};
use cart_common::{ApiError, ClusterSpec, Service};
use cart_services::api::RemoveMember;
use cart_services::consistency::wire::Operation;
use serde::Deserialize;
use serde_json::json;

use crate::state::Coordinator;

/// Events in a view unless the caller asks for another number.
const DEFAULT_EVENTS: usize = 100;
/// Check ids are UUIDs; anything much longer is not one.
const MAX_CHECK_ID: usize = 64;
/// How long a forwarded admin read may take per coordinator tried.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes(spec: &ClusterSpec) -> Router<Arc<Coordinator>> {
    let mutating = Router::new()
        .route(paths::NODES_ROUTE, post(add_node))
        .route(paths::NODE_ROUTE, delete(remove_node))
        .route(paths::CHECK_ALL_PATH, post(check_all))
        .route(paths::CHECK_ROUTE, post(check))
        .route(paths::REPAIR_ROUTE, post(repair))
        .route(paths::REBUILD_ROUTE, post(rebuild))
        .layer(axum::middleware::from_fn_with_state(
            Arc::<str>::from(spec.cluster.admin_token.as_str()),
            chttp::require_admin_token,
        ));
    Router::new()
        .route(paths::CLUSTER_PATH, get(cluster))
        .route(paths::SERVICE_ROUTE, get(service))
        .route(paths::CHECK_REPORT_ROUTE, get(check_report))
        .route(paths::EVENTS_PATH, get(events))
        .route(paths::OWN_EVENTS_PATH, get(own_events))
        .merge(mutating)
}

/// `?shard=N` on the calls that act on one shard's group; without it they
/// act on every shard of the service.
#[derive(Deserialize)]
struct ShardQuery {
    shard: Option<Shard>,
}

impl ShardQuery {
    /// The shards of `service` the call acts on; 400 for one it lacks.
    fn shards(&self, c: &Coordinator, service: Service) -> Result<Vec<Shard>, ApiError> {
        let count = c.spec().shards(service);
        match self.shard {
            Some(shard) if shard.0 >= count => Err(ApiError::bad_request(
                "unknown_shard",
                format!("{service} has shards 0..{count}, not {shard}"),
            )),
            Some(shard) => Ok(vec![shard]),
            None => Ok(Shard::all(count).collect()),
        }
    }

    /// The query string to pass on when forwarding the call.
    fn suffix(&self) -> String {
        self.shard
            .map(|s| format!("?shard={s}"))
            .unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    service: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct OwnQuery {
    #[serde(default)]
    after: u64,
    incarnation: Option<String>,
    /// With nothing new yet, wait up to this long for an event (capped).
    #[serde(default)]
    wait_ms: u64,
}

fn parse_service(name: &str) -> Result<Service, ApiError> {
    name.parse()
        .map_err(|e: String| ApiError::bad_request("unknown_service", e))
}

async fn cluster(State(c): State<Arc<Coordinator>>, Query(q): Query<EventsQuery>) -> Response {
    let views = Service::ALL.map(|s| service_view(&c, s));
    let services = futures::future::join_all(views).await;
    Json(ClusterView {
        generated_at_ms: cart_services::raft::now_ms(),
        reported_by: c.events().name.clone(),
        services,
        events: c
            .events()
            .history(q.service.as_deref(), q.limit.unwrap_or(DEFAULT_EVENTS)),
    })
    .into_response()
}

async fn service(State(c): State<Arc<Coordinator>>, Path(name): Path<String>) -> Answer {
    let service = parse_service(&name)?;
    Ok(Json(service_view(&c, service).await).into_response())
}

/// A check's report by id, from the service's leader (a linearizable
/// read of the reports its group keeps); 404 while the check runs, or once
/// later ones have pushed it out.
async fn check_report(
    State(c): State<Arc<Coordinator>>,
    Path((name, check_id)): Path<(String, String)>,
    Query(q): Query<ShardQuery>,
    headers: HeaderMap,
) -> Answer {
    let service = parse_service(&name)?;
    if check_id.len() > MAX_CHECK_ID {
        return Err(ApiError::bad_request(
            "bad_check_id",
            format!("a check id has at most {MAX_CHECK_ID} characters"),
        ));
    }
    if service != c.service() {
        let path = paths::check_report_path(service.name(), &check_id) + &q.suffix();
        return Ok(forward_to_service(&c, service, Method::GET, &path, None, &headers).await);
    }
    // Each shard's group keeps its own reports: look in each in turn.
    for shard in q.shards(&c, service)? {
        let query = cart_services::domain::Query::FindCheck {
            check_id: check_id.clone(),
        };
        match crate::routes::reply(c.own().read_at(shard, query).await)? {
            cart_services::domain::Reply::Check {
                report: Some(report),
            } => return Ok(Json(report).into_response()),
            cart_services::domain::Reply::Check { report: None } => {}
            other => return Err(crate::routes::unexpected(other)),
        }
    }
    Err(ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "check_not_found",
        format!(
            "no report of check {check_id:?} on {service}: it is still running, never existed, \
             or is older than the last {} kept",
            cart_services::domain::checks::CHECKS_KEPT
        ),
    ))
}

async fn events(State(c): State<Arc<Coordinator>>, Query(q): Query<EventsQuery>) -> Response {
    if let Some(Err(e)) = q.service.as_deref().map(parse_service) {
        return e.into_response();
    }
    Json(
        c.events()
            .history(q.service.as_deref(), q.limit.unwrap_or(DEFAULT_EVENTS)),
    )
    .into_response()
}

async fn own_events(
    State(c): State<Arc<Coordinator>>,
    q: Result<Query<OwnQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::bad_request("bad_query", e.body_text()).into_response(),
    };
    let wait = Duration::from_millis(q.wait_ms);
    let own = c
        .events()
        .own_after_waiting(q.after, q.incarnation.as_deref(), wait)
        .await;
    Json(own).into_response()
}

/// This coordinator's own service from its own probes; another service from
/// the first of that service's coordinators that answers.
async fn service_view(c: &Coordinator, service: Service) -> ServiceView {
    if service == c.service() {
        return own_view(c);
    }
    let path = paths::service_path(service.name());
    let mut last_error = String::from("no coordinators");
    for coord in c.spec().coordinators(service) {
        match forward(c, Method::GET, &coord.admin, &path, None, None).await {
            Ok((200, body)) => match serde_json::from_value::<ServiceView>(body) {
                Ok(view) => return view,
                Err(e) => last_error = format!("{}: unreadable view: {e}", coord.admin),
            },
            Ok((status, _)) => last_error = format!("{}: status {status}", coord.admin),
            Err(e) => last_error = format!("{}: {e}", coord.admin),
        }
    }
    ServiceView {
        service: service.to_string(),
        reported_by: c.events().name.clone(),
        leader: None,
        term: None,
        nodes: vec![],
        coordinators: coordinator_views(c, service),
        last_check: None,
        shards: Vec::new(),
        error: Some(format!(
            "no coordinator of {service} answered ({last_error})"
        )),
    }
}

fn own_view(c: &Coordinator) -> ServiceView {
    let leader = c.health().leader();
    let shards = c.health().shard_views(c.spec().shards(c.service()));
    // Sharded: the worst of the shards' latest checks (a mismatch in any
    // shows), else the group's own.
    let last_check = match shards.as_slice() {
        [_, _, ..] => {
            CheckReport::worst(shards.iter().filter_map(|s| s.last_check.as_ref())).cloned()
        }
        _ => c.health().last_check(),
    };
    ServiceView {
        service: c.service().to_string(),
        reported_by: c.events().name.clone(),
        leader: leader.map(|(l, _)| l),
        term: leader.map(|(_, t)| t),
        nodes: c.health().node_views(),
        coordinators: coordinator_views(c, c.service()),
        error: None,
        last_check,
        shards,
    }
}

fn coordinator_views(c: &Coordinator, service: Service) -> Vec<CoordinatorView> {
    c.spec()
        .coordinators(service)
        .into_iter()
        .map(|coord| CoordinatorView {
            reachable: coord.admin == c.admin_addr()
                || c.events().reachable(&coord.admin).unwrap_or(false),
            index: coord.index,
            public: coord.public,
            admin: coord.admin,
        })
        .collect()
}

type Answer = Result<Response, ApiError>;

async fn add_node(
    State(c): State<Arc<Coordinator>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let service = parse_service(&name)?;
    let req: AddNode = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("expected a JSON body like {{\"id\": 4}} (optional \"addr\"): {e}"),
        )
    })?;
    check_node_id(req.id)?;
    if service != c.service() {
        let path = paths::nodes_path(service.name());
        let body = serde_json::to_value(&req).unwrap_or_default();
        return Ok(
            forward_to_service(&c, service, Method::POST, &path, Some(body), &headers).await,
        );
    }
    if let Some(given) = &req.addr {
        if !c.spec().allows_node_addr(service, req.id, given) {
            return Err(ApiError::bad_request(
                "bad_addr",
                format!(
                    "{given:?} is not an address node {} may have: host:port on the host the \
                     cluster spec gives it",
                    req.id
                ),
            ));
        }
    }
    let addr = req
        .addr
        .or_else(|| c.spec().node_addr(service, req.id))
        .ok_or_else(|| ApiError::bad_request("bad_addr", "no address for that node id"))?;
    let body = AddNode {
        id: req.id,
        addr: Some(addr.clone()),
    };
    let changed = every_shard(&c, ADD_MEMBER_PATH, &body).await?;
    c.health().watch(req.id, addr.clone());
    if changed.changed {
        c.events().record(
            service.name(),
            "member_added",
            Some(req.id),
            format!("node {} ({addr}) joined as a voter", req.id),
            json!({ "addr": addr, "voters": changed.voters, "log_index": changed.log_index }),
        );
    }
    Ok(Json(changed).into_response())
}

async fn remove_node(
    State(c): State<Arc<Coordinator>>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let service = parse_service(&name)?;
    let id = parse_node_id(&id)?;
    if service != c.service() {
        let path = paths::node_path(service.name(), id);
        return Ok(forward_to_service(&c, service, Method::DELETE, &path, None, &headers).await);
    }
    let changed = every_shard(&c, REMOVE_MEMBER_PATH, &RemoveMember { id }).await?;
    if changed.changed {
        c.events().record(
            service.name(),
            "member_removed",
            Some(id),
            format!("node {id} left the group"),
            json!({ "voters": changed.voters, "log_index": changed.log_index }),
        );
    }
    Ok(Json(changed).into_response())
}

/// A membership change made in every shard's group, one after the other
/// (a node hosts a member of each): shard 0's answer, `changed` if any
/// shard changed. A failure stops at that shard; the call may be repeated
/// (a shard already changed answers `changed: false`).
async fn every_shard<B: serde::Serialize>(
    c: &Coordinator,
    path: &str,
    body: &B,
) -> Result<MembershipChanged, ApiError> {
    let mut first: Option<MembershipChanged> = None;
    for group in c.own().groups() {
        let changed: MembershipChanged = c.own().admin(group.shard(), path, body).await?;
        match &mut first {
            Some(f) => f.changed |= changed.changed,
            None => first = Some(changed),
        }
    }
    first.ok_or_else(|| ApiError::internal("a service without shards"))
}

async fn check_all(State(c): State<Arc<Coordinator>>, headers: HeaderMap) -> Answer {
    let mut started = Vec::new();
    for service in Service::ALL {
        let op = Operation::Check {
            reason: "manual".into(),
        };
        let path = paths::check_path(service.name());
        let answer = operation(
            &c,
            service,
            &ShardQuery { shard: None },
            op,
            &path,
            &headers,
        )
        .await;
        if answer.status() != axum::http::StatusCode::OK {
            return Ok(answer);
        }
        let bytes = axum::body::to_bytes(answer.into_body(), 64 * 1024)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let one: CheckStarted =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
        started.push(one);
    }
    Ok(Json(started).into_response())
}

async fn check(
    State(c): State<Arc<Coordinator>>,
    Path(name): Path<String>,
    Query(q): Query<ShardQuery>,
    headers: HeaderMap,
) -> Answer {
    let service = parse_service(&name)?;
    let op = Operation::Check {
        reason: "manual".into(),
    };
    let path = paths::check_path(service.name());
    Ok(operation(&c, service, &q, op, &path, &headers).await)
}

async fn repair(
    State(c): State<Arc<Coordinator>>,
    Path(name): Path<String>,
    Query(q): Query<ShardQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let service = parse_service(&name)?;
    let req: RepairRequest = if body.is_empty() {
        RepairRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("bad_body", format!("expected {{}} or {{\"node\": 2}}: {e}"))
        })?
    };
    if let Some(node) = req.node {
        check_node_id(node)?;
    }
    let path = paths::repair_path(service.name());
    let op = Operation::Repair { node: req.node };
    Ok(operation(&c, service, &q, op, &path, &headers).await)
}

async fn rebuild(
    State(c): State<Arc<Coordinator>>,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<ShardQuery>,
    headers: HeaderMap,
) -> Answer {
    let service = parse_service(&name)?;
    let node = parse_node_id(&id)?;
    let path = paths::rebuild_path(service.name(), node);
    let op = Operation::Rebuild { node };
    Ok(operation(&c, service, &q, op, &path, &headers).await)
}

fn parse_node_id(id: &str) -> Result<NodeId, ApiError> {
    let id = id
        .parse::<NodeId>()
        .map_err(|_| ApiError::bad_request("bad_node_id", format!("{id:?} is not a node id")))?;
    check_node_id(id)?;
    Ok(id)
}

/// Starts a check, repair or rebuild on the leader of each shard the call
/// names (`ShardQuery`): directly for this coordinator's own service, else
/// through one of its coordinators. The answer is the first shard's start,
/// the others' in its `also`.
async fn operation(
    c: &Coordinator,
    service: Service,
    q: &ShardQuery,
    op: Operation,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    if service != c.service() {
        let body = match &op {
            Operation::Repair { node } => Some(json!({ "node": node })),
            _ => None,
        };
        let path = format!("{path}{}", q.suffix());
        return forward_to_service(c, service, Method::POST, &path, body, headers).await;
    }
    let shards = match q.shards(c, service) {
        Ok(shards) => shards,
        Err(e) => return e.into_response(),
    };
    let mut first: Option<CheckStarted> = None;
    for shard in shards {
        let started = c
            .own()
            .admin::<_, CheckStarted>(shard, CONSISTENCY_PATH, &op)
            .await;
        match (started, &mut first) {
            (Err(e), _) => return e.into_response(),
            (Ok(started), Some(first)) => first.also.push(started),
            (Ok(started), None) => first = Some(started),
        }
    }
    match first {
        Some(started) => Json(started).into_response(),
        None => ApiError::internal("a service without shards").into_response(),
    }
}

fn check_node_id(id: NodeId) -> Result<(), ApiError> {
    if (1..=u64::from(MAX_NODES)).contains(&id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "bad_node_id",
            format!("node ids are 1..={MAX_NODES}"),
        ))
    }
}

/// Passes a call (a mutating one with the caller's token) to the first
/// coordinator of `service` that answers, and relays its answer.
async fn forward_to_service(
    c: &Coordinator,
    service: Service,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    headers: &HeaderMap,
) -> Response {
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let mut last_error = String::new();
    for coord in c.spec().coordinators(service) {
        match forward(c, method.clone(), &coord.admin, path, body.clone(), auth).await {
            Ok((status, body)) => {
                let status = axum::http::StatusCode::from_u16(status)
                    .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
                return (status, Json(body)).into_response();
            }
            Err(e) => last_error = format!("{}: {e}", coord.admin),
        }
    }
    ApiError::unavailable(format!(
        "no coordinator of {service} answered ({last_error})"
    ))
    .into_response()
}

async fn forward(
    c: &Coordinator,
    method: Method,
    admin_addr: &str,
    path: &str,
    body: Option<serde_json::Value>,
    auth: Option<&str>,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let mutating = method != Method::GET;
    let mut req = c.admin_client().request(method, admin_addr, path);
    // A forwarded membership change waits for a learner to catch up.
    if !mutating {
        req = req.timeout(FORWARD_TIMEOUT);
    }
    if let Some(auth) = auth {
        req = req.header(axum::http::header::AUTHORIZATION, auth);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, body))
}
