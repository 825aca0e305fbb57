//! A node process's members: one per shard of its service, each its own
//! Raft group with its own log, snapshots, digests and repairs, behind the
//! process's one HTTP server and over its one log engine (`NodeLog`: every
//! shard's entries in the same segment files, synced together). Internal
//! calls name their shard in the `cart-shard` header
//! (`cart_common::shard`); the `ShardMember` extractor hands a handler the
//! member it names.

use std::path::Path;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use cart_common::shard::Shard;
use cart_common::spec::NodeId;
use cart_common::{ApiError, ClusterSpec, Service};

use super::state::Member;
use super::NodeOptions;
use crate::raft::log_store::NodeLog;

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
        let dir = spec.node_data_dir(service, id);
        let shards = spec.shards(service);
        keep_shard_count(&dir, shards)?;
        let resident = (spec.raft.resident_log_kib as usize).saturating_mul(1024);
        let log = Arc::new(NodeLog::open(&dir, shards, resident)?);
        let mut members = Vec::new();
        for shard in Shard::all(shards) {
            let member = Member::open(spec, service, id, shard, addr.clone(), options, log.clone());
            members.push(member.await?);
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

/// The file in a node's directory that records its service's shard count.
pub(crate) const SHARDS_FILE: &str = "shards";

/// Records the shard count in a new data directory, and refuses to start on
/// one made for another count: keys would map to other shards than the
/// ones holding them (moving keys between shards is not supported). A
/// directory from before shards has none recorded and held one shard.
fn keep_shard_count(dir: &Path, shards: u16) -> anyhow::Result<()> {
    let file = dir.join(SHARDS_FILE);
    let recorded = match std::fs::read_to_string(&file) {
        Ok(text) => Some(text.trim().parse::<u16>().map_err(|e| {
            anyhow::anyhow!(
                "{}: not a shard count ({e}); it holds how many shards this data has",
                file.display()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => anyhow::bail!("reading {}: {e}", file.display()),
    };
    let had_data = !NodeLog::is_new(dir);
    let was = recorded.or(had_data.then_some(1));
    match was {
        Some(was) if was != shards => anyhow::bail!(
            "{} holds data of {was} shard(s) but the spec gives the service {shards}: \
             changing the shard count of existing data is not supported. Start with \
             `shards = {was}`, or with an empty data directory (the data is lost)",
            dir.display()
        ),
        Some(_) if recorded.is_some() => Ok(()),
        _ => {
            std::fs::create_dir_all(dir)?;
            std::fs::write(&file, format!("{shards}\n"))
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_keeps_the_shard_count_it_was_made_with() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("stock-node-1");
        keep_shard_count(&dir, 3).unwrap();
        keep_shard_count(&dir, 3).unwrap();
        let refused = keep_shard_count(&dir, 2).unwrap_err().to_string();
        assert!(refused.contains("data of 3 shard(s)"), "{refused}");
        assert!(refused.contains("`shards = 3`"), "{refused}");
    }

    #[test]
    fn a_data_dir_from_before_shards_held_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("order-node-2");
        std::fs::create_dir_all(dir.join(crate::raft::log_store::LOG_DIR)).unwrap();
        assert!(keep_shard_count(&dir, 3).is_err());
        keep_shard_count(&dir, 1).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(SHARDS_FILE)).unwrap(),
            "1\n"
        );
    }
}
