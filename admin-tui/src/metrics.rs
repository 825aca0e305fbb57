//! The traffic view's numbers, from the coordinators' `/metrics` pages
//! (Prometheus text): per service, the request rate, the error rate and the
//! p99 latency of the public API, each from the difference between two
//! scrapes of the same coordinator, kept for the last few minutes.

use std::collections::{BTreeMap, VecDeque};

/// Requests served, by service, role, route and status.
pub const REQUESTS: &str = "cart_http_requests_total";
/// Latency histogram buckets, by service, role and route.
pub const DURATION_BUCKETS: &str = "cart_http_request_duration_seconds_bucket";
/// The `role` of a coordinator's public cart API (its admin port has another).
pub const PUBLIC_ROLE: &str = "coordinator";
/// Points kept per service: five minutes at the default 1 s refresh.
pub const HISTORY: usize = 300;

/// One service's counters on one coordinator's page.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub requests: f64,
    /// Requests answered 4xx or 5xx.
    pub errors: f64,
    /// Cumulative bucket counts by upper bound. Keyed by the bound's bits:
    /// for the non-negative bounds of a histogram (including +Inf) they sort
    /// like the numbers.
    pub buckets: BTreeMap<u64, f64>,
}

/// One sample of a series: its name, labels and value.
#[derive(Debug, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample<'_> {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One line of Prometheus text, if it is a sample.
pub fn parse_line(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = match line.find('{') {
        Some(_) => {
            // Label values may hold braces (routes like `/find/{id}`): the
            // series ends at the last one.
            let close = line.rfind('}')?;
            (&line[..=close], line[close + 1..].trim())
        }
        None => line.split_once(char::is_whitespace)?,
    };
    let value = value.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, vec![]),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `k="v",k2="v2"` with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text.trim_start_matches(',');
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        rest = after[end + 2..].trim_start_matches(',').trim_start();
    }
    Some(labels)
}

/// Per-service counters of the public API on one page.
pub fn parse_page(text: &str) -> BTreeMap<String, Counters> {
    let mut out: BTreeMap<String, Counters> = BTreeMap::new();
    for sample in text.lines().filter_map(parse_line) {
        let is_request = sample.name == REQUESTS;
        let is_bucket = sample.name == DURATION_BUCKETS;
        if !(is_request || is_bucket) || sample.label("role") != Some(PUBLIC_ROLE) {
            continue;
        }
        let Some(service) = sample.label("service") else {
            continue;
        };
        let counters = out.entry(service.to_string()).or_default();
        if is_request {
            counters.requests += sample.value;
            let status: u16 = sample
                .label("status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if status >= 400 {
                counters.errors += sample.value;
            }
        } else if let Some(le) = sample.label("le").and_then(parse_bound) {
            *counters.buckets.entry(le.to_bits()).or_default() += sample.value;
        }
    }
    out
}

fn parse_bound(le: &str) -> Option<f64> {
    let bound = if le == "+Inf" {
        f64::INFINITY
    } else {
        le.parse().ok()?
    };
    (bound >= 0.0).then_some(bound)
}

/// `later - earlier`; a counter that went down was reset (the coordinator
/// restarted), so everything it counts now is new.
fn increase(later: f64, earlier: f64) -> f64 {
    if later >= earlier {
        later - earlier
    } else {
        later
    }
}

/// The `q` quantile (0..1) of the observations a histogram's bucket deltas
/// hold, interpolating linearly inside the bucket as Prometheus'
/// `histogram_quantile` does; `None` without observations.
pub fn quantile(q: f64, buckets: &BTreeMap<u64, f64>) -> Option<f64> {
    let total = buckets.values().copied().fold(0.0, f64::max);
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (&bits, &count) in buckets {
        let upper = f64::from_bits(bits);
        if count >= rank {
            if upper.is_infinite() {
                // Beyond the last finite bound: the best we can say.
                return Some(lower);
            }
            let inside = count - below;
            let fraction = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (upper - lower) * fraction);
        }
        (lower, below) = (upper, count);
    }
    Some(lower)
}

/// One point of a service's traffic history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub at_ms: u64,
    /// Requests per second.
    pub rate: f64,
    /// Requests answered 4xx/5xx per second.
    pub error_rate: f64,
    /// p99 latency in milliseconds over the interval, if anything was served.
    pub p99_ms: Option<f64>,
}

/// What one coordinator's page said at a time.
#[derive(Clone, Debug, PartialEq)]
struct Scrape {
    at_ms: u64,
    services: BTreeMap<String, Counters>,
}

/// Traffic history per service, built from successive scrapes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    previous: BTreeMap<String, Scrape>,
    history: BTreeMap<String, VecDeque<Point>>,
}

impl Traffic {
    /// Takes one round of scrapes at `at_ms`: per coordinator address, its
    /// page, or `None` if it did not answer.
    pub fn record(&mut self, at_ms: u64, pages: &[(String, Option<String>)]) {
        let mut rates: BTreeMap<String, (f64, f64, BTreeMap<u64, f64>)> = BTreeMap::new();
        for (addr, page) in pages {
            let Some(page) = page else {
                // Start afresh when it is back: no delta across a gap.
                self.previous.remove(addr);
                continue;
            };
            let now = Scrape {
                at_ms,
                services: parse_page(page),
            };
            if let Some(before) = self.previous.get(addr) {
                let secs = at_ms.saturating_sub(before.at_ms) as f64 / 1000.0;
                if secs > 0.0 {
                    for (service, c) in &now.services {
                        let old = before.services.get(service).cloned().unwrap_or_default();
                        let entry = rates.entry(service.clone()).or_default();
                        entry.0 += increase(c.requests, old.requests) / secs;
                        entry.1 += increase(c.errors, old.errors) / secs;
                        for (le, count) in &c.buckets {
                            let was = old.buckets.get(le).copied().unwrap_or(0.0);
                            *entry.2.entry(*le).or_default() += increase(*count, was);
                        }
                    }
                }
            }
            self.previous.insert(addr.clone(), now);
        }
        for (service, (rate, error_rate, buckets)) in rates {
            let points = self.history.entry(service).or_default();
            points.push_back(Point {
                at_ms,
                rate,
                error_rate,
                p99_ms: quantile(0.99, &buckets).map(|s| s * 1000.0),
            });
            while points.len() > HISTORY {
                points.pop_front();
            }
        }
    }

    /// A service's points, oldest first.
    pub fn points(&self, service: &str) -> Option<&VecDeque<Point>> {
        self.history.get(service)
    }

    /// Appends a point directly (fixtures of rendering tests).
    pub fn push(&mut self, service: &str, point: Point) {
        let points = self.history.entry(service.to_string()).or_default();
        points.push_back(point);
        while points.len() > HISTORY {
            points.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ok: u64, bad: u64, fast: u64, slow: u64) -> String {
        let total = fast + slow;
        format!(
            "# HELP cart_http_requests_total x\n\
             cart_http_requests_total{{service=\"stock\",role=\"coordinator\",route=\"/stock/find/{{item_id}}\",status=\"200\"}} {ok}\n\
             cart_http_requests_total{{service=\"stock\",role=\"coordinator\",route=\"/stock/find/{{item_id}}\",status=\"503\"}} {bad}\n\
             cart_http_requests_total{{service=\"stock\",role=\"coordinator_admin\",route=\"/metrics\",status=\"200\"}} 999\n\
             cart_http_request_duration_seconds_bucket{{service=\"stock\",role=\"coordinator\",route=\"/stock/find/{{item_id}}\",le=\"0.01\"}} {fast}\n\
             cart_http_request_duration_seconds_bucket{{service=\"stock\",role=\"coordinator\",route=\"/stock/find/{{item_id}}\",le=\"0.1\"}} {total}\n\
             cart_http_request_duration_seconds_bucket{{service=\"stock\",role=\"coordinator\",route=\"/stock/find/{{item_id}}\",le=\"+Inf\"}} {total}\n"
        )
    }

    #[test]
    fn lines_with_braces_and_escapes_parse() {
        let s = parse_line(r#"m{a="x{y}",b="q\"uote"} 12.5 1700000000"#).unwrap();
        assert_eq!(s.name, "m");
        assert_eq!(s.label("a"), Some("x{y}"));
        assert_eq!(s.label("b"), Some("q\"uote"));
        assert_eq!(s.value, 12.5);
        assert_eq!(parse_line("plain 3").unwrap().value, 3.0);
        assert!(parse_line("# TYPE m counter").is_none());
        assert!(parse_line("garbage{").is_none());
        assert!(parse_line(r#"m{a="unterminated} 1"#).is_none());
        assert!(parse_line("m notanumber").is_none());
    }

    #[test]
    fn malformed_lines_are_skipped_never_a_panic() {
        let garbage = [
            "",
            "{",
            "}",
            "{}",
            "{} 1",
            "a}b{c 1",
            "m{=} 1",
            "m{a} 1",
            r#"m{a="x"b="y"} 1"#,
            r#"m{a="é"} 1"#,
            r#"m{a="\"#,
            r#"m{a="x\"} 1"#,
            r#"m{a="x"} "#,
            "m 1 2 3",
            r#"é{ü="ß"} 1"#,
            r#"m{a="x",} 1e999"#,
            r#"m{a="x"}}} 1"#,
        ];
        for line in garbage {
            let _ = parse_line(line);
        }
        assert_eq!(parse_line(r#"m{a="é"} 1"#).unwrap().label("a"), Some("é"));
        let page = garbage.join("\n");
        assert!(parse_page(&page).is_empty());
    }

    #[test]
    fn only_the_public_api_counts() {
        let c = parse_page(&page(10, 2, 11, 1));
        let stock = &c["stock"];
        assert_eq!(stock.requests, 12.0);
        assert_eq!(stock.errors, 2.0);
        assert_eq!(stock.buckets.len(), 3);
    }

    #[test]
    fn rates_and_p99_come_from_deltas_between_scrapes() {
        let mut t = Traffic::default();
        let a = "127.0.0.1:1".to_string();
        t.record(1_000, &[(a.clone(), Some(page(10, 0, 10, 0)))]);
        assert!(t.points("stock").is_none(), "one scrape has no rate yet");
        // 2 s later: 100 more requests, 10 of them errors, 2 slow ones.
        t.record(3_000, &[(a.clone(), Some(page(100, 10, 108, 2)))]);
        let p = t.points("stock").unwrap()[0];
        assert_eq!(p.rate, 50.0);
        assert_eq!(p.error_rate, 5.0);
        // rank 99 of 100: inside the 0.01..0.1 bucket, halfway.
        let p99 = p.p99_ms.unwrap();
        assert!((p99 - 55.0).abs() < 1e-6, "{p99}");
    }

    #[test]
    fn a_restarted_coordinator_or_a_gap_is_no_negative_rate() {
        let mut t = Traffic::default();
        let a = "a".to_string();
        t.record(0, &[(a.clone(), Some(page(100, 0, 100, 0)))]);
        t.record(1_000, &[(a.clone(), Some(page(5, 0, 5, 0)))]);
        assert_eq!(t.points("stock").unwrap()[0].rate, 5.0);
        t.record(2_000, &[(a.clone(), None)]);
        t.record(3_000, &[(a.clone(), Some(page(50, 0, 50, 0)))]);
        assert_eq!(
            t.points("stock").unwrap().len(),
            1,
            "no delta across the gap"
        );
    }

    #[test]
    fn quantiles_of_edge_cases() {
        assert_eq!(quantile(0.99, &BTreeMap::new()), None);
        let mut only_inf = BTreeMap::new();
        only_inf.insert(0.5f64.to_bits(), 0.0);
        only_inf.insert(f64::INFINITY.to_bits(), 4.0);
        assert_eq!(quantile(0.99, &only_inf), Some(0.5));
    }

    #[test]
    fn history_is_bounded() {
        let mut t = Traffic::default();
        for i in 0..(HISTORY as u64 + 10) {
            t.push(
                "stock",
                Point {
                    at_ms: i,
                    rate: 1.0,
                    error_rate: 0.0,
                    p99_ms: None,
                },
            );
        }
        assert_eq!(t.points("stock").unwrap().len(), HISTORY);
    }
}
