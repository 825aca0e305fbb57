//! Membership changes through the admin API on real processes: a fourth node
//! joins a running service, survives a restart of the whole group (the
//! group's membership wins over the spec), and leaves; and the admin surface
//! refuses callers without the token and is not reachable via the gateway.

mod common;

use std::time::Duration;

use cart_cluster::harness::{http_get, node_ids, Role};
use cart_common::admin::NodeHealth;
use cart_common::http::INTERNAL_SECRET;
use cart_common::paths::{nodes_path, ADD_MEMBER_PATH, CLUSTER_PATH};
use cart_common::Service;

use cart_services::domain::{Query, Reply};
use common::{
    admin_call, cluster, coordinator_admin, eventually, local_read, metric, node_view, raw_request,
    service_view, Client,
};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_gets_the_data_survives_a_restart_and_leaves() {
    let mut cluster = cluster(&[Service::Stock], |_| {});
    let client = Client::gateway(&cluster);
    let token = cluster.spec.cluster.admin_token.clone();
    let coord = coordinator_admin(&cluster, Service::Stock, 0);
    let members = [("service", "stock")];
    let item = client.post("/stock/item/create/7").await.str("item_id");
    assert_eq!(
        client.post(&format!("/stock/add/{item}/42")).await.status,
        200
    );

    let new_node = Role::Node(Service::Stock, 4);
    cluster.start_process(new_node).unwrap();
    let (status, body) = admin_call(
        Method::POST,
        &coord,
        &nodes_path("stock"),
        Some(&token),
        Some(json!({ "id": 4 })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["voters"], json!([1, 2, 3, 4]), "{body}");

    eventually("node 4 up as a voter", Duration::from_secs(20), || async {
        let view = service_view(&cluster, Service::Stock).await?;
        let n = node_view(&view, 4)?;
        (n.status == NodeHealth::Up && n.voter).then_some(())
    })
    .await;
    assert_eq!(
        metric(&coord, "cart_group_members", &members).await,
        Some(4.0)
    );
    assert_eq!(
        metric(
            &coord,
            "cart_node_up",
            &[("service", "stock"), ("node", "4")]
        )
        .await,
        Some(1.0)
    );
    let on_node_4 = || async {
        let q = Query::FindItem {
            item_id: item.clone(),
        };
        matches!(
            local_read(&cluster, Service::Stock, 4, q).await,
            Some(Ok(Reply::Item(i))) if i.stock == 42
        )
        .then_some(())
    };
    eventually("the data on node 4", Duration::from_secs(10), on_node_4).await;

    // The whole group restarts: node 4 is still a member, though the spec
    // names three nodes.
    for id in 1..=4 {
        cluster.kill(Role::Node(Service::Stock, id)).unwrap();
    }
    for id in 1..=4 {
        cluster
            .start_process(Role::Node(Service::Stock, id))
            .unwrap();
    }
    // Ask the restarted processes themselves (a coordinator's view may still
    // show the old ones): a leader, and four members from the log.
    eventually(
        "four members after the restart",
        Duration::from_secs(30),
        || async {
            (1..=4)
                .all(|id| {
                    cluster
                        .node_status(Service::Stock, id)
                        .is_some_and(|s| s.leader.is_some() && s.members.len() == 4)
                })
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        client.post(&format!("/stock/add/{item}/1")).await.status,
        200
    );
    eventually(
        "node 4 up in the view again",
        Duration::from_secs(30),
        || async {
            let view = service_view(&cluster, Service::Stock).await?;
            (view.nodes.len() == 4 && view.nodes.iter().all(|n| n.status == NodeHealth::Up))
                .then_some(())
        },
    )
    .await;

    let (status, body) = admin_call(
        Method::DELETE,
        &coord,
        &format!("{}/4", nodes_path("stock")),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["voters"], json!([1, 2, 3]), "{body}");
    eventually(
        "node 4 gone from the view",
        Duration::from_secs(10),
        || async {
            let view = service_view(&cluster, Service::Stock).await?;
            (view.nodes.len() == 3 && node_view(&view, 4).is_none()).then_some(())
        },
    )
    .await;
    assert_eq!(
        metric(&coord, "cart_group_members", &members).await,
        Some(3.0)
    );
    // The group still takes writes with its three voters.
    assert_eq!(
        client.post(&format!("/stock/add/{item}/1")).await.status,
        200
    );
    assert_eq!(client.stock(&item).await, 44);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_admin_calls_need_the_token_and_admin_is_not_public() {
    let cluster = cluster(&[Service::Stock], |_| {});
    let coord = coordinator_admin(&cluster, Service::Stock, 1);
    let add = Some(json!({ "id": 3 }));
    let remove_path = format!("{}/3", nodes_path("stock"));

    for token in [None, Some("wrong-token")] {
        let (status, body) = admin_call(Method::DELETE, &coord, &remove_path, token, None).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "unauthorized");
        let (status, _) = admin_call(
            Method::POST,
            &coord,
            &nodes_path("stock"),
            token,
            add.clone(),
        )
        .await;
        assert_eq!(status, 401);
    }
    // Nothing changed: still three voters, all up.
    let view = service_view(&cluster, Service::Stock).await.expect("view");
    assert_eq!(view.nodes.len(), 3);
    assert!(view.nodes.iter().all(|n| n.voter), "{view:?}");

    // Bad input with the token: a clear 4xx, nothing changed.
    let token = cluster.spec.cluster.admin_token.clone();
    for (path, body) in [
        (nodes_path("stock"), Some(json!({ "id": 0 }))),
        (nodes_path("stock"), Some(json!({ "nope": 1 }))),
        (nodes_path("bogus"), Some(json!({ "id": 4 }))),
        // Only on the host the spec gives that node.
        (
            nodes_path("stock"),
            Some(json!({ "id": 4, "addr": "198.51.100.7:80" })),
        ),
        (
            nodes_path("stock"),
            Some(json!({ "id": 4, "addr": "127.0.0.1" })),
        ),
    ] {
        let (status, answer) = admin_call(Method::POST, &coord, &path, Some(&token), body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }

    // A node's membership endpoint refuses callers without the cluster secret.
    let node = cluster.spec.node_addr(Service::Stock, 1).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("http://{node}{ADD_MEMBER_PATH}"))
        .json(&json!({ "id": 9, "addr": "127.0.0.1:1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = reqwest::Client::new()
        .post(format!("http://{node}{ADD_MEMBER_PATH}"))
        .header(INTERNAL_SECRET, "not-the-secret")
        .json(&json!({ "id": 9, "addr": "127.0.0.1:1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The gateway's public routes never lead to the admin API.
    let gateway = cluster.spec.gateway_addr();
    for path in [
        CLUSTER_PATH.to_string(),
        format!("/stock{CLUSTER_PATH}"),
        "/stock/metrics".to_string(),
    ] {
        let (status, body) = http_get(&gateway, &path, Duration::from_secs(5)).unwrap();
        assert_eq!(status, 404, "{path} answered {status}: {body}");
    }
    // Dot segments are refused before routing (docs/api.md, "Paths").
    for path in [
        format!("/stock/..{CLUSTER_PATH}"),
        format!("/stock/%2e%2e{CLUSTER_PATH}"),
    ] {
        // Sent byte for byte: an HTTP client would resolve the dots itself.
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {gateway}\r\nConnection: close\r\n\r\n");
        let (status, body) = raw_request(&gateway, request.as_bytes()).await;
        assert_eq!(status, 400, "{path} answered {status}: {body}");
        assert_eq!(body["error"], "invalid_path", "{path}: {body}");
    }
    let view = service_view(&cluster, Service::Stock).await.expect("view");
    assert_eq!(view.nodes.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_adds_a_node_and_removes_it() {
    let cluster = cluster(&[Service::Stock], |_| {});
    let run = |args: &[&str]| {
        std::process::Command::new(common::bin())
            .args(args)
            .arg("--spec")
            .arg(&cluster.spec_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // No --id: the launcher picks the next free one.
    let mut add = run(&["add-node", "--service", "stock"]);
    eventually("node 4 up as a voter", Duration::from_secs(30), || async {
        let view = service_view(&cluster, Service::Stock).await?;
        node_view(&view, 4).filter(|n| n.status == NodeHealth::Up && n.voter)?;
        Some(())
    })
    .await;
    assert!(node_ids(&cluster.spec, Service::Stock).contains(&4));

    let removed = run(&["remove-node", "--service", "stock", "--id", "4"])
        .wait()
        .unwrap();
    assert!(removed.success());
    eventually("node 4 gone", Duration::from_secs(10), || async {
        let view = service_view(&cluster, Service::Stock).await?;
        node_view(&view, 4).is_none().then_some(())
    })
    .await;
    // `cart up` would not start it again.
    assert_eq!(node_ids(&cluster.spec, Service::Stock), vec![1, 2, 3]);

    // Ctrl-C stops the added node with its launcher.
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(add.id() as i32, libc::SIGINT) };
    assert!(add.wait().unwrap().success());
    let node_4 = cluster.spec.node_addr(Service::Stock, 4).unwrap();
    assert!(http_get(&node_4, "/status", Duration::from_millis(500)).is_err());
}
