//! The node's consistency endpoints. Cluster-internal ones (digests, rows,
//! repairs, starting an operation, wiping) require the internal secret; the
//! fault-injection hook exists only on a node started with
//! `--fault-injection` and requires the admin token.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cart_common::admin::CheckStarted;
use cart_common::ApiError;
use serde::{Deserialize, Serialize};

use super::wire::{LeavesRequest, Operation, RowsRequest};
use crate::domain::Table;
use crate::node::http::propose_error;
use crate::node::shards::ShardMember;

pub(crate) async fn digest(ShardMember(n): ShardMember, Path(check_id): Path<String>) -> Response {
    Json(n.replica().summary(&check_id)).into_response()
}

pub(crate) async fn leaves(
    ShardMember(n): ShardMember,
    Path(check_id): Path<String>,
    Json(req): Json<LeavesRequest>,
) -> Response {
    match n.replica().leaves(&check_id, &req.buckets) {
        Some(leaves) => Json(leaves).into_response(),
        None => gone(&check_id),
    }
}

pub(crate) async fn rows(
    ShardMember(n): ShardMember,
    Path(check_id): Path<String>,
    Json(req): Json<RowsRequest>,
) -> Response {
    let rows = tokio::task::spawn_blocking(move || n.replica().rows(&check_id, &req.leaves)).await;
    match rows {
        Ok(Ok(Some(rows))) => Json(rows).into_response(),
        Ok(Ok(None)) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_check", "no snapshot").into_response()
        }
        Ok(Err(e)) => ApiError::unavailable(format!("reading the snapshot: {e}")).into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

fn gone(check_id: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_check",
        format!("no digest of check {check_id:?} here"),
    )
    .into_response()
}

pub(crate) async fn repaired(
    ShardMember(n): ShardMember,
    Path(check_id): Path<String>,
) -> Response {
    Json(n.replica().repaired(&check_id)).into_response()
}

/// Starts a check, repair or rebuild on the leader.
pub(crate) async fn start(ShardMember(n): ShardMember, Json(op): Json<Operation>) -> Response {
    match n.start_check(op) {
        Ok(check_id) => Json(CheckStarted {
            service: n.service().to_string(),
            check_id,
            shard: n.shard(),
            also: Vec::new(),
        })
        .into_response(),
        Err(e) => propose_error(e),
    }
}

/// Wipes this node's data and restarts it empty, in the same process (same
/// pid), never forming a group on its own (`--join`); the leader then adds
/// it back. Only the checker calls this, after removing the node.
pub(crate) async fn wipe(ShardMember(n): ShardMember) -> Response {
    tracing::warn!(dir = %n.data_dir().display(), "wiping this node's data and restarting empty");
    tokio::spawn(async move {
        // Let the answer go out first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        n.wipe().await;
        let mut args: Vec<String> = std::env::args().skip(1).collect();
        if !args.iter().any(|a| a == "--join") {
            args.push("--join".into());
        }
        let exe = std::env::current_exe().unwrap_or_else(|_| "cart".into());
        let err = std::process::Command::new(exe).args(args).exec();
        tracing::error!(error = %err, "restarting after wipe failed");
        std::process::exit(1);
    });
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "wiping": true })),
    )
        .into_response()
}

/// Body of the fault-injection call.
#[derive(Serialize, Deserialize)]
pub struct Corrupt {
    pub table: String,
    pub key: String,
    /// The new stored value; absent: delete the row.
    #[serde(default)]
    pub value: Option<String>,
}

/// Changes or deletes one stored row on this replica only, directly in its
/// store (no Raft, no bookkeeping): what disk corruption would do.
pub(crate) async fn corrupt(
    ShardMember(n): ShardMember,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !n.fault_injection() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "fault_injection_disabled",
            "this node was not started with --fault-injection",
        )
        .into_response();
    }
    if !n.is_admin(&headers) {
        return ApiError::unauthorized().into_response();
    }
    let req: Corrupt = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request("bad_body", e.to_string()).into_response(),
    };
    let Some(table) = Table::from_name(&req.table) else {
        return ApiError::bad_request("unknown_table", format!("no table {:?}", req.table))
            .into_response();
    };
    let value = req.value.as_deref().map(str::as_bytes);
    match n.corrupt(table, &req.key, value) {
        Ok(()) => {
            tracing::warn!(table = %req.table, key = %req.key, "fault injected: row changed in the store");
            Json(serde_json::json!({ "corrupted": true })).into_response()
        }
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}
