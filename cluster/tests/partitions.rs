//! Network faults on real network namespaces (issue 18): every process of
//! the cluster on a test host of its own (`harness::netns`), links cut and
//! healed by nftables rules while the cluster serves. Needs root, `ip` and
//! `nft` (scripts/install-test-tools); elsewhere these tests skip, saying
//! why, and under CI they fail.

mod common;

use std::time::{Duration, Instant};

use cart_cluster::harness::netns::TestNet;
use cart_cluster::harness::{missing, LocalCluster, Role, INSTALL_TOOLS};
use cart_common::http::InternalClient;
use cart_common::paths::{READ_PATH, WRITE_PATH};
use cart_common::Service;
use cart_services::api::{ReadRequest, WriteRequest};
use cart_services::domain::{Command, Query};
use cart_services::request_key::RequestKey;
use common::scenario::{audit, check_out_all, scenario};
use common::{bin, eventually, metric, Client};

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

/// The benchmark's consistency scenario with `service`'s leader isolated
/// once 150 checkouts have been answered: exact, through the API, while the
/// leader is still cut off; after heal it catches up.
async fn consistency_with_the_leader_isolated(service: Service) {
    let Some(mut cluster) = cluster_on_hosts() else {
        return;
    };
    let client = Client::gateway(&cluster);
    let orders = scenario(&client).await;
    let leader = cluster.leader(service).expect("a leader");
    let (paid, _) = check_out_all(&client, &orders, 150, || {
        let net = cluster.net().expect("test hosts");
        net.isolate(&node(service, leader)).expect("isolate");
    })
    .await;
    audit(&client, &orders, &paid).await;
    cluster.net().expect("test hosts").heal().expect("heal");
    eventually(
        "the isolated node follows again",
        Duration::from_secs(30),
        || async {
            let status = cluster.node_status(service, leader)?;
            let now = status.leader.filter(|l| *l != leader)?;
            let lead = cluster.node_status(service, now)?;
            (status.last_applied >= lead.last_applied).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consistency_scenario_is_exact_with_the_order_leader_isolated_mid_run() {
    consistency_with_the_leader_isolated(Service::Order).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consistency_scenario_is_exact_with_the_stock_leader_isolated_mid_run() {
    consistency_with_the_leader_isolated(Service::Stock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consistency_scenario_is_exact_with_the_payment_leader_isolated_mid_run() {
    consistency_with_the_leader_isolated(Service::Payment).await;
}

/// What a node answered, straight from the test (the observer, which every
/// host still reaches): the status, or `None` for no answer in time.
async fn straight(
    client: &InternalClient,
    addr: &str,
    path: &str,
    body: &serde_json::Value,
) -> Option<(u16, serde_json::Value)> {
    let sent = client.post(addr, path, body).send();
    let answer = tokio::time::timeout(Duration::from_secs(10), sent)
        .await
        .ok()?
        .ok()?;
    let status = answer.status().as_u16();
    Some((status, answer.json().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_acknowledges_no_write_and_serves_no_stale_read() {
    let Some(mut cluster) = cluster_on_hosts() else {
        return;
    };
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/1/10/1").await.ok());
    let old = cluster.leader(Service::Stock).expect("a stock leader");
    let old_addr = cluster.admin_addr(Role::Node(Service::Stock, old));
    cluster
        .net()
        .expect("test hosts")
        .isolate(&node(Service::Stock, old))
        .expect("isolate");
    let cut = Instant::now();
    let internal = InternalClient::for_cluster(&cluster.spec, Duration::from_secs(10));

    // Writes sent straight to the isolated leader from the moment it is cut
    // off (before it knows): none is acknowledged.
    let writes: Vec<_> = (0..5)
        .map(|i| {
            let (internal, addr) = (internal.clone(), old_addr.clone());
            tokio::spawn(async move {
                let write = serde_json::to_value(WriteRequest {
                    key: RequestKey::internal(format!("isolated-{i}")),
                    cmd: Command::AddStock {
                        item_id: "0".into(),
                        amount: 1000,
                    },
                })
                .unwrap();
                straight(&internal, &addr, WRITE_PATH, &write).await
            })
        })
        .collect();
    // Within twice the election timeout (and a metrics refresh) it fences
    // itself.
    eventually(
        "the isolated leader fenced",
        Duration::from_secs(10),
        || async {
            metric(&old_addr, "cart_raft_leader_cut_off", &[])
                .await
                .filter(|v| *v == 1.0)
        },
    )
    .await;
    eprintln!("fenced after {:?}", cut.elapsed());
    let mut answers = Vec::new();
    for w in writes {
        answers.push(w.await.unwrap());
    }
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_none_or(|(s, _)| *s >= 400)),
        "an isolated leader acknowledged a write: {answers:?}"
    );
    // Once fenced, a write is refused at once.
    let write = serde_json::to_value(WriteRequest {
        key: RequestKey::internal("isolated-late"),
        cmd: Command::AddStock {
            item_id: "0".into(),
            amount: 1000,
        },
    })
    .unwrap();
    let late = straight(&internal, &old_addr, WRITE_PATH, &write).await;
    assert!(
        late.as_ref().is_some_and(|(s, _)| *s == 503),
        "a write to the fenced leader: {late:?}"
    );

    // The majority takes a write; the isolated leader never serves the
    // value from before it.
    assert!(
        eventually(
            "the majority takes a write",
            Duration::from_secs(30),
            || async {
                let a = client
                    .try_post("/stock/add/0/5", Some("majority-1"))
                    .await
                    .ok()?;
                (a.status < 500).then_some(a.ok())
            }
        )
        .await
    );
    let read = serde_json::to_value(ReadRequest {
        query: Query::FindItem {
            item_id: "0".into(),
        },
    })
    .unwrap();
    for _ in 0..5 {
        let answer = straight(&internal, &old_addr, READ_PATH, &read).await;
        assert!(
            answer.as_ref().is_some_and(|(s, _)| *s == 503),
            "a read from the isolated leader: {answer:?}"
        );
    }

    // After heal the old leader follows, and the stock is the majority's:
    // none of the writes sent to the isolated leader took effect.
    cluster.net().expect("test hosts").heal().expect("heal");
    eventually(
        "the old leader follows",
        Duration::from_secs(30),
        || async {
            let status = cluster.node_status(Service::Stock, old)?;
            status.leader.filter(|l| *l != old).map(|_| ())
        },
    )
    .await;
    assert_eq!(client.stock("0").await, 15);
}

/// The group's leader and its term as a majority reports them.
fn leadership(cluster: &LocalCluster, service: Service) -> Option<(u64, u64)> {
    let leader = cluster.leader(service)?;
    Some((leader, cluster.node_status(service, leader)?.term))
}

/// Most leader changes a fault of a few seconds and its heal may cause in a
/// group: one while it lasts (its leader cut off) and one at the heal (a
/// follower that campaigned meanwhile comes back with a higher term). A
/// storm would change leaders every election timeout.
const MAX_LEADER_CHANGES: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_partition_and_a_lossy_link_cause_no_election_storm() {
    let Some(mut cluster) = cluster_on_hosts() else {
        return;
    };
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/1/1000000/1").await.ok());
    let leader = cluster.leader(Service::Stock).expect("a stock leader");
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let (l, f) = (node(Service::Stock, leader), node(Service::Stock, follower));
    type Fault<'a> = Box<dyn Fn(&mut TestNet) + 'a>;
    let faults: [(&str, Fault); 3] = [
        (
            "the follower reaches the leader, not back",
            Box::new(|n: &mut TestNet| n.one_way(&f, &l).unwrap()),
        ),
        (
            "the leader reaches the follower, not back",
            Box::new(|n: &mut TestNet| n.one_way(&l, &f).unwrap()),
        ),
        (
            "30% loss between them",
            Box::new(|n: &mut TestNet| n.lossy(&l, &f, 30).unwrap()),
        ),
    ];
    for (phase, (what, fault)) in faults.into_iter().enumerate() {
        let mut seen = vec![leadership(&cluster, Service::Stock)];
        fault(cluster.net().expect("test hosts"));
        // Writes go on meanwhile: the group keeps serving.
        let (mut served, mut sent) = (0, 0);
        let heal_at = Instant::now() + Duration::from_secs(10);
        let end = heal_at + Duration::from_secs(3);
        let mut healed = false;
        while Instant::now() < end {
            if !healed && Instant::now() >= heal_at {
                cluster.net().expect("test hosts").heal().expect("heal");
                healed = true;
            }
            sent += 1;
            let id = format!("phase{phase}-{sent}");
            if let Ok(a) = client.try_post("/stock/add/0/1", Some(&id)).await {
                served += usize::from(a.ok());
            }
            let now = leadership(&cluster, Service::Stock);
            if now.is_some() && seen.last() != Some(&now) {
                seen.push(now);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let changes = seen.len() - 1;
        eprintln!("{what}: leaders {seen:?}, {served} of {sent} writes served");
        assert!(
            changes <= MAX_LEADER_CHANGES,
            "{what}: {changes} leader changes (at most {MAX_LEADER_CHANGES}): {seen:?}"
        );
        assert!(
            served * 2 > sent,
            "{what}: only {served} of {sent} writes served"
        );
    }
}
