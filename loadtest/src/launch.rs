//! Where the load goes: a running gateway given by URL, or a cluster this
//! tool starts itself through the harness (`cart-cluster`), so that it owns
//! the processes it kills, restarts and measures.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use cart_cluster::harness::netns::TestNet;
use cart_cluster::harness::LocalCluster;
use cart_common::Service;
use serde::Serialize;

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct TargetArgs {
    /// Gateway of a running cluster: ours or any implementation of the cart
    /// API. Ignored with --cluster or --temp-cluster.
    #[arg(long, env = "CART_GATEWAY", default_value = "http://127.0.0.1:8000")]
    pub gateway: String,
    /// Start the cluster of this spec file (as `cart up` would) and load
    /// its gateway; needed for --kill and the memory figures.
    #[arg(long, value_name = "SPEC", conflicts_with = "temp_cluster")]
    pub cluster: Option<PathBuf>,
    /// Start the default cluster (cluster.toml) on free ports in a
    /// temporary directory, removed afterwards.
    #[arg(long)]
    pub temp_cluster: bool,
    /// With --temp-cluster: Raft nodes per service.
    #[arg(long, requires = "temp_cluster")]
    pub nodes: Option<u16>,
    /// With --temp-cluster: coordinators per service.
    #[arg(long, requires = "temp_cluster")]
    pub coordinators: Option<u16>,
    /// With --temp-cluster: every process on a test host of its own (a
    /// network namespace at an address in 198.18.0.0/15, docs/faults.md),
    /// for --fault. Needs root, ip and nft.
    #[arg(long, requires = "temp_cluster")]
    pub netns: bool,
    /// The `cart` binary to start processes from (default: the one next to
    /// this program, e.g. target/release/cart).
    #[arg(long)]
    pub bin: Option<PathBuf>,
}

impl TargetArgs {
    pub fn launches(&self) -> bool {
        self.cluster.is_some() || self.temp_cluster
    }
}

/// Starts the cluster the arguments ask for, if any, and waits until every
/// process is ready. Call from a long-lived thread: the children are tied
/// to the thread that starts them (see the harness).
pub fn start(args: &TargetArgs) -> anyhow::Result<Option<LocalCluster>> {
    if !args.launches() {
        return Ok(None);
    }
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => cart_cluster::harness::cart_binary()?,
    };
    let mut cluster = match &args.cluster {
        Some(spec) => LocalCluster::start(spec, &bin, &Service::ALL)
            .with_context(|| format!("starting the cluster of {}", spec.display()))?,
        None => {
            let (nodes, coordinators) = (args.nodes, args.coordinators);
            let sized = |spec: &mut cart_common::ClusterSpec| {
                for size in [
                    &mut spec.services.order,
                    &mut spec.services.payment,
                    &mut spec.services.stock,
                ] {
                    if let Some(n) = nodes {
                        size.nodes = n;
                    }
                    if let Some(c) = coordinators {
                        size.coordinators = c;
                    }
                }
            };
            if args.netns {
                if let Some(tool) = TestNet::missing_tool() {
                    bail!("--netns needs {tool}: scripts/install-test-tools installs ip and nft");
                }
                LocalCluster::start_temp_in_netns(&bin, &Service::ALL, sized)
                    .context("starting a temporary cluster on test hosts")?
            } else {
                LocalCluster::start_temp(&bin, &Service::ALL, sized)
                    .context("starting a temporary cluster")?
            }
        }
    };
    cluster.wait_ready(Duration::from_secs(120))?;
    Ok(Some(cluster))
}

/// A short description of a launched cluster, for the report.
pub fn describe(cluster: &LocalCluster) -> String {
    let spec = &cluster.spec;
    let sizes: Vec<String> = Service::ALL
        .iter()
        .map(|s| {
            let size = spec.size(*s);
            format!(
                "{s}: {} nodes, {} coordinators",
                size.nodes, size.coordinators
            )
        })
        .collect();
    format!(
        "{} ({}; cross_service {:?})",
        cluster.spec_path.display(),
        sizes.join("; "),
        spec.cluster.cross_service
    )
}

pub fn gateway_url(args: &TargetArgs, cluster: Option<&LocalCluster>) -> String {
    cluster
        .map(|c| c.gateway_url())
        .unwrap_or_else(|| args.gateway.clone())
}

pub fn require_cluster<'a>(
    cluster: Option<&'a mut LocalCluster>,
    why: &str,
) -> anyhow::Result<&'a mut LocalCluster> {
    cluster.ok_or_else(|| {
        anyhow!("{why} needs a cluster started by this tool (--cluster SPEC or --temp-cluster)")
    })
}
