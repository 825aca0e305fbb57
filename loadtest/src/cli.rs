//! The command line: one subcommand per scenario, plus `compare`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::faults::{Kill, NetFault};
use crate::launch::TargetArgs;
use crate::scenarios::bank::BankArgs;
use crate::scenarios::consistency::ConsistencyArgs;
use crate::scenarios::mixed::MixedArgs;
use crate::scenarios::open_loop::OpenLoopArgs;
use crate::scenarios::stress::StressArgs;

#[derive(Parser, Debug)]
#[command(
    name = "cart-load",
    about = "Load tests for the cart API: stress, consistency, mixed and open-loop scenarios, JSON reports, and comparisons as Markdown and SVG plots."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The standard benchmark: batch_init, then N users checking out random
    /// orders with a think time.
    Stress {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        args: StressArgs,
    },
    /// The benchmark's consistency scenario and its four-number verdict.
    Consistency {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        args: ConsistencyArgs,
    },
    /// Every kind of request, drawn by weight.
    Mixed {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        args: MixedArgs,
    },
    /// Checkouts at fixed arrival rates, raised until a bound breaks.
    OpenLoop {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        args: OpenLoopArgs,
    },
    /// Reads and writes of a few stock and credit keys and checkouts of
    /// others, recorded as a history and checked: linearizable per key, the
    /// bank invariants, no acknowledged write lost (with --fault on test
    /// hosts, a Jepsen-style run).
    Bank {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        args: BankArgs,
    },
    /// Several reports side by side: comparison.md, latency.svg,
    /// throughput.svg in --out-dir.
    Compare {
        /// Report files, in the order of the table and plots.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
    },
}

/// What every scenario run takes.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The report file (default: cart-load-<scenario>-<unix time>.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The run's name in tables and plots (default: from the scenario).
    #[arg(long)]
    pub label: Option<String>,
    /// SIGKILL a process at a second of the load, e.g. stock-leader@20,
    /// order-follower@5, payment-coordinator-1@10, gateway@30 (repeatable;
    /// needs --cluster or --temp-cluster).
    #[arg(long = "kill", value_name = "PROCESS@SECOND")]
    pub kills: Vec<Kill>,
    /// Start each killed process again this many seconds later.
    #[arg(long, value_name = "SECONDS")]
    pub restart_after: Option<f64>,
    /// A network fault at a second of the load, healed some seconds later
    /// (every fault at once) or at the end: isolate:<process>,
    /// split:<process>[,<process>...], one-way:<a>,<b> (a reaches b, b's
    /// packets to a are dropped), loss<percent>:<a>,<b>,
    /// delay<ms>[~<ms>]:<a>,<b> (each way, ± jitter), bridge-down; e.g.
    /// isolate:order-leader@10+5 (repeatable; needs --temp-cluster --netns).
    #[arg(long = "fault", value_name = "FAULT@SECOND[+SECONDS]")]
    pub faults: Vec<NetFault>,
    /// Give up on one request after this long (counted as a timeout).
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Seed for the users' random draws (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Client threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}
