//! Measures how fast the node-down protocol notices a dead or frozen node
//! and how fast it reports it back, with the default spec's health settings.
//!
//! Starts a fresh stock service (3 nodes, 2 coordinators; release binaries).
//! Each round kills (SIGKILL) or freezes (SIGSTOP) a follower, and times,
//! from the signal, until coordinator 0's cluster view says `down`; then
//! restarts or thaws it and times until the view says `up` again. Also
//! prints the `detect_ms` the coordinator recorded in its node_down event
//! (time since it last heard from the node).
//!
//!     cargo build --release -p cart-cluster --bins --examples
//!     target/release/examples/detection

use std::time::{Duration, Instant};

use anyhow::Context;
use cart_cluster::harness::{http_get, LocalCluster, Role};
use cart_common::admin::{Event, NodeHealth, ServiceView};
use cart_common::paths::{service_path, EVENTS_PATH};
use cart_common::Service;

const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    let bin = cart_cluster::harness::cart_binary()?;
    let mut cluster = LocalCluster::start_temp(&bin, &[Service::Stock], |_| {})?;
    cluster.wait_ready(Duration::from_secs(60))?;
    let h = &cluster.spec.health;
    println!(
        "health: probe every {} ms, timeout {} ms, down after {} failures",
        h.interval_ms, h.timeout_ms, h.failures_before_down
    );
    wait_status(&cluster, 2, NodeHealth::Up)?;

    for fault in ["SIGKILL", "SIGSTOP"] {
        let mut detect = Vec::new();
        let mut recorded = Vec::new();
        let mut back = Vec::new();
        for round in 0..ROUNDS {
            let node = 2 + (round as u64 % 2);
            let role = Role::Node(Service::Stock, node);
            let t0 = Instant::now();
            if fault == "SIGKILL" {
                cluster.kill(role)?;
            } else {
                cluster.freeze(role)?;
            }
            wait_status(&cluster, node, NodeHealth::Down)?;
            detect.push(t0.elapsed());
            recorded.push(last_detect_ms(&cluster, node)?);

            let t1 = Instant::now();
            if fault == "SIGKILL" {
                cluster.start_process(role)?;
            } else {
                cluster.thaw(role)?;
            }
            wait_status(&cluster, node, NodeHealth::Up)?;
            back.push(t1.elapsed());
        }
        println!("{fault} of a follower, {ROUNDS} rounds:");
        summary("  signal → view says down   ", &detect);
        println!("  node_down detect_ms recorded: {recorded:?}");
        summary("  restart/thaw → view says up", &back);
    }
    cluster.shutdown();
    Ok(())
}

fn view(cluster: &LocalCluster) -> Option<ServiceView> {
    let admin = cluster.spec.coordinator(Service::Stock, 0)?.admin;
    let (code, body) = http_get(&admin, &service_path("stock"), Duration::from_secs(1)).ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

fn wait_status(cluster: &LocalCluster, node: u64, want: NodeHealth) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = view(cluster)
            .and_then(|v| v.nodes.into_iter().find(|n| n.id == node))
            .map(|n| n.status);
        if status == Some(want) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "node {node} never {want:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn last_detect_ms(cluster: &LocalCluster, node: u64) -> anyhow::Result<u64> {
    let admin = cluster
        .spec
        .coordinator(Service::Stock, 0)
        .context("no coordinator")?
        .admin;
    let path = format!("{EVENTS_PATH}?service=stock");
    let (_, body) = http_get(&admin, &path, Duration::from_secs(1))?;
    let events: Vec<Event> = serde_json::from_str(&body)?;
    events
        .iter()
        .find(|e| e.kind == "node_down" && e.node == Some(node))
        .and_then(|e| e.detail["detect_ms"].as_u64())
        .context("no node_down event")
}

fn summary(label: &str, samples: &[Duration]) {
    let mut ms: Vec<u128> = samples.iter().map(|d| d.as_millis()).collect();
    ms.sort();
    println!(
        "{label}: min {} ms, median {} ms, max {} ms",
        ms.first().copied().unwrap_or(0),
        ms[ms.len() / 2],
        ms.last().copied().unwrap_or(0)
    );
}
