//! Measures the two ways a coordinator can call another service (addItem's
//! price lookup, checkout's payment and stock steps): `direct` to the other
//! service's Raft leader, or through that service's coordinators.
//!
//! Starts a fresh local cluster per mode (release binaries), then runs
//! `CLIENTS` concurrent clients doing addItem + checkout on fresh orders for
//! `SECONDS`, and prints throughput and latency per mode.
//!
//!     cargo build --release -p cart-cluster --bins --examples
//!     target/release/examples/cross_service

use std::time::{Duration, Instant};

use cart_cluster::harness::LocalCluster;
use cart_common::spec::CrossService;
use cart_common::Service;

const CLIENTS: usize = 16;
const SECONDS: u64 = 15;

fn main() -> anyhow::Result<()> {
    let bin = cart_cluster::harness::cart_binary()?;
    println!("{CLIENTS} clients, {SECONDS} s per mode, addItem + checkout per iteration");
    for mode in [CrossService::Direct, CrossService::Coordinator] {
        let mut cluster = LocalCluster::start_temp(&bin, &Service::ALL, |spec| {
            spec.cluster.cross_service = mode
        })?;
        cluster.wait_ready(Duration::from_secs(60))?;
        let runtime = tokio::runtime::Runtime::new()?;
        let (add, checkout) = runtime.block_on(run(cluster.gateway_url()))?;
        println!("{mode:?}:");
        report("  addItem ", add);
        report("  checkout", checkout);
        cluster.shutdown();
    }
    Ok(())
}

async fn run(base: String) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let http = reqwest::Client::new();
    http.post(format!("{base}/stock/batch_init/1000/1000000000/1"))
        .send()
        .await?
        .error_for_status()?;
    http.post(format!("{base}/payment/batch_init/1000/1000000000"))
        .send()
        .await?
        .error_for_status()?;
    let until = Instant::now() + Duration::from_secs(SECONDS);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let http = http.clone();
            let base = base.clone();
            tokio::spawn(async move {
                let (mut add, mut checkout) = (Vec::new(), Vec::new());
                let mut i = 0;
                while Instant::now() < until {
                    let user = (c * 37 + i) % 1000;
                    let resp = http
                        .post(format!("{base}/orders/create/{user}"))
                        .send()
                        .await?;
                    let order: serde_json::Value = resp.error_for_status()?.json().await?;
                    let order = order["order_id"].as_str().unwrap_or_default().to_string();
                    let started = Instant::now();
                    http.post(format!("{base}/orders/addItem/{order}/{}/1", i % 1000))
                        .send()
                        .await?
                        .error_for_status()?;
                    add.push(started.elapsed());
                    let started = Instant::now();
                    http.post(format!("{base}/orders/checkout/{order}"))
                        .send()
                        .await?
                        .error_for_status()?;
                    checkout.push(started.elapsed());
                    i += 1;
                }
                anyhow::Ok((add, checkout))
            })
        })
        .collect();
    let (mut add, mut checkout) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, c) = t.await??;
        add.extend(a);
        checkout.extend(c);
    }
    Ok((add, checkout))
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let n = samples.len().max(1);
    let pct = |p: f64| {
        samples
            .get(((n as f64 * p) as usize).min(n - 1))
            .copied()
            .unwrap_or_default()
    };
    let mean = samples.iter().sum::<Duration>() / n as u32;
    println!(
        "{what}  {:>6.0}/s  mean {:>6.1} ms  p50 {:>6.1} ms  p99 {:>6.1} ms",
        samples.len() as f64 / SECONDS as f64,
        mean.as_secs_f64() * 1e3,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}
