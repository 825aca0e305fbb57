//! The machine a run was measured on, from /proc: numbers mean little
//! without it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub kernel: String,
    /// /proc/loadavg's 1-minute average when the run started: a busy
    /// machine makes every figure worse.
    pub loadavg_1m_at_start: f64,
}

impl Machine {
    pub fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        Self {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu_model,
            mem_total_mib: meminfo_kib(&read("/proc/meminfo"), "MemTotal:") / 1024,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            loadavg_1m_at_start: loadavg_1m(),
        }
    }
}

pub fn loadavg_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// A "Key:   123 kB" line of /proc/meminfo or /proc/<pid>/status, in KiB.
pub fn meminfo_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l[key.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kib_values_are_read_from_proc_style_lines() {
        let status = "Name:\tcart\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(meminfo_kib(status, "VmRSS:"), 12345);
        assert_eq!(meminfo_kib(status, "VmSwap:"), 0);
    }

    #[test]
    fn this_machine_has_cores_and_memory() {
        let m = Machine::probe();
        assert!(m.cores > 0 && m.mem_total_mib > 0, "{m:?}");
    }
}
