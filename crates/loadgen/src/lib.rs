//! The load harness of `bench/` (issue 11): a corpus of realistic payloads
//! (every source's golden inputs that normalize to events), fresh or
//! duplicate per a seeded ratio, latency summaries, peak RSS of a process,
//! and Prometheus histogram quantiles. The binaries `tg-loadgen` (the load
//! generator) and `tg-ceiling` (the machine's ceiling: parse JSON, answer
//! 202) sit on top. Never a dependency of the gate.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use serde::Serialize;
use serde_json::Value;

/// Largest golden input read, in bytes.
pub const PAYLOAD_BYTES_MAX: usize = 256 * 1024;
/// Sources whose goldens are skipped: SNS deliveries need a signature.
pub const SKIPPED_SOURCES: &[&str] = &["cloudwatch-sns"];

/// One golden case: its source (the URL path segment) and raw body, with
/// the strings that make a fingerprint fresh when suffixed.
#[derive(Debug, Clone)]
pub struct Template {
    pub source: String,
    pub case: String,
    pub body: String,
    /// The alert names of its events, as they appear in the body.
    pub alert_names: Vec<String>,
    /// One Alertmanager API v2 alert per event (labels and annotations).
    pub am_alerts: Vec<AmAlert>,
}

/// An alert as `POST /api/v2/alerts` takes it.
#[derive(Debug, Clone, Serialize)]
pub struct AmAlert {
    pub labels: serde_json::Map<String, Value>,
    pub annotations: serde_json::Map<String, Value>,
}

/// Reads `<dir>/<source>/<case>/{input,expected}.json`, keeping the cases
/// whose expected answer holds events and whose alert names appear verbatim
/// in the body (so a fresh copy can be made by suffixing them).
pub fn load_corpus(dir: &Path) -> anyhow::Result<Vec<Template>> {
    let mut out = Vec::new();
    let mut sources: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    sources.sort();
    for src_dir in sources {
        let source = file_name(&src_dir)?;
        if SKIPPED_SOURCES.contains(&source.as_str()) {
            continue;
        }
        let mut cases: Vec<_> = std::fs::read_dir(&src_dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        cases.sort();
        for case_dir in cases {
            if let Some(t) = template(&source, &case_dir)? {
                out.push(t);
            }
        }
    }
    if out.is_empty() {
        return Err(anyhow!("no usable payload under {}", dir.display()));
    }
    Ok(out)
}

fn file_name(p: &Path) -> anyhow::Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("bad path {}", p.display()))
}

fn template(source: &str, case_dir: &Path) -> anyhow::Result<Option<Template>> {
    let input = case_dir.join("input.json");
    let expected = case_dir.join("expected.json");
    if !input.is_file() || !expected.is_file() {
        return Ok(None);
    }
    let body = std::fs::read_to_string(&input)?;
    if body.len() > PAYLOAD_BYTES_MAX {
        return Ok(None);
    }
    let exp: Value = serde_json::from_str(&std::fs::read_to_string(&expected)?)
        .with_context(|| format!("{}", expected.display()))?;
    let Some(events) = exp.get("events").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut alert_names = Vec::new();
    let mut am_alerts = Vec::new();
    for ev in events {
        let name = ev.get("alert_name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() || !body.contains(name) {
            return Ok(None);
        }
        if !alert_names.iter().any(|n| n == name) {
            alert_names.push(name.to_owned());
        }
        am_alerts.push(am_alert(ev));
    }
    if alert_names.is_empty() {
        return Ok(None);
    }
    Ok(Some(Template {
        source: source.to_owned(),
        case: file_name(case_dir)?,
        body,
        alert_names,
        am_alerts,
    }))
}

/// The Alertmanager alert equivalent to a normalized event.
fn am_alert(ev: &Value) -> AmAlert {
    // An empty label value means "no label" to Alertmanager: left out.
    let put = |m: &mut serde_json::Map<String, Value>, k: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            m.insert(k.to_owned(), Value::String(v.to_owned()));
        }
    };
    let s = |k: &str| ev.get(k).and_then(Value::as_str);
    let mut labels = serde_json::Map::new();
    put(&mut labels, "alertname", s("alert_name"));
    put(&mut labels, "service", s("service"));
    put(&mut labels, "env", s("environment"));
    put(
        &mut labels,
        "severity",
        ev.pointer("/impact/level").and_then(Value::as_str),
    );
    let mut annotations = serde_json::Map::new();
    put(&mut annotations, "summary", s("summary"));
    AmAlert {
        labels,
        annotations,
    }
}

impl Template {
    /// The body, made a distinct alert (a new fingerprint) by suffixing its
    /// alert names with `-n`; `None` keeps the original (a duplicate).
    pub fn body(&self, fresh: Option<u64>) -> String {
        match fresh {
            None => self.body.clone(),
            Some(n) => {
                let mut b = self.body.clone();
                for name in &self.alert_names {
                    b = b.replace(name.as_str(), &format!("{name}-{n}"));
                }
                b
            }
        }
    }

    /// The equivalent Alertmanager alerts, fresh or not the same way.
    pub fn am_body(&self, fresh: Option<u64>) -> String {
        let alerts: Vec<AmAlert> = self
            .am_alerts
            .iter()
            .map(|a| {
                let mut a = a.clone();
                if let (Some(n), Some(Value::String(name))) = (fresh, a.labels.get_mut("alertname"))
                {
                    *name = format!("{name}-{n}");
                }
                a
            })
            .collect();
        serde_json::to_string(&alerts).unwrap_or_else(|_| "[]".to_owned())
    }
}

/// xorshift64*: a seeded, dependency-free stream for the duplicate choice.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Summarises a histogram of microseconds.
pub fn latency(h: &hdrhistogram::Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1000.0,
    }
}

/// `VmHWM` (peak resident set) and `VmRSS` of `pid`, in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Quantiles of a Prometheus histogram in exposition text: the upper bound
/// of the bucket holding each quantile (so "p99 <= x"), with the count.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistogramQuantiles {
    pub count: u64,
    pub p50_le_secs: Option<f64>,
    pub p99_le_secs: Option<f64>,
    pub mean_secs: Option<f64>,
}

/// One Prometheus histogram read from exposition text: cumulative bucket
/// counts by upper bound, the sum and the count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromHistogram {
    /// (upper bound, cumulative count), sorted by bound.
    pub buckets: Vec<(f64, u64)>,
    pub sum: Option<f64>,
    pub count: u64,
}

impl PromHistogram {
    /// Reads histogram `name` (one label set: the gate exports one) from
    /// exposition text; `None` when its `_count` line is missing or a line
    /// of it does not parse.
    pub fn parse(text: &str, name: &str) -> Option<Self> {
        let bucket_prefix = format!("{name}_bucket{{");
        let sum_prefix = format!("{name}_sum");
        let count_prefix = format!("{name}_count");
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        let mut sum = None;
        let mut count = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&bucket_prefix) {
                let le = rest.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                let n: f64 = rest.rsplit(' ').next()?.parse().ok()?;
                buckets.push((le, n as u64));
            } else if let Some(rest) = line.strip_prefix(&sum_prefix) {
                sum = rest.trim().rsplit(' ').next()?.parse::<f64>().ok();
            } else if let Some(rest) = line.strip_prefix(&count_prefix) {
                count = rest
                    .trim()
                    .rsplit(' ')
                    .next()?
                    .parse::<f64>()
                    .ok()
                    .map(|c| c as u64);
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(PromHistogram {
            buckets,
            sum,
            count: count?,
        })
    }

    /// The histogram of several processes (replicas) as one: counts and
    /// sums added bucket by bucket. Buckets are matched by bound; a bound
    /// one side lacks counts as zero there (the gate's replicas share one
    /// bucket layout, so this does not arise in practice).
    pub fn merge(mut self, other: &PromHistogram) -> PromHistogram {
        for &(le, n) in &other.buckets {
            match self
                .buckets
                .iter_mut()
                .find(|(b, _)| b.total_cmp(&le).is_eq())
            {
                Some((_, m)) => *m = m.saturating_add(n),
                None => self.buckets.push((le, n)),
            }
        }
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        self.sum = match (self.sum, other.sum) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.count = self.count.saturating_add(other.count);
        self
    }

    /// The quantiles: the upper bound of the bucket holding each.
    pub fn quantiles(&self) -> HistogramQuantiles {
        let count = self.count;
        let q = |q: f64| {
            let want = (count as f64 * q).ceil() as u64;
            self.buckets
                .iter()
                .find(|(_, n)| *n >= want)
                .map(|(le, _)| *le)
        };
        HistogramQuantiles {
            count,
            p50_le_secs: q(0.5),
            p99_le_secs: q(0.99),
            mean_secs: self.sum.filter(|_| count > 0).map(|s| s / count as f64),
        }
    }
}

/// Quantiles of histogram `name` in one exposition text.
pub fn histogram_quantiles(text: &str, name: &str) -> Option<HistogramQuantiles> {
    PromHistogram::parse(text, name).map(|h| h.quantiles())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn the_golden_corpus_loads_every_source_but_sns_and_fresh_copies_differ() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../normalize/tests/golden");
        let corpus = load_corpus(&dir).unwrap();
        let sources: std::collections::BTreeSet<&str> =
            corpus.iter().map(|t| t.source.as_str()).collect();
        assert!(sources.len() >= 6, "{sources:?}");
        assert!(!sources.contains("cloudwatch-sns"));
        let t = &corpus[0];
        assert_eq!(t.body(None), t.body);
        assert_ne!(t.body(Some(7)), t.body);
        assert!(t.am_body(Some(7)).contains("-7\""));
    }

    #[test]
    fn histogram_quantiles_pick_the_bucket_bound() {
        let text = "x_seconds_bucket{le=\"0.001\"} 50\nx_seconds_bucket{le=\"0.01\"} 98\n\
                    x_seconds_bucket{le=\"0.1\"} 100\nx_seconds_bucket{le=\"+Inf\"} 100\n\
                    x_seconds_sum 0.5\nx_seconds_count 100\n";
        let q = histogram_quantiles(text, "x_seconds").unwrap();
        assert_eq!(q.count, 100);
        assert_eq!(q.p50_le_secs, Some(0.001));
        assert_eq!(q.p99_le_secs, Some(0.1));
        assert_eq!(q.mean_secs, Some(0.005));
        assert!(histogram_quantiles(text, "y_seconds").is_none());
    }

    #[test]
    fn histograms_of_replicas_merge_bucket_by_bucket() {
        let a = "x_seconds_bucket{le=\"0.001\"} 50\nx_seconds_bucket{le=\"0.01\"} 100\n\
                 x_seconds_bucket{le=\"+Inf\"} 100\nx_seconds_sum 0.4\nx_seconds_count 100\n";
        let b = "x_seconds_bucket{le=\"0.001\"} 0\nx_seconds_bucket{le=\"0.01\"} 0\n\
                 x_seconds_bucket{le=\"+Inf\"} 100\nx_seconds_sum 99.6\nx_seconds_count 100\n";
        let a = PromHistogram::parse(a, "x_seconds").unwrap();
        let b = PromHistogram::parse(b, "x_seconds").unwrap();
        let q = a.merge(&b).quantiles();
        assert_eq!(q.count, 200);
        assert_eq!(q.p50_le_secs, Some(0.01));
        assert_eq!(q.p99_le_secs, Some(f64::INFINITY));
        assert_eq!(q.mean_secs, Some(0.5));
    }

    #[test]
    fn the_duplicate_stream_is_seeded() {
        let mut a = Rng::new(3);
        let mut b = Rng::new(3);
        let xs: Vec<f64> = (0..5).map(|_| a.unit()).collect();
        let ys: Vec<f64> = (0..5).map(|_| b.unit()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
    }
}
