//! `consistency`: the standard benchmark's consistency scenario. One item
//! with stock 100 and price 1, 1000 users with credit 1, one single-item
//! order per user, all checked out at once. Afterwards the database is read
//! back through the public API only (find, find_user, find order) and the
//! benchmark's four numbers are computed; all must be 0.
//!
//! A checkout answered 5xx or not at all is retried with the same request
//! id (the gateway applies it at most once), as a client would, until it
//! has a definite answer: with a process killed mid-run, "logged successes"
//! then still means something.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt};
use reqwest::Method;
use serde::Serialize;

use super::{Ctx, Outcome, Verdict};
use crate::stats::Status;

pub const CHECKOUT: &str = "checkout";

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct ConsistencyArgs {
    /// Stock of the one item (the benchmark: 100).
    #[arg(long, default_value_t = 100)]
    pub stock: u64,
    /// Users with credit 1, one order each (the benchmark: 1000).
    #[arg(long, default_value_t = 1000)]
    pub buyers: u64,
    /// Requests in flight while creating the orders.
    #[arg(long, default_value_t = 100)]
    pub setup_concurrency: usize,
    /// Give up on a checkout without a definite answer after this long.
    #[arg(long, default_value_t = 180)]
    pub deadline_secs: u64,
}

pub async fn run(ctx: Arc<Ctx>, args: ConsistencyArgs) -> anyhow::Result<Outcome> {
    let api = &ctx.api;
    let populate_started = Instant::now();
    api.must_post(&format!("/stock/batch_init/1/{}/1", args.stock))
        .await?;
    api.must_post(&format!("/payment/batch_init/{}/1", args.buyers))
        .await?;
    let orders: Vec<String> = stream::iter(0..args.buyers)
        .map(|user| async move {
            let created = api.must_post(&format!("/orders/create/{user}")).await?;
            let order = created
                .str("order_id")
                .with_context(|| format!("no order_id in {}", created.body))?;
            api.must_post(&format!("/orders/addItem/{order}/0/1"))
                .await?;
            anyhow::Ok(order)
        })
        .buffered(args.setup_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let populate_s = populate_started.elapsed().as_secs_f64();

    let start = ctx.begin();
    ctx.stats
        .users
        .store(orders.len(), std::sync::atomic::Ordering::Relaxed);
    let deadline = start + Duration::from_secs(args.deadline_secs);
    let run_id = ctx.seed;
    let tasks: Vec<_> = orders
        .iter()
        .enumerate()
        .map(|(i, order)| {
            let ctx = ctx.clone();
            let path = format!("/orders/checkout/{order}");
            let request_id = format!("cart-load-consistency-{run_id:x}-{i}");
            tokio::spawn(async move {
                loop {
                    let a = ctx
                        .api
                        .timed(&ctx.stats, CHECKOUT, Method::POST, &path, Some(&request_id))
                        .await;
                    let definite = matches!(a.status, Status::Http(200..=499));
                    if definite || Instant::now() > deadline {
                        return a.status;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        })
        .collect();
    let (mut successes, mut refusals, mut unresolved) = (0u64, 0u64, 0u64);
    for t in tasks {
        match t.await? {
            Status::Http(200..=299) => successes += 1,
            Status::Http(400..=499) => refusals += 1,
            _ => unresolved += 1,
        }
    }
    ctx.stats
        .users
        .store(0, std::sync::atomic::Ordering::Relaxed);
    let load_s = start.elapsed().as_secs_f64();
    ctx.stats.event("end", "every checkout answered");

    // Read back at once: the contract promises no settling time.
    let stock_in_db = api
        .must_get("/stock/find/0")
        .await?
        .int("stock")
        .context("no stock in the item")?;
    let credits: Vec<i64> = stream::iter(0..args.buyers)
        .map(|user| async move {
            let a = api.must_get(&format!("/payment/find_user/{user}")).await?;
            a.int("credit")
                .with_context(|| format!("no credit for user {user}: {}", a.body))
        })
        .buffer_unordered(args.setup_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let paid: Vec<bool> = stream::iter(orders.clone())
        .map(|order| async move {
            let a = api.must_get(&format!("/orders/find/{order}")).await?;
            Ok(a.body
                .get("paid")
                .and_then(|p| p.as_bool())
                .unwrap_or(false))
        })
        .buffer_unordered(args.setup_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;

    let verdict = verdict(
        args.stock as i64,
        args.buyers,
        (successes, refusals, unresolved),
        stock_in_db,
        credits.iter().sum(),
        paid.iter().filter(|p| **p).count() as u64,
    );
    Ok(Outcome {
        load_s,
        populate_s,
        verdict: Some(verdict),
        ..Default::default()
    })
}

/// The benchmark's four numbers from what was logged and what the
/// database says.
pub fn verdict(
    stock: i64,
    buyers: u64,
    (successes, refusals, unresolved): (u64, u64, u64),
    stock_in_db: i64,
    credit_in_db: i64,
    orders_paid_in_db: u64,
) -> Verdict {
    let buyers_i = buyers as i64;
    let expected_credit = buyers_i - stock.min(buyers_i);
    let sold_in_db = stock - stock_in_db;
    let implied_credit = buyers_i - successes as i64;
    let mut v = Verdict {
        stock,
        buyers,
        successes_logged: successes,
        refusals_logged: refusals,
        unresolved,
        stock_in_db,
        credit_in_db,
        orders_paid_in_db,
        successes_minus_stock: successes as i64 - stock,
        sold_in_db_minus_stock: sold_in_db - stock,
        logged_credit_error: (expected_credit - implied_credit).abs(),
        db_credit_error: (expected_credit - credit_in_db).abs(),
        pass: false,
    };
    v.pass = v.numbers() == [0; 4] && unresolved == 0 && orders_paid_in_db == successes;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_correct_run_scores_zero_on_all_four() {
        let v = verdict(100, 1000, (100, 900, 0), 0, 900, 100);
        assert_eq!(v.numbers(), [0, 0, 0, 0]);
        assert!(v.pass);
    }

    #[test]
    fn oversold_and_lost_credit_show_in_the_numbers() {
        // 103 answered 2xx, the database sold 102 and holds 899 credit.
        let v = verdict(100, 1000, (103, 897, 0), -2, 899, 103);
        // 103 − 100; (100 − (−2)) − 100; |900 − (1000 − 103)|; |900 − 899|.
        assert_eq!(v.numbers(), [3, 2, 3, 1]);
        assert!(!v.pass);
        // Zero numbers but a checkout left unanswered is no pass either.
        let v = verdict(100, 1000, (100, 899, 1), 0, 900, 100);
        assert!(!v.pass);
    }
}
