//! `cart add-node` and `cart remove-node`: grow or shrink a running
//! service's Raft group through any coordinator's admin API, with the
//! spec's admin token. `add-node` also starts the new node's process and
//! keeps it running until Ctrl-C, like `cart up`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use cart_common::admin::{MembershipChanged, ServiceView};
use cart_common::admin_client::{AdminClient, AdminError};
use cart_common::paths::{self, nodes_path, STATUS_PATH};
use cart_common::spec::NodeId;
use cart_common::{ClusterSpec, Service};

use crate::harness::{http_get, node_ids, LocalCluster, Role, REMOVED_MARKER};

pub fn add_node(spec_path: &Path, service: Service, id: Option<NodeId>) -> anyhow::Result<()> {
    let mut cluster = LocalCluster::attach(spec_path, &std::env::current_exe()?)?;
    let spec = cluster.spec.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let id = match id {
        Some(id) => id,
        None => runtime.block_on(next_free_id(&spec, service))?,
    };
    let role = Role::Node(service, id);
    // A node added again after a removal starts from its old data; the
    // leader brings it up to date (or sends a snapshot).
    let _ = std::fs::remove_file(spec.node_data_dir(service, id).join(REMOVED_MARKER));
    cluster.start_process(role)?;
    let addr = cluster.admin_addr(role);
    println!(
        "started {} at http://{addr} (log {})",
        role.name(),
        cluster.log_path(role).display()
    );
    cluster.wait_until("the new node to listen", Duration::from_secs(30), |_| {
        http_get(&addr, STATUS_PATH, Duration::from_millis(500))
            .ok()
            .filter(|(code, _)| *code == 200)
    })?;

    println!("adding it to the {service} group (learner, catch up, then voter)...");
    let changed: MembershipChanged = runtime.block_on(admin_call(
        &spec,
        service,
        reqwest::Method::POST,
        &nodes_path(service.name()),
        Some(serde_json::json!({ "id": id })),
    ))?;
    println!(
        "{service} voters now {:?}; node {id} runs until Ctrl-C \
         (remove it first with `cart remove-node --service {service} --id {id}`)",
        changed.voters
    );
    runtime.block_on(cart_common::process::shutdown_signal());
    cluster.shutdown();
    Ok(())
}

pub fn remove_node(spec_path: &Path, service: Service, id: NodeId) -> anyhow::Result<()> {
    let spec = ClusterSpec::load(spec_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let changed: MembershipChanged = runtime.block_on(admin_call(
        &spec,
        service,
        reqwest::Method::DELETE,
        &paths::node_path(service.name(), id),
        None,
    ))?;
    // Keep its data (for inspection) but do not start it again.
    let dir = spec.node_data_dir(service, id);
    if dir.exists() {
        std::fs::write(dir.join(REMOVED_MARKER), "removed from its group\n")
            .with_context(|| format!("marking {} removed", dir.display()))?;
    }
    if changed.changed {
        println!(
            "{service} voters now {:?}; node {id} is no longer a member (stop its process if it runs)",
            changed.voters
        );
    } else {
        println!(
            "node {id} was not a member of {service}; voters {:?}",
            changed.voters
        );
    }
    Ok(())
}

/// One more than the highest node id the group or the data dir knows.
async fn next_free_id(spec: &ClusterSpec, service: Service) -> anyhow::Result<NodeId> {
    let path = paths::service_path(service.name());
    let view: ServiceView = admin_call(spec, service, reqwest::Method::GET, &path, None).await?;
    let highest = view
        .nodes
        .iter()
        .map(|n| n.id)
        .chain(node_ids(spec, service))
        .max()
        .unwrap_or(0);
    Ok(highest + 1)
}

/// An admin call to the first coordinator of `service` that can be reached,
/// with the spec's admin token. A refusal is final: only a call that never
/// reached a coordinator is sent to the next.
async fn admin_call<T: serde::de::DeserializeOwned>(
    spec: &ClusterSpec,
    service: Service,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<T> {
    let client = AdminClient::new(Some(spec.cluster.admin_token.clone()));
    let timeout = Duration::from_millis(spec.limits.bulk_timeout_ms);
    let candidates: Vec<String> = spec
        .coordinators(service)
        .into_iter()
        .map(|c| c.admin)
        .collect();
    let (answer, failed) =
        AdminClient::first_answer(&candidates, AdminError::try_another, |addr| {
            let (client, method, body) = (&client, method.clone(), body.as_ref());
            async move { client.call(&addr, method, path, body, timeout).await }
        })
        .await;
    match answer {
        Ok((_, answer)) => Ok(answer),
        Err(_) if failed.len() == candidates.len() => {
            let tried: Vec<String> = failed.iter().map(|(_, e)| e.to_string()).collect();
            bail!("no coordinator of {service} answered: {}", tried.join("; "))
        }
        Err(e) => bail!("{e}"),
    }
}
