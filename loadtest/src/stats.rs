//! Latency and status bookkeeping for one run: every answer is recorded
//! into an HDR histogram per operation for the whole run and another per
//! operation and second, so the report can give exact-enough percentiles
//! overall and a time series without keeping every sample.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, up to this bound (longer ones
/// are clamped: a request of more than ten minutes is a failure anyway).
const MAX_MICROS: u64 = 600_000_000;
/// Whole-run histograms: 0.1% resolution.
const RUN_SIGFIGS: u8 = 3;
/// Per-second histograms: 1% resolution, a tenth of the memory, since a
/// long run keeps one per operation and second.
const SECOND_SIGFIGS: u8 = 2;

/// What a request came back with: an HTTP status, or no answer at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Http(u16),
    Timeout,
    Connect,
    /// Any other transport failure (connection reset mid-answer, ...).
    Transport,
}

impl Status {
    pub fn ok(self) -> bool {
        matches!(self, Status::Http(200..=299))
    }

    /// The key under which the report counts it: "200", "429", "timeout".
    pub fn key(self) -> String {
        match self {
            Status::Http(code) => code.to_string(),
            Status::Timeout => "timeout".into(),
            Status::Connect => "connect".into(),
            Status::Transport => "transport".into(),
        }
    }
}

/// A moment of a run worth marking on its plots (fault, restart, step).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Seconds since the load started.
    pub t_s: f64,
    pub kind: String,
    pub detail: String,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// One operation over a window (the whole run, a step, a second).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub ok: u64,
    pub failed: u64,
    /// Answers by status ("200", "400", "503", "timeout", ...).
    pub by_status: BTreeMap<String, u64>,
    /// `failed / count`; 0 when nothing was sent.
    pub failure_ratio: f64,
    /// Answers per second over the window.
    pub throughput_rps: f64,
    /// 2xx answers per second over the window.
    pub ok_rps: f64,
    pub latency: Percentiles,
}

impl Summary {
    /// Requests that got an HTTP answer, whatever its status: every key of
    /// `by_status` but a transport failure's ("timeout", "connect", ...).
    pub fn answered(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(status, _)| status.parse::<u16>().is_ok())
            .map(|(_, n)| n)
            .sum()
    }
}

/// One second of one operation, for the plots.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SecondPoint {
    /// The second since the load started (answers completed in [t, t+1)).
    pub t: u64,
    pub count: u64,
    pub ok: u64,
    pub failed: u64,
    /// Simulated users active during the second (the most seen).
    pub users: usize,
    pub latency: Percentiles,
}

pub fn percentiles(hist: &Histogram<u64>) -> Percentiles {
    if hist.is_empty() {
        return Percentiles::default();
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    Percentiles {
        mean_ms: hist.mean() / 1000.0,
        p50_ms: ms(hist.value_at_quantile(0.50)),
        p90_ms: ms(hist.value_at_quantile(0.90)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        p999_ms: ms(hist.value_at_quantile(0.999)),
        max_ms: ms(hist.max()),
    }
}

/// Events per second over a window; 0 for an empty window.
pub fn rate(count: u64, window: Duration) -> f64 {
    let secs = window.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        count as f64 / secs
    }
}

/// `part / whole`, 0 when `whole` is 0.
pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn new_hist(sigfigs: u8) -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure here
    // would be a programming error caught by every unit test.
    Histogram::new_with_bounds(1, MAX_MICROS, sigfigs).unwrap_or_else(|_| {
        Histogram::new(sigfigs).unwrap_or_else(|_| unreachable!("valid sigfigs"))
    })
}

#[derive(Clone)]
struct Counts {
    hist: Histogram<u64>,
    ok: u64,
    failed: u64,
    by_status: BTreeMap<String, u64>,
    users: usize,
}

impl Counts {
    fn new(sigfigs: u8) -> Self {
        Self {
            hist: new_hist(sigfigs),
            ok: 0,
            failed: 0,
            by_status: BTreeMap::new(),
            users: 0,
        }
    }

    fn add(&mut self, latency: Duration, status: Status, users: usize) {
        let micros = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        // Cannot fail: the value is clamped into the histogram's range.
        let _ = self.hist.record(micros);
        if status.ok() {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        *self.by_status.entry(status.key()).or_default() += 1;
        self.users = self.users.max(users);
    }

    fn merge(&mut self, other: &Counts) {
        let _ = self.hist.add(&other.hist);
        self.ok += other.ok;
        self.failed += other.failed;
        for (k, v) in &other.by_status {
            *self.by_status.entry(k.clone()).or_default() += v;
        }
        self.users = self.users.max(other.users);
    }

    fn summary(&self, window: Duration) -> Summary {
        let count = self.ok + self.failed;
        Summary {
            count,
            ok: self.ok,
            failed: self.failed,
            by_status: self.by_status.clone(),
            failure_ratio: ratio(self.failed, count),
            throughput_rps: rate(count, window),
            ok_rps: rate(self.ok, window),
            latency: percentiles(&self.hist),
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Operation → whole-run counts.
    runs: BTreeMap<&'static str, Counts>,
    /// Second → operation → counts.
    seconds: Vec<BTreeMap<&'static str, Counts>>,
    events: Vec<Event>,
}

/// The name under which every operation is also counted.
pub const ALL: &str = "all";

/// Shared by every simulated user of a run. Nothing is recorded before
/// `begin` (population is not load).
#[derive(Default)]
pub struct Stats {
    start: OnceLock<Instant>,
    inner: Mutex<Inner>,
    /// Simulated users currently running.
    pub users: AtomicUsize,
}

impl Stats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the start of the load; returns its instant.
    pub fn begin(&self) -> Instant {
        *self.start.get_or_init(Instant::now)
    }

    pub fn started(&self) -> Option<Instant> {
        self.start.get().copied()
    }

    /// Time since the load started (zero before).
    pub fn elapsed(&self) -> Duration {
        self.started().map(|s| s.elapsed()).unwrap_or_default()
    }

    pub fn record(&self, op: &'static str, latency: Duration, status: Status) {
        if let Some(start) = self.started() {
            self.record_at(start.elapsed(), op, latency, status);
        }
    }

    /// Records an answer that completed `at` after the start.
    pub fn record_at(&self, at: Duration, op: &'static str, latency: Duration, status: Status) {
        let users = self.users.load(Ordering::Relaxed);
        let second = at.as_secs() as usize;
        let mut inner = self.lock();
        for name in [op, ALL] {
            inner
                .runs
                .entry(name)
                .or_insert_with(|| Counts::new(RUN_SIGFIGS))
                .add(latency, status, users);
        }
        if inner.seconds.len() <= second {
            inner.seconds.resize_with(second + 1, BTreeMap::new);
        }
        for name in [op, ALL] {
            inner.seconds[second]
                .entry(name)
                .or_insert_with(|| Counts::new(SECOND_SIGFIGS))
                .add(latency, status, users);
        }
    }

    pub fn event(&self, kind: &str, detail: impl Into<String>) {
        let t_s = self.elapsed().as_secs_f64();
        self.lock().events.push(Event {
            t_s,
            kind: kind.into(),
            detail: detail.into(),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind:
        // still worth reporting.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    pub fn ops(&self) -> Vec<&'static str> {
        self.lock().runs.keys().copied().collect()
    }

    /// Whole-run summary of `op` over a run of length `window`.
    pub fn summary(&self, op: &str, window: Duration) -> Summary {
        self.lock()
            .runs
            .get(op)
            .map(|c| c.summary(window))
            .unwrap_or_default()
    }

    /// `op` over the seconds `from..to` (1% resolution).
    pub fn window(&self, op: &str, from: u64, to: u64) -> Summary {
        let inner = self.lock();
        let mut sum = Counts::new(SECOND_SIGFIGS);
        for second in from..to {
            if let Some(c) = inner.seconds.get(second as usize).and_then(|s| s.get(op)) {
                sum.merge(c);
            }
        }
        sum.summary(Duration::from_secs(to.saturating_sub(from)))
    }

    /// `op` second by second, for `seconds` seconds (empty seconds included
    /// so that a stall shows as zeros, not as a gap).
    pub fn series(&self, op: &str, seconds: u64) -> Vec<SecondPoint> {
        let inner = self.lock();
        (0..seconds)
            .map(|t| {
                let c = inner.seconds.get(t as usize).and_then(|s| s.get(op));
                match c {
                    Some(c) => SecondPoint {
                        t,
                        count: c.ok + c.failed,
                        ok: c.ok,
                        failed: c.failed,
                        users: c.users,
                        latency: percentiles(&c.hist),
                    },
                    None => SecondPoint {
                        t,
                        count: 0,
                        ok: 0,
                        failed: 0,
                        users: 0,
                        latency: Percentiles::default(),
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn close(actual: f64, expected: f64) -> bool {
        // HDR at 3 significant figures: within 0.1%.
        (actual - expected).abs() <= expected * 0.001 + 1e-9
    }

    #[test]
    fn percentiles_of_one_to_a_thousand_milliseconds_are_the_ranks() {
        let stats = Stats::new();
        for i in 1..=1000 {
            stats.record_at(ms(0), "op", ms(i), Status::Http(200));
        }
        let p = stats.summary("op", Duration::from_secs(1)).latency;
        // Rank k of 1000 sorted values 1..=1000 ms is k ms.
        assert!(close(p.p50_ms, 500.0), "{p:?}");
        assert!(close(p.p90_ms, 900.0), "{p:?}");
        assert!(close(p.p99_ms, 990.0), "{p:?}");
        assert!(close(p.p999_ms, 999.0), "{p:?}");
        assert!(close(p.max_ms, 1000.0), "{p:?}");
        // (1 + 1000) / 2.
        assert!(close(p.mean_ms, 500.5), "{p:?}");
    }

    #[test]
    fn a_single_slow_answer_in_a_hundred_is_the_max_but_not_the_p99() {
        let stats = Stats::new();
        for _ in 0..99 {
            stats.record_at(ms(0), "op", ms(10), Status::Http(200));
        }
        stats.record_at(ms(0), "op", ms(2000), Status::Http(200));
        let p = stats.summary("op", Duration::from_secs(1)).latency;
        assert!(close(p.p50_ms, 10.0) && close(p.p99_ms, 10.0), "{p:?}");
        assert!(close(p.p999_ms, 2000.0) && close(p.max_ms, 2000.0), "{p:?}");
        // (99 * 10 + 2000) / 100 = 29.9 ms.
        assert!(close(p.mean_ms, 29.9), "{p:?}");
    }

    #[test]
    fn throughput_and_failure_ratio_count_every_status() {
        let stats = Stats::new();
        // 30 answers in second 0 (20 ok), 10 in second 2, none in second 1.
        for i in 0..30 {
            let status = if i < 20 {
                Status::Http(200)
            } else if i < 25 {
                Status::Http(503)
            } else {
                Status::Timeout
            };
            stats.record_at(ms(100), "checkout", ms(5), status);
        }
        for _ in 0..10 {
            stats.record_at(ms(2500), "checkout", ms(5), Status::Http(400));
        }
        let run = stats.summary("checkout", Duration::from_secs(4));
        assert_eq!((run.count, run.ok, run.failed), (40, 20, 20));
        // 40 answers over 4 s; 20 ok over 4 s; 20 of 40 failed.
        assert_eq!(run.throughput_rps, 10.0);
        assert_eq!(run.ok_rps, 5.0);
        assert_eq!(run.failure_ratio, 0.5);
        assert_eq!(run.by_status["200"], 20);
        assert_eq!(run.by_status["503"], 5);
        assert_eq!(run.by_status["timeout"], 5);
        assert_eq!(run.by_status["400"], 10);
        // The 5 timeouts got no answer.
        assert_eq!(run.answered(), 35);

        let series = stats.series("checkout", 4);
        let counts: Vec<u64> = series.iter().map(|p| p.count).collect();
        assert_eq!(counts, vec![30, 0, 10, 0]);
        assert_eq!(series[0].ok, 20);

        // Seconds 1..3: only the 10 answers of second 2, over 2 s.
        let w = stats.window("checkout", 1, 3);
        assert_eq!((w.count, w.throughput_rps, w.ok_rps), (10, 5.0, 0.0));
        assert_eq!(w.failure_ratio, 1.0);
        // Every operation is also counted under "all".
        assert_eq!(stats.summary(ALL, Duration::from_secs(4)).count, 40);
    }

    #[test]
    fn nothing_is_recorded_before_the_load_begins() {
        let stats = Stats::new();
        stats.record("op", ms(1), Status::Http(200));
        assert!(stats.ops().is_empty());
        stats.begin();
        stats.record("op", ms(1), Status::Http(200));
        assert_eq!(stats.summary("op", Duration::from_secs(1)).count, 1);
    }

    #[test]
    fn rate_and_ratio_of_empty_windows_are_zero() {
        assert_eq!(rate(10, Duration::ZERO), 0.0);
        assert_eq!(rate(3, Duration::from_millis(1500)), 2.0);
        assert_eq!(ratio(1, 0), 0.0);
        assert_eq!(ratio(1, 4), 0.25);
    }
}
