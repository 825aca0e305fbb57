//! One probe round: every member whose next probe is due is asked for its
//! `/status`, and failures back its next probe off.

use std::time::{Duration, Instant};

use cart_common::admin::NodeHealth;
use cart_common::paths::STATUS_PATH;
use cart_common::spec::NodeId;

use cart_common::http::CallError;
use cart_services::api::NodeStatus;

use super::{Health, State};
use crate::metrics::METRICS;

impl Health {
    pub(super) async fn round(&self) {
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
        self.follow_shard_leaders(&mut state);
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
}
