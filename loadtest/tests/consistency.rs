//! The benchmark's consistency scenario through the tool: the verdict is
//! 0/0/0/0 on a healthy cluster and with the order leader killed mid-run.
//! Smaller than the benchmark's 100 stock / 1000 buyers so that it runs in
//! seconds in a debug build; the release runs in docs/loadtest.md use the
//! full size.

mod common;

use cart_cluster::harness::LocalCluster;
use common::{cart_bin, cart_load, cluster, cluster_of_shards};

/// The scenario at 30 stock and 300 buyers against `cluster`'s gateway:
/// 0/0/0/0, every unit sold, every refused buyer's credit kept.
fn small_scenario_is_exact(cluster: &LocalCluster) {
    let dir = tempfile::tempdir().unwrap();
    let r = cart_load(
        &[
            "consistency",
            "--gateway",
            &cluster.gateway_url(),
            "--stock",
            "30",
            "--buyers",
            "300",
        ],
        &dir.path().join("c.json"),
    );
    let v = r.outcome.verdict.expect("a verdict");
    assert_eq!(v.numbers(), [0, 0, 0, 0], "{v:?}");
    assert!(v.pass, "{v:?}");
    assert_eq!((v.successes_logged, v.refusals_logged), (30, 270));
    assert_eq!(
        (v.stock_in_db, v.credit_in_db, v.orders_paid_in_db),
        (0, 270, 30)
    );
}

#[test]
fn consistency_verdict_is_zero_on_a_healthy_cluster() {
    small_scenario_is_exact(&cluster());
}

#[test]
fn consistency_verdict_is_zero_on_a_cluster_of_3_shards_per_service() {
    small_scenario_is_exact(&cluster_of_shards(3));
}

#[test]
fn consistency_verdict_is_zero_with_the_order_leader_killed_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let bin = cart_bin();
    #[rustfmt::skip]
    let r = cart_load(
        &[
            "consistency", "--temp-cluster", "--bin", bin.to_str().unwrap(),
            "--stock", "30", "--buyers", "300",
            "--kill", "order-leader@0.2", "--restart-after", "3",
        ],
        &dir.path().join("c.json"),
    );
    let kill = r.events.iter().find(|e| e.kind == "kill").expect("a kill");
    assert!(kill.detail.contains("order-node"), "{kill:?}");
    // Mid-run: before the last checkout was answered.
    assert!(kill.t_s < r.outcome.load_s, "{kill:?} after the load");
    let v = r.outcome.verdict.expect("a verdict");
    assert_eq!(v.numbers(), [0, 0, 0, 0], "{v:?}");
    assert!(v.pass, "{v:?}");
}
