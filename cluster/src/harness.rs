//! Starts a whole local cluster as real OS processes from a cluster spec,
//! waits until it is ready, and stops it: used by the launcher (`cart up`),
//! the integration tests and the load test alike. Every process logs to
//! `<data_dir>/logs/<name>.log`. Dropping a `LocalCluster` kills every
//! process it started, also when a test panics.
//!
//! Children ask the kernel to signal them when their parent *thread* exits
//! (`PR_SET_PDEATHSIG`), so start processes from a long-lived thread (the
//! main thread, or the test's own thread), not from a short-lived blocking
//! pool thread.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use cart_common::spec::NodeId;
use cart_common::{ClusterSpec, Service};
use cart_services::api::{NodeStatus, READY_PATH, STATUS_PATH};

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
        let spec = ClusterSpec::load(spec_path)?;
        let mut cluster = Self {
            spec,
            spec_path: spec_path.to_path_buf(),
            bin: bin.to_path_buf(),
            services: services.to_vec(),
            node_args: node_args.iter().map(|a| a.to_string()).collect(),
            env: BTreeMap::new(),
            procs: BTreeMap::new(),
            _tmp: None,
        };
        cluster.start_all()?;
        Ok(cluster)
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

    /// A handle on a running cluster that starts nothing by itself, for
    /// starting single processes (`cart add-node`).
    pub fn attach(spec_path: &Path, bin: &Path) -> anyhow::Result<Self> {
        let spec = ClusterSpec::load(spec_path)?;
        std::fs::create_dir_all(spec.log_dir())?;
        Ok(Self {
            spec,
            spec_path: spec_path.to_path_buf(),
            bin: bin.to_path_buf(),
            services: vec![],
            node_args: vec![],
            env: BTreeMap::new(),
            procs: BTreeMap::new(),
            _tmp: None,
        })
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
        let mut command = Command::new(bin);
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

    /// Whether the process has exited (and is reaped).
    pub fn has_exited(&mut self, role: Role) -> bool {
        match self.procs.get_mut(&role).and_then(|p| p.child.as_mut()) {
            None => true,
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
        }
    }

    /// Waits until every running process answers its readiness endpoint
    /// (nodes: their group has a leader).
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let roles: Vec<Role> = self
            .procs
            .iter()
            .filter(|(_, p)| p.child.is_some())
            .map(|(r, _)| *r)
            .collect();
        for role in roles {
            let addr = self.admin_addr(role);
            loop {
                if self.has_exited(role) {
                    bail!(
                        "{} exited; see {}",
                        role.name(),
                        self.log_path(role).display()
                    );
                }
                let path = match role {
                    Role::Prometheus => "/-/ready",
                    _ => READY_PATH,
                };
                if matches!(
                    http_get(&addr, path, Duration::from_millis(500)),
                    Ok((200, _))
                ) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} not ready at {addr}; see {}",
                        role.name(),
                        self.log_path(role).display()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// The last `lines` lines of a process's log, for failure messages.
    pub fn log_tail(&self, role: Role, lines: usize) -> String {
        let path = self.log_path(role);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("--- {} ---\n{tail}", path.display())
    }

    pub fn node_status(&self, service: Service, id: NodeId) -> Option<NodeStatus> {
        let addr = self.spec.node_addr(service, id)?;
        let (code, body) = http_get(&addr, STATUS_PATH, Duration::from_millis(500)).ok()?;
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// The leader as a majority of reachable nodes of the spec report it.
    pub fn leader(&self, service: Service) -> Option<NodeId> {
        let nodes = self.spec.nodes(service);
        let mut votes: BTreeMap<NodeId, usize> = BTreeMap::new();
        for n in &nodes {
            if let Some(l) = self.node_status(service, n.id).and_then(|s| s.leader) {
                *votes.entry(l).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .find(|(_, v)| *v > nodes.len() / 2)
            .map(|(l, _)| l)
    }

    /// Polls until `pred` holds, or fails after `timeout`.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Self) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = pred(self) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
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
    }
}

/// The `cart` binary of the build this program belongs to: examples and
/// tests of other packages live in `target/<profile>/{examples,deps}/`,
/// the binary in `target/<profile>/`.
pub fn cart_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("cart"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "no cart binary near {}: build it first (cargo build [--release] -p cart-cluster --bins)",
                exe.display()
            )
        })
}

/// Written into a node's data dir when the node leaves its group, so the
/// launcher does not start it again.
pub const REMOVED_MARKER: &str = "REMOVED";

/// The nodes of `service` to run: the spec's, plus nodes added at run time
/// (they have a data dir), minus nodes removed from the group (marked).
/// The group's membership, persisted in its log, is what counts; this list
/// only decides which processes to start.
pub fn node_ids(spec: &ClusterSpec, service: Service) -> Vec<NodeId> {
    let mut ids: std::collections::BTreeSet<NodeId> =
        spec.nodes(service).into_iter().map(|n| n.id).collect();
    let prefix = format!("{service}-node-");
    if let Ok(entries) = std::fs::read_dir(&spec.cluster.data_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let id = name.strip_prefix(&prefix).and_then(|i| i.parse().ok());
            if let Some(id) = id.filter(|id| spec.node_addr(service, *id).is_some()) {
                ids.insert(id);
            }
        }
    }
    ids.retain(|id| {
        !spec
            .node_data_dir(service, *id)
            .join(REMOVED_MARKER)
            .exists()
    });
    ids.into_iter().collect()
}

/// The repository's default cluster spec (`cluster.toml`).
pub const DEFAULT_SPEC: &str = include_str!("../../cluster.toml");

/// Writes the default spec, adjusted by `tweak`, with its data dir inside a
/// fresh temporary directory and a base port whose whole layout is free.
/// Returns the directory (removed when dropped) and the spec file's path.
pub fn temp_spec(
    tweak: impl FnOnce(&mut ClusterSpec),
) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let tmp = tempfile::Builder::new().prefix("cart-cluster-").tempdir()?;
    let mut spec = ClusterSpec::from_toml(DEFAULT_SPEC)?;
    spec.cluster.data_dir = tmp.path().join("data");
    tweak(&mut spec);
    spec.cluster.base_port = free_base_port(&spec)?;
    let spec_path = tmp.path().join("cluster.toml");
    std::fs::write(&spec_path, spec.to_toml())?;
    Ok((tmp, spec_path))
}

/// A base port whose whole layout is free right now.
fn free_base_port(spec: &ClusterSpec) -> anyhow::Result<u16> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let seed = u64::from(std::process::id()) ^ nanos;
    let mut probe = spec.clone();
    for attempt in 0..200u64 {
        // Below Linux's ephemeral range (32768..): outgoing connections of
        // already running processes never take these ports meanwhile.
        let slot = (seed.wrapping_mul(31).wrapping_add(attempt * 7919)) % 44;
        probe.cluster.base_port = 10_000 + (slot as u16) * 500;
        let all_free = probe
            .all_ports()
            .iter()
            .all(|p| TcpListener::bind((probe.cluster.host.as_str(), *p)).is_ok());
        if all_free {
            return Ok(probe.cluster.base_port);
        }
    }
    bail!("no free port range found")
}

/// A minimal blocking HTTP GET (no runtime needed), returning status and body.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let sock = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("cannot resolve {addr}"))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP answer from {addr}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
