//! Network faults on real network namespaces (issue 18): every process of
//! the cluster on a test host of its own (`harness::netns`), links cut and
//! healed by nftables rules while the cluster serves. Needs root, `ip` and
//! `nft` (scripts/install-test-tools); elsewhere these tests skip, saying
//! why, and under CI they fail.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cart_checker::api::Verb;
use cart_checker::bank::{self, Ledger};
use cart_checker::linearizable;
use cart_checker::record::Recorder;
use cart_checker::{Answer, Call};
use cart_cluster::harness::netns::{Delay, TestNet};
use cart_cluster::harness::{missing, LocalCluster, Role, INSTALL_TOOLS};
use cart_common::admin::Event;
use cart_common::http::InternalClient;
use cart_common::paths::{service_path, EVENTS_PATH, READ_PATH, WRITE_PATH};
use cart_common::rng::SplitMix64;
use cart_common::shard::Shard;
use cart_common::Service;
use cart_services::api::{ReadRequest, WriteRequest};
use cart_services::domain::{Command, Query};
use cart_services::request_key::RequestKey;
use common::scenario::{audit, check_out_all, scenario};
use common::{
    admin_call, admin_get, bin, coordinator_admin, eventually, metric, settled, test_timings,
    Client,
};
use reqwest::Method;

/// A cluster of every service on test hosts, ready and settled; `None`
/// (the reason printed) where test hosts cannot be made.
fn cluster_on_hosts() -> Option<LocalCluster> {
    sharded_cluster_on_hosts(1)
}

/// As `cluster_on_hosts`, with `shards` shards per service, leaders spread.
fn sharded_cluster_on_hosts(shards: u16) -> Option<LocalCluster> {
    if let Some(tool) = TestNet::missing_tool() {
        return missing(tool, INSTALL_TOOLS);
    }
    let tweak = |spec: &mut cart_common::ClusterSpec| {
        test_timings(spec);
        common::with_shards(spec, shards);
    };
    let cluster = LocalCluster::start_temp_in_netns(&bin(), &Service::ALL, tweak)
        .expect("cluster starts on test hosts");
    let cluster = settled(cluster);
    common::wait_leaders_spread(&cluster, shards);
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
    // The cluster view shows the isolated node down while it lasts.
    let addr = coordinator_admin(&cluster, Service::Order, 0);
    eventually("a node_down event", Duration::from_secs(20), || async {
        let path = format!("{EVENTS_PATH}?service=order&limit=100");
        let events: Vec<Event> = admin_get(&addr, &path).await?;
        events
            .into_iter()
            .find(|e| e.kind == "node_down" && e.node == Some(old))
    })
    .await;
    eprintln!("node_down event after {:?}", cut.elapsed());
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

/// The benchmark's consistency scenario with a leader of `service`
/// isolated once 150 checkouts have been answered: exact, through the API,
/// while the leader is still cut off; after heal it catches up. With
/// shards, the node isolated leads the shard of the scenario's item (stock)
/// or shard 0 (order, payment: the scenario's orders and users are spread
/// over every shard), and is a follower in the others.
async fn consistency_with_the_leader_isolated(service: Service, shards: u16) {
    let Some(mut cluster) = sharded_cluster_on_hosts(shards) else {
        return;
    };
    let client = Client::gateway(&cluster);
    let orders = scenario(&client).await;
    let shard = match service {
        Service::Stock => cluster.spec.shard_of(service, "0"),
        _ => Shard(0),
    };
    let leader = cluster.shard_leader(service, shard).expect("a leader");
    let started = Instant::now();
    let mut cut = None;
    let (paid, refused) = check_out_all(&client, &orders, 150, || {
        let net = cluster.net().expect("test hosts");
        net.isolate(&node(service, leader)).expect("isolate");
        cut = Some(Instant::now());
    })
    .await;
    let cut = cut.expect("isolated");
    eprintln!(
        "{service} shard {shard}'s leader isolated at {:?}: {} paid, {refused} refused, \
         all answered {:?} after",
        cut - started,
        paid.len(),
        cut.elapsed()
    );
    audit(&client, &orders, &paid).await;
    cluster.net().expect("test hosts").heal().expect("heal");
    let healed = Instant::now();
    eventually(
        "the isolated node follows again",
        Duration::from_secs(30),
        || async {
            for each in Shard::all(shards) {
                // It agrees with a majority on the leader (right after the
                // heal it may still believe it leads the shard it led; with
                // shards, it may lead that one again once handed back).
                let now = cluster.shard_leader(service, each)?;
                let status = cluster.shard_status(service, leader, each)?;
                if status.leader != Some(now) {
                    return None;
                }
                let lead = cluster.shard_status(service, now, each)?;
                if status.last_applied < lead.last_applied {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    eprintln!(
        "{service}: the isolated node caught up {:?} after the heal",
        healed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consistency_scenario_is_exact_with_the_order_leader_isolated_mid_run() {
    consistency_with_the_leader_isolated(Service::Order, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consistency_scenario_is_exact_with_the_stock_leader_isolated_mid_run() {
    consistency_with_the_leader_isolated(Service::Stock, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consistency_scenario_is_exact_with_the_payment_leader_isolated_mid_run() {
    consistency_with_the_leader_isolated(Service::Payment, 1).await;
}

/// The same on 3 shards per service (issue 19: every checkout fault test
/// on 3 shards).
mod sharded {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_consistency_scenario_is_exact_with_an_order_leader_isolated_mid_run() {
        consistency_with_the_leader_isolated(Service::Order, 3).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_consistency_scenario_is_exact_with_the_items_stock_leader_isolated_mid_run() {
        consistency_with_the_leader_isolated(Service::Stock, 3).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_consistency_scenario_is_exact_with_a_payment_leader_isolated_mid_run() {
        consistency_with_the_leader_isolated(Service::Payment, 3).await;
    }
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
    // Those taken before the fence are answered once it comes: 503, never
    // a 2xx, and not left to the client's timeout.
    let mut answers = Vec::new();
    for w in writes {
        answers.push(w.await.unwrap());
    }
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_some_and(|(s, _)| *s == 503)),
        "writes to an isolated leader: {answers:?}"
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

/// Each way between the stock leader and its followers, per packet: a
/// round trip of 60 to 100 ms, under the test's heartbeat of 150 ms.
/// (openraft times each AppendEntries out after one heartbeat interval, so
/// a link slower than that carries no replication at all: docs/faults.md.)
const SLOW: Delay = Delay {
    mean: Duration::from_millis(40),
    jitter: Duration::from_millis(10),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_delays_every_replicated_write_and_causes_no_election() {
    let Some(mut cluster) = cluster_on_hosts() else {
        return;
    };
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/1/0/1").await.ok());
    let before = leadership(&cluster, Service::Stock).expect("a stock leader");
    let leader = node(Service::Stock, before.0);
    for follower in (1..=3).filter(|id| *id != before.0) {
        let follower = node(Service::Stock, follower);
        let net = cluster.net().expect("test hosts");
        net.delay(&leader, &follower, SLOW).expect("slow link");
    }
    // A write commits only once a follower has its entry: the entry and
    // the acknowledgement each cross a slow link.
    let least = 2 * (SLOW.mean - SLOW.jitter);
    const WRITES: usize = 20;
    let mut took_all = Vec::new();
    for i in 0..WRITES {
        let started = Instant::now();
        let answer = client
            .try_post("/stock/add/0/1", Some(&format!("slow-{i}")))
            .await
            .expect("an answer");
        let took = started.elapsed();
        assert!(answer.ok(), "write {i} refused: {answer:?}");
        assert!(
            took >= least,
            "write {i} took {took:?}, less than {least:?}"
        );
        took_all.push(took);
    }
    took_all.sort();
    eprintln!(
        "slow link: {WRITES} of {WRITES} writes served, each in {:?} to {:?} (median {:?})",
        took_all[0],
        took_all[WRITES - 1],
        took_all[WRITES / 2]
    );
    // Slow, not cut: the followers hear the leader as often as before,
    // only later, so none campaigns.
    assert_eq!(leadership(&cluster, Service::Stock), Some(before));
    cluster.net().expect("test hosts").heal().expect("heal");
    let stock = client.get("/stock/find/0").await;
    assert_eq!(stock.body["stock"], WRITES as i64, "{stock:?}");
    assert_eq!(leadership(&cluster, Service::Stock), Some(before));
}

/// Items and users "0".."KEYS-1" take direct reads and writes (checked for
/// linearizability); "KEYS".."2*KEYS-1" take checkouts (checked by the
/// bank invariants).
const KEYS: u64 = 4;
const START: i64 = 1_000;
const LOAD: Duration = Duration::from_secs(30);

/// One direct operation on a stock or credit key through the gateway, as
/// the history records it.
async fn direct_op(client: &Client, call: &Call, id: &str) -> Answer {
    let (verb, path) = call.request().expect("a stock or credit key");
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        match verb {
            Verb::Get => client.try_get(&path).await,
            Verb::Post => client.try_post(&path, Some(id)).await,
        }
    })
    .await;
    let (status, body) = match answered {
        Ok(Ok(a)) => (Some(a.status), a.body),
        // A lost connection or no answer in time.
        _ => (None, serde_json::Value::Null),
    };
    call.answer(status, &body).unwrap_or_else(|e| panic!("{e}"))
}

/// A random fault among the nemeses, on random hosts of the nodes.
fn random_fault(net: &mut TestNet, rng: &mut SplitMix64) -> String {
    let service = Service::ALL[rng.below(3) as usize];
    let a = 1 + rng.below(3);
    let b = 1 + (a + rng.below(2)) % 3;
    let (na, nb) = (node(service, a), node(service, b));
    match rng.below(6) {
        0 => net.isolate(&na).unwrap(),
        1 => {
            let minority = [na.as_str()];
            net.split(&minority).unwrap()
        }
        2 => net.one_way(&na, &nb).unwrap(),
        3 => net.lossy(&na, &nb, 30).unwrap(),
        4 => net.delay(&na, &nb, SLOW).unwrap(),
        _ => net.bridge_down().unwrap(),
    }
    net.events()
        .last()
        .map(|e| e.what.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_load_under_random_partitions_is_linearizable_and_loses_nothing() {
    let Some(mut cluster) = cluster_on_hosts() else {
        return;
    };
    let client = Client::gateway(&cluster);
    let n = 2 * KEYS;
    assert!(client
        .post(&format!("/stock/batch_init/{n}/{START}/1"))
        .await
        .ok());
    assert!(client
        .post(&format!("/payment/batch_init/{n}/{START}"))
        .await
        .ok());
    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));

    // Six clients of direct reads and writes, each one operation at a time.
    let mut workers = Vec::new();
    for c in 0..6u32 {
        let (client, recorder, stop) = (client.clone(), recorder.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(0xc0ffee + u64::from(c));
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let service = if rng.below(2) == 0 { "stock" } else { "credit" };
                let key = format!("{service}/{}", rng.below(KEYS));
                let amount = 1 + rng.below(5) as i64;
                let call = match rng.below(3) {
                    0 => Call::Read { key },
                    1 => Call::Add { key, amount },
                    _ => Call::Subtract { key, amount },
                };
                let at = recorder.now_us();
                let answer = direct_op(&client, &call, &format!("d{c}-{i}")).await;
                recorder.complete(c, at, call, answer);
            }
        }));
    }
    // Two clients checking out orders of one item each, retrying their own
    // request id until a definite answer (or the end of the run).
    let paid_answers = Arc::new(Mutex::new(BTreeSet::new()));
    let orders = Arc::new(Mutex::new(Vec::new()));
    for c in 0..2u64 {
        let (client, stop) = (client.clone(), stop.clone());
        let (paid_answers, orders) = (paid_answers.clone(), orders.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(0xbead + c);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (user, item) = (KEYS + rng.below(KEYS), KEYS + rng.below(KEYS));
                let Ok(created) = client
                    .try_post(
                        &format!("/orders/create/{user}"),
                        Some(&format!("o{c}-{i}")),
                    )
                    .await
                else {
                    continue;
                };
                if !created.ok() {
                    continue;
                }
                let order = created.str("order_id");
                let add = format!("/orders/addItem/{order}/{item}/1");
                if !client
                    .try_post(&add, Some(&format!("a{c}-{i}")))
                    .await
                    .is_ok_and(|a| a.ok())
                {
                    continue;
                }
                orders.lock().unwrap().push(order.clone());
                let id = format!("k{c}-{i}");
                let checkout = format!("/orders/checkout/{order}");
                while !stop.load(Ordering::Relaxed) {
                    match client.try_post(&checkout, Some(&id)).await {
                        Ok(a) if a.ok() => {
                            paid_answers.lock().unwrap().insert(order.clone());
                            break;
                        }
                        Ok(a) if a.status < 500 && a.status != 429 => break,
                        _ => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            }
        }));
    }

    // A random nemesis every few seconds, each healed before the next.
    let mut rng = SplitMix64::new(0x5eed18);
    // Each round: 3 s of a fault, 2 s healed; LOAD is whole rounds.
    for _ in 0..LOAD.as_secs() / 5 {
        let what = random_fault(cluster.net().expect("test hosts"), &mut rng);
        eprintln!("nemesis: {what}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.net().expect("test hosts").heal().expect("heal");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("a client task");
    }
    cluster.net().expect("test hosts").heal().expect("heal");
    cluster
        .wait_settled(Duration::from_secs(60))
        .expect("the cluster settles after the heal");

    // A final read of every key, after everything: it must see every
    // acknowledged write.
    for service in ["stock", "credit"] {
        for k in 0..KEYS {
            let call = Call::Read {
                key: format!("{service}/{k}"),
            };
            let at = recorder.now_us();
            let answer = eventually("a final read", Duration::from_secs(30), || async {
                Some(direct_op(&client, &call, "").await).filter(|a| *a != Answer::Unknown)
            })
            .await;
            recorder.complete(99, at, call, answer);
        }
    }
    let history = recorder.history();
    let initial: BTreeMap<String, i64> = ["stock", "credit"]
        .iter()
        .flat_map(|s| (0..KEYS).map(move |k| (format!("{s}/{k}"), START)))
        .collect();
    let unknown = history
        .iter()
        .filter(|o| o.answer == Answer::Unknown)
        .count();
    eprintln!("{} operations, {unknown} without an answer", history.len());
    let failures = linearizable::check(&history, &initial);
    assert!(
        failures.is_empty(),
        "not linearizable: {}",
        failures
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    );

    // The bank invariants on the checkout keys.
    let mut ledger = Ledger {
        answered_paid: paid_answers.lock().unwrap().clone(),
        ..Ledger::default()
    };
    for k in KEYS..2 * KEYS {
        ledger.stock_before.insert(k.to_string(), START);
        ledger.credit_before.insert(k.to_string(), START);
        ledger
            .stock_after
            .insert(k.to_string(), client.stock(&k.to_string()).await);
        ledger
            .credit_after
            .insert(k.to_string(), client.credit(&k.to_string()).await);
    }
    let orders = orders.lock().unwrap().clone();
    for order in &orders {
        let found = client.get(&format!("/orders/find/{order}")).await;
        assert_eq!(found.status, 200, "{found:?}");
        let items = found.body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| {
                        (
                            i[0].as_str().unwrap_or("").to_string(),
                            i[1].as_i64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        ledger.orders.push(bank::Order {
            id: order.clone(),
            user: found.str("user_id"),
            total: found.int("total_cost"),
            items,
            paid: found.body["paid"].as_bool().unwrap_or(false),
        });
    }
    let paid = ledger.orders.iter().filter(|o| o.paid).count();
    eprintln!(
        "{} orders, {paid} paid, {} answered paid",
        orders.len(),
        ledger.answered_paid.len()
    );
    let violations = bank::check(&ledger);
    assert!(
        violations.is_empty(),
        "bank invariants broken: {}",
        violations
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert!(paid > 0, "no checkout was paid in {LOAD:?}");

    // Every group's replicas agree.
    for service in Service::ALL {
        let coord = coordinator_admin(&cluster, service, 0);
        let path = format!("{}/check", service_path(service.name()));
        let token = cluster.spec.cluster.admin_token.clone();
        let (status, body) = admin_call(Method::POST, &coord, &path, Some(&token), None).await;
        assert_eq!(status, 200, "{body}");
        let id = body["check_id"].as_str().expect("a check id").to_string();
        let report = common::check_report(&cluster, service, &id, Duration::from_secs(60)).await;
        assert_eq!(report.verdict, "clean", "{service}: {report:?}");
    }
}
