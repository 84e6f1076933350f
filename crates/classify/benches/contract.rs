//! Per-event overhead of the contract and the guard's cache, against a baseline
//! in the same run: `cargo bench -p triage-gate-classify --bench contract`.
//!
//! - `baseline/serde_json_parse`: `serde_json::from_str::<Value>` of the answer.
//! - `contract/validate`: strict parse + JSON Schema + semantic checks.
//! - `guard/cache_key`: canonical JSON + SHA-256 of the event and team context.
//! - `guard/cache_hit`: a whole `Guarded::classify` served from the cache
//!   (key, lookup, copy of the outcome), driven by a current-thread runtime.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark setup: a failure is a broken benchmark"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use tg_model::{
    AlertStatus, Environment, Fingerprint, Impact, ImpactLevel, LogPointer, NormalizedEvent, Source,
};
use triage_gate_classify::{
    Classifier, GuardConfig, Guarded, ManualGuardClock, RulesClassifier, TeamContext, guard,
    validate,
};

const ANSWER: &str = r#"{"classification":"high","confidence":0.91,"requires_ticket":true,"requires_paging":true,"requires_mim":false,"recommended_team":"payments","rationale":"checkout error rate above 5% for 10 minutes on the api component"}"#;

fn event() -> NormalizedEvent {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    NormalizedEvent {
        source: Source::Alertmanager,
        origin: "prometheus".to_owned(),
        status: AlertStatus::Firing,
        environment: Environment::Production,
        service: "checkout".to_owned(),
        component: Some("api".to_owned()),
        alert_name: "HighErrorRate".to_owned(),
        summary: "error rate above 5% on checkout api".to_owned(),
        error_signature: "error rate above <n>% on checkout api".to_owned(),
        fingerprint: Fingerprint::from("0123456789abcdef0123456789abcdef"),
        correlation_ids: BTreeMap::from([("alertmanager".to_owned(), "abc123".to_owned())]),
        impact: Impact {
            level: ImpactLevel::High,
            evidence: vec!["severity=critical".to_owned()],
        },
        log_pointers: vec![LogPointer {
            label: "generator".to_owned(),
            url: "https://prometheus.example/graph?g0.expr=rate".to_owned(),
        }],
        labels: BTreeMap::from([("team".to_owned(), "payments".to_owned())]),
        occurred_at: at,
        received_at: at,
        sender: None,
    }
}

fn teams() -> TeamContext {
    TeamContext {
        known_teams: BTreeSet::from(["payments".to_owned(), "sre".to_owned()]),
        service_team: Some("payments".to_owned()),
        default_team: "sre".to_owned(),
    }
}

fn bench(c: &mut Criterion) {
    let known = teams().known_teams;
    assert!(validate(ANSWER, &known).is_ok());
    c.bench_function("baseline/serde_json_parse", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(ANSWER)).unwrap())
    });
    c.bench_function("contract/validate", |b| {
        b.iter(|| validate(black_box(ANSWER), &known).unwrap())
    });

    let e = event();
    let t = teams();
    c.bench_function("guard/cache_key", |b| {
        b.iter(|| guard::cache_key(black_box(&e), &t))
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let g = Guarded::new(
        RulesClassifier::default_rules(),
        GuardConfig {
            cache_ttl_secs: 3600,
            ..GuardConfig::default()
        },
        Arc::new(ManualGuardClock::default()),
        None,
    )
    .unwrap();
    rt.block_on(g.classify(&e, &t));
    c.bench_function("guard/cache_hit", |b| {
        b.iter(|| rt.block_on(g.classify(black_box(&e), &t)))
    });
    assert_eq!(
        g.stats().provider_calls,
        1,
        "every iteration was a cache hit"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
