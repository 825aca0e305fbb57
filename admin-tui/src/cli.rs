//! Command-line options, and the settings they resolve to: which
//! coordinator to talk to first (the local cluster's by default, from the
//! one cluster spec every tool reads), which to fall back on, the token.

use std::path::PathBuf;
use std::time::Duration;

use cart_common::{ClusterSpec, Service};
use clap::Parser;

use crate::app::Access;

/// Admin address of the default local cluster's order coordinator 0, used
/// when neither `--addr` nor a spec says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8101";

/// Terminal console of the cart cluster: watch it, check and repair it.
#[derive(Debug, Parser)]
#[command(name = "cart-admin", version)]
pub struct Args {
    /// Admin address (host:port) of any coordinator. Default: order
    /// coordinator 0 of the spec (127.0.0.1:8101 for the local cluster).
    #[arg(long, env = "CART_ADMIN_ADDR")]
    pub addr: Option<String>,
    /// Cluster spec naming every coordinator (the first to talk to when
    /// --addr is not given, the others to fall back on). Default:
    /// cluster.toml, when no --addr is given.
    #[arg(long, env = "CART_SPEC")]
    pub spec: Option<PathBuf>,
    /// Admin bearer token for actions; without one the console is read-only.
    #[arg(long, env = "CART_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Refuse every action even with a token.
    #[arg(long)]
    pub read_only: bool,
    /// Refresh interval in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub interval_ms: u64,
}

/// What the console runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub addr: String,
    /// Other coordinators to try when `addr` does not answer.
    pub fallbacks: Vec<String>,
    pub token: Option<String>,
    pub access: Access,
    pub interval: Duration,
    /// A spec that was asked for and could not be read.
    pub spec_warning: Option<String>,
}

impl Args {
    pub fn resolve(self) -> Config {
        let token = self.token.filter(|t| !t.trim().is_empty());
        let access = if self.read_only {
            Access::ReadOnlyFlag
        } else if token.is_none() {
            Access::NoToken
        } else {
            Access::ReadWrite
        };
        // A spec from the working directory belongs to the local cluster:
        // read it only when no address points elsewhere.
        let explicit = self.spec.is_some();
        let spec_path = self
            .spec
            .or_else(|| self.addr.is_none().then(|| PathBuf::from("cluster.toml")));
        let (spec, spec_warning) = match spec_path.map(|p| (ClusterSpec::load(&p), p)) {
            Some((Ok(spec), _)) => (Some(spec), None),
            Some((Err(e), _)) if explicit => (None, Some(format!("{e:#}"))),
            _ => (None, None),
        };
        let all: Vec<String> = spec
            .iter()
            .flat_map(|spec| {
                Service::ALL
                    .iter()
                    .flat_map(|s| spec.coordinators(*s).into_iter().map(|c| c.admin))
            })
            .collect();
        let addr = self
            .addr
            .or_else(|| all.first().cloned())
            .unwrap_or_else(|| DEFAULT_ADDR.to_string());
        Config {
            fallbacks: all.into_iter().filter(|a| *a != addr).collect(),
            addr,
            token,
            access,
            interval: Duration::from_millis(self.interval_ms),
            spec_warning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        // The tests give every option on the command line; variables from
        // the caller's environment must not change what they see.
        for var in ["CART_ADMIN_ADDR", "CART_SPEC", "CART_ADMIN_TOKEN"] {
            std::env::remove_var(var);
        }
        let mut all = vec!["cart-admin"];
        all.extend(args);
        Args::try_parse_from(all).unwrap().resolve()
    }

    #[test]
    fn without_a_token_it_is_read_only() {
        let c = parse(&["--addr", "h:1"]);
        assert_eq!(c.access, Access::NoToken);
        assert_eq!(c.addr, "h:1");
        assert!(c.fallbacks.is_empty());
        assert_eq!(
            parse(&["--addr", "h:1", "--token", " "]).access,
            Access::NoToken
        );
    }

    #[test]
    fn the_read_only_flag_wins_over_a_token() {
        let c = parse(&["--addr", "h:1", "--token", "t", "--read-only"]);
        assert_eq!(c.access, Access::ReadOnlyFlag);
        assert_eq!(
            parse(&["--addr", "h:1", "--token", "t"]).access,
            Access::ReadWrite
        );
    }

    #[test]
    fn a_spec_names_the_first_coordinator_and_the_fallbacks() {
        let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../cluster.toml");
        let c = parse(&["--spec", spec]);
        assert_eq!(c.addr, DEFAULT_ADDR);
        assert_eq!(c.fallbacks.len(), 5);
        assert!(c.fallbacks.contains(&"127.0.0.1:8303".to_string()));
        let c = parse(&["--spec", "/nonexistent/cluster.toml", "--addr", "h:1"]);
        assert_eq!(c.addr, "h:1");
        assert!(c.spec_warning.is_some());
    }

    #[test]
    fn silly_intervals_are_refused() {
        assert!(Args::try_parse_from(["cart-admin", "--interval-ms", "0"]).is_err());
    }
}
