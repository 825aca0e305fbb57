//! Faults during load: SIGKILL a chosen process of a cluster this tool
//! started, at a given second of the run, and start it again later. The
//! moments go into the report as events, so the plots can mark them.

use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, bail};
use cart_cluster::harness::{LocalCluster, Role};
use cart_common::spec::NodeId;
use cart_common::Service;
use serde::Serialize;

use crate::stats::Stats;

/// Which process to kill, resolved when the moment comes (the leader at
/// second 20 is not necessarily the leader at second 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Target {
    Gateway,
    Leader(Service),
    Follower(Service),
    Coordinator(Service, u16),
    Node(Service, NodeId),
}

impl FromStr for Target {
    type Err = anyhow::Error;

    /// `gateway`, `<service>-leader`, `<service>-follower`,
    /// `<service>-coordinator-<i>`, `<service>-node-<id>`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if s == "gateway" {
            return Ok(Target::Gateway);
        }
        let (service, rest) = s
            .split_once('-')
            .ok_or_else(|| anyhow!("unknown process {s:?}: {}", Target::FORMS))?;
        let service: Service = service.parse().map_err(|e: String| anyhow!(e))?;
        let number = |n: &str| -> anyhow::Result<u64> {
            n.parse()
                .map_err(|_| anyhow!("{n:?} is not a number in {s:?}"))
        };
        match rest.split_once('-') {
            None if rest == "leader" => Ok(Target::Leader(service)),
            None if rest == "follower" => Ok(Target::Follower(service)),
            Some(("coordinator", i)) => {
                Ok(Target::Coordinator(service, u16::try_from(number(i)?)?))
            }
            Some(("node", id)) => Ok(Target::Node(service, number(id)?)),
            _ => bail!("unknown process {s:?}: {}", Target::FORMS),
        }
    }
}

impl Target {
    const FORMS: &'static str = "gateway, <service>-leader, <service>-follower, \
        <service>-coordinator-<i>, <service>-node-<id> (service: order, payment, stock)";

    /// The process this target names in `cluster` right now.
    pub fn resolve(self, cluster: &mut LocalCluster) -> anyhow::Result<Role> {
        Ok(match self {
            Target::Gateway => Role::Gateway,
            Target::Coordinator(s, i) => Role::Coordinator(s, i),
            Target::Node(s, id) => Role::Node(s, id),
            Target::Leader(s) => Role::Node(
                s,
                cluster
                    .leader(s)
                    .ok_or_else(|| anyhow!("{s} has no leader to kill"))?,
            ),
            Target::Follower(s) => {
                let leader = cluster.leader(s);
                let candidates: Vec<Role> = cluster
                    .roles()
                    .into_iter()
                    .filter(|r| matches!(r, Role::Node(rs, id) if *rs == s && Some(*id) != leader))
                    .collect();
                candidates
                    .into_iter()
                    .find(|r| !cluster.has_exited(*r))
                    .ok_or_else(|| anyhow!("{s} has no running follower to kill"))?
            }
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Gateway => write!(f, "gateway"),
            Target::Leader(s) => write!(f, "{s}-leader"),
            Target::Follower(s) => write!(f, "{s}-follower"),
            Target::Coordinator(s, i) => write!(f, "{s}-coordinator-{i}"),
            Target::Node(s, id) => write!(f, "{s}-node-{id}"),
        }
    }
}

/// `--kill stock-leader@20`: the target, and the second of the load.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Kill {
    pub target: Target,
    pub at_s: f64,
}

impl FromStr for Kill {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (target, at) = s
            .split_once('@')
            .ok_or_else(|| anyhow!("{s:?}: expected <process>@<second>, e.g. stock-leader@20"))?;
        let at_s: f64 = at
            .parse()
            .map_err(|_| anyhow!("{s:?}: {at:?} is not a number of seconds"))?;
        if !(at_s >= 0.0 && at_s.is_finite()) {
            bail!("{s:?}: the second must be 0 or more");
        }
        Ok(Kill {
            target: target.parse()?,
            at_s,
        })
    }
}

enum Action {
    Kill(Target),
    Restart(Role),
}

/// The kills and restarts still to come, run from the thread that owns the
/// cluster.
pub struct Schedule {
    pending: Vec<(f64, Action)>,
    restart_after_s: Option<f64>,
}

impl Schedule {
    pub fn new(kills: &[Kill], restart_after_s: Option<f64>) -> Self {
        let pending = kills
            .iter()
            .map(|k| (k.at_s, Action::Kill(k.target)))
            .collect();
        Self {
            pending,
            restart_after_s,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether `tick` at `elapsed_s` would carry anything out.
    pub fn is_due(&self, elapsed_s: f64) -> bool {
        self.pending.iter().any(|(at, _)| *at <= elapsed_s)
    }

    /// Carries out whatever is due at `elapsed_s`, recording each as an
    /// event. A fault that cannot be carried out is recorded, not fatal:
    /// the run and its figures are still worth having.
    pub fn tick(&mut self, elapsed_s: f64, cluster: &mut LocalCluster, stats: &Stats) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(at, _)| *at <= elapsed_s);
        self.pending = later;
        for (_, action) in due {
            match action {
                Action::Kill(target) => match target.resolve(cluster).and_then(|role| {
                    cluster.kill(role)?;
                    Ok(role)
                }) {
                    Ok(role) => {
                        stats.event("kill", format!("SIGKILL {} ({target})", role.name()));
                        eprintln!("killed {} ({target}) at {elapsed_s:.1} s", role.name());
                        // From when the process is gone (SIGKILL, then reaped),
                        // as the kill event records it.
                        if let Some(after) = self.restart_after_s {
                            let killed_at = stats.elapsed().as_secs_f64();
                            self.pending
                                .push((killed_at + after, Action::Restart(role)));
                        }
                    }
                    Err(e) => {
                        stats.event("kill_failed", format!("{target}: {e}"));
                        eprintln!("could not kill {target}: {e}");
                    }
                },
                Action::Restart(role) => match cluster.start_process(role) {
                    Ok(()) => {
                        stats.event("restart", format!("started {} again", role.name()));
                        eprintln!("restarted {} at {elapsed_s:.1} s", role.name());
                    }
                    Err(e) => {
                        stats.event("restart_failed", format!("{}: {e}", role.name()));
                        eprintln!("could not restart {}: {e}", role.name());
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_options_parse_every_documented_form() {
        let k: Kill = "stock-leader@20".parse().unwrap();
        assert_eq!(
            k,
            Kill {
                target: Target::Leader(Service::Stock),
                at_s: 20.0
            }
        );
        let k: Kill = "order-follower@0.5".parse().unwrap();
        assert_eq!(k.target, Target::Follower(Service::Order));
        assert_eq!(k.at_s, 0.5);
        assert_eq!(
            "payment-coordinator-1@3".parse::<Kill>().unwrap().target,
            Target::Coordinator(Service::Payment, 1)
        );
        assert_eq!(
            "stock-node-2@3".parse::<Kill>().unwrap().target,
            Target::Node(Service::Stock, 2)
        );
        assert_eq!("gateway@1".parse::<Kill>().unwrap().target, Target::Gateway);
        for t in [
            "stock-leader",
            "payment-follower",
            "order-coordinator-0",
            "stock-node-3",
            "gateway",
        ] {
            assert_eq!(t.parse::<Target>().unwrap().to_string(), t);
        }
    }

    #[test]
    fn malformed_kill_options_are_refused_with_a_reason() {
        for bad in [
            "stock-leader",
            "stock-leader@x",
            "stock-leader@-1",
            "shoes-leader@1",
            "stock-boss@1",
            "stock-node-x@1",
        ] {
            assert!(bad.parse::<Kill>().is_err(), "{bad} accepted");
        }
    }
}
