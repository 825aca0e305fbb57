//! Deployment files, checked without a container engine: the committed
//! compose deployment is what `cart compose` generates from `cluster.toml`
//! and `docker-compose config` accepts it; the Dockerfile is well formed and
//! describes a slim non-root runtime image with a health check (read, not
//! built: no container engine needed).

use std::path::{Path, PathBuf};
use std::process::Command;

use cart_common::spec::StorageBackend;
use cart_common::{ClusterSpec, Service};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_committed_compose_deployment_is_the_generators_output() {
    let spec = ClusterSpec::from_toml(cart_cluster::harness::DEFAULT_SPEC).unwrap();
    for (name, generated) in cart_cluster::compose::files(&spec) {
        let committed = std::fs::read_to_string(repo().join("compose").join(name))
            .unwrap_or_else(|e| panic!("compose/{name}: {e}"));
        assert!(
            committed == generated,
            "compose/{name} differs from the generator: run `cargo run -p cart-cluster -- compose`"
        );
    }
}

/// `docker-compose config -q` on a compose file; `false` (skipped) when
/// docker-compose is not installed here.
fn docker_compose_accepts(file: &Path) -> bool {
    let Some(found) = cart_cluster::harness::require_tool("docker-compose") else {
        return false;
    };
    let out = Command::new(found)
        .arg("-f")
        .arg(file)
        .args(["config", "-q"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// Prometheus in compose scrapes only containers the compose file runs (a
/// target that never answers would fire `CartTargetDown`).
#[test]
fn compose_prometheus_scrapes_only_containers_that_exist() {
    let prometheus = std::fs::read_to_string(repo().join("compose/prometheus.yml")).unwrap();
    let compose = std::fs::read_to_string(repo().join("compose/docker-compose.yml")).unwrap();
    let targets: Vec<&str> = prometheus
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- targets: ['"))
        .filter_map(|t| t.split(':').next())
        .collect();
    assert!(targets.len() >= 15, "{targets:?}");
    for host in targets {
        assert!(
            compose.contains(&format!("\n  {host}:\n")),
            "prometheus scrapes {host}, which compose does not run"
        );
    }
}

#[test]
fn docker_compose_accepts_the_compose_file() {
    docker_compose_accepts(Path::new("compose/docker-compose.yml"));
}

/// With the MongoDB backend every node gets a MongoDB container of its own,
/// with its own volume, started before the node, and the spec points each
/// node at it.
#[test]
fn a_mongodb_spec_gives_every_node_its_own_mongodb_container() {
    let mut spec = ClusterSpec::from_toml(cart_cluster::harness::DEFAULT_SPEC).unwrap();
    spec.storage.backend = StorageBackend::Mongodb;
    let files: std::collections::HashMap<_, _> =
        cart_cluster::compose::files(&spec).into_iter().collect();
    let compose = &files["docker-compose.yml"];
    let inside = ClusterSpec::from_toml(&files["cluster.toml"]).unwrap();
    assert_eq!(inside.storage.backend, StorageBackend::Mongodb);
    for service in Service::ALL {
        for node in spec.nodes(service) {
            let name = format!("{service}-node-{}", node.id);
            let mongo = format!("{name}-mongo");
            assert!(
                compose.contains(&format!("\n  {mongo}:\n")),
                "{mongo} service"
            );
            assert!(
                compose.contains(&format!("- {mongo}:/data/db\n")),
                "{mongo} volume"
            );
            assert!(
                compose.contains(&format!("\n  {mongo}: {{}}\n")),
                "{mongo} named volume"
            );
            let node_block = compose
                .split(&format!("\n  {name}:\n"))
                .nth(1)
                .and_then(|rest| rest.split("\n  ").find(|l| l.contains("depends_on")))
                .unwrap_or_default();
            assert!(node_block.contains(&mongo), "{name} starts after {mongo}");
            let (url, _) = inside
                .storage
                .mongodb_of(service, node.id, Default::default());
            assert_eq!(url, format!("mongodb://{mongo}:27017"));
        }
    }
    // The default (embedded) spec has none.
    let default = ClusterSpec::from_toml(cart_cluster::harness::DEFAULT_SPEC).unwrap();
    let files = cart_cluster::compose::files(&default);
    assert!(!files[0].1.contains("-mongo"));

    let dir = repo().join("target").join("compose-mongodb-test");
    cart_cluster::compose::write(&spec, &dir).unwrap();
    docker_compose_accepts(&dir.join("docker-compose.yml"));
}

#[test]
fn the_dockerfile_is_well_formed_and_describes_a_slim_non_root_image() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    // Join continuation lines, drop comments.
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        current.push_str(line.trim_end_matches('\\'));
        current.push(' ');
        if !line.ends_with('\\') {
            instructions.push(current.trim().to_string());
            current.clear();
        }
    }
    assert!(current.is_empty(), "dangling line continuation");
    const KNOWN: &[&str] = &[
        "FROM",
        "RUN",
        "COPY",
        "ENV",
        "USER",
        "VOLUME",
        "HEALTHCHECK",
        "ENTRYPOINT",
        "WORKDIR",
        "CMD",
        "EXPOSE",
        "ARG",
        "LABEL",
    ];
    let keywords: Vec<&str> = instructions
        .iter()
        .map(|i| i.split_whitespace().next().unwrap_or(""))
        .collect();
    for k in &keywords {
        assert!(KNOWN.contains(k), "unknown instruction {k}");
    }
    let froms: Vec<&String> = instructions
        .iter()
        .filter(|i| i.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage");
    assert!(froms[0].contains(" AS build"));
    // Slim: the runtime stage starts from a -slim base and takes only the
    // binary from the build stage (no toolchain, no sources).
    let base = froms[1].split_whitespace().nth(1).unwrap_or_default();
    assert!(
        base.ends_with("-slim"),
        "runtime base {base} is not a slim image"
    );
    let runtime = &instructions[instructions.iter().position(|i| i == froms[1]).unwrap()..];
    let from_build: Vec<&String> = runtime
        .iter()
        .filter(|i| i.starts_with("COPY --from=build"))
        .collect();
    assert_eq!(
        from_build,
        ["COPY --from=build /src/target/release/cart /usr/local/bin/cart"],
        "the runtime stage takes the release binary, nothing else, from the build"
    );
    // Non-root: the last USER is a user the image creates, with the uid the
    // Kubernetes pods run as (runAsUser: 10001), and it owns the volume.
    let user = runtime
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("a USER")
        .trim();
    assert!(user != "root" && user != "0", "the image runs as {user}");
    assert!(
        runtime.iter().any(|i| i.starts_with("RUN ")
            && i.contains(&format!(
                "useradd --system --uid 10001 --home-dir /data {user}"
            ))
            && i.contains(&format!("chown {user} /data"))),
        "the image creates {user} with uid 10001, owning /data"
    );
    assert!(runtime.iter().any(|i| i == "VOLUME /data"));
    assert!(runtime
        .iter()
        .any(|i| i.starts_with("HEALTHCHECK") && i.contains("/ready")));
    assert!(runtime.iter().any(|i| i == "ENTRYPOINT [\"cart\"]"));
}

#[test]
fn the_sharded_example_deploys_as_the_same_processes_carrying_its_shards() {
    let path = repo().join("cluster-sharded.toml");
    let sharded = ClusterSpec::load(&path).unwrap();
    let default = ClusterSpec::from_toml(cart_cluster::harness::DEFAULT_SPEC).unwrap();
    for service in Service::ALL {
        assert_eq!(sharded.shards(service), 3, "{service}");
        assert_eq!(sharded.nodes(service).len(), default.nodes(service).len());
    }
    // Compose: the same containers (shards live inside the node processes),
    // the spec inside them carrying the shard counts.
    let compose = |spec: &ClusterSpec| -> std::collections::HashMap<&str, String> {
        cart_cluster::compose::files(spec).into_iter().collect()
    };
    let (ours, theirs) = (compose(&sharded), compose(&default));
    let containers = |yml: &str| -> Vec<String> {
        yml.lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        containers(&ours["docker-compose.yml"]),
        containers(&theirs["docker-compose.yml"])
    );
    let inside = ClusterSpec::from_toml(&ours["cluster.toml"]).unwrap();
    assert!(Service::ALL.iter().all(|s| inside.shards(*s) == 3));
    // Kubernetes: the spec the pods load carries them too.
    let k8s = cart_cluster::k8s::files(&sharded, &repo().join("dashboards")).unwrap();
    let (name, spec_file) = k8s
        .iter()
        .find(|(name, _)| name.ends_with(".toml"))
        .expect("the spec file of the pods' ConfigMap");
    let pods = ClusterSpec::from_toml(spec_file).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(Service::ALL.iter().all(|s| pods.shards(*s) == 3), "{name}");
}
