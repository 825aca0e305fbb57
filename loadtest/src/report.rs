//! The report of one run, as a JSON file: settings, machine, whole-run
//! summaries per operation, per-second series, fault events, process
//! memory and what the scenario adds (steady state, steps, verdict).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::procs::ProcessMemory;
use crate::scenarios::Outcome;
use crate::stats::{Event, SecondPoint, Stats, Summary, ALL};

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
        memory: Vec<ProcessMemory>,
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
            memory,
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
    use crate::stats::Status;

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
            vec![],
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
    }
}
