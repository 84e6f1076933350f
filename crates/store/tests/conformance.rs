//! One decision core, three backends: seeded timelines replayed through the
//! engine's `MemState` alone, through SQLite and through PostgreSQL (each
//! wave in the store's decide transaction: load, `tg_engine::decide_wave`,
//! apply, commit) must give the same decisions and the same final state,
//! key by key. PostgreSQL is the test server (`TG_TEST_POSTGRES_URL`); it is
//! skipped only outside CI when the server is down.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use tg_engine::{MemState, Policy, Reads, StormSettings, WaveRun};
use tg_model::audit::{AUDIT_SCHEMA_VERSION, EventMeta, RunTimestamps};
use tg_model::{
    AlertStatus, AuditRecord, AutonomyLevel, Classification, ClassifierInfo, CorrelationId,
    Environment, Fingerprint, Impact, ImpactLevel, NormalizedEvent, Rejection, RunId, Severity,
    Sha256Hex, Source,
};
use tg_policy::Gates;
use tg_policy::catalog::{Catalog, ServiceEntry, TeamEntry};
use tg_storm::BreakerConfig;
use triage_gate_store::testing::{fresh_postgres_database, postgres_available, test_options};
use triage_gate_store::{NewRun, Store};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 3, 0, 0).unwrap()
}

/// A seeded generator (SplitMix64): the same seed, the same timeline.
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
        self.next() % n
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[usize::try_from(self.below(v.len() as u64)).unwrap()]
    }
}

const SERVICES: [&str; 14] = [
    "checkout",
    "orders-db",
    "search",
    "cart",
    "payments-api",
    "ledger",
    "auth",
    "cdn",
    "mail",
    "billing",
    "catalog",
    "inventory",
    "unowned-a",
    "unowned-b",
];

fn catalog() -> Catalog {
    let mut c = Catalog::default();
    for team in ["payments", "dba", "search", "platform"] {
        c.teams.insert(team.into(), TeamEntry::default());
    }
    let levels = [
        AutonomyLevel::Mim,
        AutonomyLevel::Paging,
        AutonomyLevel::Limited,
        AutonomyLevel::Assist,
        AutonomyLevel::Shadow,
    ];
    let teams = ["payments", "dba", "search", "platform"];
    for (i, s) in SERVICES.iter().enumerate() {
        if s.starts_with("unowned") {
            continue;
        }
        c.services.insert(
            (*s).into(),
            ServiceEntry {
                team: teams[i % teams.len()].into(),
                autonomy: levels[i % levels.len()],
                tier: None,
                paused: false,
                aliases: Vec::new(),
                thresholds: Default::default(),
            },
        );
    }
    c
}

fn settings() -> StormSettings {
    StormSettings {
        // Small enough that budgets run out, the breaker opens and closes.
        breaker: BreakerConfig {
            open_services: 4,
            close_services: 2,
            cooldown: Duration::minutes(3),
            window: Duration::minutes(5),
            ..BreakerConfig::default()
        },
        ..StormSettings::default()
    }
}

/// One event of a timeline, with the answer the model gave.
struct Step {
    run_id: RunId,
    correlation_id: CorrelationId,
    event: NormalizedEvent,
    answer: Option<Result<Classification, Rejection>>,
}

/// Waves of events (distinct fingerprints within a wave), each with its `now`.
fn timeline(seed: u64, events: usize) -> Vec<(DateTime<Utc>, Vec<Step>)> {
    let mut rng = Rng(seed);
    let mut now = t0();
    let mut waves = Vec::new();
    let mut n = 0;
    while n < events {
        // Calm stretches (three services, minutes apart: budgets are spent,
        // the breaker closes) alternate with storms (every service at once).
        let storm = (n / 60) % 3 == 2;
        let (services, gap_ms, size) = if storm {
            (&SERVICES[..], 20_000, 12)
        } else {
            (&SERVICES[..3], 150_000, 3)
        };
        // Whole milliseconds, as the store keeps time.
        now += Duration::milliseconds(i64::try_from(rng.below(gap_ms)).unwrap());
        let size = 1 + usize::try_from(rng.below(size)).unwrap();
        let mut wave: Vec<Step> = Vec::new();
        for _ in 0..size {
            let service = *rng.pick(services);
            let environment = *rng.pick(&[
                Environment::Production,
                Environment::Production,
                Environment::Staging,
            ]);
            let variant = rng.below(3);
            let fingerprint =
                Fingerprint(format!("fp-{service}-{}-{variant}", environment.as_str()));
            if wave.iter().any(|s| s.event.fingerprint == fingerprint) {
                continue;
            }
            let status = if rng.below(7) == 0 {
                AlertStatus::Resolved
            } else {
                AlertStatus::Firing
            };
            let origin = rng
                .pick(&["alertmanager", "cloudwatch", "datadog"])
                .to_string();
            let sender = match rng.below(3) {
                0 => None,
                1 => Some("jwt:am-prod".to_owned()),
                _ => Some("webhook:datadog".to_owned()),
            };
            let level = *rng.pick(&[
                ImpactLevel::Unknown,
                ImpactLevel::Low,
                ImpactLevel::High,
                ImpactLevel::Critical,
            ]);
            let team = rng
                .pick(&["payments", "dba", "search", "platform"])
                .to_string();
            let answer = match rng.below(6) {
                0 => None,
                1 => Some(Err(Rejection {
                    reason: "not_json".into(),
                    detail: "the answer was not JSON".into(),
                })),
                k => Some(Ok(Classification {
                    classification: *rng.pick(&[Severity::Sev1, Severity::High, Severity::Low]),
                    confidence: [0.3, 0.75, 0.9, 0.97][usize::try_from(k - 2).unwrap()],
                    requires_ticket: rng.below(4) != 0,
                    requires_paging: rng.below(2) == 0,
                    requires_mim: rng.below(3) == 0,
                    recommended_team: team,
                    rationale: None,
                })),
            };
            let event = NormalizedEvent {
                source: Source::Generic,
                origin,
                status,
                environment,
                service: service.into(),
                component: None,
                alert_name: format!("Alert{variant}"),
                summary: format!("{service} is failing"),
                error_signature: format!("sig{variant}"),
                fingerprint,
                correlation_ids: BTreeMap::new(),
                impact: Impact {
                    level,
                    evidence: vec!["affected_customers=150".into()],
                },
                log_pointers: Vec::new(),
                labels: BTreeMap::new(),
                occurred_at: now,
                received_at: now,
                sender,
            };
            wave.push(Step {
                run_id: RunId(format!("run_{seed}_{n:05}")),
                correlation_id: CorrelationId(format!("corr-{seed}-{n}")),
                event,
                answer,
            });
            n += 1;
        }
        waves.push((now, wave));
    }
    waves
}

struct Fixture {
    catalog: Catalog,
    gates: Gates,
    settings: StormSettings,
}

impl Fixture {
    fn new() -> Fixture {
        let catalog = catalog();
        Fixture {
            gates: Gates::with_default_policy(&catalog).unwrap(),
            catalog,
            settings: settings(),
        }
    }
    fn policy(&self) -> Policy<'_> {
        Policy {
            gates: &self.gates,
            catalog: &self.catalog,
            settings: &self.settings,
        }
    }
    fn reads(&self, s: &Step) -> Reads {
        tg_engine::reads(
            &s.event,
            s.answer.as_ref().and_then(|a| a.as_ref().ok()),
            &self.settings,
            &self.catalog,
        )
    }
}

fn wave_runs<'a>(steps: &'a [Step], reads: &'a [Reads]) -> Vec<WaveRun<'a>> {
    steps
        .iter()
        .zip(reads)
        .map(|(s, r)| WaveRun {
            reads: r,
            run_id: &s.run_id,
            correlation_id: &s.correlation_id,
            event: &s.event,
            classification: s.answer.as_ref().map(|a| a.as_ref()),
        })
        .collect()
}

/// Each decision as JSON, in run order.
type Decisions = Vec<(String, String)>;

fn replay_in_memory(f: &Fixture, waves: &[(DateTime<Utc>, Vec<Step>)]) -> (Decisions, MemState) {
    let mut state = MemState::default();
    let mut decisions = Vec::new();
    for (now, steps) in waves {
        let reads: Vec<Reads> = steps.iter().map(|s| f.reads(s)).collect();
        let outs = tg_engine::decide_wave(&mut state, f.policy(), &wave_runs(steps, &reads), *now);
        for (s, out) in steps.iter().zip(outs) {
            decisions.push((
                s.run_id.to_string(),
                serde_json::to_string(&out.decision).unwrap(),
            ));
        }
    }
    state.take_touched();
    (decisions, state)
}

fn record(s: &Step, decision: tg_model::Decision, now: DateTime<Utc>) -> AuditRecord {
    let e = &s.event;
    AuditRecord {
        schema_version: AUDIT_SCHEMA_VERSION,
        seq: 0,
        run_id: s.run_id.clone(),
        correlation_id: s.correlation_id.clone(),
        event: EventMeta {
            source: e.source,
            origin: e.origin.clone(),
            status: e.status,
            environment: e.environment,
            service: e.service.clone(),
            alert_name: e.alert_name.clone(),
            fingerprint: e.fingerprint.clone(),
            occurred_at: e.occurred_at,
            submitted_by: None,
            correlation_ids: Default::default(),
        },
        classifier: ClassifierInfo {
            classifier: "conformance".into(),
            model: None,
        },
        model_output: None,
        model_output_sha256: None,
        classification: None,
        rejection: None,
        model_latency_ms: None,
        prompt_sha256: None,
        model_usage: None,
        policy_version: decision.policy_version.clone(),
        decision,
        actions: Vec::new(),
        timestamps: RunTimestamps {
            received_at: e.received_at,
            classified_at: now,
            decided_at: now,
            completed_at: now,
        },
        prev_hash: Sha256Hex::zero(),
        hash: Sha256Hex::zero(),
    }
}

async fn replay_in_store(
    f: &Fixture,
    store: &Store,
    waves: &[(DateTime<Utc>, Vec<Step>)],
) -> (Decisions, MemState) {
    let mut decisions = Vec::new();
    for (now, steps) in waves {
        let runs: Vec<NewRun> = steps
            .iter()
            .map(|s| NewRun {
                run_id: s.run_id.clone(),
                correlation_id: s.correlation_id.clone(),
                event: s.event.clone(),
                submitted_by: None,
            })
            .collect();
        store.accept(&runs, *now).await.unwrap();
        let reads: Vec<Reads> = steps.iter().map(|s| f.reads(s)).collect();
        let keyed: Vec<(&RunId, &Reads)> = steps
            .iter()
            .zip(&reads)
            .map(|(s, r)| (&s.run_id, r))
            .collect();
        let mut wave = store.begin_wave(&keyed, *now).await.unwrap();
        let outs =
            tg_engine::decide_wave(wave.state(), f.policy(), &wave_runs(steps, &reads), *now);
        for (s, out) in steps.iter().zip(outs) {
            wave.apply(&s.run_id, &serde_json::json!({"test": true}), &out, |o| {
                record(s, o.decision.clone(), *now)
            })
            .unwrap();
            decisions.push((
                s.run_id.to_string(),
                serde_json::to_string(&out.decision).unwrap(),
            ));
        }
        wave.commit().await.unwrap();
    }
    (decisions, store.storm_state().await.unwrap())
}

/// The same, key by key, naming the first table that differs.
fn assert_same_state(backend: &str, want: &MemState, got: &MemState) {
    assert_eq!(want.caps, got.caps, "{backend}: autonomy caps");
    assert_eq!(want.dedup, got.dedup, "{backend}: dedup windows");
    assert_eq!(want.buckets, got.buckets, "{backend}: paging buckets");
    assert_eq!(want.signals, got.signals, "{backend}: signals");
    assert_eq!(want.mims, got.mims, "{backend}: MIM windows");
    assert_eq!(want.sightings, got.sightings, "{backend}: sightings");
    assert_eq!(want.breakers, got.breakers, "{backend}: breakers");
    assert_eq!(want.groups, got.groups, "{backend}: groups");
}

fn assert_same_decisions(backend: &str, want: &Decisions, got: &Decisions) {
    assert_eq!(want.len(), got.len(), "{backend}: decisions made");
    for (w, g) in want.iter().zip(got) {
        assert_eq!(w, g, "{backend}: the decision of {} differs", w.0);
    }
}

/// The timelines really exercise the storm rules (a test that never opens
/// the breaker or spends a budget would compare empty tables).
fn assert_exercised(decisions: &Decisions, state: &MemState) {
    let text: String = decisions.iter().map(|(_, d)| d.as_str()).collect();
    for condition in ["storm.", "dedup", "budget"] {
        assert!(
            text.contains(condition),
            "no decision names {condition}: the timeline is too tame"
        );
    }
    for (what, empty) in [
        ("breakers", state.breakers.is_empty()),
        ("dedup windows", state.dedup.is_empty()),
        ("groups", state.groups.is_empty()),
        ("spent paging budgets", state.buckets.is_empty()),
        ("MIM windows", state.mims.is_empty()),
        ("signals", state.signals.is_empty()),
        ("sightings", state.sightings.is_empty()),
    ] {
        assert!(!empty, "the timeline left no {what}: it is too tame");
    }
    // The breaker both held pages and let them through.
    let mut breaker = BTreeMap::new();
    for (_, d) in decisions {
        let d: serde_json::Value = serde_json::from_str(d).unwrap();
        for a in d["actions"].as_array().into_iter().flatten() {
            for c in a["conditions"].as_array().into_iter().flatten() {
                if c["id"] == "storm.breaker" {
                    *breaker.entry(c["passed"].as_bool()).or_insert(0) += 1;
                }
            }
        }
    }
    assert!(
        breaker.contains_key(&Some(true)) && breaker.contains_key(&Some(false)),
        "the breaker never changed what it did: {breaker:?}"
    );
}

const SEEDS: [u64; 3] = [1, 7, 11];
const EVENTS: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memstate_sqlite_and_postgres_decide_alike_and_end_in_the_same_state() {
    let f = Fixture::new();
    let pg = postgres_available().await;
    for seed in SEEDS {
        let waves = timeline(seed, EVENTS);
        let (want, want_state) = replay_in_memory(&f, &waves);
        assert_exercised(&want, &want_state);

        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::open(&dir.path().join("conformance.sqlite"))
            .await
            .unwrap();
        let (got, got_state) = replay_in_store(&f, &sqlite, &waves).await;
        assert_same_decisions(&format!("sqlite seed {seed}"), &want, &got);
        assert_same_state(&format!("sqlite seed {seed}"), &want_state, &got_state);

        if pg {
            let url = fresh_postgres_database().await.unwrap();
            let postgres = Store::connect(&test_options(&url)).await.unwrap();
            let (got, got_state) = replay_in_store(&f, &postgres, &waves).await;
            assert_same_decisions(&format!("postgres seed {seed}"), &want, &got);
            assert_same_state(&format!("postgres seed {seed}"), &want_state, &got_state);
        }
    }
}
