//! `stress`: the standard benchmark's load. Populate with the three
//! `batch_init` routes, then N simulated users, started at a fixed ramp
//! rate, each checking out a random order, waiting the think time, and
//! again, until the run's end. Paid orders make later checkouts take the
//! already-paid path, so first-time and repeat checkouts are counted apart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;

use super::{sleep_until_or, Ctx, Outcome, Population, Steady};
use crate::stats::rate;
use cart_common::rng::SplitMix64;

pub const FIRST: &str = "checkout_first";
pub const REPEAT: &str = "checkout_repeat";

/// Closed-loop users: how many, how fast they arrive, how long they think.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Users {
    /// Simulated users.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Users started per second until all run.
    #[arg(long, default_value_t = 100.0)]
    pub ramp: f64,
    /// Wait after each answer before the next request, in ms.
    #[arg(long, default_value_t = 1000)]
    pub think_ms: u64,
    /// Length of the load (ramp included), in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
}

impl Users {
    pub fn ramp_s(&self) -> f64 {
        if self.ramp > 0.0 {
            self.users as f64 / self.ramp
        } else {
            0.0
        }
    }

    /// When user `i` starts, after the load's start.
    pub fn start_of(&self, i: usize) -> Duration {
        if self.ramp > 0.0 {
            Duration::from_secs_f64(i as f64 / self.ramp)
        } else {
            Duration::ZERO
        }
    }

    /// Requests per second the users would send if answers took no time.
    pub fn offered_rps(&self) -> f64 {
        if self.think_ms == 0 {
            return f64::INFINITY;
        }
        self.users as f64 * 1000.0 / self.think_ms as f64
    }
}

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct StressArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub users: Users,
    #[command(flatten)]
    #[serde(flatten)]
    pub population: Population,
}

pub async fn run(ctx: Arc<Ctx>, args: StressArgs) -> anyhow::Result<Outcome> {
    let populate_started = Instant::now();
    args.population.populate(&ctx.api).await?;
    let populate_s = populate_started.elapsed().as_secs_f64();

    let orders = args.population.orders.max(1);
    // Orders this run has seen paid: a checkout of one is a repeat.
    let paid: Arc<Vec<AtomicBool>> =
        Arc::new((0..orders).map(|_| AtomicBool::new(false)).collect());
    let start = ctx.begin();
    let end = start + Duration::from_secs_f64(args.users.duration);
    let think = Duration::from_millis(args.users.think_ms);
    let mut tasks = Vec::with_capacity(args.users.users);
    for i in 0..args.users.users {
        let at = start + args.users.start_of(i);
        if at >= end {
            break;
        }
        let (ctx, paid) = (ctx.clone(), paid.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            ctx.stats.users.fetch_add(1, Ordering::Relaxed);
            let mut rng = SplitMix64::new(ctx.seed ^ (i as u64).wrapping_mul(0x9e37_79b9));
            while Instant::now() < end {
                let order = rng.below(orders) as usize;
                let op = if paid[order].load(Ordering::Relaxed) {
                    REPEAT
                } else {
                    FIRST
                };
                let path = format!("/orders/checkout/{order}");
                let answer = ctx
                    .api
                    .timed(&ctx.stats, op, Method::POST, &path, None)
                    .await;
                if answer.ok() {
                    paid[order].store(true, Ordering::Relaxed);
                }
                sleep_until_or(think, end).await;
            }
            ctx.stats.users.fetch_sub(1, Ordering::Relaxed);
        }));
    }
    for t in tasks {
        t.await?;
    }
    let load_s = start.elapsed().as_secs_f64();
    ctx.stats.event("end", "load stopped");

    // The steady state: from the first whole second with every user
    // running to the last whole second of the run.
    let from_s = args.users.ramp_s().ceil() as u64;
    let to_s = (args.users.duration.floor() as u64).max(from_s);
    let all = ctx.stats.window(crate::stats::ALL, from_s, to_s);
    let first = ctx.stats.window(FIRST, from_s, to_s);
    let offered_rps = args.users.offered_rps();
    let steady = Steady {
        from_s,
        to_s,
        offered_rps,
        served_ok_rps: all.ok_rps,
        served_ratio: if offered_rps.is_finite() && offered_rps > 0.0 {
            all.ok_rps / offered_rps
        } else {
            0.0
        },
        first_time_ok_rps: rate(first.ok, Duration::from_secs(to_s - from_s)),
    };
    Ok(Outcome {
        load_s,
        populate_s,
        steady: Some(steady),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_and_offered_load_follow_the_settings() {
        let u = Users {
            users: 1000,
            ramp: 100.0,
            think_ms: 1000,
            duration: 60.0,
        };
        // 1000 users at 100/s: all running after 10 s; user 250 starts at 2.5 s.
        assert_eq!(u.ramp_s(), 10.0);
        assert_eq!(u.start_of(250), Duration::from_millis(2500));
        // 1000 users thinking 1 s offer 1000 requests/s.
        assert_eq!(u.offered_rps(), 1000.0);
        let u = Users {
            think_ms: 250,
            users: 10,
            ..u
        };
        assert_eq!(u.offered_rps(), 40.0);
    }
}
