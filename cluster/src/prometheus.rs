//! A Prometheus for the local cluster: its scrape config, generated from the
//! cluster spec (every process, labelled with its role, service and node),
//! and the alert rules of `dashboards/prometheus/alerts.yml`, built in.
//! The launcher starts it when a `prometheus` binary is installed
//! (`scripts/install-prometheus`); the observability tests use it too.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cart_common::{ClusterSpec, Service};

use crate::harness::node_ids;

/// Prometheus's own readiness endpoint.
pub const READY_PATH: &str = "/-/ready";

/// The alert rules, as in the repository.
pub const ALERT_RULES: &str = include_str!("../../dashboards/prometheus/alerts.yml");

/// The Prometheus binary on `PATH`, if any.
pub fn binary() -> Option<PathBuf> {
    crate::harness::find_tool("prometheus")
}

/// Scrape config for every process of `services` (plus the gateway), with
/// the rules file next to it.
/// `gateway`: whether the deployment runs the built-in gateway (`cart up`
/// does; compose and Kubernetes balance with nginx or an Ingress instead,
/// and a target that never answers would fire `CartTargetDown`).
pub fn config(
    spec: &ClusterSpec,
    services: &[Service],
    interval_secs: u64,
    rules: &Path,
    gateway: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated from the cluster spec by `cart up`; do not edit.\n\
         global:\n  scrape_interval: {interval_secs}s\n  evaluation_interval: {interval_secs}s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: cart\n    honor_labels: true\n    static_configs:",
        rules.display()
    );
    let mut target = |addr: &str, labels: &[(&str, String)]| {
        let _ = writeln!(out, "      - targets: ['{addr}']\n        labels:");
        for (k, v) in labels {
            let _ = writeln!(out, "          {k}: '{v}'");
        }
    };
    if gateway {
        target(&spec.gateway_admin_addr(), &[("role", "gateway".into())]);
    }
    for &service in services {
        for c in spec.coordinators(service) {
            target(
                &c.admin,
                &[
                    ("role", "coordinator".into()),
                    ("service", service.to_string()),
                    ("coordinator", c.index.to_string()),
                ],
            );
        }
        for id in node_ids(spec, service) {
            let Some(addr) = spec.node_addr(service, id) else {
                continue;
            };
            target(
                &addr,
                &[
                    ("role", "node".into()),
                    ("service", service.to_string()),
                    ("node", id.to_string()),
                ],
            );
        }
    }
    out
}

/// Writes the config and the rules under `<data_dir>/prometheus/`; returns
/// the config's path.
pub fn write_config(
    spec: &ClusterSpec,
    services: &[Service],
    interval_secs: u64,
) -> anyhow::Result<PathBuf> {
    let dir = spec.cluster.data_dir.join("prometheus");
    std::fs::create_dir_all(&dir)?;
    let rules = dir.join("alerts.yml");
    std::fs::write(&rules, ALERT_RULES)?;
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        self::config(spec, services, interval_secs, &rules, true),
    )?;
    Ok(config)
}

/// The arguments to run Prometheus on the spec's Prometheus port.
pub fn args(spec: &ClusterSpec, config: &Path) -> Vec<String> {
    let dir = spec.cluster.data_dir.join("prometheus");
    vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        format!("--web.listen-address={}", spec.prometheus_addr()),
        "--web.enable-lifecycle".into(),
    ]
}
