//! `bank`: a history, recorded and checked (Jepsen's way; docs/faults.md).
//! Clients read, add to and subtract from the stock of items
//! "0".."keys-1" and the credit of users "0".."keys-1", one operation at a
//! time each, recording every invocation, completion and answer (or none);
//! other clients check out single-item orders of items and users
//! "keys".."2·keys-1", retrying their own request id. After the load (and
//! every `--fault` healed) every key is read once more, and `cart-checker`
//! checks that each key's history is linearizable (a lost acknowledged
//! write fails it: the final read must see it) and that the bank invariants
//! hold on the checkout keys. With `--history FILE` the history is written
//! out as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use cart_checker::api::{credit_key, stock_key, Verb};
use cart_checker::bank::{self, Ledger};
use cart_checker::linearizable;
use cart_checker::record::Recorder;
use cart_checker::{Answer, Call};
use cart_common::rng::SplitMix64;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::{Ctx, Outcome};
use crate::stats::Status;

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct BankArgs {
    /// Clients of direct reads and writes.
    #[arg(long, default_value_t = 6)]
    pub clients: u32,
    /// Clients checking out orders.
    #[arg(long, default_value_t = 2)]
    pub buyers: u32,
    /// Items and users taking direct reads and writes (as many again take
    /// checkouts).
    #[arg(long, default_value_t = 4)]
    pub keys: u64,
    /// Starting stock of every item and credit of every user.
    #[arg(long, default_value_t = 1000)]
    pub start: i64,
    /// Length of the load, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Write the history here (JSON: every operation).
    #[arg(long)]
    pub history: Option<PathBuf>,
}

/// What the checks found.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HistoryVerdict {
    pub operations: usize,
    /// Operations without an answer (they may or may not have happened).
    pub unanswered: usize,
    pub keys: usize,
    /// Keys whose operations have no linearization (or no answer in time).
    pub not_linearizable: Vec<String>,
    pub orders: usize,
    pub paid: usize,
    pub answered_paid: usize,
    pub bank_violations: Vec<String>,
    /// Answers the scenario did not expect (a 404 for a key it created).
    pub client_errors: Vec<String>,
    pub pass: bool,
}

const OP: &str = "bank_op";
const CHECKOUT: &str = "checkout";

pub async fn run(ctx: Arc<Ctx>, args: BankArgs) -> anyhow::Result<Outcome> {
    let populate_started = Instant::now();
    let n = 2 * args.keys.max(1);
    ctx.api
        .must_post(&format!("/stock/batch_init/{n}/{}/1", args.start))
        .await?;
    ctx.api
        .must_post(&format!("/payment/batch_init/{n}/{}", args.start))
        .await?;
    let populate_s = populate_started.elapsed().as_secs_f64();

    let start = ctx.begin();
    let end = start + Duration::from_secs_f64(args.duration);
    let recorder = Arc::new(Recorder::new());
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (ctx, recorder, errors) = (ctx.clone(), recorder.clone(), errors.clone());
        let keys = args.keys.max(1);
        tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(ctx.seed ^ u64::from(c).wrapping_mul(0x9e37_79b9));
            let mut i = 0;
            while Instant::now() < end {
                i += 1;
                let k = rng.below(keys);
                let key = if rng.below(2) == 0 {
                    stock_key(k)
                } else {
                    credit_key(k)
                };
                let amount = 1 + rng.below(5) as i64;
                let call = match rng.below(3) {
                    0 => Call::Read { key },
                    1 => Call::Add { key, amount },
                    _ => Call::Subtract { key, amount },
                };
                let id = format!("bank-{}-{c}-{i}", ctx.seed);
                let at = recorder.now_us();
                match direct(&ctx, &call, &id).await {
                    Ok(answer) => recorder.complete(c, at, call, answer),
                    Err(e) => errors.lock().unwrap_or_else(|p| p.into_inner()).push(e),
                }
            }
        }));
    }
    let orders = Arc::new(Mutex::new(Vec::new()));
    let answered_paid = Arc::new(Mutex::new(BTreeSet::new()));
    for b in 0..args.buyers {
        let (ctx, orders, answered_paid) = (ctx.clone(), orders.clone(), answered_paid.clone());
        let keys = args.keys.max(1);
        tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(ctx.seed ^ 0xbead ^ u64::from(b));
            let mut i = 0;
            while Instant::now() < end {
                i += 1;
                let (user, item) = (keys + rng.below(keys), keys + rng.below(keys));
                let Some(order) =
                    order_of(&ctx, user, item, &format!("{}-{b}-{i}", ctx.seed)).await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                orders
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(order.clone());
                let id = format!("bank-checkout-{}-{b}-{i}", ctx.seed);
                let path = format!("/orders/checkout/{order}");
                while Instant::now() < end {
                    let a = ctx
                        .api
                        .timed(&ctx.stats, CHECKOUT, Method::POST, &path, Some(&id))
                        .await;
                    match a.status {
                        s if s.ok() => {
                            answered_paid
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(order.clone());
                            break;
                        }
                        Status::Http(code) if code < 500 && code != 429 => break,
                        _ => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let load_s = start.elapsed().as_secs_f64();
    ctx.stats.event("end", "load stopped");
    // Every network fault healed before the checks read back; wait until
    // the cluster answers again.
    ctx.end_load();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctx.api.wait_serving(Duration::from_secs(120)).await?;

    let keys = args.keys.max(1);
    for k in 0..keys {
        for key in [stock_key(k), credit_key(k)] {
            let call = Call::Read { key };
            let at = recorder.now_us();
            let answer = final_read(&ctx, &call).await?;
            recorder.complete(u32::MAX, at, call, answer);
        }
    }
    let history = recorder.history();
    if let Some(path) = &args.history {
        let json = serde_json::to_vec_pretty(&history)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    let initial: BTreeMap<String, i64> = (0..keys)
        .flat_map(|k| [(stock_key(k), args.start), (credit_key(k), args.start)])
        .collect();
    let not_linearizable: Vec<String> = linearizable::check(&history, &initial)
        .iter()
        .map(|f| f.to_string())
        .collect();

    let orders = orders.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let answered_paid = answered_paid
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let ledger = ledger(&ctx, keys, args.start, &orders, answered_paid).await?;
    let bank_violations: Vec<String> = bank::check(&ledger).iter().map(|v| v.to_string()).collect();
    let client_errors = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let pass =
        not_linearizable.is_empty() && bank_violations.is_empty() && client_errors.is_empty();
    let verdict = HistoryVerdict {
        operations: history.len(),
        unanswered: history
            .iter()
            .filter(|o| o.answer == Answer::Unknown)
            .count(),
        keys: initial.len(),
        not_linearizable,
        orders: orders.len(),
        paid: ledger.orders.iter().filter(|o| o.paid).count(),
        answered_paid: ledger.answered_paid.len(),
        bank_violations,
        client_errors,
        pass,
    };
    Ok(Outcome {
        load_s,
        populate_s,
        history: Some(verdict),
        ..Default::default()
    })
}

/// One direct operation through the gateway, timed under `bank_op`.
async fn direct(ctx: &Ctx, call: &Call, id: &str) -> Result<Answer, String> {
    let (verb, path) = call.request()?;
    let (method, id) = match verb {
        Verb::Get => (Method::GET, None),
        Verb::Post => (Method::POST, Some(id)),
    };
    let a = ctx.api.timed(&ctx.stats, OP, method, &path, id).await;
    let status = match a.status {
        Status::Http(code) => Some(code),
        _ => None,
    };
    call.answer(status, &a.body)
}

/// A read with an answer, after the load (retried while it has none).
async fn final_read(ctx: &Ctx, call: &Call) -> anyhow::Result<Answer> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = direct(ctx, call, "").await.map_err(anyhow::Error::msg)?;
        if answer != Answer::Unknown {
            return Ok(answer);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no answer to {call:?} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A new order of one `item` for `user`, or `None` if it could not be made.
async fn order_of(ctx: &Ctx, user: u64, item: u64, id: &str) -> Option<String> {
    let api = &ctx.api;
    let created = api
        .call(
            Method::POST,
            &format!("/orders/create/{user}"),
            Some(&format!("bank-o-{id}")),
        )
        .await;
    let order = created.str("order_id")?;
    let add = format!("/orders/addItem/{order}/{item}/1");
    api.call(Method::POST, &add, Some(&format!("bank-a-{id}")))
        .await
        .ok()
        .then_some(order)
}

/// What the checkout keys started with and hold now, and every order.
async fn ledger(
    ctx: &Ctx,
    keys: u64,
    start: i64,
    orders: &[String],
    answered_paid: BTreeSet<String>,
) -> anyhow::Result<Ledger> {
    let api = &ctx.api;
    let mut ledger = Ledger {
        answered_paid,
        ..Ledger::default()
    };
    for k in keys..2 * keys {
        let id = k.to_string();
        let item = api.must_get(&format!("/stock/find/{id}")).await?;
        let user = api.must_get(&format!("/payment/find_user/{id}")).await?;
        ledger.stock_before.insert(id.clone(), start);
        ledger.credit_before.insert(id.clone(), start);
        ledger
            .stock_after
            .insert(id.clone(), item.int("stock").context("stock")?);
        ledger
            .credit_after
            .insert(id, user.int("credit").context("credit")?);
    }
    for order in orders {
        let found = api.must_get(&format!("/orders/find/{order}")).await?;
        let items = found
            .body
            .get("items")
            .and_then(|i| i.as_array())
            .map(|items| {
                items
                    .iter()
                    .map(|i| {
                        let id = i[0].as_str().unwrap_or_default().to_string();
                        (id, i[1].as_i64().unwrap_or(0))
                    })
                    .collect()
            })
            .unwrap_or_default();
        ledger.orders.push(bank::Order {
            id: order.clone(),
            user: found.str("user_id").unwrap_or_default(),
            total: found.int("total_cost").unwrap_or(0),
            items,
            paid: found
                .body
                .get("paid")
                .and_then(|p| p.as_bool())
                .unwrap_or(false),
        });
    }
    Ok(ledger)
}
