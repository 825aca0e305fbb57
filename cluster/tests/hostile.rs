//! The public API against hostile clients (docs/api.md, "Request ids",
//! "Paths", "Limits", "Privacy"), through the gateway of a real cluster:
//! reused request ids, ids the cluster cannot keep, path tricks, requests
//! the HTTP layer refuses, stalled connections, and a checkout whose order
//! leader stalls past its own bound. Requests whose bytes matter (paths that
//! a URL library would normalise, bad header bytes, broken heads) go over a
//! raw TCP socket.

mod common;

use std::time::{Duration, Instant};

use cart_cluster::harness::Role;
use cart_common::Service;
use common::{cluster, eventually, lossy, raw_request, Answer, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn post_request(path: &str, extra_headers: &[u8]) -> Vec<u8> {
    let mut r = format!("POST {path} HTTP/1.1\r\nHost: cart\r\nConnection: close\r\n").into_bytes();
    r.extend_from_slice(extra_headers);
    r.extend_from_slice(b"\r\n");
    r
}

fn assert_refused(answer: &Answer, status: u16, error: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {:?}", answer.body);
    assert_eq!(answer.body["error"], error, "{what}: {:?}", answer.body);
    assert!(
        answer.body["message"].is_string(),
        "{what}: {:?}",
        answer.body
    );
}

/// The numbers written in `text` (digit runs).
fn numbers_in(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// POSTs `first` under a fresh id, then `second` under the same id, which
/// must be refused as a conflict; the id and the first answer.
async fn reuse_id(api: &Client, first: &str, second: &str) -> (String, Answer) {
    let id = format!("reuse-{}", uuid::Uuid::new_v4());
    let answer = api.post_with_id(first, &id).await;
    assert!(answer.ok(), "{first}: {:?}", answer.body);
    let reused = api.post_with_id(second, &id).await;
    let what = format!("{second} under the id of {first}");
    assert_refused(&reused, 409, "request_id_conflict", &what);
    (id, answer)
}

/// A refusal's message names none of `numbers` (balances, amounts).
fn assert_names_no_number(refused: &Answer, numbers: &[&str]) {
    let message = refused.body["message"].as_str().unwrap_or_default();
    let found = numbers_in(message);
    assert!(
        !found.iter().any(|n| numbers.contains(&n.as_str())),
        "a refusal names a balance or an amount: {message:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_reused_for_another_operation_is_409_and_changes_nothing() {
    let cluster = cluster(&Service::ALL, |_| {});
    let api = Client::gateway(&cluster);
    let new_user = || async { api.post("/payment/create_user").await.str("user_id") };
    let (a, b) = (new_user().await, new_user().await);
    assert!(api.post(&format!("/payment/add_funds/{b}/1000")).await.ok());

    // add_funds(A) then pay(B): B keeps its credit, A was funded once.
    let funds = format!("/payment/add_funds/{a}/5");
    let (id, _) = reuse_id(&api, &funds, &format!("/payment/pay/{b}/5")).await;
    assert_eq!(api.credit(&b).await, 1000);
    // A real retry is answered from memory and applies once; other
    // arguments on the same route are another operation.
    assert!(api.post_with_id(&funds, &id).await.ok());
    let other_amount = api
        .post_with_id(&format!("/payment/add_funds/{a}/6"), &id)
        .await;
    assert_refused(&other_amount, 409, "request_id_conflict", "add_funds of 6");
    assert_eq!(api.credit(&a).await, 5);

    // item/create/5 then item/create/7: no second item; the retry of the
    // first gets the first item back.
    let (id, first) = reuse_id(&api, "/stock/item/create/5", "/stock/item/create/7").await;
    let item = first.str("item_id");
    let retried = api.post_with_id("/stock/item/create/5", &id).await;
    assert_eq!(retried.str("item_id"), item);
    assert_eq!(
        api.get(&format!("/stock/find/{item}")).await.int("price"),
        5
    );
    assert!(api.post(&format!("/stock/add/{item}/100")).await.ok());

    // orders/create(A) then orders/create(B).
    let create_a = format!("/orders/create/{a}");
    let (id, first) = reuse_id(&api, &create_a, &format!("/orders/create/{b}")).await;
    let retried = api.post_with_id(&create_a, &id).await;
    assert_eq!(retried.str("order_id"), first.str("order_id"));

    // checkout(O1) then checkout(O2): O2 stays unpaid, B is charged once.
    let new_order = || async {
        let o = api
            .post(&format!("/orders/create/{b}"))
            .await
            .str("order_id");
        assert!(api
            .post(&format!("/orders/addItem/{o}/{item}/1"))
            .await
            .ok());
        o
    };
    let (o1, o2) = (new_order().await, new_order().await);
    let checkout = |o: &str| format!("/orders/checkout/{o}");
    reuse_id(&api, &checkout(&o1), &checkout(&o2)).await;
    assert_eq!(
        api.get(&format!("/orders/find/{o2}")).await.body["paid"],
        false
    );
    assert_eq!(api.credit(&b).await, 1000 - 5);
    assert_eq!(api.stock(&item).await, 99);

    // addItem then checkout with the same id: a 409, not a 500.
    let o3 = new_order().await;
    reuse_id(
        &api,
        &format!("/orders/addItem/{o3}/{item}/1"),
        &checkout(&o3),
    )
    .await;
    let o3_found = api.get(&format!("/orders/find/{o3}")).await;
    assert_eq!(o3_found.body["paid"], false);
    assert_eq!(o3_found.int("total_cost"), 10, "the addItem applied once");

    // One client's refusal is never handed to another: C's names only its
    // reason, and D reusing C's id gets a conflict, not C's text.
    let c = new_user().await;
    assert!(api.post(&format!("/payment/add_funds/{c}/4321")).await.ok());
    let id = format!("reuse-{}", uuid::Uuid::new_v4());
    let refused = api
        .post_with_id(&format!("/payment/pay/{c}/98765"), &id)
        .await;
    assert_refused(&refused, 400, "insufficient_credit", "overdraft");
    assert_names_no_number(&refused, &["4321", "98765"]);
    let d = new_user().await;
    let reused = api.post_with_id(&format!("/payment/pay/{d}/1"), &id).await;
    assert_refused(&reused, 409, "request_id_conflict", "D reusing C's id");
    assert!(
        !reused.body.to_string().contains(&c),
        "C's id leaked to D: {:?}",
        reused.body
    );

    // A stock refusal names no stock level either, nor does a checkout's.
    let poor = api.post("/stock/item/create/1").await.str("item_id");
    assert!(api.post(&format!("/stock/add/{poor}/4321")).await.ok());
    let refused = api.post(&format!("/stock/subtract/{poor}/98765")).await;
    assert_refused(&refused, 400, "insufficient_stock", "stock overdraft");
    assert_names_no_number(&refused, &["4321", "98765"]);
    let o4 = api
        .post(&format!("/orders/create/{a}"))
        .await
        .str("order_id");
    assert!(api
        .post(&format!("/orders/addItem/{o4}/{item}/2"))
        .await
        .ok());
    let refused = api.post(&checkout(&o4)).await;
    assert_refused(
        &refused,
        400,
        "insufficient_credit",
        "checkout beyond credit",
    );
    assert_names_no_number(&refused, &["5", "10"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_the_cluster_cannot_keep_paths_not_taken_literally_and_broken_heads_are_json_4xx() {
    let cluster = cluster(&[Service::Payment, Service::Stock, Service::Order], |_| {});
    let gateway = cluster.spec.gateway_addr();
    let api = Client::gateway(&cluster);
    let u = api.post("/payment/create_user").await.str("user_id");
    assert!(api.post(&format!("/payment/add_funds/{u}/100")).await.ok());
    let add = format!("/payment/add_funds/{u}/5");

    // Request ids kept as sent, or refused: never replaced.
    let long = format!("X-Request-Id: {}\r\n", "x".repeat(201));
    for (header, error) in [
        (long.as_bytes(), "invalid_request_id"),
        (b"X-Request-Id: has space\r\n", "invalid_request_id"),
        (b"X-Request-Id: caf\xc3\xa9\r\n", "invalid_request_id"),
        (
            b"X-Request-Id: one\r\nX-Request-Id: two\r\n",
            "invalid_request_id",
        ),
        // A control byte is not even a valid header value.
        (b"X-Request-Id: a\x01b\r\n", "bad_request"),
    ] {
        let (status, body) = raw_request(&gateway, &post_request(&add, header)).await;
        assert_eq!(status, 400, "{:?}: {body}", lossy(header));
        assert_eq!(body["error"], error, "{body}");
    }
    assert_eq!(api.credit(&u).await, 100, "no refused id applied anything");
    // The longest allowed id is kept: its retry applies once.
    let longest = "y".repeat(200);
    assert!(api.post_with_id(&add, &longest).await.ok());
    assert!(api.post_with_id(&add, &longest).await.ok());
    assert_eq!(api.credit(&u).await, 105);

    // Paths taken literally: every dot-segment and empty-segment variant is
    // refused before anything is forwarded.
    for path in [
        format!("/payment/add_funds/{u}/5/../../../pay/{u}/5"),
        format!("/payment/add_funds/{u}/5/%2e%2e/%2e%2e/%2e%2e/pay/{u}/5"),
        format!("/payment/add_funds/{u}/5/%2E%2e/%2e%2E/.%2e/pay/{u}/5"),
        format!("/payment/./pay/{u}/5"),
        format!("/payment/%2e/pay/{u}/5"),
        format!("/payment/pay/{u}/5/"),
        format!("/payment//pay/{u}/5"),
        format!("/payment/pay/{u}//5"),
        format!("/payment/add_funds/{u}/5/..\\..\\..\\pay/{u}/5"),
    ] {
        let (status, body) = raw_request(&gateway, &post_request(&path, b"")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "invalid_path", "{path}: {body}");
    }
    assert_eq!(api.credit(&u).await, 105, "no odd path ran any route");

    // The HTTP layer's own refusals carry the JSON body too.
    let long_target = format!(
        "GET /stock/find/{} HTTP/1.1\r\nHost: cart\r\n\r\n",
        "a".repeat(9000)
    );
    let (status, body) = raw_request(&gateway, long_target.as_bytes()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (414, Some("uri_too_long")),
        "{body}"
    );

    let big_head = format!(
        "GET /stock/find/1 HTTP/1.1\r\nHost: cart\r\nX-Filler: {}\r\n\r\n",
        "f".repeat(20_000)
    );
    let (status, body) = raw_request(&gateway, big_head.as_bytes()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (431, Some("headers_too_large")),
        "{body}"
    );

    let mut many = String::from("GET /stock/find/1 HTTP/1.1\r\nHost: cart\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (status, body) = raw_request(&gateway, many.as_bytes()).await;
    assert_eq!(status, 431, "{body}");

    for broken in [
        &b"THIS IS NOT HTTP\r\n\r\n"[..],
        b"GET /stock/find/1 HTTP/9.9\r\n\r\n",
        b"GET /stock/find/1 HTTP/1.1\r\nNo-Colon-Here\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\n\r\n",
    ] {
        let (status, body) = raw_request(&gateway, broken).await;
        assert_eq!(status, 400, "{:?}: {body}", lossy(broken));
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{body}"
        );
    }

    let mut too_big = post_request(&add, b"Content-Length: 100000\r\n");
    too_big.extend(std::iter::repeat_n(b'z', 100_000));
    let (status, body) = raw_request(&gateway, &too_big).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("body_too_large")),
        "{body}"
    );
    assert_eq!(
        api.credit(&u).await,
        105,
        "nothing refused changed anything"
    );

    // An order holds at most 100 item lines.
    let item = api.post("/stock/item/create/1").await.str("item_id");
    let order = api
        .post(&format!("/orders/create/{u}"))
        .await
        .str("order_id");
    for _ in 0..100 {
        assert!(api
            .post(&format!("/orders/addItem/{order}/{item}/1"))
            .await
            .ok());
    }
    let over = api.post(&format!("/orders/addItem/{order}/{item}/1")).await;
    assert_refused(&over, 400, "too_many_items", "the 101st line");
    let found = api.get(&format!("/orders/find/{order}")).await;
    assert_eq!(found.body["items"].as_array().map(Vec::len), Some(100));
}

/// Connections that send a head and never the body they announce, and heads
/// that never end.
const STALLED_BODIES: usize = 3000;
const HALF_HEADS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_do_not_lock_other_clients_out_and_are_closed_in_time() {
    const TIMEOUT_MS: u64 = 3000;
    let cluster = cluster(&[Service::Payment], |spec| {
        spec.limits.header_read_timeout_ms = TIMEOUT_MS;
        spec.limits.body_read_timeout_ms = TIMEOUT_MS;
        // Fewer in-flight slots than stalled connections: if a stalled body
        // held a slot, everyone else would get 429.
        spec.limits.max_in_flight = 1024;
    });
    let gateway = cluster.spec.gateway_addr();
    let api = Client::gateway(&cluster);
    let u = api.post("/payment/create_user").await.str("user_id");
    assert!(api.post(&format!("/payment/add_funds/{u}/1")).await.ok());

    // Open the attackers' connections, a few hundred at a time.
    let opened = Instant::now();
    let stalled_head = post_request(
        &format!("/payment/add_funds/{u}/1000"),
        b"Content-Length: 10\r\n",
    );
    let half_head = b"GET /payment/find_user/x HTTP/1.1\r\nHost: ca".to_vec();
    let mut attackers = Vec::new();
    for i in 0..STALLED_BODIES + HALF_HEADS {
        let bytes = if i < STALLED_BODIES {
            stalled_head.clone()
        } else {
            half_head.clone()
        };
        let addr = gateway.clone();
        attackers.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.ok()?;
            stream.write_all(&bytes).await.ok()?;
            let sent = Instant::now();
            // Wait for the server to give up on us: an answer and/or EOF.
            let mut got = Vec::new();
            let mut chunk = [0u8; 1024];
            let closed = tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await
            .is_ok();
            Some((closed, sent.elapsed(), got))
        }));
        if i % 200 == 199 {
            tokio::task::yield_now().await;
        }
    }
    let opened_in = opened.elapsed();

    // Meanwhile another client is served, quickly.
    let mut latencies = Vec::new();
    let served_until = Instant::now() + Duration::from_millis(TIMEOUT_MS);
    while Instant::now() < served_until {
        let started = Instant::now();
        let a = api.get(&format!("/payment/find_user/{u}")).await;
        latencies.push(started.elapsed());
        assert_eq!(
            a.status, 200,
            "a well-behaved client was refused: {:?}",
            a.body
        );
    }
    let write = api.post(&format!("/payment/add_funds/{u}/1")).await;
    assert!(write.ok(), "a write during the attack: {:?}", write.body);
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    assert!(
        latencies.len() >= 10,
        "only {} requests served",
        latencies.len()
    );
    assert!(
        p99 < Duration::from_secs(1),
        "p99 {p99:?} over {} requests",
        latencies.len()
    );

    // Every stalled connection is closed within its timeout (plus the time
    // it took to open them all and some slack for a busy machine); a
    // stalled body gets a JSON 408 first.
    let bound = Duration::from_millis(TIMEOUT_MS) + opened_in + Duration::from_secs(5);
    for (i, attacker) in attackers.into_iter().enumerate() {
        let (closed, after, got) = attacker
            .await
            .expect("attacker task")
            .expect("attacker connected and sent its bytes");
        assert!(
            closed && after <= bound,
            "connection {i} open after {after:?} (bound {bound:?})"
        );
        if i < STALLED_BODIES {
            let text = String::from_utf8_lossy(&got);
            assert!(
                text.starts_with("HTTP/1.1 408"),
                "stalled body {i}: {text:?}"
            );
            assert!(
                text.contains("\"request_timeout\""),
                "stalled body {i}: {text:?}"
            );
        }
    }
    assert_eq!(
        api.credit(&u).await,
        2,
        "no stalled request applied anything"
    );
}

/// Checks out every order while `stalled` is frozen for 3 s, then checks
/// each answer against the order's final state; the answers.
async fn checkouts_while_frozen(
    cluster: &mut cart_cluster::harness::LocalCluster,
    api: &Client,
    orders: &[String],
    stalled: Role,
) -> Vec<Answer> {
    let checkouts: Vec<_> = orders
        .iter()
        .map(|o| {
            let api = api.clone();
            let path = format!("/orders/checkout/{o}");
            tokio::spawn(async move { api.post(&path).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    cluster.freeze(stalled).expect("freeze");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    cluster.thaw(stalled).expect("thaw");
    let mut answers = Vec::new();
    for c in checkouts {
        answers.push(c.await.expect("checkout task"));
    }
    for (order, answer) in orders.iter().zip(&answers) {
        assert!(
            answer.ok() || (400..500).contains(&answer.status),
            "checkout of {order} with {stalled:?} stalled: {} {:?}",
            answer.status,
            answer.body
        );
        // A definite answer is the truth: paid means paid, a refusal unpaid.
        let paid = eventually("order readable", Duration::from_secs(30), || async {
            let a = api.get(&format!("/orders/find/{order}")).await;
            (a.status == 200).then(|| a.body["paid"].as_bool())?
        })
        .await;
        assert_eq!(paid, answer.ok(), "{order}: answered {:?}", answer.body);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_past_the_order_leaders_bound_is_answered_definitely_never_5xx() {
    const ORDERS: usize = 12;
    let mut cluster = cluster(&Service::ALL, |spec| {
        // The leader gives up waiting for its saga after 1 s and hands the
        // transaction over; the coordinator waits 20 s longer.
        spec.limits.checkout_timeout_ms = 1000;
        spec.limits.checkout_follow_ms = 20_000;
        spec.limits.gateway_timeout_ms = 60_000;
    });
    let api = Client::gateway(&cluster);
    assert!(api.post("/stock/batch_init/1/1000/1").await.ok());
    assert!(api
        .post(&format!("/payment/batch_init/{}/10", 2 * ORDERS))
        .await
        .ok());
    let mut orders = Vec::new();
    for user in 0..2 * ORDERS {
        let o = api
            .post(&format!("/orders/create/{user}"))
            .await
            .str("order_id");
        assert!(api.post(&format!("/orders/addItem/{o}/0/1")).await.ok());
        orders.push(o);
    }

    // The order leader itself stalls past its bound, then goes on.
    let leader = cluster.leader(Service::Order).expect("order leader");
    let first = checkouts_while_frozen(
        &mut cluster,
        &api,
        &orders[..ORDERS],
        Role::Node(Service::Order, leader),
    )
    .await;
    // A healthy order leader whose sagas are slow (the payment leader
    // stalls until its group elects another): it hands the transactions
    // over after 1 s and the coordinators follow them to their end.
    let payment = cluster.leader(Service::Payment).expect("payment leader");
    let second = checkouts_while_frozen(
        &mut cluster,
        &api,
        &orders[ORDERS..],
        Role::Node(Service::Payment, payment),
    )
    .await;
    assert!(
        second.iter().all(Answer::ok),
        "with every order group node up, all are paid: {second:?}"
    );
    let mut followed = 0.0;
    for c in cluster.spec.coordinators(Service::Order) {
        followed += common::metric(&c.admin, "cart_checkouts_followed_total", &[])
            .await
            .unwrap_or(0.0);
    }
    assert!(followed > 0.0, "no checkout was handed over and followed");

    // Each user was charged exactly what its paid order cost.
    for (user, answer) in first.iter().chain(&second).enumerate() {
        let expected = if answer.ok() { 9 } else { 10 };
        assert_eq!(api.credit(&user.to_string()).await, expected, "user {user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_bound_wait_to_be_served_until_others_close() {
    const BOUND: usize = 20;
    const TIMEOUT_MS: u64 = 2000;
    let cluster = cluster(&[Service::Payment], |spec| {
        spec.limits.max_connections = BOUND;
        spec.limits.header_read_timeout_ms = TIMEOUT_MS;
    });
    let gateway = cluster.spec.gateway_addr();
    // The gateway's health checks and the harness are done with it; fill
    // every connection slot with connections that send nothing.
    let mut idle = Vec::new();
    for _ in 0..BOUND {
        idle.push(TcpStream::connect(&gateway).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, body) = raw_request(&gateway, &post_request("/payment/create_user", b"")).await;
    let waited = started.elapsed();
    assert_eq!(status, 200, "{body}");
    // Served only once the idle ones were closed for sending no head.
    assert!(
        waited >= Duration::from_millis(TIMEOUT_MS / 2),
        "served after {waited:?}: the connection bound did not hold"
    );
    drop(idle);
}
