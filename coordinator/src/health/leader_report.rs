//! What the group's leader reports, read once per round: who leads (and
//! leader changes), the membership (nodes added are watched, removed ones
//! forgotten), how far behind each follower is and whether the leader can
//! reach it, and the latest consistency check (as events).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cart_common::shard::Shard;
use cart_common::spec::NodeId;
use serde_json::json;

use cart_common::admin::CheckReport;

use super::{drop_node_series, init_node_series, Health, State, Tracked};
use crate::metrics::METRICS;

/// Report ids remembered as turned into events: more than the group keeps
/// (`CHECKS_KEPT`), so a report still listed is never taken for new.
const SEEN_CHECKS_KEPT: usize = 2 * cart_services::domain::checks::CHECKS_KEPT;

impl Health {
    /// Finds the leader among this round's statuses, records a leader
    /// change, takes its membership and its replication report.
    /// The leaders of a sharded service's other shards (shard 0's is
    /// `follow_leader`'s, with its report), as the nodes in touch report
    /// themselves: each change is a `leader_change` event naming the shard.
    pub(super) fn follow_shard_leaders(&self, state: &mut State) {
        let mut newest: BTreeMap<Shard, (NodeId, u64)> = BTreeMap::new();
        let roles = state
            .nodes
            .values()
            .filter(|t| t.failures == 0)
            .filter_map(|t| t.last_status.as_ref())
            .flat_map(|s| s.shards.iter());
        for r in roles.filter(|r| r.shard.0 > 0 && r.state == "Leader") {
            let Some(leader) = r.leader else { continue };
            let known = newest.entry(r.shard).or_insert((leader, r.term));
            if r.term > known.1 {
                *known = (leader, r.term);
            }
        }
        for (shard, (leader, term)) in newest {
            let previous = state.shard_leaders.insert(shard, (leader, term));
            if previous == Some((leader, term)) {
                continue;
            }
            if previous.is_some() {
                METRICS
                    .leader_changes
                    .with_label_values(&[self.service.name()])
                    .inc();
            }
            let was = previous.map(|(l, _)| l);
            let message = match was {
                Some(p) if p != leader => {
                    format!("node {leader} leads shard {shard} in term {term} (was node {p})")
                }
                _ => format!("node {leader} leads shard {shard} in term {term}"),
            };
            self.events.record(
                self.service.name(),
                "leader_change",
                Some(leader),
                message,
                json!({ "shard": shard, "term": term, "previous": was }),
            );
        }
    }

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

        // Every report of the last minute, so that two finishing between
        // two rounds both become events; a node that lists none (older
        // than `recent_checks`) still names its latest.
        let reports = match (&status.recent_checks[..], &status.last_check) {
            ([], Some(latest)) => std::slice::from_ref(latest),
            (recent, _) => recent,
        };
        for report in reports {
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
        if state.seen_checks.contains(&report.check_id) {
            return;
        }
        if state.seen_checks.len() >= SEEN_CHECKS_KEPT {
            state.seen_checks.pop_front();
        }
        state.seen_checks.push_back(report.check_id.clone());
        let newer = state
            .last_check
            .as_ref()
            .is_none_or(|c| c.finished_ms <= report.finished_ms);
        if newer {
            state.last_check = Some(report.clone());
        }
        let service = self.service.name();
        let clean = report.verdict == "clean"
            || report
                .repair
                .as_ref()
                .is_some_and(|r| r.recheck_verdict.as_deref() == Some("clean"));
        if clean {
            state.last_clean_ms = state.last_clean_ms.max(Some(report.finished_ms));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cart_common::spec::ClusterSpec;
    use cart_common::Service;
    use cart_services::api::NodeStatus;

    use super::*;
    use crate::events::EventLog;

    fn health() -> (Health, Arc<EventLog>) {
        let spec = ClusterSpec::from_toml(include_str!("../../../cluster.toml")).unwrap();
        let events = Arc::new(EventLog::new("test".into(), 100));
        (Health::new(&spec, Service::Stock, events.clone()), events)
    }

    fn report(id: &str, finished_ms: u64, verdict: &str) -> CheckReport {
        CheckReport {
            check_id: id.to_string(),
            reason: "manual".into(),
            started_ms: finished_ms - 5,
            finished_ms,
            log_index: 7,
            verdict: verdict.into(),
            majority_root: None,
            replicas: vec![],
            repair: None,
            shard: Default::default(),
        }
    }

    /// Node 1's status, as the leader of term 3, as this round read it.
    fn leader_says(health: &Health, last: Option<CheckReport>, recent: Vec<CheckReport>) {
        let status = NodeStatus {
            shards: Vec::new(),
            shard: Default::default(),
            service: "stock".into(),
            id: 1,
            addr: "127.0.0.1:1".into(),
            state: "Leader".into(),
            term: 3,
            leader: Some(1),
            last_log_index: Some(7),
            last_applied: Some(7),
            snapshot: None,
            purged: None,
            members: vec![],
            voters: vec![],
            committed: Some(7),
            replication: None,
            saga_recovery: None,
            last_check: last,
            recent_checks: recent,
            table_sizes: Default::default(),
            storage: Default::default(),
        };
        let mut state = health.write();
        let node = state.nodes.get_mut(&1).unwrap();
        node.failures = 0;
        node.last_ok = Some(Instant::now());
        node.last_status = Some(status);
        health.follow_leader(&mut state);
    }

    fn check_events(events: &EventLog) -> Vec<(String, String)> {
        let mut seen: Vec<(String, String)> = events
            .history(Some("stock"), 100)
            .into_iter()
            .filter(|e| e.kind == "check" || e.kind == "mismatch")
            .map(|e| (e.kind, e.detail["check_id"].as_str().unwrap().to_string()))
            .collect();
        seen.sort();
        seen
    }

    #[test]
    fn every_report_listed_becomes_events_once_even_two_from_one_round() {
        let (health, events) = health();
        let a = report("aaaaaaaa-1", 1_000, "clean");
        let b = report("bbbbbbbb-2", 2_000, "mismatch");
        leader_says(&health, Some(b.clone()), vec![a.clone(), b.clone()]);
        // The next round lists the same two and a third.
        let c = report("cccccccc-3", 3_000, "clean");
        leader_says(&health, Some(c.clone()), vec![a, b, c.clone()]);
        assert_eq!(
            check_events(&events),
            [
                ("check".to_string(), "aaaaaaaa-1".to_string()),
                ("check".to_string(), "cccccccc-3".to_string()),
                ("mismatch".to_string(), "bbbbbbbb-2".to_string()),
            ]
        );
        assert_eq!(health.last_check(), Some(c));
        assert_eq!(health.read().last_clean_ms, Some(3_000));
    }

    #[test]
    fn a_node_listing_no_recent_reports_still_names_its_latest() {
        let (health, events) = health();
        let old = report("dddddddd-4", 1_000, "clean");
        leader_says(&health, Some(old.clone()), vec![]);
        leader_says(&health, Some(old.clone()), vec![]);
        assert_eq!(
            check_events(&events),
            [("check".to_string(), "dddddddd-4".to_string())]
        );
        assert_eq!(health.last_check(), Some(old));
    }
}
