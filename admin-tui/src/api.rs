//! The console's HTTP client of the coordinators' admin API: the cluster
//! view, `/metrics` pages, and the token-guarded actions, with timeouts so
//! that a dead or frozen coordinator only ever costs a bounded wait.

use std::time::Duration;

use cart_common::admin::{
    self, AddNode, CheckStarted, ClusterView, MembershipChanged, RepairRequest, CHECK_ALL_PATH,
    CLUSTER_PATH,
};
use cart_common::api_error::ErrorBody;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::action::{Action, ActionOutcome};
use crate::error::AdminError;
use crate::failover::Coordinators;

/// A read should answer quickly; a coordinator that does not is treated as
/// unreachable and the next one is tried.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Additions wait for the new node to catch up before answering.
const ACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Events asked for with each view (the events view shows these).
const EVENTS: usize = 200;

#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    token: Option<String>,
}

impl AdminClient {
    pub fn new(token: Option<String>) -> Result<Self, AdminError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .build()
            .map_err(|e| AdminError::BadAnswer {
                addr: "local".into(),
                reason: format!("HTTP client: {e}"),
            })?;
        Ok(Self { http, token })
    }

    pub async fn cluster_view(&self, addr: &str) -> Result<ClusterView, AdminError> {
        let path = format!("{CLUSTER_PATH}?limit={EVENTS}");
        let req = self.http.get(url(addr, &path)).timeout(READ_TIMEOUT);
        let resp = send(addr, req).await?;
        json_answer(addr, resp).await
    }

    pub async fn metrics_page(&self, addr: &str) -> Result<String, AdminError> {
        let req = self.http.get(url(addr, "/metrics")).timeout(READ_TIMEOUT);
        let resp = send(addr, req).await?;
        if !resp.status().is_success() {
            return Err(refused(resp).await);
        }
        resp.text().await.map_err(|e| AdminError::BadAnswer {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
    }

    /// The view from the first coordinator that answers, trying `current`
    /// first; also says which did not answer.
    pub async fn cluster_view_from(
        &self,
        candidates: &[String],
    ) -> (Option<(String, ClusterView)>, Vec<(String, String)>) {
        let mut failed = vec![];
        for addr in candidates {
            match self.cluster_view(addr).await {
                Ok(view) => return (Some((addr.clone(), view)), failed),
                Err(e) => failed.push((addr.clone(), short_reason(&e))),
            }
        }
        (None, failed)
    }

    /// Carries out `action` at the first coordinator that can be reached.
    /// Only a request that never reached a coordinator is sent to another.
    pub async fn perform(
        &self,
        coordinators: &Coordinators,
        action: &Action,
    ) -> Result<ActionOutcome, AdminError> {
        let mut last = AdminError::Unreachable {
            addr: coordinators.current().to_string(),
            reason: "no coordinator known".into(),
        };
        for addr in coordinators.candidates() {
            match self.perform_at(&addr, action).await {
                Err(e) if e.try_another() => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    async fn perform_at(&self, addr: &str, action: &Action) -> Result<ActionOutcome, AdminError> {
        let Some(token) = &self.token else {
            return Err(AdminError::ReadOnly);
        };
        let (method, path, body) = request_of(action);
        let mut req = self
            .http
            .request(method, url(addr, &path))
            .bearer_auth(token)
            .timeout(ACTION_TIMEOUT);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = send(addr, req).await?;
        match action {
            Action::CheckAll => Ok(ActionOutcome::Started(json_answer(addr, resp).await?)),
            Action::AddNode { .. } | Action::RemoveNode { .. } => {
                let m: MembershipChanged = json_answer(addr, resp).await?;
                Ok(ActionOutcome::Membership(m))
            }
            _ => {
                let s: CheckStarted = json_answer(addr, resp).await?;
                Ok(ActionOutcome::Started(vec![s]))
            }
        }
    }
}

/// Method, path and body of an action's call.
pub fn request_of(action: &Action) -> (Method, String, Option<serde_json::Value>) {
    let service_path = |s: &str| admin::service_path(s);
    match action {
        Action::CheckAll => (Method::POST, CHECK_ALL_PATH.to_string(), None),
        Action::Check { service } => (
            Method::POST,
            format!("{}/check", service_path(service)),
            None,
        ),
        Action::RepairNode { service, node } => (
            Method::POST,
            format!("{}/repair", service_path(service)),
            serde_json::to_value(RepairRequest { node: Some(*node) }).ok(),
        ),
        Action::RepairService { service } => (
            Method::POST,
            format!("{}/repair", service_path(service)),
            Some(json!({})),
        ),
        Action::Rebuild { service, node } => (
            Method::POST,
            format!("{}/nodes/{node}/rebuild", service_path(service)),
            None,
        ),
        Action::AddNode { service, node } => (
            Method::POST,
            admin::nodes_path(service),
            serde_json::to_value(AddNode {
                id: *node,
                addr: None,
            })
            .ok(),
        ),
        Action::RemoveNode { service, node } => (
            Method::DELETE,
            format!("{}/{node}", admin::nodes_path(service)),
            None,
        ),
    }
}

fn url(addr: &str, path: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        format!("{}{path}", addr.trim_end_matches('/'))
    } else {
        format!("http://{addr}{path}")
    }
}

async fn send(addr: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response, AdminError> {
    req.send().await.map_err(|e| AdminError::Unreachable {
        addr: addr.to_string(),
        reason: transport_reason(&e),
    })
}

fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or no route".into()
    } else {
        e.to_string()
    }
}

/// A short reason for the unreachable list.
fn short_reason(e: &AdminError) -> String {
    match e {
        AdminError::Unreachable { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

async fn json_answer<T: serde::de::DeserializeOwned>(
    addr: &str,
    resp: reqwest::Response,
) -> Result<T, AdminError> {
    if !resp.status().is_success() {
        return Err(refused(resp).await);
    }
    let bytes = resp.bytes().await.map_err(|e| AdminError::Unreachable {
        addr: addr.to_string(),
        reason: transport_reason(&e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| AdminError::BadAnswer {
        addr: addr.to_string(),
        reason: e.to_string(),
    })
}

/// A non-2xx answer, with the API's `{"error", "message"}` when it has one.
async fn refused(resp: reqwest::Response) -> AdminError {
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED {
        return AdminError::Unauthorized;
    }
    let text = resp.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => (body.error, body.message),
        Err(_) => (
            status.canonical_reason().unwrap_or("error").to_string(),
            text.chars().take(200).collect(),
        ),
    };
    AdminError::Refused {
        status: status.as_u16(),
        code,
        message,
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

    #[test]
    fn addresses_may_carry_a_scheme() {
        assert_eq!(url("127.0.0.1:8101", "/x"), "http://127.0.0.1:8101/x");
        assert_eq!(url("http://h:1/", "/x"), "http://h:1/x");
    }

    #[tokio::test]
    async fn an_action_without_a_token_is_never_sent() {
        let client = AdminClient::new(None).unwrap();
        let coords = Coordinators::new("127.0.0.1:1", []);
        let r = client.perform(&coords, &Action::CheckAll).await;
        assert_eq!(r, Err(AdminError::ReadOnly));
    }

    #[tokio::test]
    async fn a_dead_coordinator_is_a_readable_error() {
        // Port 1 on loopback: nothing listens there.
        let client = AdminClient::new(Some("t".into())).unwrap();
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
