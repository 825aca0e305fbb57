//! A node process's members: one per shard of its service, each its own
//! Raft group with its own log, snapshots, digests and repairs, behind the
//! process's one HTTP server. Internal calls name their shard in the
//! `cart-shard` header (`cart_common::shard`); the `ShardMember` extractor
//! hands a handler the member it names.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use cart_common::shard::Shard;
use cart_common::spec::NodeId;
use cart_common::{ApiError, ClusterSpec, Service};

use super::state::Member;
use super::NodeOptions;

pub(crate) struct Node {
    /// Indexed by shard.
    members: Vec<Arc<Member>>,
}

impl Node {
    /// Opens this node's member of every shard of `service`, shard 0 first.
    pub(super) async fn open(
        spec: &ClusterSpec,
        service: Service,
        id: NodeId,
        addr: String,
        options: NodeOptions,
    ) -> anyhow::Result<Arc<Node>> {
        let mut members = Vec::new();
        for shard in Shard::all(spec.shards(service)) {
            members.push(Member::open(spec, service, id, shard, addr.clone(), options).await?);
        }
        Ok(Arc::new(Node { members }))
    }

    pub(crate) fn members(&self) -> &[Arc<Member>] {
        &self.members
    }

    fn member(&self, shard: Shard) -> Option<&Arc<Member>> {
        self.members.get(shard.index())
    }
}

/// The member of the shard a request names (shard 0 when it names none).
pub(crate) struct ShardMember(pub Arc<Member>);

impl FromRequestParts<Arc<Node>> for ShardMember {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, Response> {
        let shard = Shard::named_in(&parts.headers)
            .map_err(|e| ApiError::bad_request("bad_shard", e).into_response())?
            .unwrap_or_default();
        node.member(shard).cloned().map(ShardMember).ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "unknown_shard",
                format!(
                    "this node hosts shards 0..{} of its service",
                    node.members.len()
                ),
            )
            .into_response()
        })
    }
}
