//! Starts a whole local cluster as real OS processes from a cluster spec,
//! waits until it is ready, and stops it: used by the launcher (`cart up`),
//! `cart add-node`, the integration tests, the examples and the load test
//! alike. This module owns the processes (start, signal, stop, pids, logs);
//! waiting on them is in `readiness`, the spec, ports and binary in
//! `layout`, the on-disk membership in `members`, and the rule for test
//! tools that may be missing in `tools`. Every process logs to
//! `<data_dir>/logs/<name>.log`. Dropping a `LocalCluster` kills every
//! process it started, also when a test panics.
//!
//! Children ask the kernel to signal them when their parent *thread* exits
//! (`PR_SET_PDEATHSIG`), so start processes from a long-lived thread (the
//! main thread, or the test's own thread), not from a short-lived blocking
//! pool thread.

mod layout;
mod members;
pub mod netns;
mod readiness;
mod tools;

pub use layout::{cart_binary, temp_spec, DEFAULT_SPEC};
pub use members::{node_ids, REMOVED_MARKER};
pub use readiness::{http_get, ERROR_PREFIX};
pub use tools::{find_tool, missing, require_tool, under_ci, INSTALL_TOOLS};

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use cart_common::spec::NodeId;
use cart_common::{ClusterSpec, Service};

/// When set, a temporary cluster dropped while its test panics keeps its
/// directory (spec, data and logs) and prints where it is.
pub const KEEP_FAILED_ENV: &str = "KEEP_FAILED_CLUSTERS";

/// One process of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Gateway,
    Coordinator(Service, u16),
    Node(Service, NodeId),
    /// A Prometheus scraping the cluster (`start_prometheus`).
    Prometheus,
}

impl Role {
    pub fn name(&self) -> String {
        match self {
            Role::Gateway => "gateway".into(),
            Role::Coordinator(s, i) => format!("{s}-coordinator-{i}"),
            Role::Node(s, id) => format!("{s}-node-{id}"),
            Role::Prometheus => "prometheus".into(),
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            Role::Gateway => vec!["gateway".into()],
            Role::Coordinator(s, i) => vec![
                "coordinator".into(),
                "--service".into(),
                s.to_string(),
                "--index".into(),
                i.to_string(),
            ],
            Role::Node(s, id) => vec![
                "node".into(),
                "--service".into(),
                s.to_string(),
                "--id".into(),
                id.to_string(),
            ],
            // Built by `start_prometheus`.
            Role::Prometheus => vec![],
        }
    }
}

struct Proc {
    child: Option<Child>,
    stopped: bool,
}

pub struct LocalCluster {
    pub spec: ClusterSpec,
    pub spec_path: PathBuf,
    bin: PathBuf,
    services: Vec<Service>,
    /// Extra arguments for every node process (e.g. `--fault-injection`).
    node_args: Vec<String>,
    /// Environment of one process from its next start (`set_env`).
    env: BTreeMap<Role, Vec<(String, String)>>,
    procs: BTreeMap<Role, Proc>,
    /// Test hosts, when every process runs in a network namespace of its
    /// own (`start_temp_in_netns`); dropped after the processes are killed.
    net: Option<netns::TestNet>,
    _tmp: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Starts every process the spec file names for `services` (plus the
    /// gateway), using the `cart` binary at `bin`.
    pub fn start(spec_path: &Path, bin: &Path, services: &[Service]) -> anyhow::Result<Self> {
        Self::start_with(spec_path, bin, services, &[])
    }

    /// As `start`, passing `node_args` to every node process.
    pub fn start_with(
        spec_path: &Path,
        bin: &Path,
        services: &[Service],
        node_args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut cluster = Self::unstarted(spec_path, bin, services, node_args)?;
        cluster.start_all()?;
        Ok(cluster)
    }

    fn unstarted(
        spec_path: &Path,
        bin: &Path,
        services: &[Service],
        node_args: &[&str],
    ) -> anyhow::Result<Self> {
        Ok(Self {
            spec: ClusterSpec::load(spec_path)?,
            spec_path: spec_path.to_path_buf(),
            bin: bin.to_path_buf(),
            services: services.to_vec(),
            node_args: node_args.iter().map(|a| a.to_string()).collect(),
            env: BTreeMap::new(),
            procs: BTreeMap::new(),
            net: None,
            _tmp: None,
        })
    }

    /// Starts every process of the cluster (again, after `shutdown`).
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.spec.log_dir())?;
        for role in self.roles() {
            self.start_process(role)?;
        }
        Ok(())
    }

    /// A cluster for a test: the repository's default spec, adjusted by
    /// `tweak`, on free ports in a fresh temporary directory.
    pub fn start_temp(
        bin: &Path,
        services: &[Service],
        tweak: impl FnOnce(&mut ClusterSpec),
    ) -> anyhow::Result<Self> {
        Self::start_temp_with(bin, services, tweak, &[])
    }

    /// As `start_temp`, passing `node_args` to every node process.
    pub fn start_temp_with(
        bin: &Path,
        services: &[Service],
        tweak: impl FnOnce(&mut ClusterSpec),
        node_args: &[&str],
    ) -> anyhow::Result<Self> {
        let (tmp, spec_path) = temp_spec(tweak)?;
        let mut cluster = Self::start_with(&spec_path, bin, services, node_args)?;
        cluster._tmp = Some(tmp);
        Ok(cluster)
    }

    /// As `start_temp`, with every process in a network namespace of its
    /// own at an address of its own on a bridge (`netns`), so that tests can
    /// cut and heal the links between them (`net`). Needs root, `ip` and
    /// `nft` (`netns::TestNet::missing_tool`).
    pub fn start_temp_in_netns(
        bin: &Path,
        services: &[Service],
        tweak: impl FnOnce(&mut ClusterSpec),
    ) -> anyhow::Result<Self> {
        let (tmp, spec_path) = temp_spec(tweak)?;
        let mut cluster = Self::unstarted(&spec_path, bin, services, &[])?;
        cluster._tmp = Some(tmp);
        let names: Vec<String> = cluster.roles().iter().map(Role::name).collect();
        let net = netns::TestNet::create(&names)?;
        cluster.spec.cluster.hosts = net.addresses();
        cluster.net = Some(net);
        std::fs::write(&spec_path, cluster.spec.to_toml())?;
        cluster.start_all()?;
        Ok(cluster)
    }

    /// The test hosts and their faults, for a cluster started in network
    /// namespaces.
    pub fn net(&mut self) -> Option<&mut netns::TestNet> {
        self.net.as_mut()
    }

    /// A handle on a running cluster that starts nothing by itself, for
    /// starting single processes (`cart add-node`).
    pub fn attach(spec_path: &Path, bin: &Path) -> anyhow::Result<Self> {
        let cluster = Self::unstarted(spec_path, bin, &[], &[])?;
        std::fs::create_dir_all(cluster.spec.log_dir())?;
        Ok(cluster)
    }

    /// The services this cluster runs.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Every process of this cluster: nodes, coordinators, then the gateway.
    pub fn roles(&self) -> Vec<Role> {
        let mut roles = Vec::new();
        for &s in &self.services {
            roles.extend(
                node_ids(&self.spec, s)
                    .into_iter()
                    .map(|id| Role::Node(s, id)),
            );
        }
        for &s in &self.services {
            roles.extend(
                self.spec
                    .coordinators(s)
                    .into_iter()
                    .map(|c| Role::Coordinator(s, c.index)),
            );
        }
        roles.push(Role::Gateway);
        roles
    }

    pub fn log_path(&self, role: Role) -> PathBuf {
        self.spec.log_dir().join(format!("{}.log", role.name()))
    }

    /// The address a process listens on (for coordinators and the gateway,
    /// their admin port, where `/ready` is).
    pub fn admin_addr(&self, role: Role) -> String {
        match role {
            Role::Gateway => self.spec.gateway_admin_addr(),
            Role::Coordinator(s, i) => self
                .spec
                .coordinator(s, i)
                .map(|c| c.admin)
                .unwrap_or_default(),
            Role::Node(s, id) => self.spec.node_addr(s, id).unwrap_or_default(),
            Role::Prometheus => self.spec.prometheus_addr(),
        }
    }

    pub fn gateway_url(&self) -> String {
        self.spec.gateway_url()
    }

    /// Starts a Prometheus scraping this cluster every `interval_secs` with
    /// the alert rules (`crate::prometheus`); its URL.
    pub fn start_prometheus(&mut self, interval_secs: u64) -> anyhow::Result<String> {
        let bin = crate::prometheus::binary()
            .ok_or_else(|| anyhow!("no prometheus on PATH (scripts/install-prometheus)"))?;
        let config = crate::prometheus::write_config(&self.spec, &self.services, interval_secs)?;
        let args = crate::prometheus::args(&self.spec, &config);
        self.spawn(Role::Prometheus, &bin, &args)?;
        Ok(format!("http://{}", self.spec.prometheus_addr()))
    }

    /// (Re)starts one process, appending to its log file.
    pub fn start_process(&mut self, role: Role) -> anyhow::Result<()> {
        let extra: &[String] = match role {
            Role::Node(..) => &self.node_args,
            _ => &[],
        };
        let mut args = role.args();
        args.extend(extra.iter().cloned());
        args.push("--spec".into());
        args.push(self.spec_path.display().to_string());
        let bin = self.bin.clone();
        self.spawn(role, &bin, &args)
    }

    /// Sets an environment variable of `role` from its next start, e.g. a
    /// `CART_<SECTION>_<KEY>` spec override for one process only.
    pub fn set_env(&mut self, role: Role, key: &str, value: &str) {
        self.env
            .entry(role)
            .or_default()
            .push((key.to_string(), value.to_string()));
    }

    fn spawn(&mut self, role: Role, bin: &Path, args: &[String]) -> anyhow::Result<()> {
        let log_path = self.log_path(role);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        // In its test host's namespace, if it has one (`ip netns exec`
        // execs the program: the pid is the program's).
        let host = self.net.as_ref().and_then(|n| n.host(&role.name()));
        let mut command = match host {
            Some(h) => {
                let mut c = Command::new(netns::ip_program());
                c.args(["netns", "exec", &h.netns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        command
            .args(args)
            .envs(self.env.get(&role).into_iter().flatten().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Programs that do not ask for it themselves (Prometheus) die with
        // us too.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {} from {}", role.name(), bin.display()))?;
        self.procs.insert(
            role,
            Proc {
                child: Some(child),
                stopped: false,
            },
        );
        Ok(())
    }

    fn signal(&mut self, role: Role, signal: i32) -> anyhow::Result<()> {
        let proc = self
            .procs
            .get_mut(&role)
            .ok_or_else(|| anyhow!("{} not started", role.name()))?;
        let child = proc
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("{} not running", role.name()))?;
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(child.id() as i32, signal) };
        if rc != 0 {
            bail!(
                "signal {signal} to {}: {}",
                role.name(),
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(&mut self, role: Role) -> anyhow::Result<()> {
        self.signal(role, libc::SIGKILL)?;
        if let Some(mut child) = self.procs.get_mut(&role).and_then(|p| p.child.take()) {
            child.wait()?;
        }
        Ok(())
    }

    /// SIGSTOP: the process is frozen, its sockets stay open (a hang).
    pub fn freeze(&mut self, role: Role) -> anyhow::Result<()> {
        self.signal(role, libc::SIGSTOP)?;
        if let Some(p) = self.procs.get_mut(&role) {
            p.stopped = true;
        }
        Ok(())
    }

    pub fn thaw(&mut self, role: Role) -> anyhow::Result<()> {
        self.signal(role, libc::SIGCONT)?;
        if let Some(p) = self.procs.get_mut(&role) {
            p.stopped = false;
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if the process has not exited within `grace`.
    pub fn terminate(&mut self, role: Role, grace: Duration) -> anyhow::Result<()> {
        let Some(proc) = self.procs.get_mut(&role) else {
            return Ok(());
        };
        let Some(mut child) = proc.child.take() else {
            return Ok(());
        };
        if proc.stopped {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
        }
        // SAFETY: as in `signal`.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait()?;
        Ok(())
    }

    /// Stops every process gracefully (SIGTERM, then SIGKILL after a grace
    /// period), gateway first, nodes last.
    pub fn shutdown(&mut self) {
        let roles: Vec<Role> = self.procs.keys().rev().copied().collect();
        for role in roles {
            if let Err(e) = self.terminate(role, Duration::from_secs(10)) {
                eprintln!("stopping {}: {e}", role.name());
            }
        }
    }

    /// The pid of a running process this cluster started.
    pub fn pid(&self, role: Role) -> Option<u32> {
        self.procs.get(&role)?.child.as_ref().map(Child::id)
    }

    /// The pid of every running process this cluster started.
    pub fn pids(&self) -> BTreeMap<Role, u32> {
        self.procs
            .keys()
            .filter_map(|role| Some((*role, self.pid(*role)?)))
            .collect()
    }

    /// The last `lines` lines of a process's log, for failure messages.
    pub fn log_tail(&self, role: Role, lines: usize) -> String {
        let path = self.log_path(role);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("--- {} ---\n{tail}", path.display())
    }

    /// Whether the process has exited (and is reaped).
    pub fn has_exited(&mut self, role: Role) -> bool {
        match self.procs.get_mut(&role).and_then(|p| p.child.as_mut()) {
            None => true,
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for proc in self.procs.values_mut() {
            if let Some(mut child) = proc.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // A failing test's cluster is kept for its logs when asked to.
        if std::thread::panicking() && std::env::var_os(KEEP_FAILED_ENV).is_some() {
            if let Some(tmp) = self._tmp.take() {
                eprintln!("{KEEP_FAILED_ENV}: kept {}", tmp.keep().display());
            }
        }
    }
}
