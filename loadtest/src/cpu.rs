//! CPU per answered request: the CPU time every process of a launched
//! cluster used during the load, per role, per kind of process and in
//! total, divided by the answers. Far less noisy than latency on a small
//! shared machine, so the figure to steer performance work by.
//!
//! CPU is accounted per process, not per role: a role whose process is
//! SIGKILLed and started again has had two processes (two pids), each
//! counted from its own first reading to its last. See `CpuAccount::record`.

use std::collections::BTreeMap;

use cart_cluster::harness::Role;
use cart_common::Service;
use serde::{Deserialize, Serialize};

use crate::procs::CpuTimes;
use crate::scenarios::stress::FIRST;
use crate::scenarios::Step;
use crate::stats::{Stats, Summary, ALL};

/// Clock ticks per second, the unit of /proc/<pid>/stat's times.
pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // Linux's USER_HZ is 100 on every architecture; sysconf cannot fail
    // for this name short of a broken libc.
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The kinds of process whose CPU the report sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Gateway,
    Coordinators,
    Nodes(Service),
    /// Never started by this tool; here because the harness has the role.
    Prometheus,
}

impl Kind {
    pub fn of(role: Role) -> Self {
        match role {
            Role::Gateway => Kind::Gateway,
            Role::Coordinator(..) => Kind::Coordinators,
            Role::Node(service, _) => Kind::Nodes(service),
            Role::Prometheus => Kind::Prometheus,
        }
    }

    pub fn name(self) -> String {
        match self {
            Kind::Gateway => "gateway".into(),
            Kind::Coordinators => "coordinators".into(),
            Kind::Nodes(service) => format!("{service} nodes"),
            Kind::Prometheus => "prometheus".into(),
        }
    }
}

/// One process: a pid and its start time (a reused pid is another process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ProcessId {
    pid: u32,
    start_ticks: u64,
}

/// A process's CPU ticks at the reading it is counted from, and at its
/// latest reading.
#[derive(Clone, Copy, Debug)]
struct Seen {
    base_ticks: u64,
    last_ticks: u64,
}

impl Seen {
    fn used_ticks(self) -> u64 {
        self.last_ticks.saturating_sub(self.base_ticks)
    }
}

/// The cluster's CPU used since the load began, `t_s` after it began.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuPoint {
    pub t_s: f64,
    pub cpu_s: f64,
}

/// Readings of every process's CPU time over a run, per role and process.
pub struct CpuAccount {
    ticks_per_s: f64,
    procs: BTreeMap<Role, BTreeMap<ProcessId, Seen>>,
    /// One point per round of readings (`mark`), in time order.
    timeline: Vec<CpuPoint>,
}

impl CpuAccount {
    pub fn new(ticks_per_s: f64) -> Self {
        Self {
            ticks_per_s,
            procs: BTreeMap::new(),
            timeline: Vec::new(),
        }
    }

    /// A reading of `pid`, which holds `role`. A process read at load
    /// start counts from that reading. One first read later was started
    /// during the load (again, after a kill), so it counts from its start,
    /// when it had used nothing: its recovery is part of what the load
    /// cost. A process that dies keeps its last reading; what it used
    /// after it is lost, which is why the run reads every process just
    /// before it carries out a fault.
    pub fn record(&mut self, role: Role, pid: u32, times: CpuTimes, at_load_start: bool) {
        let id = ProcessId {
            pid,
            start_ticks: times.start_ticks,
        };
        let base_ticks = if at_load_start { times.used_ticks } else { 0 };
        let seen = self
            .procs
            .entry(role)
            .or_default()
            .entry(id)
            .or_insert(Seen {
                base_ticks,
                last_ticks: times.used_ticks,
            });
        // CPU time only grows; max() keeps a garbled reading from undoing it.
        seen.last_ticks = seen.last_ticks.max(times.used_ticks);
    }

    /// Closes a round of readings taken `t_s` after the load began.
    pub fn mark(&mut self, t_s: f64) {
        let cpu_s = self.total_s();
        self.timeline.push(CpuPoint { t_s, cpu_s });
    }

    fn seconds(&self, ticks: u64) -> f64 {
        ticks as f64 / self.ticks_per_s
    }

    /// Ticks `role`'s processes used (summed as integers, so that sums of
    /// roles carry no rounding), and how many processes it had.
    fn used_ticks(&self, role: Role) -> (u64, usize) {
        let procs = self.procs.get(&role);
        let ticks = procs.map_or(0, |p| p.values().map(|s| s.used_ticks()).sum());
        (ticks, procs.map_or(0, BTreeMap::len))
    }

    /// CPU seconds `role`'s processes used, and how many processes it had.
    pub fn used_s(&self, role: Role) -> (f64, usize) {
        let (ticks, pids) = self.used_ticks(role);
        (self.seconds(ticks), pids)
    }

    pub fn roles(&self) -> impl Iterator<Item = Role> + '_ {
        self.procs.keys().copied()
    }

    /// CPU seconds the processes of the roles `keep` selects used.
    pub fn sum_s(&self, keep: impl Fn(Role) -> bool) -> f64 {
        let ticks = self
            .roles()
            .filter(|r| keep(*r))
            .map(|r| self.used_ticks(r).0)
            .sum();
        self.seconds(ticks)
    }

    pub fn total_s(&self) -> f64 {
        self.sum_s(|_| true)
    }

    /// Wall seconds from the first round of readings to the last.
    pub fn wall_s(&self) -> f64 {
        match (self.timeline.first(), self.timeline.last()) {
            (Some(a), Some(b)) => b.t_s - a.t_s,
            _ => 0.0,
        }
    }

    /// The cluster's CPU seconds between `from_s` and `to_s` after the
    /// load began, interpolated between readings, and the wall seconds of
    /// the part of that window the readings cover.
    pub fn between(&self, from_s: f64, to_s: f64) -> (f64, f64) {
        let (Some(first), Some(last)) = (self.timeline.first(), self.timeline.last()) else {
            return (0.0, 0.0);
        };
        let from_s = from_s.clamp(first.t_s, last.t_s);
        let to_s = to_s.clamp(from_s, last.t_s);
        (self.at(to_s) - self.at(from_s), to_s - from_s)
    }

    /// CPU used by `t_s` (within the timeline), linearly between readings.
    fn at(&self, t_s: f64) -> f64 {
        let after = self.timeline.partition_point(|p| p.t_s < t_s);
        match (
            after.checked_sub(1).map(|i| self.timeline[i]),
            self.timeline.get(after),
        ) {
            (Some(a), Some(b)) if b.t_s > a.t_s => {
                a.cpu_s + (b.cpu_s - a.cpu_s) * (t_s - a.t_s) / (b.t_s - a.t_s)
            }
            (_, Some(b)) => b.cpu_s,
            (Some(a), None) => a.cpu_s,
            (None, None) => 0.0,
        }
    }
}

/// `cpu_s / n` in milliseconds; none when nothing was counted.
pub fn ms_per(cpu_s: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| cpu_s * 1000.0 / n as f64)
}

/// CPU seconds per wall second: cores kept busy on average.
pub fn cores(cpu_s: f64, wall_s: f64) -> f64 {
    if wall_s > 0.0 {
        cpu_s / wall_s
    } else {
        0.0
    }
}

/// What the cluster's CPU bought over a window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuCost {
    pub cpu_s: f64,
    pub cores: f64,
    /// Requests with an HTTP answer (any status, every operation).
    pub answered: u64,
    pub cpu_ms_per_answer: Option<f64>,
    /// First-time checkouts answered 2xx, where the scenario makes them.
    pub first_time_ok: Option<u64>,
    pub cpu_ms_per_first_time_ok: Option<f64>,
}

impl CpuCost {
    pub fn new(cpu_s: f64, wall_s: f64, answered: u64, first_time_ok: Option<u64>) -> Self {
        Self {
            cpu_s,
            cores: cores(cpu_s, wall_s),
            answered,
            cpu_ms_per_answer: ms_per(cpu_s, answered),
            first_time_ok,
            cpu_ms_per_first_time_ok: first_time_ok.and_then(|n| ms_per(cpu_s, n)),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessCpu {
    pub role: String,
    pub cpu_s: f64,
    pub cores: f64,
    /// Processes that held the role (2 after a kill and restart).
    pub pids: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KindCpu {
    /// "gateway", "coordinators", "order nodes", ...
    pub kind: String,
    /// Roles of this kind.
    pub processes: usize,
    pub cpu_s: f64,
    pub cores: f64,
}

/// One open-loop rate, over the middle half of its step.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StepCpu {
    pub rate: f64,
    pub from_s: u64,
    pub to_s: u64,
    #[serde(flatten)]
    pub cost: CpuCost,
}

/// The report's `cpu` section.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuSection {
    /// Wall seconds between the readings at load start and at its end.
    pub wall_s: f64,
    pub processes: Vec<ProcessCpu>,
    pub kinds: Vec<KindCpu>,
    /// Every process over the whole load, against every answer of the run.
    pub total: CpuCost,
    pub steps: Vec<StepCpu>,
    pub timeline: Vec<CpuPoint>,
}

/// The middle half of the seconds `from..to` (whole seconds): the steady
/// part of a step, away from the previous rate's late answers and from the
/// next step's start.
pub fn middle_half(from_s: u64, to_s: u64) -> (u64, u64) {
    let quarter = to_s.saturating_sub(from_s) / 4;
    (from_s + quarter, to_s - quarter)
}

impl CpuSection {
    /// `ops` are the run's whole-run summaries, `steps` its open-loop steps.
    pub fn build(
        account: &CpuAccount,
        stats: &Stats,
        ops: &BTreeMap<String, Summary>,
        steps: &[Step],
    ) -> Self {
        let wall_s = account.wall_s();
        let processes: Vec<ProcessCpu> = account
            .roles()
            .map(|role| {
                let (cpu_s, pids) = account.used_s(role);
                ProcessCpu {
                    role: role.name(),
                    cpu_s,
                    cores: cores(cpu_s, wall_s),
                    pids,
                }
            })
            .collect();
        let has_first = ops.contains_key(FIRST);
        let all = ops.get(ALL).map_or(0, Summary::answered);
        let first = ops.get(FIRST).map(|s| s.ok);
        Self {
            wall_s,
            kinds: kinds(account, wall_s),
            total: CpuCost::new(account.total_s(), wall_s, all, first),
            steps: steps
                .iter()
                .map(|s| step_cost(account, stats, s, has_first))
                .collect(),
            timeline: account.timeline.clone(),
            processes,
        }
    }

    pub fn kind_cores(&self, kind: &str) -> Option<f64> {
        self.kinds.iter().find(|k| k.kind == kind).map(|k| k.cores)
    }
}

fn kinds(account: &CpuAccount, wall_s: f64) -> Vec<KindCpu> {
    let mut roles: BTreeMap<Kind, usize> = BTreeMap::new();
    for role in account.roles() {
        *roles.entry(Kind::of(role)).or_default() += 1;
    }
    roles
        .into_iter()
        .map(|(kind, processes)| {
            let cpu_s = account.sum_s(|r| Kind::of(r) == kind);
            KindCpu {
                kind: kind.name(),
                processes,
                cpu_s,
                cores: cores(cpu_s, wall_s),
            }
        })
        .collect()
}

/// CPU against the answers completed in the middle half of `step`: seconds
/// of answers and wall seconds of CPU, so the two cover the same time.
fn step_cost(account: &CpuAccount, stats: &Stats, step: &Step, has_first: bool) -> StepCpu {
    let (from_s, to_s) = middle_half(step.from_s, step.to_s);
    let (cpu_s, wall_s) = account.between(from_s as f64, to_s as f64);
    let answered = stats.window(ALL, from_s, to_s).answered();
    let first = has_first.then(|| stats.window(FIRST, from_s, to_s).ok);
    StepCpu {
        rate: step.rate,
        from_s,
        to_s,
        cost: CpuCost::new(cpu_s, wall_s, answered, first),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::Status;

    const NODE: Role = Role::Node(Service::Stock, 2);

    fn times(pid_start: u64, used: u64) -> CpuTimes {
        CpuTimes {
            used_ticks: used,
            start_ticks: pid_start,
        }
    }

    #[test]
    fn a_killed_and_restarted_process_counts_both_lives_and_never_less() {
        let mut a = CpuAccount::new(100.0);
        // 500 ticks before the load (population) are not counted.
        a.record(NODE, 40, times(7, 500), true);
        a.mark(0.0);
        a.record(NODE, 40, times(7, 650), false);
        a.mark(1.0);
        // Killed; a new pid from second 2 on, with few ticks so far.
        a.record(NODE, 41, times(900, 20), false);
        a.mark(2.0);
        a.record(NODE, 41, times(900, 70), false);
        a.mark(3.0);
        // 150 ticks of the first life, 70 of the second, at 100 ticks/s.
        assert_eq!(a.used_s(NODE), (2.2, 2));
        let totals: Vec<f64> = a.timeline.iter().map(|p| p.cpu_s).collect();
        assert_eq!(totals, [0.0, 1.5, 1.7, 2.2]);
        assert_eq!(a.wall_s(), 3.0);
    }

    #[test]
    fn a_reused_pid_is_another_process() {
        let mut a = CpuAccount::new(100.0);
        a.record(NODE, 40, times(7, 500), true);
        a.record(NODE, 40, times(7, 600), false);
        // Same pid, later start: not 600 → 30 (which would be negative).
        a.record(NODE, 40, times(950, 30), false);
        assert_eq!(a.used_s(NODE), (1.3, 2));
    }

    #[test]
    fn cpu_between_two_moments_is_interpolated_and_clamped_to_the_readings() {
        let mut a = CpuAccount::new(100.0);
        for (t, used) in [(0.0, 0), (1.0, 100), (3.0, 300), (4.0, 300)] {
            a.record(Role::Gateway, 1, times(1, used), t == 0.0);
            a.mark(t);
        }
        assert_eq!(a.between(1.0, 3.0), (2.0, 2.0));
        assert_eq!(a.between(0.5, 2.0), (1.5, 1.5));
        // Past the last reading: only the covered second counts.
        assert_eq!(a.between(3.0, 9.0), (0.0, 1.0));
        assert_eq!(CpuAccount::new(100.0).between(0.0, 1.0), (0.0, 0.0));
    }

    #[test]
    fn cost_per_answer_and_cores_are_cpu_over_answers_and_wall_time() {
        // 3 CPU s over 2 s for 1500 answers, 1000 of them first-time 2xx.
        let c = CpuCost::new(3.0, 2.0, 1500, Some(1000));
        assert_eq!(c.cores, 1.5);
        assert_eq!(c.cpu_ms_per_answer, Some(2.0));
        assert_eq!(c.cpu_ms_per_first_time_ok, Some(3.0));
        // Nothing answered: no figure rather than an infinite one.
        let c = CpuCost::new(3.0, 0.0, 0, None);
        assert_eq!((c.cores, c.cpu_ms_per_answer), (0.0, None));
        assert_eq!(c.cpu_ms_per_first_time_ok, None);
    }

    #[test]
    fn the_section_sums_kinds_and_prices_each_step_over_its_middle_half() {
        let mut a = CpuAccount::new(100.0);
        let roles = [
            Role::Gateway,
            Role::Coordinator(Service::Order, 0),
            Role::Coordinator(Service::Stock, 1),
            Role::Node(Service::Order, 1),
        ];
        // Each process uses 10 ticks a second (0.1 core) for 8 seconds.
        for t in 0..=8u64 {
            for (pid, role) in roles.into_iter().enumerate() {
                a.record(role, pid as u32, times(1, 10 * t), t == 0);
            }
            a.mark(t as f64);
        }
        let stats = Stats::new();
        // 5 first-time checkouts answered in each second, one more
        // timed out (no answer); none in seconds 6 and 7.
        for s in 0..6 {
            let at = Duration::from_millis(s * 1000 + 500);
            for _ in 0..5 {
                stats.record_at(at, FIRST, Duration::from_millis(3), Status::Http(200));
            }
            stats.record_at(at, FIRST, Duration::from_millis(3), Status::Timeout);
        }
        let window = Duration::from_secs(8);
        let ops: BTreeMap<String, Summary> = [FIRST, ALL]
            .into_iter()
            .map(|op| (op.to_string(), stats.summary(op, window)))
            .collect();
        let step = |rate, from_s, to_s| Step {
            rate,
            from_s,
            to_s,
            ..Default::default()
        };
        let s = CpuSection::build(&a, &stats, &ops, &[step(10.0, 0, 4), step(20.0, 4, 8)]);

        assert_eq!(s.wall_s, 8.0);
        assert_eq!(s.processes.len(), 4);
        assert!(s.processes.iter().all(|p| p.pids == 1 && p.cores == 0.1));
        let kinds: Vec<(&str, usize)> = s
            .kinds
            .iter()
            .map(|k| (k.kind.as_str(), k.processes))
            .collect();
        assert_eq!(
            kinds,
            [("gateway", 1), ("coordinators", 2), ("order nodes", 1)]
        );
        assert_eq!(s.kind_cores("coordinators"), Some(0.2));
        // 4 processes × 0.8 s; 30 answers (6 timeouts are not), 30 first-time 2xx.
        let close = |x: f64, y: f64| (x - y).abs() < 1e-9;
        assert!(close(s.total.cpu_s, 3.2) && close(s.total.cores, 0.4));
        assert_eq!((s.total.answered, s.total.first_time_ok), (30, Some(30)));
        assert!(close(s.total.cpu_ms_per_answer.unwrap(), 3200.0 / 30.0));
        // Seconds 1..3 of the first step: 0.8 CPU s, 10 answers.
        let first = &s.steps[0];
        assert_eq!((first.from_s, first.to_s, first.cost.answered), (1, 3, 10));
        assert!(close(first.cost.cores, 0.4));
        assert!(close(first.cost.cpu_ms_per_first_time_ok.unwrap(), 80.0));
        // Seconds 5..7 of the second: answers only in second 5.
        let second = &s.steps[1];
        assert_eq!(
            (second.from_s, second.to_s, second.cost.answered),
            (5, 7, 5)
        );
        assert!(close(second.cost.cpu_ms_per_answer.unwrap(), 160.0));
    }

    #[test]
    fn the_middle_half_of_a_step_drops_a_quarter_at_each_end() {
        assert_eq!(middle_half(0, 60), (15, 45));
        assert_eq!(middle_half(10, 20), (12, 18));
        // Too short to trim.
        assert_eq!(middle_half(4, 7), (4, 7));
    }

    #[test]
    fn kinds_follow_the_role_not_its_name() {
        assert_eq!(Kind::of(Role::Gateway).name(), "gateway");
        assert_eq!(
            Kind::of(Role::Coordinator(Service::Payment, 1)),
            Kind::Coordinators
        );
        assert_eq!(Kind::of(NODE), Kind::Nodes(Service::Stock));
        assert_eq!(Kind::Nodes(Service::Payment).name(), "payment nodes");
    }

    #[test]
    fn the_clock_ticks_per_second_are_positive() {
        assert!(clock_ticks_per_s() > 0.0);
    }
}
