//! The Kubernetes manifests (`k8s/`), checked offline: every overlay renders
//! with kustomize (kubectl's, from `target/k8s-tools`, which
//! `scripts/install-test-tools` installs) and every rendered object passes the
//! Kubernetes JSON schemas (`kubernetes-validate`, strict). Then what matters
//! for the cluster, on the rendered objects: the names the spec gives every
//! node and coordinator are their pods' DNS names, node ids come from pod
//! ordinals, ports and probes follow the spec's port layout, every node
//! StatefulSet has its headless Service and a budget that never lets a
//! voluntary disruption take a majority, and the Ingress reaches only
//! coordinators' public ports. The MongoDB component (`k8s/components/mongodb`,
//! rendered through `overlays/minikube-mongodb`) gives every node pod a
//! MongoDB server of its own and points the node at it; no other overlay
//! runs one. Without the tools these tests skip, saying why (under CI=true
//! they fail).
//!
//! `k8s/base` is generated (`cart k8s --out k8s/base`, from `cluster.toml`):
//! the committed files are checked equal to the generator's output, without
//! the tools.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cart_common::spec::{port_of, StorageBackend, MAX_NODES};
use cart_common::{ClusterSpec, Service};
use serde_json::Value;

const OVERLAYS: [&str; 3] = ["minikube", "cloud", MONGODB_OVERLAY];
/// The minikube overlay plus `k8s/components/mongodb`.
const MONGODB_OVERLAY: &str = "minikube-mongodb";
/// What the component sets on every node container.
const MONGODB_URL: &str = "mongodb://127.0.0.1:27017";

/// Whether an overlay includes the MongoDB component.
fn with_mongodb(overlay: &str) -> bool {
    overlay == MONGODB_OVERLAY
}
/// The oldest Kubernetes the manifests are for (StatefulSet `ordinals` is
/// GA there), and the newest the validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.31.0", "1.37.0"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// kubectl (with its kustomize), kubernetes-validate and the Python that
/// has PyYAML, all in the venv `scripts/install-test-tools` makes.
struct Tools {
    bin: PathBuf,
}

impl Tools {
    fn find() -> Option<Tools> {
        let bin = repo().join("target/k8s-tools/bin");
        let tools = Tools { bin };
        let missing: Vec<&str> = ["kubectl", "kubernetes-validate", "python"]
            .into_iter()
            .filter(|t| !tools.bin.join(t).is_file())
            .collect();
        if missing.is_empty() {
            return Some(tools);
        }
        cart_cluster::harness::missing(
            &format!("{} (in target/k8s-tools)", missing.join(", ")),
            cart_cluster::harness::INSTALL_TOOLS,
        )
    }

    fn tool(&self, name: &str) -> Command {
        Command::new(self.bin.join(name))
    }

    /// `kubectl kustomize` of an overlay.
    fn render(&self, overlay: &str) -> String {
        let out = self
            .tool("kubectl")
            .arg("kustomize")
            .arg(repo().join("k8s/overlays").join(overlay))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize k8s/overlays/{overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// YAML documents as JSON values (PyYAML).
    fn parse(&self, yaml: &str) -> Vec<Value> {
        let mut child = self
            .tool("python")
            .args([
                "-c",
                "import sys, json, yaml\n\
                 json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "parsing the rendered YAML");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn manifests(&self, overlay: &str) -> Manifests {
        let docs = self.parse(&self.render(overlay));
        Manifests {
            overlay: overlay.to_string(),
            docs,
        }
    }
}

/// One overlay's rendered objects.
struct Manifests {
    overlay: String,
    docs: Vec<Value>,
}

/// What `scripts/deploy/cluster --print` renders with `env`, kubectl
/// from the test tools.
fn cluster_script_print(tools: &Tools, env: &[(&str, &str)]) -> Manifests {
    let path = format!(
        "{}:{}",
        tools.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(repo().join("scripts/deploy/cluster"))
        .arg("--print")
        .env("PATH", path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Manifests {
        overlay: format!("{} scripts/deploy/cluster", names.join(" ")),
        docs: tools.parse(&String::from_utf8(out.stdout).unwrap()),
    }
}

impl Manifests {
    fn of_kind<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Value> + 'a {
        let kind = kind.to_string();
        self.docs
            .iter()
            .filter(move |d| d["kind"].as_str() == Some(kind.as_str()))
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind).find(|d| d["metadata"]["name"] == name)
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.overlay))
    }

    /// A generated object (ConfigMap, Secret): its name carries a hash.
    fn generated(&self, kind: &str, name: &str) -> &Value {
        let mut found = self.of_kind(kind).filter(|d| {
            d["metadata"]["name"]
                .as_str()
                .and_then(|n| n.strip_prefix(name))
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|hash| !hash.is_empty() && !hash.contains('-'))
        });
        let one = found
            .next()
            .unwrap_or_else(|| panic!("{}: no generated {kind} {name}", self.overlay));
        assert!(found.next().is_none(), "two generated {kind}s {name}");
        one
    }

    /// The spec file of the ConfigMap the cart pods mount.
    fn spec_text(&self) -> String {
        str_of(&self.generated("ConfigMap", "cart-spec")["data"]["cluster.toml"]).to_string()
    }

    fn spec(&self) -> ClusterSpec {
        ClusterSpec::from_toml(&self.spec_text()).unwrap()
    }

    /// Deployments and StatefulSets.
    fn workloads(&self) -> impl Iterator<Item = &Value> + '_ {
        self.docs
            .iter()
            .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
    }

    /// Workloads running the cart image (nodes, coordinators).
    fn cart_workloads(&self) -> impl Iterator<Item = &Value> + '_ {
        self.workloads().filter(|w| {
            let component = &w["metadata"]["labels"]["app.kubernetes.io/component"];
            component == "node" || component == "coordinator"
        })
    }

    /// The pod templates a selector picks.
    fn pods_selected(&self, selector: &Value) -> Vec<&Value> {
        self.workloads()
            .map(|w| &w["spec"]["template"])
            .filter(|t| selects(selector, &t["metadata"]["labels"]))
            .collect()
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn name_of(v: &Value) -> &str {
    str_of(&v["metadata"]["name"])
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Whether every label of a selector (matchLabels or a Service's map) is on
/// `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector
        .as_object()
        .unwrap_or_else(|| panic!("selector {selector} is not a map"));
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A pod template's containers and init containers (native sidecars among
/// them).
fn all_containers(template: &Value) -> impl Iterator<Item = &Value> + '_ {
    items(&template["spec"]["containers"])
        .iter()
        .chain(items(&template["spec"]["initContainers"]))
}

fn container<'a>(template: &'a Value, name: &str) -> &'a Value {
    items(&template["spec"]["containers"])
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// A container's literal environment variables.
fn env_values(c: &Value) -> BTreeMap<String, String> {
    items(&c["env"])
        .iter()
        .filter_map(|e| {
            Some((
                str_of(&e["name"]).to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn port_named(c: &Value, name: &str) -> Option<u16> {
    items(&c["ports"])
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| p["containerPort"].as_u64().unwrap() as u16)
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr)
}

/// Runs a shell snippet of a manifest (a command, a probe) as the pod would,
/// with `prefix` replaced by `echo`, and returns what it would have run.
fn shell_echo(script: &str, prefix: &str, env: &BTreeMap<String, String>) -> String {
    assert!(
        script.contains(prefix),
        "{script:?} does not run {prefix:?}"
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(script.replacen(prefix, "echo", 1))
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    assert!(out.status.success(), "sh -c {script:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn every_overlay_renders_and_passes_the_kubernetes_schemas() {
    let Some(tools) = Tools::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    for overlay in OVERLAYS {
        let yaml = tools.render(overlay);
        let count = tools.parse(&yaml).len();
        assert!(count > 20, "{overlay}: only {count} objects rendered");
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        for version in KUBERNETES_VERSIONS {
            let out = tools
                .tool("kubernetes-validate")
                .args(["--strict", "-k", version])
                .arg(&file)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "{overlay} against Kubernetes {version}:\n{text}"
            );
            let passed = text.lines().filter(|l| l.contains(" passed ")).count();
            assert_eq!(
                passed, count,
                "{overlay} against {version}: every object validated\n{text}"
            );
        }
    }
}

#[test]
fn nodes_are_statefulsets_named_as_the_spec_with_headless_services_and_budgets() {
    let Some(tools) = Tools::find() else { return };
    for overlay in OVERLAYS {
        let m = tools.manifests(overlay);
        let spec = m.spec();
        assert_eq!(m.of_kind("StatefulSet").count(), Service::ALL.len());
        for service in Service::ALL {
            let group = format!("{service}-node");
            let set = m.get("StatefulSet", &group);
            let s = &set["spec"];
            let replicas = s["replicas"].as_u64().unwrap();
            assert_eq!(
                replicas,
                u64::from(spec.size(service).nodes),
                "{overlay}: {group} replicas = [services.{service}] nodes of the spec"
            );
            assert_eq!(s["ordinals"]["start"], 1, "{group}: node ids start at 1");
            assert_eq!(
                s["podManagementPolicy"], "Parallel",
                "{group}: a node is ready only once its group has a leader"
            );
            assert!(selects(
                &s["selector"]["matchLabels"],
                &s["template"]["metadata"]["labels"]
            ));

            // The headless Service that gives every pod its DNS name.
            let service_name = str_of(&s["serviceName"]);
            assert_eq!(service_name, group);
            let headless = m.get("Service", service_name);
            assert_eq!(headless["spec"]["clusterIP"], "None", "{group} headless");
            assert_eq!(
                headless["spec"]["publishNotReadyAddresses"], true,
                "{group}: names resolve before the group has a leader"
            );
            assert_eq!(
                m.pods_selected(&headless["spec"]["selector"]),
                vec![&s["template"]],
                "{group}: its Service selects exactly its pods"
            );

            // At most one node of three down by a voluntary disruption.
            let budgets: Vec<&Value> = m
                .of_kind("PodDisruptionBudget")
                .filter(|b| {
                    selects(
                        &b["spec"]["selector"]["matchLabels"],
                        &s["template"]["metadata"]["labels"],
                    )
                })
                .collect();
            assert_eq!(budgets.len(), 1, "{overlay}: one budget for {group}");
            assert_eq!(budgets[0]["spec"]["maxUnavailable"], 1);
            assert!(budgets[0]["spec"]["minAvailable"].is_null());
            assert!(
                replicas - 1 > replicas / 2,
                "{group}: with one node disrupted, a majority of {replicas} stays up"
            );

            // Each pod runs the node its name says, at the spec's address.
            let template = &s["template"];
            let node = container(template, "node");
            let mut env = env_values(node);
            assert!(
                items(&node["env"]).iter().any(|e| e["name"] == "POD_NAME"
                    && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"),
                "{group}: POD_NAME from the downward API"
            );
            let script = items(&node["args"])
                .iter()
                .map(str_of)
                .collect::<Vec<_>>()
                .join(" ");
            assert_eq!(node["command"], serde_json::json!(["/bin/sh", "-c"]));
            for id in 1..=replicas {
                let pod = format!("{group}-{id}");
                let addr = spec.node_addr(service, id).unwrap();
                assert_eq!(
                    host_of(&addr),
                    format!("{pod}.{service_name}"),
                    "{overlay}: the spec names node {id} of {service} as its pod's DNS name"
                );
                env.insert("POD_NAME".into(), pod.clone());
                assert_eq!(
                    shell_echo(&script, "exec cart", &env),
                    format!("node --service {service} --id {id}"),
                    "{pod} runs node {id}"
                );
                for (probe, path) in [
                    ("startupProbe", "/status"),
                    ("livenessProbe", "/status"),
                    ("readinessProbe", "/ready"),
                ] {
                    let command = items(&node[probe]["exec"]["command"]);
                    assert_eq!(command.len(), 3, "{group} {probe}: sh -c <script>");
                    assert_eq!(
                        shell_echo(str_of(&command[2]), "curl -fsS -m 2 -o /dev/null", &env),
                        format!("http://127.0.0.1:{}{path}", port_of(&addr)),
                        "{pod} {probe} on its own port"
                    );
                }
            }
            // Ids beyond the spec's count (nodes added later) have ports too.
            assert!(replicas <= u64::from(MAX_NODES));

            // Data on the first claim, at the spec's data_dir (MongoDB's
            // claim, if any, comes second).
            let claims = items(&s["volumeClaimTemplates"]);
            let expected = if with_mongodb(overlay) { 2 } else { 1 };
            assert_eq!(claims.len(), expected, "{overlay}: {group}'s claims");
            let claim = str_of(&claims[0]["metadata"]["name"]);
            assert!(items(&node["volumeMounts"])
                .iter()
                .any(|v| v["name"] == claim && v["mountPath"] == "/data"));
            assert_eq!(spec.cluster.data_dir, Path::new("/data"));
        }
    }
}

#[test]
fn coordinators_match_the_spec_and_are_probed_on_their_admin_port() {
    let Some(tools) = Tools::find() else { return };
    for overlay in OVERLAYS {
        let m = tools.manifests(overlay);
        let spec = m.spec();
        for service in Service::ALL {
            let group = format!("{service}-coordinator");
            let deployments: Vec<&Value> = m
                .of_kind("Deployment")
                .filter(|d| {
                    d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == group
                })
                .collect();
            assert_eq!(
                deployments.len(),
                usize::from(spec.size(service).coordinators),
                "{overlay}: one Deployment per coordinator of [services.{service}]"
            );
            let mut all_labels = Vec::new();
            for coord in spec.coordinators(service) {
                let name = format!("{group}-{}", coord.index);
                let d = m.get("Deployment", &name);
                assert_eq!(d["spec"]["replicas"], 1, "{name}: one pod per index");
                let template = &d["spec"]["template"];
                all_labels.push(&template["metadata"]["labels"]);
                let pod = &template["spec"];
                // The spec's name for it is the pod's hostname.subdomain.
                let dns = format!("{}.{}", str_of(&pod["hostname"]), str_of(&pod["subdomain"]));
                assert_eq!(host_of(&coord.public), dns, "{overlay}: {name}'s DNS name");
                assert_eq!(host_of(&coord.admin), dns);
                let headless = m.get("Service", str_of(&pod["subdomain"]));
                assert_eq!(headless["spec"]["clusterIP"], "None");
                assert!(selects(
                    &headless["spec"]["selector"],
                    &template["metadata"]["labels"]
                ));

                let c = container(template, "coordinator");
                assert_eq!(
                    c["args"],
                    serde_json::json!([
                        "coordinator",
                        "--service",
                        service.name(),
                        "--index",
                        coord.index.to_string()
                    ])
                );
                assert_eq!(port_named(c, "public"), Some(port_of(&coord.public)));
                assert_eq!(port_named(c, "admin"), Some(port_of(&coord.admin)));
                for probe in ["readinessProbe", "livenessProbe"] {
                    let get = &c[probe]["httpGet"];
                    assert_eq!(get["path"], "/ready", "{name} {probe}");
                    assert_eq!(get["port"], "admin", "{name} {probe} on the admin port");
                }
                // Another Deployment's pods are never this one's.
                let own = m
                    .of_kind("Deployment")
                    .filter(|o| {
                        selects(
                            &d["spec"]["selector"]["matchLabels"],
                            &o["spec"]["template"]["metadata"]["labels"],
                        )
                    })
                    .count();
                assert_eq!(own, 1, "{name}'s selector picks only its own pods");
            }
            let budgets: Vec<&Value> = m
                .of_kind("PodDisruptionBudget")
                .filter(|b| {
                    all_labels
                        .iter()
                        .all(|l| selects(&b["spec"]["selector"]["matchLabels"], l))
                })
                .collect();
            assert_eq!(budgets.len(), 1, "{overlay}: a budget over {group}");
            assert_eq!(budgets[0]["spec"]["maxUnavailable"], 1);
        }
    }
}

#[test]
fn the_ingress_routes_public_prefixes_to_coordinators_public_ports_only() {
    let Some(tools) = Tools::find() else { return };
    for overlay in OVERLAYS {
        let m = tools.manifests(overlay);
        let spec = m.spec();
        let mut internal: BTreeSet<u16> = BTreeSet::new();
        for service in Service::ALL {
            internal.extend(spec.coordinators(service).iter().map(|c| port_of(&c.admin)));
            internal.extend(
                (1..=MAX_NODES).map(|id| port_of(&spec.node_addr(service, u64::from(id)).unwrap())),
            );
        }
        let ingresses: Vec<&Value> = m.of_kind("Ingress").collect();
        assert_eq!(ingresses.len(), 1, "{overlay}: one Ingress");
        let mut routed = BTreeSet::new();
        for rule in items(&ingresses[0]["spec"]["rules"]) {
            for path in items(&rule["http"]["paths"]) {
                let prefix = str_of(&path["path"]);
                assert_eq!(path["pathType"], "Prefix");
                let service: Service = prefix.trim_matches('/').parse().unwrap();
                assert_eq!(
                    service.path_prefix(),
                    format!("{prefix}/"),
                    "{prefix} is a public prefix of the API"
                );
                // Ingress port → Service port → each selected pod's port.
                let backend = &path["backend"]["service"];
                let svc = m.get("Service", str_of(&backend["name"]));
                assert_ne!(svc["spec"]["clusterIP"], "None");
                let svc_port = items(&svc["spec"]["ports"])
                    .iter()
                    .find(|p| {
                        p["name"] == backend["port"]["name"]
                            || p["port"] == backend["port"]["number"]
                    })
                    .unwrap_or_else(|| panic!("{prefix}: no such Service port"));
                let pods = m.pods_selected(&svc["spec"]["selector"]);
                assert_eq!(
                    pods.len(),
                    usize::from(spec.size(service).coordinators),
                    "{prefix} reaches every {service} coordinator and nothing else"
                );
                let mut ports = BTreeSet::new();
                for pod in pods {
                    for c in items(&pod["spec"]["containers"]) {
                        let port = match &svc_port["targetPort"] {
                            Value::String(name) => port_named(c, name),
                            Value::Number(n) => n.as_u64().map(|n| n as u16),
                            _ => panic!("{prefix}: targetPort missing"),
                        };
                        ports.extend(port);
                    }
                }
                let public: BTreeSet<u16> = spec
                    .coordinators(service)
                    .iter()
                    .map(|c| port_of(&c.public))
                    .collect();
                assert_eq!(
                    ports, public,
                    "{overlay}: {prefix} → the public ports of {service}'s coordinators"
                );
                assert!(
                    ports.is_disjoint(&internal),
                    "{prefix}: no admin or node port"
                );
                routed.insert(service);
            }
        }
        assert_eq!(
            routed.len(),
            Service::ALL.len(),
            "{overlay}: every service routed"
        );
    }
}

#[test]
fn the_spec_configmap_loads_as_the_pods_see_it() {
    let Some(tools) = Tools::find() else { return };
    for overlay in OVERLAYS {
        let m = tools.manifests(overlay);
        let dir = tempfile::tempdir().unwrap();
        for w in m.cart_workloads() {
            let name = name_of(w);
            let pod = &w["spec"]["template"]["spec"];
            assert_eq!(
                pod["enableServiceLinks"], false,
                "{name}: Service links would add CART_* variables the spec loader reads"
            );
            let c = &items(&pod["containers"])[0];
            let env = env_values(c);
            let spec_path = Path::new(&env["CART_SPEC"]);
            // CART_SPEC is on the mounted spec ConfigMap.
            let volume = items(&pod["volumes"])
                .iter()
                .find(|v| {
                    v["configMap"]["name"]
                        == m.generated("ConfigMap", "cart-spec")["metadata"]["name"]
                })
                .unwrap_or_else(|| panic!("{name}: the spec ConfigMap is not mounted"));
            assert!(items(&c["volumeMounts"]).iter().any(|v| {
                v["name"] == volume["name"]
                    && Path::new(str_of(&v["mountPath"])) == spec_path.parent().unwrap()
            }));
            // Secrets come from cart-secrets (generated by the minikube
            // overlay, created by scripts/deploy/cluster for the cloud).
            let mut secret_env = BTreeMap::new();
            for e in items(&c["env"]) {
                let r = &e["valueFrom"]["secretKeyRef"];
                if r.is_null() {
                    continue;
                }
                let key = str_of(&r["key"]);
                let value = if overlay.starts_with("minikube") {
                    let secret = m.generated("Secret", "cart-secrets");
                    assert_eq!(
                        r["name"], secret["metadata"]["name"],
                        "{name}: a rendered Secret"
                    );
                    assert!(secret["data"][key].is_string(), "cart-secrets has {key}");
                    format!("secret-{key}")
                } else {
                    assert_eq!(r["name"], "cart-secrets");
                    format!("secret-{key}")
                };
                secret_env.insert(str_of(&e["name"]).to_string(), value);
            }
            assert!(secret_env.contains_key("CART_CLUSTER_ADMIN_TOKEN"));
            assert!(secret_env.contains_key("CART_CLUSTER_INTERNAL_SECRET"));

            // ClusterSpec::load with this pod's environment, as `cart` does.
            let file = dir.path().join(format!("{name}.toml"));
            std::fs::write(&file, m.spec_text()).unwrap();
            let cart_env: Vec<(String, String)> = env
                .into_iter()
                .chain(secret_env)
                .filter(|(k, _)| k.starts_with("CART_"))
                .collect();
            for (k, v) in &cart_env {
                std::env::set_var(k, v);
            }
            let loaded = ClusterSpec::load(&file);
            for (k, _) in &cart_env {
                std::env::remove_var(k);
            }
            let spec = loaded.unwrap_or_else(|e| panic!("{overlay} {name}: {e:#}"));
            assert_eq!(spec.cluster.admin_token, "secret-admin_token");
            assert_eq!(spec.cluster.internal_secret, "secret-internal_secret");
            assert!(spec.cluster.bind_any, "listen on the pod's addresses");
            assert_eq!(spec.cluster.host_pattern.as_deref(), Some("{name}.{group}"));
            assert_eq!(
                spec.bind_addr(&spec.node_addr(Service::Stock, 2).unwrap()),
                "0.0.0.0:8351"
            );
            // Nodes of a MongoDB overlay choose the backend and their own
            // pod's server; everything else keeps the spec's embedded store.
            let node = w["metadata"]["labels"]["app.kubernetes.io/component"] == "node";
            if node && with_mongodb(overlay) {
                assert_eq!(spec.storage.backend, StorageBackend::Mongodb, "{name}");
                let service: Service = str_of(&w["metadata"]["labels"]["cart/service"])
                    .parse()
                    .unwrap();
                assert_eq!(
                    spec.storage.mongodb_of(service, 2, Default::default()),
                    (MONGODB_URL.into(), format!("cart_{service}_node_2")),
                    "{name}: the pod's own server, a database per node"
                );
            } else {
                assert_eq!(
                    spec.storage.backend,
                    StorageBackend::Embedded,
                    "{overlay} {name}"
                );
            }
        }
    }
}

#[test]
fn the_mongodb_overlay_gives_every_node_pod_its_own_server() {
    let Some(tools) = Tools::find() else { return };
    for overlay in OVERLAYS {
        let m = tools.manifests(overlay);
        if !with_mongodb(overlay) {
            for w in m.workloads() {
                let template = &w["spec"]["template"];
                for c in all_containers(template) {
                    assert!(
                        c["name"] != "mongo" && !str_of(&c["image"]).starts_with("mongo"),
                        "{overlay}: {} runs no MongoDB",
                        name_of(w)
                    );
                    assert!(
                        items(&c["env"])
                            .iter()
                            .all(|e| !str_of(&e["name"]).starts_with("CART_STORAGE_")),
                        "{overlay}: {} keeps the spec's storage",
                        name_of(w)
                    );
                }
            }
            continue;
        }
        assert_mongodb_sidecars(&m, None);
        // Only the nodes have one.
        for w in m.workloads().filter(|w| w["kind"] != "StatefulSet") {
            assert!(
                all_containers(&w["spec"]["template"]).all(|c| c["name"] != "mongo"),
                "{}: no MongoDB",
                name_of(w)
            );
        }
    }

    // scripts/deploy/cluster MONGODB=1: the component over the cloud
    // overlay, its claims in the nodes' storage class.
    let m = cluster_script_print(
        &tools,
        &[
            ("REGISTRY", "registry.test"),
            ("TAG", "1"),
            ("STORAGE_CLASS", "fast"),
            ("MONGODB", "1"),
        ],
    );
    assert_mongodb_sidecars(&m, Some("fast"));
}

/// Every node StatefulSet of `m` has a `mongo` sidecar on a claim of its
/// own and its node uses it; `storage_class`: the claims' class.
fn assert_mongodb_sidecars(m: &Manifests, storage_class: Option<&str>) {
    let overlay = &m.overlay;
    assert_eq!(m.of_kind("StatefulSet").count(), Service::ALL.len());
    for service in Service::ALL {
        let group = format!("{service}-node");
        let set = m.get("StatefulSet", &group);
        let template = &set["spec"]["template"];
        // A native sidecar: started (and probed) before the node, stopped
        // after it.
        let mongo = items(&template["spec"]["initContainers"])
            .iter()
            .find(|c| c["name"] == "mongo")
            .unwrap_or_else(|| panic!("{overlay}: {group} has no mongo sidecar"));
        assert_eq!(mongo["image"], "mongo:7.0", "{group}");
        assert_eq!(mongo["restartPolicy"], "Always", "{group}: a sidecar");
        assert_eq!(port_named(mongo, "mongodb"), Some(27017), "{group}");
        let args: Vec<&str> = items(&mongo["args"]).iter().map(str_of).collect();
        assert_eq!(args.first(), Some(&"mongod"), "{group}");
        for pair in [["--bind_ip", "127.0.0.1"], ["--port", "27017"]] {
            assert!(
                args.windows(2).any(|w| w == pair),
                "{group}: mongod {}, as the node's URL says",
                pair.join(" ")
            );
        }
        for probe in ["startupProbe", "readinessProbe"] {
            assert!(mongo[probe].is_object(), "{group}: mongo {probe}");
        }
        assert_eq!(
            mongo["securityContext"]["allowPrivilegeEscalation"], false,
            "{group}"
        );

        // Its data on a claim of its own.
        let claims = items(&set["spec"]["volumeClaimTemplates"]);
        let mount = items(&mongo["volumeMounts"])
            .iter()
            .find(|v| v["mountPath"] == "/data/db")
            .unwrap_or_else(|| panic!("{group}: mongo's /data/db is not mounted"));
        let claim = claims
            .iter()
            .find(|c| c["metadata"]["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{group}: /data/db is not on a claim"));
        assert_eq!(claim["metadata"]["name"], "mongo", "{group}");
        assert_ne!(
            claim["metadata"]["name"], claims[0]["metadata"]["name"],
            "{group}: not the node's claim"
        );
        if let Some(class) = storage_class {
            for c in claims {
                assert_eq!(c["spec"]["storageClassName"], class, "{group}");
            }
        }

        // The node container chooses MongoDB at its own pod's server.
        let node = container(template, "node");
        let env = env_values(node);
        assert_eq!(
            env.get("CART_STORAGE_BACKEND").map(String::as_str),
            Some("mongodb"),
            "{overlay}: {group}"
        );
        assert_eq!(
            env.get("CART_STORAGE_MONGODB_URL").map(String::as_str),
            Some(MONGODB_URL),
            "{overlay}: {group}"
        );
        assert!(
            items(&node["volumeMounts"])
                .iter()
                .all(|v| v["name"] != mount["name"]),
            "{group}: the node does not mount MongoDB's files"
        );
        assert_eq!(
            all_containers(template)
                .filter(|c| c["name"] == "mongo")
                .count(),
            1,
            "{group}: one server per pod"
        );
    }
}

/// The command that regenerates `k8s/base`.
const REGENERATE: &str = "cargo run -p cart-cluster -- k8s --out k8s/base";

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type().unwrap().is_dir() {
            files_under(&entry.path(), &format!("{name}/"), out);
        } else {
            out.insert(name);
        }
    }
}

#[test]
fn the_committed_k8s_base_is_the_generators_output() {
    let spec = ClusterSpec::from_toml(cart_cluster::harness::DEFAULT_SPEC).unwrap();
    let generated = cart_cluster::k8s::files(&spec, &repo().join("dashboards")).unwrap();
    let base = repo().join("k8s/base");
    for (name, text) in &generated {
        let committed = std::fs::read_to_string(base.join(name)).unwrap_or_default();
        assert!(
            &committed == text,
            "k8s/base/{name} differs from the generator: run `{REGENERATE}`"
        );
    }
    let mut committed = BTreeSet::new();
    files_under(&base, "", &mut committed);
    let expected: BTreeSet<String> = generated.into_iter().map(|(name, _)| name).collect();
    let stale: Vec<&String> = committed.difference(&expected).collect();
    assert!(
        stale.is_empty(),
        "k8s/base has files the generator does not write: {stale:?} (run `{REGENERATE}`, \
         which removes stale dashboard copies)"
    );
}

/// A generated file without its opening comment lines.
fn without_header(text: &str) -> String {
    text.lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The Prometheus config for the k8s spec: the generator's (every
/// coordinator and node by its DNS name, the labels the dashboards expect)
/// without the gateway, which Kubernetes does not run.
fn k8s_prometheus_config() -> String {
    let text = std::fs::read_to_string(repo().join("k8s/base/cluster.toml")).unwrap();
    let mut spec = ClusterSpec::from_toml(&text).unwrap();
    let empty = tempfile::tempdir().unwrap();
    spec.cluster.data_dir = empty.path().to_path_buf(); // spec nodes only
    let generated = cart_cluster::prometheus::config(
        &spec,
        &Service::ALL,
        15,
        Path::new("/etc/prometheus/alerts.yml"),
        false,
    );
    without_header(&generated)
}

#[test]
fn the_observability_files_are_the_repositorys() {
    let base = repo().join("k8s/base/observability");
    let mut expected = vec![
        (
            "alerts.yml".to_string(),
            std::fs::read_to_string(repo().join("dashboards/prometheus/alerts.yml")).unwrap(),
        ),
        (
            "grafana-datasource.yml".into(),
            std::fs::read_to_string(
                repo().join("dashboards/provisioning/datasources/prometheus.yml"),
            )
            .unwrap(),
        ),
        (
            "grafana-dashboards.yml".into(),
            std::fs::read_to_string(repo().join("dashboards/provisioning/dashboards/cart.yml"))
                .unwrap(),
        ),
    ];
    let mut dashboards: Vec<PathBuf> = std::fs::read_dir(repo().join("dashboards/grafana"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    dashboards.sort();
    assert!(!dashboards.is_empty());
    for d in &dashboards {
        let name = d.file_name().unwrap().to_string_lossy();
        expected.push((
            format!("dashboards/{name}"),
            std::fs::read_to_string(d).unwrap(),
        ));
    }
    // The scrape config (below its opening comment) is the generator's for
    // the committed k8s spec.
    let prometheus = std::fs::read_to_string(base.join("prometheus.yml")).unwrap();
    assert!(
        without_header(&prometheus) == k8s_prometheus_config(),
        "k8s/base/observability/prometheus.yml is out of date: run `{REGENERATE}`"
    );
    expected.push(("prometheus.yml".into(), prometheus));
    // Every dashboard is in the generator of the kustomization.
    let kustomization =
        std::fs::read_to_string(repo().join("k8s/base/kustomization.yaml")).unwrap();
    for (name, content) in &expected {
        let path = base.join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            &committed == content,
            "k8s/base/observability/{name} is out of date: run `{REGENERATE}`"
        );
        assert!(
            kustomization.contains(&format!("observability/{name}")),
            "k8s/base/kustomization.yaml does not use observability/{name}"
        );
    }
    let copies = std::fs::read_dir(base.join("dashboards")).unwrap().count();
    assert_eq!(copies, dashboards.len(), "no stale dashboard copies");
}

#[test]
fn pods_with_metrics_are_annotated_and_every_process_is_scraped() {
    let Some(tools) = Tools::find() else { return };
    for overlay in OVERLAYS {
        let m = tools.manifests(overlay);
        let spec = m.spec();
        for w in m.workloads() {
            let name = name_of(w);
            let template = &w["spec"]["template"];
            let a = &template["metadata"]["annotations"];
            let component = &template["metadata"]["labels"]["app.kubernetes.io/component"];
            assert_eq!(a["prometheus.io/path"], "/metrics", "{name}");
            if component == "node" {
                // A node's port depends on its id: no one port for the
                // template to name. The bundled Prometheus scrapes them by name.
                assert_eq!(a["prometheus.io/scrape"], "false", "{name}");
                continue;
            }
            assert_eq!(a["prometheus.io/scrape"], "true", "{name}");
            let port: u16 = str_of(&a["prometheus.io/port"]).parse().unwrap();
            let declared = items(&template["spec"]["containers"])
                .iter()
                .flat_map(|c| items(&c["ports"]))
                .any(|p| p["containerPort"] == port);
            assert!(
                declared,
                "{name}: the annotated port {port} is a container port"
            );
            if component == "coordinator" {
                let index: u16 = str_of(&template["metadata"]["labels"]["cart/index"])
                    .parse()
                    .unwrap();
                let service: Service = str_of(&template["metadata"]["labels"]["cart/service"])
                    .parse()
                    .unwrap();
                let coord = spec.coordinator(service, index).unwrap();
                assert_eq!(
                    port,
                    port_of(&coord.admin),
                    "{name}: metrics on the admin port"
                );
            }
        }
        // The bundled Prometheus has every node and coordinator of the spec.
        let config =
            str_of(&m.generated("ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
                .to_string();
        for service in Service::ALL {
            for n in spec.nodes(service) {
                assert!(
                    config.contains(&format!("['{}']", n.addr)),
                    "{overlay}: scrapes {}",
                    n.addr
                );
            }
            for c in spec.coordinators(service) {
                assert!(
                    config.contains(&format!("['{}']", c.admin)),
                    "{overlay}: scrapes {}",
                    c.admin
                );
            }
        }
        assert!(
            !config.contains(&spec.gateway_admin_addr()) && !config.contains("role: 'gateway'"),
            "{overlay}: no gateway target (Kubernetes runs none)"
        );
        let dashboards = m.generated("ConfigMap", "grafana-dashboards");
        assert!(dashboards["data"].as_object().unwrap().len() >= 4);
    }
}

#[test]
fn each_overlay_sets_its_image_storage_and_ingress_class() {
    let Some(tools) = Tools::find() else { return };
    for overlay in ["minikube", MONGODB_OVERLAY] {
        let m = tools.manifests(overlay);
        for w in m.cart_workloads() {
            let c = &items(&w["spec"]["template"]["spec"]["containers"])[0];
            assert_eq!(
                c["image"],
                "cart:dev",
                "{}: the image built in minikube",
                name_of(w)
            );
            assert_eq!(c["imagePullPolicy"], "Never", "{}", name_of(w));
        }
        // Every claim small, MongoDB's too.
        for s in m.of_kind("StatefulSet") {
            for claim in items(&s["spec"]["volumeClaimTemplates"]) {
                assert_eq!(
                    claim["spec"]["resources"]["requests"]["storage"],
                    "1Gi",
                    "{overlay}: {}",
                    name_of(s)
                );
            }
        }
        assert_eq!(
            m.get("Ingress", "cart")["spec"]["ingressClassName"],
            "nginx"
        );
    }

    let m = tools.manifests("cloud");
    assert!(
        m.find("Secret", "cart-secrets").is_none(),
        "the cloud's secrets are not in git"
    );
    for w in m.cart_workloads() {
        let c = &items(&w["spec"]["template"]["spec"]["containers"])[0];
        assert!(c["imagePullPolicy"].is_null(), "{}", name_of(w));
        assert!(
            c["resources"]["requests"]["cpu"].is_string(),
            "{}: requests",
            name_of(w)
        );
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{}: limits",
            name_of(w)
        );
    }
    for s in m.of_kind("StatefulSet") {
        assert_eq!(
            s["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
            "standard"
        );
    }
    assert_eq!(
        m.get("Ingress", "cart")["spec"]["ingressClassName"],
        "nginx"
    );

    // scripts/deploy/cluster puts $REGISTRY/cart:$TAG and its options over
    // the cloud overlay.
    let m = cluster_script_print(
        &tools,
        &[
            ("REGISTRY", "registry.test/team/"),
            ("TAG", "1.2.3"),
            ("STORAGE_CLASS", "fast"),
            ("INGRESS_HOST", "cart.test"),
        ],
    );
    let mut images = BTreeSet::new();
    for w in m.cart_workloads() {
        images.insert(
            str_of(&items(&w["spec"]["template"]["spec"]["containers"])[0]["image"]).to_string(),
        );
    }
    assert_eq!(
        images,
        BTreeSet::from(["registry.test/team/cart:1.2.3".to_string()])
    );
    for s in m.of_kind("StatefulSet") {
        assert_eq!(
            s["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
            "fast"
        );
    }
    assert_eq!(
        m.get("Ingress", "cart")["spec"]["rules"][0]["host"],
        "cart.test"
    );
    let leftovers: Vec<_> = std::fs::read_dir(repo().join("k8s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".deploy."))
        .collect();
    assert!(leftovers.is_empty(), "the script left {leftovers:?}");
}

#[test]
fn the_deploy_scripts_parse_and_explain_their_usage() {
    for script in ["build-push", "minikube", "cluster", "member"] {
        let path = repo().join("scripts/deploy").join(script);
        let out = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("#!/usr/bin/env bash\n"), "{script}");
        assert!(text.contains("set -euo pipefail"), "{script}");
        // A wrong invocation answers with the usage, exit 2, and does nothing.
        let out = Command::new(&path)
            .arg("--no-such-option")
            .env_remove("REGISTRY")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{script}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("usage: "),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
