//! A client of one shard's Raft group of a service (`service::ServiceClient`
//! holds one per shard and routes by key): sends reads and writes to the
//! current leader, follows "not leader" answers, and retries on unreachable
//! nodes or leader changes until a deadline. Writes carry a request id, so a
//! retry after a lost answer applies once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::api::{CheckoutReply, CheckoutRequest, NotLeader, ReadRequest, WriteRequest};
use crate::domain::{Command, Outcome, Query};
use crate::request_key::RequestKey;
use cart_common::api_error::ErrorBody;
use cart_common::backoff::Backoff;
use cart_common::http::InternalClient;
use cart_common::paths::{CHECKOUT_PATH, READ_PATH, WRITE_PATH};
use cart_common::shard::Shard;
use cart_common::{ApiError, ClusterSpec, Service};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use super::metrics::METRICS;

/// What a group client may learn about nodes from a health watcher (the
/// coordinator's node-down protocol): which ones to avoid.
pub trait RouteFilter: Send + Sync {
    /// Addresses of nodes that may get requests; empty when nothing is known.
    fn routable(&self) -> Vec<String>;
    fn is_down(&self, addr: &str) -> bool;
}

const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

pub struct GroupClient {
    service: Service,
    shard: Shard,
    client: InternalClient,
    /// Known node addresses: the spec's, plus any a leader hint names.
    nodes: RwLock<Vec<String>>,
    leader: RwLock<Option<String>>,
    cursor: AtomicUsize,
    /// Reads go round every routable replica (`raft.follower_reads`).
    spread_reads: bool,
    read_cursor: AtomicUsize,
    deadline: Duration,
    bulk_deadline: Duration,
    /// The own service's node-down protocol, when this client has one:
    /// nodes marked down get no requests.
    health: Option<Arc<dyn RouteFilter>>,
}

/// How long one attempt may take before trying elsewhere.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

impl GroupClient {
    pub fn new(spec: &ClusterSpec, service: Service, shard: Shard) -> Self {
        let limits = &spec.limits;
        let reasons = ["not_leader", "unreachable", "unavailable", "abandoned"];
        let retries = reasons.map(|reason| [service.name(), reason]);
        cart_common::metrics::precreate(&METRICS.group_retries, retries);
        Self {
            service,
            shard,
            client: InternalClient::for_cluster(
                spec,
                Duration::from_millis(limits.bulk_timeout_ms),
            )
            .for_shard(shard),
            nodes: RwLock::new(spec.nodes(service).into_iter().map(|n| n.addr).collect()),
            leader: RwLock::new(None),
            cursor: AtomicUsize::new(0),
            spread_reads: spec.raft.follower_reads,
            read_cursor: AtomicUsize::new(0),
            deadline: Duration::from_millis(limits.request_timeout_ms),
            bulk_deadline: Duration::from_millis(limits.bulk_timeout_ms),
            health: None,
        }
    }

    /// Routes around the nodes `health` marks down.
    pub fn with_health(mut self, health: Arc<dyn RouteFilter>) -> Self {
        self.health = Some(health);
        self
    }

    pub fn service(&self) -> Service {
        self.service
    }

    pub fn shard(&self) -> Shard {
        self.shard
    }

    pub async fn write(&self, key: &RequestKey, cmd: Command) -> Result<Outcome, ApiError> {
        let bulk = matches!(
            cmd,
            Command::BatchInitItems { .. }
                | Command::BatchInitUsers { .. }
                | Command::BatchInitOrders { .. }
        );
        let body = WriteRequest {
            key: key.clone(),
            cmd,
        };
        let (deadline, attempt) = if bulk {
            (self.bulk_deadline, self.bulk_deadline)
        } else {
            (self.deadline, ATTEMPT_TIMEOUT)
        };
        self.call(WRITE_PATH, &body, deadline, attempt, Route::Leader)
            .await
            .map_err(refusal_is_a_bug)
    }

    /// A linearizable read: at the next replica in turn when follower
    /// reads are on, else at the leader.
    pub async fn read(&self, query: Query) -> Result<Outcome, ApiError> {
        let route = if self.spread_reads {
            Route::AnyReplica
        } else {
            Route::Leader
        };
        self.call(
            READ_PATH,
            &ReadRequest { query },
            self.deadline,
            ATTEMPT_TIMEOUT,
            route,
        )
        .await
        .map_err(refusal_is_a_bug)
    }

    /// A checkout at the order leader, which answers once the saga has
    /// ended or hands back the transaction it could not finish in its own
    /// bound. Waits up to `wait` in all — longer than the leader's bound, so
    /// a slow leader answers before an attempt is given up — following a new
    /// leader if the current one fails (the retry joins the same
    /// transaction).
    pub async fn checkout(
        &self,
        key: &RequestKey,
        order_id: &str,
        wait: Duration,
    ) -> Result<CheckoutReply, ApiError> {
        let body = CheckoutRequest {
            key: key.clone(),
            order_id: order_id.to_string(),
        };
        self.call(CHECKOUT_PATH, &body, wait, wait, Route::Leader)
            .await
            .map_err(refusal_is_a_bug)
    }

    /// An admin call to the leader (membership changes), which may take as
    /// long as a bulk write. A node's 400 refusal is passed on as is.
    pub async fn admin<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        self.call(
            path,
            body,
            self.bulk_deadline,
            self.bulk_deadline,
            Route::Leader,
        )
        .await
    }

    fn is_down(&self, addr: &str) -> bool {
        self.health.as_ref().is_some_and(|h| h.is_down(addr))
    }

    fn gave_up(&self, last_error: &str) -> ApiError {
        tracing::warn!(service = %self.service, shard = %self.shard, %last_error, "giving up on group");
        ApiError::unavailable(format!(
            "{} service (shard {}) could not answer in time ({last_error})",
            self.service, self.shard
        ))
    }

    /// Resolves once the health watcher has `addr` down and another node
    /// up; never without a watcher. While every node is down a request goes
    /// to one anyway, and is left as soon as another node is back: a leader
    /// that froze can make the watcher mark its followers down too (its
    /// last report said it could not reach them), and a request sent to
    /// the frozen one then would wait its whole bound.
    async fn marked_down(&self, addr: &str) {
        let Some(health) = &self.health else {
            return std::future::pending().await;
        };
        while !left_behind(health.as_ref(), addr) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The nodes that may get requests: the health watcher's routable
    /// ones, else every known node.
    fn candidates(&self) -> Vec<String> {
        let routable = self.health.as_ref().map(|h| h.routable());
        match routable {
            Some(nodes) if !nodes.is_empty() => nodes,
            _ => self.nodes.read().map(|n| n.clone()).unwrap_or_default(),
        }
    }

    /// The next replica in turn for a read any replica may serve.
    fn replica(&self) -> String {
        let nodes = self.candidates();
        let i = self.read_cursor.fetch_add(1, Ordering::Relaxed);
        nodes
            .get(i % nodes.len().max(1))
            .cloned()
            .unwrap_or_default()
    }

    fn target(&self) -> String {
        if let Some(leader) = self.leader.read().ok().and_then(|l| l.clone()) {
            if !self.is_down(&leader) {
                return leader;
            }
        }
        let nodes = self.candidates();
        let i = self.cursor.load(Ordering::Relaxed);
        nodes
            .get(i % nodes.len().max(1))
            .cloned()
            .unwrap_or_default()
    }

    /// Forget the leader guess and move on to the next known node.
    fn rotate(&self, reason: &str) {
        METRICS
            .group_retries
            .with_label_values(&[self.service.name(), reason])
            .inc();
        if let Ok(mut l) = self.leader.write() {
            *l = None;
        }
        self.cursor.fetch_add(1, Ordering::Relaxed);
    }

    fn follow(&self, addr: String) {
        METRICS
            .group_retries
            .with_label_values(&[self.service.name(), "not_leader"])
            .inc();
        if let Ok(mut nodes) = self.nodes.write() {
            if !nodes.contains(&addr) {
                nodes.push(addr.clone());
            }
        }
        if let Ok(mut l) = self.leader.write() {
            *l = Some(addr);
        }
    }

    fn remember_leader(&self, addr: &str) {
        if let Ok(mut l) = self.leader.write() {
            if l.as_deref() != Some(addr) {
                *l = Some(addr.to_string());
            }
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        deadline: Duration,
        attempt_timeout: Duration,
        route: Route,
    ) -> Result<T, ApiError> {
        let give_up = Instant::now() + deadline;
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut last_error: String;
        // Only a first attempt goes to any replica: after a refusal or a
        // failure, the retries follow the leader as every other call does.
        let mut any_replica = route == Route::AnyReplica;
        loop {
            let target = if any_replica {
                self.replica()
            } else {
                self.target()
            };
            let attempt = tracing::info_span!(
                "group.attempt",
                otel.kind = "client",
                target_service = self.service.name(),
                shard = %self.shard,
                path,
                node = %target,
            );
            let request = attempt.in_scope(|| {
                self.client
                    .post(&target, path, body)
                    .timeout(attempt_timeout.min(give_up.saturating_duration_since(Instant::now())))
                    .send()
                    .instrument(attempt.clone())
            });
            // A node marked down while we wait (frozen, partitioned) is left
            // behind at once for one that is up; the retry carries the same
            // request id.
            let sent = tokio::select! {
                sent = request => Some(sent),
                _ = self.marked_down(&target) => None,
            };
            let mut wait = true;
            let Some(sent) = sent else {
                last_error = format!("{target}: marked down while answering");
                self.rotate("abandoned");
                if Instant::now() >= give_up {
                    return Err(self.gave_up(&last_error));
                }
                backoff.wait().await;
                continue;
            };
            match sent {
                Ok(resp) => match resp.status() {
                    StatusCode::OK => match resp.json::<T>().await {
                        Ok(outcome) => {
                            // Where any replica may answer, an answer says
                            // nothing of who leads.
                            if route == Route::Leader {
                                self.remember_leader(&target);
                            }
                            return Ok(outcome);
                        }
                        Err(e) => {
                            // The answer was lost on the way: the write may
                            // have happened, so retry with the same id.
                            last_error = format!("{target}: unreadable answer: {e}");
                            self.rotate("unreachable");
                        }
                    },
                    StatusCode::MISDIRECTED_REQUEST => {
                        let hint = resp.json::<NotLeader>().await.unwrap_or_default();
                        match hint.leader_addr {
                            Some(addr) if addr != target => {
                                self.follow(addr);
                                wait = false;
                            }
                            _ => self.rotate("not_leader"),
                        }
                        last_error = format!("{target}: not leader");
                    }
                    StatusCode::TOO_MANY_REQUESTS => return Err(ApiError::overloaded()),
                    StatusCode::BAD_REQUEST => {
                        let text = resp.text().await.unwrap_or_default();
                        let body = serde_json::from_str(&text).unwrap_or_else(|_| ErrorBody {
                            error: "refused".into(),
                            message: text,
                        });
                        return Err(ApiError {
                            status: StatusCode::BAD_REQUEST,
                            body,
                        });
                    }
                    status => {
                        last_error = format!("{target}: {status}");
                        self.rotate("unavailable");
                    }
                },
                Err(e) => {
                    last_error = format!("{target}: {e}");
                    self.rotate("unreachable");
                }
            }
            any_replica = false;
            if Instant::now() >= give_up {
                return Err(self.gave_up(&last_error));
            }
            if wait {
                backoff.wait().await;
            }
        }
    }
}

/// Where a call may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// The leader (found by following 421 hints).
    Leader,
    /// Any replica first: a follower answers reads after catching up
    /// with the leader's read index.
    AnyReplica,
}

/// Whether a request at `addr` should be left for another node: `addr`
/// is down and some node is not.
fn left_behind(health: &dyn RouteFilter, addr: &str) -> bool {
    health.is_down(addr) && !health.routable().is_empty()
}

/// Reads and writes are built by the coordinator itself: a node refusing one
/// as malformed is a bug here, not the client's fault.
fn refusal_is_a_bug(e: ApiError) -> ApiError {
    if e.status == StatusCode::BAD_REQUEST {
        ApiError::internal(format!("node refused request: {}", e.body.message))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Marks the addresses in `down` down.
    struct Down(RwLock<BTreeSet<String>>, Vec<String>);

    impl RouteFilter for Down {
        fn routable(&self) -> Vec<String> {
            let down = self.0.read().unwrap();
            self.1
                .iter()
                .filter(|a| !down.contains(*a))
                .cloned()
                .collect()
        }
        fn is_down(&self, addr: &str) -> bool {
            self.0.read().unwrap().contains(addr)
        }
    }

    /// The stock nodes' addresses, a filter that marks none down yet, and a
    /// client of the stock group routing by it.
    fn stock_group() -> (Vec<String>, Arc<Down>, GroupClient) {
        let spec = crate::test_spec::spec();
        let all: Vec<String> = spec
            .nodes(Service::Stock)
            .into_iter()
            .map(|n| n.addr)
            .collect();
        let filter = Arc::new(Down(RwLock::new(BTreeSet::new()), all.clone()));
        let group = GroupClient::new(&spec, Service::Stock, Shard(0)).with_health(filter.clone());
        (all, filter, group)
    }

    #[test]
    fn reads_go_round_every_routable_replica_without_moving_the_leader_guess() {
        let (all, filter, group) = stock_group();
        assert!(group.spread_reads, "follower reads are on by default");
        group.remember_leader(&all[0]);
        let seen: BTreeSet<String> = (0..6).map(|_| group.replica()).collect();
        assert_eq!(seen, all.iter().cloned().collect::<BTreeSet<_>>());
        assert_eq!(group.target(), all[0], "the leader guess stays");

        filter.0.write().unwrap().insert(all[1].clone());
        for _ in 0..6 {
            assert_ne!(group.replica(), all[1], "a node marked down gets no reads");
        }
    }

    #[test]
    fn nodes_marked_down_get_no_requests() {
        let (all, filter, group) = stock_group();
        let down = all[1].clone();

        let mut seen = BTreeSet::new();
        for _ in 0..9 {
            seen.insert(group.target());
            group.rotate("unreachable");
        }
        assert!(seen.contains(&down), "all nodes are candidates at first");

        filter.0.write().unwrap().insert(down.clone());
        // Not as the cached leader, not in rotation.
        group.remember_leader(&down);
        for _ in 0..9 {
            assert_ne!(group.target(), down);
            group.rotate("unreachable");
        }
    }

    #[test]
    fn a_request_at_a_node_marked_down_is_left_once_another_node_is_up() {
        let (all, filter, _group) = stock_group();
        assert!(!left_behind(filter.as_ref(), &all[0]), "not down");
        filter.0.write().unwrap().extend(all.iter().cloned());
        assert!(
            !left_behind(filter.as_ref(), &all[0]),
            "every node down: nowhere better to go"
        );
        filter.0.write().unwrap().remove(&all[1]);
        assert!(
            left_behind(filter.as_ref(), &all[0]),
            "another node is back"
        );
        assert!(!left_behind(filter.as_ref(), &all[1]), "the one back stays");
    }
}
