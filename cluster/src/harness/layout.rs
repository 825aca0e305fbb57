//! Where a cluster's files and ports are: the repository's default spec, a
//! spec for a test on free ports in a temporary directory, and the `cart`
//! binary to start.

use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use cart_common::ClusterSpec;

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

/// The repository's default cluster spec (`cluster.toml`).
pub const DEFAULT_SPEC: &str = include_str!("../../../cluster.toml");

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
