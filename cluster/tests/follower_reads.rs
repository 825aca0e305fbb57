//! Follower reads (`raft.follower_reads`, `raft/read_index.rs`): a read sent
//! to a follower is answered there, and sees every write acknowledged before
//! it, also right after a leader change; with the switch off, a follower
//! sends the reader to its leader. A leader holding its read lease reads
//! without a round (`raft/read_lease.rs`), and one frozen past it does not;
//! with leases off, reads arriving together at a leader share its
//! leadership rounds (`raft/read_barrier.rs`).

mod common;

use std::time::Duration;

use cart_cluster::harness::{LocalCluster, Role};
use cart_common::http::InternalClient;
use cart_common::paths::READ_PATH;
use cart_common::Service;
use cart_services::api::{NotLeader, ReadRequest};
use cart_services::domain::{Outcome, Query, Reply};
use common::{cluster, eventually, followers, metric, Client};
use futures::future::join_all;

/// A linearizable read of item "0" sent to stock node `id` itself: its
/// status, and its stock when answered 200.
async fn read_at(cluster: &LocalCluster, id: u64) -> (u16, Option<i64>, String) {
    let addr = cluster.spec.node_addr(Service::Stock, id).unwrap();
    let query = Query::FindItem {
        item_id: "0".into(),
    };
    let answer = InternalClient::for_cluster(&cluster.spec, Duration::from_secs(5))
        .post(&addr, READ_PATH, &ReadRequest { query })
        .send()
        .await
        .expect("the node answers");
    let status = answer.status().as_u16();
    let body = answer.text().await.unwrap_or_default();
    let stock = match serde_json::from_str::<Outcome>(&body) {
        Ok(Ok(Reply::Item(item))) if status == 200 => Some(item.stock),
        _ => None,
    };
    (status, stock, body)
}

/// Every write acknowledged through the gateway is seen by a read sent to
/// either follower at once: each write is one entry whose commit index the
/// followers would otherwise learn only with the next append or heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_read_sees_every_write_acknowledged_before_it() {
    let cluster = cluster(&[Service::Stock], |_| {});
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/1/0/1").await.ok());
    let leader = cluster.leader(Service::Stock).expect("a leader");
    for written in 1..=20 {
        assert!(client.post("/stock/add/0/1").await.ok());
        for node in followers(&cluster, Service::Stock, leader) {
            let (status, stock, body) = read_at(&cluster, node).await;
            assert_eq!(status, 200, "follower {node} answers the read: {body}");
            assert_eq!(
                stock,
                Some(written),
                "follower {node} read after {written} acknowledged writes: {body}"
            );
        }
    }
    for node in followers(&cluster, Service::Stock, leader) {
        let addr = cluster.spec.node_addr(Service::Stock, node).unwrap();
        let served = metric(
            &addr,
            "cart_raft_follower_reads_total",
            &[("outcome", "served")],
        )
        .await;
        assert!(
            served.is_some_and(|n| n >= 20.0),
            "follower {node} counted its reads as served: {served:?}"
        );
        // Its own check of whether it leads is no leader read, and no failure.
        assert_eq!(confirmed(&addr, "failed").await, 0.0, "follower {node}");
    }
}

/// Right after the leader is SIGKILLed, a write acknowledged by the new
/// leader is seen by a read at the remaining follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_read_right_after_a_leader_change_sees_the_new_leaders_writes() {
    let mut cluster = cluster(&[Service::Stock], |_| {});
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/1/0/1").await.ok());
    assert!(client.post("/stock/add/0/5").await.ok());
    let old = cluster.leader(Service::Stock).expect("a leader");
    cluster.kill(Role::Node(Service::Stock, old)).unwrap();
    // Retried by the coordinator until the new leader has it.
    assert!(client.post("/stock/add/0/7").await.ok());
    let new = eventually("a new stock leader", Duration::from_secs(20), || async {
        cluster.leader(Service::Stock).filter(|l| *l != old)
    })
    .await;
    let follower = (1..=3).find(|n| *n != old && *n != new).unwrap();
    assert!(client.post("/stock/add/0/1").await.ok());
    let (status, stock, body) = read_at(&cluster, follower).await;
    assert_eq!(status, 200, "follower {follower} answers: {body}");
    assert_eq!(stock, Some(13), "follower {follower} sees all three writes");
}

/// With `follower_reads = false` a follower answers a read with 421 and its
/// leader's address, and the gateway's reads still work (at the leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_follower_reads_off_a_follower_sends_the_reader_to_its_leader() {
    let cluster = cluster(&[Service::Stock], |spec| spec.raft.follower_reads = false);
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/1/0/1").await.ok());
    assert!(client.post("/stock/add/0/3").await.ok());
    assert_eq!(client.stock("0").await, 3);
    let leader = cluster.leader(Service::Stock).expect("a leader");
    let leader_addr = cluster.spec.node_addr(Service::Stock, leader).unwrap();
    for node in followers(&cluster, Service::Stock, leader) {
        let (status, _, body) = read_at(&cluster, node).await;
        assert_eq!(status, 421, "follower {node} refers the read: {body}");
        let hint: NotLeader = serde_json::from_str(&body).unwrap();
        assert_eq!(hint.leader_addr.as_deref(), Some(leader_addr.as_str()));
    }
}

/// How many of the leader-side reads at `addr` were confirmed each way.
async fn confirmed(addr: &str, round: &str) -> f64 {
    metric(addr, "cart_raft_leader_reads_total", &[("round", round)])
        .await
        .expect("the leader's read confirmations")
}

/// Reads at a leader a majority keeps acknowledging are confirmed by its
/// lease, with no round, and each sees the write acknowledged before it; so
/// are followers' reads once the followers have heard the commit index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_holding_its_lease_confirms_reads_without_a_round_and_they_see_the_last_write() {
    let cluster = cluster(&[Service::Stock], |_| {});
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/1/0/1").await.ok());
    let leader = cluster.leader(Service::Stock).expect("a leader");
    let addr = cluster.spec.node_addr(Service::Stock, leader).unwrap();
    let rounds_before = confirmed(&addr, "own").await + confirmed(&addr, "shared").await;
    let lease_before = confirmed(&addr, "lease").await;
    for written in 1..=10 {
        assert!(client.post("/stock/add/0/1").await.ok());
        let (status, stock, body) = read_at(&cluster, leader).await;
        assert_eq!((status, stock), (200, Some(written)), "{body}");
    }
    let rounds = confirmed(&addr, "own").await + confirmed(&addr, "shared").await;
    assert_eq!(rounds, rounds_before, "no read needed a round");
    assert_eq!(confirmed(&addr, "lease").await - lease_before, 10.0);

    // A heartbeat (every 200 ms) tells the followers the last commit index;
    // then their reads' read indexes need no round either.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let lease_before = confirmed(&addr, "lease").await;
    for node in followers(&cluster, Service::Stock, leader) {
        for _ in 0..3 {
            let (status, stock, body) = read_at(&cluster, node).await;
            assert_eq!((status, stock), (200, Some(10)), "follower {node}: {body}");
        }
    }
    let rounds_after = confirmed(&addr, "own").await + confirmed(&addr, "shared").await;
    assert_eq!(rounds_after, rounds, "no follower read needed a round");
    assert_eq!(confirmed(&addr, "lease").await - lease_before, 6.0);
}

/// Once its followers stop answering (frozen), a leader's lease runs out
/// after the election timeout: a read sent later is not confirmed by it
/// (it waits for a round that cannot finish, or is refused), though the
/// leader has heard of no other leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_followers_stop_answering_loses_its_lease_within_the_election_timeout() {
    let mut cluster = cluster(&[Service::Stock], |_| {});
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/1/10/1").await.ok());
    let leader = cluster.leader(Service::Stock).expect("a leader");
    let addr = cluster.spec.node_addr(Service::Stock, leader).unwrap();
    let (status, _, body) = read_at(&cluster, leader).await;
    assert_eq!(status, 200, "{body}");
    let lease_before = confirmed(&addr, "lease").await;
    let silent = followers(&cluster, Service::Stock, leader);
    for node in &silent {
        cluster.freeze(Role::Node(Service::Stock, *node)).unwrap();
    }
    // Past the lease (the election timeout, 1 s), before the fence (2 s)
    // would refuse the read before the lease is looked at.
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let (status, _, body) = read_at(&cluster, leader).await;
    let lease_after = confirmed(&addr, "lease").await;
    for node in &silent {
        cluster.thaw(Role::Node(Service::Stock, *node)).unwrap();
    }
    assert_ne!(status, 200, "read with no majority answering: {body}");
    assert_eq!(
        lease_after, lease_before,
        "no read confirmed by a run-out lease"
    );
}

/// A leader frozen (SIGSTOP) for longer than its lease, while the others
/// elect a leader and take a write, wakes with its lease run out: a read it
/// was sent meanwhile is not confirmed by the lease, and it never answers
/// the value from before the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_serves_no_stale_read_when_it_wakes() {
    let mut cluster = cluster(&[Service::Stock], |_| {});
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/1/10/1").await.ok());
    let old = cluster.leader(Service::Stock).expect("a leader");
    let old_addr = cluster.spec.node_addr(Service::Stock, old).unwrap();
    let lease_before = confirmed(&old_addr, "lease").await;
    cluster.freeze(Role::Node(Service::Stock, old)).unwrap();
    eventually("a new stock leader", Duration::from_secs(20), || async {
        cluster.leader(Service::Stock).filter(|l| *l != old)
    })
    .await;
    assert!(client.post("/stock/add/0/5").await.ok());
    // Sent while it is frozen: waiting in its socket when it wakes.
    let reads: Vec<_> = (0..3)
        .map(|_| {
            let cluster_spec = cluster.spec.clone();
            tokio::spawn(async move {
                let addr = cluster_spec.node_addr(Service::Stock, old).unwrap();
                let query = Query::FindItem {
                    item_id: "0".into(),
                };
                let answer = InternalClient::for_cluster(&cluster_spec, Duration::from_secs(10))
                    .post(&addr, READ_PATH, &ReadRequest { query })
                    .send()
                    .await
                    .expect("the old leader answers once thawed");
                let status = answer.status().as_u16();
                (status, answer.text().await.unwrap_or_default())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.thaw(Role::Node(Service::Stock, old)).unwrap();
    for read in reads {
        let (status, body) = read.await.unwrap();
        if status == 200 {
            let stock = match serde_json::from_str::<Outcome>(&body) {
                Ok(Ok(Reply::Item(item))) => item.stock,
                other => panic!("a 200 read that is no item: {other:?}"),
            };
            assert_eq!(stock, 15, "the woken leader's read: {body}");
        }
    }
    assert_eq!(
        confirmed(&old_addr, "lease").await,
        lease_before,
        "the woken leader confirmed no read by its run-out lease"
    );
}

/// With leases off, forty reads sent at once to the leader: fewer rounds
/// than reads confirm its leadership, and every read sees the write
/// acknowledged before them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_arriving_together_at_the_leader_share_its_rounds_and_see_the_last_write() {
    let cluster = cluster(&[Service::Stock], |spec| spec.raft.lease_reads = false);
    let client = Client::gateway(&cluster);
    assert!(client.post("/stock/batch_init/1/5/1").await.ok());
    assert!(client.post("/stock/add/0/2").await.ok());
    let leader = cluster.leader(Service::Stock).expect("a leader");
    let addr = cluster.spec.node_addr(Service::Stock, leader).unwrap();
    let rounds = |round: &'static str| {
        let addr = addr.clone();
        async move {
            metric(&addr, "cart_raft_leader_reads_total", &[("round", round)])
                .await
                .expect("the leader's read rounds")
        }
    };
    let (own_before, shared_before) = (rounds("own").await, rounds("shared").await);
    let reads = join_all((0..40).map(|_| read_at(&cluster, leader))).await;
    for (status, stock, body) in &reads {
        assert_eq!((*status, *stock), (200, Some(7)), "{body}");
    }
    let own = rounds("own").await - own_before;
    let shared = rounds("shared").await - shared_before;
    assert_eq!(own + shared, 40.0, "every read counted once");
    assert!(
        shared >= 1.0,
        "40 reads at once ran {own} rounds of their own and shared none"
    );
}
