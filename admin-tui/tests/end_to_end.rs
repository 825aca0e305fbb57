//! End to end: the real `cart-admin` binary in a real terminal (tmux)
//! against a real local cluster: a stock-only one for the actions, and a
//! whole one under checkout load for the traffic and transactions views. The screen is read with
//! `tmux capture-pane`, keys are typed with `tmux send-keys`.
//!
//! tmux is a test tool the repository installs with
//! `scripts/install-test-tools`. Without it this test says why and
//! passes, except under `CI=true`, where it fails.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cart_cluster::harness::{cart_binary, require_tool, LocalCluster, Role};
use cart_common::admin_client::AdminClient;
use cart_common::paths::FAULT_PATH;
use cart_common::Service;
use reqwest::Method;
use serde_json::json;

/// Every wait of this test gives up after this long.
const WAIT: Duration = Duration::from_secs(30);
const CONSOLE: &str = env!("CARGO_BIN_EXE_cart-admin");

/// A tmux server of our own (its own socket), killed when dropped.
struct Terminal {
    socket: String,
}

impl Terminal {
    /// Runs `args` in a fresh 120×40 terminal. A shell wraps the console so
    /// that its exit status stays on screen after it quits.
    fn start(name: &str, args: &[String]) -> Self {
        let socket = format!("cart-admin-e2e-{}-{name}", std::process::id());
        let mut command = vec![
            "new-session".to_string(),
            "-d".into(),
            "-s".into(),
            "console".into(),
            "-x".into(),
            "120".into(),
            "-y".into(),
            "40".into(),
            "sh".into(),
            "-c".into(),
            r#""$0" "$@"; echo "console exited with status $?"; sleep 600"#.into(),
            CONSOLE.into(),
        ];
        command.extend(args.iter().cloned());
        let terminal = Self { socket };
        terminal.tmux(&command);
        terminal
    }

    fn tmux(&self, args: &[String]) -> String {
        let out = Command::new("tmux")
            .arg("-u")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env("LANG", "C.UTF-8")
            .env_remove("TMUX")
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Types keys, given as tmux key names (`Tab`, `Enter`, `q`).
    fn keys(&self, keys: &[&str]) {
        for key in keys {
            let args = ["send-keys", "-t", "console", key].map(String::from);
            self.tmux(&args);
            // Each key its own read for the console.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "console"].map(String::from))
    }

    /// Polls the screen until `pred` holds; fails with the last screen.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> Duration {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < WAIT,
                "timed out after {WAIT:?} waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_for_text(&self, text: &str) -> Duration {
        self.wait_for(&format!("{text:?}"), |s| s.contains(text))
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// Whether a line of the cluster view shows `node` with `status`.
fn node_line(screen: &str, node: u64, status: &str) -> bool {
    screen.lines().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words
            .windows(3)
            .any(|w| w == ["node", &node.to_string(), status])
    })
}

/// Whether the events view lists an event of `kind` (third column).
fn event_of_kind(screen: &str, kind: &str) -> bool {
    screen.lines().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.get(1) == Some(&"stock") && words.get(2) == Some(&kind)
    })
}

/// A POST (with the admin token, if given): its status.
fn post(addr: &str, path: &str, token: Option<&str>, body: serde_json::Value) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = AdminClient::new(token.map(str::to_string));
    let answer = runtime.block_on(client.raw(addr, Method::POST, path, Some(&body), WAIT));
    answer.expect("POST answered").status.as_u16()
}

#[test]
fn the_console_shows_a_dead_follower_a_mismatch_and_its_repair_and_survives_its_coordinator() {
    if require_tool("tmux").is_none() {
        return;
    }
    let mut cluster = LocalCluster::start_temp_with(
        &cart_binary().expect("the cart binary is built"),
        &[Service::Stock],
        |spec| {
            spec.raft.heartbeat_ms = 150;
            spec.raft.election_timeout_ms = 1000;
            // Only the checks this test asks for.
            spec.consistency.check_interval_secs = 0;
            spec.consistency.digest_timeout_ms = 10_000;
        },
        &["--fault-injection"],
    )
    .expect("cluster starts");
    cluster
        .wait_ready(Duration::from_secs(60))
        .expect("cluster ready");
    let token = cluster.spec.cluster.admin_token.clone();
    let coords: Vec<String> = cluster
        .spec
        .coordinators(Service::Stock)
        .into_iter()
        .map(|c| c.admin)
        .collect();
    cluster
        .wait_settled(WAIT)
        .expect("every coordinator sees every node up");
    let gateway = cluster.gateway_url();
    assert_eq!(
        post(&gateway, "/stock/batch_init/100/7/1", None, json!({})),
        200
    );

    let spec = cluster.spec_path.display().to_string();
    let args = [
        "--addr",
        &coords[0],
        "--spec",
        &spec,
        "--token",
        &token,
        "--interval-ms",
        "500",
    ]
    .map(String::from);
    let console = Terminal::start("main", &args);

    // Every node up.
    console.wait_for_text("nodes up 3/3");
    let screen = console.screen();
    for id in 1..=3 {
        assert!(node_line(&screen, id, "up"), "node {id} not up:\n{screen}");
    }
    assert!(screen.contains(&format!("via {}", coords[0])), "{screen}");

    // A follower killed shows down within a few seconds.
    let leader = cluster.leader(Service::Stock).expect("a leader");
    let followers: Vec<u64> = (1..=3).filter(|n| *n != leader).collect();
    let dead = followers[0];
    cluster
        .kill(Role::Node(Service::Stock, dead))
        .expect("kill");
    let took = console.wait_for("the dead follower shown down", |s| {
        node_line(s, dead, "DOWN") && s.contains("nodes up 2/3")
    });
    assert!(took < Duration::from_secs(10), "shown down after {took:?}");
    cluster
        .start_process(Role::Node(Service::Stock, dead))
        .expect("restart");
    console.wait_for("the follower back up", |s| {
        node_line(s, dead, "up") && s.contains("nodes up 3/3")
    });

    // One replica corrupted through the fault hook.
    let bad = followers[1];
    let addr = cluster
        .spec
        .node_addr(Service::Stock, bad)
        .expect("node address");
    let row = json!({ "table": "items", "key": "42", "value": r#"{"stock":1000000,"price":1}"# });
    assert_eq!(post(&addr, FAULT_PATH, Some(&token), row), 200);

    // A check from the keyboard: Consistency view, the stock row, `c`, then
    // Tab to move off Cancel and Enter.
    console.keys(&["2", "G", "c"]);
    console.wait_for_text("Run a consistency check of stock now?");
    console.keys(&["Tab", "Enter"]);
    console.wait_for_text(&format!(
        "check of stock: MISMATCH on node {bad} (1 bucket)"
    ));
    // The view follows at its next refresh.
    console.wait_for("the mismatch in the view", |s| {
        node_line(s, bad, "mismatch") && s.contains(" MISMATCH ")
    });
    eprintln!("after the check:\n{}", console.screen());

    // The bad node repaired from the keyboard: select it (the last row is
    // node 3), `r`, Tab, Enter.
    let ups: Vec<&str> = (bad..3).map(|_| "Up").collect();
    console.keys(&ups);
    console.keys(&["r"]);
    console.wait_for_text(&format!("Repair node {bad} of stock?"));
    console.keys(&["Tab", "Enter"]);
    console.wait_for_text(&format!(
        "repair: node {bad} repaired (1 key in 1 bucket); recheck clean"
    ));
    let screen = console.screen();
    assert!(screen.contains("recheck CLEAN"), "{screen}");
    // Shown with --no-capture (and kept by nextest when the test fails).
    eprintln!("after the repair:\n{screen}");

    // Both show in the events view.
    console.keys(&["3"]);
    console.wait_for("mismatch and repair events", |s| {
        event_of_kind(s, "mismatch") && event_of_kind(s, "repair")
    });
    eprintln!("events:\n{}", console.screen());

    // A wrong token is refused with a readable error, and the console lives.
    let wrong = [
        "--addr",
        &coords[0],
        "--token",
        "not-the-token",
        "--interval-ms",
        "500",
    ]
    .map(String::from);
    let intruder = Terminal::start("intruder", &wrong);
    intruder.wait_for_text("nodes up 3/3");
    intruder.keys(&["G", "c"]);
    intruder.wait_for_text("Run a consistency check of stock now?");
    intruder.keys(&["Tab", "Enter"]);
    intruder.wait_for_text("check of stock failed: unauthorized (401)");
    intruder.keys(&["1"]);
    intruder.wait_for_text("nodes up 3/3");
    drop(intruder);

    // The coordinator it talks to dies: it says so and moves to the other.
    console.keys(&["1"]);
    cluster
        .kill(Role::Coordinator(Service::Stock, 0))
        .expect("kill coordinator");
    console.wait_for_text(&format!("unreachable; switched to {}", coords[1]));
    console.wait_for_text(&format!("via {}", coords[1]));
    console.wait_for_text("nodes up 3/3");
    eprintln!("after losing its coordinator:\n{}", console.screen());

    // q quits cleanly and leaves the alternate screen.
    console.keys(&["q"]);
    console.wait_for_text("console exited with status 0");
    assert!(
        !console.screen().contains("1 Cluster"),
        "{}",
        console.screen()
    );
}

/// Checkouts through the gateway from `threads` loops until dropped: each
/// creates an order for one of 10 users, adds one of 10 items and checks it
/// out. Failures (a leader killed under it) are ignored: the load goes on.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Load {
    fn start(gateway: &str, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|t| {
                let (stop, gateway) = (stop.clone(), gateway.to_string());
                std::thread::spawn(move || checkout_loop(&gateway, t as u64, &stop))
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops the loops; how many checkouts were paid.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.drain(..).filter_map(|t| t.join().ok()).sum()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn checkout_loop(gateway: &str, seed: u64, stop: &AtomicBool) -> u64 {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 0;
    };
    let client = AdminClient::new(None);
    let timeout = Duration::from_secs(10);
    let call = |path: String| {
        let client = client.clone();
        async move {
            client
                .raw(gateway, Method::POST, &path, None, timeout)
                .await
                .ok()
                .filter(|a| a.status.is_success())
                .map(|a| a.body)
        }
    };
    let mut paid = 0;
    let mut i = seed;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        runtime.block_on(async {
            let Some(order) = call(format!("/orders/create/{}", i % 10)).await else {
                return;
            };
            let Some(id) = order["order_id"].as_str() else {
                return;
            };
            if call(format!("/orders/addItem/{id}/{}/1", i % 10))
                .await
                .is_none()
            {
                return;
            }
            if call(format!("/orders/checkout/{id}")).await.is_some() {
                paid += 1;
            }
        });
    }
    paid
}

/// The writes per second the Traffic view shows for `service`'s group
/// (the `writes` row under its title), if any.
fn group_writes(screen: &str, service: &str) -> Option<f64> {
    let lines: Vec<&str> = screen.lines().collect();
    let title = lines
        .iter()
        .position(|l| l.starts_with(&format!("{service:<8}last")))?;
    lines[title + 1..]
        .iter()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let after = l.split("  writes ").nth(1)?;
            after
                .split_whitespace()
                .next()?
                .strip_suffix("/s")?
                .parse()
                .ok()
        })
}

#[test]
fn under_load_the_console_shows_every_groups_traffic_and_a_saga_recovery() {
    if require_tool("tmux").is_none() {
        return;
    }
    let mut cluster = LocalCluster::start_temp_with(
        &cart_binary().expect("the cart binary is built"),
        &Service::ALL,
        |spec| {
            spec.raft.heartbeat_ms = 150;
            spec.raft.election_timeout_ms = 1000;
            spec.consistency.check_interval_secs = 0;
        },
        &[],
    )
    .expect("cluster starts");
    cluster
        .wait_ready(Duration::from_secs(60))
        .expect("cluster ready");
    cluster
        .wait_settled(WAIT)
        .expect("every coordinator sees every node up");
    let gateway = cluster.gateway_url();
    for init in [
        "/stock/batch_init/10/1000000/1",
        "/payment/batch_init/10/1000000",
    ] {
        assert_eq!(post(&gateway, init, None, json!({})), 200, "{init}");
    }
    let load = Load::start(&gateway, 4);

    let order_admin = cluster
        .spec
        .coordinator(Service::Order, 0)
        .expect("an order coordinator")
        .admin;
    let args = ["--addr", &order_admin, "--interval-ms", "500"].map(String::from);
    let console = Terminal::start("load", &args);
    console.wait_for_text("nodes up 9/9");

    // Traffic: payment and stock take writes although, with direct
    // cross-service calls, their coordinators see none of the saga's steps.
    console.keys(&["4"]);
    console.wait_for("payment and stock writes from the nodes", |s| {
        ["order", "payment", "stock"]
            .iter()
            .all(|service| group_writes(s, service).is_some_and(|w| w > 0.0))
    });
    eprintln!("traffic under load:\n{}", console.screen());

    // Transactions: checkouts are paid; the order leader killed mid-run
    // shows as a leader change and a saga recovery.
    console.keys(&["5"]);
    console.wait_for("paid checkouts", |s| {
        s.lines()
            .any(|l| l.starts_with("checkouts ") && !l.starts_with("checkouts 0/s"))
    });
    // A new leader reports a recovery only if checkouts were open when the
    // old one died: with the payment leader frozen, every loop's checkout
    // is begun and waits on its charge, so some are open at the kill.
    let payment = Role::Node(
        Service::Payment,
        cluster.leader(Service::Payment).expect("a payment leader"),
    );
    cluster.freeze(payment).expect("freeze the payment leader");
    std::thread::sleep(Duration::from_millis(500));
    let leader = cluster.leader(Service::Order).expect("an order leader");
    cluster
        .kill(Role::Node(Service::Order, leader))
        .expect("kill the order leader");
    cluster.thaw(payment).expect("thaw the payment leader");
    console.wait_for("a saga recovery after the leader change", |s| {
        s.contains("saga_recovery") && s.contains("took over")
    });
    eprintln!("transactions after the kill:\n{}", console.screen());
    assert!(load.stop() > 0, "no checkout was paid");
}
