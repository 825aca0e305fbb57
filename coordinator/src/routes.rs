//! The public cart API of each service (docs/api.md): parse, route to the group,
//! shape the JSON answer. Business rejections become 400s with the
//! rejection's code; cluster failures keep their own status.

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use cart_common::metrics::Label;
use cart_common::{ApiError, Service};
use cart_services::domain::{
    Command, Outcome, Query, Rejection, RejectionCode, Reply, MAX_BATCH_INIT,
};
use cart_services::request_key::{self, RequestKey};
use serde_json::{json, Value};

use crate::checkout;
use crate::params::{amount, count, id, Params};
use crate::state::Coordinator;

type Answer = Result<Json<Value>, ApiError>;
type App = State<Arc<Coordinator>>;

/// The request key of a write: the client's `X-Request-Id` (the gateway's,
/// or a fresh one for callers that bypass the gateway and send none) with the
/// fingerprint of the operation it names — service, method, route and path
/// parameters as the client sent them (`cart_services::request_key`).
pub struct ClientRequest(pub RequestKey);

impl FromRequestParts<Arc<Coordinator>> for ClientRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, c: &Arc<Coordinator>) -> Result<Self, ApiError> {
        let id = cart_common::http::request_id(&parts.headers)?
            .unwrap_or_else(cart_common::http::new_request_id);
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let Params(params) = Params::from_request_parts(parts, c).await?;
        let params: Vec<&str> = params.iter().map(String::as_str).collect();
        let fingerprint =
            request_key::fingerprint(c.service().name(), parts.method.as_str(), &route, &params);
        Ok(ClientRequest(RequestKey::client(&id, fingerprint)))
    }
}

/// The reply of an outcome, or the 4xx of its rejection (`refusal`).
pub fn reply(result: Result<Outcome, ApiError>) -> Result<Reply, ApiError> {
    result?.map_err(refusal)
}

/// A request id reused for another operation is a 409, every other refusal
/// a 400, with the rejection's code.
pub fn refusal(rejection: Rejection) -> ApiError {
    let code = rejection.error.as_str();
    match rejection.error {
        RejectionCode::RequestIdConflict => {
            ApiError::new(StatusCode::CONFLICT, code, rejection.message)
        }
        _ => ApiError::bad_request(code, rejection.message),
    }
}

pub fn unexpected(reply: Reply) -> ApiError {
    ApiError::internal(format!("unexpected reply {reply:?}"))
}

fn done() -> Answer {
    Ok(Json(json!({ "done": true })))
}

/// A fresh id for a create, in the shard of the request id: a retry of the
/// create (same request id) reaches the same shard, whose memory of the
/// request id answers with the id first created, whatever id this attempt
/// drew. An id lands in a given shard of `n` one draw in `n`.
fn new_id(c: &Coordinator, key: &RequestKey) -> String {
    let shard = c.own().shard_of(&key.request_id);
    loop {
        let id = uuid::Uuid::new_v4().to_string();
        if c.own().shard_of(&id) == shard {
            return id;
        }
    }
}

pub fn public_routes(service: Service) -> Router<Arc<Coordinator>> {
    match service {
        Service::Stock => Router::new()
            .route("/stock/item/create/{price}", post(create_item))
            .route("/stock/find/{item_id}", get(find_item))
            .route("/stock/add/{item_id}/{amount}", post(add_stock))
            .route("/stock/subtract/{item_id}/{amount}", post(subtract_stock))
            .route(
                "/stock/batch_init/{n}/{starting_stock}/{item_price}",
                post(batch_init_items),
            ),
        Service::Payment => Router::new()
            .route("/payment/create_user", post(create_user))
            .route("/payment/find_user/{user_id}", get(find_user))
            .route("/payment/add_funds/{user_id}/{amount}", post(add_funds))
            .route("/payment/pay/{user_id}/{amount}", post(pay))
            .route(
                "/payment/batch_init/{n}/{starting_money}",
                post(batch_init_users),
            ),
        Service::Order => Router::new()
            .route("/orders/create/{user_id}", post(create_order))
            .route("/orders/find/{order_id}", get(find_order))
            .route(
                "/orders/addItem/{order_id}/{item_id}/{quantity}",
                post(add_item),
            )
            .route("/orders/checkout/{order_id}", post(checkout_order))
            .route(
                "/orders/batch_init/{n}/{n_items}/{n_users}/{item_price}",
                post(batch_init_orders),
            ),
    }
}

// ---- stock

async fn create_item(State(c): App, ClientRequest(key): ClientRequest, p: Params) -> Answer {
    let price = amount("price", p.get(0))?;
    let cmd = Command::CreateItem {
        item_id: new_id(&c, &key),
        price,
    };
    match reply(c.own().write(&key, cmd).await)? {
        Reply::Created { id } => Ok(Json(json!({ "item_id": id }))),
        other => Err(unexpected(other)),
    }
}

async fn find_item(State(c): App, p: Params) -> Answer {
    let item_id = id("item_id", p.get(0))?.to_string();
    match reply(c.own().read(Query::FindItem { item_id }).await)? {
        Reply::Item(item) => Ok(Json(json!({ "stock": item.stock, "price": item.price }))),
        other => Err(unexpected(other)),
    }
}

async fn add_stock(State(c): App, ClientRequest(key): ClientRequest, p: Params) -> Answer {
    let cmd = Command::AddStock {
        item_id: id("item_id", p.get(0))?.to_string(),
        amount: amount("amount", p.get(1))?,
    };
    reply(c.own().write(&key, cmd).await)?;
    done()
}

async fn subtract_stock(State(c): App, ClientRequest(key): ClientRequest, p: Params) -> Answer {
    let cmd = Command::SubtractStock {
        item_id: id("item_id", p.get(0))?.to_string(),
        amount: amount("amount", p.get(1))?,
    };
    reply(c.own().write(&key, cmd).await)?;
    done()
}

async fn batch_init_items(State(c): App, ClientRequest(key): ClientRequest, p: Params) -> Answer {
    let cmd = Command::BatchInitItems {
        n: count("n", p.get(0), MAX_BATCH_INIT)?,
        starting_stock: amount("starting_stock", p.get(1))?,
        price: amount("item_price", p.get(2))?,
        part: None,
    };
    reply(c.own().write(&key, cmd).await)?;
    Ok(Json(json!({ "msg": "Batch init for stock successful" })))
}

// ---- payment

async fn create_user(State(c): App, ClientRequest(key): ClientRequest) -> Answer {
    let cmd = Command::CreateUser {
        user_id: new_id(&c, &key),
    };
    match reply(c.own().write(&key, cmd).await)? {
        Reply::Created { id } => Ok(Json(json!({ "user_id": id }))),
        other => Err(unexpected(other)),
    }
}

async fn find_user(State(c): App, p: Params) -> Answer {
    let user_id = id("user_id", p.get(0))?.to_string();
    match reply(
        c.own()
            .read(Query::FindUser {
                user_id: user_id.clone(),
            })
            .await,
    )? {
        Reply::User(u) => Ok(Json(json!({ "user_id": user_id, "credit": u.credit }))),
        other => Err(unexpected(other)),
    }
}

async fn add_funds(State(c): App, ClientRequest(key): ClientRequest, p: Params) -> Answer {
    let cmd = Command::AddFunds {
        user_id: id("user_id", p.get(0))?.to_string(),
        amount: amount("amount", p.get(1))?,
    };
    reply(c.own().write(&key, cmd).await)?;
    done()
}

async fn pay(State(c): App, ClientRequest(key): ClientRequest, p: Params) -> Answer {
    let cmd = Command::Pay {
        user_id: id("user_id", p.get(0))?.to_string(),
        amount: amount("amount", p.get(1))?,
    };
    reply(c.own().write(&key, cmd).await)?;
    done()
}

async fn batch_init_users(State(c): App, ClientRequest(key): ClientRequest, p: Params) -> Answer {
    let cmd = Command::BatchInitUsers {
        n: count("n", p.get(0), MAX_BATCH_INIT)?,
        starting_money: amount("starting_money", p.get(1))?,
        part: None,
    };
    reply(c.own().write(&key, cmd).await)?;
    Ok(Json(json!({ "msg": "Batch init for users successful" })))
}

// ---- order

async fn create_order(State(c): App, ClientRequest(key): ClientRequest, p: Params) -> Answer {
    let user_id = id("user_id", p.get(0))?.to_string();
    // An order for a user who does not exist could never be paid.
    reply(
        c.peer(Service::Payment)?
            .read(Query::FindUser {
                user_id: user_id.clone(),
            })
            .await,
    )?;
    let cmd = Command::CreateOrder {
        order_id: new_id(&c, &key),
        user_id,
    };
    match reply(c.own().write(&key, cmd).await)? {
        Reply::Created { id } => Ok(Json(json!({ "order_id": id }))),
        other => Err(unexpected(other)),
    }
}

async fn find_order(State(c): App, p: Params) -> Answer {
    let order_id = id("order_id", p.get(0))?.to_string();
    match reply(
        c.own()
            .read(Query::FindOrder {
                order_id: order_id.clone(),
            })
            .await,
    )? {
        Reply::Order(o) => Ok(Json(json!({
            "order_id": order_id,
            "paid": o.paid,
            "items": o.items,
            "user_id": o.user_id,
            "total_cost": o.total_cost,
        }))),
        other => Err(unexpected(other)),
    }
}

async fn add_item(State(c): App, ClientRequest(key): ClientRequest, p: Params) -> Answer {
    let order_id = id("order_id", p.get(0))?.to_string();
    let item_id = id("item_id", p.get(1))?.to_string();
    let quantity = amount("quantity", p.get(2))?;
    if quantity == 0 {
        return Err(ApiError::bad_request(
            "invalid_number",
            "quantity must be at least 1",
        ));
    }
    let price = match reply(
        c.peer(Service::Stock)?
            .read(Query::FindItem {
                item_id: item_id.clone(),
            })
            .await,
    )? {
        Reply::Item(item) => item.price,
        other => return Err(unexpected(other)),
    };
    let cmd = Command::AddItem {
        order_id,
        item_id,
        quantity,
        price,
    };
    reply(c.own().write(&key, cmd).await)?;
    done()
}

async fn checkout_order(State(c): App, ClientRequest(key): ClientRequest, p: Params) -> Answer {
    let order_id = id("order_id", p.get(0))?.to_string();
    checkout::run(&c, &key, &order_id).await?;
    done()
}

async fn batch_init_orders(State(c): App, ClientRequest(key): ClientRequest, p: Params) -> Answer {
    let cmd = Command::BatchInitOrders {
        n: count("n", p.get(0), MAX_BATCH_INIT)?,
        n_items: count("n_items", p.get(1), u64::MAX)?,
        n_users: count("n_users", p.get(2), u64::MAX)?,
        item_price: amount("item_price", p.get(3))?,
        // The seed travels in the log entry, so replicas draw identically.
        seed: rand_seed(&key.request_id),
        part: None,
    };
    reply(c.own().write(&key, cmd).await)?;
    Ok(Json(json!({ "msg": "Batch init for orders successful" })))
}

/// A seed that differs per request but is the same for a retry of it.
fn rand_seed(request_id: &str) -> u64 {
    // FNV-1a: tiny, stable across releases.
    request_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
