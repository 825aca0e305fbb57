//! The console's calls of the coordinators' admin API, through the one
//! admin client (`cart_common::admin_client`): the cluster view, `/metrics`
//! pages, and the token-guarded actions, with timeouts so that a dead or
//! frozen coordinator only ever costs a bounded wait.

use std::time::Duration;

use cart_common::admin::{
    AddNode, CheckReport, CheckStarted, ClusterView, MembershipChanged, RepairRequest,
};
use cart_common::admin_client::{AdminClient, AdminError};
use cart_common::paths;
use reqwest::Method;
use serde_json::json;

use crate::action::{Action, ActionOutcome};
use crate::failover::Coordinators;

/// A read should answer quickly; a coordinator that does not is treated as
/// unreachable and the next one is tried.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Additions wait for the new node to catch up before answering.
const ACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Events asked for with each view (the events view shows these).
const EVENTS: usize = 200;

#[derive(Clone)]
pub struct ConsoleClient {
    admin: AdminClient,
}

impl ConsoleClient {
    pub fn new(token: Option<String>) -> Self {
        Self {
            admin: AdminClient::new(token),
        }
    }

    pub async fn cluster_view(&self, addr: &str) -> Result<ClusterView, AdminError> {
        let path = format!("{}?limit={EVENTS}", paths::CLUSTER_PATH);
        self.admin.get(addr, &path, READ_TIMEOUT).await
    }

    pub async fn metrics_page(&self, addr: &str) -> Result<String, AdminError> {
        self.admin
            .text(addr, paths::METRICS_PATH, READ_TIMEOUT)
            .await
    }

    /// The report of a check, repair or rebuild this console started, from
    /// the first coordinator that answers; `None` while it has none yet
    /// (404: still running).
    pub async fn check_report(
        &self,
        coordinators: &Coordinators,
        started: &CheckStarted,
    ) -> Option<CheckReport> {
        let path = paths::check_report_path(&started.service, &started.check_id);
        let candidates = coordinators.candidates();
        let (answer, _) = AdminClient::first_answer(&candidates, AdminError::try_another, |addr| {
            let path = path.clone();
            async move {
                self.admin
                    .get::<CheckReport>(&addr, &path, READ_TIMEOUT)
                    .await
            }
        })
        .await;
        answer.ok().map(|(_, report)| report)
    }

    /// The view from the first coordinator that answers, trying `current`
    /// first; also says which did not answer.
    pub async fn cluster_view_from(
        &self,
        candidates: &[String],
    ) -> (Option<(String, ClusterView)>, Vec<(String, String)>) {
        let (answer, failed) =
            AdminClient::first_answer(candidates, AdminError::always, |addr| async move {
                self.cluster_view(&addr).await
            })
            .await;
        let failed = failed
            .into_iter()
            .map(|(addr, e)| (addr, short_reason(&e)))
            .collect();
        (answer.ok(), failed)
    }

    /// Carries out `action` at the first coordinator that can be reached.
    /// Only a request that never reached a coordinator is sent to another.
    pub async fn perform(
        &self,
        coordinators: &Coordinators,
        action: &Action,
    ) -> Result<ActionOutcome, AdminError> {
        if !self.admin.has_token() {
            return Err(AdminError::ReadOnly);
        }
        let candidates = coordinators.candidates();
        let (answer, _) =
            AdminClient::first_answer(&candidates, AdminError::try_another, |addr| async move {
                self.perform_at(&addr, action).await
            })
            .await;
        answer.map(|(_, outcome)| outcome)
    }

    async fn perform_at(&self, addr: &str, action: &Action) -> Result<ActionOutcome, AdminError> {
        let (method, path, body) = request_of(action);
        let (admin, body) = (&self.admin, body.as_ref());
        match action {
            Action::CheckAll => {
                let started = admin.call(addr, method, &path, body, ACTION_TIMEOUT);
                Ok(ActionOutcome::Started(started.await?))
            }
            Action::AddNode { .. } | Action::RemoveNode { .. } => {
                let changed =
                    admin.call::<MembershipChanged>(addr, method, &path, body, ACTION_TIMEOUT);
                Ok(ActionOutcome::Membership(changed.await?))
            }
            _ => {
                let started = admin.call::<CheckStarted>(addr, method, &path, body, ACTION_TIMEOUT);
                Ok(ActionOutcome::Started(vec![started.await?]))
            }
        }
    }
}

/// Method, path and body of an action's call.
pub fn request_of(action: &Action) -> (Method, String, Option<serde_json::Value>) {
    match action {
        Action::CheckAll => (Method::POST, paths::CHECK_ALL_PATH.to_string(), None),
        Action::Check { service } => (Method::POST, paths::check_path(service), None),
        Action::RepairNode { service, node } => (
            Method::POST,
            paths::repair_path(service),
            serde_json::to_value(RepairRequest { node: Some(*node) }).ok(),
        ),
        Action::RepairService { service } => {
            (Method::POST, paths::repair_path(service), Some(json!({})))
        }
        Action::Rebuild { service, node } => {
            (Method::POST, paths::rebuild_path(service, *node), None)
        }
        Action::AddNode { service, node } => (
            Method::POST,
            paths::nodes_path(service),
            serde_json::to_value(AddNode {
                id: *node,
                addr: None,
            })
            .ok(),
        ),
        Action::RemoveNode { service, node } => {
            (Method::DELETE, paths::node_path(service, *node), None)
        }
    }
}

/// A short reason for the unreachable list.
fn short_reason(e: &AdminError) -> String {
    match e {
        AdminError::Unreachable { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_map_to_the_documented_calls() {
        let s = || "stock".to_string();
        let cases = [
            (Action::CheckAll, "POST", "/admin/check", None),
            (
                Action::Check { service: s() },
                "POST",
                "/admin/services/stock/check",
                None,
            ),
            (
                Action::RepairNode {
                    service: s(),
                    node: 2,
                },
                "POST",
                "/admin/services/stock/repair",
                Some(json!({"node": 2})),
            ),
            (
                Action::RepairService { service: s() },
                "POST",
                "/admin/services/stock/repair",
                Some(json!({})),
            ),
            (
                Action::Rebuild {
                    service: s(),
                    node: 3,
                },
                "POST",
                "/admin/services/stock/nodes/3/rebuild",
                None,
            ),
            (
                Action::AddNode {
                    service: s(),
                    node: 4,
                },
                "POST",
                "/admin/services/stock/nodes",
                Some(json!({"id": 4, "addr": null})),
            ),
            (
                Action::RemoveNode {
                    service: s(),
                    node: 4,
                },
                "DELETE",
                "/admin/services/stock/nodes/4",
                None,
            ),
        ];
        for (action, method, path, body) in cases {
            let (m, p, b) = request_of(&action);
            assert_eq!(
                (m.as_str(), p.as_str(), b),
                (method, path, body),
                "{action:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_action_without_a_token_is_never_sent() {
        let client = ConsoleClient::new(None);
        let coords = Coordinators::new("127.0.0.1:1", []);
        let r = client.perform(&coords, &Action::CheckAll).await;
        assert_eq!(r, Err(AdminError::ReadOnly));
    }

    #[tokio::test]
    async fn a_dead_coordinator_is_a_readable_error() {
        // Port 1 on loopback: nothing listens there.
        let client = ConsoleClient::new(Some("t".into()));
        let coords = Coordinators::new("127.0.0.1:1", []);
        let err = client
            .perform(&coords, &Action::CheckAll)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:1 unreachable"), "{err}");
        let (answer, failed) = client.cluster_view_from(&["127.0.0.1:1".to_string()]).await;
        assert!(answer.is_none());
        assert_eq!(failed.len(), 1);
    }
}
