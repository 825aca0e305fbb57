//! `compare`: several run reports (e.g. 100 and 1000 users) side by side,
//! as a Markdown table and SVG plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::cpu::CpuSection;
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

fn cpu_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

/// CPU per answer of the runs that measured it (a cluster the tool
/// started), with cores per kind of process; then each open-loop step's.
fn cpu_tables(md: &mut String, runs: &[RunReport]) {
    let measured: Vec<(&str, &CpuSection)> = runs
        .iter()
        .filter_map(|r| Some((r.label.as_str(), r.cpu.as_ref()?)))
        .collect();
    if measured.is_empty() {
        return;
    }
    // Every kind any run has, in the order the reports list them.
    let mut kinds: Vec<&str> = Vec::new();
    for k in measured.iter().flat_map(|(_, c)| &c.kinds) {
        if !kinds.contains(&k.kind.as_str()) {
            kinds.push(&k.kind);
        }
    }
    let kind_heads: String = kinds.iter().map(|k| format!(" {k} cores |")).collect();
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| run | answered | CPU s | cores | CPU ms/answer | CPU ms/first-time checkout |{kind_heads}"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|{}",
        "---|".repeat(kinds.len())
    );
    for (label, c) in &measured {
        let t = &c.total;
        let kind_cells: String = kinds
            .iter()
            .map(|k| match c.kind_cores(k) {
                Some(cores) => format!(" {cores:.2} |"),
                None => " – |".into(),
            })
            .collect();
        let _ = writeln!(
            md,
            "| {label} | {} | {:.1} | {:.2} | {} | {} |{kind_cells}",
            t.answered,
            t.cpu_s,
            t.cores,
            cpu_ms(t.cpu_ms_per_answer),
            cpu_ms(t.cpu_ms_per_first_time_ok),
        );
    }
    if measured.iter().all(|(_, c)| c.steps.is_empty()) {
        return;
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| run | rate/s | middle of the step | answered | cores | CPU ms/answered checkout | CPU ms/first-time checkout |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for (label, c) in &measured {
        for s in &c.steps {
            let _ = writeln!(
                md,
                "| {label} | {:.0} | {}–{} s | {} | {:.2} | {} | {} |",
                s.rate,
                s.from_s,
                s.to_s,
                s.cost.answered,
                s.cost.cores,
                cpu_ms(s.cost.cpu_ms_per_answer),
                cpu_ms(s.cost.cpu_ms_per_first_time_ok),
            );
        }
    }
}

/// The comparison table: one row per run, then first-time against repeat
/// checkouts where the runs have them, the steady state, the CPU per
/// answer, then the machine.
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
    cpu_tables(&mut md, runs);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{CpuCost, KindCpu, StepCpu};

    fn run(label: &str, cpu: Option<CpuSection>) -> RunReport {
        let mut r: RunReport = serde_json::from_value(serde_json::json!({
            "format": crate::report::FORMAT, "label": label, "scenario": "open-loop",
            "settings": {}, "gateway": "http://x", "cluster": null,
            "machine": crate::machine::Machine::default(), "started_unix_s": 0,
            "outcome": crate::scenarios::Outcome::default(), "ops": {}, "series": {},
            "events": [], "memory": []
        }))
        .unwrap();
        r.cpu = cpu;
        r
    }

    fn kind(kind: &str, cores: f64) -> KindCpu {
        KindCpu {
            kind: kind.into(),
            cores,
            ..Default::default()
        }
    }

    #[test]
    fn the_cpu_table_has_a_row_per_measured_run_and_a_column_per_kind() {
        let a = CpuSection {
            kinds: vec![kind("gateway", 0.1), kind("order nodes", 0.5)],
            total: CpuCost::new(30.0, 60.0, 6000, Some(5000)),
            steps: vec![StepCpu {
                rate: 100.0,
                from_s: 15,
                to_s: 45,
                cost: CpuCost::new(15.0, 30.0, 3000, Some(3000)),
            }],
            ..Default::default()
        };
        let b = CpuSection {
            kinds: vec![kind("gateway", 0.2), kind("coordinators", 0.3)],
            total: CpuCost::new(12.0, 10.0, 0, None),
            ..Default::default()
        };
        let md = markdown(&[run("a", Some(a)), run("b", Some(b)), run("by url", None)]);
        assert!(
            md.contains(
                "| run | answered | CPU s | cores | CPU ms/answer | CPU ms/first-time checkout | gateway cores | order nodes cores | coordinators cores |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| a | 6000 | 30.0 | 0.50 | 5.00 | 6.00 | 0.10 | 0.50 | – |"),
            "{md}"
        );
        assert!(
            md.contains("| b | 0 | 12.0 | 1.20 | – | – | 0.20 | – | 0.30 |"),
            "{md}"
        );
        assert!(!md.contains("| by url | 0 |"), "{md}");
        assert!(
            md.contains("| a | 100 | 15–45 s | 3000 | 0.50 | 5.00 | 5.00 |"),
            "{md}"
        );
    }

    #[test]
    fn runs_without_cpu_figures_get_no_cpu_table() {
        let md = markdown(&[run("by url", None)]);
        assert!(!md.contains("CPU"), "{md}");
    }
}
