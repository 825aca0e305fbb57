//! Network faults on real network namespaces (issue 18): every process of
//! the cluster on a test host of its own (`harness::netns`), links cut and
//! healed by nftables rules while the cluster serves. Needs root, `ip` and
//! `nft` (scripts/install-test-tools); elsewhere these tests skip, saying
//! why, and under CI they fail.

mod common;

use std::time::{Duration, Instant};

use cart_cluster::harness::netns::TestNet;
use cart_cluster::harness::{missing, LocalCluster, Role, INSTALL_TOOLS};
use cart_common::Service;
use common::{bin, eventually, Client};

/// A cluster of every service on test hosts, ready and settled; `None`
/// (the reason printed) where test hosts cannot be made.
fn cluster_on_hosts() -> Option<LocalCluster> {
    if let Some(tool) = TestNet::missing_tool() {
        return missing(tool, INSTALL_TOOLS);
    }
    let mut cluster = LocalCluster::start_temp_in_netns(&bin(), &Service::ALL, |spec| {
        spec.raft.heartbeat_ms = 150;
        spec.raft.election_timeout_ms = 1000;
    })
    .expect("cluster starts on test hosts");
    cluster
        .wait_ready(Duration::from_secs(60))
        .expect("cluster ready");
    cluster
        .wait_settled(Duration::from_secs(30))
        .expect("every coordinator sees a leader and every node up");
    Some(cluster)
}

fn node(service: Service, id: u64) -> String {
    Role::Node(service, id).name()
}

/// The leader a majority of `service`'s nodes other than `except` report.
fn leader_without(cluster: &LocalCluster, service: Service, except: u64) -> Option<u64> {
    let others: Vec<u64> = (1..=3).filter(|id| *id != except).collect();
    let seen: Vec<Option<u64>> = others
        .iter()
        .map(|id| cluster.node_status(service, *id).and_then(|s| s.leader))
        .collect();
    match seen.as_slice() {
        [Some(a), Some(b)] if a == b && *a != except => Some(*a),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_runs_on_a_test_host_of_its_own() {
    let Some(mut cluster) = cluster_on_hosts() else {
        return;
    };
    let client = Client::gateway(&cluster);
    assert!(cluster.gateway_url().starts_with("http://198.18."));
    let order = client.one_item_order(1).await;
    assert!(client.post(&format!("/orders/checkout/{order}")).await.ok());
    // Each process answers at its own address, in its own namespace.
    let net = cluster.net().expect("test hosts");
    let addrs: Vec<String> = net.addresses().into_values().collect();
    let unique: std::collections::BTreeSet<&String> = addrs.iter().collect();
    assert_eq!(unique.len(), addrs.len(), "{addrs:?}");
    assert!(addrs.iter().all(|a| a.starts_with("198.18.")), "{addrs:?}");
    assert!(net.host(&node(Service::Stock, 2)).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_order_leader_is_replaced_and_catches_up_after_heal() {
    let Some(mut cluster) = cluster_on_hosts() else {
        return;
    };
    let client = Client::gateway(&cluster);
    let order = client.one_item_order(1).await;
    let old = cluster.leader(Service::Order).expect("an order leader");
    cluster
        .net()
        .expect("test hosts")
        .isolate(&node(Service::Order, old))
        .expect("isolate");
    let cut = Instant::now();

    // The majority side elects another leader and serves without it.
    let new = eventually("a new order leader", Duration::from_secs(20), || async {
        leader_without(&cluster, Service::Order, old)
    })
    .await;
    eprintln!("new order leader {new} after {:?}", cut.elapsed());
    let paid = eventually("a checkout served", Duration::from_secs(30), || async {
        let a = client
            .try_post(&format!("/orders/checkout/{order}"), Some("c-1"))
            .await
            .ok()?;
        (a.status < 500).then_some(a)
    })
    .await;
    assert_eq!(paid.status, 200, "{paid:?}");

    // After heal the old leader follows the new one and catches up.
    cluster.net().expect("test hosts").heal().expect("heal");
    let applied = |id| {
        cluster
            .node_status(Service::Order, id)
            .and_then(|s| s.last_applied)
    };
    eventually(
        "the old leader caught up",
        Duration::from_secs(30),
        || async {
            let status = cluster.node_status(Service::Order, old)?;
            let leader = status.leader?;
            (status.last_applied >= applied(leader)).then_some(())
        },
    )
    .await;
    assert_eq!(client.stock("0").await, 9);
    assert_eq!(client.credit("0").await, 9);
}
