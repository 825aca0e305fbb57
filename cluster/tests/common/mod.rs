//! Shared by the cluster integration tests: start a real cluster from the
//! harness and talk to it over HTTP.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use cart_cluster::harness::LocalCluster;
use cart_common::http::{INTERNAL_SECRET, REQUEST_ID};
use cart_common::{ClusterSpec, Service};
use cart_services::api::{ReadRequest, LOCAL_READ_PATH};
use cart_services::domain::{Outcome, Query};
use serde_json::Value;

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cart"))
}

/// A test cluster of `services` (plus the gateway) with test-friendly
/// timings, ready to serve.
pub fn cluster(services: &[Service], tweak: impl FnOnce(&mut ClusterSpec)) -> LocalCluster {
    let mut cluster = LocalCluster::start_temp(bin(), services, |spec| {
        spec.raft.heartbeat_ms = 150;
        spec.raft.election_timeout_ms = 1000;
        tweak(spec);
    })
    .expect("cluster starts");
    cluster
        .wait_ready(Duration::from_secs(60))
        .expect("cluster ready");
    cluster
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    pub fn str(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_default().to_string()
    }
    pub fn int(&self, field: &str) -> i64 {
        self.body[field].as_i64().expect("integer field")
    }
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    pub fn gateway(cluster: &LocalCluster) -> Self {
        Self::new(&cluster.gateway_url())
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        request_id: Option<&str>,
    ) -> reqwest::Result<Answer> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(id) = request_id {
            req = req.header(REQUEST_ID, id);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer {
            status,
            body,
            headers,
        })
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, None)
            .await
            .expect("GET answered")
    }

    pub async fn post(&self, path: &str) -> Answer {
        self.send(reqwest::Method::POST, path, None)
            .await
            .expect("POST answered")
    }

    pub async fn post_with_id(&self, path: &str, request_id: &str) -> Answer {
        self.send(reqwest::Method::POST, path, Some(request_id))
            .await
            .expect("POST answered")
    }

    /// A POST that may fail at the transport level (for fault tests).
    pub async fn try_post(&self, path: &str, request_id: Option<&str>) -> reqwest::Result<Answer> {
        self.send(reqwest::Method::POST, path, request_id).await
    }

    pub async fn credit(&self, user: &str) -> i64 {
        let a = self.get(&format!("/payment/find_user/{user}")).await;
        assert_eq!(a.status, 200, "find_user {user}: {:?}", a.body);
        a.int("credit")
    }

    pub async fn stock(&self, item: &str) -> i64 {
        let a = self.get(&format!("/stock/find/{item}")).await;
        assert_eq!(a.status, 200, "find item {item}: {:?}", a.body);
        a.int("stock")
    }
}

/// What one replica holds, read straight from it (no consensus round).
pub async fn local_read(
    cluster: &LocalCluster,
    service: Service,
    id: u64,
    query: Query,
) -> Option<Outcome> {
    let addr = cluster.spec.node_addr(service, id)?;
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}{LOCAL_READ_PATH}"))
        .header(INTERNAL_SECRET, &cluster.spec.cluster.internal_secret)
        .timeout(Duration::from_secs(5))
        .json(&ReadRequest { query })
        .send()
        .await
        .ok()?;
    resp.json().await.ok()
}
