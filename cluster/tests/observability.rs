//! Observability against live processes: every catalogued metric family is
//! exported where the catalogue says (and nothing unlisted), as valid
//! exposition; every metric a dashboard names exists; the Prometheus config,
//! rules and rule tests pass promtool; and a real Prometheus scraping a
//! cluster under traffic with a node killed fires the node-down alert and
//! answers every dashboard query with data.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cart_cluster::harness::{http_get, require_tool, LocalCluster, Role};
use cart_common::paths::CHECK_ALL_PATH;

use cart_common::Service;
use common::{admin_call, cluster, coordinator_admin, eventually, Client};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A catalogue row: family → (type, roles).
fn catalogue() -> BTreeMap<String, (String, Vec<String>)> {
    let text = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    text.lines()
        .filter(|l| l.starts_with("| cart_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let roles = cells[4].split(',').map(|r| r.trim().to_string()).collect();
            (cells[1].to_string(), (cells[2].to_string(), roles))
        })
        .collect()
}

/// The roles a process has in the catalogue's terms, and its metrics address.
fn processes(cluster: &LocalCluster) -> Vec<(Vec<&'static str>, String)> {
    let mut out = vec![(vec!["gateway"], cluster.spec.gateway_admin_addr())];
    for service in Service::ALL {
        let order = service == Service::Order;
        for c in cluster.spec.coordinators(service) {
            let roles = if order {
                vec!["coordinator", "order-coordinator"]
            } else {
                vec!["coordinator"]
            };
            out.push((roles, c.admin));
        }
        for n in cluster.spec.nodes(service) {
            let roles = if order {
                vec!["node", "order-node"]
            } else {
                vec!["node"]
            };
            out.push((roles, n.addr));
        }
    }
    out
}

/// Parses a text exposition strictly enough to catch malformed output:
/// returns family → type; panics naming the first bad line.
fn parse_exposition(addr: &str, text: &str) -> BTreeMap<String, String> {
    let mut types = BTreeMap::new();
    let mut helps = BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(!help.trim().is_empty(), "{addr}: empty HELP for {name}");
            helps.insert(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{addr}: bad TYPE line {line}"
            );
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "{addr}: unexpected comment {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "{addr}: bad value in {line}"
        );
        let name = series.split('{').next().unwrap_or(series);
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "{addr}: bad labels in {line}"
                );
                for pair in labels[1..labels.len() - 1]
                    .split("\",")
                    .filter(|p| !p.is_empty())
                {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                            && v.starts_with('"'),
                        "{addr}: bad label in {line}"
                    );
                }
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "{addr}: sample of untyped family {line}"
        );
        assert!(
            helps.contains(family),
            "{addr}: family without HELP {family}"
        );
    }
    types
}

fn scrape(addr: &str) -> String {
    let (code, body) = http_get(addr, "/metrics", Duration::from_secs(5)).expect("scraped");
    assert_eq!(code, 200, "{addr}/metrics");
    body
}

/// Some of everything: writes, reads, checkouts that pay and that fail, a
/// consistency check of every service.
async fn traffic(cluster: &LocalCluster) {
    let client = Client::gateway(cluster);
    assert!(client.post("/stock/batch_init/10/1/1").await.ok());
    assert!(client.post("/payment/batch_init/10/1").await.ok());
    for user in 0..3 {
        let order = client
            .post(&format!("/orders/create/{user}"))
            .await
            .str("order_id");
        assert!(client
            .post(&format!("/orders/addItem/{order}/0/1"))
            .await
            .ok());
        let _ = client.post(&format!("/orders/checkout/{order}")).await;
    }
    assert_eq!(client.get("/stock/find/nope").await.status, 400);
    let coord = coordinator_admin(cluster, Service::Order, 0);
    let token = cluster.spec.cluster.admin_token.clone();
    let (status, body) = admin_call(
        reqwest::Method::POST,
        &coord,
        CHECK_ALL_PATH,
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually(
        "every service's check reported",
        Duration::from_secs(30),
        || async {
            for s in Service::ALL {
                common::service_view(cluster, s).await?.last_check?;
            }
            Some(())
        },
    )
    .await;
}

/// Every PromQL expression of every dashboard (panel targets and query
/// variables), with its dashboard and panel title.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let dir = repo().join("dashboards/grafana");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{name}: panel {title} has no query");
            for t in targets {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {title}: no expr"));
                out.push((name.clone(), title.clone(), expr.to_string()));
            }
        }
        for var in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if var["type"] == "query" {
                let q = var["query"].as_str().unwrap_or_default().to_string();
                out.push((name.clone(), format!("variable {}", var["name"]), q));
            }
        }
    }
    assert!(!out.is_empty(), "no dashboards in {}", dir.display());
    out
}

/// The metric names an expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("cart_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalogued_family_is_exported_where_listed_and_dashboards_name_only_real_metrics() {
    let cluster = cluster(&Service::ALL, |_| {});
    traffic(&cluster).await;
    let catalogue = catalogue();
    assert!(
        catalogue.len() > 40,
        "catalogue not read: {}",
        catalogue.len()
    );

    let mut exported: BTreeMap<String, String> = BTreeMap::new();
    let mut by_role: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (roles, addr) in processes(&cluster) {
        let families = parse_exposition(&addr, &scrape(&addr));
        for (family, kind) in &families {
            if !family.starts_with("cart_") {
                continue;
            }
            for role in &roles {
                by_role.entry(role).or_default().insert(family.clone());
            }
            exported.insert(family.clone(), kind.clone());
        }
    }
    for (family, (kind, roles)) in &catalogue {
        assert_eq!(
            exported.get(family),
            Some(kind),
            "{family}: type or presence"
        );
        for role in roles {
            let present = by_role
                .get(role.as_str())
                .is_some_and(|f| f.contains(family));
            assert!(present, "{family} missing on every {role}");
        }
    }
    let unlisted: Vec<&String> = exported
        .keys()
        .filter(|f| !catalogue.contains_key(*f))
        .collect();
    assert!(
        unlisted.is_empty(),
        "exported but not in docs/metrics.md: {unlisted:?}"
    );

    // Every metric a dashboard names is exported (histogram series by their
    // family).
    for (dashboard, panel, expr) in dashboard_queries() {
        for name in metric_names(&expr) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| exported.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(&name);
            assert!(
                exported.contains_key(family),
                "{dashboard}: {panel}: no metric {name}"
            );
        }
    }
}

fn run_promtool(promtool: &Path, args: &[&str]) {
    let out = Command::new(promtool)
        .args(args)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_config_the_rules_and_their_tests() {
    let Some(promtool) = require_tool("promtool") else {
        return;
    };
    let rules = repo().join("dashboards/prometheus/alerts.yml");
    let tests = repo().join("dashboards/prometheus/alerts_test.yml");
    run_promtool(&promtool, &["check", "rules", rules.to_str().unwrap()]);
    run_promtool(&promtool, &["test", "rules", tests.to_str().unwrap()]);
    let (_tmp, spec_path) = cart_cluster::harness::temp_spec(|_| {}).unwrap();
    let spec = cart_common::ClusterSpec::load(&spec_path).unwrap();
    let config = cart_cluster::prometheus::write_config(&spec, &Service::ALL, 15).unwrap();
    run_promtool(&promtool, &["check", "config", config.to_str().unwrap()]);
}

async fn prometheus_query(url: &str, query: &str) -> Value {
    reqwest::get(format!("{url}/api/v1/query?query={}", url_encode(query)))
        .await
        .expect("prometheus answers")
        .json()
        .await
        .expect("json")
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_fires_node_down_and_answers_every_dashboard_query() {
    if require_tool("prometheus").is_none() {
        return;
    }
    let mut cluster = cluster(&Service::ALL, |_| {});
    let url = cluster.start_prometheus(1).expect("prometheus starts");
    cluster
        .wait_ready(Duration::from_secs(60))
        .expect("prometheus ready");
    traffic(&cluster).await;
    let leader = cluster.leader(Service::Stock).unwrap();
    let victim = (1..=3).find(|n| *n != leader).unwrap();
    cluster.kill(Role::Node(Service::Stock, victim)).unwrap();
    let victim_label = victim.to_string();

    eventually("CartNodeDown firing", Duration::from_secs(60), || async {
        let alerts: Value = reqwest::get(format!("{url}/api/v1/alerts"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        alerts["data"]["alerts"].as_array()?.iter().find(|a| {
            a["labels"]["alertname"] == "CartNodeDown"
                && a["labels"]["service"] == "stock"
                && a["labels"]["node"] == victim_label.as_str()
                && a["state"] == "firing"
        })?;
        Some(())
    })
    .await;

    let mut empty = Vec::new();
    for (dashboard, panel, expr) in dashboard_queries() {
        if expr.starts_with("label_values") || expr == "prometheus" {
            continue;
        }
        let query = expr
            .replace("$__rate_interval", "30s")
            .replace("$__interval", "30s")
            .replace("$__range", "5m")
            .replace("${service:regex}", ".*")
            .replace("${instance:regex}", ".*")
            .replace("$service", ".*")
            .replace("$instance", ".*");
        let answer = prometheus_query(&url, &query).await;
        assert_eq!(
            answer["status"], "success",
            "{dashboard}: {panel}: {query}: {answer}"
        );
        let data = &answer["data"]["result"];
        let has_data = data.as_array().is_some_and(|r| !r.is_empty()) || data.is_string();
        if !has_data {
            empty.push(format!("{dashboard}: {panel}: {query}"));
        }
    }
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
}
