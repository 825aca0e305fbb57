//! Shared by the load test's integration tests: run the real `cart-load`
//! binary against real local clusters (small sizes, a few seconds).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cart_cluster::harness::LocalCluster;
use cart_common::Service;
use cart_loadtest::report::RunReport;

/// The `cart` binary next to the test executable (`cargo build -p
/// cart-cluster`, or `cargo nextest run --workspace`, builds it).
pub fn cart_bin() -> PathBuf {
    cart_cluster::harness::cart_binary().expect("the cart binary is built")
}

/// Runs `cart-load` with `args`, writing its report to `out`; panics with
/// the tool's output if it fails.
pub fn cart_load(args: &[&str], out: &Path) -> RunReport {
    let output = Command::new(env!("CARGO_BIN_EXE_cart-load"))
        .args(args)
        .arg("--out")
        .arg(out)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("cart-load starts");
    let text = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "cart-load {args:?} failed:\n{text}"
    );
    RunReport::read(out).unwrap_or_else(|e| panic!("report unreadable: {e:#}\n{text}"))
}

/// A whole default cluster started by the test itself, for runs that
/// target a gateway by URL as they would any implementation of the API.
pub fn cluster() -> LocalCluster {
    cluster_of_shards(1)
}

/// As `cluster`, with `shards` shards per service.
pub fn cluster_of_shards(shards: u16) -> LocalCluster {
    let mut cluster = LocalCluster::start_temp(&cart_bin(), &Service::ALL, |spec| {
        for service in Service::ALL {
            spec.size_mut(service).shards = shards;
        }
    })
    .expect("cluster starts");
    cluster
        .wait_ready(Duration::from_secs(60))
        .expect("cluster ready");
    cluster
}
