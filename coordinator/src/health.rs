//! The node-down protocol as a coordinator runs it for its own service:
//! probe every member node's `/status` (backing off on down ones), read the
//! leader's replication report, move each node through `node_state`, record
//! events and metrics, and tell the group client which nodes to avoid.
//!
//! The members come from the group's own membership (the leader's status),
//! so nodes added at run time are watched and removed ones are forgotten;
//! the spec's list is only the starting point.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cart_common::admin::{CheckReport, NodeHealth, NodeView};
use cart_common::http::{CallError, InternalClient};
use cart_common::spec::{HealthSection, NodeId};
use cart_common::{ClusterSpec, Service};
use cart_services::api::{NodeStatus, STATUS_PATH};
use cart_services::client::RouteFilter;
use serde_json::json;

use crate::events::EventLog;
use crate::metrics::METRICS;
use crate::node_state::{self, DownSource, Observation, Rules, Transition};
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
    /// Term of the last saga recovery recorded as an event.
    recovery_term: Option<u64>,
    /// The group's latest consistency check, as its leader reports it.
    last_check: Option<CheckReport>,
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
                recovery_term: None,
                last_check: None,
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

    /// A check report not seen before becomes events: its verdict, and what
    /// its repair did per node.
    fn note_check(&self, state: &mut State, report: &CheckReport) {
        if state.last_check.as_ref().map(|c| &c.check_id) == Some(&report.check_id) {
            return;
        }
        state.last_check = Some(report.clone());
        let service = self.service.name();
        if report.verdict == "clean" {
            state.last_clean_ms = Some(report.finished_ms);
        }
        if let Some(repair) = &report.repair {
            if repair.recheck_verdict.as_deref() == Some("clean") {
                state.last_clean_ms = Some(report.finished_ms);
            }
        }
        let occurrence = format!("check:{}", report.check_id);
        let bad: Vec<String> = report
            .replicas
            .iter()
            .filter(|r| r.status == "mismatch")
            .map(|r| format!("node {} ({} buckets)", r.node, r.mismatching_buckets))
            .collect();
        let (kind, message) = match report.verdict.as_str() {
            "clean" => (
                "check",
                format!(
                    "check {} ({}): all replicas agree",
                    short(&report.check_id),
                    report.reason
                ),
            ),
            "mismatch" => (
                "mismatch",
                format!(
                    "check {} ({}): {} differ from the majority",
                    short(&report.check_id),
                    report.reason,
                    bad.join(", ")
                ),
            ),
            other => (
                "check",
                format!(
                    "check {} ({}): {other}",
                    short(&report.check_id),
                    report.reason
                ),
            ),
        };
        self.events.record(
            service,
            kind,
            None,
            message,
            json!({ "occurrence": occurrence, "check_id": report.check_id, "verdict": report.verdict }),
        );
        if let Some(repair) = &report.repair {
            for n in &repair.nodes {
                self.events.record(
                    service,
                    if n.action == "rebuilt" {
                        "rebuild"
                    } else {
                        "repair"
                    },
                    Some(n.node),
                    format!(
                        "node {} {}: {} (re-check {})",
                        n.node,
                        n.action,
                        n.message,
                        repair.recheck_verdict.as_deref().unwrap_or("not run")
                    ),
                    json!({
                        "occurrence": format!("{occurrence}:{}", n.node),
                        "check_id": report.check_id,
                        "keys_repaired": n.keys_repaired,
                        "buckets": n.buckets,
                    }),
                );
            }
        }
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

    async fn round(&self) {
        let now = Instant::now();
        let due: Vec<(NodeId, String)> = self
            .read()
            .nodes
            .iter()
            .filter(|(_, t)| t.next_probe <= now)
            .map(|(id, t)| (*id, t.addr.clone()))
            .collect();
        let probes = due.iter().map(|(id, addr)| async move {
            let status = self.probe(addr).await;
            (*id, status)
        });
        let results = futures::future::join_all(probes).await;

        let mut state = self.write();
        for (id, result) in results {
            self.record_probe(&mut state, id, result);
        }
        self.follow_leader(&mut state);
        self.apply_transitions(&mut state);
        self.export(&state);
    }

    async fn probe(&self, addr: &str) -> Result<NodeStatus, String> {
        self.client
            .get_json(addr, STATUS_PATH)
            .await
            .map_err(|e| match e {
                CallError::Status { status, .. } => format!("status {status}"),
                other => other.to_string(),
            })
    }

    fn record_probe(&self, state: &mut State, id: NodeId, result: Result<NodeStatus, String>) {
        let Some(t) = state.nodes.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        match result {
            Ok(status) => {
                t.failures = 0;
                t.last_ok = Some(now);
                t.last_status = Some(status);
                t.backoff = Duration::ZERO;
                t.next_probe = now;
            }
            Err(e) => {
                t.failures = t.failures.saturating_add(1);
                METRICS
                    .probe_failures
                    .with_label_values(&[self.service.name(), &id.to_string()])
                    .inc();
                tracing::debug!(service = %self.service, node = id, error = %e, "probe failed");
                if t.status == NodeHealth::Down {
                    // Keep watching a down node, less and less often.
                    let base = Duration::from_millis(self.cfg.interval_ms);
                    let max = Duration::from_millis(self.cfg.max_backoff_ms).max(base);
                    t.backoff = (t.backoff * 2).clamp(base, max);
                    t.next_probe = now + t.backoff;
                } else {
                    t.next_probe = now;
                }
            }
        }
    }

    /// Finds the leader among this round's statuses, records a leader
    /// change, takes its membership and its replication report.
    fn follow_leader(&self, state: &mut State) {
        let fresh = Duration::from_millis(self.cfg.interval_ms.max(self.cfg.timeout_ms) * 2);
        let leader_status = state
            .nodes
            .iter()
            .filter(|(_, t)| t.failures == 0 && t.last_ok.is_some_and(|i| i.elapsed() < fresh))
            .filter_map(|(id, t)| t.last_status.as_ref().map(|s| (*id, s)))
            .filter(|(_, s)| s.state == "Leader")
            .max_by_key(|(_, s)| s.term)
            .map(|(id, s)| (id, s.clone()));
        let Some((leader, status)) = leader_status else {
            return;
        };

        if state.leader != Some((leader, status.term)) {
            let previous = state.leader.map(|(l, _)| l);
            if previous.is_some() {
                METRICS
                    .leader_changes
                    .with_label_values(&[self.service.name()])
                    .inc();
            }
            let message = match previous {
                Some(p) if p != leader => {
                    format!("node {leader} leads term {} (was node {p})", status.term)
                }
                _ => format!("node {leader} leads term {}", status.term),
            };
            self.events.record(
                self.service.name(),
                "leader_change",
                Some(leader),
                message,
                json!({ "term": status.term, "previous": previous }),
            );
            state.leader = Some((leader, status.term));
        }

        if let Some(r) = &status.saga_recovery {
            if state.recovery_term.is_none_or(|t| t < r.term) {
                state.recovery_term = Some(r.term);
                self.events.record(
                    self.service.name(),
                    "saga_recovery",
                    Some(leader),
                    format!(
                        "node {leader} took over {} open checkout(s) as leader of term {}",
                        r.resumed, r.term
                    ),
                    json!({ "term": r.term, "resumed": r.resumed }),
                );
            }
        }

        if let Some(report) = &status.last_check {
            self.note_check(state, report);
        }

        // Membership: the group's log wins over the spec.
        if !status.members.is_empty() {
            for (id, addr) in &status.members {
                state.nodes.entry(*id).or_insert_with(|| {
                    init_node_series(self.service, *id);
                    Tracked::new(addr.clone())
                });
            }
            let members: Vec<NodeId> = status.members.iter().map(|(id, _)| *id).collect();
            let gone: Vec<NodeId> = state
                .nodes
                .keys()
                .filter(|id| !members.contains(id))
                .copied()
                .collect();
            for id in gone {
                state.nodes.remove(&id);
                drop_node_series(self.service, id);
            }
        }

        let now = Instant::now();
        // As long as probes get before they call a node down, so a single
        // slow heartbeat does not.
        let timeout =
            Duration::from_millis(self.cfg.timeout_ms * u64::from(self.cfg.failures_before_down));
        let report = status.replication.clone().unwrap_or_default();
        for (id, t) in state.nodes.iter_mut() {
            if *id == leader {
                t.lag = Some((0, 0.0));
                t.leader_cannot_reach = false;
                continue;
            }
            match report.get(id) {
                Some(p) => {
                    let contact = p
                        .last_contact_ms_ago
                        .map(Duration::from_millis)
                        .and_then(|ago| now.checked_sub(ago));
                    t.leader_contact = contact;
                    t.leader_cannot_reach =
                        p.failing && contact.is_none_or(|c| now.duration_since(c) > timeout);
                    t.lag = Some((p.lag_entries, p.lag_seconds));
                }
                None => {
                    t.leader_cannot_reach = false;
                    t.lag = None;
                }
            }
        }
    }

    fn apply_transitions(&self, state: &mut State) {
        let rules = Rules {
            failures_before_down: self.cfg.failures_before_down,
            caught_up_lag_entries: self.cfg.caught_up_lag_entries,
        };
        let service = self.service.name();
        for (id, t) in state.nodes.iter_mut() {
            let storage_error = t
                .last_status
                .as_ref()
                .filter(|s| t.failures == 0 && !s.storage.healthy)
                .map(|s| s.storage.error.clone().unwrap_or_default());
            let seen = Observation {
                probe_failures: t.failures,
                leader_cannot_reach: t.leader_cannot_reach,
                lag_entries: t.lag.map(|l| l.0),
                storage_failing: storage_error.is_some(),
            };
            let (status, transitions) = node_state::next(t.status, seen, rules);
            if status == NodeHealth::Down && seen.storage_failing {
                // Down for another reason first (probes timing out while
                // the storage stalled): the node now says why.
                t.down_reason = Some(DownSource::Storage);
            }
            let node = id.to_string();
            for transition in transitions {
                match transition {
                    Transition::Down(source) => {
                        // Detected this long after the node was last heard
                        // from, by us or by the leader.
                        let last_heard = [t.last_ok, t.leader_contact]
                            .into_iter()
                            .flatten()
                            .max()
                            .unwrap_or(self.started);
                        let detect = last_heard.elapsed();
                        t.down_reason = Some(source);
                        t.backoff = Duration::ZERO;
                        METRICS.node_down.with_label_values(&[service, &node]).inc();
                        METRICS
                            .detection
                            .with_label_values(&[service])
                            .observe(detect.as_secs_f64());
                        self.events.record(
                            service,
                            "node_down",
                            Some(*id),
                            format!(
                                "node {id} down ({}), detected in {} ms",
                                match source {
                                    DownSource::Probe => "probes failed".to_string(),
                                    DownSource::Leader => "leader cannot reach it".to_string(),
                                    DownSource::Storage => format!(
                                        "its storage fails: {}",
                                        storage_error.as_deref().unwrap_or("")
                                    ),
                                },
                                detect.as_millis()
                            ),
                            json!({ "detect_ms": detect.as_millis() as u64, "source": source.as_str() }),
                        );
                    }
                    Transition::Returned => {
                        t.down_reason = None;
                        METRICS.node_up.with_label_values(&[service, &node]).inc();
                        self.events.record(
                            service,
                            "node_up",
                            Some(*id),
                            format!("node {id} answers again; catching up"),
                            json!({ "lag_entries": t.lag.map(|l| l.0) }),
                        );
                    }
                    Transition::CaughtUp => {
                        METRICS.caught_up.with_label_values(&[service, &node]).inc();
                        self.events.record(
                            service,
                            "caught_up",
                            Some(*id),
                            format!("node {id} caught up with the leader"),
                            json!({ "lag_entries": t.lag.map(|l| l.0) }),
                        );
                    }
                }
            }
            t.status = status;
        }
    }

    fn export(&self, state: &State) {
        let service = self.service.name();
        for (id, t) in &state.nodes {
            let node = id.to_string();
            let labels = [service, node.as_str()];
            METRICS
                .node_is_up
                .with_label_values(&labels)
                .set(i64::from(t.status == NodeHealth::Up));
            if let Some((entries, seconds)) = t.lag {
                METRICS
                    .lag_entries
                    .with_label_values(&labels)
                    .set(entries as i64);
                METRICS.lag_seconds.with_label_values(&labels).set(seconds);
            }
        }
        METRICS
            .group_members
            .with_label_values(&[service])
            .set(state.nodes.len() as i64);
        if let Some(clean) = state.last_clean_ms {
            let age = cart_services::raft::now_ms().saturating_sub(clean) as f64 / 1000.0;
            METRICS
                .last_clean_check_age
                .with_label_values(&[service])
                .set(age);
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

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
