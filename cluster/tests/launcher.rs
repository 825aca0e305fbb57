//! The launcher (`cart up`) and what every process exposes: readiness,
//! metrics, and dying with the launcher.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cart_cluster::harness::{http_get, temp_spec};
use cart_common::{ClusterSpec, Service};

fn listening(addr: &str) -> bool {
    let Ok(sock) = addr.parse() else { return false };
    TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_ok()
}

#[test]
fn killed_launcher_takes_every_process_with_it() {
    let (_tmp, spec_path) = temp_spec(|_| {}).unwrap();
    let spec = ClusterSpec::load(&spec_path).unwrap();
    let mut launcher = Command::new(common::bin())
        .args(["up", "--spec"])
        .arg(&spec_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = launcher.stdout.take().unwrap();
    let mut printed = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let ready = line.contains("Ctrl-C stops everything");
        printed.push(line);
        if ready {
            break;
        }
    }
    let printed = printed.join("\n");
    assert!(
        printed.contains(&spec.gateway_url()),
        "launcher output: {printed}"
    );
    assert!(printed.contains("(leader)"), "no leader printed: {printed}");

    let mut addrs = vec![spec.gateway_addr(), spec.gateway_admin_addr()];
    for s in Service::ALL {
        addrs.extend(spec.nodes(s).into_iter().map(|n| n.addr));
        for c in spec.coordinators(s) {
            addrs.push(c.public);
            addrs.push(c.admin);
        }
    }
    assert!(
        addrs.iter().all(|a| listening(a)),
        "not every process is up"
    );
    let (status, _) = http_get(
        &spec.gateway_addr(),
        "/stock/find/0",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status, 400, "gateway answers through the cluster");

    launcher.kill().unwrap();
    launcher.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alive: Vec<_> = addrs.iter().filter(|a| listening(a)).collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans still listening: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_exports_request_metrics_by_service_role_route_and_status() {
    let cluster = common::cluster(&[Service::Stock], |_| {});
    let client = common::Client::gateway(&cluster);
    assert_eq!(client.get("/stock/find/nope").await.status, 400);

    let scrape = |addr: String| async move {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let gateway = scrape(cluster.spec.gateway_admin_addr()).await;
    assert!(
        gateway.contains(r#"cart_http_requests_total{role="gateway",route="/stock/{*rest}",service="all",status="400"}"#),
        "{gateway}"
    );
    assert!(gateway.contains("cart_http_request_duration_seconds_bucket{role=\"gateway\""));

    let coordinators = futures::future::join_all(
        cluster
            .spec
            .coordinators(Service::Stock)
            .into_iter()
            .map(|c| scrape(c.admin)),
    )
    .await
    .concat();
    assert!(
        coordinators.contains(
            r#"cart_http_requests_total{role="coordinator",route="/stock/find/{item_id}",service="stock",status="400"}"#
        ),
        "{coordinators}"
    );

    let leader = cluster.leader(Service::Stock).unwrap();
    let node = scrape(cluster.spec.node_addr(Service::Stock, leader).unwrap()).await;
    assert!(
        node.contains(r#"cart_http_requests_total{role="node",route="/internal/read",service="stock",status="200"}"#),
        "{node}"
    );
    assert!(
        node.contains("cart_raft_is_leader{shard=\"0\"} 1"),
        "{node}"
    );
}

/// A port taken by another program is said where the operator looks: `cart
/// up` repeats the failed process's error with a hint, stops what it had
/// started, and exits non-zero without a backtrace (even with
/// RUST_BACKTRACE set, as in many shells).
#[test]
fn cart_up_says_which_process_failed_to_start_and_why() {
    let (_tmp, spec_path) = temp_spec(|_| {}).unwrap();
    let spec = ClusterSpec::load(&spec_path).unwrap();
    let taken = std::net::TcpListener::bind(spec.gateway_addr()).unwrap();
    let mut launcher = Command::new(common::bin())
        .args(["up", "--no-prometheus", "--spec"])
        .arg(&spec_path)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = launcher.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            launcher.kill().unwrap();
            panic!("cart up did not give up on a taken port");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut launcher.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "cart up succeeded: {stderr}");
    assert!(
        stderr.contains(&format!(
            "gateway exited while starting: binding {}: Address already in use",
            spec.gateway_addr()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: another program holds that port"),
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");
    drop(taken);
    // What it had started is stopped.
    let node = spec.nodes(Service::Stock)[0].addr.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while listening(&node) {
        assert!(Instant::now() < deadline, "{node} still listening");
        std::thread::sleep(Duration::from_millis(100));
    }
}
