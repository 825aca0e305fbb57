//! Waiting on a started cluster: every process ready, every coordinator
//! settled, a leader elected, or any condition polled until a deadline;
//! and the blocking HTTP the waits use (`http_get`, over the one internal
//! client).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use cart_common::admin::{NodeHealth, ServiceView};
use cart_common::http::InternalClient;
use cart_common::paths::{self, READY_PATH, STATUS_PATH};
use cart_common::shard::Shard;
use cart_common::spec::NodeId;
use cart_common::Service;
use cart_services::api::NodeStatus;

use super::{LocalCluster, Role};

/// How long one readiness or status probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

impl LocalCluster {
    /// Waits until every running process answers its readiness endpoint
    /// (nodes: their group has a leader).
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let roles: Vec<Role> = self
            .procs
            .iter()
            .filter(|(_, p)| p.child.is_some())
            .map(|(r, _)| *r)
            .collect();
        for role in roles {
            let addr = self.admin_addr(role);
            loop {
                if self.has_exited(role) {
                    let log = self.log_path(role);
                    let said = std::fs::read_to_string(&log).unwrap_or_default();
                    bail!("{}", exited_during_start(&role.name(), &said, &log));
                }
                let path = match role {
                    Role::Prometheus => crate::prometheus::READY_PATH,
                    _ => READY_PATH,
                };
                if matches!(http_get(&addr, path, PROBE_TIMEOUT), Ok((200, _))) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} not ready at {addr}; see {}",
                        role.name(),
                        self.log_path(role).display()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// A node's status (of shard 0, for a sharded service).
    pub fn node_status(&self, service: Service, id: NodeId) -> Option<NodeStatus> {
        self.shard_status(service, id, Shard::default())
    }

    /// A node's status of one shard's group.
    pub fn shard_status(&self, service: Service, id: NodeId, shard: Shard) -> Option<NodeStatus> {
        let addr = self.spec.node_addr(service, id)?;
        let (code, body) = shard_get(&addr, STATUS_PATH, PROBE_TIMEOUT, Some(shard)).ok()?;
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// The leader as a majority of reachable nodes of the spec report it
    /// (of shard 0, for a sharded service).
    pub fn leader(&self, service: Service) -> Option<NodeId> {
        self.shard_leader(service, Shard::default())
    }

    /// The leader of one shard's group as a majority of the spec's nodes
    /// report it.
    pub fn shard_leader(&self, service: Service, shard: Shard) -> Option<NodeId> {
        let nodes = self.spec.nodes(service);
        let mut votes: BTreeMap<NodeId, usize> = BTreeMap::new();
        for n in &nodes {
            if let Some(l) = self
                .shard_status(service, n.id, shard)
                .and_then(|s| s.leader)
            {
                *votes.entry(l).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .find(|(_, v)| *v > nodes.len() / 2)
            .map(|(l, _)| l)
    }

    /// Polls until `pred` holds, or fails after `timeout`.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Self) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = pred(self) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every coordinator of every service of this cluster
    /// reports a leader and every node up and holding the group's log (it
    /// has applied an entry), every node it started included: the state tests and tools start
    /// from once `wait_ready` has passed (coordinators probe on their own
    /// schedule, so ready processes may not have seen each other yet).
    pub fn wait_settled(&self, timeout: Duration) -> anyhow::Result<()> {
        for &service in &self.services {
            for c in self.spec.coordinators(service) {
                let path = paths::service_path(service.name());
                self.wait_until(
                    &format!("{} to see a leader and every node up", c.admin),
                    timeout,
                    |_| {
                        let (code, body) = http_get(&c.admin, &path, PROBE_TIMEOUT).ok()?;
                        let view: ServiceView = serde_json::from_str(&body).ok()?;
                        let started = self.procs.keys().filter_map(|role| match role {
                            Role::Node(s, id) if *s == service => Some(*id),
                            _ => None,
                        });
                        let settled = code == 200
                            && view.leader.is_some()
                            && view
                                .nodes
                                .iter()
                                .all(|n| n.status == NodeHealth::Up && n.applied_index.is_some())
                            && started
                                .into_iter()
                                .all(|id| view.nodes.iter().any(|n| n.id == id));
                        settled.then_some(())
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// The harness's HTTP client and the runtime it runs on: the harness is
/// called from plain threads (the launcher) and from async tests alike, so
/// its calls run on a runtime of their own and the caller waits for the
/// answer.
static PROBE: LazyLock<Option<(tokio::runtime::Runtime, InternalClient)>> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("harness-http")
        .enable_all()
        .build()
        .ok()?;
    let client = InternalClient::new(Duration::from_secs(1), Duration::from_secs(60));
    Some((runtime, client))
});

/// A blocking GET of `path` at `addr`, for callers without a runtime of
/// their own: status and body. Any status is an answer; `Err` only when
/// none came within `timeout`.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    shard_get(addr, path, timeout, None)
}

/// `http_get` of a node's route for one shard (the `cart-shard` header).
fn shard_get(
    addr: &str,
    path: &str,
    timeout: Duration,
    shard: Option<Shard>,
) -> anyhow::Result<(u16, String)> {
    let (runtime, client) = PROBE
        .as_ref()
        .ok_or_else(|| anyhow!("no runtime for the harness's HTTP calls"))?;
    let request = match shard {
        Some(shard) => client.for_shard(shard).get(addr, path),
        None => client.get(addr, path),
    }
    .timeout(timeout);
    let (tx, rx) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let answer = async {
            let response = InternalClient::send(request).await?;
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            Ok::<_, cart_common::http::CallError>((status, body))
        };
        let _ = tx.send(answer.await);
    });
    let answer = rx
        .recv()
        .map_err(|_| anyhow!("GET {path} at {addr}: the harness's runtime stopped"))?;
    answer.map_err(|e| anyhow!("GET {path} at {addr}: {e}"))
}

/// How `cart` ends a failed command on stderr (`main`), so that its last
/// error can be found in a process's log.
pub const ERROR_PREFIX: &str = "Error: ";

/// What to say when `name` exited while starting, from its log: its last
/// error, a hint where the error is a usual one, and where the log is.
fn exited_during_start(name: &str, log_text: &str, log: &Path) -> String {
    let last_error = log_text.lines().rev().find_map(|line| {
        line.strip_prefix(ERROR_PREFIX)
            .or_else(|| line.split_once(" ERROR ").map(|(_, rest)| rest))
    });
    let Some(error) = last_error else {
        return format!("{name} exited while starting; see {}", log.display());
    };
    let hint = if error.contains("Address already in use") {
        "\n  hint: another program holds that port (an earlier `cart up` still running?); \
         stop it, or move the cluster with `base_port` in the spec"
    } else if error.contains("Permission denied") {
        "\n  hint: the data directory (`data_dir` in the spec) must be writable by this user"
    } else {
        ""
    };
    format!(
        "{name} exited while starting: {}{hint}\n  log: {}",
        error.trim(),
        log.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_exited_is_reported_with_its_last_error_and_a_hint() {
        let log = "2026-12-01T23:39:55Z  INFO gateway serving\n\
                   Error: binding 127.0.0.1:8000: Address already in use (os error 98)\n";
        let said = exited_during_start("gateway", log, Path::new("data/logs/gateway.log"));
        assert!(
            said.starts_with(
                "gateway exited while starting: binding 127.0.0.1:8000: Address already in use"
            ),
            "{said}"
        );
        assert!(
            said.contains("hint: another program holds that port"),
            "{said}"
        );
        assert!(said.ends_with("log: data/logs/gateway.log"), "{said}");

        let traced = "2026-12-01T23:39:55Z ERROR cart_services::node: storage: disk full\n";
        let said = exited_during_start("stock-node-1", traced, Path::new("l"));
        assert!(
            said.contains("starting: cart_services::node: storage: disk full"),
            "{said}"
        );
        assert!(!said.contains("hint"), "{said}");

        let said = exited_during_start("stock-node-1", "nothing\n", Path::new("l"));
        assert_eq!(said, "stock-node-1 exited while starting; see l");
    }
}
