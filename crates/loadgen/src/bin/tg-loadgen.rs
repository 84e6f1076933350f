//! `tg-loadgen`: posts realistic mixed payloads to a triage-gate (or the
//! ceiling server, same paths) or to Alertmanager's `POST /api/v2/alerts`, at
//! a fixed rate (open loop: latency counted from the scheduled send time, so
//! a stalled server cannot hide its queueing) or at maximum (closed loop,
//! `--concurrency` callers). Prints one JSON result on stdout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;
use triage_gate_loadgen::{Rng, Template, histogram_quantiles, latency, load_corpus, rss_kib};

/// Longest request wait before it counts as a transport error.
const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Highest latency the histogram records (60 s, in microseconds).
const LATENCY_US_MAX: u64 = 60_000_000;
/// Longest sample kept of a non-2xx answer's body (one per status).
const SAMPLE_BYTES_MAX: usize = 300;
/// Largest number of requests in flight in rate mode (beyond it a send is
/// skipped and counted: the target is not keeping up).
const IN_FLIGHT_MAX_DEFAULT: usize = 512;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    /// `POST /v1/events/<source>` with the source's payload (triage-gate, tg-ceiling).
    Gate,
    /// `POST /api/v2/alerts` with the equivalent alerts (Prometheus Alertmanager).
    Alertmanager,
}

#[derive(Debug, Parser)]
#[command(name = "tg-loadgen", about = "Load generator for bench/")]
struct Args {
    /// Base URL, e.g. http://127.0.0.1:8700
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value = "gate")]
    kind: Kind,
    /// Golden payloads: <dir>/<source>/<case>/{input,expected}.json
    #[arg(long, default_value = "crates/normalize/tests/golden")]
    corpus: PathBuf,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Unmeasured seconds first (connections, caches, JIT-free but page cache).
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Requests per second; 0 = as fast as `--concurrency` callers go.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Callers in max mode; in-flight cap in rate mode.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Share of requests that repeat an earlier alert (a storm's duplicates).
    #[arg(long, default_value_t = 0.3)]
    duplicate_ratio: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Report the peak RSS of this process (the server under test).
    #[arg(long)]
    pid: Option<u32>,
    /// Scrape this Prometheus endpoint after the run...
    #[arg(long)]
    metrics_url: Option<String>,
    /// ...for this histogram's quantiles.
    #[arg(long, default_value = "triage_gate_processing_seconds")]
    lag_metric: String,
    /// A name for the result.
    #[arg(long, default_value = "run")]
    label: String,
}

struct Shared {
    corpus: Vec<Template>,
    kind: Kind,
    base: String,
    duplicate_ratio: f64,
    seed: u64,
    http: reqwest::Client,
    next: AtomicU64,
    stats: Mutex<Stats>,
}

struct Stats {
    hist: Histogram<u64>,
    status: BTreeMap<String, u64>,
    /// The first body of each non-2xx status (why the server refused).
    samples: BTreeMap<String, String>,
    ok: u64,
}

impl Shared {
    /// Whether request `i` repeats an earlier one (seeded per index).
    fn is_duplicate(&self, i: u64) -> bool {
        let n = self.corpus.len() as u64;
        i >= n
            && Rng::new(self.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).unit()
                < self.duplicate_ratio
    }

    /// The request: the template `i % n`, fresh as alert `i`, or a repeat of
    /// the last fresh send of the same template.
    fn request(&self, i: u64) -> (String, String) {
        let n = self.corpus.len() as u64;
        let mut id = i;
        while self.is_duplicate(id) {
            id -= n;
        }
        let idx = usize::try_from(i % n).unwrap_or(0);
        let Some(t) = self.corpus.get(idx) else {
            return (String::new(), String::new());
        };
        match self.kind {
            Kind::Gate => (
                format!("{}/v1/events/{}", self.base, t.source),
                t.body(Some(id)),
            ),
            Kind::Alertmanager => (format!("{}/api/v2/alerts", self.base), t.am_body(Some(id))),
        }
    }

    async fn send(&self, i: u64, started: Instant, record: bool) {
        let (url, body) = self.request(i);
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let key = match &resp {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) if e.is_timeout() => "timeout".to_owned(),
            Err(_) => "transport".to_owned(),
        };
        let ok = resp.as_ref().is_ok_and(|r| r.status().is_success());
        // Read the answer so the connection is reused.
        let answer = match resp {
            Ok(r) => r.bytes().await.unwrap_or_default(),
            Err(_) => bytes::Bytes::new(),
        };
        if !record {
            return;
        }
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(LATENCY_US_MAX);
        if let Ok(mut s) = self.stats.lock() {
            let _ = s.hist.record(us.clamp(1, LATENCY_US_MAX));
            if !ok && !s.samples.contains_key(&key) {
                let text = String::from_utf8_lossy(&answer);
                let sample: String = text.chars().take(SAMPLE_BYTES_MAX).collect();
                s.samples.insert(key.clone(), sample);
            }
            *s.status.entry(key).or_insert(0) += 1;
            if ok {
                s.ok += 1;
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(0.0..1.0).contains(&args.duplicate_ratio) {
        return Err(anyhow!("--duplicate-ratio must be in [0, 1)"));
    }
    let corpus = load_corpus(&args.corpus)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .pool_max_idle_per_host(args.concurrency.max(IN_FLIGHT_MAX_DEFAULT))
        .no_proxy()
        .build()
        .context("http client")?;
    let shared = Arc::new(Shared {
        corpus,
        kind: args.kind,
        base: args.url.trim_end_matches('/').to_owned(),
        duplicate_ratio: args.duplicate_ratio,
        seed: args.seed,
        http,
        next: AtomicU64::new(0),
        stats: Mutex::new(Stats {
            hist: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)?,
            status: BTreeMap::new(),
            samples: BTreeMap::new(),
            ok: 0,
        }),
    });
    // Other work on the machine moves the figures: recorded beside them.
    let load_before = loadavg_1m();
    let warmup = Duration::from_secs(args.warmup_secs);
    let measured = Duration::from_secs(args.secs);
    let t0 = Instant::now();
    let measure_from = t0 + warmup;
    let end = measure_from + measured;
    let mut skipped = 0u64;

    if args.rate == 0 {
        let mut callers = Vec::new();
        for _ in 0..args.concurrency.max(1) {
            let s = shared.clone();
            callers.push(tokio::spawn(async move {
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let i = s.next.fetch_add(1, Ordering::Relaxed);
                    s.send(i, now, now >= measure_from).await;
                }
            }));
        }
        for c in callers {
            c.await?;
        }
    } else {
        let cap = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
        let period = Duration::from_secs_f64(1.0 / args.rate as f64);
        let mut tasks = tokio::task::JoinSet::new();
        let mut k: u64 = 0;
        loop {
            let due = t0 + period.mul_f64(k as f64);
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            k += 1;
            let Ok(permit) = cap.clone().try_acquire_owned() else {
                if due >= measure_from {
                    skipped += 1;
                }
                continue;
            };
            let s = shared.clone();
            let i = s.next.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(async move {
                // From the scheduled time: a late send is the server's latency too.
                s.send(i, due, due >= measure_from).await;
                drop(permit);
            });
            // Reap finished tasks so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }
    let wall = measure_from.elapsed().max(measured).as_secs_f64();

    let lag = match &args.metrics_url {
        Some(url) => {
            let text = shared.http.get(url).send().await?.text().await?;
            histogram_quantiles(&text, &args.lag_metric)
        }
        None => None,
    };
    let rss = args.pid.and_then(rss_kib);
    let stats = shared
        .stats
        .lock()
        .map_err(|_| anyhow!("stats lock poisoned"))?;
    let sent: u64 = stats.status.values().sum();
    let out = json!({
        "label": args.label,
        "kind": format!("{:?}", args.kind).to_lowercase(),
        "mode": if args.rate == 0 { "max" } else { "rate" },
        "rate_target": args.rate,
        "concurrency": args.concurrency,
        "duplicate_ratio": args.duplicate_ratio,
        "payload_templates": shared.corpus.len(),
        "secs": measured.as_secs(),
        "sent": sent,
        "ok": stats.ok,
        "skipped_in_flight_cap": skipped,
        "status": stats.status,
        "refusal_samples": stats.samples,
        "throughput_rps": stats.ok as f64 / wall,
        "latency": latency(&stats.hist),
        "peak_rss_kib": rss.map(|r| r.0),
        "rss_kib": rss.map(|r| r.1),
        "lag_metric": args.metrics_url.as_ref().map(|_| args.lag_metric.clone()),
        "lag": lag,
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": loadavg_1m(),
    });
    println!("{out}");
    Ok(())
}

/// The 1-minute load average, from /proc/loadavg.
fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
