//! The processes of a launched cluster over a run, by the pids the harness
//! hands out: each one's resident memory and CPU time, read from /proc at
//! the same moments.

use std::collections::BTreeMap;

use cart_cluster::harness::{LocalCluster, Role};
use serde::{Deserialize, Serialize};

use crate::cpu::CpuAccount;
use crate::machine::meminfo_kib;
use crate::work::WorkWatch;

/// Resident memory of a live process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(meminfo_kib(&status, "VmRSS:")).filter(|k| *k > 0)
}

/// A process's CPU time so far and when it started, both in clock ticks
/// (`/proc/<pid>/stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// utime + stime: user and kernel time of every thread, dead ones
    /// included (waited-for children are not: the cluster's processes
    /// start none).
    pub used_ticks: u64,
    /// Since boot. With the pid it names one process: a pid the kernel
    /// hands out again belongs to another start time.
    pub start_ticks: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The second field, the command
/// name in parentheses, may itself hold spaces and ')', so the fields are
/// counted from after the *last* ')': the state there is field 3, utime
/// and stime fields 14 and 15, the start time field 22 (proc(5)).
pub fn parse_stat(text: &str) -> Option<CpuTimes> {
    let (_, after_comm) = text.rsplit_once(')')?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Field n (1-based) is at index n - 3 after the command name.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(CpuTimes {
        used_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
    })
}

/// CPU times of a live process.
pub fn cpu_times(pid: u32) -> Option<CpuTimes> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// One process's resident memory over a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessMemory {
    pub role: String,
    /// After population, when the load began.
    pub at_load_start_kib: Option<u64>,
    /// When the load ended.
    pub at_end_kib: Option<u64>,
    /// The most seen in any sample (every second).
    pub max_kib: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    LoadStart,
    During,
    End,
}

/// Samples every process of a launched cluster now and then: memory per
/// role, CPU per process (see `CpuAccount`), and at load start and end
/// what the nodes did (see `WorkWatch`).
pub struct ProcessWatch {
    memory: BTreeMap<Role, ProcessMemory>,
    pub cpu: CpuAccount,
    /// The nodes' own counts of entries, log syncs and requests, read at
    /// load start and end only (an HTTP scrape of every node).
    pub work: WorkWatch,
}

impl ProcessWatch {
    pub fn new() -> Self {
        Self {
            memory: BTreeMap::new(),
            cpu: CpuAccount::new(crate::cpu::clock_ticks_per_s()),
            work: WorkWatch::default(),
        }
    }

    /// Every running process of `cluster`, now, `t_s` after the load began.
    pub fn sample(&mut self, cluster: &LocalCluster, phase: Phase, t_s: f64) {
        for (role, pid) in cluster.pids() {
            if let Some(kib) = rss_kib(pid) {
                self.record_memory(role, phase, kib);
            }
            if let Some(times) = cpu_times(pid) {
                self.cpu.record(role, pid, times, phase == Phase::LoadStart);
            }
        }
        self.cpu.mark(t_s);
        if phase != Phase::During {
            self.work.read(cluster, phase == Phase::LoadStart);
        }
    }

    fn record_memory(&mut self, role: Role, phase: Phase, kib: u64) {
        let m = self.memory.entry(role).or_insert_with(|| ProcessMemory {
            role: role.name(),
            ..Default::default()
        });
        m.max_kib = m.max_kib.max(kib);
        match phase {
            Phase::LoadStart => m.at_load_start_kib = Some(kib),
            Phase::End => m.at_end_kib = Some(kib),
            Phase::During => {}
        }
    }

    pub fn memory(&self) -> Vec<ProcessMemory> {
        self.memory.values().cloned().collect()
    }
}

impl Default for ProcessWatch {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /proc/<pid>/stat line with `comm` as the command name, utime 120,
    /// stime 30 and start time 4567 (the other numbers are placeholders).
    fn stat_line(comm: &str) -> String {
        format!(
            "4242 ({comm}) S 1 4242 4242 0 -1 4194560 2000 0 0 0 120 30 0 0 20 0 9 0 4567 \
             123456789 3000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
        )
    }

    #[test]
    fn stat_gives_utime_plus_stime_and_the_start_time() {
        let t = parse_stat(&stat_line("cart")).unwrap();
        assert_eq!(
            t,
            CpuTimes {
                used_ticks: 150,
                start_ticks: 4567
            }
        );
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let expected = parse_stat(&stat_line("cart")).unwrap();
        for comm in ["tokio-rt worker", "a) b (c", ") 7 8 9 (", "x))"] {
            assert_eq!(parse_stat(&stat_line(comm)), Some(expected), "{comm:?}");
        }
    }

    #[test]
    fn a_truncated_or_garbled_stat_is_no_reading() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("4242 (cart S 1 2 3"), None);
        assert_eq!(
            parse_stat("4242 (cart) S 1 4242 4242 0 -1 0 0 0 0 0 120"),
            None
        );
        let garbled = stat_line("cart").replace(" 120 30 ", " 120 x ");
        assert_eq!(parse_stat(&garbled), None);
    }

    #[test]
    fn this_process_has_cpu_times() {
        let t = cpu_times(std::process::id()).unwrap();
        assert!(t.start_ticks > 0, "{t:?}");
    }
}
