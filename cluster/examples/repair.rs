//! Repair versus rebuild: a stock group holding 100,000 items, 100 rows
//! corrupted on one follower (through the fault-injection hook), repaired
//! key by key; then the same follower rebuilt from scratch (removed, wiped,
//! re-added, sent a snapshot). Prints the time of each, from the admin call
//! to the report in the cluster view, and the repair's own duration.
//!
//!     cargo build --release -p cart-cluster --bins --examples
//!     target/release/examples/repair

use std::time::{Duration, Instant};

use anyhow::Context;
use cart_cluster::harness::{http_get, LocalCluster};
use cart_common::admin::{CheckReport, CheckStarted};
use cart_common::paths::service_path;
use cart_common::Service;

const ITEMS: u64 = 100_000;
const CORRUPT: u64 = 100;

fn main() -> anyhow::Result<()> {
    let bin = cart_cluster::harness::cart_binary()?;
    let mut cluster = LocalCluster::start_temp_with(
        &bin,
        &[Service::Stock],
        |spec| spec.consistency.check_interval_secs = 0,
        &["--fault-injection"],
    )?;
    cluster.wait_ready(Duration::from_secs(60))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(run(&cluster));
    cluster.shutdown();
    result
}

async fn run(cluster: &LocalCluster) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let gateway = cluster.gateway_url();
    http.post(format!("{gateway}/stock/batch_init/{ITEMS}/10/1"))
        .send()
        .await?
        .error_for_status()?;
    let leader = wait_leader(cluster).await?;
    let bad = (1..=3).find(|n| *n != leader).context("a follower")?;
    let node = cluster
        .spec
        .node_addr(Service::Stock, bad)
        .context("node")?;
    let token = &cluster.spec.cluster.admin_token;
    for i in 0..CORRUPT {
        http.post(format!("http://{node}/fault/corrupt"))
            .bearer_auth(token)
            .json(&serde_json::json!({
                "table": "items",
                "key": (i * 997).to_string(),
                "value": "{\"stock\":0,\"price\":0}",
            }))
            .send()
            .await?
            .error_for_status()?;
    }
    println!("{ITEMS} items; {CORRUPT} rows corrupted on follower {bad}");

    let t = Instant::now();
    let report = operation(cluster, "repair", Some(serde_json::json!({ "node": bad }))).await?;
    let repair_wall = t.elapsed();
    let repair = report.repair.context("no repair in the report")?;
    let node_repair = repair.nodes.first().context("no node repaired")?;
    println!(
        "repair : {:>7.2} s from the call to the report (repair itself {} ms, {} keys, {} buckets, re-check {})",
        repair_wall.as_secs_f64(),
        repair.duration_ms,
        node_repair.keys_repaired,
        node_repair.buckets,
        repair.recheck_verdict.as_deref().unwrap_or("-"),
    );

    let t = Instant::now();
    let path = format!("nodes/{bad}/rebuild");
    let report = operation(cluster, &path, None).await?;
    let rebuild_wall = t.elapsed();
    let rebuild = report.repair.context("no rebuild in the report")?;
    println!(
        "rebuild: {:>7.2} s from the call to the report (rebuild itself {} ms, re-check {})",
        rebuild_wall.as_secs_f64(),
        rebuild.duration_ms,
        rebuild.recheck_verdict.as_deref().unwrap_or("-"),
    );
    Ok(())
}

async fn wait_leader(cluster: &LocalCluster) -> anyhow::Result<u64> {
    for _ in 0..100 {
        if let Some(l) = cluster.leader(Service::Stock) {
            return Ok(l);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no leader")
}

/// Starts `what` (repair, nodes/N/rebuild) and waits for its report.
async fn operation(
    cluster: &LocalCluster,
    what: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<CheckReport> {
    let coord = cluster
        .spec
        .coordinator(Service::Stock, 0)
        .context("coordinator")?
        .admin;
    let mut req = reqwest::Client::new()
        .post(format!("http://{coord}{}/{what}", service_path("stock")))
        .bearer_auth(&cluster.spec.cluster.admin_token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let started: CheckStarted = req.send().await?.error_for_status()?.json().await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let path = cart_common::paths::check_report_path("stock", &started.check_id);
        let (status, body) = http_get(&coord, &path, Duration::from_secs(2))?;
        if status == 200 {
            return Ok(serde_json::from_str(&body)?);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("no report for {what}")
}
