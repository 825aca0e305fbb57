//! Shared by the cluster integration tests: start a real cluster from the
//! harness and talk to it over HTTP.
#![allow(dead_code)]

pub mod scenario;

use std::path::PathBuf;
use std::time::Duration;

use cart_cluster::harness::{cart_binary, LocalCluster};
use cart_cluster::mongo_server::MongoServer;
use cart_common::admin_client::AdminClient;
use cart_common::http::{InternalClient, REQUEST_ID};
use cart_common::metrics_page::Page;
use cart_common::paths::{LOCAL_READ_PATH, METRICS_PATH};
use cart_common::shard::Shard;
use cart_common::spec::StorageBackend;
use cart_common::{ClusterSpec, Service};
use cart_services::api::ReadRequest;
use cart_services::domain::{Outcome, Query};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `cart` binary (cargo builds it for these tests).
pub fn bin() -> PathBuf {
    cart_binary().expect("the cart binary is built")
}

/// A test cluster of `services` (plus the gateway) with test-friendly
/// timings, ready to serve, and with every coordinator reporting a leader
/// and every node up.
pub fn cluster(services: &[Service], tweak: impl FnOnce(&mut ClusterSpec)) -> LocalCluster {
    cluster_with(services, tweak, &[])
}

/// As `cluster`, passing `node_args` to every node (`--fault-injection`).
pub fn cluster_with(
    services: &[Service],
    tweak: impl FnOnce(&mut ClusterSpec),
    node_args: &[&str],
) -> LocalCluster {
    let cluster = LocalCluster::start_temp_with(
        &bin(),
        services,
        |spec| {
            test_timings(spec);
            tweak(spec);
        },
        node_args,
    )
    .expect("cluster starts");
    settled(cluster)
}

/// The tests' Raft timings: faster elections than the default spec's.
pub fn test_timings(spec: &mut ClusterSpec) {
    spec.raft.heartbeat_ms = 150;
    spec.raft.election_timeout_ms = 1000;
}

/// Asserts that a rebuild's report says the node was rebuilt and the
/// check after it found every replica alike.
pub fn assert_rebuilt(report: &cart_common::admin::CheckReport) {
    let repair = report.repair.as_ref().expect("a repair report");
    assert_eq!(repair.nodes[0].action, "rebuilt", "{repair:#?}");
    assert_eq!(
        repair.recheck_verdict.as_deref(),
        Some("clean"),
        "{repair:#?}"
    );
}

/// Every service split into `shards` shards (`tweak` for a test cluster).
pub fn with_shards(spec: &mut ClusterSpec, shards: u16) {
    for service in Service::ALL {
        spec.size_mut(service).shards = shards;
    }
}

/// Waits until every shard of every service in `cluster` is led by its
/// preferred node (shard `s` by node `s mod 3 + 1`): a handover in the
/// middle of a load is not the fault a test is about.
pub fn wait_leaders_spread(cluster: &LocalCluster, shards: u16) {
    if shards < 2 {
        return;
    }
    for &service in cluster.services() {
        for shard in Shard::all(shards) {
            let preferred = u64::from(shard.0 % 3) + 1;
            cluster
                .wait_until(
                    &format!("{service} shard {shard} led by node {preferred}"),
                    Duration::from_secs(30),
                    |c| (c.shard_leader(service, shard) == Some(preferred)).then_some(()),
                )
                .expect("leaders spread");
        }
    }
}

/// `cluster` once it serves, every coordinator sees a leader and every
/// node is up.
pub fn settled(mut cluster: LocalCluster) -> LocalCluster {
    cluster
        .wait_ready(Duration::from_secs(60))
        .expect("cluster ready");
    cluster
        .wait_settled(Duration::from_secs(30))
        .expect("every coordinator sees a leader and every node up");
    cluster
}

/// A test cluster whose nodes keep their state on `backend`, with the
/// MongoDB server it uses (kept alive as long as the cluster). `None` when
/// that backend's server is not available here (the reason is printed;
/// under CI that fails instead).
pub fn cluster_on(
    backend: StorageBackend,
    services: &[Service],
    tweak: impl FnOnce(&mut ClusterSpec),
    node_args: &[&str],
) -> Option<(LocalCluster, Option<MongoServer>)> {
    let mongo = match backend {
        StorageBackend::Embedded => None,
        StorageBackend::Mongodb => Some(MongoServer::for_tests().expect("MongoDB server")?),
    };
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let url = mongo.as_ref().map(|m| m.url.clone());
    let cluster = cluster_with(
        services,
        |spec| {
            if let Some(url) = url {
                spec.storage.backend = StorageBackend::Mongodb;
                spec.storage.mongodb_url = url;
                // Unique databases, in case MONGODB_URL names a shared server.
                spec.storage.mongodb_database = format!("t{}_{{name}}", &prefix[..12]);
            }
            tweak(spec);
        },
        node_args,
    );
    Some((cluster, mongo))
}

/// Runs each listed test function (taking a `StorageBackend`) twice:
/// `embedded::<name>` and `mongodb::<name>`.
#[allow(unused_macros)] // not every test file uses it
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(cart_common::spec::StorageBackend::Embedded).await;
                }
            )*
        }
        mod mongodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(cart_common::spec::StorageBackend::Mongodb).await;
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_backends;

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
                // The servers close a connection idle for header_read_timeout_ms
                // (5 s): one reused just as it closes is reset. Forget idle
                // connections well before that, as the internal client does.
                .pool_idle_timeout(Duration::from_secs(2))
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

    /// A GET that may fail at the transport level (for fault tests).
    pub async fn try_get(&self, path: &str) -> reqwest::Result<Answer> {
        self.send(reqwest::Method::GET, path, None).await
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
    local_read_in(cluster, service, id, Shard::default(), query).await
}

/// What one replica of `shard` holds (`local_read`).
pub async fn local_read_in(
    cluster: &LocalCluster,
    service: Service,
    id: u64,
    shard: Shard,
    query: Query,
) -> Option<Outcome> {
    let addr = cluster.spec.node_addr(service, id)?;
    InternalClient::for_cluster(&cluster.spec, Duration::from_secs(5))
        .for_shard(shard)
        .post_json(&addr, LOCAL_READ_PATH, &ReadRequest { query })
        .await
        .ok()
}

/// Polls `probe` every 100 ms until it yields a value, or panics after
/// `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The admin address of coordinator `index` of `service`.
/// The ids of `service`'s nodes other than `leader`.
pub fn followers(cluster: &LocalCluster, service: Service, leader: u64) -> Vec<u64> {
    cluster
        .spec
        .nodes(service)
        .into_iter()
        .map(|n| n.id)
        .filter(|n| *n != leader)
        .collect()
}

pub fn coordinator_admin(cluster: &LocalCluster, service: Service, index: u16) -> String {
    cluster
        .spec
        .coordinator(service, index)
        .expect("coordinator in spec")
        .admin
}

/// GET on an admin port, parsed as `T`; `None` if unreachable or not 200.
pub async fn admin_get<T: serde::de::DeserializeOwned>(addr: &str, path: &str) -> Option<T> {
    AdminClient::new(None)
        .get(addr, path, Duration::from_secs(5))
        .await
        .ok()
}

/// A service's view from coordinator 0 of that service.
pub async fn service_view(
    cluster: &LocalCluster,
    service: Service,
) -> Option<cart_common::admin::ServiceView> {
    let addr = coordinator_admin(cluster, service, 0);
    admin_get(&addr, &cart_common::paths::service_path(service.name())).await
}

/// The report of the check (or repair) `check_id` of `service`, looked up
/// by id at coordinator 0, once it has finished.
pub async fn check_report(
    cluster: &LocalCluster,
    service: Service,
    check_id: &str,
    timeout: Duration,
) -> cart_common::admin::CheckReport {
    let addr = coordinator_admin(cluster, service, 0);
    let path = cart_common::paths::check_report_path(service.name(), check_id);
    let what = format!("the report of {service} check {check_id}");
    eventually(&what, timeout, || admin_get(&addr, &path)).await
}

pub fn node_view(
    view: &cart_common::admin::ServiceView,
    id: u64,
) -> Option<&cart_common::admin::NodeView> {
    view.nodes.iter().find(|n| n.id == id)
}

/// A mutating admin call with an optional bearer token: (status, body).
pub async fn admin_call(
    method: reqwest::Method,
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let answer = AdminClient::new(token.map(str::to_string))
        .raw(addr, method, path, body.as_ref(), Duration::from_secs(120))
        .await
        .expect("admin call answered");
    (answer.status.as_u16(), answer.body)
}

/// Sends `request` byte for byte on a fresh connection (no client
/// normalises its path); the status and JSON body of the answer (read until
/// the server closes or the body is complete).
pub async fn raw_request(addr: &str, request: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
            if complete(&answer) {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer to {:?}",
        String::from_utf8_lossy(request)
    );
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let body = serde_json::from_str(body).unwrap_or_else(|_| {
        panic!(
            "answer {status} to {:?} has no JSON body: {text:?}",
            lossy(request)
        )
    });
    (status, body)
}

pub fn lossy(request: &[u8]) -> String {
    String::from_utf8_lossy(&request[..request.len().min(120)]).to_string()
}

/// Whether `answer` holds a whole response with a `content-length` body.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .is_some_and(|len| body.len() >= len)
}

/// The value of the series `name` carrying all of `labels`, from the
/// `/metrics` page at `addr`.
pub async fn metric(addr: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = AdminClient::new(None)
        .text(addr, METRICS_PATH, Duration::from_secs(5))
        .await
        .ok()?;
    Page::parse(&text)
        .samples(name)
        .iter()
        .find(|s| labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
}

impl Client {
    /// Item "0" (stock 10, price `price`), user "0" (credit 10), and an
    /// order of one item "0" for that user; the order's id.
    pub async fn one_item_order(&self, price: i64) -> String {
        assert!(self
            .post(&format!("/stock/batch_init/1/10/{price}"))
            .await
            .ok());
        assert!(self.post("/payment/batch_init/1/10").await.ok());
        self.order_of("0", &[("0", 1)]).await
    }

    /// A new user with `credit`; its id.
    pub async fn user_with(&self, credit: i64) -> String {
        let user = self.post("/payment/create_user").await.str("user_id");
        assert!(self
            .post(&format!("/payment/add_funds/{user}/{credit}"))
            .await
            .ok());
        user
    }

    /// A new order of `user` for `items` (id, quantity); its id.
    pub async fn order_of(&self, user: &str, items: &[(&str, i64)]) -> String {
        let order = self
            .post(&format!("/orders/create/{user}"))
            .await
            .str("order_id");
        for (item, quantity) in items {
            let a = self
                .post(&format!("/orders/addItem/{order}/{item}/{quantity}"))
                .await;
            assert!(a.ok(), "{:?}", a.body);
        }
        order
    }
}
