//! What the group's leader reports, read once per round: who leads (and
//! leader changes), the membership (nodes added are watched, removed ones
//! forgotten), how far behind each follower is and whether the leader can
//! reach it, and the latest consistency check (as events).

use std::time::{Duration, Instant};

use cart_common::spec::NodeId;
use serde_json::json;

use cart_common::admin::CheckReport;

use super::{drop_node_series, init_node_series, Health, State, Tracked};
use crate::metrics::METRICS;

impl Health {
    /// Finds the leader among this round's statuses, records a leader
    /// change, takes its membership and its replication report.
    pub(super) fn follow_leader(&self, state: &mut State) {
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
                    t.lag = p.lag_entries.zip(p.lag_seconds);
                }
                None => {
                    t.leader_cannot_reach = false;
                    t.lag = None;
                }
            }
        }
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
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
