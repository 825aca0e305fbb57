//! The report of one run, as a JSON file: settings, machine, whole-run
//! summaries per operation, per-second series, fault events, process
//! memory and CPU, what the nodes did (entries, log syncs, requests), and
//! what the scenario adds (steady state, steps, verdict).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cpu::CpuSection;
use crate::machine::Machine;
use crate::procs::{ProcessMemory, ProcessWatch};
use crate::scenarios::stress::FIRST;
use crate::scenarios::Outcome;
use crate::stats::{Event, SecondPoint, Stats, Summary, ALL};
use crate::work::WorkSection;

/// Bumped when a field changes meaning, so `compare` can refuse old files.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    pub format: u32,
    /// A name for the run in tables and plots ("100 users").
    pub label: String,
    pub scenario: String,
    /// The command line's settings, as given.
    pub settings: serde_json::Value,
    pub gateway: String,
    /// The cluster this tool started, if it did.
    pub cluster: Option<String>,
    pub machine: Machine,
    /// Unix time when the load began.
    pub started_unix_s: u64,
    pub outcome: Outcome,
    /// Whole-run summary per operation, and of everything under "all".
    pub ops: BTreeMap<String, Summary>,
    /// Second-by-second series per operation (and "all").
    pub series: BTreeMap<String, Vec<SecondPoint>>,
    pub events: Vec<Event>,
    pub memory: Vec<ProcessMemory>,
    /// The cluster's CPU during the load; only when this tool started the
    /// cluster (absent too from reports older than the section).
    #[serde(default)]
    pub cpu: Option<CpuSection>,
    /// What the nodes did during the load (entries, log syncs, requests);
    /// only when this tool started the cluster.
    #[serde(default)]
    pub work: Option<WorkSection>,
}

impl RunReport {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        label: String,
        scenario: &str,
        settings: serde_json::Value,
        gateway: String,
        cluster: Option<String>,
        machine: Machine,
        started_unix_s: u64,
        outcome: Outcome,
        stats: &Stats,
        watch: Option<&ProcessWatch>,
    ) -> Self {
        let window = Duration::from_secs_f64(outcome.load_s.max(0.0));
        // Seconds in which answers may have completed (a last partial one
        // included, and a few more for answers that came in after the end).
        let seconds = outcome.load_s.ceil() as u64;
        let mut ops = BTreeMap::new();
        let mut series = BTreeMap::new();
        for op in stats.ops() {
            ops.insert(op.to_string(), stats.summary(op, window));
            series.insert(op.to_string(), stats.series(op, seconds));
        }
        if !ops.contains_key(ALL) {
            ops.insert(ALL.to_string(), Summary::default());
        }
        let cpu = watch.map(|w| CpuSection::build(&w.cpu, stats, &ops, &outcome.steps));
        let work = watch.map(|w| {
            let answered = ops.get(ALL).map_or(0, Summary::answered);
            w.work.section(answered, ops.get(FIRST).map(|s| s.ok))
        });
        Self {
            format: FORMAT,
            label,
            scenario: scenario.to_string(),
            settings,
            gateway,
            cluster,
            machine,
            started_unix_s,
            outcome,
            ops,
            series,
            events: stats.events(),
            memory: watch.map(ProcessWatch::memory).unwrap_or_default(),
            cpu,
            work,
        }
    }

    pub fn all(&self) -> Summary {
        self.ops.get(ALL).cloned().unwrap_or_default()
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let report: RunReport = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a cart-load report", path.display()))?;
        anyhow::ensure!(
            report.format == FORMAT,
            "{}: report format {} (this tool reads {FORMAT})",
            path.display(),
            report.format
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuAccount;
    use crate::procs::CpuTimes;
    use crate::stats::Status;
    use cart_cluster::harness::Role;
    use cart_common::Service;

    #[test]
    fn a_report_round_trips_through_its_json_file() {
        let stats = Stats::new();
        stats.record_at(
            Duration::from_millis(300),
            "checkout_first",
            Duration::from_millis(4),
            Status::Http(200),
        );
        stats.record_at(
            Duration::from_millis(1300),
            "checkout_first",
            Duration::from_millis(6),
            Status::Http(503),
        );
        let outcome = Outcome {
            load_s: 2.0,
            ..Default::default()
        };
        let mut watch = ProcessWatch::new();
        // 100 ticks a second, whatever this machine's clock.
        watch.cpu = CpuAccount::new(100.0);
        let node = Role::Node(Service::Order, 1);
        for (t, used) in [(0, 100), (2, 300)] {
            let times = CpuTimes {
                used_ticks: used,
                start_ticks: 1,
            };
            watch.cpu.record(node, 7, times, t == 0);
            watch.cpu.mark(t as f64);
        }
        let report = RunReport::build(
            "t".into(),
            "stress",
            serde_json::json!({"users": 1}),
            "http://x".into(),
            None,
            Machine::default(),
            0,
            outcome,
            &stats,
            Some(&watch),
        );
        assert_eq!(report.all().count, 2);
        assert_eq!(report.ops["checkout_first"].by_status["503"], 1);
        // One answer per second over 2 s.
        assert_eq!(report.all().throughput_rps, 1.0);
        assert_eq!(report.series[ALL].len(), 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        report.write(&path).unwrap();
        let back = RunReport::read(&path).unwrap();
        assert_eq!(back.all().count, 2);
        assert_eq!(
            back.series[ALL].iter().map(|p| p.count).collect::<Vec<_>>(),
            [1, 1]
        );
        assert_eq!(back.settings, report.settings);
        // 200 ticks of CPU over 2 s for 2 answers, 1 first-time 2xx.
        let cpu = back.cpu.as_ref().expect("a cpu section");
        assert_eq!(back.cpu, report.cpu);
        assert_eq!((cpu.total.cpu_s, cpu.total.cores), (2.0, 1.0));
        assert_eq!(cpu.total.cpu_ms_per_answer, Some(1000.0));
        assert_eq!(cpu.total.cpu_ms_per_first_time_ok, Some(2000.0));
        assert_eq!(cpu.kinds[0].kind, "order nodes");
    }

    #[test]
    fn a_report_without_a_cpu_section_still_reads() {
        let report = RunReport::build(
            "t".into(),
            "stress",
            serde_json::Value::Null,
            "http://x".into(),
            None,
            Machine::default(),
            0,
            Outcome::default(),
            &Stats::new(),
            None,
        );
        let mut json = serde_json::to_value(&report).unwrap();
        json.as_object_mut().unwrap().remove("cpu");
        let back: RunReport = serde_json::from_value(json).unwrap();
        assert_eq!(back.cpu, None);
    }
}
