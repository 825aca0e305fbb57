//! Every path the cluster's processes serve to each other and to operators,
//! defined once: the servers route on these, the clients call them, and the
//! quiet-route list of `http::track_requests` names them. The public cart
//! API's routes live with their handlers (`coordinator::routes`) and in
//! docs/api.md.

// Served by every process, without a secret.

/// A node's status (role, term, log indexes, storage).
pub const STATUS_PATH: &str = "/status";
/// Readiness: 200 once the process serves (a node: its group has a leader).
pub const READY_PATH: &str = "/ready";
/// Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";

// Raft RPCs between the nodes of a group (internal secret).

pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";
/// Leader only: confirm leadership with a majority and name the index a
/// follower must have applied to serve a linearizable read.
pub const READ_INDEX_PATH: &str = "/raft/read_index";
/// A leader handing its shard's leadership over asks its followers: the
/// preferred node campaigns, the others hold theirs (services::raft::handover).
pub const HANDOVER_PATH: &str = "/raft/handover";

// A node's internal API (internal secret): coordinators and the checkout
// saga call these; a coordinator's admin port serves WRITE and READ too, for
// other services' coordinators (`cross_service = "coordinator"`).

pub const WRITE_PATH: &str = "/internal/write";
/// Linearizable read: the leader answers after confirming its leadership;
/// with `raft.follower_reads`, a follower after catching up with the
/// leader's read index (`READ_INDEX_PATH`); 421 otherwise.
pub const READ_PATH: &str = "/internal/read";
/// This replica's own state, without any consensus round: for tests and
/// operators checking what one replica holds.
pub const LOCAL_READ_PATH: &str = "/internal/local_read";
/// Checkout, answered by the order group's leader once the saga has ended,
/// or after the checkout wait with the transaction to follow; 503 when it
/// could not begin one.
pub const CHECKOUT_PATH: &str = "/internal/checkout";
/// Membership changes, answered by the leader only (421 elsewhere).
pub const ADD_MEMBER_PATH: &str = "/internal/members/add";
pub const REMOVE_MEMBER_PATH: &str = "/internal/members/remove";
/// Leader only: start a check, repair or rebuild.
pub const CONSISTENCY_PATH: &str = "/internal/consistency";
/// A replica's digest for a check: `{DIGEST_PATH}/{check_id}`, with
/// `/leaves` and `/rows` below it.
pub const DIGEST_PATH: &str = "/internal/digest";
/// How many rows a replica overwrote for a repair: `{REPAIRED_PATH}/{check_id}`.
pub const REPAIRED_PATH: &str = "/internal/repaired";
/// Wipe this replica's data and restart empty (a rebuild's second step).
pub const WIPE_PATH: &str = "/internal/wipe";
/// Nodes started with `--fault-injection` only, with the admin token:
/// corrupt rows on purpose (docs/consistency.md).
pub const FAULT_PATH: &str = "/fault/corrupt";

pub const DIGEST_ROUTE: &str = "/internal/digest/{check_id}";
pub const DIGEST_LEAVES_ROUTE: &str = "/internal/digest/{check_id}/leaves";
pub const DIGEST_ROWS_ROUTE: &str = "/internal/digest/{check_id}/rows";
pub const REPAIRED_ROUTE: &str = "/internal/repaired/{check_id}";

pub fn digest_path(check_id: &str) -> String {
    format!("{DIGEST_PATH}/{check_id}")
}

pub fn digest_leaves_path(check_id: &str) -> String {
    format!("{DIGEST_PATH}/{check_id}/leaves")
}

pub fn digest_rows_path(check_id: &str) -> String {
    format!("{DIGEST_PATH}/{check_id}/rows")
}

pub fn repaired_path(check_id: &str) -> String {
    format!("{REPAIRED_PATH}/{check_id}")
}

// The coordinators' admin API (docs/admin-api.md), on every coordinator's
// admin port; the mutating ones need the admin token.

/// The whole cluster's view.
pub const CLUSTER_PATH: &str = "/admin/cluster";
/// One service's view: `/admin/services/{service}`.
pub const SERVICES_PATH: &str = "/admin/services";
pub const EVENTS_PATH: &str = "/admin/events";
/// Check every service now (token required).
pub const CHECK_ALL_PATH: &str = "/admin/check";
/// The events this coordinator observed itself, for its peers to merge.
pub const OWN_EVENTS_PATH: &str = "/admin/events/own";

pub const SERVICE_ROUTE: &str = "/admin/services/{service}";
pub const NODES_ROUTE: &str = "/admin/services/{service}/nodes";
pub const NODE_ROUTE: &str = "/admin/services/{service}/nodes/{id}";
pub const CHECK_ROUTE: &str = "/admin/services/{service}/check";
pub const REPAIR_ROUTE: &str = "/admin/services/{service}/repair";
pub const REBUILD_ROUTE: &str = "/admin/services/{service}/nodes/{id}/rebuild";
/// One of the latest check reports, by the id its start answered.
pub const CHECK_REPORT_ROUTE: &str = "/admin/services/{service}/checks/{check_id}";

/// A service's view.
pub fn service_path(service: &str) -> String {
    format!("{SERVICES_PATH}/{service}")
}

/// A service's node list (POST adds a node).
pub fn nodes_path(service: &str) -> String {
    format!("{SERVICES_PATH}/{service}/nodes")
}

/// One member of a service (DELETE removes it).
pub fn node_path(service: &str, id: u64) -> String {
    format!("{SERVICES_PATH}/{service}/nodes/{id}")
}

pub fn check_path(service: &str) -> String {
    format!("{SERVICES_PATH}/{service}/check")
}

/// The report of the check (or repair, or rebuild) `check_id` started.
pub fn check_report_path(service: &str, check_id: &str) -> String {
    format!("{SERVICES_PATH}/{service}/checks/{check_id}")
}

pub fn repair_path(service: &str) -> String {
    format!("{SERVICES_PATH}/{service}/repair")
}

pub fn rebuild_path(service: &str, id: u64) -> String {
    format!("{SERVICES_PATH}/{service}/nodes/{id}/rebuild")
}

/// Routes served all the time for housekeeping, never traced: probes,
/// scrapes, event sync and Raft heartbeats would bury requests in noise.
pub const QUIET_ROUTES: &[&str] = &[
    STATUS_PATH,
    READY_PATH,
    METRICS_PATH,
    OWN_EVENTS_PATH,
    APPEND_PATH,
    VOTE_PATH,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_the_route_patterns() {
        let fill = |route: &str| {
            route
                .replace("{check_id}", "c1")
                .replace("{service}", "stock")
                .replace("{id}", "4")
        };
        assert_eq!(digest_path("c1"), fill(DIGEST_ROUTE));
        assert_eq!(digest_leaves_path("c1"), fill(DIGEST_LEAVES_ROUTE));
        assert_eq!(digest_rows_path("c1"), fill(DIGEST_ROWS_ROUTE));
        assert_eq!(repaired_path("c1"), fill(REPAIRED_ROUTE));
        assert_eq!(service_path("stock"), fill(SERVICE_ROUTE));
        assert_eq!(nodes_path("stock"), fill(NODES_ROUTE));
        assert_eq!(node_path("stock", 4), fill(NODE_ROUTE));
        assert_eq!(check_path("stock"), fill(CHECK_ROUTE));
        assert_eq!(repair_path("stock"), fill(REPAIR_ROUTE));
        assert_eq!(rebuild_path("stock", 4), fill(REBUILD_ROUTE));
    }
}
