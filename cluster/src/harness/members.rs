//! A local cluster's membership on disk: which nodes' processes to start
//! (the spec's, plus those added at run time, minus those removed).

use cart_common::spec::NodeId;
use cart_common::{ClusterSpec, Service};

/// Written into a node's data dir when the node leaves its group, so the
/// launcher does not start it again.
pub const REMOVED_MARKER: &str = "REMOVED";

/// The nodes of `service` to run: the spec's, plus nodes added at run time
/// (they have a data dir), minus nodes removed from the group (marked).
/// The group's membership, persisted in its log, is what counts; this list
/// only decides which processes to start.
pub fn node_ids(spec: &ClusterSpec, service: Service) -> Vec<NodeId> {
    let mut ids: std::collections::BTreeSet<NodeId> =
        spec.nodes(service).into_iter().map(|n| n.id).collect();
    let prefix = format!("{service}-node-");
    if let Ok(entries) = std::fs::read_dir(&spec.cluster.data_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let id = name.strip_prefix(&prefix).and_then(|i| i.parse().ok());
            if let Some(id) = id.filter(|id| spec.node_addr(service, *id).is_some()) {
                ids.insert(id);
            }
        }
    }
    ids.retain(|id| {
        !spec
            .node_data_dir(service, *id)
            .join(REMOVED_MARKER)
            .exists()
    });
    ids.into_iter().collect()
}
