//! One scenario run from start to report: start the cluster if asked,
//! run the scenario on a tokio runtime, and meanwhile, on this (long-lived)
//! thread, carry out the fault schedule and sample the processes' memory
//! and CPU.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};

use crate::cli::RunArgs;
use crate::client::Api;
use crate::cpu::CpuSection;
use crate::faults::Schedule;
use crate::launch;
use crate::machine::Machine;
use crate::procs::{Phase, ProcessWatch};
use crate::progress;
use crate::report::RunReport;
use crate::rng::fresh_seed;
use crate::scenarios::bank::BankArgs;
use crate::scenarios::consistency::ConsistencyArgs;
use crate::scenarios::mixed::MixedArgs;
use crate::scenarios::open_loop::OpenLoopArgs;
use crate::scenarios::stress::StressArgs;
use crate::scenarios::{self, Ctx, Outcome};
use crate::stats::{Stats, ALL};
use crate::work::WorkSection;

pub enum Scenario {
    Stress(StressArgs),
    Consistency(ConsistencyArgs),
    Mixed(MixedArgs),
    OpenLoop(OpenLoopArgs),
    Bank(BankArgs),
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Stress(_) => "stress",
            Scenario::Consistency(_) => "consistency",
            Scenario::Mixed(_) => "mixed",
            Scenario::OpenLoop(_) => "open-loop",
            Scenario::Bank(_) => "bank",
        }
    }

    fn settings(&self) -> serde_json::Value {
        let value = match self {
            Scenario::Stress(a) => serde_json::to_value(a),
            Scenario::Consistency(a) => serde_json::to_value(a),
            Scenario::Mixed(a) => serde_json::to_value(a),
            Scenario::OpenLoop(a) => serde_json::to_value(a),
            Scenario::Bank(a) => serde_json::to_value(a),
        };
        value.unwrap_or_default()
    }

    fn default_label(&self) -> String {
        match self {
            Scenario::Stress(a) => format!("{} users", a.users.users),
            Scenario::Mixed(a) => format!("mixed, {} users", a.users.users),
            other => other.name().to_string(),
        }
    }

    async fn run(self, ctx: Arc<Ctx>) -> anyhow::Result<Outcome> {
        match self {
            Scenario::Stress(a) => scenarios::stress::run(ctx, a).await,
            Scenario::Consistency(a) => scenarios::consistency::run(ctx, a).await,
            Scenario::Mixed(a) => scenarios::mixed::run(ctx, a).await,
            Scenario::OpenLoop(a) => scenarios::open_loop::run(ctx, a).await,
            Scenario::Bank(a) => scenarios::bank::run(ctx, a).await,
        }
    }
}

/// How often the processes are sampled during the load: reading 16
/// processes' /proc files costs well under a millisecond, and the CPU
/// timeline that open-loop steps are priced from is this fine.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub fn run(common: RunArgs, scenario: Scenario) -> anyhow::Result<(RunReport, PathBuf)> {
    if !common.kills.is_empty() && !common.target.launches() {
        bail!("--kill needs a cluster started by this tool (--cluster SPEC or --temp-cluster)");
    }
    if !common.faults.is_empty() && !common.target.netns {
        bail!("--fault needs a cluster on test hosts (--temp-cluster --netns)");
    }
    let machine = Machine::probe();
    // Started from this thread, which lives until the run ends: the
    // children die with the thread that started them (harness).
    let mut cluster = launch::start(&common.target)?;
    let gateway = launch::gateway_url(&common.target, cluster.as_ref());
    let cluster_desc = cluster.as_ref().map(launch::describe);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = common.threads {
        builder.worker_threads(n.max(1));
    }
    let rt = builder
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let api = Api::new(&gateway, Duration::from_secs(common.timeout_secs.max(1)))?;
    rt.block_on(api.wait_serving(Duration::from_secs(60)))?;

    let stats = Arc::new(Stats::new());
    let (begin_tx, begin_rx) = mpsc::channel();
    let seed = common.seed.unwrap_or_else(fresh_seed);
    let ctx = Arc::new(Ctx::new(api, stats.clone(), seed, begin_tx));
    let (name, settings, label) = (
        scenario.name(),
        scenario.settings(),
        common
            .label
            .clone()
            .unwrap_or_else(|| scenario.default_label()),
    );
    eprintln!("{name} against {gateway} (seed {seed})");
    let handle = rt.spawn(scenario.run(ctx.clone()));
    let progress = rt.spawn(progress::show(stats.clone()));

    let mut watch = cluster.as_ref().map(|_| ProcessWatch::new());
    if watch.is_none() {
        eprintln!(
            "no memory or CPU figures: they are read from the processes of a cluster \
             this tool starts (--cluster SPEC or --temp-cluster)"
        );
    }
    let mut schedule = Schedule::new(&common.kills, common.restart_after, &common.faults);
    let mut began = false;
    let mut last_sample = Instant::now();
    while !handle.is_finished() {
        if !began {
            match begin_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(_) => {
                    began = true;
                    if let (Some(w), Some(c)) = (watch.as_mut(), cluster.as_ref()) {
                        w.sample(c, Phase::LoadStart, stats.elapsed().as_secs_f64());
                    }
                    last_sample = Instant::now();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
            }
            continue;
        }
        let elapsed_s = stats.elapsed().as_secs_f64();
        // Also just before a fault, so that a killed process's CPU is
        // counted up to its kill.
        let sample_now = last_sample.elapsed() >= SAMPLE_EVERY || schedule.is_due(elapsed_s);
        if let (Some(w), Some(c)) = (watch.as_mut().filter(|_| sample_now), cluster.as_ref()) {
            w.sample(c, Phase::During, elapsed_s);
            last_sample = Instant::now();
        }
        if let Some(c) = cluster.as_mut() {
            if ctx.load_ended() {
                schedule.end_load(elapsed_s, c, &stats);
            }
            schedule.tick(elapsed_s, c, &stats);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let outcome = rt
        .block_on(handle)
        .map_err(|e| anyhow!("the {name} scenario panicked: {e}"))??;
    progress.abort();
    progress::finish();
    if let (Some(w), Some(c)) = (watch.as_mut(), cluster.as_ref()) {
        w.sample(c, Phase::End, stats.elapsed().as_secs_f64());
    }
    if !schedule.is_empty() {
        eprintln!("the load ended before every scheduled fault was carried out");
    }
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.saturating_sub(stats.elapsed()).as_secs())
        .unwrap_or(0);
    let report = RunReport::build(
        label,
        name,
        settings,
        gateway,
        cluster_desc,
        machine,
        started_unix_s,
        outcome,
        &stats,
        watch.as_ref(),
    );
    let path = common
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("cart-load-{name}-{started_unix_s}.json")));
    report.write(&path)?;
    print_summary(&report);
    println!("report: {}", path.display());
    if let Some(mut c) = cluster {
        c.shutdown();
    }
    Ok((report, path))
}

fn print_summary(r: &RunReport) {
    println!(
        "{} ({}): {:.1} s of load after {:.1} s of population",
        r.label, r.scenario, r.outcome.load_s, r.outcome.populate_s
    );
    for (op, s) in &r.ops {
        if op == ALL && r.ops.len() == 2 {
            continue;
        }
        println!(
            "  {op:<16} {:>8} answers  {:>7.1}/s  failed {:>6.2}%  p50 {:>7.1} ms  p99 {:>7.1} ms  p99.9 {:>7.1} ms  max {:>7.1} ms  {:?}",
            s.count,
            s.throughput_rps,
            s.failure_ratio * 100.0,
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.latency.p999_ms,
            s.latency.max_ms,
            s.by_status
        );
    }
    if let Some(s) = &r.outcome.steady {
        println!(
            "  steady state {}–{} s: offered {:.0}/s, served {:.0} ok/s ({:.1}%), first-time {:.0} ok/s",
            s.from_s,
            s.to_s,
            s.offered_rps,
            s.served_ok_rps,
            s.served_ratio * 100.0,
            s.first_time_ok_rps
        );
    }
    if !r.outcome.steps.is_empty() {
        match r.outcome.knee_rps {
            Some(k) => println!("  knee: {k:.0} first-time checkouts/s within bounds"),
            None => println!("  knee: not even the first rate stayed within bounds"),
        }
    }
    if let Some(h) = &r.outcome.history {
        println!(
            "  history: {} operations ({} unanswered) on {} keys: {}; {} orders, {} paid, {} \
             answered paid: {}",
            h.operations,
            h.unanswered,
            h.keys,
            if h.not_linearizable.is_empty() {
                "linearizable".to_string()
            } else {
                format!("NOT linearizable: {}", h.not_linearizable.join("; "))
            },
            h.orders,
            h.paid,
            h.answered_paid,
            if h.bank_violations.is_empty() {
                "the bank invariants hold".to_string()
            } else {
                format!("BROKEN: {}", h.bank_violations.join("; "))
            }
        );
        for e in &h.client_errors {
            println!("  unexpected answer: {e}");
        }
    }
    for e in &r.events {
        println!("  at {:>6.1} s  {}: {}", e.t_s, e.kind, e.detail);
    }
    for m in &r.memory {
        println!(
            "  {:<22} RSS at load start {:>7} KiB, at end {:>7} KiB, max {:>7} KiB",
            m.role,
            m.at_load_start_kib
                .map(|k| k.to_string())
                .unwrap_or("–".into()),
            m.at_end_kib.map(|k| k.to_string()).unwrap_or("–".into()),
            m.max_kib
        );
    }
    if let Some(cpu) = &r.cpu {
        print_cpu(cpu);
    }
    if let Some(work) = &r.work {
        print_work(work);
    }
    if let Some(v) = &r.outcome.verdict {
        let [a, b, c, d] = v.numbers();
        println!(
            "consistency verdict: {a} / {b} / {c} / {d} — {} ({} successes, {} refusals, {} unresolved; stock {}, credit {}, {} orders paid)",
            if v.pass { "PASS" } else { "FAIL" },
            v.successes_logged,
            v.refusals_logged,
            v.unresolved,
            v.stock_in_db,
            v.credit_in_db,
            v.orders_paid_in_db
        );
    }
}

fn ms_text(ms: Option<f64>) -> String {
    ms.map_or_else(|| "–".into(), |v| format!("{v:.2} ms"))
}

/// Entries, log syncs and requests per first-time checkout (or per
/// answer), by service.
fn print_work(w: &WorkSection) {
    for s in w.services.iter().chain([&w.total]) {
        let (per, what) = match (&s.per_first_time_ok, &s.per_answer) {
            (Some(per), _) => (per, "first-time checkout"),
            (None, Some(per)) => (per, "answer"),
            (None, None) => continue,
        };
        println!(
            "  {} nodes per {what}: {:.2} entries, {:.2} log syncs, {:.2} requests served",
            s.service, per.entries, per.log_syncs, per.requests
        );
    }
}

/// The CPU totals, cores by kind, and each open-loop step's figures.
fn print_cpu(c: &CpuSection) {
    let t = &c.total;
    let first = match t.first_time_ok {
        Some(n) => format!(
            ", {} per first-time checkout ({n} 2xx)",
            ms_text(t.cpu_ms_per_first_time_ok)
        ),
        None => String::new(),
    };
    println!(
        "  CPU {:.1} s in {:.1} s ({:.2} cores): {} per answer ({} answers){first}",
        t.cpu_s,
        c.wall_s,
        t.cores,
        ms_text(t.cpu_ms_per_answer),
        t.answered
    );
    let kinds: Vec<String> = c
        .kinds
        .iter()
        .map(|k| format!("{} {:.2}", k.kind, k.cores))
        .collect();
    println!("  cores by kind: {}", kinds.join(", "));
    for s in &c.steps {
        println!(
            "  rate {:.0}/s, {}–{} s: {:.2} cores, {} CPU per answered checkout, {} per first-time 2xx",
            s.rate,
            s.from_s,
            s.to_s,
            s.cost.cores,
            ms_text(s.cost.cpu_ms_per_answer),
            ms_text(s.cost.cpu_ms_per_first_time_ok)
        );
    }
}
