//! Faults during load: SIGKILL a chosen process of a cluster this tool
//! started, at a given second of the run, and start it again later; or,
//! for a cluster on test hosts (`--netns`), a network fault (a nemesis of
//! `harness::netns`) healed some seconds later. The moments go into the
//! report as events, so the plots can mark them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail};
use cart_cluster::harness::netns::{Delay, TestNet};
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

/// A network fault, on the hosts of the processes it names (resolved when
/// it strikes).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Nemesis {
    /// `isolate:<process>`: cut off from every other host.
    Isolate(Target),
    /// `split:<process>,<process>...`: these hosts apart from the rest.
    Split(Vec<Target>),
    /// `one-way:<a>,<b>`: `a` reaches `b`; what `b` sends `a` is dropped.
    OneWay(Target, Target),
    /// `loss<percent>:<a>,<b>`: that share of their packets dropped.
    Loss(u8, Target, Target),
    /// `delay<ms>[~<ms>]:<a>,<b>`: each packet between them held that many
    /// milliseconds each way, ± the jitter after `~`.
    Delay {
        ms: u64,
        jitter_ms: u64,
        a: Target,
        b: Target,
    },
    /// `bridge-down`: every link at once.
    BridgeDown,
}

impl Nemesis {
    const FORMS: &'static str = "isolate:<process>, split:<process>[,<process>...], \
        one-way:<a>,<b>, loss<percent>:<a>,<b>, delay<ms>[~<ms>]:<a>,<b>, bridge-down";

    /// Applies it to the hosts of `cluster`; what it did.
    fn strike(&self, cluster: &mut LocalCluster) -> anyhow::Result<String> {
        let mut name = |t: &Target| t.resolve(cluster).map(|r| r.name());
        let names: Vec<String> = match self {
            Nemesis::Isolate(t) => vec![name(t)?],
            Nemesis::Split(ts) => ts.iter().map(&mut name).collect::<anyhow::Result<_>>()?,
            Nemesis::OneWay(a, b) | Nemesis::Loss(_, a, b) | Nemesis::Delay { a, b, .. } => {
                vec![name(a)?, name(b)?]
            }
            Nemesis::BridgeDown => vec![],
        };
        let net = test_hosts(cluster)?;
        match self {
            Nemesis::Isolate(_) => net.isolate(&names[0])?,
            Nemesis::Split(_) => {
                let side: Vec<&str> = names.iter().map(String::as_str).collect();
                net.split(&side)?
            }
            Nemesis::OneWay(..) => net.one_way(&names[0], &names[1])?,
            Nemesis::Loss(p, ..) => net.lossy(&names[0], &names[1], *p)?,
            Nemesis::Delay { ms, jitter_ms, .. } => {
                let delay = Delay {
                    mean: Duration::from_millis(*ms),
                    jitter: Duration::from_millis(*jitter_ms),
                };
                net.delay(&names[0], &names[1], delay)?
            }
            Nemesis::BridgeDown => net.bridge_down()?,
        }
        Ok(net
            .events()
            .last()
            .map(|e| e.what.clone())
            .unwrap_or_default())
    }
}

fn test_hosts(cluster: &mut LocalCluster) -> anyhow::Result<&mut TestNet> {
    cluster
        .net()
        .ok_or_else(|| anyhow!("network faults need a cluster on test hosts (--netns)"))
}

impl FromStr for Nemesis {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        if s == "bridge-down" {
            return Ok(Nemesis::BridgeDown);
        }
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| anyhow!("unknown fault {s:?}: {}", Nemesis::FORMS))?;
        let targets: Vec<Target> = rest
            .split(',')
            .map(str::parse)
            .collect::<anyhow::Result<_>>()?;
        let pair = || match targets.as_slice() {
            [a, b] => Ok((*a, *b)),
            _ => Err(anyhow!("{s:?}: expected two processes, <a>,<b>")),
        };
        match (kind, targets.as_slice()) {
            ("isolate", [t]) => Ok(Nemesis::Isolate(*t)),
            ("split", ts) if !ts.is_empty() => Ok(Nemesis::Split(ts.to_vec())),
            ("one-way", _) => pair().map(|(a, b)| Nemesis::OneWay(a, b)),
            (loss, _) if loss.starts_with("loss") => {
                let percent: u8 = loss["loss".len()..]
                    .parse()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| anyhow!("{s:?}: loss<percent> takes 0 to 100"))?;
                pair().map(|(a, b)| Nemesis::Loss(percent, a, b))
            }
            (delay, _) if delay.starts_with("delay") => {
                let spec = &delay["delay".len()..];
                let (ms, jitter) = spec.split_once('~').unwrap_or((spec, "0"));
                let (ms, jitter_ms) = ms
                    .parse()
                    .ok()
                    .zip(jitter.parse().ok())
                    .filter(|(ms, _): &(u64, u64)| *ms <= 60_000)
                    .ok_or_else(|| {
                        anyhow!("{s:?}: delay<ms>[~<ms>] takes milliseconds, at most 60000")
                    })?;
                pair().map(|(a, b)| Nemesis::Delay {
                    ms,
                    jitter_ms,
                    a,
                    b,
                })
            }
            _ => bail!("unknown fault {s:?}: {}", Nemesis::FORMS),
        }
    }
}

/// `--fault isolate:stock-leader@10+5`: a nemesis at a second of the load,
/// healed (every fault at once) that many seconds later, or at the end.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetFault {
    pub nemesis: Nemesis,
    pub at_s: f64,
    pub for_s: Option<f64>,
}

impl FromStr for NetFault {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (nemesis, when) = s.rsplit_once('@').ok_or_else(|| {
            anyhow!("{s:?}: expected <fault>@<second>[+<seconds>], e.g. isolate:stock-leader@10+5")
        })?;
        let (at, lasts) = match when.split_once('+') {
            Some((at, lasts)) => (at, Some(lasts)),
            None => (when, None),
        };
        let seconds = |v: &str| -> anyhow::Result<f64> {
            v.parse::<f64>()
                .ok()
                .filter(|x| *x >= 0.0 && x.is_finite())
                .ok_or_else(|| anyhow!("{s:?}: {v:?} is not a number of seconds (0 or more)"))
        };
        Ok(NetFault {
            nemesis: nemesis.parse()?,
            at_s: seconds(at)?,
            for_s: lasts.map(seconds).transpose()?,
        })
    }
}

enum Action {
    Kill(Target),
    Restart(Role),
    Strike(Nemesis),
    Heal,
}

/// The kills and restarts still to come, run from the thread that owns the
/// cluster.
pub struct Schedule {
    pending: Vec<(f64, Action)>,
    restart_after_s: Option<f64>,
    /// A network fault struck and no heal came after it.
    unhealed: bool,
}

impl Schedule {
    pub fn new(kills: &[Kill], restart_after_s: Option<f64>, faults: &[NetFault]) -> Self {
        let mut pending: Vec<(f64, Action)> = kills
            .iter()
            .map(|k| (k.at_s, Action::Kill(k.target)))
            .collect();
        for f in faults {
            pending.push((f.at_s, Action::Strike(f.nemesis.clone())));
            if let Some(lasts) = f.for_s {
                pending.push((f.at_s + lasts, Action::Heal));
            }
        }
        Self {
            pending,
            restart_after_s,
            unhealed: false,
        }
    }

    /// The load is over: network faults still to come are dropped, and
    /// those in place healed now.
    pub fn end_load(&mut self, elapsed_s: f64, cluster: &mut LocalCluster, stats: &Stats) {
        self.pending
            .retain(|(_, a)| !matches!(a, Action::Strike(_) | Action::Heal));
        if self.unhealed {
            self.heal(elapsed_s, cluster, stats);
        }
    }

    /// Removes every network fault, recording it.
    fn heal(&mut self, elapsed_s: f64, cluster: &mut LocalCluster, stats: &Stats) {
        match test_hosts(cluster).and_then(|net| net.heal()) {
            Ok(()) => {
                self.unhealed = false;
                stats.event("heal", "every network fault removed");
                eprintln!("healed at {elapsed_s:.1} s");
            }
            Err(e) => {
                stats.event("heal_failed", e.to_string());
                eprintln!("could not heal: {e}");
            }
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
                Action::Strike(nemesis) => match nemesis.strike(cluster) {
                    Ok(what) => {
                        self.unhealed = true;
                        stats.event("fault", what.clone());
                        eprintln!("{what} at {elapsed_s:.1} s");
                    }
                    Err(e) => {
                        stats.event("fault_failed", format!("{nemesis:?}: {e}"));
                        eprintln!("could not apply {nemesis:?}: {e}");
                    }
                },
                Action::Heal => self.heal(elapsed_s, cluster, stats),
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
    fn fault_options_parse_every_documented_form() {
        let f: NetFault = "isolate:stock-leader@10+5".parse().unwrap();
        assert_eq!(
            f,
            NetFault {
                nemesis: Nemesis::Isolate(Target::Leader(Service::Stock)),
                at_s: 10.0,
                for_s: Some(5.0)
            }
        );
        let f: NetFault = "split:order-node-1,order-node-2@3".parse().unwrap();
        assert_eq!(
            f.nemesis,
            Nemesis::Split(vec![
                Target::Node(Service::Order, 1),
                Target::Node(Service::Order, 2)
            ])
        );
        assert_eq!(f.for_s, None);
        assert_eq!(
            "one-way:stock-follower,stock-leader@1"
                .parse::<NetFault>()
                .unwrap()
                .nemesis,
            Nemesis::OneWay(
                Target::Follower(Service::Stock),
                Target::Leader(Service::Stock)
            )
        );
        assert_eq!(
            "loss30:payment-leader,payment-node-2@1.5+2"
                .parse::<NetFault>()
                .unwrap()
                .nemesis,
            Nemesis::Loss(
                30,
                Target::Leader(Service::Payment),
                Target::Node(Service::Payment, 2)
            )
        );
        assert_eq!(
            "delay40~10:stock-leader,stock-node-3@2+5"
                .parse::<NetFault>()
                .unwrap()
                .nemesis,
            Nemesis::Delay {
                ms: 40,
                jitter_ms: 10,
                a: Target::Leader(Service::Stock),
                b: Target::Node(Service::Stock, 3)
            }
        );
        assert_eq!(
            "delay100:order-leader,order-follower@0"
                .parse::<NetFault>()
                .unwrap()
                .nemesis,
            Nemesis::Delay {
                ms: 100,
                jitter_ms: 0,
                a: Target::Leader(Service::Order),
                b: Target::Follower(Service::Order)
            }
        );
        assert_eq!(
            "bridge-down@4+1".parse::<NetFault>().unwrap().nemesis,
            Nemesis::BridgeDown
        );
    }

    #[test]
    fn malformed_fault_options_are_refused_with_a_reason() {
        for bad in [
            "isolate:stock-leader",
            "isolate:stock-leader@x",
            "isolate:stock-leader@1+-2",
            "isolate:stock-leader,stock-follower@1",
            "one-way:stock-leader@1",
            "loss101:stock-leader,stock-follower@1",
            "lossy:stock-leader,stock-follower@1",
            "delay:stock-leader,stock-follower@1",
            "delay40~x:stock-leader,stock-follower@1",
            "delay-5:stock-leader,stock-follower@1",
            "delay90000:stock-leader,stock-follower@1",
            "delay40:stock-leader@1",
            "flood:stock-leader@1",
            "isolate:shoes-leader@1",
        ] {
            assert!(bad.parse::<NetFault>().is_err(), "{bad} accepted");
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
