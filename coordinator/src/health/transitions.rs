//! Moving each node through `node_state` from what this round observed,
//! recording events for every transition, and exporting the nodes' gauges.

use std::time::Duration;

use cart_common::admin::NodeHealth;
use serde_json::json;

use super::{Health, State};
use crate::metrics::METRICS;
use crate::node_state::{self, DownSource, Observation, Rules, Transition};

impl Health {
    pub(super) fn apply_transitions(&self, state: &mut State) {
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

    pub(super) fn export(&self, state: &State) {
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
}
