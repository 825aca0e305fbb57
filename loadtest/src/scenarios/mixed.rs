//! `mixed`: every kind of request, drawn by weight. Each simulated user
//! keeps the users, items and open orders it created itself, so its
//! requests refer to things that exist; batch-initialised items and
//! customers give every user something to find and buy from the start.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use reqwest::Method;
use serde::Serialize;

use super::stress::Users;
use super::{sleep_until_or, Ctx, Outcome};
use cart_common::rng::SplitMix64;

/// The operations, in the order of `Weights`.
pub const OPS: [&str; 7] = [
    "create_user",
    "create_item",
    "create_order",
    "add_item",
    "find",
    "add_funds",
    "checkout",
];

/// How often each operation is drawn, relative to the others:
/// `create_user=1,create_item=1,create_order=2,add_item=4,find=6,add_funds=2,checkout=2`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Weights(pub BTreeMap<String, u32>);

impl Default for Weights {
    fn default() -> Self {
        let w = [1, 1, 2, 4, 6, 2, 2];
        Weights(OPS.iter().zip(w).map(|(o, w)| (o.to_string(), w)).collect())
    }
}

impl FromStr for Weights {
    type Err = anyhow::Error;

    /// Unnamed operations keep their default weight; 0 turns one off.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let mut w = Weights::default();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (op, n) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("{part:?}: expected <operation>=<weight>"))?;
            if !OPS.contains(&op) {
                bail!("unknown operation {op:?} (one of {})", OPS.join(", "));
            }
            let n: u32 = n
                .parse()
                .map_err(|_| anyhow!("{part:?}: weight must be a whole number"))?;
            w.0.insert(op.to_string(), n);
        }
        if w.0.values().all(|n| *n == 0) {
            bail!("every weight is 0");
        }
        Ok(w)
    }
}

impl Weights {
    /// The operation a draw in `0..total` falls on.
    pub fn pick(&self, draw: u64) -> &'static str {
        let mut left = draw % self.total().max(1);
        for op in OPS {
            let w = u64::from(self.0.get(op).copied().unwrap_or(0));
            if left < w {
                return op;
            }
            left -= w;
        }
        OPS[4]
    }

    pub fn total(&self) -> u64 {
        self.0.values().map(|w| u64::from(*w)).sum()
    }
}

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct MixedArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub users: Users,
    /// Operation weights, e.g. find=10,checkout=1.
    #[arg(long, default_value = "", value_parser = parse_weights)]
    pub weights: Weights,
    /// Items and customers created by batch_init before the load.
    #[arg(long, default_value_t = 1000)]
    pub base: u64,
}

fn parse_weights(s: &str) -> Result<Weights, String> {
    s.parse().map_err(|e: anyhow::Error| e.to_string())
}

/// What one simulated user created and may refer to.
#[derive(Default)]
struct Own {
    users: Vec<String>,
    items: Vec<String>,
    /// Orders not yet checked out, with how many items each has.
    orders: Vec<(String, u32)>,
}

pub async fn run(ctx: Arc<Ctx>, args: MixedArgs) -> anyhow::Result<Outcome> {
    let populate_started = Instant::now();
    let base = args.base.max(1);
    ctx.api
        .must_post(&format!("/stock/batch_init/{base}/1000000000/1"))
        .await?;
    ctx.api
        .must_post(&format!("/payment/batch_init/{base}/1000000000"))
        .await?;
    let populate_s = populate_started.elapsed().as_secs_f64();

    let start = ctx.begin();
    let end = start + Duration::from_secs_f64(args.users.duration);
    let think = Duration::from_millis(args.users.think_ms);
    let weights = Arc::new(args.weights.clone());
    let mut tasks = Vec::new();
    for i in 0..args.users.users {
        let at = start + args.users.start_of(i);
        if at >= end {
            break;
        }
        let (ctx, weights) = (ctx.clone(), weights.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            ctx.stats.users.fetch_add(1, Ordering::Relaxed);
            let mut rng = SplitMix64::new(ctx.seed ^ (i as u64).wrapping_mul(0x2545_f491));
            let mut own = Own::default();
            while Instant::now() < end {
                let op = weights.pick(rng.next_u64());
                step(&ctx, op, base, &mut rng, &mut own).await;
                sleep_until_or(think, end).await;
            }
            ctx.stats.users.fetch_sub(1, Ordering::Relaxed);
        }));
    }
    for t in tasks {
        t.await?;
    }
    ctx.stats.event("end", "load stopped");
    Ok(Outcome {
        load_s: start.elapsed().as_secs_f64(),
        populate_s,
        ..Default::default()
    })
}

/// What `op` becomes for a user that lacks what it needs: an order before
/// adding an item, an item in an order before checking it out.
fn feasible(op: &'static str, own: &Own) -> &'static str {
    let has_order = !own.orders.is_empty();
    let has_filled = own.orders.iter().any(|(_, n)| *n > 0);
    match op {
        "add_item" if !has_order => "create_order",
        "checkout" if !has_filled && has_order => "add_item",
        "checkout" if !has_order => "create_order",
        other => other,
    }
}

/// One operation. Failures are only counted: a user carries on.
async fn step(ctx: &Ctx, op: &'static str, base: u64, rng: &mut SplitMix64, own: &mut Own) {
    let op = feasible(op, own);
    let (api, stats) = (&ctx.api, &*ctx.stats);
    let any_user = |rng: &mut SplitMix64, own: &Own| match own.users.len() {
        n if n > 0 && rng.below(2) == 0 => own.users[rng.below(n as u64) as usize].clone(),
        _ => rng.below(base).to_string(),
    };
    let any_item = |rng: &mut SplitMix64, own: &Own| match own.items.len() {
        n if n > 0 && rng.below(2) == 0 => own.items[rng.below(n as u64) as usize].clone(),
        _ => rng.below(base).to_string(),
    };
    match op {
        "create_user" => {
            let a = api
                .timed(stats, op, Method::POST, "/payment/create_user", None)
                .await;
            if let Some(id) = a.str("user_id") {
                // A new user has no credit: fund it so it can buy.
                let path = format!("/payment/add_funds/{id}/1000000");
                api.timed(stats, "add_funds", Method::POST, &path, None)
                    .await;
                own.users.push(id);
            }
        }
        "create_item" => {
            let path = format!("/stock/item/create/{}", 1 + rng.below(10));
            let a = api.timed(stats, op, Method::POST, &path, None).await;
            if let Some(id) = a.str("item_id") {
                let path = format!("/stock/add/{id}/1000000");
                api.timed(stats, "add_stock", Method::POST, &path, None)
                    .await;
                own.items.push(id);
            }
        }
        "create_order" => {
            let user = any_user(rng, own);
            let path = format!("/orders/create/{user}");
            let a = api.timed(stats, op, Method::POST, &path, None).await;
            if let Some(id) = a.str("order_id") {
                own.orders.push((id, 0));
            }
        }
        "add_item" => {
            let k = rng.below(own.orders.len() as u64) as usize;
            let item = any_item(rng, own);
            let path = format!(
                "/orders/addItem/{}/{item}/{}",
                own.orders[k].0,
                1 + rng.below(3)
            );
            if api.timed(stats, op, Method::POST, &path, None).await.ok() {
                own.orders[k].1 += 1;
            }
        }
        "find" => {
            let path = match rng.below(3) {
                0 => format!("/stock/find/{}", any_item(rng, own)),
                1 => format!("/payment/find_user/{}", any_user(rng, own)),
                _ => match own.orders.len() {
                    0 => format!("/orders/find/{}", rng.below(base)),
                    n => format!(
                        "/orders/find/{}",
                        own.orders[rng.below(n as u64) as usize].0
                    ),
                },
            };
            let op = if path.starts_with("/stock") {
                "find_item"
            } else if path.starts_with("/payment") {
                "find_user"
            } else {
                "find_order"
            };
            api.timed(stats, op, Method::GET, &path, None).await;
        }
        "add_funds" => {
            let path = format!(
                "/payment/add_funds/{}/{}",
                any_user(rng, own),
                1 + rng.below(100)
            );
            api.timed(stats, op, Method::POST, &path, None).await;
        }
        _ => {
            let Some(k) = own.orders.iter().position(|(_, n)| *n > 0) else {
                return;
            };
            let (order, _) = own.orders.swap_remove(k);
            let path = format!("/orders/checkout/{order}");
            api.timed(stats, "checkout", Method::POST, &path, None)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_fall_on_operations_in_proportion_to_their_weights() {
        let w: Weights =
            "create_user=1,create_item=0,create_order=0,add_item=0,find=3,add_funds=0,checkout=0"
                .parse()
                .unwrap();
        assert_eq!(w.total(), 4);
        let picks: Vec<&str> = (0..4).map(|d| w.pick(d)).collect();
        assert_eq!(picks, ["create_user", "find", "find", "find"]);
        assert_eq!(Weights::default().total(), 18);
    }

    #[test]
    fn bad_weights_are_refused() {
        assert!("nope=1".parse::<Weights>().is_err());
        assert!("find=x".parse::<Weights>().is_err());
        let off = OPS.map(|o| format!("{o}=0")).join(",");
        assert!(off.parse::<Weights>().is_err());
        assert_eq!("".parse::<Weights>().unwrap(), Weights::default());
    }
}
