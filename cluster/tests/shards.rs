//! Shards on real processes (docs/scaling.md): every service split over 3
//! shards, each its own Raft group, hosted by the same 3 node processes.
//! Leaders spread over the nodes at start and again after a node returns;
//! a checkout whose items live on every stock shard takes all or nothing,
//! also with one shard's leader killed mid-checkout; a corrupted key shows
//! up in its own shard's check only, and that shard's repair fixes it; a
//! node's shards share one log, and a rebuild of one shard keeps the others.

mod common;

use std::time::Duration;

use cart_cluster::harness::{LocalCluster, Role};
use cart_common::admin::{CheckReport, CheckStarted, Event};
use cart_common::http::InternalClient;
use cart_common::paths::{self, FAULT_PATH};
use cart_common::shard::{Shard, SHARD_HEADER};
use cart_common::{ClusterSpec, Service};
use cart_services::api::ReadRequest;
use cart_services::domain::{Outcome, Query, Reply};
use common::{admin_call, cluster, cluster_with, coordinator_admin, eventually, metric, Client};
use reqwest::Method;
use serde_json::json;

const SHARDS: u16 = 3;

fn sharded(spec: &mut ClusterSpec) {
    for service in Service::ALL {
        spec.size_mut(service).shards = SHARDS;
    }
}

/// Every shard's leader, once each shard has one a majority agrees on.
fn leaders(cluster: &LocalCluster, service: Service) -> Option<Vec<u64>> {
    Shard::all(SHARDS)
        .map(|shard| cluster.shard_leader(service, shard))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_spread_over_the_nodes_at_start_and_again_after_a_node_returns() {
    let mut cluster = cluster(&[Service::Order], sharded);
    // Shard s prefers node s+1 (the (s mod 3)-th voter).
    let spread = vec![1, 2, 3];
    eventually(
        "each node to lead one shard",
        Duration::from_secs(20),
        || async { (leaders(&cluster, Service::Order)? == spread).then_some(()) },
    )
    .await;

    // The coordinators' view shows the same, and what each node leads.
    eventually(
        "the admin view to show every shard's leader",
        Duration::from_secs(10),
        || async {
            let view = common::service_view(&cluster, Service::Order).await?;
            let shown: Vec<Option<u64>> = view.shards.iter().map(|s| s.leader).collect();
            let leads: Vec<Vec<Shard>> = view.nodes.iter().map(|n| n.leads.clone()).collect();
            (shown == vec![Some(1), Some(2), Some(3)]
                && leads == vec![vec![Shard(0)], vec![Shard(1)], vec![Shard(2)]])
            .then_some(())
        },
    )
    .await;

    cluster.kill(Role::Node(Service::Order, 2)).unwrap();
    let taken_over = eventually(
        "shard 1 to elect another leader",
        Duration::from_secs(15),
        || async {
            cluster
                .shard_leader(Service::Order, Shard(1))
                .filter(|l| *l != 2)
        },
    )
    .await;

    cluster
        .start_process(Role::Node(Service::Order, 2))
        .unwrap();
    // The returned node holds the whole log at once (nothing was written);
    // the leader hands over after leading 5 s, in about 2 s.
    eventually(
        "node 2 to lead shard 1 again",
        Duration::from_secs(30),
        || async { (leaders(&cluster, Service::Order)? == spread).then_some(()) },
    )
    .await;
    let addr = cluster.spec.node_addr(Service::Order, taken_over).unwrap();
    let handed = common::metric(
        &addr,
        "cart_raft_leader_handovers_total",
        &[("shard", "1"), ("result", "done")],
    )
    .await;
    assert_eq!(handed, Some(1.0), "node {taken_over} handed shard 1 over");
    // Both changes of shard 1 are in the cluster's events.
    let coord = coordinator_admin(&cluster, Service::Order, 0);
    let events_path = format!("{}?service=order&limit=500", paths::EVENTS_PATH);
    eventually(
        "shard 1's leader changes in the events",
        Duration::from_secs(10),
        || async {
            let events: Vec<Event> = common::admin_get(&coord, &events_path).await?;
            let shard_1: Vec<(Option<u64>, u64)> = events
                .iter()
                .filter(|e| e.kind == "leader_change" && e.detail["shard"] == 1)
                .map(|e| (e.node, e.detail["term"].as_u64().unwrap_or(0)))
                .collect();
            let to_other = shard_1.iter().any(|(n, _)| *n == Some(taken_over));
            let back = shard_1.iter().any(|(n, t)| *n == Some(2) && *t > 1);
            (to_other && back).then_some(())
        },
    )
    .await;
}

/// Creates items until one lives on every stock shard: their ids, in shard
/// order, each with `stock` units at `price`.
async fn one_item_per_shard(
    client: &Client,
    spec: &ClusterSpec,
    stock: i64,
    price: i64,
) -> Vec<String> {
    let mut items: Vec<Option<String>> = vec![None; usize::from(SHARDS)];
    while items.iter().any(Option::is_none) {
        let a = client.post(&format!("/stock/item/create/{price}")).await;
        assert!(a.ok(), "{:?}", a.body);
        let id = a.str("item_id");
        let slot = &mut items[spec.shard_of(Service::Stock, &id).index()];
        if slot.is_none() {
            assert!(client.post(&format!("/stock/add/{id}/{stock}")).await.ok());
            *slot = Some(id);
        }
    }
    items.into_iter().flatten().collect()
}

async fn paid(client: &Client, order: &str) -> bool {
    let a = client.get(&format!("/orders/find/{order}")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body["paid"].as_bool().expect("paid is a bool")
}

async fn stocks(client: &Client, items: &[String]) -> Vec<i64> {
    let mut all = Vec::new();
    for item in items {
        all.push(client.stock(item).await);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_with_items_on_every_stock_shard_checks_out_all_or_nothing() {
    let cluster = cluster(&Service::ALL, sharded);
    let client = Client::gateway(&cluster);
    let items = one_item_per_shard(&client, &cluster.spec, 5, 10).await;
    let user = client.user_with(1000).await;
    let [a, b, c] = [&items[0], &items[1], &items[2]].map(String::as_str);

    // One shard is short (6 of c, 5 in stock): nothing moves anywhere.
    let short = client.order_of(&user, &[(a, 1), (b, 1), (c, 6)]).await;
    let refused = client.post(&format!("/orders/checkout/{short}")).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(
        refused.str("error"),
        "insufficient_stock",
        "{:?}",
        refused.body
    );
    assert_eq!(stocks(&client, &items).await, vec![5, 5, 5]);
    assert_eq!(client.credit(&user).await, 1000);
    assert!(!paid(&client, &short).await);

    // Every shard has enough: each gives its item, the user pays once.
    let fine = client.order_of(&user, &[(a, 1), (b, 2), (c, 3)]).await;
    for _ in 0..2 {
        let done = client.post(&format!("/orders/checkout/{fine}")).await;
        assert_eq!(done.status, 200, "{:?}", done.body);
    }
    assert_eq!(stocks(&client, &items).await, vec![4, 3, 2]);
    assert_eq!(client.credit(&user).await, 1000 - 60);
    assert!(paid(&client, &fine).await);

    // A user who cannot pay: no shard gives anything.
    let poor = client.user_with(5).await;
    let unpaid = client.order_of(&poor, &[(a, 1), (b, 1), (c, 1)]).await;
    let refused = client.post(&format!("/orders/checkout/{unpaid}")).await;
    assert_eq!(
        refused.str("error"),
        "insufficient_credit",
        "{:?}",
        refused.body
    );
    assert_eq!(stocks(&client, &items).await, vec![4, 3, 2]);
    assert_eq!(client.credit(&poor).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_stock_shard_leader_mid_checkout_of_cross_shard_orders_loses_nothing() {
    const STOCK: i64 = 10;
    const BUYERS: usize = 16;
    let mut cluster = cluster(&Service::ALL, sharded);
    let client = Client::gateway(&cluster);
    let items = one_item_per_shard(&client, &cluster.spec, STOCK, 1).await;
    let mut orders = Vec::new();
    let mut users = Vec::new();
    for _ in 0..BUYERS {
        let user = client.user_with(3).await;
        let lines: Vec<(&str, i64)> = items.iter().map(|i| (i.as_str(), 1)).collect();
        orders.push(client.order_of(&user, &lines).await);
        users.push(user);
    }
    let victim_shard = cluster.spec.shard_of(Service::Stock, &items[1]);
    let victim = cluster
        .shard_leader(Service::Stock, victim_shard)
        .expect("the shard has a leader");

    let checkouts: Vec<_> = orders
        .iter()
        .map(|order| {
            let client = client.clone();
            let path = format!("/orders/checkout/{order}");
            tokio::spawn(async move { client.post(&path).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    cluster.kill(Role::Node(Service::Stock, victim)).unwrap();
    let mut answered_paid = 0;
    for checkout in checkouts {
        let a = checkout.await.unwrap();
        assert!(
            [200, 400, 503].contains(&a.status),
            "unexpected answer {} {:?}",
            a.status,
            a.body
        );
        answered_paid += usize::from(a.status == 200);
    }

    // Converged without help: every open checkout finished on its own.
    let settled = eventually(
        "every checkout to settle",
        Duration::from_secs(60),
        || async {
            let mut paid_orders = 0;
            for order in &orders {
                paid_orders += usize::from(paid(&client, order).await);
            }
            let left = stocks(&client, &items).await;
            let mut credit = 0;
            for user in &users {
                credit += client.credit(user).await;
            }
            let sold = STOCK - left[0];
            let consistent = left.iter().all(|s| STOCK - s == paid_orders as i64)
                && credit == 3 * (BUYERS - paid_orders) as i64;
            consistent.then_some((paid_orders, sold))
        },
    )
    .await;
    let (paid_orders, sold) = settled;
    assert_eq!(paid_orders as i64, sold);
    // Checkouts racing for the last units on different shards may each get
    // some and all abort (each gives back what it took): never more sold
    // than there was, and a unit sold only with its order paid.
    assert!(
        (1..=STOCK as usize).contains(&paid_orders),
        "{paid_orders} paid"
    );
    assert!(
        answered_paid <= paid_orders,
        "{answered_paid} answered paid, {paid_orders} paid"
    );
}

/// Changes a stored item on one replica of one shard only, as corruption.
async fn corrupt(cluster: &LocalCluster, node: u64, shard: Shard, key: &str) {
    let addr = cluster.spec.node_addr(Service::Stock, node).unwrap();
    let row = json!({ "table": "items", "key": key, "value": r#"{"stock":999,"price":1}"# });
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}{FAULT_PATH}"))
        .bearer_auth(&cluster.spec.cluster.admin_token)
        .header(SHARD_HEADER, shard.header_value())
        .json(&row)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
}

async fn stock_on(cluster: &LocalCluster, node: u64, shard: Shard, item: &str) -> Option<i64> {
    let query = Query::FindItem {
        item_id: item.to_string(),
    };
    match common::local_read_in(cluster, Service::Stock, node, shard, query).await? {
        Ok(Reply::Item(i)) => Some(i.stock),
        _ => None,
    }
}

async fn start(cluster: &LocalCluster, what: &str) -> CheckStarted {
    let coord = coordinator_admin(cluster, Service::Stock, 0);
    let path = format!("{}/{what}", paths::service_path("stock"));
    let token = cluster.spec.cluster.admin_token.clone();
    let (status, body) = admin_call(Method::POST, &coord, &path, Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

async fn report(cluster: &LocalCluster, check_id: &str) -> CheckReport {
    common::check_report(cluster, Service::Stock, check_id, Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_key_is_found_and_repaired_by_its_own_shard_only() {
    let cluster = cluster_with(
        &[Service::Stock],
        |spec| {
            sharded(spec);
            spec.consistency.check_interval_secs = 0;
        },
        &["--fault-injection"],
    );
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/300/7/1").await.ok());
    let shard = cluster.spec.shard_of(Service::Stock, "42");
    let leader = cluster.shard_leader(Service::Stock, shard).unwrap();
    let bad = (1..=3).find(|n| *n != leader).unwrap();
    // Once that replica has applied the batch: a row corrupted before
    // would be overwritten by it.
    eventually(
        "the follower to apply the batch",
        Duration::from_secs(10),
        || async { (stock_on(&cluster, bad, shard, "42").await == Some(7)).then_some(()) },
    )
    .await;
    corrupt(&cluster, bad, shard, "42").await;
    assert_eq!(stock_on(&cluster, bad, shard, "42").await, Some(999));

    // A check of every shard: one started per shard, only the corrupted
    // shard's finds a mismatch, on the corrupted replica only.
    let started = start(&cluster, "check").await;
    let mut all = vec![(started.shard, started.check_id.clone())];
    all.extend(started.also.iter().map(|s| (s.shard, s.check_id.clone())));
    all.sort();
    let shards: Vec<Shard> = all.iter().map(|(s, _)| *s).collect();
    assert_eq!(shards, Shard::all(SHARDS).collect::<Vec<_>>());
    for (checked, check_id) in &all {
        let found = report(&cluster, check_id).await;
        if *checked == shard {
            assert_eq!(found.verdict, "mismatch", "{found:#?}");
            for r in &found.replicas {
                let expected = if r.node == bad { "mismatch" } else { "match" };
                assert_eq!(r.status, expected, "{r:?}");
            }
        } else {
            assert_eq!(found.verdict, "clean", "shard {checked}: {found:#?}");
        }
    }

    // The service's view shows every shard's verdict, and the mismatching
    // shard's report as the service's latest.
    eventually(
        "the view to show the mismatching shard",
        Duration::from_secs(10),
        || async {
            let view = common::service_view(&cluster, Service::Stock).await?;
            let worst = view.last_check?;
            let verdicts: Vec<String> = view
                .shards
                .iter()
                .map(|s| {
                    s.last_check
                        .as_ref()
                        .map_or("none".into(), |r| r.verdict.clone())
                })
                .collect();
            let expected: Vec<String> = Shard::all(SHARDS)
                .map(|s| if s == shard { "mismatch" } else { "clean" }.to_string())
                .collect();
            (worst.shard == shard && worst.verdict == "mismatch" && verdicts == expected)
                .then_some(())
        },
    )
    .await;

    // That shard's repair fixes the row; the others are not touched.
    let repair = start(&cluster, &format!("repair?shard={shard}")).await;
    assert_eq!((repair.shard, repair.also.len()), (shard, 0));
    let repaired = report(&cluster, &repair.check_id).await;
    let r = repaired.repair.expect("a repair report");
    assert_eq!(r.recheck_verdict.as_deref(), Some("clean"), "{r:#?}");
    assert_eq!(stock_on(&cluster, bad, shard, "42").await, Some(7));
    // The key lives on its shard alone: the other shards' replicas never held it.
    for other in Shard::all(SHARDS).filter(|s| *s != shard) {
        assert_eq!(stock_on(&cluster, bad, other, "42").await, None);
    }
}

/// A node keeps one Raft log for all its shards (one `raft-log` directory,
/// none per shard). Rebuilding its replica of one shard wipes that shard
/// only (its records leave the node's log: `log_engine`'s reset, tested
/// there) and restarts the node process: the rebuilt shard is filled again
/// from its group, the node's other shards restart from the same log, and
/// all take writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rebuilt_in_one_shard_keeps_its_other_shards_in_their_shared_log() {
    let cluster = cluster(&[Service::Stock], sharded);
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/300/7/1").await.ok());
    let rebuilt = Shard(1);
    let leader = cluster.shard_leader(Service::Stock, rebuilt).unwrap();
    let node = (1..=3).find(|n| *n != leader).unwrap();
    let item_of = |shard: Shard| {
        (0..300)
            .map(|i| i.to_string())
            .find(|key| cluster.spec.shard_of(Service::Stock, key) == shard)
            .unwrap()
    };
    let items: Vec<(Shard, String)> = Shard::all(SHARDS).map(|s| (s, item_of(s))).collect();
    let holds = |stock: i64| {
        let items = items.clone();
        let cluster = &cluster;
        move || {
            let items = items.clone();
            async move {
                for (shard, item) in &items {
                    if stock_on(cluster, node, *shard, item).await != Some(stock) {
                        return None;
                    }
                }
                Some(())
            }
        }
    };
    eventually(
        "the node to apply the batch in every shard",
        Duration::from_secs(10),
        holds(7),
    )
    .await;
    // Each shard's group counts its own applies (the `shard` label).
    let addr = cluster.spec.node_addr(Service::Stock, node).unwrap();
    for shard in Shard::all(SHARDS) {
        let label = shard.to_string();
        let applied = metric(
            &addr,
            "cart_raft_applied_writes_total",
            &[("shard", label.as_str())],
        )
        .await;
        assert!(
            applied.is_some_and(|n| n >= 1.0),
            "shard {shard}'s applies on node {node}: {applied:?}"
        );
    }
    let dir = cluster.spec.node_data_dir(Service::Stock, node);
    assert!(dir.join("raft-log").is_dir(), "the node's one log");
    for shard in Shard::all(SHARDS).skip(1) {
        let own = dir.join(format!("shard-{}", shard.0)).join("raft-log");
        assert!(!own.exists(), "{} exists", own.display());
    }
    let started = start(&cluster, &format!("nodes/{node}/rebuild?shard={rebuilt}")).await;
    assert_eq!((started.shard, started.also.len()), (rebuilt, 0));
    let found = common::check_report(
        &cluster,
        Service::Stock,
        &started.check_id,
        Duration::from_secs(60),
    )
    .await;
    common::assert_rebuilt(&found);

    eventually(
        "every shard of the rebuilt node to hold the batch",
        Duration::from_secs(30),
        holds(7),
    )
    .await;
    for (_, item) in &items {
        assert!(client.post(&format!("/stock/add/{item}/1")).await.ok());
    }
    eventually(
        "the writes on the rebuilt node",
        Duration::from_secs(10),
        holds(8),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_of_a_shard_reads_a_write_made_right_after_its_leader_changed() {
    let mut cluster = cluster(&[Service::Payment], sharded);
    let client = Client::gateway(&cluster);
    let user = client.post("/payment/create_user").await.str("user_id");
    let shard = cluster.spec.shard_of(Service::Payment, &user);
    let leader = cluster.shard_leader(Service::Payment, shard).unwrap();
    cluster.kill(Role::Node(Service::Payment, leader)).unwrap();
    // Acknowledged once the shard's new leader has committed it.
    let funded = client.post(&format!("/payment/add_funds/{user}/5")).await;
    assert!(funded.ok(), "{:?}", funded.body);
    for node in (1..=3).filter(|n| *n != leader) {
        let addr = cluster.spec.node_addr(Service::Payment, node).unwrap();
        let query = Query::FindUser {
            user_id: user.clone(),
        };
        // A linearizable read at this replica (a follower's after a
        // read-index round with the new leader).
        let read: Outcome = InternalClient::for_cluster(&cluster.spec, Duration::from_secs(10))
            .for_shard(shard)
            .post_json(&addr, paths::READ_PATH, &ReadRequest { query })
            .await
            .unwrap_or_else(|e| panic!("node {node} read: {e}"));
        match read {
            Ok(Reply::User(u)) => assert_eq!(u.credit, 5, "node {node}"),
            other => panic!("node {node}: {other:?}"),
        }
    }
}
