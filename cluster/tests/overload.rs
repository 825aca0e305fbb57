//! Overload is answered with 429 and Retry-After, never a 5xx or a wait
//! without bound.

mod common;

use cart_common::Service;
use common::{cluster, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_limit_get_429_with_retry_after() {
    let cluster = cluster(&[Service::Stock], |spec| spec.limits.max_in_flight = 2);
    let client = Client::gateway(&cluster);
    let item = client.post("/stock/item/create/1").await.str("item_id");

    let answers = futures::future::join_all((0..60).map(|_| {
        let client = client.clone();
        let item = item.clone();
        async move { client.post(&format!("/stock/add/{item}/1")).await }
    }))
    .await;
    let ok = answers.iter().filter(|a| a.status == 200).count() as i64;
    let shed: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(
        ok + shed.len() as i64,
        60,
        "only 200 and 429 expected: {answers:?}"
    );
    assert!(
        !shed.is_empty(),
        "60 concurrent requests with a limit of 2 shed nothing"
    );
    for a in &shed {
        assert!(
            a.headers.contains_key("retry-after"),
            "429 without Retry-After: {a:?}"
        );
        assert_eq!(a.body["error"], "overloaded");
    }
    // Shed requests changed nothing.
    assert_eq!(client.stock(&item).await, ok);
}
