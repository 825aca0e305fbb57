//! Durability across restarts and log compaction by snapshots.

mod common;

use std::time::{Duration, Instant};

use cart_cluster::harness::LocalCluster;
use cart_cluster::harness::Role;
use cart_common::Service;
use cart_services::domain::{Query, Reply};
use common::{cluster, eventually, local_read, metric, Client};
use futures::StreamExt;

const SNAPSHOT_EVERY: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restarted_on_its_data_dir_has_all_data() {
    let mut cluster = cluster(&Service::ALL, |spec| {
        spec.raft.snapshot_every = SNAPSHOT_EVERY
    });
    let client = Client::gateway(&cluster);
    let item = client.post("/stock/item/create/3").await.str("item_id");
    assert!(client.post(&format!("/stock/add/{item}/10")).await.ok());
    let user = client.post("/payment/create_user").await.str("user_id");
    // Enough writes that every payment replica snapshots and purges its log.
    for _ in 0..(3 * SNAPSHOT_EVERY) {
        assert!(client
            .post(&format!("/payment/add_funds/{user}/1"))
            .await
            .ok());
    }
    let order = client
        .post(&format!("/orders/create/{user}"))
        .await
        .str("order_id");
    assert!(client
        .post(&format!("/orders/addItem/{order}/{item}/2"))
        .await
        .ok());
    assert_eq!(
        client
            .post(&format!("/orders/checkout/{order}"))
            .await
            .status,
        200
    );
    let expected_order = client.get(&format!("/orders/find/{order}")).await.body;

    cluster.shutdown();
    cluster.start_all().unwrap();
    cluster.wait_ready(Duration::from_secs(60)).unwrap();

    assert_eq!(client.stock(&item).await, 8);
    assert_eq!(client.credit(&user).await, 3 * SNAPSHOT_EVERY as i64 - 6);
    assert_eq!(
        client.get(&format!("/orders/find/{order}")).await.body,
        expected_order
    );
    // The log was compacted: every payment replica holds a snapshot and
    // only a bounded tail of entries after it.
    for id in 1..=3 {
        let status = cluster.node_status(Service::Payment, id).expect("status");
        assert!(
            status.snapshot.is_some(),
            "node {id} has no snapshot: {status:?}"
        );
        let kept = status.last_log_index.unwrap_or(0) - status.purged.unwrap_or(0);
        assert!(
            kept <= 2 * SNAPSHOT_EVERY,
            "node {id} keeps {kept} entries: {status:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_purged_log_catches_up_from_a_snapshot() {
    let mut cluster = cluster(&[Service::Payment], |spec| {
        spec.raft.snapshot_every = SNAPSHOT_EVERY
    });
    let client = Client::gateway(&cluster);
    // Large enough that the snapshot travels in several chunks.
    assert!(client.post("/payment/batch_init/100000/0").await.ok());
    let leader = cluster.leader(Service::Payment).expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    cluster
        .kill(Role::Node(Service::Payment, follower))
        .unwrap();

    let writes = 4 * SNAPSHOT_EVERY as i64;
    for _ in 0..writes {
        assert!(client.post("/payment/add_funds/0/1").await.ok());
    }
    let status = cluster
        .node_status(Service::Payment, leader)
        .expect("leader status");
    assert!(status.purged.is_some(), "leader purged nothing: {status:?}");

    cluster
        .start_process(Role::Node(Service::Payment, follower))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = local_read(
            &cluster,
            Service::Payment,
            follower,
            Query::FindUser {
                user_id: "0".into(),
            },
        )
        .await;
        let last = local_read(
            &cluster,
            Service::Payment,
            follower,
            Query::FindUser {
                user_id: "99999".into(),
            },
        )
        .await;
        if let (Some(Ok(Reply::User(u))), Some(Ok(Reply::User(_)))) = (&seen, &last) {
            if u.credit == writes {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "follower {follower} never caught up: {seen:?}\n{}\n{}",
            cluster.log_tail(Role::Node(Service::Payment, follower), 15),
            cluster.log_tail(Role::Node(Service::Payment, leader), 15)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = cluster
        .node_status(Service::Payment, follower)
        .expect("follower status");
    assert!(
        status.snapshot.is_some(),
        "follower caught up without a snapshot: {status:?}"
    );
    // And that snapshot came from the leader: the restarted process counts
    // the snapshots it installed (a snapshot it built from entries it was
    // sent would not count).
    let addr = cluster
        .spec
        .node_addr(Service::Payment, follower)
        .expect("follower address");
    let installed = metric(&addr, "cart_raft_snapshots_installed_total", &[]).await;
    assert!(
        installed.is_some_and(|n| n >= 1.0),
        "follower {follower} caught up without installing the leader's snapshot \
         (cart_raft_snapshots_installed_total = {installed:?}): {status:?}"
    );
}

/// Kills a stock follower, then adds `writes` units of stock to item 0
/// (created with none), 200 at a time so that entries carry several writes
/// each. Returns the leader and the follower.
async fn stock_follower_left_behind(
    cluster: &mut LocalCluster,
    client: &Client,
    writes: usize,
) -> (u64, u64) {
    assert!(client.post("/stock/batch_init/1/0/1").await.ok());
    let leader = cluster.leader(Service::Stock).expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    cluster.kill(Role::Node(Service::Stock, follower)).unwrap();
    // Each write under its own request id, resent with it until answered
    // 2xx (a refusal under this much load applies nothing; a lost answer
    // is applied once): the stock ends at exactly `writes`.
    let added = futures::stream::iter(0..writes)
        .map(|i| async move {
            let id = format!("left-behind-{i}");
            for _ in 0..50 {
                match client.try_post("/stock/add/0/1", Some(&id)).await {
                    Ok(a) if a.ok() => return true,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            false
        })
        .buffer_unordered(1000)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    assert_eq!(added, writes);
    (leader, follower)
}

/// Waits until stock follower `follower` reads item 0's stock as `stock`
/// from its own state.
async fn follower_sees_stock(cluster: &LocalCluster, follower: u64, stock: i64) {
    eventually(
        "the follower caught up",
        Duration::from_secs(60),
        || async {
            let seen = local_read(
                cluster,
                Service::Stock,
                follower,
                Query::FindItem {
                    item_id: "0".into(),
                },
            )
            .await;
            match seen {
                Some(Ok(Reply::Item(item))) if item.stock == stock => Some(()),
                _ => None,
            }
        },
    )
    .await;
}

/// A node keeps only its log's newest entries in memory: a follower that
/// missed more than that is sent entries the leader reads back from its
/// log files, and a restarted node replays its log from them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_no_longer_in_memory_are_read_back_from_the_log_files() {
    let mut cluster = cluster(&[Service::Stock], |spec| {
        spec.raft.snapshot_every = 100_000;
        spec.raft.resident_log_kib = 16;
    });
    let client = Client::gateway(&cluster);
    let writes = 1000usize;
    let (leader, follower) = stock_follower_left_behind(&mut cluster, &client, writes).await;
    let addr = cluster.spec.node_addr(Service::Stock, leader).unwrap();
    let resident = metric(&addr, "cart_raft_log_resident_bytes", &[]).await;
    assert!(
        resident.is_some_and(|b| b <= 32.0 * 1024.0),
        "the leader holds more of its log in memory than the bound allows \
         (cart_raft_log_resident_bytes = {resident:?})"
    );
    let evicted = metric(&addr, "cart_raft_log_entries_evicted_total", &[]).await;
    assert!(
        evicted.is_some_and(|n| n >= 1.0),
        "no entry left the leader's memory (evicted = {evicted:?})"
    );

    cluster
        .start_process(Role::Node(Service::Stock, follower))
        .unwrap();
    follower_sees_stock(&cluster, follower, writes as i64).await;
    let read_back = metric(&addr, "cart_raft_log_disk_reads_total", &[]).await;
    assert!(
        read_back.is_some_and(|n| n >= 1.0),
        "the follower was caught up without the leader reading its log files \
         (cart_raft_log_disk_reads_total = {read_back:?})"
    );

    // The whole group restarted: each node replays the entries after its
    // (absent) snapshot from disk, keeping only the bound in memory.
    cluster.shutdown();
    cluster.start_all().unwrap();
    cluster.wait_ready(Duration::from_secs(60)).unwrap();
    assert_eq!(client.stock("0").await, writes as i64);
    for id in 1..=3 {
        follower_sees_stock(&cluster, id, writes as i64).await;
    }
}

/// A follower that comes back far behind is sent the entries it missed in
/// appends it can answer within the heartbeat interval (openraft's timeout
/// for each append), not in one append of hundreds of fat entries that
/// times out and is sent again unchanged forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_is_caught_up_in_appends_of_bounded_size() {
    // No snapshot meanwhile: the follower must be sent the entries. A short
    // heartbeat interval, so that an unbounded catch-up append would take
    // longer than openraft waits for it. A byte bound well under what 300
    // entries (openraft's most per append) of the writes below encode to,
    // however the leader batches them: with the default 256 KiB, whether
    // the catch-up needed a split depended on how many writes each entry
    // carried, and the test failed now and then.
    let mut cluster = cluster(&[Service::Stock], |spec| {
        spec.raft.snapshot_every = 100_000;
        spec.raft.heartbeat_ms = 25;
        spec.raft.max_append_kib = 16;
    });
    let client = Client::gateway(&cluster);
    // Concurrent writes (1000 at once), so that entries carry many writes
    // each: the missed entries are far more than one bounded append.
    let writes = 4000usize;
    let (leader, follower) = stock_follower_left_behind(&mut cluster, &client, writes).await;

    cluster
        .start_process(Role::Node(Service::Stock, follower))
        .unwrap();
    follower_sees_stock(&cluster, follower, writes as i64).await;
    let status = cluster
        .node_status(Service::Stock, follower)
        .expect("status");
    assert!(
        status.snapshot.is_none(),
        "caught up from a snapshot: {status:?}"
    );
    // Counted on whichever node led while the follower caught up: `leader`,
    // or another one elected meanwhile on a busy machine.
    let mut splits = Vec::new();
    for node in (1..=3).filter(|n| *n != follower) {
        let addr = cluster.spec.node_addr(Service::Stock, node).unwrap();
        let at = metric(
            &addr,
            "cart_raft_append_splits_total",
            &[("reason", "bytes")],
        )
        .await;
        splits.push((node, at));
    }
    assert!(
        splits.iter().any(|(_, n)| n.is_some_and(|n| n >= 1.0)),
        "the leader (node {leader} at first) sent the missed entries without bounding an \
         append (cart_raft_append_splits_total{{reason=\"bytes\"}} by node: {splits:?})"
    );
}
