//! `tg-loadgen`: posts realistic mixed payloads to a triage-gate (or the
//! ceiling server, same paths) or to Alertmanager's `POST /api/v2/alerts`, at
//! a fixed rate (open loop: latency counted from the scheduled send time, so
//! a stalled server cannot hide its queueing) or at maximum (closed loop,
//! `--concurrency` callers). Prints one JSON result on stdout.
//!
//! Several `--url`s (repeated or comma-separated: gate replicas behind no
//! load balancer) are served round-robin by request number; `--pid` and
//! `--metrics-url` take one entry per replica, the peak RSS reported is the
//! largest and the lag histogram is the replicas' sum.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;
use triage_gate_loadgen::{PromHistogram, Rng, Template, latency, load_corpus, rss_kib};

/// Longest request wait before it counts as a transport error.
const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Highest latency the histogram records (60 s, in microseconds).
const LATENCY_US_MAX: u64 = 60_000_000;
/// Longest sample kept of a non-2xx answer's body (one per status).
const SAMPLE_BYTES_MAX: usize = 300;
/// Largest number of requests in flight in rate mode (beyond it a send is
/// skipped and counted: the target is not keeping up).
const IN_FLIGHT_MAX_DEFAULT: usize = 512;
/// Most target URLs (replicas) one load spreads over.
const URLS_MAX: usize = 64;

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
    /// Base URL, e.g. http://127.0.0.1:8700; repeated or comma-separated,
    /// requests go round-robin over them (request i to URL i mod n).
    #[arg(long, required = true, value_delimiter = ',')]
    url: Vec<String>,
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
    /// Number of the first request: successive runs against one server pass
    /// the previous run's `next_index`, so their alerts stay fresh.
    #[arg(long, default_value_t = 0)]
    first_index: u64,
    /// Report the peak RSS of this process (the server under test);
    /// repeated or comma-separated for replicas (the largest is reported).
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Scrape this Prometheus endpoint after the run (repeated or
    /// comma-separated: the replicas' histograms are added up)...
    #[arg(long, value_delimiter = ',')]
    metrics_url: Vec<String>,
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
    /// Target base URLs, never empty (checked in `main`).
    bases: Vec<String>,
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
    /// 2xx answers per target URL, in `--url` order.
    ok_per_url: Vec<u64>,
}

impl Shared {
    /// Whether request `i` repeats an earlier one (seeded per index).
    fn is_duplicate(&self, i: u64) -> bool {
        let n = self.corpus.len() as u64;
        i >= n
            && Rng::new(self.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).unit()
                < self.duplicate_ratio
    }

    /// Which target URL request `i` goes to: round-robin.
    fn target(&self, i: u64) -> usize {
        let n = self.bases.len().max(1) as u64;
        usize::try_from(i % n).unwrap_or(0)
    }

    /// The request: the template `i % n`, fresh as alert `i`, or a repeat of
    /// the last fresh send of the same template, to the target of `i`.
    fn request(&self, i: u64) -> (String, String) {
        let n = self.corpus.len() as u64;
        let mut id = i;
        while self.is_duplicate(id) {
            id -= n;
        }
        let idx = usize::try_from(i % n).unwrap_or(0);
        let (Some(t), Some(base)) = (self.corpus.get(idx), self.bases.get(self.target(i))) else {
            return (String::new(), String::new());
        };
        match self.kind {
            Kind::Gate => (format!("{base}/v1/events/{}", t.source), t.body(Some(id))),
            Kind::Alertmanager => (format!("{base}/api/v2/alerts"), t.am_body(Some(id))),
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
                if let Some(n) = s.ok_per_url.get_mut(self.target(i)) {
                    *n += 1;
                }
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
    if args.url.is_empty() || args.url.len() > URLS_MAX {
        return Err(anyhow!("--url: between 1 and {URLS_MAX} URLs"));
    }
    let bases: Vec<String> = args
        .url
        .iter()
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .collect();
    if bases.iter().any(String::is_empty) {
        return Err(anyhow!("--url: an empty URL in {:?}", args.url));
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
        bases: bases.clone(),
        duplicate_ratio: args.duplicate_ratio,
        seed: args.seed,
        http,
        next: AtomicU64::new(args.first_index),
        stats: Mutex::new(Stats {
            hist: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)?,
            status: BTreeMap::new(),
            samples: BTreeMap::new(),
            ok: 0,
            ok_per_url: vec![0; bases.len()],
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

    // The replicas' histograms added up; one missing makes the sum unknown.
    let mut lag: Option<PromHistogram> = None;
    for url in &args.metrics_url {
        let text = shared
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("scrape {url}"))?
            .text()
            .await?;
        let Some(h) = PromHistogram::parse(&text, &args.lag_metric) else {
            lag = None;
            break;
        };
        lag = Some(match lag {
            Some(acc) => acc.merge(&h),
            None => h,
        });
    }
    let lag = lag.map(|h| h.quantiles());
    let rss_each: Vec<Option<(u64, u64)>> = args.pid.iter().map(|p| rss_kib(*p)).collect();
    // The largest replica's figures (one process: its own).
    let rss = rss_each.iter().flatten().max_by_key(|r| r.0).copied();
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
        "warmup_secs": warmup.as_secs(),
        "sent": sent,
        "next_index": shared.next.load(Ordering::Relaxed),
        "ok": stats.ok,
        "skipped_in_flight_cap": skipped,
        "urls": bases,
        "ok_per_url": stats.ok_per_url,
        "status": stats.status,
        "refusal_samples": stats.samples,
        "throughput_rps": stats.ok as f64 / wall,
        "latency": latency(&stats.hist),
        "peak_rss_kib": rss.map(|r| r.0),
        "rss_kib": rss.map(|r| r.1),
        "peak_rss_kib_per_pid": rss_each.iter().map(|r| r.map(|r| r.0)).collect::<Vec<_>>(),
        "lag_metric": (!args.metrics_url.is_empty()).then(|| args.lag_metric.clone()),
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
