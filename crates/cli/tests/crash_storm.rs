//! Crash acceptance (issue 6): the real `triage-gate` binary is SIGKILLed at
//! seeded random points during a storm and restarted each time on the same
//! data dir. At the end:
//! - every accepted event (a `202`; nothing else counts) has exactly one run,
//!   completed, and exactly one audit record; every run in the store (an event
//!   committed whose `202` was lost to a kill included) is audited once;
//! - ServiceNow holds no two incidents with one `correlation_id` (the
//!   emulator's own duplicate guard is switched off, so the gate cannot lean on
//!   it), and every incident is one the audit trail says was delivered;
//! - PagerDuty saw no more triggers per `dedup_key` than the audit trail says
//!   were attempted, and no action is audited as failed;
//! - `triage-gate audit verify` passes.
//!
//! The storm mixes sources (generic, Alertmanager, Datadog), services and
//! teams, repeats (duplicates) and resolutions. The emulators answer every
//! ServiceNow and PagerDuty request after [`TARGET_DELAY_MS`], so deliveries
//! take long enough for kills to land inside them; about half the kill points
//! wait for a delivery in flight first.
//!
//! `TG_CRASH_POINTS` (default [`POINTS_DEFAULT`], the CI run) sets the number of
//! kills and `TG_CRASH_SEED` the seed (default: from the clock); the seed is
//! printed so a failure can be replayed. `scripts/crash-test` runs 20 points.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Gate;
use serde_json::{Value, json};
use tg_sandbox::{FaultSpec, Sandbox, SandboxConfig, ServiceNowRules};

/// Kill points when `TG_CRASH_POINTS` is not set (the short CI run).
const POINTS_DEFAULT: u64 = 3;
/// Most kill points accepted from `TG_CRASH_POINTS`.
const POINTS_MAX: u64 = 200;
/// Events in the storm per kill point (at least [`EVENTS_MIN`]).
const EVENTS_PER_POINT: u64 = 8;
const EVENTS_MIN: u64 = 30;
/// Every ServiceNow and PagerDuty request is answered after this long.
const TARGET_DELAY_MS: u64 = 120;
/// A kill at a random point comes this long after the gate is healthy.
const KILL_AFTER_MS: std::ops::Range<u64> = 50..1_500;
/// A kill inside a delivery waits at most this long for one to be in flight.
const DELIVERY_WAIT: Duration = Duration::from_secs(3);
/// Pause between two events sent by the storm client: the storm spans the
/// kill schedule (about a second per kill point for 8 events).
const SEND_PAUSE_MS: u64 = 120;
/// How long the whole storm may take to be accepted.
const STORM_TIMEOUT: Duration = Duration::from_secs(600);
/// How long every run may take to complete after the last restart.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

const SERVICES: [(&str, &str); 4] = [
    ("checkout", "payments"),
    ("payments-api", "payments"),
    ("orders-db", "dba"),
    ("search", "search"),
];
/// Alert names: with the services, 40 distinct faults (fingerprints).
const ALERTS: [&str; 10] = [
    "ErrorRate",
    "LatencyHigh",
    "Saturation",
    "QueueBacklog",
    "DiskFull",
    "CertExpiry",
    "PodRestarts",
    "ConnectionsExhausted",
    "ReplicationLag",
    "Timeouts",
];
/// PagerDuty integration keys (32 characters) per team, by environment variable.
const PD_KEYS: [(&str, &str); 3] = [
    (
        "TG_STORM_PD_KEY_PAYMENTS",
        "0123456789abcdef0123456789abcd01",
    ),
    ("TG_STORM_PD_KEY_DBA", "0123456789abcdef0123456789abcd02"),
    ("TG_STORM_PD_KEY_SEARCH", "0123456789abcdef0123456789abcd03"),
];

/// splitmix64: a seeded generator, so a printed seed replays the same storm
/// and the same kill schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn in_range(&mut self, r: std::ops::Range<u64>) -> u64 {
        r.start + self.below(r.end - r.start)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::try_from(self.below(items.len() as u64)).unwrap()]
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// One alert of the storm, sent firing or resolved by one source.
#[derive(Debug, Clone)]
struct Alert {
    source: &'static str,
    service: &'static str,
    alert: &'static str,
    severity: &'static str,
    origin: &'static str,
}

impl Alert {
    fn body(&self, firing: bool, n: u64) -> Value {
        let summary = format!("{} {} above threshold", self.service, self.alert);
        match self.source {
            "alertmanager" => {
                let status = if firing { "firing" } else { "resolved" };
                let labels = json!({
                    "alertname": self.alert, "severity": self.severity,
                    "env": "prod", "service": self.service,
                });
                json!({
                    "version": "4",
                    "groupKey": format!("{{}}:{{alertname=\"{}\"}}", self.alert),
                    "truncatedAlerts": 0,
                    "status": status,
                    "receiver": "triage-gate",
                    "groupLabels": {"alertname": self.alert},
                    "commonLabels": labels,
                    "commonAnnotations": {"summary": summary},
                    "externalURL": "http://alertmanager.example.internal:9093",
                    "alerts": [{
                        "status": status,
                        "labels": labels,
                        "annotations": {"summary": summary},
                        "startsAt": "2026-11-24T03:12:00Z",
                        "endsAt": if firing { "0001-01-01T00:00:00Z" } else { "2026-11-24T03:40:00Z" },
                        "generatorURL": "http://prometheus.example.internal:9090/graph",
                        "fingerprint": format!("{:016x}", n),
                    }],
                })
            }
            "datadog" => {
                let (tag, transition, alert_type) = if firing {
                    let t = match self.severity {
                        "critical" | "high" => "error",
                        _ => "warning",
                    };
                    ("Triggered", "Triggered", t)
                } else {
                    ("Recovered", "Recovered", "success")
                };
                json!({
                    "id": format!("{}", 7_311_843_934_451_000_000u64 + n),
                    "title": format!("[{tag}] {summary}"),
                    "body": "%%%\nstorm test\n%%%",
                    "alert_id": "12345678",
                    "alert_status": if firing { "Alert" } else { "OK" },
                    "alert_transition": transition,
                    "alert_type": alert_type,
                    "priority": if self.severity == "critical" { "P1" } else { "P2" },
                    "hostname": format!("{}-1", self.service),
                    "tags": format!("env:prod,service:{}", self.service),
                    "link": "https://app.datadoghq.com/monitors/12345678",
                    "date": "1764040330000",
                    "aggreg_key": format!("{:08x}", n),
                    "org": {"id": "1111", "name": "Example"},
                })
            }
            _ => json!({
                "service": self.service,
                "alert_name": self.alert,
                "summary": summary,
                "source_system": self.origin,
                "environment": "prod",
                "severity": self.severity,
                "status": if firing { "firing" } else { "resolved" },
            }),
        }
    }
}

/// The storm: new alerts, repeats of earlier notifications (duplicates) and
/// resolutions, in a seeded order.
fn storm(rng: &mut Rng, events: u64) -> Vec<(&'static str, Value)> {
    let mut out: Vec<(&'static str, Value)> = Vec::new();
    let mut firing: Vec<Alert> = Vec::new();
    for n in 0..events {
        let roll = rng.below(100);
        if roll < 20 && !out.is_empty() {
            // The same notification again (a retrying sender, a re-notify).
            let i = usize::try_from(rng.below(out.len() as u64)).unwrap();
            let again = out[i].clone();
            out.push(again);
        } else if roll < 30 && !firing.is_empty() {
            let i = usize::try_from(rng.below(firing.len() as u64)).unwrap();
            let a = firing.swap_remove(i);
            out.push((a.source, a.body(false, n)));
        } else {
            let (service, _) = rng.pick(&SERVICES);
            let a = Alert {
                source: rng.pick(&["generic", "alertmanager", "datadog"]),
                service,
                alert: rng.pick(&ALERTS),
                severity: rng.pick(&["warning", "high", "high", "critical"]),
                origin: rng.pick(&["cloudwatch", "apm"]),
            };
            out.push((a.source, a.body(true, n)));
            firing.push(a);
        }
    }
    out
}

fn write_config(dir: &Path, sandbox: &str) -> PathBuf {
    let yaml = format!(
        r#"server:
  workers: 2
  shutdown_grace_ms: 1000
identity:
  inbound:
    mode: none
    insecure_allow_anonymous: true
classifier:
  provider: rules
catalog:
  teams:
    payments: {{ description: "Payments SRE" }}
    dba: {{ description: "Database reliability" }}
    search: {{ description: "Search" }}
  services:
    checkout: {{ team: payments, autonomy: paging, tier: 1 }}
    payments-api: {{ team: payments, autonomy: paging, tier: 1 }}
    orders-db: {{ team: dba, autonomy: paging, tier: 0 }}
    search: {{ team: search, autonomy: limited, tier: 2 }}
actions:
  servicenow:
    base_url: {sandbox}/servicenow
    token: {{ env: TG_STORM_SERVICENOW_TOKEN }}
    assignment_groups:
      payments: 1c832706732023002728660c4cf6a7b9
      dba: 8a4dde73c6112278017a6a4baf547aa7
      search: 679434f053231300e321ddeeff7b12d8
  pagerduty:
    base_url: {sandbox}/pagerduty
    routing_keys:
      payments: {{ env: TG_STORM_PD_KEY_PAYMENTS }}
      dba: {{ env: TG_STORM_PD_KEY_DBA }}
      search: {{ env: TG_STORM_PD_KEY_SEARCH }}
  retry:
    attempts_max: 10
    backoff_base_ms: 50
    backoff_max_ms: 1000
"#
    );
    let path = dir.join("storm.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn start_gate(config: &Path, data: &Path) -> Gate {
    let mut env: Vec<(&str, &str)> = vec![(
        "TG_STORM_SERVICENOW_TOKEN",
        tg_sandbox::DEFAULT_SERVICENOW_TOKEN,
    )];
    env.extend(PD_KEYS);
    common::start_gate(config, data, &env).await
}

/// What the storm client saw.
#[derive(Debug, Default)]
struct Sent {
    /// Run IDs of every `202`.
    accepted: Vec<String>,
    /// Requests that got no answer (the gate was killed or down); the event
    /// was sent again. A lost answer may hide a committed run.
    unanswered: u64,
    /// `503` answers (backlog full, or not ready), sent again.
    refused: u64,
}

/// Sends every event to whichever gate is up (`base`), one at a time, until
/// each is answered `202`; counts only `202`s as accepted.
async fn send_storm(base: Arc<Mutex<Option<String>>>, events: Vec<(&'static str, Value)>) -> Sent {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + STORM_TIMEOUT;
    let mut sent = Sent::default();
    for (source, body) in events {
        loop {
            assert!(
                Instant::now() < deadline,
                "the storm was not accepted within {STORM_TIMEOUT:?}"
            );
            let Some(url) = base.lock().unwrap().clone() else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let resp = http
                .post(format!("{url}/v1/events/{source}"))
                .json(&body)
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(_) => {
                    sent.unanswered += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let Ok(answer) = resp.json::<Value>().await else {
                // The body was cut by a kill: not an answer.
                sent.unanswered += 1;
                continue;
            };
            match status {
                202 => {
                    for r in answer["runs"].as_array().unwrap() {
                        sent.accepted.push(r["run_id"].as_str().unwrap().to_owned());
                    }
                    break;
                }
                503 => {
                    sent.refused += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => panic!("{source} event refused with {status}: {answer}\n{body}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(SEND_PAUSE_MS)).await;
    }
    sent
}

/// Waits until a delivery is in flight (true) or [`DELIVERY_WAIT`] passes.
async fn delivery_in_flight(http: &reqwest::Client, base: &str) -> bool {
    let deadline = Instant::now() + DELIVERY_WAIT;
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/v1/review")).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["outbox"]["in_flight"].as_i64().unwrap_or(0) > 0
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// The runs' audit records (step records, which have a `kind`, left out).
fn audit_lines(data: &Path) -> Vec<Value> {
    std::fs::read_to_string(data.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r.get("kind").is_none())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_during_a_storm_loses_nothing_and_duplicates_nothing() {
    let points = env_u64("TG_CRASH_POINTS").unwrap_or(POINTS_DEFAULT);
    assert!(
        (1..=POINTS_MAX).contains(&points),
        "TG_CRASH_POINTS={points} is outside 1..={POINTS_MAX}"
    );
    let seed = env_u64("TG_CRASH_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        now.as_secs() ^ u64::from(now.subsec_nanos())
    });
    eprintln!(
        "crash test: {points} kill points, seed {seed} (replay: TG_CRASH_SEED={seed} TG_CRASH_POINTS={points})"
    );
    let mut rng = Rng(seed);
    let events = storm(&mut rng, (points * EVENTS_PER_POINT).max(EVENTS_MIN));
    let events_sent = events.len();

    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let st = sandbox.state_arc();
    // The gate must not lean on the emulator refusing a second incident.
    st.set_servicenow_rules(ServiceNowRules {
        unique_active_correlation_id: false,
        ..ServiceNowRules::default()
    });
    for target in ["servicenow", "pagerduty"] {
        st.inject_fault(FaultSpec {
            target: target.into(),
            status: None,
            count: tg_sandbox::faults::FAULT_COUNT_MAX,
            retry_after_secs: None,
            delay_ms: Some(TARGET_DELAY_MS),
        })
        .unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = write_config(tmp.path(), &sandbox.base_url());

    let base: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let client = tokio::spawn(send_storm(base.clone(), events));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut in_delivery = 0u64;
    for _ in 0..points {
        let gate = start_gate(&config, &data).await;
        *base.lock().unwrap() = Some(gate.base.clone());
        if rng.chance(50) {
            if delivery_in_flight(&http, &gate.base).await {
                in_delivery += 1;
            }
            tokio::time::sleep(Duration::from_millis(rng.below(TARGET_DELAY_MS * 2))).await;
        } else {
            tokio::time::sleep(Duration::from_millis(rng.in_range(KILL_AFTER_MS))).await;
        }
        *base.lock().unwrap() = None;
        gate.kill();
        // A request the dead gate had in flight lands at the emulator within
        // TARGET_DELAY_MS; the restarted gate's lookup comes after it.
        tokio::time::sleep(Duration::from_millis(TARGET_DELAY_MS + 100)).await;
    }

    // The last restart: the rest of the storm, then everything drains.
    let gate = start_gate(&config, &data).await;
    *base.lock().unwrap() = Some(gate.base.clone());
    let sent = client.await.unwrap();
    let store = tg_store::Store::open(&data.join("triage-gate.sqlite"))
        .await
        .unwrap();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let (runs_total, audited) = loop {
        let counts = store.count_by_status().await.unwrap();
        let total: i64 = counts.iter().map(|(_, n)| n).sum();
        let open: i64 = counts
            .iter()
            .filter(|(s, _)| *s != tg_store::RunStatus::Completed)
            .map(|(_, n)| n)
            .sum();
        let in_file = audit_lines(&data).len();
        if open == 0 && i64::try_from(in_file).unwrap() == total {
            break (total, in_file);
        }
        assert!(
            Instant::now() < deadline,
            "not drained within {DRAIN_TIMEOUT:?}: {counts:?}, {in_file} audit lines"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    gate.kill();

    // Every accepted event: one run, completed, one audit record.
    let records = audit_lines(&data);
    let mut by_run: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in &records {
        by_run
            .entry(r["run_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(r);
    }
    assert_eq!(by_run.len(), records.len(), "a run audited twice");
    let accepted: BTreeSet<&String> = sent.accepted.iter().collect();
    assert_eq!(
        accepted.len(),
        sent.accepted.len(),
        "a run id answered twice"
    );
    for id in &accepted {
        let run = store
            .get_run(&tg_model::RunId((*id).clone()))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("accepted run {id} is not in the store"));
        assert_eq!(run.status, tg_store::RunStatus::Completed, "{id}");
        assert_eq!(
            by_run.get(id.as_str()).map(Vec::len),
            Some(1),
            "accepted run {id} must have exactly one audit record"
        );
    }

    // What the audit trail says was delivered.
    let mut numbers: BTreeSet<String> = BTreeSet::new();
    let mut page_attempts: BTreeMap<String, u64> = BTreeMap::new();
    let mut pages_delivered: BTreeMap<String, u64> = BTreeMap::new();
    let mut executed = 0u64;
    for r in &records {
        for a in r["actions"].as_array().unwrap() {
            let status = a["status"].as_str().unwrap();
            if status == "not_executed" {
                continue;
            }
            executed += 1;
            assert_eq!(status, "delivered", "no action fails here: {r}");
            if let Some(n) = a["external_ids"]["servicenow_number"].as_str() {
                numbers.insert(n.to_owned());
            }
            if let Some(k) = a["external_ids"]["pagerduty_dedup_key"].as_str() {
                *page_attempts.entry(k.to_owned()).or_default() += a["attempts"].as_u64().unwrap();
                *pages_delivered.entry(k.to_owned()).or_default() += 1;
            }
        }
    }

    // ServiceNow: one incident per correlation_id, each one audited.
    let incidents = st.incidents();
    let mut correlations = BTreeSet::new();
    for i in &incidents {
        let c = i.field("correlation_id").unwrap_or_default().to_owned();
        assert!(correlations.insert(c.clone()), "two incidents for {c}");
        assert!(
            numbers.contains(&i.number),
            "incident {} ({c}) is not in the audit trail",
            i.number
        );
    }
    assert_eq!(
        numbers.len(),
        incidents.len(),
        "an audited incident is missing"
    );

    // PagerDuty: triggers per dedup_key within what the audit says was attempted.
    let alerts = st.pagerduty_alerts();
    let mut redelivered = 0u64;
    for a in &alerts {
        let attempts = page_attempts.get(&a.dedup_key).copied().unwrap_or(0);
        let delivered = pages_delivered.get(&a.dedup_key).copied().unwrap_or(0);
        assert!(
            delivered >= 1 && u64::from(a.trigger_count) <= attempts,
            "dedup_key {}: {} triggers, audit: {delivered} delivered in {attempts} attempts",
            a.dedup_key,
            a.trigger_count
        );
        redelivered += u64::from(a.trigger_count).saturating_sub(delivered);
    }
    assert_eq!(
        alerts.len(),
        page_attempts.len(),
        "an audited page is missing"
    );

    // Deliveries a kill interrupted (recorded `interrupted`, delivered again).
    let mut interrupted = 0u64;
    let mut misses = 0;
    let mut id = 1;
    while misses < 50 {
        if store.action_by_id(id).await.unwrap().is_some() {
            misses = 0;
            interrupted += store
                .attempts_of(id, 1_000)
                .await
                .unwrap()
                .iter()
                .filter(|a| a.outcome.as_deref() == Some("interrupted"))
                .count() as u64;
        } else {
            misses += 1;
        }
        id += 1;
    }

    let out = Command::new(common::BIN)
        .args(["audit", "verify"])
        .arg(data.join("audit.jsonl"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    eprintln!(
        "crash test summary: seed {seed}, {points} kills ({in_delivery} with a delivery in flight, \
         {interrupted} deliveries interrupted), {:.1} s\n  \
         events sent {events_sent}, accepted runs {} (unanswered sends {}, 503s {}), runs in store {runs_total}, audited {audited}\n  \
         actions executed {executed}: ServiceNow incidents {}, PagerDuty alerts {} ({redelivered} repeated triggers merged by dedup_key)\n  \
         audit verify: {}",
        started.elapsed().as_secs_f64(),
        accepted.len(),
        sent.unanswered,
        sent.refused,
        incidents.len(),
        alerts.len(),
        String::from_utf8_lossy(&out.stdout).trim(),
    );
    sandbox.shutdown().await;
}
