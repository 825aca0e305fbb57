//! Test hosts: every process of a cluster in a network namespace of its
//! own, with an address of its own on a bridge the test creates, and the
//! nemeses that cut, drop and heal the links between them (issue 18).
//!
//! Nemeses: isolate a host, split the hosts in two, a one-way partition, a
//! lossy link (a share of the packets dropped at random), a slow link
//! (latency and jitter, `delay`), the bridge down (every link at once), and
//! heal.
//!
//! Layout, for a cluster made by the process whose pid is `P`:
//!
//! - the bridge `cbrP` in the root namespace, with `198.18.X.1/24`: the
//!   observer, i.e. the test itself (its HTTP client, the harness's probes);
//!   `X` is the first /24 of 198.18.0.0/16 that no interface is in;
//! - per process, the namespace `cart-P-<name>` (`cart-P-order-node-1`),
//!   with loopback and `eth0`, a veth whose peer `cvPxI` is on the bridge,
//!   at `198.18.X.(10 + I)`. No default route: nothing leaves 198.18.X.0/24.
//!
//! Only addresses in the benchmarking range 198.18.0.0/15 are used. Faults
//! are nftables rules in the receiving host's namespace (`table inet
//! cart`): a blocked direction drops packets from one host at another's
//! input, a lossy one drops a share of them at random. The observer is
//! never blocked, so the test can still ask an isolated node what it
//! thinks. Dropping a `TestNet` removes the namespaces and the bridge (also
//! when a test panics); namespaces and bridges left by a process that is
//! gone (a test killed with SIGKILL) are removed by the next `create`.
//!
//! Latency and jitter are not `tc netem` (the kernel of the machine this
//! was built on has none) but an iptables NFQUEUE rule at the receiving
//! host's input and a thread of this process that holds the queued packets
//! (`delay`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};

mod delay;
pub use delay::Delay;
use delay::DelayedQueue;

const NS_PREFIX: &str = "cart-";
/// iptables without nftables underneath: `nft`'s `flush ruleset` leaves
/// its tables alone, and its NFQUEUE target needs no `nft_compat`.
const IPTABLES_RESTORE: &str = "iptables-legacy-restore";
const BRIDGE_PREFIX: &str = "cbr";
/// The first host's last octet; the observer (bridge) is .1.
const FIRST_HOST: usize = 10;

/// One process's host.
#[derive(Clone, Debug)]
pub struct Host {
    pub netns: String,
    pub addr: String,
}

/// A fault or heal, with when it happened (for reports and plots).
#[derive(Clone, Debug)]
pub struct NetEvent {
    pub at: Instant,
    pub what: String,
}

/// The namespaces, the bridge and the faults between them.
pub struct TestNet {
    bridge: String,
    observer: String,
    hosts: BTreeMap<String, Host>,
    /// Directions whose packets are dropped: (from, to) by process name.
    blocked: BTreeSet<(String, String)>,
    /// Directions losing a share of their packets, in percent.
    lossy: BTreeMap<(String, String), u8>,
    /// Directions whose packets are held, each by the thread of its queue.
    delayed: BTreeMap<(String, String), DelayedQueue>,
    /// Hosts whose iptables rules were set (and must be reset at a heal).
    queueing: BTreeSet<String>,
    events: Vec<NetEvent>,
}

impl TestNet {
    /// Whether this machine can make test hosts: root, `ip`, `nft` and
    /// `iptables-legacy-restore` (for the delays).
    pub fn missing_tool() -> Option<&'static str> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("root (network namespaces)");
        }
        ["ip", "nft", IPTABLES_RESTORE]
            .into_iter()
            .find(|tool| super::find_tool(tool).is_none())
    }

    /// A host for each of `names` (process names), on a new bridge.
    pub fn create(names: &[String]) -> anyhow::Result<Self> {
        remove_stale();
        let pid = std::process::id();
        let subnet = free_subnet()?;
        let bridge = format!("{BRIDGE_PREFIX}{pid}");
        let observer = format!("198.18.{subnet}.1");
        let mut net = TestNet {
            bridge: bridge.clone(),
            observer: observer.clone(),
            hosts: BTreeMap::new(),
            blocked: BTreeSet::new(),
            lossy: BTreeMap::new(),
            delayed: BTreeMap::new(),
            queueing: BTreeSet::new(),
            events: Vec::new(),
        };
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{observer}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for (i, name) in names.iter().enumerate() {
            let netns = format!("{NS_PREFIX}{pid}-{name}");
            let addr = format!("198.18.{subnet}.{}", FIRST_HOST + i);
            // Recorded first, so that a failure below still removes it.
            net.hosts.insert(
                name.clone(),
                Host {
                    netns: netns.clone(),
                    addr: addr.clone(),
                },
            );
            let peer = format!("cv{pid}x{i}");
            ip(&["netns", "add", &netns])?;
            ip(&[
                "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ])?;
            ip(&["link", "set", &peer, "master", &bridge, "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    /// Process name → address, for the spec's `[cluster.hosts]`.
    pub fn addresses(&self) -> BTreeMap<String, String> {
        self.hosts
            .iter()
            .map(|(name, h)| (name.clone(), h.addr.clone()))
            .collect()
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.get(name)
    }

    /// The test's own address on the bridge.
    pub fn observer(&self) -> &str {
        &self.observer
    }

    /// Faults and heals so far, in order.
    pub fn events(&self) -> &[NetEvent] {
        &self.events
    }

    /// Cuts `name` off from every other host, both ways.
    pub fn isolate(&mut self, name: &str) -> anyhow::Result<()> {
        let others = self.others(&[name]);
        self.split_between(&[name.to_string()], &others)?;
        self.record(format!("isolate {name}"));
        self.apply()
    }

    /// Splits the hosts into `side` and the rest, both ways.
    pub fn split(&mut self, side: &[&str]) -> anyhow::Result<()> {
        let side_names: Vec<String> = side.iter().map(|s| s.to_string()).collect();
        let rest = self.others(side);
        self.split_between(&side_names, &rest)?;
        self.record(format!("split {side:?} from the rest"));
        self.apply()
    }

    /// `from` still reaches `to`, but what `to` sends `from` is dropped.
    pub fn one_way(&mut self, from: &str, to: &str) -> anyhow::Result<()> {
        self.known(&[from, to])?;
        self.blocked.insert((to.to_string(), from.to_string()));
        self.record(format!(
            "one-way: {from} reaches {to}, {to}'s packets to {from} dropped"
        ));
        self.apply()
    }

    /// Drops `percent` of the packets between `a` and `b`, both ways.
    pub fn lossy(&mut self, a: &str, b: &str, percent: u8) -> anyhow::Result<()> {
        self.known(&[a, b])?;
        let percent = percent.min(100);
        self.lossy.insert((a.to_string(), b.to_string()), percent);
        self.lossy.insert((b.to_string(), a.to_string()), percent);
        self.record(format!("{percent}% loss between {a} and {b}"));
        self.apply()
    }

    /// Holds every packet between `a` and `b`, each way, for `delay.mean` ±
    /// `delay.jitter` (a round trip between them takes twice as long more).
    pub fn delay(&mut self, a: &str, b: &str, delay: Delay) -> anyhow::Result<()> {
        self.known(&[a, b])?;
        for (from, to) in [(a, b), (b, a)] {
            let key = (from.to_string(), to.to_string());
            // Replaced, not stacked: the old queue lets its packets go.
            self.delayed.remove(&key);
            let queue = DelayedQueue::start(&self.hosts[to].netns, self.queue_num(from), delay)?;
            self.delayed.insert(key, queue);
        }
        self.record(format!(
            "{} ms ± {} ms delay between {a} and {b}",
            delay.mean.as_millis(),
            delay.jitter.as_millis()
        ));
        self.apply()
    }

    /// Takes the bridge down: every link at once, the observer's too
    /// (`heal` brings it up again).
    pub fn bridge_down(&mut self) -> anyhow::Result<()> {
        ip(&["link", "set", &self.bridge, "down"])?;
        self.record("bridge down".into());
        Ok(())
    }

    /// Removes every fault (and brings the bridge up).
    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.blocked.clear();
        self.lossy.clear();
        let delayed = std::mem::take(&mut self.delayed);
        ip(&["link", "set", &self.bridge, "up"])?;
        self.record("heal".into());
        self.apply()?;
        // Only now that no rule queues packets: the held ones go.
        drop(delayed);
        Ok(())
    }

    /// The queue, in the receiving host, of the packets from `from`.
    fn queue_num(&self, from: &str) -> u16 {
        self.hosts.keys().position(|n| n == from).unwrap_or(0) as u16
    }

    fn record(&mut self, what: String) {
        self.events.push(NetEvent {
            at: Instant::now(),
            what,
        });
    }

    fn known(&self, names: &[&str]) -> anyhow::Result<()> {
        match names.iter().find(|n| !self.hosts.contains_key(**n)) {
            Some(n) => bail!("no test host {n:?}"),
            None => Ok(()),
        }
    }

    fn others(&self, side: &[&str]) -> Vec<String> {
        self.hosts
            .keys()
            .filter(|n| !side.contains(&n.as_str()))
            .cloned()
            .collect()
    }

    fn split_between(&mut self, a: &[String], b: &[String]) -> anyhow::Result<()> {
        let names: Vec<&str> = a.iter().chain(b).map(String::as_str).collect();
        self.known(&names)?;
        for x in a {
            for y in b {
                self.blocked.insert((x.clone(), y.clone()));
                self.blocked.insert((y.clone(), x.clone()));
            }
        }
        Ok(())
    }

    /// Writes every host's rules from `blocked`, `lossy` and `delayed`.
    fn apply(&mut self) -> anyhow::Result<()> {
        self.apply_drops()?;
        self.apply_queues()
    }

    /// The nftables rules: drops, certain or random.
    fn apply_drops(&self) -> anyhow::Result<()> {
        for (name, host) in &self.hosts {
            let mut rules = String::new();
            for (from, to) in &self.blocked {
                if to == name {
                    rules += &format!("    ip saddr {} drop\n", self.hosts[from].addr);
                }
            }
            for ((from, to), percent) in &self.lossy {
                if to == name {
                    rules += &format!(
                        "    ip saddr {} numgen random mod 100 < {percent} drop\n",
                        self.hosts[from].addr
                    );
                }
            }
            let ruleset = format!(
                "flush ruleset\ntable inet cart {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n{rules}  }}\n}}\n"
            );
            nft(&host.netns, &ruleset).with_context(|| format!("setting the rules of {name}"))?;
        }
        Ok(())
    }

    /// The iptables rules that queue delayed directions (nftables on this
    /// kernel has no `queue` statement; iptables' NFQUEUE target it has).
    fn apply_queues(&mut self) -> anyhow::Result<()> {
        let mut rules: BTreeMap<String, String> = BTreeMap::new();
        for (from, to) in self.delayed.keys() {
            *rules.entry(to.clone()).or_default() += &format!(
                "-A INPUT -s {} -j NFQUEUE --queue-num {} --queue-bypass\n",
                self.hosts[from].addr,
                self.queue_num(from)
            );
        }
        let hosts: BTreeSet<String> = self.queueing.iter().chain(rules.keys()).cloned().collect();
        for name in hosts {
            let table = format!(
                "*filter\n:INPUT ACCEPT [0:0]\n{}COMMIT\n",
                rules.get(&name).map_or("", String::as_str)
            );
            let netns = &self.hosts[&name].netns;
            run_in(netns, IPTABLES_RESTORE, &[], &table)
                .with_context(|| format!("setting the queue rules of {name}"))?;
        }
        self.queueing = rules.into_keys().collect();
        Ok(())
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // The delay threads first: they live in the namespaces.
        self.delayed.clear();
        for host in self.hosts.values() {
            let _ = ip(&["netns", "del", &host.netns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// iproute2's `ip` (in /usr/sbin, which may not be on `PATH`).
pub fn ip_program() -> PathBuf {
    super::find_tool("ip").unwrap_or_else(|| "ip".into())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(ip_program())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip_output(args: &[&str]) -> String {
    Command::new(ip_program())
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Loads `ruleset` into the namespace `netns`.
fn nft(netns: &str, ruleset: &str) -> anyhow::Result<()> {
    run_in(netns, "nft", &["-f", "-"], ruleset)
}

/// Runs `tool args` in the namespace `netns` with `input` on its stdin.
fn run_in(netns: &str, tool: &str, args: &[&str], input: &str) -> anyhow::Result<()> {
    let program = super::find_tool(tool).unwrap_or_else(|| tool.into());
    let mut child = Command::new(ip_program())
        .args(["netns", "exec", netns])
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {tool}"))?;
    child
        .stdin
        .take()
        .with_context(|| format!("{tool}'s input"))?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{tool}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The third octet of a 198.18.X.0/24 no interface of this machine is in.
fn free_subnet() -> anyhow::Result<u8> {
    let used = ip_output(&["-o", "-4", "addr", "show"]);
    (1..=254u8)
        .find(|x| !used.contains(&format!(" 198.18.{x}.")))
        .context("no free /24 in 198.18.0.0/16")
}

/// Removes namespaces and bridges whose creating process is gone.
fn remove_stale() {
    let gone = |pid: &str| {
        pid.parse::<u32>()
            .is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
    };
    for line in ip_output(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|r| r.split('-').next())
        {
            if gone(pid) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    for line in ip_output(&["-o", "link", "show", "type", "bridge"]).lines() {
        // "7: cbr1234: <...>"
        let name = line.split(':').nth(1).unwrap_or("").trim();
        if let Some(pid) = name.strip_prefix(BRIDGE_PREFIX) {
            if gone(pid) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}
