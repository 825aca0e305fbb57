//! The node-down protocol as a coordinator runs it for its own service:
//! probe every member node's `/status` (backing off on down ones), read the
//! leader's replication report, move each node through `node_state`, record
//! events and metrics, and tell the group client which nodes to avoid.
//!
//! The members come from the group's own membership (the leader's status),
//! so nodes added at run time are watched and removed ones are forgotten;
//! the spec's list is only the starting point.
//!
//! This module owns the watcher's state and what others ask of it (routes,
//! views); a probe round is in `probe`, reading the leader's report
//! (membership, replication, checks) in `leader_report`, and moving nodes
//! through their states, with events and metrics, in `transitions`.

mod leader_report;
mod probe;
mod transitions;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cart_common::admin::{CheckReport, NodeHealth, NodeView, ShardRole, ShardView};
use cart_common::http::InternalClient;
use cart_common::shard::Shard;
use cart_common::spec::{HealthSection, NodeId};
use cart_common::{ClusterSpec, Service};
use cart_services::api::NodeStatus;
use cart_services::client::RouteFilter;

use crate::events::EventLog;
use crate::metrics::METRICS;
use crate::node_state::DownSource;
use cart_common::metrics::precreate;

pub struct Health {
    service: Service,
    cfg: HealthSection,
    client: InternalClient,
    events: Arc<EventLog>,
    state: RwLock<State>,
    started: Instant,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<NodeId, Tracked>,
    /// (leader, term) as last observed.
    leader: Option<(NodeId, u64)>,
    /// The same for every other shard of a sharded service.
    shard_leaders: BTreeMap<Shard, (NodeId, u64)>,
    /// Term of the last saga recovery recorded as an event.
    recovery_term: Option<u64>,
    /// The group's latest consistency check, as its leader reports it.
    last_check: Option<CheckReport>,
    /// Ids of the reports already turned into events, newest last.
    seen_checks: VecDeque<String>,
    /// When the last clean check finished (ms since the epoch).
    last_clean_ms: Option<u64>,
}

struct Tracked {
    addr: String,
    status: NodeHealth,
    down_reason: Option<DownSource>,
    failures: u32,
    last_ok: Option<Instant>,
    next_probe: Instant,
    backoff: Duration,
    last_status: Option<NodeStatus>,
    /// From the leader's report: entries behind, seconds behind, and when
    /// the leader last heard from it.
    lag: Option<(u64, f64)>,
    leader_contact: Option<Instant>,
    leader_cannot_reach: bool,
}

impl Tracked {
    fn new(addr: String) -> Self {
        Self {
            addr,
            status: NodeHealth::Unknown,
            down_reason: None,
            failures: 0,
            last_ok: None,
            next_probe: Instant::now(),
            backoff: Duration::ZERO,
            last_status: None,
            lag: None,
            leader_contact: None,
            leader_cannot_reach: false,
        }
    }
}

impl RouteFilter for Health {
    fn routable(&self) -> Vec<String> {
        Health::routable(self)
    }

    fn is_down(&self, addr: &str) -> bool {
        Health::is_down(self, addr)
    }
}

impl Health {
    pub fn new(spec: &ClusterSpec, service: Service, events: Arc<EventLog>) -> Self {
        let cfg = spec.health.clone();
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let nodes = spec
            .nodes(service)
            .into_iter()
            .map(|n| (n.id, Tracked::new(n.addr)))
            .collect();
        for n in spec.nodes(service) {
            init_node_series(service, n.id);
        }
        precreate(&METRICS.leader_changes, [[service.name()]]);
        precreate(&METRICS.detection, [[service.name()]]);
        Self {
            service,
            client: InternalClient::new(timeout, timeout),
            cfg,
            events,
            state: RwLock::new(State {
                nodes,
                leader: None,
                shard_leaders: BTreeMap::new(),
                recovery_term: None,
                last_check: None,
                seen_checks: VecDeque::new(),
                last_clean_ms: None,
            }),
            started: Instant::now(),
        }
    }

    /// Addresses of nodes that may receive requests: every member not
    /// marked down. Empty until the first probe round.
    pub fn routable(&self) -> Vec<String> {
        self.read()
            .nodes
            .values()
            .filter(|t| t.status != NodeHealth::Down)
            .map(|t| t.addr.clone())
            .collect()
    }

    pub fn is_down(&self, addr: &str) -> bool {
        self.read()
            .nodes
            .values()
            .any(|t| t.addr == addr && t.status == NodeHealth::Down)
    }

    pub fn leader(&self) -> Option<(NodeId, u64)> {
        self.read().leader
    }

    pub fn last_check(&self) -> Option<CheckReport> {
        self.read().last_check.clone()
    }

    /// Starts watching a node (a member just added), before the leader's
    /// membership report would name it.
    pub fn watch(&self, id: NodeId, addr: String) {
        let mut state = self.write();
        state.nodes.entry(id).or_insert_with(|| {
            init_node_series(self.service, id);
            Tracked::new(addr)
        });
    }

    pub fn node_views(&self) -> Vec<NodeView> {
        let state = self.read();
        let leader = state.leader.map(|(l, _)| l);
        state
            .nodes
            .iter()
            .map(|(id, t)| {
                let s = t.last_status.as_ref();
                let is_leader = leader == Some(*id) && t.status != NodeHealth::Down;
                NodeView {
                    id: *id,
                    addr: t.addr.clone(),
                    status: t.status,
                    down_reason: t.down_reason.map(|d| d.as_str().to_string()),
                    role: s.map(|s| s.state.clone()),
                    voter: s.is_some_and(|s| s.voters.contains(id)),
                    term: s.map(|s| s.term),
                    commit_index: s.and_then(|s| s.committed),
                    applied_index: s.and_then(|s| s.last_applied),
                    last_log_index: s.and_then(|s| s.last_log_index),
                    lag_entries: if is_leader {
                        Some(0)
                    } else {
                        t.lag.map(|l| l.0)
                    },
                    lag_seconds: if is_leader {
                        Some(0.0)
                    } else {
                        t.lag.map(|l| l.1)
                    },
                    last_seen_ms_ago: t.last_ok.map(|i| i.elapsed().as_millis() as u64),
                    storage: s.map(|s| s.storage.clone()),
                    leads: s
                        .filter(|_| t.status != NodeHealth::Down)
                        .map(|s| {
                            s.shards
                                .iter()
                                .filter(|r| r.leader == Some(*id) && r.state == "Leader")
                                .map(|r| r.shard)
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Every shard's leader: of the shard roles the nodes not down last
    /// reported, the leader named in the highest term.
    pub fn shard_views(&self, shards: u16) -> Vec<ShardView> {
        let state = self.read();
        let roles: Vec<&ShardRole> = state
            .nodes
            .values()
            .filter(|t| t.status != NodeHealth::Down)
            .filter_map(|t| t.last_status.as_ref())
            .flat_map(|s| s.shards.iter())
            .collect();
        Shard::all(shards)
            .map(|shard| {
                let newest = roles
                    .iter()
                    .filter(|r| r.shard == shard && r.leader.is_some())
                    .max_by_key(|r| r.term);
                ShardView {
                    shard,
                    leader: newest.and_then(|r| r.leader),
                    term: newest.map(|r| r.term),
                    last_check: newest.and_then(|r| r.last_check.clone()),
                }
            })
            .collect()
    }

    /// Probes forever, one round per interval.
    pub async fn run(self: Arc<Self>) {
        let interval = Duration::from_millis(self.cfg.interval_ms);
        loop {
            let started = Instant::now();
            self.round().await;
            tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
        }
    }

    /// Sets a node's status directly, for tests of what depends on it.
    #[cfg(test)]
    pub fn set_status(&self, id: NodeId, status: NodeHealth) {
        if let Some(t) = self.write().nodes.get_mut(&id) {
            t.status = status;
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Series operators alert on exist at 0 from the start.
fn init_node_series(service: Service, id: NodeId) {
    let node = id.to_string();
    let labels = [service.name(), node.as_str()];
    for counter in [
        &METRICS.node_down,
        &METRICS.node_up,
        &METRICS.caught_up,
        &METRICS.probe_failures,
    ] {
        precreate(counter, [labels]);
    }
    METRICS.node_is_up.with_label_values(&labels).set(0);
}

/// A removed member's series disappear rather than report it down forever.
fn drop_node_series(service: Service, id: NodeId) {
    let node = id.to_string();
    let labels = [service.name(), node.as_str()];
    let _ = METRICS.node_is_up.remove_label_values(&labels);
    let _ = METRICS.lag_entries.remove_label_values(&labels);
    let _ = METRICS.lag_seconds.remove_label_values(&labels);
}
