//! nginx as the balancer, for real: the config generated from the spec
//! passes `nginx -t`, and nginx in front of a local cluster's coordinators
//! serves the cart API, keeping every request when a coordinator is killed.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cart_cluster::harness::{http_get, require_tool, Role};
use cart_common::Service;
use common::{cluster, eventually, Client};

/// nginx in the foreground, stopped when dropped: SIGTERM, which the
/// master passes on to its worker, then SIGKILL if it is still there. (A
/// SIGKILL alone would leave the worker running, orphaned, on its port.)
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal to the child we started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_from_the_spec_serves_the_api_and_rides_over_a_killed_coordinator() {
    let Some(nginx) = require_tool("nginx") else {
        return;
    };
    let mut cluster = cluster(&Service::ALL, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let listen = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        cart_cluster::nginx::config(&cluster.spec, &listen, dir.path()),
    )
    .unwrap();
    let prefix = dir.path().to_str().unwrap();
    let conf_arg = conf.to_str().unwrap();
    let check = Command::new(&nginx)
        .args(["-t", "-p", prefix, "-c", conf_arg])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _nginx = Nginx(
        Command::new(&nginx)
            .args(["-p", prefix, "-c", conf_arg, "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("nginx listening", Duration::from_secs(10), || async {
        http_get(&listen, "/stock/find/0", Duration::from_millis(500)).ok()
    })
    .await;
    let api = Client::new(&format!("http://{listen}"));

    // The contract, through nginx.
    let item = api.post("/stock/item/create/3").await.str("item_id");
    assert!(api.post(&format!("/stock/add/{item}/10")).await.ok());
    assert_eq!(api.stock(&item).await, 10);
    let user = api.post("/payment/create_user").await.str("user_id");
    assert!(api
        .post(&format!("/payment/add_funds/{user}/100"))
        .await
        .ok());
    let order = api
        .post(&format!("/orders/create/{user}"))
        .await
        .str("order_id");
    assert!(api
        .post(&format!("/orders/addItem/{order}/{item}/2"))
        .await
        .ok());
    assert!(api.post(&format!("/orders/checkout/{order}")).await.ok());
    let found = api.get(&format!("/orders/find/{order}")).await;
    assert_eq!(found.body["paid"], true, "{found:?}");
    assert_eq!(api.credit(&user).await, 94);
    assert_eq!(api.stock(&item).await, 8);
    // Bad input is the coordinators' 400; no admin route is reachable.
    assert_eq!(api.get("/stock/find/no-such-item").await.status, 400);
    for path in [
        "/admin/cluster",
        "/metrics",
        "/stock/metrics",
        "/internal/write",
    ] {
        assert_eq!(api.get(path).await.status, 404, "{path}");
    }

    // A coordinator killed mid-stream: no request fails.
    let mut added = 0;
    for i in 0..60 {
        if i == 20 {
            cluster.kill(Role::Coordinator(Service::Stock, 0)).unwrap();
        }
        let a = api.post(&format!("/stock/add/{item}/1")).await;
        assert_eq!(a.status, 200, "request {i}: {a:?}");
        added += 1;
    }
    assert_eq!(api.stock(&item).await, 8 + added);
}
