//! The node's own HTTP handlers: Raft RPCs, coordinator writes, reads and
//! checkouts, readiness and status. They work through the node's state
//! (`node::state`); the consistency and membership handlers live with their
//! subsystems (`consistency::api`, `membership`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cart_common::spec::NodeId;
use cart_common::ApiError;
use openraft::error::{CheckIsLeaderError, ForwardToLeader, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::BasicNode;
use serde::de::DeserializeOwned;

use super::shards::{Node, ShardMember};
use super::state::Member;
use crate::api::{CheckoutRequest, NodeStatus, NotLeader, ReadIndex, ReadRequest, WriteRequest};
use crate::domain::{self, Outcome};
use crate::raft::handover::HandoverRequest;
use crate::raft::proposer::ProposeError;
use crate::raft::read_index::{CatchUpError, ReadIndexQuery};
use crate::raft::TypeConfig;

/// A Raft RPC's JSON body. Decoded straight from the bytes: axum's `Json`
/// tracks the path of every field it decodes, which costs a catch-up append
/// of hundreds of entries a good part of its decoding time. A bad body is a
/// JSON 400.
pub(super) struct RaftRpc<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for RaftRpc<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        serde_json::from_slice(&bytes).map(RaftRpc).map_err(|e| {
            ApiError::bad_request("invalid_body", format!("not a Raft RPC: {e}")).into_response()
        })
    }
}

pub(super) async fn append(
    ShardMember(n): ShardMember,
    RaftRpc(req): RaftRpc<AppendEntriesRequest<TypeConfig>>,
) -> impl IntoResponse {
    Json(n.raft().append_entries(req).await)
}

pub(super) async fn vote(
    ShardMember(n): ShardMember,
    RaftRpc(req): RaftRpc<VoteRequest<NodeId>>,
) -> Response {
    if let Some(refused) = n.refuse_vote(&req) {
        return Json(Ok::<_, RaftError<NodeId>>(refused)).into_response();
    }
    Json(n.raft().vote(req).await).into_response()
}

pub(super) async fn snapshot(
    ShardMember(n): ShardMember,
    RaftRpc(req): RaftRpc<InstallSnapshotRequest<TypeConfig>>,
) -> impl IntoResponse {
    Json(n.raft().install_snapshot(req).await)
}

/// A leader handing its leadership over asks this follower to campaign,
/// or to hold its campaigns (`raft::handover`).
pub(super) async fn handover(
    ShardMember(n): ShardMember,
    RaftRpc(req): RaftRpc<HandoverRequest>,
) -> Response {
    n.handover().follow(req);
    Json(serde_json::json!({ "following": true })).into_response()
}

/// The 421 that names the leader to ask instead.
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

pub(super) async fn write(ShardMember(n): ShardMember, Json(req): Json<WriteRequest>) -> Response {
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
        _ = n.storage_failing() => {
            return ApiError::unavailable("this node's storage is failing").into_response();
        }
        proposed = n.propose(&req.key, req.cmd) => proposed,
    };
    match proposed {
        Ok(outcome) => answer(outcome),
        Err(e) => propose_error(e),
    }
}

/// 421 to the leader, 429 overloaded, or 503.
pub(crate) fn propose_error(e: ProposeError) -> Response {
    match e {
        ProposeError::NotLeader(f) => not_leader(f),
        ProposeError::Overloaded => ApiError::overloaded().into_response(),
        ProposeError::Unavailable(e) => ApiError::unavailable(e).into_response(),
    }
}

pub(super) async fn checkout(
    ShardMember(n): ShardMember,
    Json(req): Json<CheckoutRequest>,
) -> Response {
    let Some(sagas) = n.sagas() else {
        return ApiError::bad_request("wrong_service", "only order nodes check out")
            .into_response();
    };
    if req.key.is_empty() {
        return ApiError::bad_request("missing_request_id", "checkouts need a request id")
            .into_response();
    }
    match sagas.checkout(&req.key, &req.order_id).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => propose_error(e),
    }
}

/// A linearizable read: at the leader after it confirms its leadership (a
/// round shared with the reads that arrived before it, `raft::read_barrier`); at
/// a follower (with `raft.follower_reads`) after it has caught up with the
/// leader's read index (`raft::read_index`); else 421 to the leader.
pub(super) async fn read(ShardMember(n): ShardMember, Json(req): Json<ReadRequest>) -> Response {
    if let Some(why) = n.read_refusal() {
        return ApiError::unavailable(why).into_response();
    }
    match n.reads().confirm().await {
        Ok(_) => decided_query(&n, &req, None).await,
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            match (n.follower_reads(), &f.leader_node) {
                (Some(reads), Some(leader)) => {
                    let hurry = n.awaits_decision(&req.query);
                    match reads.catch_up(n.raft(), &leader.addr, hurry).await {
                        Ok(()) => decided_query(&n, &req, Some(&leader.addr)).await,
                        Err(CatchUpError::NotLeader(hint)) => {
                            (StatusCode::MISDIRECTED_REQUEST, Json(hint)).into_response()
                        }
                        Err(CatchUpError::Unavailable(e)) => {
                            ApiError::unavailable(format!("cannot learn the read index: {e}"))
                                .into_response()
                        }
                        Err(CatchUpError::Behind { index }) => ApiError::unavailable(format!(
                            "this replica has not applied the leader's read index {index} in time"
                        ))
                        .into_response(),
                    }
                }
                _ => not_leader(f),
            }
        }
        Err(e) => ApiError::unavailable(format!("cannot confirm leadership: {e}")).into_response(),
    }
}

/// The leader's read index for a follower's read, after confirming with a
/// majority that it still leads (a round shared with the reads that arrived
/// before it); 421 (with the leader it knows) elsewhere.
pub(super) async fn read_index(
    ShardMember(n): ShardMember,
    q: Result<Query<ReadIndexQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return ApiError::bad_request("bad_query", "hurry=true or nothing").into_response();
    };
    if let Some(why) = n.read_refusal() {
        return ApiError::unavailable(why).into_response();
    }
    if q.hurry {
        n.hurry_lazy_writes().await;
    }
    match n.reads().follower_read_index().await {
        Ok(read) => Json(ReadIndex {
            index: read.map(|id| id.index),
        })
        .into_response(),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => not_leader(f),
        Err(e) => ApiError::unavailable(format!("cannot confirm leadership: {e}")).into_response(),
    }
}

pub(super) async fn local_read(
    ShardMember(n): ShardMember,
    Json(req): Json<ReadRequest>,
) -> Response {
    local_query(&n, &req)
}

/// `local_query` after a linearizable read's round (at a follower, with
/// the `leader` asked); an order's read waits first for its checkout's
/// decision (`saga::decided_read`).
async fn decided_query(n: &Member, req: &ReadRequest, leader: Option<&str>) -> Response {
    if let domain::Query::FindOrder { order_id } = &req.query {
        n.wait_for_decision(order_id, leader).await;
    }
    local_query(n, req)
}

fn local_query(n: &Member, req: &ReadRequest) -> Response {
    match n.query_local(&req.query) {
        Ok(outcome) => answer(outcome),
        Err(e) => storage_failure(e),
    }
}

/// Ready once every shard's group has a leader and this node's members
/// are healthy; `leader` names shard 0's (`leaders` every shard's).
pub(super) async fn ready(State(node): State<Arc<Node>>) -> Response {
    let mut leaders = Vec::new();
    for n in node.members() {
        let shard = n.shard();
        if !n.storage_healthy() {
            return ApiError::unavailable(format!(
                "this node's storage of shard {shard} is failing"
            ))
            .into_response();
        }
        if n.cut_off() {
            return ApiError::unavailable(format!(
                "this leader of shard {shard} is cut off from a majority of its group"
            ))
            .into_response();
        }
        match n.leader() {
            Some(l) => leaders.push(l),
            None => {
                return ApiError::unavailable(format!("no leader of shard {shard} known yet"))
                    .into_response()
            }
        }
    }
    Json(serde_json::json!({ "ready": true, "leader": leaders.first(), "leaders": leaders }))
        .into_response()
}

/// The status of the shard the request names (shard 0 without one), with
/// every shard's group in brief.
pub(super) async fn status(
    State(node): State<Arc<Node>>,
    ShardMember(n): ShardMember,
) -> Json<NodeStatus> {
    // May wait on the storage (or on another probe reading it): never on a
    // runtime worker, which Raft RPCs need.
    Json(tokio::task::block_in_place(|| {
        let mut status = n.status();
        status.shards = node.members().iter().map(|m| m.role()).collect();
        status
    }))
}
