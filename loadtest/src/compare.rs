//! `compare`: several run reports (e.g. 100 and 1000 users) side by side,
//! as a Markdown table and SVG plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::plot;
use crate::report::RunReport;
use crate::scenarios::stress::{FIRST, REPEAT};

/// The files `compare` writes into its output directory.
pub const TABLE: &str = "comparison.md";
pub const LATENCY_PLOT: &str = "latency.svg";
pub const THROUGHPUT_PLOT: &str = "throughput.svg";

pub fn run(files: &[PathBuf], out_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(!files.is_empty(), "no report to compare");
    let runs = files
        .iter()
        .map(|f| RunReport::read(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::create_dir_all(out_dir)?;
    let table_path = out_dir.join(TABLE);
    std::fs::write(&table_path, markdown(&runs))?;
    let latency = out_dir.join(LATENCY_PLOT);
    plot::latency(&runs, &latency)?;
    let throughput = out_dir.join(THROUGHPUT_PLOT);
    plot::throughput(&runs, &throughput)?;
    Ok(vec![table_path, latency, throughput])
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn statuses(s: &crate::stats::Summary) -> String {
    let failed: Vec<String> = s
        .by_status
        .iter()
        .filter(|(k, _)| !k.starts_with('2'))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if failed.is_empty() {
        "–".into()
    } else {
        failed.join(", ")
    }
}

/// The comparison table: one row per run, then first-time against repeat
/// checkouts where the runs have them, then the machine.
pub fn markdown(runs: &[RunReport]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| run | scenario | users | load s | requests | failed | failures by status | req/s | ok/s | mean ms | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in runs {
        let a = r.all();
        let users = r
            .settings
            .get("users")
            .and_then(|u| u.as_u64())
            .map(|u| u.to_string())
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            md,
            "| {} | {} | {users} | {:.0} | {} | {:.2}% | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.scenario,
            r.outcome.load_s,
            a.count,
            a.failure_ratio * 100.0,
            statuses(&a),
            a.throughput_rps,
            a.ok_rps,
            ms(a.latency.mean_ms),
            ms(a.latency.p50_ms),
            ms(a.latency.p90_ms),
            ms(a.latency.p99_ms),
            ms(a.latency.p999_ms),
            ms(a.latency.max_ms),
        );
    }
    let with_checkouts: Vec<&RunReport> = runs
        .iter()
        .filter(|r| r.ops.contains_key(FIRST) || r.ops.contains_key(REPEAT))
        .collect();
    if !with_checkouts.is_empty() {
        let _ = writeln!(md);
        let _ = writeln!(
            md,
            "| run | checkout | count | failed | ok/s | p50 ms | p99 ms | p99.9 ms | max ms |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        for r in with_checkouts {
            for (op, name) in [(FIRST, "first-time"), (REPEAT, "repeat (already paid)")] {
                let Some(s) = r.ops.get(op) else { continue };
                let _ = writeln!(
                    md,
                    "| {} | {name} | {} | {:.2}% | {:.0} | {} | {} | {} | {} |",
                    r.label,
                    s.count,
                    s.failure_ratio * 100.0,
                    s.ok_rps,
                    ms(s.latency.p50_ms),
                    ms(s.latency.p99_ms),
                    ms(s.latency.p999_ms),
                    ms(s.latency.max_ms),
                );
            }
        }
    }
    let steady: Vec<&RunReport> = runs.iter().filter(|r| r.outcome.steady.is_some()).collect();
    if !steady.is_empty() {
        let _ = writeln!(md);
        let _ = writeln!(
            md,
            "| run | steady state | offered req/s | served ok/s | served | first-time ok/s |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for r in steady {
            if let Some(s) = &r.outcome.steady {
                let _ = writeln!(
                    md,
                    "| {} | {}–{} s | {:.0} | {:.0} | {:.1}% | {:.0} |",
                    r.label,
                    s.from_s,
                    s.to_s,
                    s.offered_rps,
                    s.served_ok_rps,
                    s.served_ratio * 100.0,
                    s.first_time_ok_rps
                );
            }
        }
    }
    for r in runs {
        if let Some(v) = &r.outcome.verdict {
            let [a, b, c, d] = v.numbers();
            let _ = writeln!(
                md,
                "\n{}: consistency verdict {a} / {b} / {c} / {d} ({}; {} successes, {} refusals, {} unresolved).",
                r.label,
                if v.pass { "pass" } else { "FAIL" },
                v.successes_logged,
                v.refusals_logged,
                v.unresolved
            );
        }
        for e in r.events.iter().filter(|e| e.kind != "end") {
            let _ = writeln!(
                md,
                "\n{}: at {:.1} s, {}: {}.",
                r.label, e.t_s, e.kind, e.detail
            );
        }
    }
    if let Some(m) = runs.first().map(|r| &r.machine) {
        let _ = writeln!(
            md,
            "\nMachine: {} cores ({}), {} MiB memory, Linux {}; 1-minute load average at the start of each run: {}.",
            m.cores,
            m.cpu_model,
            m.mem_total_mib,
            m.kernel,
            runs.iter()
                .map(|r| format!("{} {:.2}", r.label, r.machine.loadavg_1m_at_start))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    md
}
