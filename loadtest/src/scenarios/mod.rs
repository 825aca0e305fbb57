//! The load scenarios. Each populates what it needs through the public API,
//! calls `Ctx::begin` when the load proper starts (faults and time series
//! count from there), and returns what its report adds to the common one.

pub mod bank;
pub mod consistency;
pub mod mixed;
pub mod open_loop;
pub mod stress;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::client::Api;
use crate::stats::Stats;

pub struct Ctx {
    pub api: Api,
    pub stats: Arc<Stats>,
    pub seed: u64,
    begin_tx: Sender<Instant>,
    load_ended: AtomicBool,
}

impl Ctx {
    pub fn new(api: Api, stats: Arc<Stats>, seed: u64, begin_tx: Sender<Instant>) -> Self {
        Self {
            api,
            stats,
            seed,
            begin_tx,
            load_ended: AtomicBool::new(false),
        }
    }

    /// The load proper is over: network faults still in place are healed
    /// (and none scheduled later strikes) before the scenario reads back.
    pub fn end_load(&self) {
        self.load_ended.store(true, Ordering::Relaxed);
    }

    pub fn load_ended(&self) -> bool {
        self.load_ended.load(Ordering::Relaxed)
    }

    /// The load starts now: the time series and the fault schedule count
    /// from here.
    pub fn begin(&self) -> Instant {
        let t = self.stats.begin();
        // Nobody listening (no fault schedule) is fine.
        let _ = self.begin_tx.send(t);
        t
    }
}

/// Stress: offered against served load in the steady state (after ramp).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Steady {
    pub from_s: u64,
    pub to_s: u64,
    /// Users / think time: what the users would send with instant answers.
    pub offered_rps: f64,
    /// Checkouts answered 2xx per second over the window.
    pub served_ok_rps: f64,
    pub served_ratio: f64,
    pub first_time_ok_rps: f64,
}

/// One rate of an open-loop search.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub rate: f64,
    pub from_s: u64,
    pub to_s: u64,
    /// Arrivals the client could not start (too many in flight).
    pub dropped: u64,
    pub first_time: crate::stats::Summary,
    pub within_bounds: bool,
    pub why_not: String,
}

/// The benchmark's consistency verdict, its four numbers and how they came.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    pub stock: i64,
    pub buyers: u64,
    pub successes_logged: u64,
    pub refusals_logged: u64,
    /// Checkouts still without a definite (non-5xx) answer at the deadline.
    pub unresolved: u64,
    pub stock_in_db: i64,
    pub credit_in_db: i64,
    pub orders_paid_in_db: u64,
    /// successes logged − stock.
    pub successes_minus_stock: i64,
    /// items sold per the database − stock.
    pub sold_in_db_minus_stock: i64,
    /// |expected credit − credit implied by the logged successes|.
    pub logged_credit_error: i64,
    /// |expected credit − total credit in the database|.
    pub db_credit_error: i64,
    pub pass: bool,
}

impl Verdict {
    pub fn numbers(&self) -> [i64; 4] {
        [
            self.successes_minus_stock,
            self.sold_in_db_minus_stock,
            self.logged_credit_error,
            self.db_credit_error,
        ]
    }
}

/// What a scenario adds to the report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// How long the load ran (from `begin`).
    pub load_s: f64,
    /// How long population took before it.
    pub populate_s: f64,
    pub steady: Option<Steady>,
    pub steps: Vec<Step>,
    /// The highest rate of the open-loop search that stayed within bounds.
    pub knee_rps: Option<f64>,
    pub verdict: Option<Verdict>,
    /// `bank`: what the history checks found.
    #[serde(default)]
    pub history: Option<bank::HistoryVerdict>,
}

/// Sleeps `d`, but not past `end`.
pub async fn sleep_until_or(d: Duration, end: Instant) {
    let until = (Instant::now() + d).min(end);
    tokio::time::sleep_until(until.into()).await;
}

/// The three `batch_init` calls of the standard benchmark.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Population {
    /// Items created by batch_init ("0".."n-1").
    #[arg(long, default_value_t = 100_000)]
    pub items: u64,
    /// Customers (payment users) created by batch_init.
    #[arg(long, default_value_t = 100_000)]
    pub customers: u64,
    /// Orders created by batch_init, each with 2 random items.
    #[arg(long, default_value_t = 100_000)]
    pub orders: u64,
    /// Starting stock of every item: large, so stock never runs out.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub item_stock: u64,
    /// Starting credit of every customer: large, so credit never runs out.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub credit: u64,
    #[arg(long, default_value_t = 1)]
    pub item_price: u64,
    /// Use what is already there (a previous run's population).
    #[arg(long)]
    pub skip_populate: bool,
}

impl Population {
    pub async fn populate(&self, api: &Api) -> anyhow::Result<()> {
        if self.skip_populate {
            return Ok(());
        }
        let p = self;
        api.must_post(&format!(
            "/stock/batch_init/{}/{}/{}",
            p.items, p.item_stock, p.item_price
        ))
        .await?;
        api.must_post(&format!("/payment/batch_init/{}/{}", p.customers, p.credit))
            .await?;
        api.must_post(&format!(
            "/orders/batch_init/{}/{}/{}/{}",
            p.orders, p.items, p.customers, p.item_price
        ))
        .await?;
        Ok(())
    }
}
