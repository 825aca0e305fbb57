//! Contract tests of the public HTTP API (docs/api.md), through the gateway of a
//! real local cluster: every route's success shape, every failure case and
//! malformed input, and that a rejected request changes nothing. No answer
//! in here may ever be a 5xx.
//!
//! One cluster per test function (starting one costs seconds), so each test
//! walks through many cases against the same cluster. Every test runs three
//! times: on the embedded store (`embedded::…`), on MongoDB (`mongodb::…`),
//! and on the embedded store with 3 shards per service (`sharded::…`: keys,
//! users and orders spread over shards, checkouts across them).

mod common;

use cart_common::spec::StorageBackend;
use cart_common::Service;
use common::{Answer, Client};
use serde_json::Value;

/// Path segments that are not an integer in `0..=i64::MAX`.
const BAD_NUMBERS: [&str; 10] = [
    "abc",
    "1.5",
    "+1",
    "1e3",
    "-1",
    "0x10",
    "%201",
    "9223372036854775808",
    "18446744073709551616",
    "99999999999999999999999999999999",
];

const MAX: i64 = i64::MAX;

/// The gateway, with every answer checked never to be a 5xx.
struct Api(Client);

impl Api {
    fn new(cluster: &cart_cluster::harness::LocalCluster) -> Self {
        Self(Client::gateway(cluster))
    }

    async fn get(&self, path: &str) -> Answer {
        let a = self.0.get(path).await;
        assert_not_5xx(&a, "GET", path);
        a
    }

    async fn post(&self, path: &str) -> Answer {
        let a = self.0.post(path).await;
        assert_not_5xx(&a, "POST", path);
        a
    }

    async fn post_with_id(&self, path: &str, request_id: &str) -> Answer {
        let a = self.0.post_with_id(path, request_id).await;
        assert_not_5xx(&a, "POST", path);
        a
    }

    /// A POST that must succeed.
    async fn post_ok(&self, path: &str) -> Answer {
        let a = self.post(path).await;
        assert!(
            a.ok(),
            "POST {path}: expected 2xx, got {} {:?}",
            a.status,
            a.body
        );
        a
    }

    /// A POST that must be refused with a 4xx JSON error; returns the code.
    async fn post_rejected(&self, path: &str) -> String {
        let a = self.post(path).await;
        assert_rejected(&a, &format!("POST {path}"))
    }

    /// A GET that must be refused with a 4xx JSON error; returns the code.
    async fn get_rejected(&self, path: &str) -> String {
        let a = self.get(path).await;
        assert_rejected(&a, &format!("GET {path}"))
    }

    async fn create_item(&self, price: i64) -> String {
        let a = self.post_ok(&format!("/stock/item/create/{price}")).await;
        non_empty_str(&a.body, "item_id", "item create")
    }

    /// `(stock, price)` of an item, checking the answer's shape.
    async fn item(&self, item_id: &str) -> (i64, i64) {
        let path = format!("/stock/find/{item_id}");
        let a = self.get(&path).await;
        assert_eq!(a.status, 200, "GET {path}: {:?}", a.body);
        (int(&a.body, "stock", &path), int(&a.body, "price", &path))
    }

    async fn stock(&self, item_id: &str) -> i64 {
        self.item(item_id).await.0
    }

    async fn create_user(&self) -> String {
        let a = self.post_ok("/payment/create_user").await;
        non_empty_str(&a.body, "user_id", "create_user")
    }

    /// A user's credit, checking the answer's shape.
    async fn credit(&self, user_id: &str) -> i64 {
        let path = format!("/payment/find_user/{user_id}");
        let a = self.get(&path).await;
        assert_eq!(a.status, 200, "GET {path}: {:?}", a.body);
        assert_eq!(
            a.body["user_id"].as_str(),
            Some(user_id),
            "GET {path}: {:?}",
            a.body
        );
        int(&a.body, "credit", &path)
    }

    async fn create_order(&self, user_id: &str) -> String {
        let a = self.post_ok(&format!("/orders/create/{user_id}")).await;
        non_empty_str(&a.body, "order_id", "orders/create")
    }

    /// An order, checking the answer's shape.
    async fn order(&self, order_id: &str) -> Order {
        let path = format!("/orders/find/{order_id}");
        let a = self.get(&path).await;
        assert_eq!(a.status, 200, "GET {path}: {:?}", a.body);
        assert_eq!(
            a.body["order_id"].as_str(),
            Some(order_id),
            "GET {path}: {:?}",
            a.body
        );
        let items = a.body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: items is not an array: {:?}", a.body))
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(item), qty]) if qty.is_i64() => {
                    (item.clone(), qty.as_i64().unwrap())
                }
                _ => panic!("GET {path}: item {pair:?} is not [item_id, quantity]"),
            })
            .collect();
        Order {
            paid: a.body["paid"]
                .as_bool()
                .unwrap_or_else(|| panic!("GET {path}: paid is not a bool: {:?}", a.body)),
            items,
            user_id: non_empty_str(&a.body, "user_id", &path),
            total_cost: int(&a.body, "total_cost", &path),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Order {
    paid: bool,
    items: Vec<(String, i64)>,
    user_id: String,
    total_cost: i64,
}

fn items(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(id, q)| (id.to_string(), *q)).collect()
}

fn assert_not_5xx(a: &Answer, method: &str, path: &str) {
    assert!(
        a.status < 500,
        "{method} {path}: a 5xx is never a valid answer here, got {} {:?}",
        a.status,
        a.body
    );
}

/// A 4xx with a `{"error": str, "message": str}` body; returns the code.
fn assert_rejected(a: &Answer, what: &str) -> String {
    assert!(
        (400..500).contains(&a.status),
        "{what}: expected 4xx, got {} {:?}",
        a.status,
        a.body
    );
    let error = a.body.get("error").and_then(Value::as_str);
    let message = a.body.get("message").and_then(Value::as_str);
    match (error, message) {
        (Some(error), Some(_)) => error.to_string(),
        _ => panic!(
            "{what}: {} with an error body that is not {{error, message}}: {:?} {:?}",
            a.status, a.body, a.headers
        ),
    }
}

fn int(body: &Value, field: &str, what: &str) -> i64 {
    body[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: {field} is not an integer: {body:?}"))
}

fn non_empty_str(body: &Value, field: &str, what: &str) -> String {
    match body[field].as_str() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => panic!("{what}: {field} is not a non-empty string: {body:?}"),
    }
}

/// Requests whose path names no route, or leaves a segment empty: 404 (or
/// 400) with a JSON error body.
async fn assert_no_route(api: &Api, requests: &[(&str, String)]) {
    for (method, path) in requests {
        let a = match *method {
            "GET" => api.get(path).await,
            _ => api.post(path).await,
        };
        let what = format!("{method} {path}");
        let code = assert_rejected(&a, &what);
        assert!(
            a.status == 404 || a.status == 400,
            "{what}: expected 404 or 400, got {} {code}",
            a.status
        );
    }
}

/// A route called with the wrong method is a JSON 4xx (never a 5xx, never
/// applied; callers re-read the state).
async fn assert_wrong_method_refused(api: &Api, requests: &[(&str, String)]) {
    for (method, path) in requests {
        let a = match *method {
            "GET" => api.get(path).await,
            _ => api.post(path).await,
        };
        assert_rejected(&a, &format!("{method} {path}"));
    }
}

async fn stock_routes_follow_the_contract_and_every_rejection_changes_nothing(setup: Setup) {
    let Some((cluster, _mongo)) =
        common::cluster_on(setup.backend.clone(), &[Service::Stock], setup.tweak(), &[])
    else {
        return;
    };
    let api = Api::new(&cluster);

    // create and find: a new item has stock 0 and the given price.
    let item = api.create_item(5).await;
    assert_eq!(api.item(&item).await, (0, 5));
    let other = api.create_item(5).await;
    assert_ne!(item, other, "create returns fresh ids");
    let free = api.create_item(0).await;
    assert_eq!(api.item(&free).await, (0, 0));
    let dear = api.create_item(MAX).await;
    assert_eq!(api.item(&dear).await, (0, MAX));

    // add and subtract, down to exactly zero.
    api.post_ok(&format!("/stock/add/{item}/10")).await;
    assert_eq!(api.item(&item).await, (10, 5));
    api.post_ok(&format!("/stock/subtract/{item}/3")).await;
    assert_eq!(api.stock(&item).await, 7);
    api.post_ok(&format!("/stock/subtract/{item}/7")).await;
    assert_eq!(api.stock(&item).await, 0);
    api.post_ok(&format!("/stock/add/{item}/0")).await;
    api.post_ok(&format!("/stock/subtract/{item}/0")).await;
    api.post_ok(&format!("/stock/add/{item}/007")).await;
    assert_eq!(api.item(&item).await, (7, 5));

    // subtracting more than the stock is refused.
    for amount in ["8", "9223372036854775807"] {
        let code = api
            .post_rejected(&format!("/stock/subtract/{item}/{amount}"))
            .await;
        assert_eq!(code, "insufficient_stock");
        assert_eq!(api.item(&item).await, (7, 5));
    }
    let code = api
        .post_rejected(&format!("/stock/subtract/{free}/1"))
        .await;
    assert_eq!(code, "insufficient_stock");
    assert_eq!(api.item(&free).await, (0, 0));

    // malformed prices and amounts.
    for bad in BAD_NUMBERS {
        assert_eq!(
            api.post_rejected(&format!("/stock/item/create/{bad}"))
                .await,
            "invalid_number"
        );
        assert_eq!(
            api.post_rejected(&format!("/stock/add/{item}/{bad}")).await,
            "invalid_number"
        );
        assert_eq!(
            api.post_rejected(&format!("/stock/subtract/{item}/{bad}"))
                .await,
            "invalid_number"
        );
        assert_eq!(api.item(&item).await, (7, 5));
    }

    // a stock past i64::MAX is refused; exactly i64::MAX is fine.
    let code = api.post_rejected(&format!("/stock/add/{item}/{MAX}")).await;
    assert_eq!(code, "out_of_range");
    assert_eq!(api.item(&item).await, (7, 5));
    api.post_ok(&format!("/stock/add/{item}/{}", MAX - 7)).await;
    assert_eq!(api.stock(&item).await, MAX);
    assert_eq!(
        api.post_rejected(&format!("/stock/add/{item}/1")).await,
        "out_of_range"
    );
    assert_eq!(api.stock(&item).await, MAX);
    api.post_ok(&format!("/stock/subtract/{item}/{MAX}")).await;
    assert_eq!(api.item(&item).await, (0, 5));
    api.post_ok(&format!("/stock/add/{item}/7")).await;

    // unknown and malformed ids: refused, and nothing is created.
    let long_id = "x".repeat(257);
    for (id, expected) in [
        ("no-such-item", "item_not_found"),
        (long_id.as_str(), "invalid_id"),
    ] {
        assert_eq!(
            api.get_rejected(&format!("/stock/find/{id}")).await,
            expected
        );
        assert_eq!(
            api.post_rejected(&format!("/stock/add/{id}/1")).await,
            expected
        );
        assert_eq!(
            api.post_rejected(&format!("/stock/subtract/{id}/1")).await,
            expected
        );
        assert_eq!(
            api.get_rejected(&format!("/stock/find/{id}")).await,
            expected
        );
    }
    // an unknown id with a bad amount is still a 4xx.
    api.post_rejected("/stock/add/no-such-item/abc").await;
    // an id that does not decode to UTF-8.
    api.get_rejected("/stock/find/%FF").await;
    api.post_rejected("/stock/add/%FF/1").await;
    api.post_rejected("/stock/subtract/%FF/1").await;

    // empty segments and unknown routes.
    assert_no_route(
        &api,
        &[
            ("GET", "/stock/find/".to_string()),
            ("POST", "/stock/add//5".to_string()),
            ("POST", format!("/stock/add/{item}/")),
            ("POST", "/stock/subtract//5".to_string()),
            ("POST", format!("/stock/subtract/{item}/")),
            ("POST", "/stock/item/create/".to_string()),
            ("POST", "/stock/batch_init//1/1".to_string()),
            ("GET", format!("/stock/find/{item}/extra")),
            ("GET", format!("/stock/find/{item}/")),
            ("POST", format!("/stock/add/{item}/1/extra")),
            ("POST", "/stock/nope".to_string()),
            ("GET", "/stock".to_string()),
            ("GET", "/".to_string()),
            ("POST", "/nope/at/all".to_string()),
        ],
    )
    .await;
    assert_wrong_method_refused(
        &api,
        &[
            ("GET", format!("/stock/add/{item}/1")),
            ("GET", format!("/stock/subtract/{item}/1")),
            ("GET", "/stock/item/create/1".to_string()),
            ("GET", "/stock/batch_init/1/1/1".to_string()),
            ("POST", format!("/stock/find/{item}")),
        ],
    )
    .await;
    assert_eq!(api.item(&item).await, (7, 5));
    assert_eq!(api.get_rejected("/stock/find/0").await, "item_not_found");

    // the same request id applies a write once; another id applies again.
    api.post_with_id(&format!("/stock/add/{item}/10"), "stock-add-a")
        .await;
    let again = api
        .post_with_id(&format!("/stock/add/{item}/10"), "stock-add-a")
        .await;
    assert!(
        again.ok(),
        "retry answered {} {:?}",
        again.status,
        again.body
    );
    assert_eq!(api.stock(&item).await, 17);
    api.post_with_id(&format!("/stock/add/{item}/10"), "stock-add-b")
        .await;
    assert_eq!(api.stock(&item).await, 27);
    // a retried create returns the same item instead of making another.
    let first = api
        .post_with_id("/stock/item/create/3", "create-item-a")
        .await;
    let retry = api
        .post_with_id("/stock/item/create/3", "create-item-a")
        .await;
    let created = non_empty_str(&first.body, "item_id", "item create");
    assert_eq!(
        non_empty_str(&retry.body, "item_id", "item create retry"),
        created
    );
    assert_eq!(api.item(&created).await, (0, 3));

    // batch_init creates "0".."n-1" and answers a message.
    let a = api.post_ok("/stock/batch_init/3/7/11").await;
    non_empty_str(&a.body, "msg", "stock batch_init");
    for id in ["0", "1", "2"] {
        assert_eq!(api.item(id).await, (7, 11));
    }
    assert_eq!(api.get_rejected("/stock/find/3").await, "item_not_found");
    for bad in BAD_NUMBERS {
        for path in [
            format!("/stock/batch_init/{bad}/1/1"),
            format!("/stock/batch_init/5/{bad}/1"),
            format!("/stock/batch_init/5/1/{bad}"),
        ] {
            assert_eq!(api.post_rejected(&path).await, "invalid_number", "{path}");
        }
    }
    // far beyond any sane batch size.
    api.post_rejected(&format!("/stock/batch_init/{MAX}/1/1"))
        .await;
    for id in ["0", "1", "2"] {
        assert_eq!(api.item(id).await, (7, 11));
    }
    assert_eq!(api.get_rejected("/stock/find/3").await, "item_not_found");
    assert_eq!(api.item(&item).await, (27, 5));
}

async fn payment_routes_follow_the_contract_apply_a_request_id_once_and_rejections_change_nothing(
    setup: Setup,
) {
    let Some((cluster, _mongo)) = common::cluster_on(
        setup.backend.clone(),
        &[Service::Payment],
        setup.tweak(),
        &[],
    ) else {
        return;
    };
    let api = Api::new(&cluster);

    // create and find: a new user has credit 0.
    let user = api.create_user().await;
    assert_eq!(api.credit(&user).await, 0);
    let other = api.create_user().await;
    assert_ne!(user, other, "create_user returns fresh ids");

    // add_funds and pay, down to exactly zero.
    api.post_ok(&format!("/payment/add_funds/{user}/10")).await;
    assert_eq!(api.credit(&user).await, 10);
    api.post_ok(&format!("/payment/pay/{user}/4")).await;
    assert_eq!(api.credit(&user).await, 6);
    api.post_ok(&format!("/payment/pay/{user}/6")).await;
    assert_eq!(api.credit(&user).await, 0);
    api.post_ok(&format!("/payment/pay/{user}/0")).await;
    api.post_ok(&format!("/payment/add_funds/{user}/0")).await;
    api.post_ok(&format!("/payment/add_funds/{user}/100")).await;
    assert_eq!(api.credit(&user).await, 100);

    // paying more than the credit is refused.
    for amount in ["101", "9223372036854775807"] {
        let code = api
            .post_rejected(&format!("/payment/pay/{user}/{amount}"))
            .await;
        assert_eq!(code, "insufficient_credit");
        assert_eq!(api.credit(&user).await, 100);
    }
    assert_eq!(
        api.post_rejected(&format!("/payment/pay/{other}/1")).await,
        "insufficient_credit"
    );
    assert_eq!(api.credit(&other).await, 0);

    // malformed amounts.
    for bad in BAD_NUMBERS {
        let code = api
            .post_rejected(&format!("/payment/add_funds/{user}/{bad}"))
            .await;
        assert_eq!(code, "invalid_number");
        assert_eq!(
            api.post_rejected(&format!("/payment/pay/{user}/{bad}"))
                .await,
            "invalid_number"
        );
        assert_eq!(api.credit(&user).await, 100);
    }

    // a credit past i64::MAX is refused; exactly i64::MAX is fine.
    let code = api
        .post_rejected(&format!("/payment/add_funds/{user}/{MAX}"))
        .await;
    assert_eq!(code, "out_of_range");
    assert_eq!(api.credit(&user).await, 100);
    api.post_ok(&format!("/payment/add_funds/{user}/{}", MAX - 100))
        .await;
    assert_eq!(api.credit(&user).await, MAX);
    assert_eq!(
        api.post_rejected(&format!("/payment/add_funds/{user}/1"))
            .await,
        "out_of_range"
    );
    assert_eq!(api.credit(&user).await, MAX);
    api.post_ok(&format!("/payment/pay/{user}/{MAX}")).await;
    assert_eq!(api.credit(&user).await, 0);
    api.post_ok(&format!("/payment/add_funds/{user}/100")).await;

    // unknown and malformed ids: refused, and nothing is created.
    let long_id = "x".repeat(257);
    for (id, expected) in [
        ("no-such-user", "user_not_found"),
        (long_id.as_str(), "invalid_id"),
    ] {
        assert_eq!(
            api.get_rejected(&format!("/payment/find_user/{id}")).await,
            expected
        );
        assert_eq!(
            api.post_rejected(&format!("/payment/add_funds/{id}/1"))
                .await,
            expected
        );
        assert_eq!(
            api.post_rejected(&format!("/payment/pay/{id}/0")).await,
            expected
        );
        assert_eq!(
            api.get_rejected(&format!("/payment/find_user/{id}")).await,
            expected
        );
    }
    api.post_rejected("/payment/add_funds/no-such-user/abc")
        .await;
    api.get_rejected("/payment/find_user/%FF").await;
    api.post_rejected("/payment/add_funds/%FF/1").await;
    api.post_rejected("/payment/pay/%FF/0").await;

    // empty segments and unknown routes.
    assert_no_route(
        &api,
        &[
            ("GET", "/payment/find_user/".to_string()),
            ("POST", "/payment/add_funds//5".to_string()),
            ("POST", format!("/payment/add_funds/{user}/")),
            ("POST", "/payment/pay//5".to_string()),
            ("POST", format!("/payment/pay/{user}/")),
            ("POST", "/payment/batch_init//1".to_string()),
            ("POST", "/payment/create_user/extra".to_string()),
            ("GET", format!("/payment/find_user/{user}/extra")),
            ("POST", "/payment/nope".to_string()),
            ("GET", "/payment".to_string()),
        ],
    )
    .await;
    assert_wrong_method_refused(
        &api,
        &[
            ("GET", format!("/payment/add_funds/{user}/1")),
            ("GET", format!("/payment/pay/{user}/1")),
            ("GET", "/payment/create_user".to_string()),
            ("GET", "/payment/batch_init/1/1".to_string()),
            ("POST", format!("/payment/find_user/{user}")),
        ],
    )
    .await;
    assert_eq!(api.credit(&user).await, 100);
    assert_eq!(
        api.get_rejected("/payment/find_user/0").await,
        "user_not_found"
    );

    // the same request id applies add_funds once; another id applies again.
    let path = format!("/payment/add_funds/{user}/10");
    let first = api.post_with_id(&path, "add-funds-a").await;
    assert!(first.ok(), "{path}: {} {:?}", first.status, first.body);
    let retry = api.post_with_id(&path, "add-funds-a").await;
    assert!(
        retry.ok(),
        "retry of {path}: {} {:?}",
        retry.status,
        retry.body
    );
    assert_eq!(api.credit(&user).await, 110);
    let fresh = api.post_with_id(&path, "add-funds-b").await;
    assert!(fresh.ok(), "{path}: {} {:?}", fresh.status, fresh.body);
    assert_eq!(api.credit(&user).await, 120);
    // the gateway keeps the client's request id.
    assert_eq!(
        fresh
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("add-funds-b")
    );
    // a retried pay is charged once too.
    let pay = format!("/payment/pay/{user}/20");
    api.post_with_id(&pay, "pay-a").await;
    api.post_with_id(&pay, "pay-a").await;
    assert_eq!(api.credit(&user).await, 100);
    // a retried create_user returns the same user.
    let first = api
        .post_with_id("/payment/create_user", "create-user-a")
        .await;
    let retry = api
        .post_with_id("/payment/create_user", "create-user-a")
        .await;
    let created = non_empty_str(&first.body, "user_id", "create_user");
    assert_eq!(
        non_empty_str(&retry.body, "user_id", "create_user retry"),
        created
    );
    assert_eq!(api.credit(&created).await, 0);

    // batch_init creates "0".."n-1" and answers a message.
    let a = api.post_ok("/payment/batch_init/3/50").await;
    non_empty_str(&a.body, "msg", "payment batch_init");
    for id in ["0", "1", "2"] {
        assert_eq!(api.credit(id).await, 50);
    }
    assert_eq!(
        api.get_rejected("/payment/find_user/3").await,
        "user_not_found"
    );
    for bad in BAD_NUMBERS {
        for path in [
            format!("/payment/batch_init/{bad}/1"),
            format!("/payment/batch_init/5/{bad}"),
        ] {
            assert_eq!(api.post_rejected(&path).await, "invalid_number", "{path}");
        }
    }
    api.post_rejected(&format!("/payment/batch_init/{MAX}/1"))
        .await;
    for id in ["0", "1", "2"] {
        assert_eq!(api.credit(id).await, 50);
    }
    assert_eq!(
        api.get_rejected("/payment/find_user/3").await,
        "user_not_found"
    );
    assert_eq!(api.credit(&user).await, 100);
}

async fn orders_and_checkout_charge_exactly_once_and_failed_checkouts_change_nothing(setup: Setup) {
    let Some((cluster, _mongo)) =
        common::cluster_on(setup.backend.clone(), &Service::ALL, setup.tweak(), &[])
    else {
        return;
    };
    let api = Api::new(&cluster);

    let user = api.create_user().await;
    api.post_ok(&format!("/payment/add_funds/{user}/1000"))
        .await;
    let apple = api.create_item(10).await;
    let pear = api.create_item(7).await;
    api.post_ok(&format!("/stock/add/{apple}/5")).await;
    api.post_ok(&format!("/stock/add/{pear}/3")).await;

    // create and find: a new order is empty and unpaid.
    let order = api.create_order(&user).await;
    let empty = Order {
        paid: false,
        items: Vec::new(),
        user_id: user.clone(),
        total_cost: 0,
    };
    assert_eq!(api.order(&order).await, empty);
    assert_ne!(
        api.create_order(&user).await,
        order,
        "orders/create returns fresh ids"
    );

    // an order for an unknown or malformed user is refused.
    assert_eq!(
        api.post_rejected("/orders/create/no-such-user").await,
        "user_not_found"
    );
    let long_id = "x".repeat(257);
    assert_eq!(
        api.post_rejected(&format!("/orders/create/{long_id}"))
            .await,
        "invalid_id"
    );

    // addItem appends the pair and adds quantity * price; an item may repeat.
    api.post_ok(&format!("/orders/addItem/{order}/{apple}/2"))
        .await;
    api.post_ok(&format!("/orders/addItem/{order}/{pear}/1"))
        .await;
    api.post_ok(&format!("/orders/addItem/{order}/{apple}/1"))
        .await;
    let expected = Order {
        paid: false,
        items: items(&[(&apple, 2), (&pear, 1), (&apple, 1)]),
        user_id: user.clone(),
        total_cost: 3 * 10 + 7,
    };
    assert_eq!(api.order(&order).await, expected);

    // addItem refusals change nothing.
    let add = |o: &str, i: &str, q: &str| format!("/orders/addItem/{o}/{i}/{q}");
    assert_eq!(
        api.post_rejected(&add(&order, &apple, "0")).await,
        "invalid_number"
    );
    for bad in BAD_NUMBERS {
        assert_eq!(
            api.post_rejected(&add(&order, &apple, bad)).await,
            "invalid_number"
        );
    }
    assert_eq!(
        api.post_rejected(&add("no-such-order", &apple, "1")).await,
        "order_not_found"
    );
    assert_eq!(
        api.post_rejected(&add(&order, "no-such-item", "1")).await,
        "item_not_found"
    );
    assert_eq!(
        api.post_rejected(&add(&long_id, &apple, "1")).await,
        "invalid_id"
    );
    assert_eq!(
        api.post_rejected(&add(&order, &long_id, "1")).await,
        "invalid_id"
    );
    // quantity * price or the new total past i64::MAX.
    let dear = api.create_item(MAX).await;
    assert_eq!(
        api.post_rejected(&add(&order, &dear, "1")).await,
        "out_of_range"
    );
    assert_eq!(
        api.post_rejected(&add(&order, &apple, &MAX.to_string()))
            .await,
        "out_of_range"
    );
    assert_eq!(api.order(&order).await, expected);
    let pricey = api.create_order(&user).await;
    api.post_ok(&add(&pricey, &dear, "1")).await;
    assert_eq!(
        api.post_rejected(&add(&pricey, &apple, "1")).await,
        "out_of_range"
    );
    let blank = api.create_order(&user).await;
    assert_eq!(
        api.post_rejected(&add(&blank, &dear, "2")).await,
        "out_of_range"
    );
    assert_eq!(api.order(&blank).await, empty);
    assert_eq!(
        api.get_rejected("/orders/find/no-such-order").await,
        "order_not_found"
    );
    assert_eq!(
        api.get_rejected(&format!("/orders/find/{long_id}")).await,
        "invalid_id"
    );

    // not enough stock (an item listed twice counts twice): nothing moves.
    let greedy = api.create_order(&user).await;
    api.post_ok(&add(&greedy, &pear, "2")).await;
    api.post_ok(&add(&greedy, &pear, "2")).await;
    api.post_ok(&add(&greedy, &apple, "1")).await;
    let greedy_before = api.order(&greedy).await;
    assert_eq!(greedy_before.total_cost, 4 * 7 + 10);
    let code = api
        .post_rejected(&format!("/orders/checkout/{greedy}"))
        .await;
    assert_eq!(code, "insufficient_stock");
    assert_eq!(api.order(&greedy).await, greedy_before);
    assert_eq!(api.stock(&apple).await, 5);
    assert_eq!(api.stock(&pear).await, 3);
    assert_eq!(api.credit(&user).await, 1000);

    // not enough credit: nothing moves.
    let poor = api.create_user().await;
    api.post_ok(&format!("/payment/add_funds/{poor}/16")).await;
    let cheap = api.create_order(&poor).await;
    api.post_ok(&add(&cheap, &pear, "1")).await;
    api.post_ok(&add(&cheap, &apple, "1")).await;
    let before = api.order(&cheap).await;
    let code = api
        .post_rejected(&format!("/orders/checkout/{cheap}"))
        .await;
    assert_eq!(code, "insufficient_credit");
    assert_eq!(api.order(&cheap).await, before);
    assert_eq!(api.credit(&poor).await, 16);
    assert_eq!(api.stock(&apple).await, 5);
    assert_eq!(api.stock(&pear).await, 3);

    // unknown and malformed orders.
    let code = api.post_rejected("/orders/checkout/no-such-order").await;
    assert_eq!(code, "order_not_found");
    assert_eq!(
        api.post_rejected(&format!("/orders/checkout/{long_id}"))
            .await,
        "invalid_id"
    );

    // checkout pays: credit down by total_cost, stock down by every pair.
    api.post_ok(&format!("/orders/checkout/{order}")).await;
    let paid = Order {
        paid: true,
        ..expected.clone()
    };
    assert_eq!(api.order(&order).await, paid);
    assert_eq!(api.credit(&user).await, 1000 - 37);
    assert_eq!(api.stock(&apple).await, 5 - 3);
    assert_eq!(api.stock(&pear).await, 3 - 1);

    // checking out a paid order again is a 200 that charges nothing.
    api.post_ok(&format!("/orders/checkout/{order}")).await;
    assert_eq!(api.order(&order).await, paid);
    assert_eq!(api.credit(&user).await, 1000 - 37);
    assert_eq!(api.stock(&apple).await, 2);
    assert_eq!(api.stock(&pear).await, 2);

    // a paid order cannot change.
    assert_eq!(
        api.post_rejected(&add(&order, &apple, "1")).await,
        "already_paid"
    );
    assert_eq!(api.order(&order).await, paid);

    // the failed checkouts can still succeed once stock and credit suffice.
    api.post_ok(&format!("/payment/add_funds/{poor}/1")).await;
    api.post_ok(&format!("/orders/checkout/{cheap}")).await;
    assert!(api.order(&cheap).await.paid);
    assert_eq!(api.credit(&poor).await, 0);
    assert_eq!(api.stock(&apple).await, 1);
    assert_eq!(api.stock(&pear).await, 1);

    // a retried orders/create returns the same order.
    let path = format!("/orders/create/{user}");
    let first = api.post_with_id(&path, "create-order-a").await;
    let retry = api.post_with_id(&path, "create-order-a").await;
    let created = non_empty_str(&first.body, "order_id", "orders/create");
    assert_eq!(
        non_empty_str(&retry.body, "order_id", "orders/create retry"),
        created
    );
    assert_eq!(api.order(&created).await, empty);
    // a retried addItem is added once.
    let path = add(&created, &pear, "1");
    api.post_with_id(&path, "add-item-a").await;
    api.post_with_id(&path, "add-item-a").await;
    assert_eq!(api.order(&created).await.items, items(&[(&pear, 1)]));
    // a retried checkout charges once.
    let path = format!("/orders/checkout/{created}");
    let first = api.post_with_id(&path, "checkout-a").await;
    let retry = api.post_with_id(&path, "checkout-a").await;
    assert!(first.ok() && retry.ok(), "{first:?} {retry:?}");
    assert!(api.order(&created).await.paid);
    assert_eq!(api.credit(&user).await, 1000 - 37 - 7);
    assert_eq!(api.stock(&pear).await, 0);

    // ids that do not decode to UTF-8.
    api.post_rejected("/orders/create/%FF").await;
    api.get_rejected("/orders/find/%FF").await;
    api.post_rejected(&add("%FF", &apple, "1")).await;
    api.post_rejected(&add(&greedy, "%FF", "1")).await;
    api.post_rejected("/orders/checkout/%FF").await;

    // quantities that sum past i64::MAX at checkout: refused, nothing moves.
    let free = api.create_item(0).await;
    let huge = api.create_order(&user).await;
    api.post_ok(&add(&huge, &free, &MAX.to_string())).await;
    api.post_ok(&add(&huge, &free, "1")).await;
    let huge_before = api.order(&huge).await;
    assert_eq!(huge_before.total_cost, 0);
    api.post_rejected(&format!("/orders/checkout/{huge}")).await;
    assert_eq!(api.order(&huge).await, huge_before);
    assert_eq!(api.stock(&free).await, 0);
    assert_eq!(api.credit(&user).await, 1000 - 37 - 7);

    // two concurrent checkouts of one order charge once, and both answer
    // 200: the order ends up paid either way.
    api.post_ok(&format!("/stock/add/{apple}/1")).await;
    let twice = api.create_order(&user).await;
    api.post_ok(&add(&twice, &apple, "2")).await;
    let path = format!("/orders/checkout/{twice}");
    let (a, b) = futures::join!(api.post(&path), api.post(&path));
    assert!(a.ok() && b.ok(), "concurrent checkouts: {a:?} {b:?}");
    assert!(api.order(&twice).await.paid);
    assert_eq!(api.credit(&user).await, 1000 - 37 - 7 - 20);
    assert_eq!(api.stock(&apple).await, 0);

    // empty segments and unknown routes.
    assert_no_route(
        &api,
        &[
            ("POST", "/orders/create/".to_string()),
            ("GET", "/orders/find/".to_string()),
            ("POST", "/orders/checkout/".to_string()),
            ("POST", format!("/orders/addItem//{apple}/1")),
            ("POST", format!("/orders/addItem/{greedy}//1")),
            ("POST", format!("/orders/addItem/{greedy}/{apple}/")),
            ("POST", "/orders/batch_init//1/1/1".to_string()),
            ("GET", format!("/orders/find/{greedy}/extra")),
            ("POST", "/orders/nope".to_string()),
            ("GET", "/orders".to_string()),
        ],
    )
    .await;
    assert_wrong_method_refused(
        &api,
        &[
            ("GET", format!("/orders/create/{user}")),
            ("GET", format!("/orders/addItem/{greedy}/{apple}/1")),
            ("GET", format!("/orders/checkout/{greedy}")),
            ("GET", format!("/orders/checkout/{blank}")),
            ("GET", "/orders/batch_init/1/1/1/1".to_string()),
            ("POST", format!("/orders/find/{greedy}")),
        ],
    )
    .await;
    assert_eq!(api.order(&greedy).await, greedy_before);
    assert_eq!(api.order(&blank).await, empty);

    // orders/batch_init refusals create nothing (no order "0" exists here).
    for bad in BAD_NUMBERS {
        for path in [
            format!("/orders/batch_init/{bad}/1/1/1"),
            format!("/orders/batch_init/2/{bad}/1/1"),
            format!("/orders/batch_init/2/1/{bad}/1"),
            format!("/orders/batch_init/2/1/1/{bad}"),
        ] {
            assert_eq!(api.post_rejected(&path).await, "invalid_number", "{path}");
        }
    }
    api.post_rejected("/orders/batch_init/2/0/1/1").await;
    api.post_rejected("/orders/batch_init/2/1/0/1").await;
    api.post_rejected(&format!("/orders/batch_init/{MAX}/1/1/1"))
        .await;
    // total_cost = 2 * item_price would pass i64::MAX.
    api.post_rejected(&format!("/orders/batch_init/2/1/1/{MAX}"))
        .await;
    assert_eq!(api.get_rejected("/orders/find/0").await, "order_not_found");

    // nothing above moved money or stock it should not have.
    assert_eq!(api.credit(&user).await, 1000 - 37 - 7 - 20);
    assert_eq!(api.credit(&poor).await, 0);
    assert_eq!(api.stock(&apple).await, 0);
    assert_eq!(api.stock(&pear).await, 0);
}

/// 100,000 on the embedded store and on a real MongoDB (`MONGODB_URL`).
/// jongodb, the in-memory server CI uses, spends time proportional to a
/// collection's size on every insert or update (about 2 s per write at
/// 20,000 documents), so against it the same test runs with 2,000.
async fn batch_init_creates_ids_0_to_n_minus_1_in_every_service(setup: Setup) {
    let big = setup.backend == StorageBackend::Embedded || std::env::var("MONGODB_URL").is_ok();
    let n: i64 = if big { 100_000 } else { 2_000 };
    let Some((cluster, _mongo)) =
        common::cluster_on(setup.backend.clone(), &Service::ALL, setup.tweak(), &[])
    else {
        return;
    };
    let api = Api::new(&cluster);

    for path in [
        format!("/stock/batch_init/{n}/100/10"),
        format!("/payment/batch_init/{n}/1000"),
        format!("/orders/batch_init/{n}/{n}/{n}/10"),
    ] {
        let a = api.post_ok(&path).await;
        non_empty_str(&a.body, "msg", &path);
    }

    let last = (n - 1).to_string();
    for id in ["0", last.as_str()] {
        assert_eq!(api.item(id).await, (100, 10));
        assert_eq!(api.credit(id).await, 1000);
        let order = api.order(id).await;
        assert!(!order.paid, "order {id}: {order:?}");
        assert_eq!(order.total_cost, 2 * 10, "order {id}: {order:?}");
        assert_eq!(order.items.len(), 2, "order {id}: {order:?}");
        for (item, qty) in &order.items {
            assert_eq!(*qty, 1, "order {id}: {order:?}");
            let item: i64 = item.parse().expect("item id is a number");
            assert!((0..n).contains(&item), "order {id}: {order:?}");
        }
        let user: i64 = order.user_id.parse().expect("user id is a number");
        assert!((0..n).contains(&user), "order {id}: {order:?}");
    }
    let beyond = n.to_string();
    assert_eq!(
        api.get_rejected(&format!("/stock/find/{beyond}")).await,
        "item_not_found"
    );
    assert_eq!(
        api.get_rejected(&format!("/payment/find_user/{beyond}"))
            .await,
        "user_not_found"
    );
    assert_eq!(
        api.get_rejected(&format!("/orders/find/{beyond}")).await,
        "order_not_found"
    );

    // The initialized data is usable: order "0" checks out against it.
    let order = api.order("0").await;
    api.post_ok("/orders/checkout/0").await;
    assert!(api.order("0").await.paid);
    assert_eq!(api.credit(&order.user_id).await, 1000 - 20);
    for (item, _) in &order.items {
        let taken = order.items.iter().filter(|(i, _)| i == item).count() as i64;
        assert_eq!(
            api.stock(item).await,
            100 - taken,
            "item {item} of {order:?}"
        );
    }
}

/// The cluster a contract test runs against.
#[derive(Clone)]
struct Setup {
    backend: StorageBackend,
    shards: u16,
}

impl Setup {
    fn tweak(&self) -> impl FnOnce(&mut cart_common::ClusterSpec) {
        let shards = self.shards;
        move |spec| {
            for service in Service::ALL {
                spec.size_mut(service).shards = shards;
            }
        }
    }
}

macro_rules! contract_tests {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Setup { backend: super::StorageBackend::Embedded, shards: 1 }).await;
                }
            )*
        }
        mod mongodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Setup { backend: super::StorageBackend::Mongodb, shards: 1 }).await;
                }
            )*
        }
        mod sharded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Setup { backend: super::StorageBackend::Embedded, shards: 3 }).await;
                }
            )*
        }
    };
}

contract_tests!(
    stock_routes_follow_the_contract_and_every_rejection_changes_nothing,
    payment_routes_follow_the_contract_apply_a_request_id_once_and_rejections_change_nothing,
    orders_and_checkout_charge_exactly_once_and_failed_checkouts_change_nothing,
    batch_init_creates_ids_0_to_n_minus_1_in_every_service,
);
