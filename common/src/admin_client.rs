//! The one client of the coordinators' admin API (docs/admin-api.md), used
//! by the admin console, `cart add-node`/`remove-node` and the tests: calls
//! with the admin token when it has one, JSON answers read once, the API's
//! `{"error", "message"}` refusals kept, and "the first coordinator that
//! answers" written once (`first_answer`).
//!
//! Errors are worded for the operator: every failure ends up in a status
//! line or an error message, never in a crash.

use std::future::Future;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::api_error::ErrorBody;
use crate::http::InternalClient;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    #[error("coordinator {addr} unreachable ({reason})")]
    Unreachable { addr: String, reason: String },
    #[error("unauthorized (401): the admin token was refused; check --token or CART_ADMIN_TOKEN")]
    Unauthorized,
    #[error("{status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unreadable answer from {addr}: {reason}")]
    BadAnswer { addr: String, reason: String },
    #[error("read-only: no action is sent")]
    ReadOnly,
}

impl AdminError {
    /// Whether another coordinator may be tried with a call that changes
    /// something: the request never reached this one, so nothing was done
    /// twice.
    pub fn try_another(&self) -> bool {
        matches!(self, AdminError::Unreachable { .. })
    }

    /// Any failure moves a read on to the next coordinator: a read is safe
    /// to repeat.
    pub fn always(&self) -> bool {
        true
    }
}

/// A coordinator's answer as it came: status and JSON body (`Null` if it
/// had none).
#[derive(Clone, Debug, PartialEq)]
pub struct RawAnswer {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

#[derive(Clone)]
pub struct AdminClient {
    http: InternalClient,
    token: Option<String>,
}

impl AdminClient {
    /// `token` goes as `Authorization: Bearer` with every call; each call
    /// says how long it may take.
    pub fn new(token: Option<String>) -> Self {
        // Coordinators are on a short path: one that does not accept a
        // connection within a second is treated as unreachable.
        let http = InternalClient::new(Duration::from_secs(1), Duration::from_secs(600));
        Self { http, token }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// One call, any status an answer; only a call that got no answer fails.
    pub async fn raw(
        &self,
        addr: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<RawAnswer, AdminError> {
        let response = self.send(addr, method, path, body, timeout).await?;
        let status = response.status();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        Ok(RawAnswer { status, body })
    }

    /// One call whose 2xx answer is decoded as `T`; a refusal keeps the
    /// API's error code and message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        addr: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<T, AdminError> {
        let response = self.send(addr, method, path, body, timeout).await?;
        if !response.status().is_success() {
            return Err(refused(response).await);
        }
        let bytes = response.bytes().await.map_err(|e| unreachable(addr, e))?;
        serde_json::from_slice(&bytes).map_err(|e| AdminError::BadAnswer {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<T, AdminError> {
        self.call(addr, Method::GET, path, None, timeout).await
    }

    /// A page that is not JSON (`/metrics`).
    pub async fn text(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<String, AdminError> {
        let response = self.send(addr, Method::GET, path, None, timeout).await?;
        if !response.status().is_success() {
            return Err(refused(response).await);
        }
        response.text().await.map_err(|e| AdminError::BadAnswer {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
    }

    /// `call` at each of `candidates` in turn until one answers, moving on
    /// after a failure for which `move_on` holds (`AdminError::try_another`
    /// for calls that change something, `AdminError::always` for reads).
    /// The answer and who gave it, and every coordinator that failed first.
    pub async fn first_answer<T, F, Fut>(
        candidates: &[String],
        move_on: fn(&AdminError) -> bool,
        mut call: F,
    ) -> (Result<(String, T), AdminError>, Vec<(String, AdminError)>)
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T, AdminError>>,
    {
        let mut failed = Vec::new();
        for addr in candidates {
            match call(addr.clone()).await {
                Ok(answer) => return (Ok((addr.clone(), answer)), failed),
                Err(e) if move_on(&e) => failed.push((addr.clone(), e)),
                Err(e) => return (Err(e), failed),
            }
        }
        let last = failed.last().map_or_else(
            || AdminError::Unreachable {
                addr: String::new(),
                reason: "no coordinator known".into(),
            },
            |(_, e)| e.clone(),
        );
        (Err(last), failed)
    }

    async fn send(
        &self,
        addr: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<reqwest::Response, AdminError> {
        let mut request = self.http.request(method, addr, path).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        InternalClient::send(request)
            .await
            .map_err(|e| AdminError::Unreachable {
                addr: addr.to_string(),
                reason: e.to_string(),
            })
    }
}

fn unreachable(addr: &str, e: reqwest::Error) -> AdminError {
    AdminError::Unreachable {
        addr: addr.to_string(),
        reason: e.to_string(),
    }
}

/// A non-2xx answer, with the API's `{"error", "message"}` when it has one.
async fn refused(response: reqwest::Response) -> AdminError {
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        return AdminError::Unauthorized;
    }
    let text = response.text().await.unwrap_or_default();
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

    #[tokio::test]
    async fn a_dead_coordinator_is_a_readable_error_and_the_next_one_is_tried() {
        // Port 1 on loopback: nothing listens there.
        let client = AdminClient::new(None);
        let e = client
            .get::<serde_json::Value>("127.0.0.1:1", "/admin/cluster", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("127.0.0.1:1 unreachable"), "{e}");

        let candidates = ["a".to_string(), "b".to_string(), "c".to_string()];
        let (answer, failed) =
            AdminClient::first_answer(&candidates, AdminError::try_another, |addr| async move {
                match addr.as_str() {
                    "a" => Err(AdminError::Unreachable {
                        addr,
                        reason: "down".into(),
                    }),
                    _ => Ok(addr),
                }
            })
            .await;
        assert_eq!(answer, Ok(("b".to_string(), "b".to_string())));
        assert_eq!(failed.len(), 1);
    }

    #[tokio::test]
    async fn a_refusal_is_not_sent_elsewhere_unless_asked() {
        let candidates = ["a".to_string(), "b".to_string()];
        let refuse = |addr: String| async move {
            Err::<String, _>(AdminError::Refused {
                status: 400,
                code: "bad".into(),
                message: addr,
            })
        };
        let (answer, failed) =
            AdminClient::first_answer(&candidates, AdminError::try_another, refuse).await;
        assert!(matches!(answer, Err(AdminError::Refused { message, .. }) if message == "a"));
        assert!(failed.is_empty());
        let (_, failed) = AdminClient::first_answer(&candidates, AdminError::always, refuse).await;
        assert_eq!(failed.len(), 2);
    }
}
