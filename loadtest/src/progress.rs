//! Live progress, once a second: users, requests/s, non-2xx answers, p50
//! and p99 of the last whole second. On a terminal the line is rewritten
//! in place; piped into a file, one plain line per second.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::stats::{Stats, Summary, ALL};

pub fn line(t: u64, users: usize, last: &Summary) -> String {
    format!(
        "{t:>4} s  users {users:>5}  {:>6.0} req/s  non-2xx {:>5}  p50 {:>7.1} ms  p99 {:>7.1} ms",
        last.throughput_rps, last.failed, last.latency.p50_ms, last.latency.p99_ms
    )
}

/// Runs until aborted.
pub async fn show(stats: Arc<Stats>) {
    let tty = std::io::stdout().is_terminal();
    let mut shown = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(start) = stats.started() else {
            continue;
        };
        let t = start.elapsed().as_secs();
        if t <= shown {
            continue;
        }
        shown = t;
        let last = stats.window(ALL, t - 1, t);
        let text = line(t, stats.users.load(Ordering::Relaxed), &last);
        let mut out = std::io::stdout().lock();
        // A closed stdout is no reason to stop the load.
        let _ = if tty {
            write!(out, "\r\x1b[2K{text}")
        } else {
            writeln!(out, "{text}")
        };
        let _ = out.flush();
    }
}

/// Ends the overwritten line so that what follows starts on its own.
pub fn finish() {
    if std::io::stdout().is_terminal() {
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_shows_rate_errors_and_percentiles() {
        let mut s = Summary {
            throughput_rps: 987.0,
            failed: 3,
            ..Default::default()
        };
        s.latency.p50_ms = 4.12;
        s.latency.p99_ms = 12.34;
        let l = line(12, 1000, &s);
        assert_eq!(
            l,
            "  12 s  users  1000     987 req/s  non-2xx     3  p50     4.1 ms  p99    12.3 ms"
        );
    }
}
