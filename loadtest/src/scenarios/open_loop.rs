//! `open-loop`: checkouts arrive at a fixed rate whatever the answers take
//! (no think time, no waiting for the previous answer), each on the next
//! unpaid order, so every one is a first-time checkout. The rate rises in
//! steps until p99, the failure ratio or the served rate breaks its bound;
//! the last step within bounds is the knee.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use tokio::time::MissedTickBehavior;

use super::stress::{FIRST, REPEAT};
use super::{Ctx, Outcome, Population, Step};
use crate::stats::Summary;

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct OpenLoopArgs {
    /// Rates to try in order, checkouts/s (e.g. 500,1000,2000); default:
    /// --start-rate, raised by --step-rate up to --max-rate.
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    #[arg(long, default_value_t = 250.0)]
    pub start_rate: f64,
    #[arg(long, default_value_t = 250.0)]
    pub step_rate: f64,
    #[arg(long, default_value_t = 5000.0)]
    pub max_rate: f64,
    /// Seconds per rate; the first second of each is not judged (the
    /// previous rate's answers still arrive in it).
    #[arg(long, default_value_t = 10)]
    pub step_secs: u64,
    /// A step breaks when its first-time checkouts' p99 exceeds this.
    #[arg(long, default_value_t = 100.0)]
    pub p99_bound_ms: f64,
    /// ... or more than this fraction of them fail.
    #[arg(long, default_value_t = 0.01)]
    pub failure_bound: f64,
    /// ... or fewer than this fraction of the rate is answered 2xx.
    #[arg(long, default_value_t = 0.95)]
    pub served_bound: f64,
    /// Requests in flight beyond which arrivals are dropped (and counted):
    /// the client must not grow without bound when the cluster stalls.
    #[arg(long, default_value_t = 20_000)]
    pub max_in_flight: usize,
    /// Run every rate even after one broke its bounds.
    #[arg(long)]
    pub keep_going: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub population: Population,
}

impl OpenLoopArgs {
    pub fn schedule(&self) -> Vec<f64> {
        if !self.rates.is_empty() {
            return self.rates.clone();
        }
        let mut rates = Vec::new();
        let mut r = self.start_rate;
        while r <= self.max_rate + 1e-9 && self.step_rate > 0.0 && rates.len() < 1000 {
            rates.push(r);
            r += self.step_rate;
        }
        if rates.is_empty() {
            rates.push(self.start_rate);
        }
        rates
    }

    /// Whether a step's first-time checkouts stay within the bounds, and
    /// if not, why.
    pub fn judge(&self, rate: f64, first: &Summary, dropped: u64) -> (bool, String) {
        let mut why = Vec::new();
        if first.latency.p99_ms > self.p99_bound_ms {
            why.push(format!(
                "p99 {:.1} ms > {} ms",
                first.latency.p99_ms, self.p99_bound_ms
            ));
        }
        if first.failure_ratio > self.failure_bound {
            why.push(format!(
                "failures {:.2}% > {:.2}%",
                first.failure_ratio * 100.0,
                self.failure_bound * 100.0
            ));
        }
        if first.ok_rps < rate * self.served_bound {
            why.push(format!(
                "served {:.0}/s < {:.0}% of {rate:.0}/s",
                first.ok_rps,
                self.served_bound * 100.0
            ));
        }
        if dropped > 0 {
            why.push(format!(
                "{dropped} arrivals dropped (client in-flight limit)"
            ));
        }
        (why.is_empty(), why.join("; "))
    }
}

pub async fn run(ctx: Arc<Ctx>, args: OpenLoopArgs) -> anyhow::Result<Outcome> {
    let populate_started = Instant::now();
    args.population.populate(&ctx.api).await?;
    let populate_s = populate_started.elapsed().as_secs_f64();
    let orders = args.population.orders.max(1);
    let next_order = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let step_secs = args.step_secs.max(1);

    let start = ctx.begin();
    let mut steps = Vec::new();
    for (k, rate) in args.schedule().into_iter().enumerate() {
        let from_s = k as u64 * step_secs;
        let step_start = start + Duration::from_secs(from_s);
        let step_end = step_start + Duration::from_secs(step_secs);
        ctx.stats.event("rate", format!("{rate:.0} checkouts/s"));
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let (mut issued, mut dropped) = (0u64, 0u64);
        loop {
            ticker.tick().await;
            let now = Instant::now();
            if now >= step_end {
                break;
            }
            // Arrivals due by now at this rate, whatever the answers do.
            let due = (rate * now.duration_since(step_start).as_secs_f64()) as u64;
            while issued < due {
                issued += 1;
                if in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
                    dropped += 1;
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let n = next_order.fetch_add(1, Ordering::Relaxed);
                // Past the last order the run can only repeat.
                let op = if n < orders { FIRST } else { REPEAT };
                let path = format!("/orders/checkout/{}", n % orders);
                let (ctx, in_flight) = (ctx.clone(), in_flight.clone());
                tokio::spawn(async move {
                    ctx.api
                        .timed(&ctx.stats, op, Method::POST, &path, None)
                        .await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            }
            ctx.stats
                .users
                .store(in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let to_s = from_s + step_secs;
        let first = ctx.stats.window(FIRST, (from_s + 1).min(to_s), to_s);
        let (mut within_bounds, mut why_not) = args.judge(rate, &first, dropped);
        if next_order.load(Ordering::Relaxed) > orders {
            within_bounds = false;
            why_not = format!("ran out of unpaid orders (--orders {orders}); {why_not}");
        }
        eprintln!(
            "rate {rate:.0}/s: first-time ok {:.0}/s, p99 {:.1} ms, failures {:.2}%{}",
            first.ok_rps,
            first.latency.p99_ms,
            first.failure_ratio * 100.0,
            if within_bounds {
                String::new()
            } else {
                format!(" — {why_not}")
            }
        );
        steps.push(Step {
            rate,
            from_s,
            to_s,
            dropped,
            first_time: first,
            within_bounds,
            why_not,
        });
        if !within_bounds && !args.keep_going {
            break;
        }
    }
    // Let the last arrivals finish so their answers are counted.
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctx.stats.users.store(0, Ordering::Relaxed);
    ctx.stats.event("end", "arrivals stopped");
    let knee_rps = knee(&steps);
    Ok(Outcome {
        load_s: start.elapsed().as_secs_f64(),
        populate_s,
        steps,
        knee_rps,
        ..Default::default()
    })
}

/// The highest rate reached before the first step out of bounds.
pub fn knee(steps: &[Step]) -> Option<f64> {
    steps
        .iter()
        .take_while(|s| s.within_bounds)
        .map(|s| s.rate)
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        a: OpenLoopArgs,
    }

    fn args(extra: &[&str]) -> OpenLoopArgs {
        let mut argv = vec!["x"];
        argv.extend_from_slice(extra);
        Wrap::parse_from(argv).a
    }

    #[test]
    fn rates_rise_from_start_by_step_to_max() {
        let a = args(&[
            "--start-rate",
            "500",
            "--step-rate",
            "500",
            "--max-rate",
            "2000",
        ]);
        assert_eq!(a.schedule(), vec![500.0, 1000.0, 1500.0, 2000.0]);
        let a = args(&["--rates", "100,300"]);
        assert_eq!(a.schedule(), vec![100.0, 300.0]);
    }

    #[test]
    fn a_step_breaks_on_p99_failures_or_served_rate() {
        let a = args(&[]);
        let mut s = Summary {
            ok_rps: 1000.0,
            ..Default::default()
        };
        s.latency.p99_ms = 40.0;
        assert_eq!(a.judge(1000.0, &s, 0), (true, String::new()));
        s.latency.p99_ms = 140.0;
        assert!(a.judge(1000.0, &s, 0).1.contains("p99 140.0 ms > 100 ms"));
        s.latency.p99_ms = 40.0;
        s.ok_rps = 900.0; // 90% of 1000/s served, under 95%
        assert!(a.judge(1000.0, &s, 0).1.contains("served 900/s"));
        s.ok_rps = 1000.0;
        s.failure_ratio = 0.02;
        assert!(!a.judge(1000.0, &s, 0).0);
        s.failure_ratio = 0.0;
        assert!(!a.judge(1000.0, &s, 3).0);
    }

    #[test]
    fn the_knee_is_the_last_rate_before_the_first_break() {
        let step = |rate, ok| Step {
            rate,
            within_bounds: ok,
            ..Default::default()
        };
        let steps = [
            step(500.0, true),
            step(1000.0, true),
            step(1500.0, false),
            step(2000.0, true),
        ];
        assert_eq!(knee(&steps), Some(1000.0));
        assert_eq!(knee(&[step(500.0, false)]), None);
    }
}
