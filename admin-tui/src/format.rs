//! Small text formatters shared by the views: ages, durations, digests.

/// An age like k9s shows it: `4s`, `3m05s`, `2h07m`, `3d`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d", s / 86_400),
    }
}

/// Time since `then_ms`, never negative (clocks of two hosts may differ).
pub fn ago(now_ms: u64, then_ms: u64) -> String {
    age(now_ms.saturating_sub(then_ms))
}

/// A duration in milliseconds, compact: `120ms`, `3.2s`, `5m00s`.
pub fn millis(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        age(ms)
    }
}

/// Seconds of lag: `0`, `0.35`, `12.0`.
pub fn seconds(s: f64) -> String {
    if !s.is_finite() || s <= 0.0 {
        "0".into()
    } else if s < 10.0 {
        format!("{s:.2}")
    } else {
        format!("{s:.0}")
    }
}

/// The first 8 hex digits of a digest: enough to tell replicas apart.
pub fn short_digest(hex: &str) -> String {
    hex.chars().take(8).collect()
}

/// An optional number, or a dash.
pub fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// Singular or plural: `1 key`, `3 keys`.
pub fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A rate with sensible precision: `0`, `0.25`, `12.5`, `1340`.
pub fn rate(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        "0".into()
    } else if v < 1.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Text cut to `width` characters, with an ellipsis when cut.
pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_k9s() {
        assert_eq!(age(4_200), "4s");
        assert_eq!(age(185_000), "3m05s");
        assert_eq!(age(7_620_000), "2h07m");
        assert_eq!(age(3 * 86_400_000), "3d");
        assert_eq!(ago(1_000, 5_000), "0s");
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(millis(120), "120ms");
        assert_eq!(millis(3_200), "3.2s");
        assert_eq!(seconds(0.0), "0");
        assert_eq!(seconds(0.345), "0.34");
        assert_eq!(seconds(f64::NAN), "0");
        assert_eq!(short_digest("abcdef0123456789"), "abcdef01");
        assert_eq!(short_digest("ab"), "ab");
        assert_eq!(count(1, "key"), "1 key");
        assert_eq!(count(0, "key"), "0 keys");
        assert_eq!(rate(0.254), "0.25");
        assert_eq!(rate(1340.2), "1340");
        assert_eq!(truncate("hello world", 6), "hello…");
        assert_eq!(truncate("hi", 6), "hi");
    }
}
