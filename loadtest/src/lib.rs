//! `cart-load`: load tests for the cart API (docs/api.md) against
//! any gateway, or against a cluster it starts itself through the harness
//! so that it can kill and restart processes mid-run and read their memory
//! and CPU time.
//!
//! Built on tokio and reqwest directly rather than goose: open-loop arrival
//! control and per-second HDR histograms are simpler to own than to bend a
//! closed-loop framework into, and the repository keeps one HTTP client.

pub mod cli;
pub mod client;
pub mod compare;
pub mod cpu;
pub mod faults;
pub mod launch;
pub mod machine;
pub mod plot;
pub mod procs;
pub mod progress;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenarios;
pub mod stats;
pub mod work;

use cli::{Cli, Command};
use run::Scenario;

/// Runs the command line; the process's exit status follows the result.
pub fn main_with(cli: Cli) -> anyhow::Result<()> {
    let (run, scenario) = match cli.command {
        Command::Compare { reports, out_dir } => {
            for written in compare::run(&reports, &out_dir)? {
                println!("wrote {}", written.display());
            }
            return Ok(());
        }
        Command::Stress { run, args } => (run, Scenario::Stress(args)),
        Command::Consistency { run, args } => (run, Scenario::Consistency(args)),
        Command::Mixed { run, args } => (run, Scenario::Mixed(args)),
        Command::OpenLoop { run, args } => (run, Scenario::OpenLoop(args)),
        Command::Bank { run, args } => (run, Scenario::Bank(args)),
    };
    let (report, path) = run::run(run, scenario)?;
    if let Some(h) = report.outcome.history.as_ref().filter(|h| !h.pass) {
        anyhow::bail!(
            "the history checks failed: {} keys not linearizable, {} bank violations, {} client \
             errors (report: {})",
            h.not_linearizable.len(),
            h.bank_violations.len(),
            h.client_errors.len(),
            path.display()
        );
    }
    if let Some(v) = report.outcome.verdict.filter(|v| !v.pass) {
        anyhow::bail!(
            "consistency verdict {:?} is not 0/0/0/0 (report: {})",
            v.numbers(),
            path.display()
        );
    }
    Ok(())
}
