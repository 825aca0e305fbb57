//! The processes of a launched cluster as the kernel sees them: their pid
//! (found by command line, since the harness does not hand out its
//! children's pids) and resident memory.

use std::collections::BTreeMap;
use std::path::Path;

use cart_cluster::harness::Role;
use serde::{Deserialize, Serialize};

use crate::machine::meminfo_kib;

/// Whether a command line (`cart node --service stock --id 2 ... --spec P`)
/// is the process of `role` of the cluster whose spec file is `spec`.
pub fn cmdline_is(args: &[String], spec: &str, role: Role) -> bool {
    let pair = |flag: &str, value: &str| args.windows(2).any(|w| w[0] == flag && w[1] == value);
    if !pair("--spec", spec) {
        return false;
    }
    let sub = args.get(1).map(String::as_str);
    match role {
        Role::Gateway => sub == Some("gateway"),
        Role::Coordinator(s, i) => {
            sub == Some("coordinator")
                && pair("--service", s.name())
                && pair("--index", &i.to_string())
        }
        Role::Node(s, id) => {
            sub == Some("node") && pair("--service", s.name()) && pair("--id", &id.to_string())
        }
        Role::Prometheus => false,
    }
}

/// Every running process of `roles` of the cluster of `spec_path`.
pub fn pids(spec_path: &Path, roles: &[Role]) -> BTreeMap<Role, u32> {
    let spec = spec_path.display().to_string();
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if let Some(role) = roles.iter().find(|r| cmdline_is(&args, &spec, **r)) {
            found.insert(*role, pid);
        }
    }
    found
}

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
pub struct MemoryWatch {
    spec_path: std::path::PathBuf,
    roles: Vec<Role>,
    pub by_role: BTreeMap<Role, ProcessMemory>,
}

#[derive(Clone, Copy)]
pub enum Phase {
    LoadStart,
    During,
    End,
}

impl MemoryWatch {
    pub fn new(spec_path: &Path, roles: Vec<Role>) -> Self {
        Self {
            spec_path: spec_path.to_path_buf(),
            roles,
            by_role: BTreeMap::new(),
        }
    }

    pub fn sample(&mut self, phase: Phase) {
        for (role, pid) in pids(&self.spec_path, &self.roles) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use cart_common::Service;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn command_lines_are_matched_to_their_role_and_cluster() {
        let node = args("/t/cart node --service stock --id 2 --fault-injection --spec /c/a.toml");
        assert!(cmdline_is(
            &node,
            "/c/a.toml",
            Role::Node(Service::Stock, 2)
        ));
        assert!(!cmdline_is(
            &node,
            "/c/a.toml",
            Role::Node(Service::Stock, 1)
        ));
        assert!(!cmdline_is(
            &node,
            "/c/a.toml",
            Role::Node(Service::Order, 2)
        ));
        assert!(!cmdline_is(
            &node,
            "/other.toml",
            Role::Node(Service::Stock, 2)
        ));
        let coord = args("/t/cart coordinator --service order --index 1 --spec /c/a.toml");
        assert!(cmdline_is(
            &coord,
            "/c/a.toml",
            Role::Coordinator(Service::Order, 1)
        ));
        assert!(!cmdline_is(&coord, "/c/a.toml", Role::Gateway));
        let gw = args("/t/cart gateway --spec /c/a.toml");
        assert!(cmdline_is(&gw, "/c/a.toml", Role::Gateway));
    }
}
