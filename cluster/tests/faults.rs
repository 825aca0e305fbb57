//! Crashes and hangs of real processes: SIGKILL of followers, leaders and
//! coordinators, SIGSTOP of a coordinator, retries across a leader change.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cart_cluster::harness::Role;
use cart_common::Service;
use cart_services::domain::{Query, Reply};
use common::{cluster, local_read, Client};

const USERS: u64 = 10;
/// How long a write stream with no quorum behind it is watched for
/// acknowledgements that must not come.
const STALL_WINDOW: Duration = Duration::from_secs(3);

/// Adds 1 to users in turn, each write with its own request id, retrying a
/// write with the same id until it is acknowledged. Returns how many writes
/// each user got.
async fn write_stream(
    client: Client,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> BTreeMap<u64, i64> {
    let mut per_user = BTreeMap::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let user = i % USERS;
        let id = format!("stream-{i}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client
                .try_post(&format!("/payment/add_funds/{user}/1"), Some(&id))
                .await
            {
                Ok(a) if a.ok() => break,
                Ok(a) => assert!(
                    a.status >= 500 || a.status == 429,
                    "business failure on add_funds: {a:?}"
                ),
                Err(_) => {}
            }
            assert!(Instant::now() < deadline, "write {id} never acknowledged");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        *per_user.entry(user).or_insert(0) += 1;
        acked.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
    per_user
}

fn wait_acked(acked: &AtomicU64, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < at_least {
        assert!(
            Instant::now() < deadline,
            "write stream stalled at {}",
            acked.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn credit_on(
    cluster: &cart_cluster::harness::LocalCluster,
    node: u64,
    user: u64,
) -> Option<i64> {
    match local_read(
        cluster,
        Service::Payment,
        node,
        Query::FindUser {
            user_id: user.to_string(),
        },
    )
    .await
    {
        Some(Ok(Reply::User(u))) => Some(u.credit),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_follower_then_the_leader_loses_no_acknowledged_write() {
    let mut cluster = cluster(&[Service::Payment], |_| {});
    let client = Client::gateway(&cluster);
    assert!(client
        .post(&format!("/payment/batch_init/{USERS}/0"))
        .await
        .ok());

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(write_stream(client.clone(), stop.clone(), acked.clone()));

    wait_acked(&acked, 30);
    let leader = cluster.leader(Service::Payment).expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    cluster
        .kill(Role::Node(Service::Payment, follower))
        .unwrap();
    let after_follower = acked.load(Ordering::Relaxed);
    wait_acked(&acked, after_follower + 30);

    cluster.kill(Role::Node(Service::Payment, leader)).unwrap();
    let after_leader = acked.load(Ordering::Relaxed);
    // One node left of three: no quorum, so writes must stall, not succeed.
    // The stream writes one at a time: at most the write in flight when the
    // leader died (committed before, answered after) may still be
    // acknowledged; then nothing for several election timeouts.
    std::thread::sleep(STALL_WINDOW);
    let during_stall = acked.load(Ordering::Relaxed);
    assert!(
        during_stall <= after_leader + 1,
        "{} writes acknowledged without a quorum (one node of three up) in {STALL_WINDOW:?}",
        during_stall - after_leader
    );
    // Bring the follower back so the group can elect a new leader.
    cluster
        .start_process(Role::Node(Service::Payment, follower))
        .unwrap();
    let new_leader = cluster
        .wait_until("a new payment leader", Duration::from_secs(20), |c| {
            c.leader(Service::Payment).filter(|l| *l != leader)
        })
        .unwrap();
    assert_ne!(new_leader, leader);
    wait_acked(&acked, after_leader + 30);

    stop.store(true, Ordering::Relaxed);
    let expected = writer.await.unwrap();
    for (user, writes) in &expected {
        assert_eq!(
            client.credit(&user.to_string()).await,
            *writes,
            "user {user}"
        );
    }

    // The killed leader comes back with everything committed, and more.
    cluster
        .start_process(Role::Node(Service::Payment, leader))
        .unwrap();
    for node in 1..=3 {
        for (user, writes) in &expected {
            let mut seen = None;
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                seen = credit_on(&cluster, node, *user).await;
                if seen == Some(*writes) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(seen, Some(*writes), "node {node} user {user}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keep_succeeding_when_a_coordinator_is_killed_or_frozen() {
    let mut cluster = cluster(&[Service::Stock], |_| {});
    let client = Client::gateway(&cluster);
    let item = client.post("/stock/item/create/1").await.str("item_id");
    let mut added = 0;

    cluster.kill(Role::Coordinator(Service::Stock, 0)).unwrap();
    for _ in 0..20 {
        let a = client.post(&format!("/stock/add/{item}/1")).await;
        assert_eq!(a.status, 200, "with coordinator 0 killed: {a:?}");
        added += 1;
    }

    cluster
        .start_process(Role::Coordinator(Service::Stock, 0))
        .unwrap();
    cluster.wait_ready(Duration::from_secs(20)).unwrap();
    cluster
        .freeze(Role::Coordinator(Service::Stock, 1))
        .unwrap();
    for _ in 0..20 {
        let a = client.post(&format!("/stock/add/{item}/1")).await;
        assert_eq!(a.status, 200, "with coordinator 1 frozen: {a:?}");
        added += 1;
    }
    assert_eq!(client.stock(&item).await, added);
    cluster.thaw(Role::Coordinator(Service::Stock, 1)).unwrap();
    assert_eq!(client.stock(&item).await, added);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_with_its_request_id_after_a_leader_kill_applies_once() {
    let mut cluster = cluster(&[Service::Payment], |_| {});
    let client = Client::gateway(&cluster);
    assert!(client.post("/payment/batch_init/1/0").await.ok());

    assert_eq!(
        client
            .post_with_id("/payment/add_funds/0/10", "retry-me")
            .await
            .status,
        200
    );
    let leader = cluster.leader(Service::Payment).expect("a leader");
    cluster.kill(Role::Node(Service::Payment, leader)).unwrap();

    // The client never saw the answer and retries with the same id: the
    // new leader remembers the id through the replicated log.
    let again = client
        .post_with_id("/payment/add_funds/0/10", "retry-me")
        .await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(client.credit("0").await, 10);

    assert_eq!(
        client
            .post_with_id("/payment/add_funds/0/10", "another")
            .await
            .status,
        200
    );
    assert_eq!(client.credit("0").await, 20);
}
