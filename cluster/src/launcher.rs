//! `cart up`: start the whole local cluster from a spec, wait until it is
//! ready, print where everything is, and stop it all on Ctrl-C.

use std::path::Path;
use std::time::Duration;

use cart_common::spec::NodeId;
use cart_common::Service;

use crate::harness::{node_ids, LocalCluster, Role};

/// Prometheus scrapes the local cluster this often.
const SCRAPE_SECS: u64 = 5;

pub fn up(spec_path: &Path, with_prometheus: bool) -> anyhow::Result<()> {
    let bin = std::env::current_exe()?;
    let mut cluster = LocalCluster::start(spec_path, &bin, &Service::ALL)?;
    println!(
        "starting {} processes (data in {})...",
        cluster.roles().len(),
        cluster.spec.cluster.data_dir.display()
    );
    if let Err(e) = cluster.wait_ready(Duration::from_secs(90)) {
        cluster.shutdown();
        return Err(e);
    }
    let prometheus = if with_prometheus {
        start_prometheus(&mut cluster)
    } else {
        None
    };
    print_summary(&cluster, with_prometheus, prometheus.as_deref());

    // Ctrl-C reaches the children too (same process group); they drain and
    // exit on their own, and `shutdown` collects whatever is left.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(cart_common::process::shutdown_signal());
    println!("stopping...");
    cluster.shutdown();
    println!("stopped");
    Ok(())
}

/// Starts Prometheus if it is installed; its URL once it is ready.
fn start_prometheus(cluster: &mut LocalCluster) -> Option<String> {
    crate::prometheus::binary()?;
    let started = cluster
        .start_prometheus(SCRAPE_SECS)
        .and_then(|url| cluster.wait_ready(Duration::from_secs(30)).map(|_| url));
    match started {
        Ok(url) => Some(url),
        Err(e) => {
            eprintln!("prometheus did not start: {e}");
            None
        }
    }
}

fn print_summary(cluster: &LocalCluster, with_prometheus: bool, prometheus: Option<&str>) {
    let spec = &cluster.spec;
    println!();
    println!("cart cluster ready");
    println!("  gateway      {}   (cart API)", spec.gateway_url());
    println!(
        "  gateway admin http://{}/metrics",
        spec.gateway_admin_addr()
    );
    for service in Service::ALL {
        let leader = cluster.leader(service);
        println!("  {service}:");
        for c in spec.coordinators(service) {
            let role = Role::Coordinator(service, c.index);
            println!(
                "    coordinator {}  public http://{}  admin http://{}  log {}",
                c.index,
                c.public,
                c.admin,
                cluster.log_path(role).display()
            );
        }
        for id in node_ids(spec, service) {
            let role = Role::Node(service, id);
            let mark = leader_mark(cluster, service, id, leader);
            println!(
                "    node {id}  http://{}{mark}  log {}",
                cluster.admin_addr(role),
                cluster.log_path(role).display()
            );
        }
    }
    println!(
        "  gateway log  {}",
        cluster.log_path(Role::Gateway).display()
    );
    match prometheus {
        Some(url) => println!("  prometheus   {url}   (alerts: {url}/alerts)"),
        None if with_prometheus => println!(
            "  prometheus   not installed (scripts/install-prometheus; then `cart up` starts it)"
        ),
        None => {}
    }
    println!();
    println!("Ctrl-C stops everything.");
}

/// " (leader)" after the leader of a single-shard service's node, or
/// " (leads shard 0, 2)" after each node of a sharded one.
fn leader_mark(
    cluster: &LocalCluster,
    service: Service,
    id: NodeId,
    leader: Option<NodeId>,
) -> String {
    if cluster.spec.shards(service) == 1 {
        return if leader == Some(id) {
            " (leader)".into()
        } else {
            String::new()
        };
    }
    let leads: Vec<String> = cluster
        .node_status(service, id)
        .map(|s| {
            s.shards
                .iter()
                .filter(|r| r.state == "Leader")
                .map(|r| r.shard.to_string())
                .collect()
        })
        .unwrap_or_default();
    if leads.is_empty() {
        String::new()
    } else {
        format!(" (leads shard {})", leads.join(", "))
    }
}
