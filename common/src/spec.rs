//! The cluster spec: one TOML file read by every tool (launcher, nodes,
//! coordinators, gateway, tests). Ports are derived from `base_port` so a spec
//! stays a few lines; see `ports` below for the layout.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::shard::Shard;

/// The three services of the cart, in a fixed order used for port layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Order,
    Payment,
    Stock,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Order, Service::Payment, Service::Stock];

    pub fn name(self) -> &'static str {
        match self {
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Stock => "stock",
        }
    }

    /// The public path prefix of the service (docs/api.md).
    pub fn path_prefix(self) -> &'static str {
        match self {
            Service::Order => "/orders/",
            Service::Payment => "/payment/",
            Service::Stock => "/stock/",
        }
    }

    fn ordinal(self) -> u16 {
        match self {
            Service::Order => 0,
            Service::Payment => 1,
            Service::Stock => 2,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "order" | "orders" => Ok(Service::Order),
            "payment" => Ok(Service::Payment),
            "stock" => Ok(Service::Stock),
            other => Err(format!("unknown service {other:?} (order, payment, stock)")),
        }
    }
}

/// How a coordinator reaches another service (addItem's price lookup,
/// checkout's payment and stock steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CrossService {
    /// Through that service's coordinators, as the seed did.
    Coordinator,
    /// Straight to that service's Raft leader, with the node addresses every
    /// coordinator already knows from the spec (two hops fewer).
    #[default]
    Direct,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub cluster: ClusterSection,
    #[serde(default)]
    pub raft: RaftSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub consistency: ConsistencySection,
    #[serde(default)]
    pub storage: StorageSection,
    pub services: ServicesSection,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    #[serde(default = "default_host")]
    pub host: String,
    /// The gateway listens here; every other port is derived from it.
    #[serde(default = "default_base_port")]
    pub base_port: u16,
    /// Relative paths are resolved against the spec file's directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Bearer token for mutating admin calls.
    pub admin_token: String,
    /// Shared secret on node-to-node and coordinator-to-node calls.
    pub internal_secret: String,
    #[serde(default)]
    pub cross_service: CrossService,
    /// Where each process is reached when every process has a host of its
    /// own (containers): `{name}` is the process (`stock-node-2`,
    /// `order-coordinator-0`, `gateway`, `prometheus`), `{group}` its kind
    /// (`stock-node`, `order-coordinator`). Unset: every process on `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_pattern: Option<String>,
    /// Hosts of named processes (`stock-node-2 = "198.18.0.23"`), over
    /// `host_pattern` and `host`: the partition tests give every process an
    /// address of its own in a network namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, String>,
    /// Listen on every interface (0.0.0.0) at the process's port, whatever
    /// address it is reached at (containers).
    #[serde(default)]
    pub bind_any: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    /// Build a snapshot (and purge the log before it) every this many entries.
    pub snapshot_every: u64,
    /// How long a node remembers a request id, so a retry applies once.
    pub request_id_window_secs: u64,
    /// KiB of the newest log entries (encoded) each shard's group keeps in
    /// memory on a node; older ones are read back from the node's log files
    /// when a follower needs them.
    pub resident_log_kib: u64,
    /// KiB an AppendEntries to a follower may carry encoded (unless it has a
    /// single entry): a follower far behind is caught up in pieces each
    /// answerable within the heartbeat interval.
    pub max_append_kib: u64,
    /// Reads go to any replica, which first learns its leader's read index
    /// (a leadership-confirming round) and waits until it has applied that
    /// far, so they stay linearizable; `false`: only the leader reads.
    pub follower_reads: bool,
    /// A leader confirms a read by its lease (a majority accepted its
    /// appends within the election timeout) instead of a heartbeat round
    /// of its own; restarted nodes then hold their votes for the election
    /// timeout's upper bound. `false`: a round for every read (or shared
    /// batch of reads).
    pub lease_reads: bool,
    /// A write no request waits on (a checkout's commit, answered once its
    /// steps applied) waits up to this long for another write to share its
    /// entry, saving an entry, an fsync on every replica and an append to
    /// each follower per checkout under load; 0 writes it at once.
    pub lazy_write_ms: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        Self {
            heartbeat_ms: 200,
            election_timeout_ms: 1000,
            snapshot_every: 20_000,
            request_id_window_secs: 600,
            resident_log_kib: 8 * 1024,
            max_append_kib: 256,
            follower_reads: true,
            lease_reads: true,
            lazy_write_ms: 10,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Requests a gateway or coordinator works on at once; more get 429.
    pub max_in_flight: usize,
    /// How long any internal call may take to connect: gateway →
    /// coordinator, coordinator → node, node → node (saga steps, checks),
    /// and the admin tools' calls.
    pub connect_timeout_ms: u64,
    /// How long a coordinator keeps trying (following leaders, retrying)
    /// before it answers 503.
    pub request_timeout_ms: u64,
    /// Longest a coordinator may take for a bulk write (`batch_init`).
    pub bulk_timeout_ms: u64,
    /// How long the order leader waits for a checkout's saga to end before
    /// it hands the coordinator the transaction to follow; the saga goes on.
    pub checkout_timeout_ms: u64,
    /// How much longer than the leader the coordinator waits for a checkout
    /// (following the transaction, or a new order leader), so that it never
    /// gives up before the leader has answered; 503 `checkout_pending` after.
    pub checkout_follow_ms: u64,
    /// The gateway's whole bound on one client request, over every attempt
    /// at a coordinator (it tries another after a connection failure or a
    /// coordinator that goes unhealthy meanwhile). A hung coordinator is
    /// normally dropped much sooner by the gateway's health checks. Must
    /// exceed a checkout's whole wait.
    pub gateway_timeout_ms: u64,
    /// A request head must arrive within this after its connection is
    /// accepted or went idle, else the connection is closed.
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive within this after its head (408 after).
    pub body_read_timeout_ms: u64,
    /// Open connections per process, at most; more wait in the kernel's
    /// accept queue.
    pub max_connections: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_in_flight: 2048,
            connect_timeout_ms: 300,
            request_timeout_ms: 15_000,
            bulk_timeout_ms: 120_000,
            checkout_timeout_ms: 30_000,
            checkout_follow_ms: 10_000,
            gateway_timeout_ms: 130_000,
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 5_000,
            max_connections: 10_000,
        }
    }
}

/// Health checking: coordinators probing their service's nodes, and the
/// gateway probing coordinators. The defaults detect a dead node in well
/// under 2 s (`cluster/examples/detection.rs` measures it).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// How often every node (and, at the gateway, every coordinator) is probed.
    pub interval_ms: u64,
    /// A probe not answered within this counts as failed.
    pub timeout_ms: u64,
    /// Consecutive failed probes before a node is marked down. The leader's
    /// report that it cannot reach a follower marks it down at once.
    pub failures_before_down: u32,
    /// A down node is probed with exponential backoff up to this interval.
    pub max_backoff_ms: u64,
    /// A returning node is `catching_up` until its log is within this many
    /// entries of the leader's, then `up`.
    pub caught_up_lag_entries: u64,
    /// Events each coordinator keeps (merged from every coordinator).
    pub events_kept: usize,
    /// How long a coordinator's pull of another's events waits there for a
    /// new one (a long poll: an idle cluster pulls once per this, and an
    /// event still arrives at once). 0: every pull is answered at once.
    pub event_wait_ms: u64,
    /// The pause before pulling again from a coordinator that failed to
    /// answer, or that answered nothing before `event_wait_ms`.
    pub event_sync_ms: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            interval_ms: 250,
            timeout_ms: 500,
            failures_before_down: 2,
            max_backoff_ms: 2000,
            caught_up_lag_entries: 10,
            events_kept: 500,
            event_wait_ms: 5_000,
            event_sync_ms: 500,
        }
    }
}

/// Consistency checks: every group's leader digests all replicas at one log
/// position and compares them (docs/consistency.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsistencySection {
    /// A periodic check of every group this often; 0 turns them off.
    pub check_interval_secs: u64,
    /// How long the checker waits for a replica's digest before reporting
    /// the replica unreachable (not mismatching).
    pub digest_timeout_ms: u64,
    /// A replica with more differing leaf buckets than this (of 65,536) is
    /// rebuilt (wiped, re-added, sent a snapshot) instead of repaired key by
    /// key.
    pub rebuild_threshold_buckets: u64,
}

impl Default for ConsistencySection {
    fn default() -> Self {
        Self {
            check_interval_secs: 300,
            digest_timeout_ms: 30_000,
            rebuild_threshold_buckets: 1024,
        }
    }
}

/// Where a node keeps its replicated state (docs/storage.md). The Raft log
/// stays in the node's data directory whatever the backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// In the node's memory, made durable by its Raft log and snapshots.
    /// `redb`, its name before the state left redb, still reads.
    #[default]
    #[serde(alias = "redb")]
    Embedded,
    /// A MongoDB database per node.
    Mongodb,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub backend: StorageBackend,
    /// The server of every node (`mongodb` backend). `{name}` becomes the
    /// node's name (`stock-node-2`), for a server per node.
    pub mongodb_url: String,
    /// The database of each node; `{name}` as above, `-` becoming `_`.
    pub mongodb_database: String,
    /// A MongoDB operation slower than this counts as failed (and is
    /// retried); the node is reported unhealthy meanwhile.
    pub mongodb_timeout_ms: u64,
    /// No longer used (the Raft log and the embedded state left redb);
    /// still accepted so that older spec files read.
    #[serde(skip_serializing)]
    pub redb_cache_mib: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Embedded,
            mongodb_url: "mongodb://127.0.0.1:27017".into(),
            mongodb_database: "cart_{name}".into(),
            mongodb_timeout_ms: 2000,
            redb_cache_mib: 64,
        }
    }
}

impl StorageSection {
    /// The MongoDB URL and database of node `id` of `service`.
    /// The server and database of one shard's replica on a node: shard 0
    /// in the node's database (as before shards), shard k in `..._shard_k`.
    pub fn mongodb_of(&self, service: Service, id: NodeId, shard: Shard) -> (String, String) {
        let name = format!("{service}-node-{id}");
        let url = self.mongodb_url.replace("{name}", &name);
        let mut db = self
            .mongodb_database
            .replace("{name}", &name)
            .replace('-', "_");
        if shard.0 > 0 {
            db.push_str(&format!("_shard_{shard}"));
        }
        (url, db)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesSection {
    pub order: ServiceSize,
    pub payment: ServiceSize,
    pub stock: ServiceSize,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSize {
    pub coordinators: u16,
    pub nodes: u16,
    /// Raft groups the service's keys are split over (`crate::shard`); each
    /// node hosts a replica of every shard.
    #[serde(default = "one_shard")]
    pub shards: u16,
}

fn one_shard() -> u16 {
    1
}

/// Node ids are 1-based within a service and stable for the node's life.
pub type NodeId = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddr {
    pub service: Service,
    pub id: NodeId,
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorAddr {
    pub service: Service,
    pub index: u16,
    /// Public cart API of the service (what the gateway forwards to).
    pub public: String,
    /// Admin port: /metrics, /ready, internal cross-service calls.
    pub admin: String,
}

/// Port layout, so that a spec needs only a base port. Service k (order 0,
/// payment 1, stock 2) owns `base + 100*(k+1) ..`: coordinator i listens on
/// `+2i` (public) and `+2i+1` (admin); node j (1-based) on `+50+j-1`.
const SERVICE_STRIDE: u16 = 100;
const NODE_OFFSET: u16 = 50;
pub const MAX_COORDINATORS: u16 = 25;
pub const MAX_NODES: u16 = 50;

impl ClusterSpec {
    /// Reads a spec file, then applies `CART_<SECTION>_<KEY>` environment
    /// variables over it (see `apply_env`).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading cluster spec {}: {e}", path.display()))?;
        let mut value: toml::Value = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("parsing cluster spec {}: {e}", path.display()))?;
        apply_env(&mut value, std::env::vars())?;
        let mut spec: ClusterSpec = value
            .try_into()
            .map_err(|e| anyhow::anyhow!("cluster spec {}: {e}", path.display()))?;
        if spec.cluster.data_dir.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            spec.cluster.data_dir = base.join(&spec.cluster.data_dir);
        }
        spec.validate()?;
        Ok(spec)
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let spec: ClusterSpec = toml::from_str(text)?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_toml(&self) -> String {
        // Serialising plain structs of strings and numbers cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    fn validate(&self) -> anyhow::Result<()> {
        let limits = &self.limits;
        anyhow::ensure!(
            limits.gateway_timeout_ms > limits.checkout_timeout_ms + limits.checkout_follow_ms,
            "gateway_timeout_ms must exceed checkout_timeout_ms + checkout_follow_ms (a checkout's \
             whole wait at the coordinator)"
        );
        anyhow::ensure!(
            limits.checkout_follow_ms > 0,
            "checkout_follow_ms must be positive: the coordinator waits longer than the leader"
        );
        anyhow::ensure!(
            limits.max_connections > 0 && limits.max_in_flight > 0,
            "max_connections and max_in_flight must be positive"
        );
        for service in Service::ALL {
            let size = self.size(service);
            anyhow::ensure!(
                (1..=MAX_COORDINATORS).contains(&size.coordinators),
                "{service}: coordinators must be 1..={MAX_COORDINATORS}"
            );
            anyhow::ensure!(
                (1..=MAX_NODES).contains(&size.nodes),
                "{service}: nodes must be 1..={MAX_NODES}"
            );
            anyhow::ensure!(
                (1..=crate::shard::MAX_SHARDS).contains(&size.shards),
                "{service}: shards must be 1..={}",
                crate::shard::MAX_SHARDS
            );
        }
        anyhow::ensure!(
            u32::from(self.cluster.base_port) + 4 * u32::from(SERVICE_STRIDE) < 65_535,
            "base_port too high for the port layout"
        );
        anyhow::ensure!(
            self.health.interval_ms > 0 && self.health.timeout_ms > 0,
            "health interval_ms and timeout_ms must be positive"
        );
        anyhow::ensure!(
            self.health.failures_before_down > 0,
            "health failures_before_down must be at least 1"
        );
        anyhow::ensure!(
            !self.cluster.admin_token.is_empty() && !self.cluster.internal_secret.is_empty(),
            "admin_token and internal_secret must not be empty"
        );
        anyhow::ensure!(
            self.raft.election_timeout_ms > 2 * self.raft.heartbeat_ms,
            "election_timeout_ms must exceed twice heartbeat_ms"
        );
        anyhow::ensure!(
            self.raft.max_append_kib > 0,
            "raft max_append_kib must be at least 1"
        );
        Ok(())
    }

    pub fn size(&self, service: Service) -> ServiceSize {
        match service {
            Service::Order => self.services.order,
            Service::Payment => self.services.payment,
            Service::Stock => self.services.stock,
        }
    }

    /// The size of `service`, to change (tools and tests adjusting a spec).
    pub fn size_mut(&mut self, service: Service) -> &mut ServiceSize {
        match service {
            Service::Order => &mut self.services.order,
            Service::Payment => &mut self.services.payment,
            Service::Stock => &mut self.services.stock,
        }
    }

    fn service_base(&self, service: Service) -> u16 {
        self.cluster.base_port + SERVICE_STRIDE * (service.ordinal() + 1)
    }

    /// The address of process `name` (of kind `group`) at `port`.
    fn addr_of(&self, name: &str, group: &str, port: u16) -> String {
        let host = match (self.cluster.hosts.get(name), &self.cluster.host_pattern) {
            (Some(host), _) => host.clone(),
            (None, Some(p)) => p.replace("{name}", name).replace("{group}", group),
            (None, None) => self.cluster.host.clone(),
        };
        format!("{host}:{port}")
    }

    /// Where a process listens for its address `addr` (`bind_any`: every
    /// interface at the same port).
    pub fn bind_addr(&self, addr: &str) -> String {
        if self.cluster.bind_any {
            format!("0.0.0.0:{}", port_of(addr))
        } else {
            addr.to_string()
        }
    }

    pub fn gateway_addr(&self) -> String {
        self.addr_of("gateway", "gateway", self.cluster.base_port)
    }

    /// The gateway's own /metrics and /ready, apart from the public API.
    pub fn gateway_admin_addr(&self) -> String {
        self.addr_of("gateway", "gateway", self.cluster.base_port + 1)
    }

    /// Where the launcher's Prometheus listens, if it starts one.
    pub fn prometheus_addr(&self) -> String {
        self.addr_of("prometheus", "prometheus", self.cluster.base_port + 2)
    }

    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway_addr())
    }

    pub fn coordinators(&self, service: Service) -> Vec<CoordinatorAddr> {
        let base = self.service_base(service);
        (0..self.size(service).coordinators)
            .map(|i| {
                let name = format!("{service}-coordinator-{i}");
                let group = format!("{service}-coordinator");
                CoordinatorAddr {
                    service,
                    index: i,
                    public: self.addr_of(&name, &group, base + 2 * i),
                    admin: self.addr_of(&name, &group, base + 2 * i + 1),
                }
            })
            .collect()
    }

    /// The nodes the spec names. A running group's membership (persisted in
    /// its Raft log) wins over this list once the group exists.
    pub fn nodes(&self, service: Service) -> Vec<NodeAddr> {
        let base = self.service_base(service) + NODE_OFFSET;
        (1..=self.size(service).nodes)
            .map(|id| NodeAddr {
                service,
                id: u64::from(id),
                addr: self.addr_of(
                    &format!("{service}-node-{id}"),
                    &format!("{service}-node"),
                    base + id - 1,
                ),
            })
            .collect()
    }

    /// Address of node `id` of `service` by the port layout, also for ids
    /// beyond the spec's count (nodes added at run time).
    pub fn node_addr(&self, service: Service, id: NodeId) -> Option<String> {
        let id = u16::try_from(id)
            .ok()
            .filter(|i| (1..=MAX_NODES).contains(i))?;
        Some(self.addr_of(
            &format!("{service}-node-{id}"),
            &format!("{service}-node"),
            self.service_base(service) + NODE_OFFSET + id - 1,
        ))
    }

    /// Whether `addr` may be node `id` of `service` (an operator adding a
    /// node at an address of its own): `host:port` with the host the spec
    /// gives that node (`hosts`, `host_pattern`, or `host`) and a port in 1..=65535.
    /// Anything else could point the group's Raft traffic and secret at a
    /// host outside the cluster.
    pub fn allows_node_addr(&self, service: Service, id: NodeId, addr: &str) -> bool {
        let Some(expected) = self.node_addr(service, id) else {
            return false;
        };
        let host_of = |a: &str| a.rsplit_once(':').map(|(h, _)| h.to_string());
        let port_ok = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_some_and(|p| p > 0);
        port_ok && host_of(addr).is_some() && host_of(addr) == host_of(&expected)
    }

    pub fn coordinator(&self, service: Service, index: u16) -> Option<CoordinatorAddr> {
        self.coordinators(service)
            .into_iter()
            .nth(usize::from(index))
    }

    pub fn node_data_dir(&self, service: Service, id: NodeId) -> PathBuf {
        self.cluster.data_dir.join(format!("{service}-node-{id}"))
    }

    /// Where a node keeps one shard's log and snapshots: shard 0 in the
    /// node's directory itself (where a single-shard node always kept them,
    /// so existing data stays valid), shard k > 0 in `shard-k` below it.
    pub fn shard_data_dir(&self, service: Service, id: NodeId, shard: Shard) -> PathBuf {
        let dir = self.node_data_dir(service, id);
        match shard.0 {
            0 => dir,
            k => dir.join(format!("shard-{k}")),
        }
    }

    /// How many shards `service` has.
    pub fn shards(&self, service: Service) -> u16 {
        self.size(service).shards
    }

    /// The shard of `service` that holds `key`.
    pub fn shard_of(&self, service: Service, key: &str) -> Shard {
        Shard::of(key, self.shards(service))
    }

    pub fn log_dir(&self) -> PathBuf {
        self.cluster.data_dir.join("logs")
    }

    /// Every port the spec uses, for finding a free range in tests.
    pub fn all_ports(&self) -> Vec<u16> {
        let base = self.cluster.base_port;
        let mut ports = vec![base, base + 1, base + 2];
        for service in Service::ALL {
            for c in self.coordinators(service) {
                ports.push(port_of(&c.public));
                ports.push(port_of(&c.admin));
            }
            for n in self.nodes(service) {
                ports.push(port_of(&n.addr));
            }
        }
        ports
    }
}

/// Overrides spec values from the environment, for containers:
/// `CART_<SECTION>_<KEY>=value` sets `[section] key` (e.g.
/// `CART_CLUSTER_ADMIN_TOKEN`, `CART_LIMITS_MAX_IN_FLIGHT`,
/// `CART_HEALTH_INTERVAL_MS`), and `CART_SERVICES_<SERVICE>_<KEY>` a
/// service's size (`CART_SERVICES_STOCK_NODES=5`). Numbers and booleans are
/// taken as such, anything else as a string. Variables naming no spec
/// section (`CART_SPEC`, `CART_ADMIN_TOKEN` of the console…) are ignored; a
/// key the section does not have is refused when the spec is read.
pub fn apply_env(
    spec: &mut toml::Value,
    vars: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<()> {
    const SECTIONS: [&str; 6] = [
        "cluster",
        "raft",
        "limits",
        "health",
        "consistency",
        "storage",
    ];
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("CART_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let path: Vec<&str> = if let Some(svc) = rest.strip_prefix("services_") {
            match svc.split_once('_') {
                Some((service, key)) => vec!["services", service, key],
                None => continue,
            }
        } else {
            match rest.split_once('_') {
                Some((section, key)) if SECTIONS.contains(&section) => vec![section, key],
                _ => continue,
            }
        };
        let value = raw
            .parse::<i64>()
            .map(toml::Value::Integer)
            .or_else(|_| raw.parse::<bool>().map(toml::Value::Boolean))
            .unwrap_or_else(|_| toml::Value::String(raw.clone()));
        let mut table = spec
            .as_table_mut()
            .ok_or_else(|| anyhow::anyhow!("cluster spec is not a table"))?;
        for part in &path[..path.len() - 1] {
            table = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .ok_or_else(|| anyhow::anyhow!("{name}: {part} is not a section"))?;
        }
        table.insert(path[path.len() - 1].to_string(), value);
    }
    Ok(())
}

/// The port of a `host:port` address (0 if there is none).
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_base_port() -> u16 {
    8000
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
        [cluster]
        admin_token = "a"
        internal_secret = "s"
        [services.order]
        coordinators = 2
        nodes = 3
        [services.payment]
        coordinators = 2
        nodes = 3
        [services.stock]
        coordinators = 2
        nodes = 3
    "#;

    #[test]
    fn port_layout_gives_every_process_a_distinct_port() {
        let spec = ClusterSpec::from_toml(SPEC).unwrap();
        let mut ports = spec.all_ports();
        assert_eq!(ports.len(), 3 + 3 * (2 * 2 + 3));
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 3 + 3 * (2 * 2 + 3));
        assert_eq!(spec.gateway_addr(), "127.0.0.1:8000");
        assert_eq!(spec.nodes(Service::Stock)[0].addr, "127.0.0.1:8350");
        assert_eq!(
            spec.node_addr(Service::Stock, 4).as_deref(),
            Some("127.0.0.1:8353")
        );
    }

    #[test]
    fn an_added_node_must_be_on_the_host_the_spec_gives_it() {
        let mut spec = ClusterSpec::from_toml(SPEC).unwrap();
        assert!(spec.allows_node_addr(Service::Stock, 4, "127.0.0.1:9999"));
        for bad in [
            "10.0.0.1:9999",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:x",
            "evil:80",
        ] {
            assert!(!spec.allows_node_addr(Service::Stock, 4, bad), "{bad}");
        }
        spec.cluster.host_pattern = Some("{name}.cart".into());
        assert!(spec.allows_node_addr(Service::Stock, 4, "stock-node-4.cart:7000"));
        assert!(!spec.allows_node_addr(Service::Stock, 4, "stock-node-5.cart:7000"));
    }

    #[test]
    fn a_host_pattern_gives_every_process_its_own_host() {
        let mut spec = ClusterSpec::from_toml(SPEC).unwrap();
        spec.cluster.host_pattern = Some("{name}.{group}".into());
        spec.cluster.bind_any = true;
        assert_eq!(
            spec.node_addr(Service::Stock, 2).as_deref(),
            Some("stock-node-2.stock-node:8351")
        );
        assert_eq!(
            spec.coordinators(Service::Order)[1].admin,
            "order-coordinator-1.order-coordinator:8103"
        );
        assert_eq!(spec.gateway_addr(), "gateway.gateway:8000");
        assert_eq!(spec.bind_addr(&spec.gateway_addr()), "0.0.0.0:8000");
    }

    #[test]
    fn a_host_named_for_a_process_wins_over_the_pattern_and_the_default() {
        let mut spec = ClusterSpec::from_toml(SPEC).unwrap();
        spec.cluster.host_pattern = Some("{name}.cart".into());
        spec.cluster.hosts = BTreeMap::from([
            ("stock-node-2".to_string(), "198.18.0.23".to_string()),
            ("gateway".to_string(), "198.18.0.10".to_string()),
        ]);
        assert_eq!(
            spec.node_addr(Service::Stock, 2).as_deref(),
            Some("198.18.0.23:8351")
        );
        assert_eq!(
            spec.node_addr(Service::Stock, 1).as_deref(),
            Some("stock-node-1.cart:8350")
        );
        assert_eq!(spec.gateway_url(), "http://198.18.0.10:8000");
        assert!(spec.allows_node_addr(Service::Stock, 2, "198.18.0.23:9000"));
        let toml = toml::to_string(&spec).unwrap();
        let back = ClusterSpec::from_toml(&toml).unwrap();
        assert_eq!(back.cluster.hosts, spec.cluster.hosts);
    }

    #[test]
    fn spec_round_trips_through_toml() {
        let spec = ClusterSpec::from_toml(SPEC).unwrap();
        let again = ClusterSpec::from_toml(&spec.to_toml()).unwrap();
        assert_eq!(again.all_ports(), spec.all_ports());
    }

    #[test]
    fn environment_variables_override_the_file() {
        let mut value: toml::Value = toml::from_str(SPEC).unwrap();
        let vars = [
            ("CART_CLUSTER_ADMIN_TOKEN", "from-env"),
            ("CART_LIMITS_MAX_IN_FLIGHT", "7"),
            ("CART_SERVICES_STOCK_NODES", "5"),
            ("CART_SPEC", "ignored.toml"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        apply_env(&mut value, vars).unwrap();
        let spec: ClusterSpec = value.try_into().unwrap();
        assert_eq!(spec.cluster.admin_token, "from-env");
        assert_eq!(spec.limits.max_in_flight, 7);
        assert_eq!(spec.size(Service::Stock).nodes, 5);
        assert_eq!(spec.size(Service::Order).nodes, 3);

        let mut value: toml::Value = toml::from_str(SPEC).unwrap();
        let typo = [("CART_LIMITS_MAX_IN_FLIGTH".to_string(), "7".to_string())];
        apply_env(&mut value, typo).unwrap();
        assert!(
            value.try_into::<ClusterSpec>().is_err(),
            "an unknown key is refused"
        );
    }

    #[test]
    fn unknown_keys_and_empty_services_are_rejected() {
        assert!(ClusterSpec::from_toml(&SPEC.replace("nodes = 3", "nodes = 0")).is_err());
        assert!(ClusterSpec::from_toml(&format!("{SPEC}\n[bogus]\nx=1")).is_err());
    }
}
