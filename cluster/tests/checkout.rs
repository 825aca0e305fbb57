//! Checkout as one transaction across three Raft groups, on real processes:
//! the benchmark's consistency scenario, the same under SIGKILL of the order
//! leader and of a stock node and a payment coordinator, duplicate delivery
//! of saga steps, garbage collection of finished transactions, and
//! checkouts of paid orders answered without a write.

mod common;

use std::time::Duration;

use cart_cluster::harness::{LocalCluster, Role};
use cart_common::admin::Event;
use cart_common::http::InternalClient;
use cart_common::paths::{CHECKOUT_PATH, EVENTS_PATH, READ_INDEX_PATH, WRITE_PATH};
use cart_common::spec::CrossService;
use cart_common::Service;
use cart_services::api::{CheckoutRequest, WriteRequest};
use cart_services::domain::{Command, Outcome, Reply};
use cart_services::request_key::RequestKey;
use common::scenario::{audit, check_out_all, scenario, total_credit};
use common::{cluster, coordinator_admin, eventually, metric, Client};
use futures::future::join_all;

/// Each listed scenario (taking a shard count) runs on the default cluster,
/// and under `sharded::` on 3 shards per service, once leaders are spread.
macro_rules! on_one_and_three_shards {
    ($($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                self::shards::$test(1).await;
            }
        )*
        mod sharded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::shards::$test(3).await;
                }
            )*
        }
    };
}

on_one_and_three_shards!(
    the_consistency_scenario_sells_exactly_the_stock,
    killing_the_order_leader_mid_run_loses_no_money_and_no_stock,
    killing_a_stock_node_and_a_payment_coordinator_mid_run_loses_nothing,
    freezing_the_order_leader_mid_run_loses_nothing,
);

/// A cluster of every service with `shards` shards each, adjusted by
/// `tweak`, its leaders spread.
fn sharded_cluster(shards: u16, tweak: impl FnOnce(&mut cart_common::ClusterSpec)) -> LocalCluster {
    let cluster = cluster(&Service::ALL, |spec| {
        common::with_shards(spec, shards);
        tweak(spec);
    });
    common::wait_leaders_spread(&cluster, shards);
    cluster
}

mod shards {
    pub(super) use super::*;

    pub(super) async fn the_consistency_scenario_sells_exactly_the_stock(shards: u16) {
        let cluster = sharded_cluster(shards, |_| {});
        let client = Client::gateway(&cluster);
        let orders = scenario(&client).await;
        let (paid, refused) = check_out_all(&client, &orders, 0, || {}).await;
        assert_eq!((paid.len(), refused), (100, 900));
        // Immediately: no settling time.
        assert_eq!(client.stock("0").await, 0);
        assert_eq!(total_credit(&client).await, 900);
        audit(&client, &orders, &paid).await;
    }

    async fn saga_recoveries(cluster: &LocalCluster) -> Vec<Event> {
        let addr = coordinator_admin(cluster, Service::Order, 0);
        common::admin_get::<Vec<Event>>(&addr, &format!("{EVENTS_PATH}?service=order&limit=500"))
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.kind == "saga_recovery")
            .collect()
    }

    pub(super) async fn killing_the_order_leader_mid_run_loses_no_money_and_no_stock(shards: u16) {
        let mut cluster = sharded_cluster(shards, |_| {});
        let client = Client::gateway(&cluster);
        let orders = scenario(&client).await;
        let leader = cluster.leader(Service::Order).expect("an order leader");
        let (paid, _) = check_out_all(&client, &orders, 150, || {
            cluster.kill(Role::Node(Service::Order, leader)).unwrap();
        })
        .await;
        audit(&client, &orders, &paid).await;
        // The new leader finished what the old one left open, without a client.
        eventually("a saga_recovery event", Duration::from_secs(10), || async {
            let found = saga_recoveries(&cluster).await;
            (!found.is_empty()).then_some(found)
        })
        .await;
    }

    pub(super) async fn killing_a_stock_node_and_a_payment_coordinator_mid_run_loses_nothing(
        shards: u16,
    ) {
        // Through the coordinators, so the payment coordinator is on the path
        // (with shards, a saga step names its shard to the coordinator).
        let mut cluster = sharded_cluster(shards, |spec| {
            spec.cluster.cross_service = CrossService::Coordinator;
        });
        let client = Client::gateway(&cluster);
        let orders = scenario(&client).await;
        // The leader of the one item's stock shard: every take goes to it.
        let item_shard = cluster.spec.shard_of(Service::Stock, "0");
        let stock_leader = cluster
            .shard_leader(Service::Stock, item_shard)
            .expect("a stock leader of the item's shard");
        let (paid, _) = check_out_all(&client, &orders, 150, || {
            cluster
                .kill(Role::Node(Service::Stock, stock_leader))
                .unwrap();
            cluster
                .kill(Role::Coordinator(Service::Payment, 0))
                .unwrap();
        })
        .await;
        audit(&client, &orders, &paid).await;
    }

    pub(super) async fn freezing_the_order_leader_mid_run_loses_nothing(shards: u16) {
        let mut cluster = sharded_cluster(shards, |_| {});
        let client = Client::gateway(&cluster);
        let orders = scenario(&client).await;
        let leader = cluster.leader(Service::Order).expect("an order leader");
        let role = Role::Node(Service::Order, leader);
        let (paid, _) = check_out_all(&client, &orders, 150, || {
            cluster.freeze(role).unwrap();
        })
        .await;
        // Everything was answered while it was frozen; it comes back as a
        // follower and its stale drivers change nothing. (Right after the thaw
        // it works off the requests that queued up while it was frozen; the
        // audit's reads are retried like any client's, see `answered`.)
        cluster.thaw(role).unwrap();
        audit(&client, &orders, &paid).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        audit(&client, &orders, &paid).await;
    }
}

/// A command written straight to a group through a coordinator's internal
/// endpoint (with the cluster secret), as the saga's steps are.
async fn internal(
    cluster: &LocalCluster,
    service: Service,
    path: &str,
    body: serde_json::Value,
) -> Outcome {
    let addr = coordinator_admin(cluster, service, 0);
    InternalClient::for_cluster(&cluster.spec, Duration::from_secs(60))
        .post_json(&addr, path, &body)
        .await
        .expect("an outcome")
}

async fn write(
    cluster: &LocalCluster,
    service: Service,
    request_id: &str,
    cmd: Command,
) -> Outcome {
    let body = serde_json::to_value(WriteRequest {
        key: RequestKey::internal(request_id),
        cmd,
    })
    .unwrap();
    internal(cluster, service, WRITE_PATH, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_steps_apply_once_and_a_compensation_first_refuses_the_late_step() {
    let cluster = cluster(&[Service::Payment], |_| {});
    let client = Client::gateway(&cluster);
    assert!(client.post("/payment/batch_init/1/10").await.ok());
    let charge = |tx: &str| Command::Charge {
        tx_id: tx.into(),
        user_id: "0".into(),
        amount: 3,
    };

    // Delivered twice, under different request ids: the transaction id is
    // what makes it apply once.
    assert_eq!(
        write(&cluster, Service::Payment, "a-1", charge("tx-a")).await,
        Ok(Reply::Done)
    );
    assert_eq!(
        write(&cluster, Service::Payment, "a-2", charge("tx-a")).await,
        Ok(Reply::Done)
    );
    assert_eq!(client.credit("0").await, 7);

    // The compensation arrives before its step: the step is refused later.
    let refund = Command::Refund {
        tx_id: "tx-b".into(),
    };
    assert_eq!(
        write(&cluster, Service::Payment, "b-1", refund).await,
        Ok(Reply::Done)
    );
    let late = write(&cluster, Service::Payment, "b-2", charge("tx-b")).await;
    assert_eq!(late.unwrap_err().error, "transaction_aborted");
    assert_eq!(client.credit("0").await, 7);

    // And a compensation after its step undoes it once.
    for id in ["a-3", "a-4"] {
        let refund = Command::Refund {
            tx_id: "tx-a".into(),
        };
        assert_eq!(
            write(&cluster, Service::Payment, id, refund).await,
            Ok(Reply::Done)
        );
    }
    assert_eq!(client.credit("0").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_transactions_are_forgotten_through_the_logs() {
    // A short window so that the watermark passes within the test.
    let cluster = cluster(&Service::ALL, |spec| spec.raft.request_id_window_secs = 2);
    let client = Client::gateway(&cluster);
    let order = client.one_item_order(1).await;
    assert!(client.post(&format!("/orders/checkout/{order}")).await.ok());

    // The records exist, then the sweeper's watermark passes them and they
    // are forgotten in every group, through the logs (so on every replica).
    let size = |service: Service, node: u64, table: &str| {
        cluster
            .node_status(service, node)
            .and_then(|s| s.table_sizes.get(table).copied())
    };
    assert_eq!(size(Service::Payment, 1, "steps"), Some(1));
    assert_eq!(size(Service::Stock, 1, "steps"), Some(1));
    assert_eq!(size(Service::Order, 1, "checkouts"), Some(1));
    eventually(
        "finished transactions forgotten",
        Duration::from_secs(30),
        || async {
            let gone = (1..=3).all(|n| {
                size(Service::Payment, n, "steps") == Some(0)
                    && size(Service::Payment, n, "steps_by_time") == Some(0)
                    && size(Service::Stock, n, "steps") == Some(0)
                    && size(Service::Order, n, "checkouts") == Some(0)
                    && size(Service::Order, n, "checkouts_by_time") == Some(0)
            });
            gone.then_some(())
        },
    )
    .await;
    // Forgetting the records changed no balance.
    assert_eq!(client.stock("0").await, 9);
    assert_eq!(client.credit("0").await, 9);
}

/// The order leader's admin address, and a reader of the last log index
/// it applied.
fn order_leader(cluster: &LocalCluster) -> (String, impl Fn() -> u64 + '_) {
    let leader = cluster.leader(Service::Order).expect("an order leader");
    let applied = move || {
        cluster
            .node_status(Service::Order, leader)
            .and_then(|s| s.last_applied)
            .unwrap_or(0)
    };
    (
        cluster.admin_addr(Role::Node(Service::Order, leader)),
        applied,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_leader_sweeps_once_a_second_not_once_per_log_entry() {
    let cluster = cluster(&Service::ALL, |_| {});
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/10/1000/1").await.ok());
    assert!(client.post("/payment/batch_init/10/1000").await.ok());
    assert!(client.post("/orders/batch_init/200/10/10/1").await.ok());
    let (addr, applied) = order_leader(&cluster);
    let sweeps = || metric(&addr, "cart_saga_sweeps_total", &[]);
    let (sweeps_before, applied_before) = (sweeps().await.expect("sweeps"), applied());
    let started = std::time::Instant::now();
    // 200 checkouts, 20 at a time: hundreds of order entries.
    for chunk in (0..200).collect::<Vec<_>>().chunks(20) {
        join_all(chunk.iter().map(|i| {
            let client = client.clone();
            async move { assert!(client.post(&format!("/orders/checkout/{i}")).await.ok()) }
        }))
        .await;
    }
    let secs = started.elapsed().as_secs_f64();
    let entries = applied() - applied_before;
    let swept = sweeps().await.expect("sweeps") - sweeps_before;
    let bound = secs.ceil() + 2.0;
    // Entries well beyond the bound, so that a sweep per entry would show.
    assert!(
        entries as f64 >= 4.0 * bound,
        "200 checkouts in {secs:.1} s made only {entries} order entries"
    );
    assert!(
        swept <= bound,
        "{swept} sweeps in {secs:.1} s for {entries} entries: a sweep per entry, not per second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checking_out_a_paid_order_again_writes_nothing_and_a_used_id_still_counts() {
    let cluster = cluster(&Service::ALL, |_| {});
    let client = Client::gateway(&cluster);
    let order = client.one_item_order(3).await;
    let path = format!("/orders/checkout/{order}");
    assert!(client.post_with_id(&path, "pay").await.ok());
    assert_eq!((client.credit("0").await, client.stock("0").await), (7, 9));

    let (addr, applied) = order_leader(&cluster);
    let answered = || {
        metric(
            &addr,
            "cart_saga_paid_checks_total",
            &[("result", "answered")],
        )
    };
    let (answered_before, applied_before) = (answered().await.expect("paid checks"), applied());
    for i in 0..5 {
        let again = client.post_with_id(&path, &format!("again-{i}")).await;
        assert!(again.ok(), "{again:?}");
    }
    assert_eq!(
        answered().await.expect("paid checks") - answered_before,
        5.0,
        "every checkout of the paid order answered from the leader's state"
    );
    let entries = applied() - applied_before;
    assert!(
        entries < 5,
        "5 checkouts of a paid order wrote {entries} order entries"
    );
    assert_eq!((client.credit("0").await, client.stock("0").await), (7, 9));

    // The retry of the checkout that paid it is answered from the log.
    assert!(client.post_with_id(&path, "pay").await.ok());
    // An id used for another operation is refused, paid order or not.
    let other = client.post("/orders/create/0").await.str("order_id");
    assert!(client
        .post(&format!("/orders/addItem/{other}/0/1"))
        .await
        .ok());
    let other_path = format!("/orders/checkout/{other}");
    assert!(client.post(&other_path).await.ok());
    let reused = client.post_with_id(&other_path, "pay").await;
    assert_eq!(reused.status, 409, "{reused:?}");
    assert_eq!(reused.body["error"], "request_id_conflict", "{reused:?}");
    assert_eq!((client.credit("0").await, client.stock("0").await), (4, 8));
}

/// A checkout is answered paid once both its steps applied, before its
/// commit is logged, and the commit waits (`raft.lazy_write_ms`, 200 ms
/// here) for another write to share its entry: back-to-back checkouts cost
/// the order group about one entry each, not two. A read of the order right
/// after the answer still shows it paid, from whichever replica serves it:
/// it waits for the decision, and hurries the waiting commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_answered_before_their_commits_share_entries_and_read_paid() {
    let cluster = cluster(&Service::ALL, |spec| spec.raft.lazy_write_ms = 200);
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/1/100/1").await.ok());
    assert!(client.post("/payment/batch_init/1/100").await.ok());
    let leader = cluster.leader(Service::Order).expect("an order leader");
    let followers: Vec<String> = common::followers(&cluster, Service::Order, leader)
        .into_iter()
        .map(|id| cluster.admin_addr(Role::Node(Service::Order, id)))
        .collect();
    // Reads served at the followers, and their read-index rounds.
    let follower_reads = || async {
        let (mut reads, mut rounds) = (0.0, 0.0);
        for addr in &followers {
            let route = [("route", "/internal/read"), ("status", "200")];
            reads += metric(addr, "cart_http_requests_total", &route)
                .await
                .unwrap_or(0.0);
            let served = [("shard", "0"), ("outcome", "served")];
            rounds += metric(addr, "cart_raft_follower_reads_total", &served)
                .await
                .unwrap_or(0.0);
        }
        (reads, rounds)
    };
    let (reads_before, rounds_before) = follower_reads().await;
    for round in 0..10 {
        let order = client.order_of("0", &[("0", 1)]).await;
        let paid = client.post(&format!("/orders/checkout/{order}")).await;
        assert!(paid.ok(), "{paid:?}");
        let read = client.get(&format!("/orders/find/{order}")).await;
        assert_eq!(read.body["paid"], true, "round {round}: {read:?}");
    }
    // A follower reading an order whose checkout it holds undecided asks
    // the leader once, hurrying the commit: one round per read (two, one
    // plain and one hurried, before the hurried index covered the commit).
    let (reads, rounds) = follower_reads().await;
    let (reads, rounds) = (reads - reads_before, rounds - rounds_before);
    assert!(
        reads >= 3.0,
        "only {reads} of the reads were served by followers"
    );
    assert!(
        rounds < 1.5 * reads,
        "{rounds} read-index rounds for {reads} follower reads"
    );

    // A follower's read hurries the commit through the leader's read index,
    // and the index it is answered covers the commit: one round.
    let (addr, applied) = order_leader(&cluster);
    let order = client.order_of("0", &[("0", 1)]).await;
    assert!(client.post(&format!("/orders/checkout/{order}")).await.ok());
    // The commit waits (200 ms) for company: applied stops before it.
    let before = applied();
    let hurried: serde_json::Value =
        InternalClient::for_cluster(&cluster.spec, Duration::from_secs(5))
            .post_json(&addr, &format!("{READ_INDEX_PATH}?hurry=true"), &())
            .await
            .expect("the leader's read index");
    let index = hurried["index"].as_u64().expect("an index");
    assert!(
        index > before,
        "read index {index} does not cover the hurried commit (applied {before} before)"
    );
    let waits = metric(
        &addr,
        "cart_raft_hurry_wait_seconds_count",
        &[("shard", "0")],
    )
    .await;
    assert!(
        waits >= Some(1.0),
        "{waits:?} hurried reads waited for their entry"
    );

    let mut orders = Vec::new();
    for _ in 0..20 {
        orders.push(client.order_of("0", &[("0", 1)]).await);
    }
    let (addr, applied) = order_leader(&cluster);
    let before = applied();
    for order in &orders {
        let paid = client.post(&format!("/orders/checkout/{order}")).await;
        assert!(paid.ok(), "{paid:?}");
    }
    let entries = applied() - before;
    // Before lazy commits: a begin and a commit each, 40 entries.
    assert!(entries <= 25, "20 checkouts took {entries} order entries");
    let lazy = |outcome: &'static str| {
        let addr = addr.clone();
        async move {
            let labels = [("shard", "0"), ("outcome", outcome)];
            metric(&addr, "cart_raft_lazy_write_wait_seconds_count", &labels).await
        }
    };
    let joined = lazy("joined").await;
    assert!(joined >= Some(15.0), "{joined:?} commits shared an entry");
    // The reads of the first rounds did not wait the 200 ms out.
    let hurried = lazy("hurried").await;
    assert!(
        hurried >= Some(5.0),
        "{hurried:?} commits hurried by a read"
    );
    for order in &orders {
        let read = client.get(&format!("/orders/find/{order}")).await;
        assert_eq!(read.body["paid"], true, "{read:?}");
    }
    // 100 of each, 31 checkouts of one unit.
    assert_eq!(
        (client.credit("0").await, client.stock("0").await),
        (69, 69)
    );
}

/// A take waiting for its turn when its order leader is deposed gives up
/// with the leadership: the checkouts ahead of it are driven by the new
/// leader, so their turns would never end on the old one. A retry of that
/// checkout reaching the old leader is then sent on to the new one (421)
/// instead of joining a driver stuck there until the retry's bound (which
/// pinned checkouts for minutes on 3 shards, 2026-12-07).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_order_leader_sends_a_checkout_waiting_for_its_turn_on_to_the_new_leader() {
    let mut cluster = cluster(&Service::ALL, |_| {});
    let client = Client::gateway(&cluster);
    let item = client.post("/stock/item/create/1").await.str("item_id");
    assert!(client.post(&format!("/stock/add/{item}/10")).await.ok());
    let mut orders = Vec::new();
    for _ in 0..2 {
        let user = client.user_with(10).await;
        orders.push(client.order_of(&user, &[(&item, 1)]).await);
    }
    // Every payment node frozen: the first checkout's charge stays in doubt,
    // so the second's take of the same item waits for its turn.
    let payment_nodes: Vec<Role> = (1..=3).map(|id| Role::Node(Service::Payment, id)).collect();
    for node in &payment_nodes {
        cluster.freeze(*node).unwrap();
    }
    let check_out = |order: String, id: &'static str| {
        let client = client.clone();
        tokio::spawn(async move {
            let path = format!("/orders/checkout/{order}");
            loop {
                match client.try_post(&path, Some(id)).await {
                    Ok(a) if a.status < 500 => return a.status,
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        })
    };
    let first = check_out(orders[0].clone(), "first");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = check_out(orders[1].clone(), "second");
    let old = cluster.leader(Service::Order).expect("an order leader");
    let old_addr = cluster.spec.node_addr(Service::Order, old).unwrap();
    let old_admin = cluster.admin_addr(Role::Node(Service::Order, old));
    eventually(
        "the second take waiting for its turn",
        Duration::from_secs(10),
        || async {
            let waiting = metric(&old_admin, "cart_saga_take_turn_wait_seconds_count", &[]).await;
            // Not yet observed: a wait is counted when it ends. The saga is in
            // flight once both checkouts are.
            let in_flight = metric(&old_admin, "cart_sagas_in_flight", &[]).await;
            (waiting == Some(1.0) && in_flight == Some(2.0)).then_some(())
        },
    )
    .await;
    // Depose the order leader: frozen until another node leads, then back.
    let role = Role::Node(Service::Order, old);
    cluster.freeze(role).unwrap();
    cluster
        .wait_until("another order leader", Duration::from_secs(30), |c| {
            c.leader(Service::Order).filter(|l| *l != old)
        })
        .expect("a new order leader");
    cluster.thaw(role).unwrap();
    // The first checkout's driver there stops (its charge unanswered, the
    // checkout still open), keeping its turn: the second's wait there
    // would never end now, but for giving it up with the leadership.
    eventually(
        "the old leader's first driver stopped",
        Duration::from_secs(30),
        || async {
            let in_flight = metric(&old_admin, "cart_sagas_in_flight", &[]).await;
            in_flight.filter(|n| *n <= 1.0)
        },
    )
    .await;
    for node in &payment_nodes {
        cluster.thaw(*node).unwrap();
    }
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
    // The second checkout's retry, straight to the old leader.
    let fingerprint = cart_services::request_key::fingerprint(
        "order",
        "POST",
        "/orders/checkout/{order_id}",
        &[&orders[1]],
    );
    let retry = CheckoutRequest {
        key: RequestKey::client("second", fingerprint),
        order_id: orders[1].clone(),
    };
    let answer = InternalClient::for_cluster(&cluster.spec, Duration::from_secs(60))
        .post(&old_addr, CHECKOUT_PATH, &retry)
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status().as_u16(), 421, "{:?}", answer.text().await);
    eventually(
        "the old leader's wait given up",
        Duration::from_secs(10),
        || async {
            let given_up = metric(&old_admin, "cart_saga_turns_given_up_total", &[]).await;
            (given_up == Some(1.0)).then_some(())
        },
    )
    .await;
}
