//! Consistency checks and repair on real processes: corruption injected
//! straight into one replica's store, found by a check at one log position,
//! repaired key by key or by a rebuild, and no false alarms under writes.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cart_cluster::harness::{http_get, LocalCluster, Role};
use cart_common::admin::{CheckReport, CheckStarted, Event};
use cart_common::paths::{nodes_path, service_path, CHECK_ALL_PATH, EVENTS_PATH};
use cart_common::paths::{FAULT_PATH, STATUS_PATH};
use cart_common::spec::StorageBackend;
use cart_common::Service;
use cart_services::api::NodeStatus;
use cart_services::consistency::digest::leaf_of;
use cart_services::domain::{Query, Reply, Table};
use common::{
    admin_call, cluster_with, coordinator_admin, eventually, local_read, metric, service_view,
    Client,
};
use reqwest::Method;
use serde_json::{json, Value};

const FAULTS: &[&str] = &["--fault-injection"];

/// A stock-only cluster whose nodes accept fault injection, with periodic
/// checks off (each test starts its own).
fn stock_cluster() -> LocalCluster {
    cluster_with(
        &[Service::Stock],
        |spec| spec.consistency.check_interval_secs = 0,
        FAULTS,
    )
}

fn token(cluster: &LocalCluster) -> String {
    cluster.spec.cluster.admin_token.clone()
}

/// Changes (or deletes) a stored row on one replica only, as corruption.
async fn corrupt(cluster: &LocalCluster, node: u64, key: &str, value: Option<&str>) {
    let addr = cluster.spec.node_addr(Service::Stock, node).unwrap();
    let row = json!({ "table": "items", "key": key, "value": value });
    let (status, body) = admin_call(
        Method::POST,
        &addr,
        FAULT_PATH,
        Some(&token(cluster)),
        Some(row),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Starts an operation (`check`, `repair`) through coordinator 0 of stock.
async fn start(cluster: &LocalCluster, what: &str, body: Option<Value>) -> String {
    let coord = coordinator_admin(cluster, Service::Stock, 0);
    let path = format!("{}/{what}", service_path("stock"));
    let (status, body) = admin_call(Method::POST, &coord, &path, Some(&token(cluster)), body).await;
    assert_eq!(status, 200, "{body}");
    let started: CheckStarted = serde_json::from_value(body).unwrap();
    started.check_id
}

/// The report of the stock check `check_id`, once it has finished.
async fn report(cluster: &LocalCluster, check_id: &str, timeout: Duration) -> CheckReport {
    common::check_report(cluster, Service::Stock, check_id, timeout).await
}

async fn stock_on(cluster: &LocalCluster, node: u64, item: &str) -> Option<i64> {
    let q = Query::FindItem {
        item_id: item.to_string(),
    };
    match local_read(cluster, Service::Stock, node, q).await {
        Some(Ok(Reply::Item(i))) => Some(i.stock),
        _ => None,
    }
}

fn follower(cluster: &LocalCluster) -> u64 {
    let leader = cluster.leader(Service::Stock).expect("a leader");
    (1..=3).find(|n| *n != leader).unwrap()
}

/// On both backends: the digests, the repair and the recheck are the same.
async fn a_corrupted_key_is_found_in_its_bucket_and_repaired(backend: StorageBackend) {
    let Some((cluster, _mongo)) = common::cluster_on(
        backend,
        &[Service::Stock],
        |spec| spec.consistency.check_interval_secs = 0,
        FAULTS,
    ) else {
        return;
    };
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/1000/7/1").await.ok());
    let clean = start(&cluster, "check", None).await;
    assert_eq!(
        report(&cluster, &clean, Duration::from_secs(30))
            .await
            .verdict,
        "clean"
    );

    let bad = follower(&cluster);
    corrupt(&cluster, bad, "42", Some(r#"{"stock":1000000,"price":1}"#)).await;
    let check = start(&cluster, "check", None).await;
    let found = report(&cluster, &check, Duration::from_secs(30)).await;
    assert_eq!(found.verdict, "mismatch", "{found:#?}");
    for r in &found.replicas {
        if r.node == bad {
            assert_eq!(r.status, "mismatch");
            assert_eq!(r.mismatching_buckets, 1);
            assert_eq!(r.buckets, vec![leaf_of(Table::Items, b"42")]);
        } else {
            assert_eq!(r.status, "match", "{r:?}");
        }
    }
    let leader = cluster.leader(Service::Stock).unwrap();
    let leader_addr = cluster.spec.node_addr(Service::Stock, leader).unwrap();
    let bad_label = bad.to_string();
    let node = [("node", bad_label.as_str())];
    assert_eq!(
        metric(&leader_addr, "cart_consistency_mismatches_total", &node).await,
        Some(1.0)
    );

    let repair = start(&cluster, "repair", Some(json!({ "node": bad }))).await;
    let repaired = report(&cluster, &repair, Duration::from_secs(60)).await;
    let r = repaired.repair.expect("a repair report");
    assert_eq!(r.recheck_verdict.as_deref(), Some("clean"), "{r:#?}");
    assert_eq!(r.nodes.len(), 1);
    assert_eq!(
        (r.nodes[0].node, r.nodes[0].action.as_str()),
        (bad, "repaired")
    );
    assert_eq!((r.nodes[0].buckets, r.nodes[0].keys_repaired), (1, 1));
    assert_eq!(stock_on(&cluster, bad, "42").await, Some(7));

    // The leader's status lists every report of the last minute, oldest
    // first, so that its coordinators turn each into events even when
    // several finish between two of their probes.
    // (A MongoDB-backed node reads its reports afresh every 2 s.)
    let ours = [clean.as_str(), check.as_str(), repair.as_str()];
    eventually(
        "the leader's status lists the three reports",
        Duration::from_secs(10),
        || async {
            let (_, body) = http_get(&leader_addr, STATUS_PATH, Duration::from_secs(5)).ok()?;
            let status: NodeStatus = serde_json::from_str(&body).ok()?;
            let listed: Vec<&str> = status
                .recent_checks
                .iter()
                .map(|r| r.check_id.as_str())
                .filter(|id| ours.contains(id))
                .collect();
            (listed == ours).then_some(())
        },
    )
    .await;
    assert_eq!(
        metric(&leader_addr, "cart_consistency_keys_repaired_total", &node).await,
        Some(1.0)
    );

    // Every report stays readable by its id after later ones; an unknown id
    // is a 404, one too long to be an id a 400.
    assert_eq!(
        report(&cluster, &clean, Duration::from_secs(5))
            .await
            .verdict,
        "clean"
    );
    let coord = coordinator_admin(&cluster, Service::Stock, 0);
    for (id, status, code) in [
        ("no-such-check".to_string(), 404, "check_not_found"),
        ("x".repeat(100), 400, "bad_check_id"),
    ] {
        let path = cart_common::paths::check_report_path("stock", &id);
        let (got, body) = admin_call(Method::GET, &coord, &path, None, None).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }

    // The cluster view tells the story; the age of the last clean check is
    // exported.
    // The coordinators learn of reports from the leader's status, at their
    // next probe after the report was logged.
    let path = format!("{EVENTS_PATH}?service=stock");
    eventually(
        "mismatch and repair events",
        Duration::from_secs(10),
        || async {
            let events: Vec<Event> = common::admin_get(&coord, &path).await?;
            let of = |kind: &str, id: &str| {
                events
                    .iter()
                    .any(|e| e.kind == kind && e.detail["check_id"] == id)
            };
            let mismatch = of("check", &clean) && of("mismatch", &check);
            let repair = events
                .iter()
                .any(|e| e.kind == "repair" && e.node == Some(bad));
            (mismatch && repair).then_some(())
        },
    )
    .await;
    // Exported once the coordinator has seen a clean report (a probe may
    // bring the events before the gauge is set).
    let age = eventually("the clean check's age", Duration::from_secs(10), || async {
        metric(
            &coord,
            "cart_consistency_last_clean_check_age_seconds",
            &[("service", "stock")],
        )
        .await
    })
    .await;
    assert!(age < 60.0, "{age}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_during_a_heavy_write_stream_raise_no_false_alarm() {
    let cluster = stock_cluster();
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/100/0/1").await.ok());
    let stop = Arc::new(AtomicBool::new(false));
    // Each writer counts, per item, the adds acknowledged and those answered
    // 503 (no leader for a moment: applied or not). The only other answer
    // allowed is 429 (a queue full: nothing applied).
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut adds: BTreeMap<u64, Adds> = BTreeMap::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let item = (w * 10 + i % 10) % 100;
                    let a = client
                        .try_post(&format!("/stock/add/{item}/1"), None)
                        .await
                        .unwrap_or_else(|e| panic!("add to {item} not answered: {e}"));
                    let n = adds.entry(item).or_default();
                    match a.status {
                        200..=299 => n.acked += 1,
                        503 => n.unknown += 1,
                        429 => n.refused += 1,
                        _ => panic!("add to {item} failed during checks: {a:?}"),
                    }
                    i += 1;
                }
                adds
            })
        })
        .collect();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let id = start(&cluster, "check", None).await;
        let r = report(&cluster, &id, Duration::from_secs(30)).await;
        assert_eq!(r.verdict, "clean", "{r:#?}");
        // Every replica digested the same log position.
        assert!(
            r.replicas
                .iter()
                .all(|d| d.applied_index == Some(r.log_index)),
            "{r:#?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut adds: BTreeMap<u64, Adds> = BTreeMap::new();
    for w in writers {
        for (item, n) in w.await.unwrap() {
            let total = adds.entry(item).or_default();
            total.acked += n.acked;
            total.unknown += n.unknown;
            total.refused += n.refused;
        }
    }
    let acked: i64 = adds.values().map(|n| n.acked).sum();
    let failed: i64 = adds.values().map(|n| n.unknown + n.refused).sum();
    assert!(
        acked > 100 && failed * 10 <= acked,
        "a heavy write stream, its writes succeeding: {acked} acknowledged, {failed} not"
    );
    // Every acknowledged add applied, once; a refused one not at all.
    for item in 0..100u64 {
        let n = adds.get(&item).copied().unwrap_or_default();
        let stock = client.stock(&item.to_string()).await;
        assert!(
            (n.acked..=n.acked + n.unknown).contains(&stock),
            "item {item}: stock {stock}, adds {n:?}"
        );
    }
}

/// One item's adds in the write stream.
#[derive(Clone, Copy, Debug, Default)]
struct Adds {
    acked: i64,
    /// Answered 503: applied or not.
    unknown: i64,
    /// Answered 429: not applied.
    refused: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repairing_100_corrupt_keys_of_100k_touches_exactly_those() {
    let cluster = stock_cluster();
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/100000/5/1").await.ok());
    let bad = follower(&cluster);
    // The batch is acknowledged once a majority has it: this follower may
    // apply it later (it learns the commit index with the next append or
    // heartbeat), and a row corrupted before that would be overwritten.
    eventually(
        "the follower to apply the batch",
        Duration::from_secs(10),
        || async { (stock_on(&cluster, bad, "99999").await == Some(5)).then_some(()) },
    )
    .await;
    for i in 0..100 {
        let key = (i * 997).to_string();
        // Changed values and deleted rows alike.
        let value = (i % 4 != 0).then_some(r#"{"stock":0,"price":0}"#);
        corrupt(&cluster, bad, &key, value).await;
    }
    let repair = start(&cluster, "repair", None).await;
    let r = report(&cluster, &repair, Duration::from_secs(120)).await;
    let mismatch = r.replicas.iter().find(|d| d.node == bad).unwrap();
    assert_eq!(mismatch.status, "mismatch");
    let repair = r.repair.expect("a repair report");
    assert_eq!(repair.nodes.len(), 1, "{repair:#?}");
    assert_eq!(repair.nodes[0].action, "repaired");
    assert_eq!(repair.nodes[0].keys_repaired, 100);
    assert_eq!(repair.recheck_verdict.as_deref(), Some("clean"));
    assert_eq!(stock_on(&cluster, bad, "0").await, Some(5));
    assert_eq!(stock_on(&cluster, bad, "997").await, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_data_is_rebuilt_with_one_call() {
    let mut cluster = stock_cluster();
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/5000/3/1").await.ok());
    let lost = follower(&cluster);
    let role = Role::Node(Service::Stock, lost);
    cluster.kill(role).unwrap();
    std::fs::remove_dir_all(cluster.spec.node_data_dir(Service::Stock, lost)).unwrap();
    cluster.start_process(role).unwrap();

    let coord = coordinator_admin(&cluster, Service::Stock, 1);
    let path = format!("{}/{lost}/rebuild", nodes_path("stock"));
    let (status, body) =
        admin_call(Method::POST, &coord, &path, Some(&token(&cluster)), None).await;
    assert_eq!(status, 200, "{body}");
    let id = body["check_id"].as_str().unwrap().to_string();
    let r = report(&cluster, &id, Duration::from_secs(120)).await;
    common::assert_rebuilt(&r);
    // The data is back on it, and a fresh check agrees.
    assert_eq!(stock_on(&cluster, lost, "4999").await, Some(3));
    let again = start(&cluster, "check", None).await;
    assert_eq!(
        report(&cluster, &again, Duration::from_secs(30))
            .await
            .verdict,
        "clean"
    );
    // Writes go on, to all three.
    assert!(client.post("/stock/add/0/1").await.ok());
    eventually(
        "the write on the rebuilt node",
        Duration::from_secs(10),
        || async { (stock_on(&cluster, lost, "0").await == Some(4)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_node_triggers_a_check() {
    let mut cluster = stock_cluster();
    let back = follower(&cluster);
    let role = Role::Node(Service::Stock, back);
    cluster.kill(role).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start_process(role).unwrap();
    let r = eventually("a rejoin check", Duration::from_secs(30), || async {
        let view = service_view(&cluster, Service::Stock).await?;
        view.last_check.filter(|r| r.reason == "rejoin")
    })
    .await;
    assert_eq!(r.verdict, "clean", "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_repair_and_faults_need_their_credentials() {
    let cluster = stock_cluster();
    let coord = coordinator_admin(&cluster, Service::Stock, 0);
    for (path, body) in [
        (CHECK_ALL_PATH.to_string(), None),
        (format!("{}/check", service_path("stock")), None),
        (format!("{}/repair", service_path("stock")), Some(json!({}))),
        (format!("{}/2/rebuild", nodes_path("stock")), None),
    ] {
        for token in [None, Some("wrong")] {
            let (status, answer) =
                admin_call(Method::POST, &coord, &path, token, body.clone()).await;
            assert_eq!(status, 401, "{path}: {answer}");
        }
    }
    // The fault hook needs the admin token even where it is enabled…
    let node = cluster.spec.node_addr(Service::Stock, 1).unwrap();
    let row = json!({ "table": "items", "key": "1", "value": "x" });
    let (status, _) = admin_call(Method::POST, &node, FAULT_PATH, None, Some(row)).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_hook_is_off_unless_the_node_was_started_with_the_flag() {
    let cluster = common::cluster(&[Service::Stock], |_| {});
    let node = cluster.spec.node_addr(Service::Stock, 1).unwrap();
    let row = json!({ "table": "items", "key": "1", "value": "x" });
    let (status, _) = admin_call(
        Method::POST,
        &node,
        FAULT_PATH,
        Some(&token(&cluster)),
        Some(row),
    )
    .await;
    assert_eq!(status, 403);
}

common::on_both_backends!(a_corrupted_key_is_found_in_its_bucket_and_repaired);
