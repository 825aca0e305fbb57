//! `cart`: one binary for every role of the local cluster.

use std::path::PathBuf;

use cart_common::telemetry::Identity;
use cart_common::{ClusterSpec, Service};
use clap::{Parser, Subcommand};

// glibc's malloc took about a fifth of a node's CPU under load (free-list
// consolidation, arena locks); mimalloc's thread-local pages are cheaper
// for the many short-lived buffers of HTTP and JSON. See docs/loadtest.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "cart", about = "Replicated shopping-cart cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the whole local cluster and wait for Ctrl-C.
    Up {
        #[arg(long, default_value = "cluster.toml", env = "CART_SPEC")]
        spec: PathBuf,
        /// Do not start Prometheus even if it is installed.
        #[arg(long)]
        no_prometheus: bool,
    },
    /// Run one Raft node of a service.
    Node {
        #[arg(long, env = "CART_SPEC")]
        spec: PathBuf,
        #[arg(long)]
        service: Service,
        #[arg(long)]
        id: u64,
        /// Never form a new group (a node that lost its data and waits to be
        /// added back).
        #[arg(long)]
        join: bool,
        /// Serve the fault-injection hook (tests and demos only).
        #[arg(long)]
        fault_injection: bool,
    },
    /// Run one coordinator of a service.
    Coordinator {
        #[arg(long, env = "CART_SPEC")]
        spec: PathBuf,
        #[arg(long)]
        service: Service,
        #[arg(long, default_value_t = 0)]
        index: u16,
    },
    /// Run the built-in gateway.
    Gateway {
        #[arg(long, env = "CART_SPEC")]
        spec: PathBuf,
    },
    /// Start one more node for a running service, add it to the service's
    /// Raft group, and keep it running until Ctrl-C.
    AddNode {
        #[arg(long, default_value = "cluster.toml", env = "CART_SPEC")]
        spec: PathBuf,
        #[arg(long)]
        service: Service,
        /// Defaults to one more than the highest id the group knows.
        #[arg(long)]
        id: Option<u64>,
    },
    /// Write a docker-compose deployment of the spec (compose file, nginx and
    /// Prometheus configs) into a directory.
    Compose {
        #[arg(long, default_value = "cluster.toml", env = "CART_SPEC")]
        spec: PathBuf,
        #[arg(long, default_value = "compose")]
        out: PathBuf,
    },
    /// Write the Kubernetes base (kustomize manifests, the spec as the pods
    /// read it, Prometheus config, copies of the rules and dashboards) into a
    /// directory.
    K8s {
        #[arg(long, default_value = "cluster.toml", env = "CART_SPEC")]
        spec: PathBuf,
        #[arg(long, default_value = "k8s/base")]
        out: PathBuf,
        /// The repository's `dashboards` directory (rules, provisioning,
        /// dashboards), copied into the base.
        #[arg(long, default_value = "dashboards")]
        dashboards: PathBuf,
    },
    /// Remove a node from a running service's Raft group.
    RemoveNode {
        #[arg(long, default_value = "cluster.toml", env = "CART_SPEC")]
        spec: PathBuf,
        #[arg(long)]
        service: Service,
        #[arg(long)]
        id: u64,
    },
}

fn main() {
    // An error ends every command the same way: its chain of causes on one
    // line, and no backtrace (RUST_BACKTRACE set in a shell would add one
    // to `anyhow`'s default report). `cart up` finds this line in a failed
    // process's log and repeats it.
    if let Err(e) = run(Cli::parse()) {
        eprintln!("{}{e:#}", cart_cluster::harness::ERROR_PREFIX);
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let identity = cli.command.identity();
    if identity.is_none() {
        cart_common::telemetry::init(None);
    }
    match cli.command {
        Cmd::Up {
            spec,
            no_prometheus,
        } => cart_cluster::launcher::up(&spec, !no_prometheus),
        Cmd::Node {
            spec,
            service,
            id,
            join,
            fault_injection,
        } => {
            let options = cart_services::node::NodeOptions {
                join,
                fault_injection,
            };
            serve(&spec, identity, |spec| {
                cart_services::node::run(spec, service, id, options)
            })
        }
        Cmd::Coordinator {
            spec,
            service,
            index,
        } => serve(&spec, identity, |spec| {
            cart_coordinator::server::run(spec, service, index)
        }),
        Cmd::Gateway { spec } => serve(&spec, identity, cart_cluster::gateway::run),
        Cmd::AddNode { spec, service, id } => {
            cart_cluster::membership::add_node(&spec, service, id)
        }
        Cmd::Compose { spec, out } => {
            cart_cluster::compose::write(&ClusterSpec::load(&spec)?, &out)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Cmd::K8s {
            spec,
            out,
            dashboards,
        } => {
            cart_cluster::k8s::write(&ClusterSpec::load(&spec)?, &dashboards, &out)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Cmd::RemoveNode { spec, service, id } => {
            cart_cluster::membership::remove_node(&spec, service, id)
        }
    }
}

impl Cmd {
    /// How a server role names itself in traces.
    fn identity(&self) -> Option<Identity> {
        let (service_name, instance) = match self {
            Cmd::Node { service, id, .. } => (
                format!("cart-{service}-node"),
                format!("{service}-node-{id}"),
            ),
            Cmd::Coordinator { service, index, .. } => (
                format!("cart-{service}-coordinator"),
                format!("{service}-coordinator-{index}"),
            ),
            Cmd::Gateway { .. } => ("cart-gateway".into(), "gateway".into()),
            _ => return None,
        };
        Some(Identity {
            service_name,
            instance,
        })
    }
}

/// Runs one server role on a multi-threaded runtime (the node's storage
/// relies on `block_in_place`), dying with the process that started it.
/// Telemetry starts inside the runtime (the OTLP exporter needs it) and is
/// flushed at a graceful exit.
fn serve<F, Fut>(
    spec_path: &std::path::Path,
    identity: Option<Identity>,
    run: F,
) -> anyhow::Result<()>
where
    F: FnOnce(ClusterSpec) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    cart_common::process::die_with_parent();
    cart_common::process::raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        cart_common::telemetry::init(identity);
        let spec = ClusterSpec::load(spec_path)?;
        let result = run(spec).await;
        cart_common::telemetry::shutdown();
        result
    })
}
