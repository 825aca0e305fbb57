//! The wire types of consistency operations: what the coordinators' admin
//! API asks a leader to do, and what a leader asks a replica for while it
//! descends the digest tree. Paths are in `cart_common::paths`.

use serde::{Deserialize, Serialize};

use crate::raft::NodeId;

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    Check {
        reason: String,
    },
    /// Repair one node, or every mismatching one.
    Repair {
        node: Option<NodeId>,
    },
    Rebuild {
        node: NodeId,
    },
}

/// The leaves under these level-1 buckets.
#[derive(Serialize, Deserialize)]
pub struct LeavesRequest {
    pub buckets: Vec<u8>,
}

/// The rows (key, hash, value) in these leaves.
#[derive(Serialize, Deserialize)]
pub struct RowsRequest {
    pub leaves: Vec<u16>,
}
