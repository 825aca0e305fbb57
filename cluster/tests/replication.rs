//! How entries and commit indexes reach followers.

mod common;

use std::time::Duration;

use cart_common::Service;
use cart_services::domain::{Query, Reply};
use common::{cluster, eventually, local_read, metric, Client};

/// The leader answers openraft's commit-index push itself when it follows
/// an append the follower has just acknowledged (`raft/commit_push.rs`);
/// the follower still learns the index from the next append or heartbeat
/// and applies every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_push_the_leader_folds_still_reaches_every_follower() {
    let cluster = cluster(&[Service::Stock], |_| {});
    let client = Client::gateway(&cluster);
    // One item, "0", with no stock.
    assert!(client.post("/stock/batch_init/1/0/1").await.ok());
    // One write at a time: each is an entry of its own, followed by the
    // push of its commit index.
    let writes = 20;
    for _ in 0..writes {
        assert!(client.post("/stock/add/0/1").await.ok());
    }
    let leader = cluster.leader(Service::Stock).expect("a leader");
    let addr = cluster.spec.node_addr(Service::Stock, leader).unwrap();
    let folded = metric(&addr, "cart_raft_commit_pushes_folded_total", &[]).await;
    assert!(
        folded.is_some_and(|n| n >= 1.0),
        "the leader sent every commit-index push as an RPC of its own \
         (cart_raft_commit_pushes_folded_total = {folded:?})"
    );
    for node in (1..=3).filter(|n| *n != leader) {
        eventually(
            &format!("stock follower {node} applied all {writes} writes"),
            Duration::from_secs(10),
            || async {
                let query = Query::FindItem {
                    item_id: "0".into(),
                };
                match local_read(&cluster, Service::Stock, node, query).await {
                    Some(Ok(Reply::Item(item))) if item.stock == writes => Some(()),
                    _ => None,
                }
            },
        )
        .await;
    }
}
