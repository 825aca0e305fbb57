//! The one metrics helper every crate declares its metrics through: a fixed
//! `cart_` prefix, the default registry, label arity in the type. A crate keeps
//! its metrics in its own `metrics.rs` as one lazily built static struct.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
};

pub const NAMESPACE: &str = "cart";

/// Latency buckets for request-shaped work, from 0.5 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn register<C: prometheus::core::Collector + Clone + 'static>(collector: C, name: &str) -> C {
    // Registration fails only for a name declared twice: a programming error
    // that a unit test of the owning crate catches. The metric still works,
    // it is just not exported, so never take the process down for it.
    if let Err(e) = prometheus::register(Box::new(collector.clone())) {
        tracing::error!(metric = name, error = %e, "metric not registered");
    }
    collector
}

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let opts = Opts::new(name, help).namespace(NAMESPACE);
    register(
        IntCounterVec::new(opts, labels).unwrap_or_else(|e| invalid(name, e)),
        name,
    )
}

/// A counter without labels (one series per process).
pub fn counter(name: &str, help: &str) -> prometheus::IntCounter {
    counter_vec(name, help, &[]).with_label_values::<&str>(&[])
}

/// A gauge without labels (one series per process).
pub fn gauge(name: &str, help: &str) -> prometheus::IntGauge {
    gauge_vec(name, help, &[]).with_label_values::<&str>(&[])
}

pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let opts = Opts::new(name, help).namespace(NAMESPACE);
    register(
        IntGaugeVec::new(opts, labels).unwrap_or_else(|e| invalid(name, e)),
        name,
    )
}

/// A gauge of fractional values without labels.
pub fn float_gauge(name: &str, help: &str) -> prometheus::Gauge {
    float_gauge_vec(name, help, &[]).with_label_values::<&str>(&[])
}

/// A gauge of fractional values (seconds, ratios).
pub fn float_gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let opts = Opts::new(name, help).namespace(NAMESPACE);
    register(
        GaugeVec::new(opts, labels).unwrap_or_else(|e| invalid(name, e)),
        name,
    )
}

pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help)
        .namespace(NAMESPACE)
        .buckets(buckets.to_vec());
    register(
        HistogramVec::new(opts, labels).unwrap_or_else(|e| invalid(name, e)),
        name,
    )
}

pub fn histogram(name: &str, help: &str, buckets: &[f64]) -> prometheus::Histogram {
    histogram_vec(name, help, &[], buckets).with_label_values::<&str>(&[])
}

fn invalid(name: &str, e: prometheus::Error) -> ! {
    // Only reachable with a malformed metric name or label list in code,
    // which every crate's metrics unit test would hit first.
    panic!("invalid metric {name}: {e}")
}

/// A labelled metric family whose series can exist before anything is
/// counted or observed.
pub trait LabelledFamily {
    /// Creates the series of `labels` (at 0) unless it exists; an existing
    /// series keeps its value.
    fn touch(&self, labels: &[&str]);
}

impl LabelledFamily for IntCounterVec {
    fn touch(&self, labels: &[&str]) {
        self.with_label_values(labels).inc_by(0);
    }
}

impl LabelledFamily for HistogramVec {
    fn touch(&self, labels: &[&str]) {
        self.with_label_values(labels);
    }
}

/// A metric label whose values are an enum's variants, named in
/// snake_case: derive `strum::VariantArray` and `strum::IntoStaticStr` with
/// `#[strum(serialize_all = "snake_case")]`, and this comes with them.
pub trait Label: Copy + Into<&'static str> + strum::VariantArray + 'static {
    /// The label value.
    fn as_str(self) -> &'static str {
        self.into()
    }

    /// Every value, in declaration order (for `precreate`).
    fn all() -> std::iter::Copied<std::slice::Iter<'static, Self>> {
        Self::VARIANTS.iter().copied()
    }
}

impl<T: Copy + Into<&'static str> + strum::VariantArray + 'static> Label for T {}

/// Pre-creates one series per label set, so that alerts and dashboards see
/// every series at 0 from start-up rather than from its first event:
/// `precreate(&m.retries, Step::all().map(|s| [s.as_str()]))` (`Label`).
pub fn precreate<'a, L: AsRef<[&'a str]>>(
    family: &impl LabelledFamily,
    label_sets: impl IntoIterator<Item = L>,
) {
    for labels in label_sets {
        family.touch(labels.as_ref());
    }
}

/// The text exposition of every registered metric, for `/metrics`.
pub fn render() -> String {
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut buf) {
        tracing::error!(error = %e, "encoding metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}
