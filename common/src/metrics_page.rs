//! One `/metrics` page (Prometheus text exposition), parsed into samples,
//! with the sums and histogram buckets that readers of the cluster's pages
//! need: the admin console's views, and the load tests' counts of what the
//! nodes did.

use std::collections::BTreeMap;

/// One sample of a series: its labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of a page, by series name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    samples: BTreeMap<String, Vec<Sample>>,
}

impl Page {
    pub fn parse(text: &str) -> Self {
        let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
        for (name, sample) in text.lines().filter_map(parse_line) {
            samples.entry(name.to_string()).or_default().push(sample);
        }
        Self { samples }
    }

    /// The samples of `name`.
    pub fn samples(&self, name: &str) -> &[Sample] {
        self.samples.get(name).map_or(&[], Vec::as_slice)
    }

    /// The sum of the samples of `name` that `keep` keeps (0 if none).
    pub fn sum(&self, name: &str, keep: impl Fn(&Sample) -> bool) -> f64 {
        self.samples(name)
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.value)
            .sum()
    }

    /// The value of a series without labels, if the page has it.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.samples(name)
            .iter()
            .find(|s| s.labels.is_empty())
            .map(|s| s.value)
    }

    /// The cumulative buckets of histogram `family` (its `_bucket` series)
    /// that `keep` keeps, summed per upper bound. Keyed by the bound's bits:
    /// for the non-negative bounds of a histogram (including +Inf) they sort
    /// like the numbers.
    pub fn buckets(&self, family: &str, keep: impl Fn(&Sample) -> bool) -> Buckets {
        let mut out = Buckets::new();
        for s in self.samples(&format!("{family}_bucket")) {
            if !keep(s) {
                continue;
            }
            if let Some(le) = s.label("le").and_then(parse_bound) {
                *out.entry(le.to_bits()).or_default() += s.value;
            }
        }
        out
    }
}

/// Cumulative counts of a histogram by upper bound (see `Page::buckets`).
pub type Buckets = BTreeMap<u64, f64>;

/// `later - earlier`; a counter that went down was reset (the process
/// restarted), so everything it counts now is new.
pub fn increase(later: f64, earlier: f64) -> f64 {
    if later >= earlier {
        later - earlier
    } else {
        later
    }
}

/// Adds the observations between two scrapes of a histogram to `into`.
pub fn add_increase(into: &mut Buckets, later: &Buckets, earlier: &Buckets) {
    for (le, count) in later {
        let was = earlier.get(le).copied().unwrap_or(0.0);
        *into.entry(*le).or_default() += increase(*count, was);
    }
}

/// The `q` quantile (0..1) of the observations a histogram's bucket deltas
/// hold, interpolating linearly inside the bucket as Prometheus'
/// `histogram_quantile` does; `None` without observations.
pub fn quantile(q: f64, buckets: &Buckets) -> Option<f64> {
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

/// One line of Prometheus text, if it is a sample: its name and sample.
pub fn parse_line(line: &str) -> Option<(&str, Sample)> {
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
    Some((name, Sample { labels, value }))
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

fn parse_bound(le: &str) -> Option<f64> {
    let bound = if le == "+Inf" {
        f64::INFINITY
    } else {
        le.parse().ok()?
    };
    (bound >= 0.0).then_some(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_braces_and_escapes_parse() {
        let (name, s) = parse_line(r#"m{a="x{y}",b="q\"uote"} 12.5 1700000000"#).unwrap();
        assert_eq!(name, "m");
        assert_eq!(s.label("a"), Some("x{y}"));
        assert_eq!(s.label("b"), Some("q\"uote"));
        assert_eq!(s.value, 12.5);
        assert_eq!(parse_line("plain 3").unwrap().1.value, 3.0);
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
        assert_eq!(parse_line(r#"m{a="é"} 1"#).unwrap().1.label("a"), Some("é"));
        let page = Page::parse(&garbage.join("\n"));
        assert_eq!(page.value("cart_http_requests_total"), None);
        assert!(page.buckets("m", |_| true).is_empty());
    }

    #[test]
    fn sums_values_and_buckets_of_a_page() {
        let page = Page::parse(
            "# HELP x\n\
             g 7\n\
             c{k=\"a\"} 2\n\
             c{k=\"b\"} 3\n\
             h_bucket{k=\"a\",le=\"0.1\"} 1\n\
             h_bucket{k=\"a\",le=\"+Inf\"} 2\n\
             h_bucket{k=\"b\",le=\"0.1\"} 4\n\
             h_bucket{k=\"b\",le=\"+Inf\"} 4\n\
             h_bucket{k=\"b\",le=\"-1\"} 9\n",
        );
        assert_eq!(page.value("g"), Some(7.0));
        assert_eq!(page.value("c"), None, "only a series without labels");
        assert_eq!(page.sum("c", |_| true), 5.0);
        assert_eq!(page.sum("c", |s| s.label("k") == Some("b")), 3.0);
        let all = page.buckets("h", |_| true);
        assert_eq!(all.len(), 2, "a negative bound is no histogram bound");
        assert_eq!(all[&0.1f64.to_bits()], 5.0);
        assert_eq!(all[&f64::INFINITY.to_bits()], 6.0);
    }

    #[test]
    fn quantiles_of_edge_cases() {
        assert_eq!(quantile(0.99, &Buckets::new()), None);
        let mut only_inf = Buckets::new();
        only_inf.insert(0.5f64.to_bits(), 0.0);
        only_inf.insert(f64::INFINITY.to_bits(), 4.0);
        assert_eq!(quantile(0.99, &only_inf), Some(0.5));
    }

    #[test]
    fn a_counter_that_went_down_was_reset() {
        assert_eq!(increase(10.0, 4.0), 6.0);
        assert_eq!(increase(3.0, 40.0), 3.0);
    }
}
