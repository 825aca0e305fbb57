//! The resident memory of a launched cluster's processes over a run, by
//! the pids the harness hands out.

use std::collections::BTreeMap;

use cart_cluster::harness::{LocalCluster, Role};
use serde::{Deserialize, Serialize};

use crate::machine::meminfo_kib;

/// Resident memory of a live process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(meminfo_kib(&status, "VmRSS:")).filter(|k| *k > 0)
}

/// One process's resident memory over a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessMemory {
    pub role: String,
    /// After population, when the load began.
    pub at_load_start_kib: Option<u64>,
    /// When the load ended.
    pub at_end_kib: Option<u64>,
    /// The most seen in any sample (every few seconds).
    pub max_kib: u64,
}

/// Samples every process of a launched cluster now and then.
#[derive(Default)]
pub struct MemoryWatch {
    pub by_role: BTreeMap<Role, ProcessMemory>,
}

#[derive(Clone, Copy)]
pub enum Phase {
    LoadStart,
    During,
    End,
}

impl MemoryWatch {
    /// Every running process of `cluster`, now.
    pub fn sample(&mut self, cluster: &LocalCluster, phase: Phase) {
        for (role, pid) in cluster.pids() {
            let Some(kib) = rss_kib(pid) else { continue };
            let m = self.by_role.entry(role).or_insert_with(|| ProcessMemory {
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
    }

    pub fn report(&self) -> Vec<ProcessMemory> {
        self.by_role.values().cloned().collect()
    }
}
