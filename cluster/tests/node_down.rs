//! The node-down protocol seen from outside: real node processes killed with
//! SIGKILL or frozen with SIGSTOP, the coordinators' cluster view, events and
//! metrics, and the node brought back in sync.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cart_cluster::harness::{LocalCluster, Role};
use cart_common::admin::{ClusterView, Event, NodeHealth};
use cart_common::paths::{CLUSTER_PATH, EVENTS_PATH};
use cart_common::Service;
use cart_services::domain::{Query, Reply};
use common::{
    cluster, coordinator_admin, eventually, local_read, metric, node_view, service_view, Client,
};

const DETECTION_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Freeze,
}

async fn stock_events(cluster: &LocalCluster) -> Vec<Event> {
    let addr = coordinator_admin(cluster, Service::Stock, 0);
    common::admin_get(&addr, &format!("{EVENTS_PATH}?service=stock&limit=500"))
        .await
        .unwrap_or_default()
}

async fn status_of(cluster: &LocalCluster, id: u64) -> Option<NodeHealth> {
    let view = service_view(cluster, Service::Stock).await?;
    node_view(&view, id).map(|n| n.status)
}

async fn has_item(cluster: &LocalCluster, node: u64, item: &str, stock: i64) -> bool {
    let query = Query::FindItem {
        item_id: item.to_string(),
    };
    matches!(
        local_read(cluster, Service::Stock, node, query).await,
        Some(Ok(Reply::Item(i))) if i.stock == stock
    )
}

/// A follower goes away by `fault`, is reported down with an event and
/// metrics, misses writes, comes back, catches up and holds those writes.
async fn follower_goes_and_returns(fault: Fault) {
    let mut cluster = cluster(&[Service::Stock], |_| {});
    let client = Client::gateway(&cluster);
    let coord = coordinator_admin(&cluster, Service::Stock, 0);
    let leader = cluster.leader(Service::Stock).expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let node = follower.to_string();
    let labels = [("service", "stock"), ("node", node.as_str())];
    eventually("all nodes up", DETECTION_DEADLINE, || async {
        let view = service_view(&cluster, Service::Stock).await?;
        view.nodes
            .iter()
            .all(|n| n.status == NodeHealth::Up)
            .then_some(())
    })
    .await;
    // Counted from here: a node not yet listening while the group formed
    // may already have been seen down (and up) once.
    let downs = metric(&coord, "cart_node_down_total", &labels)
        .await
        .unwrap_or(0.0);
    let ups = metric(&coord, "cart_node_up_total", &labels)
        .await
        .unwrap_or(0.0);
    let detection_labels = [("service", "stock")];
    let detections_before = metric(
        &coord,
        "cart_node_down_detection_seconds_count",
        &detection_labels,
    )
    .await
    .unwrap_or(0.0);

    let role = Role::Node(Service::Stock, follower);
    match fault {
        Fault::Kill => cluster.kill(role).unwrap(),
        Fault::Freeze => cluster.freeze(role).unwrap(),
    }
    eventually("the follower reported down", DETECTION_DEADLINE, || async {
        (status_of(&cluster, follower).await == Some(NodeHealth::Down)).then_some(())
    })
    .await;
    let down = stock_events(&cluster)
        .await
        .into_iter()
        .find(|e| e.kind == "node_down" && e.node == Some(follower))
        .expect("a node_down event");
    assert!(down.detail["detect_ms"].as_u64().is_some(), "{down:?}");
    assert_eq!(metric(&coord, "cart_node_up", &labels).await, Some(0.0));
    assert_eq!(
        metric(&coord, "cart_node_down_total", &labels).await,
        Some(downs + 1.0)
    );
    let detections = metric(
        &coord,
        "cart_node_down_detection_seconds_count",
        &detection_labels,
    )
    .await;
    assert_eq!(detections, Some(detections_before + 1.0));

    // Writes while it is away: the other two are a majority.
    let mut items = Vec::new();
    for i in 0..20 {
        let item = client.post(&format!("/stock/item/create/{i}")).await;
        assert_eq!(item.status, 200, "{item:?}");
        let id = item.str("item_id");
        assert_eq!(
            client.post(&format!("/stock/add/{id}/{i}")).await.status,
            200
        );
        items.push((id, i));
    }

    match fault {
        Fault::Kill => cluster.start_process(role).unwrap(),
        Fault::Freeze => cluster.thaw(role).unwrap(),
    }
    eventually("the follower up again", Duration::from_secs(30), || async {
        (status_of(&cluster, follower).await == Some(NodeHealth::Up)).then_some(())
    })
    .await;
    // It was catching up before it was up: node_up, then caught_up, both
    // after the node_down.
    let events = stock_events(&cluster).await;
    let position = |kind: &str| {
        events
            .iter()
            .position(|e| e.kind == kind && e.node == Some(follower))
            .unwrap_or_else(|| panic!("no {kind} event in {events:#?}"))
    };
    // Newest first.
    assert!(position("caught_up") < position("node_up"));
    assert!(position("node_up") < position("node_down"));
    assert_eq!(metric(&coord, "cart_node_up", &labels).await, Some(1.0));
    assert_eq!(
        metric(&coord, "cart_node_up_total", &labels).await,
        Some(ups + 1.0)
    );

    for (item, stock) in &items {
        eventually(
            "the missed writes on the returned node",
            Duration::from_secs(10),
            || async {
                has_item(&cluster, follower, item, *stock)
                    .await
                    .then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_follower_is_down_then_catches_up_with_the_writes_it_missed() {
    follower_goes_and_returns(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_follower_is_down_then_catches_up_with_the_writes_it_missed() {
    follower_goes_and_returns(Fault::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_writes_is_a_leader_change_and_loses_nothing() {
    let mut cluster = cluster(&[Service::Stock], |_| {});
    let client = Client::gateway(&cluster);
    let item = client.post("/stock/item/create/1").await.str("item_id");
    let old_leader = cluster.leader(Service::Stock).expect("a leader");
    let old_term = service_view(&cluster, Service::Stock)
        .await
        .and_then(|v| v.term)
        .expect("a term");

    // Each write is retried with its own request id until acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(0i64));
    let writer = {
        let (client, stop, acked, item) =
            (client.clone(), stop.clone(), acked.clone(), item.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("leader-kill-{i}");
                loop {
                    match client
                        .try_post(&format!("/stock/add/{item}/1"), Some(&id))
                        .await
                    {
                        Ok(a) if a.ok() => break,
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                *acked.lock().unwrap() += 1;
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster
        .kill(Role::Node(Service::Stock, old_leader))
        .unwrap();

    let change = eventually(
        "a leader_change event to a new leader",
        DETECTION_DEADLINE,
        || async {
            stock_events(&cluster).await.into_iter().find(|e| {
                e.kind == "leader_change"
                    && e.node != Some(old_leader)
                    && e.detail["term"].as_u64() > Some(old_term)
            })
        },
    )
    .await;
    let acked_at_change = *acked.lock().unwrap();
    eventually(
        "writes after the leader change",
        Duration::from_secs(20),
        || async { (*acked.lock().unwrap() > acked_at_change + 10).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert_eq!(client.stock(&item).await, *acked.lock().unwrap());
    let coord = coordinator_admin(&cluster, Service::Stock, 0);
    let changes = metric(&coord, "cart_leader_changes_total", &[("service", "stock")]).await;
    assert!(changes >= Some(1.0), "{changes:?} after {change:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_coordinator_shows_the_whole_cluster_and_the_same_history_by_long_polls() {
    // Pulls wait up to 30 s at the peer: the history below arrives sooner
    // only because a new event answers the pulls waiting for it.
    let mut cluster = cluster(&Service::ALL, |spec| spec.health.event_wait_ms = 30_000);
    // One address is enough: the order coordinator reports every service.
    let order = coordinator_admin(&cluster, Service::Order, 1);
    let view: ClusterView = eventually(
        "every coordinator reached",
        Duration::from_secs(10),
        || async {
            let view: ClusterView = common::admin_get(&order, CLUSTER_PATH).await?;
            view.services
                .iter()
                .all(|s| s.coordinators.iter().all(|c| c.reachable))
                .then_some(view)
        },
    )
    .await;
    // Idle, a coordinator asks each peer for events about once per wait,
    // not every `event_sync_ms` (ten times in 5 s): at most two answered
    // pulls, in case an event of the cluster's start arrives meanwhile.
    let peer = coordinator_admin(&cluster, Service::Stock, 0);
    let pulls = || async {
        metric(
            &order,
            "cart_coordinator_event_pulls_total",
            &[("peer", &peer)],
        )
        .await
        .expect("the pulls series")
    };
    let before = pulls().await;
    assert!(before >= 1.0, "reachable, so pulled at least once");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = pulls().await - before;
    assert!(idle <= 2.0, "{idle} pulls of one peer in 5 idle seconds");
    // A pull with a wait that is no number is a JSON 400, not a hang.
    let bad_wait = format!("{}?wait_ms=soon", cart_common::paths::OWN_EVENTS_PATH);
    let (status, body) =
        common::admin_call(reqwest::Method::GET, &order, &bad_wait, None, None).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &"bad_query".into()),
        "{body}"
    );

    assert_eq!(view.services.len(), 3);
    for s in &view.services {
        assert_eq!(s.error, None, "{s:?}");
        assert!(s.leader.is_some(), "{s:?}");
        assert_eq!(s.nodes.len(), 3, "{s:?}");
    }

    // Any coordinator checks every service: each group's report names the
    // check it was asked for, and all replicas agree.
    let token = cluster.spec.cluster.admin_token.clone();
    let (status, body) = common::admin_call(
        reqwest::Method::POST,
        &order,
        cart_common::paths::CHECK_ALL_PATH,
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let started: Vec<cart_common::admin::CheckStarted> = serde_json::from_value(body).unwrap();
    assert_eq!(started.len(), 3);
    for s in &started {
        let service: Service = s.service.parse().unwrap();
        let report =
            common::check_report(&cluster, service, &s.check_id, Duration::from_secs(30)).await;
        assert_eq!(report.verdict, "clean", "{report:#?}");
    }

    // A payment follower dies: every coordinator, of every service, ends up
    // with the same history, including that event, well within one wait.
    let leader = cluster.leader(Service::Payment).expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    cluster
        .kill(Role::Node(Service::Payment, follower))
        .unwrap();
    let admins: Vec<String> = Service::ALL
        .iter()
        .flat_map(|s| cluster.spec.coordinators(*s))
        .map(|c| c.admin)
        .collect();
    eventually(
        "the same history everywhere",
        Duration::from_secs(15),
        || async {
            let mut histories = BTreeSet::new();
            for addr in &admins {
                let events: Vec<Event> =
                    common::admin_get(addr, &format!("{EVENTS_PATH}?limit=500")).await?;
                let seen = events.iter().any(|e| {
                    e.kind == "node_down" && e.service == "payment" && e.node == Some(follower)
                });
                if !seen {
                    return None;
                }
                let ids: Vec<(String, Vec<String>)> =
                    events.into_iter().map(|e| (e.id, e.observers)).collect();
                histories.insert(ids);
            }
            (histories.len() == 1).then_some(())
        },
    )
    .await;
}
