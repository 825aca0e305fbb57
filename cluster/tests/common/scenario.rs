//! The benchmark's consistency scenario, shared by the checkout and the
//! partition tests: the population, every checkout at once with clients
//! that retry their own request id, and the audit of money and stock.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cart_common::rng::SplitMix64;
use futures::future::join_all;

use super::{Answer, Client};

pub const USERS: usize = 1000;
pub const ORDERS: usize = 1000;
pub const STOCK: i64 = 100;

/// The benchmark's consistency scenario: item "0" with stock 100 and price
/// 1, users "0".."999" with credit 1, 1000 single-item orders each for a
/// user drawn at random. Returns the order ids.
pub async fn scenario(client: &Client) -> Vec<String> {
    assert!(client
        .post(&format!("/stock/batch_init/1/{STOCK}/1"))
        .await
        .ok());
    assert!(client
        .post(&format!("/payment/batch_init/{USERS}/1"))
        .await
        .ok());
    // A fixed draw, so a failure is reproducible.
    let mut rng = SplitMix64::new(0x5eed);
    let users: Vec<usize> = (0..ORDERS)
        .map(|_| rng.below(USERS as u64) as usize)
        .collect();
    let mut orders = Vec::with_capacity(ORDERS);
    for chunk in users.chunks(100) {
        let created = join_all(chunk.iter().map(|u| async move {
            let order = client.post(&format!("/orders/create/{u}")).await;
            assert_eq!(order.status, 200, "{order:?}");
            let id = order.str("order_id");
            let added = client.post(&format!("/orders/addItem/{id}/0/1")).await;
            assert_eq!(added.status, 200, "{added:?}");
            id
        }))
        .await;
        orders.extend(created);
    }
    orders
}

/// Checks out every order at once, each client retrying its own request id
/// after a 5xx or a lost connection (as a client would), until it has a
/// definite answer. Returns the orders answered 2xx and the count of 4xx.
/// `during` runs once `trigger` answers have arrived.
pub async fn check_out_all(
    client: &Client,
    orders: &[String],
    trigger: usize,
    during: impl FnOnce(),
) -> (BTreeSet<String>, usize) {
    let answered = Arc::new(AtomicUsize::new(0));
    // The latest unanswered try of each checkout, for the failure message.
    let last_try: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(vec![String::new(); orders.len()]));
    let all = orders.iter().enumerate().map(|(i, order)| {
        let (client, answered, last_try) = (client.clone(), answered.clone(), last_try.clone());
        let order = order.clone();
        tokio::spawn(async move {
            let path = format!("/orders/checkout/{order}");
            let id = format!("checkout-{i}");
            loop {
                let sent = tokio::time::Instant::now();
                let tried = client.try_post(&path, Some(&id)).await;
                let took = sent.elapsed();
                match tried {
                    Ok(a) if a.status < 500 => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        return (order, a.status);
                    }
                    other => {
                        let what = match other {
                            Ok(a) => format!("{} {}", a.status, a.body),
                            Err(e) => format!("{e:?}"),
                        };
                        if let Ok(mut tries) = last_try.lock() {
                            tries[i] = format!("{path} after {took:?}: {what}");
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                }
            }
        })
    });
    let tasks: Vec<_> = all.collect();
    // The fault strikes mid-run, with checkouts in flight.
    while answered.load(Ordering::Relaxed) < trigger {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    during();
    let mut paid = BTreeSet::new();
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    for (i, t) in tasks.into_iter().enumerate() {
        let Ok(joined) = tokio::time::timeout_at(deadline, t).await else {
            let unanswered = orders.len() - answered.load(Ordering::Relaxed);
            let latest = last_try.lock().map(|t| t[i].clone()).unwrap_or_default();
            let latest = if latest.is_empty() {
                "none returned yet".to_string()
            } else {
                latest
            };
            panic!(
                "every checkout answered within 3 minutes: {unanswered} were not; \
                 checkout-{i}'s latest try: {latest:?}"
            );
        };
        let (order, status) = joined.unwrap();
        match status {
            200..=299 => {
                paid.insert(order);
            }
            400..=499 => refused += 1,
            other => panic!("checkout of {order} answered {other}"),
        }
    }
    (paid, refused)
}

/// A read retried after a 5xx or a lost connection, as a client would,
/// until it is answered (within a minute): the audits check money and
/// stock, not how fast a read returns right after a fault.
pub async fn answered(client: &Client, path: &str) -> Answer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let last = match client.try_get(path).await {
            Ok(a) if a.status < 500 => return a,
            Ok(a) => format!("{a:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} not answered within a minute: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn total_credit(client: &Client) -> i64 {
    let mut total = 0;
    let ids: Vec<usize> = (0..USERS).collect();
    for chunk in ids.chunks(100) {
        let credits = join_all(chunk.iter().map(|u| async move {
            let a = answered(client, &format!("/payment/find_user/{u}")).await;
            assert_eq!(a.status, 200, "find_user {u}: {:?}", a.body);
            a.int("credit")
        }))
        .await;
        total += credits.into_iter().sum::<i64>();
    }
    total
}

pub async fn paid_orders(client: &Client, orders: &[String]) -> BTreeSet<String> {
    let mut paid = BTreeSet::new();
    for chunk in orders.chunks(100) {
        let found = join_all(chunk.iter().map(|o| async move {
            let a = answered(client, &format!("/orders/find/{o}")).await;
            assert_eq!(a.status, 200, "{a:?}");
            (o.clone(), a.body["paid"].as_bool().unwrap_or(false))
        }))
        .await;
        paid.extend(found.into_iter().filter(|(_, p)| *p).map(|(o, _)| o));
    }
    paid
}

/// Stock, credit and paid orders agree exactly; every 2xx order is paid;
/// with stock 100 and more than 100 distinct buyers, exactly 100 are.
pub async fn audit(client: &Client, orders: &[String], answered_2xx: &BTreeSet<String>) {
    let paid = paid_orders(client, orders).await;
    let a = answered(client, "/stock/find/0").await;
    assert_eq!(a.status, 200, "find item 0: {:?}", a.body);
    let stock = a.int("stock");
    let credit = total_credit(client).await;
    assert_eq!(paid.len(), STOCK as usize, "orders paid");
    assert_eq!(
        stock,
        STOCK - paid.len() as i64,
        "stock against paid orders"
    );
    assert_eq!(
        credit,
        USERS as i64 - paid.len() as i64,
        "credit against paid orders"
    );
    assert_eq!(
        &paid, answered_2xx,
        "2xx answers are exactly the paid orders"
    );
}
