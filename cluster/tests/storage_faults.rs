//! MongoDB failing under a live cluster, with real processes: a node whose
//! database is empty catches up from its Raft log; a node whose server stops
//! answering is reported down (reason `storage`) in the cluster view and its
//! metrics, stays alive (no crash loop), leaves the leadership to a healthy
//! node, and returns when its server answers again, with nothing lost and
//! nothing applied twice.

mod common;

use std::time::Duration;

use cart_cluster::harness::{missing, Role};
use cart_cluster::mongo_server::{jongodb_binary, MongoServer};
use cart_common::admin::NodeHealth;
use cart_common::spec::StorageBackend;
use cart_common::Service;
use cart_services::domain::{Query, Reply};
use common::{eventually, local_read, metric, node_view, service_view, Client};

const STOCK: Service = Service::Stock;

/// A node's stock of `item` as that replica holds it.
async fn local_stock(
    cluster: &cart_cluster::harness::LocalCluster,
    id: u64,
    item: &str,
) -> Option<i64> {
    let query = Query::FindItem {
        item_id: item.into(),
    };
    match local_read(cluster, STOCK, id, query).await? {
        Ok(Reply::Item(i)) => Some(i.stock),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_mongodb_stops_answering_is_down_hands_over_and_returns() {
    // Node 3 gets a server of its own, which this test stops and resumes.
    let Some(bin) = jongodb_binary().or_else(|| missing("jongodb", "scripts/install-jongodb"))
    else {
        return;
    };
    let Some((mut cluster, _shared)) = common::cluster_on(
        StorageBackend::Mongodb,
        &[STOCK],
        |spec| {
            spec.storage.mongodb_timeout_ms = 500;
        },
        &[],
    ) else {
        return;
    };
    let own = MongoServer::start_jongodb(&bin).expect("node 3's server");
    let client = Client::gateway(&cluster);
    let item = client.post("/stock/item/create/5").await.str("item_id");
    assert!(client.post(&format!("/stock/add/{item}/10")).await.ok());

    // Node 3 restarts on its own, empty database: it replays the Raft log.
    let f = 3;
    let node = Role::Node(STOCK, f);
    cluster.kill(node).expect("kill node 3");
    cluster.set_env(node, "CART_STORAGE_MONGODB_URL", &own.url);
    cluster.start_process(node).expect("restart node 3");
    eventually(
        "node 3 rebuilt its state from the log",
        Duration::from_secs(30),
        || {
            let cluster = &cluster;
            let item = item.clone();
            async move { (local_stock(cluster, f, &item).await == Some(10)).then_some(()) }
        },
    )
    .await;

    // Make node 3 the leader: restart whoever leads until it is node 3.
    let mut leads = false;
    for _ in 0..12 {
        let leader = cluster
            .wait_until("a leader", Duration::from_secs(20), |c| c.leader(STOCK))
            .expect("stock group has a leader");
        if leader == f {
            leads = true;
            break;
        }
        cluster
            .kill(Role::Node(STOCK, leader))
            .expect("kill leader");
        cluster
            .wait_until("a new leader", Duration::from_secs(20), |c| {
                c.leader(STOCK).filter(|l| *l != leader)
            })
            .expect("a new leader");
        cluster
            .start_process(Role::Node(STOCK, leader))
            .expect("restart old leader");
    }
    assert!(leads, "node 3 never became the leader");

    // Its server stops answering.
    own.freeze().expect("SIGSTOP node 3's server");
    // Writes still succeed: the group moves to a healthy leader.
    for _ in 0..3 {
        let a = client.post(&format!("/stock/add/{item}/1")).await;
        assert!(a.ok(), "write while node 3's storage fails: {a:?}");
    }
    let view = eventually(
        "node 3 down for its storage",
        Duration::from_secs(20),
        || {
            let cluster = &cluster;
            async move {
                let view = service_view(cluster, STOCK).await?;
                let n = node_view(&view, f)?;
                (n.status == NodeHealth::Down && n.down_reason.as_deref() == Some("storage"))
                    .then_some(view)
            }
        },
    )
    .await;
    let storage = node_view(&view, f).and_then(|n| n.storage.clone());
    assert!(
        storage
            .as_ref()
            .is_some_and(|s| !s.healthy && s.backend == "mongodb"),
        "{storage:?}"
    );
    let addr = cluster.spec.node_addr(STOCK, f).expect("node 3 address");
    assert_eq!(metric(&addr, "cart_storage_healthy", &[]).await, Some(0.0));
    let failed_pings = metric(&addr, "cart_storage_errors_total", &[("op", "ping")]).await;
    assert!(
        failed_pings.is_some_and(|n| n > 0.0),
        "failed operations are counted: {failed_pings:?}"
    );
    assert!(!cluster.has_exited(node), "node 3 keeps running");
    // A node that cannot apply does not keep the leadership: the others
    // elect a leader and node 3 follows it.
    eventually("a healthy leader", Duration::from_secs(20), || {
        let cluster = &cluster;
        async move {
            let view = service_view(cluster, STOCK).await?;
            view.leader.filter(|l| *l != f)
        }
    })
    .await;
    assert_eq!(client.stock(&item).await, 13);

    // The server answers again: node 3 comes back and catches up.
    own.thaw().expect("SIGCONT");
    eventually("node 3 up again", Duration::from_secs(30), || {
        let cluster = &cluster;
        async move {
            let view = service_view(cluster, STOCK).await?;
            (node_view(&view, f)?.status == NodeHealth::Up).then_some(())
        }
    })
    .await;
    eventually(
        "node 3 applied every write once",
        Duration::from_secs(30),
        || {
            let cluster = &cluster;
            let item = item.clone();
            async move { (local_stock(cluster, f, &item).await == Some(13)).then_some(()) }
        },
    )
    .await;
    assert_eq!(metric(&addr, "cart_storage_healthy", &[]).await, Some(1.0));
    for id in 1..=3 {
        assert_eq!(
            local_stock(&cluster, id, &item).await,
            Some(13),
            "node {id}"
        );
    }
}
