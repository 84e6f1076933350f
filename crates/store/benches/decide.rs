//! Events per second through dedup + rate limit + breaker with the SQLite store
//! (the decide transaction: prefetch, `engine::step`, effects, decision, on a
//! real file with `synchronous=FULL`), next to a baseline measured in the same
//! run: committing the same event row alone (`accept` of one run). The ratio
//! is the cost of storm control over the bare durable insert.
//!
//! `cargo bench -p triage-gate-store --bench decide`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tg_engine::{StepInput, StormSettings};
use tg_model::{
    AlertStatus, AutonomyLevel, Classification, CorrelationId, Environment, Fingerprint, Impact,
    ImpactLevel, NormalizedEvent, RunId, Severity, Source,
};
use tg_policy::Gates;
use tg_policy::catalog::{Catalog, ServiceEntry, TeamEntry};
use triage_gate_store::{NewRun, Store};

const SERVICES: u64 = 40;
const ORIGINS: [&str; 3] = ["prometheus", "cloudwatch", "apm"];

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap()
}

/// Event `n` of a storm: 40 services, three origins, one event per 100 ms.
fn event(n: u64) -> (NormalizedEvent, DateTime<Utc>) {
    let service = format!("svc-{:02}", n % SERVICES);
    let now = t0() + Duration::milliseconds(i64::try_from(n).unwrap() * 100);
    let ev = NormalizedEvent {
        source: Source::Generic,
        origin: ORIGINS[usize::try_from(n / SERVICES).unwrap() % ORIGINS.len()].into(),
        status: AlertStatus::Firing,
        environment: Environment::Production,
        service: service.clone(),
        component: None,
        alert_name: "ServiceErrors".into(),
        summary: format!("{service} errors: upstream database unreachable"),
        error_signature: "errors".into(),
        fingerprint: Fingerprint(format!("fp-{service}")),
        correlation_ids: BTreeMap::new(),
        impact: Impact {
            level: ImpactLevel::High,
            evidence: vec!["error rate above SLO".into()],
        },
        log_pointers: Vec::new(),
        labels: BTreeMap::new(),
        occurred_at: now,
        received_at: now,
        sender: None,
    };
    (ev, now)
}

fn new_run(n: u64, prefix: &str) -> NewRun {
    let (ev, _) = event(n);
    NewRun {
        run_id: RunId(format!("run_{prefix}_{n}")),
        correlation_id: CorrelationId(format!("corr_{prefix}_{n}")),
        event: ev,
        submitted_by: None,
    }
}

struct Fixture {
    gates: Gates,
    catalog: Catalog,
    settings: StormSettings,
    classification: Classification,
}

fn fixture() -> Fixture {
    let mut catalog = Catalog::default();
    catalog
        .teams
        .insert("payments".into(), TeamEntry::default());
    for i in 0..SERVICES {
        catalog.services.insert(
            format!("svc-{i:02}"),
            ServiceEntry {
                team: "payments".into(),
                autonomy: AutonomyLevel::Paging,
                tier: None,
                paused: false,
                aliases: Vec::new(),
                thresholds: Default::default(),
            },
        );
    }
    let gates = Gates::with_default_policy(&catalog).unwrap();
    Fixture {
        gates,
        catalog,
        settings: StormSettings::default(),
        classification: Classification {
            classification: Severity::Sev1,
            confidence: 0.95,
            requires_ticket: true,
            requires_paging: true,
            requires_mim: true,
            recommended_team: "payments".into(),
            rationale: None,
        },
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(Store::open(&dir.path().join("bench.sqlite")))
        .unwrap();
    let f = fixture();
    let next = AtomicU64::new(0);
    let classification = serde_json::json!({"bench": true});

    let mut g = c.benchmark_group("storm");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30);

    // Baseline: the same event row committed alone (one write transaction).
    let base = AtomicU64::new(0);
    g.bench_function("baseline_insert_event_row", |b| {
        b.iter(|| {
            let n = base.fetch_add(1, Ordering::Relaxed);
            rt.block_on(store.accept(&[new_run(n, "base")], t0()))
                .unwrap();
        });
    });

    // Decide: the run is accepted in the (untimed) setup, as ingest does it.
    g.bench_function("decide_dedup_rate_breaker", |b| {
        b.iter_batched(
            || {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let run = new_run(n, "decide");
                rt.block_on(store.accept(std::slice::from_ref(&run), t0()))
                    .unwrap();
                (n, run)
            },
            |(n, run)| {
                let (ev, now) = event(n);
                let keys = tg_engine::Reads::of(
                    &ev.service,
                    tg_model::Environment::Production,
                    &ev.fingerprint,
                    Some("payments"),
                    None,
                    &tg_policy::Catalog::default(),
                );
                let out = rt
                    .block_on(
                        store.decide(&run.run_id, &keys, &classification, now, |st| {
                            tg_engine::step(
                                &f.gates,
                                &f.catalog,
                                &f.settings,
                                st,
                                StepInput {
                                    run_id: &run.run_id,
                                    correlation_id: &run.correlation_id,
                                    event: &ev,
                                    classification: Some(Ok(&f.classification)),
                                },
                                now,
                            )
                        }),
                    )
                    .unwrap();
                std::hint::black_box(out);
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
    // What the run went through, so the figure is read against a real storm.
    let breakers = rt.block_on(store.storm_breakers()).unwrap();
    let transitions = rt.block_on(store.storm_transitions(100)).unwrap();
    println!(
        "decided {} events over {} services; breaker open: {}; transitions: {}",
        next.load(Ordering::Relaxed),
        SERVICES,
        breakers.iter().any(|(_, b)| b.open),
        transitions.len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
