//! Rounds of scrapes turned into history per service and the latest load
//! of each node.
//!
//! From the coordinators: the public API's request rate, error rate and
//! p99, and the order coordinators' checkouts by outcome. From the nodes:
//! writes proposed (on the leader) and applied, Raft entries, linearizable
//! reads and the p99 of a write, per service; the order nodes' sagas; and
//! per node what tells a slow disk from a slow follower from an overloaded
//! leader (`NodeLoad`). With `cross_service = "direct"` the order nodes call
//! the payment and stock nodes themselves, so only the nodes see that
//! traffic.

use std::collections::{BTreeMap, VecDeque};

pub use cart_common::checkout::CheckoutOutcome;
use cart_common::metrics::Label;

use super::page::{add_increase, increase, quantile, Buckets, Page, Sample};

/// Points kept per series: five minutes at the default 1 s refresh.
pub const HISTORY: usize = 300;

/// Requests served, by service, role, route and status.
const REQUESTS: &str = "cart_http_requests_total";
/// Request latency histogram, by service, role and route.
const DURATION: &str = "cart_http_request_duration_seconds";
/// The `role` of a coordinator's public cart API (its admin port has another).
const PUBLIC_ROLE: &str = "coordinator";
/// Checkouts answered by the order coordinators, by outcome.
const CHECKOUTS: &str = "cart_checkouts_total";
/// Client writes per entry the leader proposed: `_sum` counts writes,
/// `_count` entries.
const BATCH_SUM: &str = "cart_raft_proposal_batch_writes_sum";
const BATCH_COUNT: &str = "cart_raft_proposal_batch_writes_count";
const APPLIED_WRITES: &str = "cart_raft_applied_writes_total";
const WRITE_DURATION: &str = "cart_raft_write_duration_seconds";
const FLUSH_DURATION: &str = "cart_raft_log_flush_duration_seconds";
const QUEUE: &str = "cart_raft_proposal_queue_writes";
const IN_FLIGHT: &str = "cart_raft_proposals_in_flight";
const LAST_LOG: &str = "cart_raft_last_log_index";
const COMMITTED: &str = "cart_raft_committed_index";
const SAGAS_IN_FLIGHT: &str = "cart_sagas_in_flight";
const OLDEST_SAGA: &str = "cart_saga_oldest_in_flight_seconds";
const COMPENSATIONS: &str = "cart_saga_compensations_total";
/// The route of a node's linearizable reads.
const READ_ROUTE: &str = cart_common::paths::READ_PATH;
/// The service whose coordinators and nodes run checkouts.
const ORDER: &str = "order";

/// A series kept per service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Public API requests per second, on the coordinators.
    Requests,
    /// Public API requests answered 4xx/5xx per second.
    Errors,
    /// p99 latency of the public API, ms.
    P99Ms,
    /// Client writes the leader put into entries, per second.
    WritesProposed,
    /// Client writes applied per second (by the replica that applied most).
    WritesApplied,
    /// Raft entries of client writes per second.
    Entries,
    /// Linearizable reads served per second.
    Reads,
    /// p99 of a write on the leader, ms.
    WriteP99Ms,
    /// Checkouts answered per second by outcome (order coordinators).
    Checkouts(CheckoutOutcome),
    /// Sagas being driven (order nodes).
    SagasInFlight,
    /// Age of the oldest saga being driven, seconds.
    OldestSagaSecs,
    /// Compensations run per second.
    Compensations,
}

/// One point of a series; `None`: nothing to measure (a p99 of no requests).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub at_ms: u64,
    pub value: Option<f64>,
}

/// A node of a service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeKey {
    pub service: String,
    pub id: u64,
}

/// What one node's last page said about its load.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeLoad {
    /// Writes waiting for the next entry (a leader's).
    pub queue: f64,
    /// Entries handed to Raft, not yet applied (a leader's).
    pub in_flight: f64,
    /// Entries in its log beyond the commit index it knows.
    pub uncommitted: f64,
    /// p99 of a log flush (with fsync) since the previous scrape, ms.
    pub fsync_p99_ms: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
struct Scrape {
    at_ms: u64,
    page: Page,
}

/// History per service and the latest load per node, from rounds of
/// scrapes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    coordinators: BTreeMap<String, Scrape>,
    nodes: BTreeMap<NodeKey, Scrape>,
    history: BTreeMap<(String, Metric), VecDeque<Point>>,
    load: BTreeMap<NodeKey, NodeLoad>,
}

/// Rates summed over the processes of one round, per service.
#[derive(Default)]
struct Round {
    sums: BTreeMap<(String, Metric), f64>,
    maxima: BTreeMap<(String, Metric), f64>,
    buckets: BTreeMap<(String, Metric), Buckets>,
}

impl Round {
    fn add(&mut self, service: &str, metric: Metric, v: f64) {
        *self.sums.entry((service.to_string(), metric)).or_default() += v;
    }

    fn max(&mut self, service: &str, metric: Metric, v: f64) {
        let m = self
            .maxima
            .entry((service.to_string(), metric))
            .or_default();
        *m = m.max(v);
    }

    fn observe(&mut self, service: &str, metric: Metric, later: &Buckets, earlier: &Buckets) {
        let into = self
            .buckets
            .entry((service.to_string(), metric))
            .or_default();
        add_increase(into, later, earlier);
    }

    /// Every figure of the round as points at `at_ms`.
    fn points(self, at_ms: u64) -> impl Iterator<Item = ((String, Metric), Point)> {
        let values = self.sums.into_iter().chain(self.maxima);
        let values = values.map(move |(k, v)| {
            (
                k,
                Point {
                    at_ms,
                    value: Some(v),
                },
            )
        });
        let p99s = self.buckets.into_iter().map(move |(k, b)| {
            let value = quantile(0.99, &b).map(|s| s * 1000.0);
            (k, Point { at_ms, value })
        });
        values.chain(p99s)
    }
}

/// Seconds between two scrapes, if the later one is later.
fn interval(later_ms: u64, earlier_ms: u64) -> Option<f64> {
    let secs = later_ms.saturating_sub(earlier_ms) as f64 / 1000.0;
    (secs > 0.0).then_some(secs)
}

fn public(service: &str) -> impl Fn(&Sample) -> bool + '_ {
    move |s| s.label("role") == Some(PUBLIC_ROLE) && s.label("service") == Some(service)
}

fn everything(_: &Sample) -> bool {
    true
}

impl Traffic {
    /// Takes one round of coordinator scrapes at `at_ms`: per coordinator
    /// admin address, its page, or `None` if it did not answer.
    pub fn record_coordinators(&mut self, at_ms: u64, pages: &[(String, Option<String>)]) {
        let mut round = Round::default();
        for (addr, text) in pages {
            let Some(text) = text else {
                // Start afresh when it is back: no delta across a gap.
                self.coordinators.remove(addr);
                continue;
            };
            let now = Scrape {
                at_ms,
                page: Page::parse(text),
            };
            if let Some(before) = self.coordinators.get(addr) {
                if let Some(secs) = interval(at_ms, before.at_ms) {
                    public_rates(&mut round, &now.page, &before.page, secs);
                }
            }
            self.coordinators.insert(addr.clone(), now);
        }
        self.push_round(round, at_ms);
    }

    /// Takes one round of node scrapes at `at_ms`: every node of the view,
    /// with its page or `None` if it did not answer. Nodes no longer in the
    /// view are forgotten.
    pub fn record_nodes(&mut self, at_ms: u64, pages: &[(NodeKey, Option<String>)]) {
        let mut round = Round::default();
        self.nodes.retain(|k, _| pages.iter().any(|(p, _)| p == k));
        self.load.clear();
        for (key, text) in pages {
            let Some(text) = text else {
                self.nodes.remove(key);
                continue;
            };
            let now = Scrape {
                at_ms,
                page: Page::parse(text),
            };
            let before = self.nodes.get(key);
            let secs = before.and_then(|b| interval(at_ms, b.at_ms));
            let fsync_p99_ms = match (before, secs) {
                (Some(before), Some(secs)) => {
                    node_rates(&mut round, &key.service, &now.page, &before.page, secs);
                    let mut flushes = Buckets::new();
                    let (later, earlier) = (&now.page, &before.page);
                    add_increase(
                        &mut flushes,
                        &later.buckets(FLUSH_DURATION, everything),
                        &earlier.buckets(FLUSH_DURATION, everything),
                    );
                    quantile(0.99, &flushes).map(|s| s * 1000.0)
                }
                _ => None,
            };
            // Summed over the node's shards (each its own Raft group).
            let gauge = |name| now.page.sum(name, everything);
            self.load.insert(
                key.clone(),
                NodeLoad {
                    queue: gauge(QUEUE),
                    in_flight: gauge(IN_FLIGHT),
                    uncommitted: (gauge(LAST_LOG) - gauge(COMMITTED)).max(0.0),
                    fsync_p99_ms,
                },
            );
            if key.service == ORDER {
                round.add(ORDER, Metric::SagasInFlight, gauge(SAGAS_IN_FLIGHT));
                round.max(ORDER, Metric::OldestSagaSecs, gauge(OLDEST_SAGA));
            }
            self.nodes.insert(key.clone(), now);
        }
        self.push_round(round, at_ms);
    }

    fn push_round(&mut self, round: Round, at_ms: u64) {
        for ((service, metric), point) in round.points(at_ms) {
            self.push(&service, metric, point);
        }
    }

    /// A series' points, oldest first.
    pub fn points(&self, service: &str, metric: Metric) -> Option<&VecDeque<Point>> {
        self.history.get(&(service.to_string(), metric))
    }

    /// A series' latest value.
    pub fn last(&self, service: &str, metric: Metric) -> Option<f64> {
        self.points(service, metric)?.back()?.value
    }

    /// The latest load of each node of `service` that answered, by id.
    pub fn loads<'a>(&'a self, service: &'a str) -> impl Iterator<Item = (u64, &'a NodeLoad)> + 'a {
        self.load
            .iter()
            .filter(move |(k, _)| k.service == service)
            .map(|(k, l)| (k.id, l))
    }

    /// Appends a point directly (also for fixtures of rendering tests).
    pub fn push(&mut self, service: &str, metric: Metric, point: Point) {
        let points = self
            .history
            .entry((service.to_string(), metric))
            .or_default();
        points.push_back(point);
        while points.len() > HISTORY {
            points.pop_front();
        }
    }

    /// Sets a node's load directly (fixtures of rendering tests).
    pub fn set_load(&mut self, key: NodeKey, load: NodeLoad) {
        self.load.insert(key, load);
    }
}

/// The public API's rates of every service on one coordinator's page, and
/// the checkouts of an order coordinator.
fn public_rates(round: &mut Round, now: &Page, before: &Page, secs: f64) {
    let mut services: Vec<&str> = now
        .samples(REQUESTS)
        .iter()
        .filter(|s| s.label("role") == Some(PUBLIC_ROLE))
        .filter_map(|s| s.label("service"))
        .collect();
    services.sort_unstable();
    services.dedup();
    for service in services {
        let keep = public(service);
        let rate = |page: &Page, errors: bool| {
            page.sum(REQUESTS, |s| {
                keep(s) && (!errors || s.label("status").is_some_and(|c| c >= "400"))
            })
        };
        let requests = increase(rate(now, false), rate(before, false));
        let errors = increase(rate(now, true), rate(before, true));
        round.add(service, Metric::Requests, requests / secs);
        round.add(service, Metric::Errors, errors / secs);
        let (later, earlier) = (
            now.buckets(DURATION, &keep),
            before.buckets(DURATION, &keep),
        );
        round.observe(service, Metric::P99Ms, &later, &earlier);
    }
    if now.samples(CHECKOUTS).is_empty() {
        return;
    }
    for outcome in CheckoutOutcome::all() {
        let of = |s: &Sample| s.label("outcome") == Some(outcome.as_str());
        let n = increase(now.sum(CHECKOUTS, of), before.sum(CHECKOUTS, of));
        round.add(ORDER, Metric::Checkouts(outcome), n / secs);
    }
}

/// One node's rates since its previous scrape.
fn node_rates(round: &mut Round, service: &str, now: &Page, before: &Page, secs: f64) {
    let counter = |name: &str| {
        // Summed over the node's shards (each its own Raft group).
        let value = |p: &Page| p.sum(name, everything);
        increase(value(now), value(before)) / secs
    };
    round.add(service, Metric::WritesProposed, counter(BATCH_SUM));
    round.add(service, Metric::Entries, counter(BATCH_COUNT));
    // Every replica applies every write: the one furthest along counts.
    round.max(service, Metric::WritesApplied, counter(APPLIED_WRITES));
    let reads = |s: &Sample| s.label("route") == Some(READ_ROUTE);
    let served = increase(now.sum(REQUESTS, reads), before.sum(REQUESTS, reads));
    round.add(service, Metric::Reads, served / secs);
    let (later, earlier) = (
        now.buckets(WRITE_DURATION, everything),
        before.buckets(WRITE_DURATION, everything),
    );
    round.observe(service, Metric::WriteP99Ms, &later, &earlier);
    if service == ORDER {
        round.add(
            ORDER,
            Metric::Compensations,
            counter_sum(now, before, COMPENSATIONS) / secs,
        );
    }
}

fn counter_sum(now: &Page, before: &Page, name: &str) -> f64 {
    increase(now.sum(name, everything), before.sum(name, everything))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator_page(ok: u64, bad: u64, fast: u64, slow: u64) -> String {
        let total = fast + slow;
        format!(
            "# HELP cart_http_requests_total x\n\
             cart_http_requests_total{{service=\"stock\",role=\"coordinator\",route=\"/stock/find/{{item_id}}\",status=\"200\"}} {ok}\n\
             cart_http_requests_total{{service=\"stock\",role=\"coordinator\",route=\"/stock/find/{{item_id}}\",status=\"503\"}} {bad}\n\
             cart_http_requests_total{{service=\"stock\",role=\"coordinator_admin\",route=\"/metrics\",status=\"200\"}} 999\n\
             cart_http_request_duration_seconds_bucket{{service=\"stock\",role=\"coordinator\",route=\"/stock/find/{{item_id}}\",le=\"0.01\"}} {fast}\n\
             cart_http_request_duration_seconds_bucket{{service=\"stock\",role=\"coordinator\",route=\"/stock/find/{{item_id}}\",le=\"0.1\"}} {total}\n\
             cart_http_request_duration_seconds_bucket{{service=\"stock\",role=\"coordinator\",route=\"/stock/find/{{item_id}}\",le=\"+Inf\"}} {total}\n"
        )
    }

    /// A node's page: `writes` in `entries`, `applied` writes, `reads`,
    /// write and flush latencies all under 10 ms but `slow` of each.
    fn node_page(writes: u64, entries: u64, applied: u64, reads: u64, slow: u64) -> String {
        let fast = writes.saturating_sub(slow);
        format!(
            "cart_raft_proposal_batch_writes_sum {writes}\n\
             cart_raft_proposal_batch_writes_count {entries}\n\
             cart_raft_applied_writes_total {applied}\n\
             cart_http_requests_total{{service=\"stock\",role=\"node\",route=\"/internal/read\",status=\"200\"}} {reads}\n\
             cart_http_requests_total{{service=\"stock\",role=\"node\",route=\"/internal/write\",status=\"200\"}} {writes}\n\
             cart_raft_write_duration_seconds_bucket{{le=\"0.01\"}} {fast}\n\
             cart_raft_write_duration_seconds_bucket{{le=\"0.1\"}} {writes}\n\
             cart_raft_write_duration_seconds_bucket{{le=\"+Inf\"}} {writes}\n\
             cart_raft_log_flush_duration_seconds_bucket{{le=\"0.01\"}} {fast}\n\
             cart_raft_log_flush_duration_seconds_bucket{{le=\"0.1\"}} {writes}\n\
             cart_raft_log_flush_duration_seconds_bucket{{le=\"+Inf\"}} {writes}\n\
             cart_raft_proposal_queue_writes 12\n\
             cart_raft_proposals_in_flight 1\n\
             cart_raft_last_log_index{{shard=\"0\"}} 105\n\
             cart_raft_committed_index{{shard=\"0\"}} 100\n\
             cart_raft_last_log_index{{shard=\"1\"}} 7\n\
             cart_raft_committed_index{{shard=\"1\"}} 7\n"
        )
    }

    fn key(service: &str, id: u64) -> NodeKey {
        NodeKey {
            service: service.into(),
            id,
        }
    }

    fn last(t: &Traffic, service: &str, metric: Metric) -> f64 {
        t.last(service, metric)
            .unwrap_or_else(|| panic!("no {metric:?} of {service}"))
    }

    #[test]
    fn public_rates_and_p99_come_from_deltas_between_scrapes() {
        let mut t = Traffic::default();
        let a = "127.0.0.1:1".to_string();
        t.record_coordinators(1_000, &[(a.clone(), Some(coordinator_page(10, 0, 10, 0)))]);
        assert!(
            t.points("stock", Metric::Requests).is_none(),
            "one scrape has no rate yet"
        );
        // 2 s later: 100 more requests, 10 of them errors, 2 slow ones; the
        // admin port's requests do not count.
        t.record_coordinators(3_000, &[(a, Some(coordinator_page(100, 10, 108, 2)))]);
        assert_eq!(last(&t, "stock", Metric::Requests), 50.0);
        assert_eq!(last(&t, "stock", Metric::Errors), 5.0);
        // rank 99 of 100: inside the 0.01..0.1 bucket, halfway.
        let p99 = last(&t, "stock", Metric::P99Ms);
        assert!((p99 - 55.0).abs() < 1e-6, "{p99}");
    }

    #[test]
    fn a_restarted_coordinator_or_a_gap_is_no_negative_rate() {
        let mut t = Traffic::default();
        let a = "a".to_string();
        t.record_coordinators(0, &[(a.clone(), Some(coordinator_page(100, 0, 100, 0)))]);
        t.record_coordinators(1_000, &[(a.clone(), Some(coordinator_page(5, 0, 5, 0)))]);
        assert_eq!(last(&t, "stock", Metric::Requests), 5.0);
        t.record_coordinators(2_000, &[(a.clone(), None)]);
        t.record_coordinators(3_000, &[(a, Some(coordinator_page(50, 0, 50, 0)))]);
        let points = t.points("stock", Metric::Requests).unwrap();
        assert_eq!(points.len(), 1, "no delta across the gap");
    }

    #[test]
    fn checkouts_are_counted_by_outcome_on_order_coordinators_only() {
        let page = |paid: u64, short: u64| {
            format!(
                "cart_checkouts_total{{outcome=\"paid\"}} {paid}\n\
                 cart_checkouts_total{{outcome=\"insufficient_stock\"}} {short}\n"
            )
        };
        let mut t = Traffic::default();
        let (o, s) = ("order-0".to_string(), "stock-0".to_string());
        let stock = coordinator_page(0, 0, 0, 0);
        t.record_coordinators(
            0,
            &[
                (o.clone(), Some(page(0, 0))),
                (s.clone(), Some(stock.clone())),
            ],
        );
        t.record_coordinators(2_000, &[(o, Some(page(40, 6))), (s, Some(stock))]);
        let paid = Metric::Checkouts(CheckoutOutcome::Paid);
        assert_eq!(last(&t, "order", paid), 20.0);
        let short = Metric::Checkouts(CheckoutOutcome::InsufficientStock);
        assert_eq!(last(&t, "order", short), 3.0);
        assert_eq!(
            last(&t, "order", Metric::Checkouts(CheckoutOutcome::Failed)),
            0.0
        );
        assert!(t.points("stock", paid).is_none());
    }

    #[test]
    fn node_rates_sum_proposals_and_reads_and_take_the_furthest_apply() {
        let mut t = Traffic::default();
        let (leader, follower) = (key("stock", 1), key("stock", 2));
        t.record_nodes(
            0,
            &[
                (leader.clone(), Some(node_page(0, 0, 0, 0, 0))),
                (follower.clone(), Some(node_page(0, 0, 0, 0, 0))),
            ],
        );
        assert!(t.points("stock", Metric::WritesProposed).is_none());
        t.record_nodes(
            2_000,
            &[
                // The leader proposed 200 writes in 40 entries, served 60 reads.
                (leader.clone(), Some(node_page(200, 40, 200, 60, 5))),
                // The follower proposes nothing and is 10 writes behind.
                (follower.clone(), Some(node_page(0, 0, 190, 0, 0))),
            ],
        );
        assert_eq!(last(&t, "stock", Metric::WritesProposed), 100.0);
        assert_eq!(last(&t, "stock", Metric::Entries), 20.0);
        assert_eq!(last(&t, "stock", Metric::WritesApplied), 100.0);
        assert_eq!(last(&t, "stock", Metric::Reads), 30.0);
        let p99 = last(&t, "stock", Metric::WriteP99Ms);
        assert!(p99 > 10.0 && p99 < 100.0, "{p99}");
        let loads: Vec<(u64, NodeLoad)> = t.loads("stock").map(|(id, l)| (id, *l)).collect();
        assert_eq!(loads.len(), 2);
        let (_, l) = loads[0];
        assert_eq!((l.queue, l.in_flight, l.uncommitted), (12.0, 1.0, 5.0));
        assert!(l.fsync_p99_ms.is_some_and(|ms| ms > 10.0), "{l:?}");
        assert_eq!(loads[1].1.fsync_p99_ms, None, "no flush observed");
    }

    #[test]
    fn a_node_that_left_or_did_not_answer_has_no_load() {
        let mut t = Traffic::default();
        let (a, b) = (key("stock", 1), key("stock", 2));
        let page = Some(node_page(1, 1, 1, 0, 0));
        t.record_nodes(0, &[(a.clone(), page.clone()), (b.clone(), page.clone())]);
        t.record_nodes(1_000, &[(a.clone(), None), (b, page.clone())]);
        assert_eq!(
            t.loads("stock").map(|(id, _)| id).collect::<Vec<_>>(),
            vec![2]
        );
        t.record_nodes(2_000, &[(a, page)]);
        assert_eq!(
            t.loads("stock").map(|(id, _)| id).collect::<Vec<_>>(),
            vec![1]
        );
        assert!(
            t.nodes.keys().all(|k| k.id == 1),
            "a node gone from the view is forgotten"
        );
    }

    #[test]
    fn sagas_in_flight_and_compensations_come_from_the_order_nodes() {
        let page = |in_flight: u64, oldest: f64, refunds: u64| {
            format!(
                "cart_sagas_in_flight {in_flight}\n\
                 cart_saga_oldest_in_flight_seconds {oldest}\n\
                 cart_saga_compensations_total{{step=\"refund\"}} {refunds}\n"
            )
        };
        let mut t = Traffic::default();
        let (leader, follower) = (key("order", 1), key("order", 2));
        t.record_nodes(
            0,
            &[
                (leader.clone(), Some(page(0, 0.0, 0))),
                (follower.clone(), Some(page(0, 0.0, 0))),
            ],
        );
        t.record_nodes(
            1_000,
            &[
                (leader, Some(page(7, 0.4, 3))),
                (follower, Some(page(0, 0.0, 0))),
            ],
        );
        assert_eq!(last(&t, "order", Metric::SagasInFlight), 7.0);
        assert_eq!(last(&t, "order", Metric::OldestSagaSecs), 0.4);
        assert_eq!(last(&t, "order", Metric::Compensations), 3.0);
    }

    #[test]
    fn history_is_bounded() {
        let mut t = Traffic::default();
        for i in 0..(HISTORY as u64 + 10) {
            t.push(
                "stock",
                Metric::Requests,
                Point {
                    at_ms: i,
                    value: Some(1.0),
                },
            );
        }
        assert_eq!(t.points("stock", Metric::Requests).unwrap().len(), HISTORY);
    }
}
