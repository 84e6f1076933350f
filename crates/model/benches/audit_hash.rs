//! Audit hashing on the hot path: every run's record is sealed with
//! SHA-256 over its canonical JSON (`AuditRecord::compute_hash`) in the
//! transaction that completes the run. Measured stage by stage, next to a
//! baseline from the same run: serializing the record to JSON bytes, which
//! writing the audit line costs anyway.
//!
//! - `audit_record/baseline_serde_json_to_vec`: `serde_json::to_vec` of the record.
//! - `audit_record/to_value`: the record as a `serde_json::Value` (the hash's first step).
//! - `audit_record/canonical_json`: sorted keys, no white space, from the `Value`.
//! - `audit_record/sha256`: SHA-256 of those bytes, hex encoded.
//! - `audit_record/compute_hash`: the whole, as the store calls it.
//!
//! ```sh
//! cargo bench -p triage-gate-model --bench audit_hash
//! ```
//!
//! Criterion reports `thrpt` in elem/s = records/s.

// A benchmark harness: a failed setup should stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark setup: a failure is a broken benchmark"
)]

use std::collections::BTreeMap;
use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use triage_gate_model::hash::canonical_json;
use triage_gate_model::{
    ActionDecision, ActionKind, ActionOp, ActionResult, ActionStatus, AlertStatus, AuditRecord,
    AutonomyLevel, Classification, ClassifierInfo, Condition, Decision, Environment, EventMeta,
    Outcome, RunTimestamps, Severity, Sha256Hex, Source, sha256_hex,
};

/// Conditions per action decision, as the shipped policy evaluates them.
const CONDITIONS_PER_ACTION: usize = 4;

fn condition(action: &str, i: usize, passed: bool) -> Condition {
    Condition {
        id: format!("{action}.condition_{i}"),
        description: format!("{action}: the {i}th condition of the shipped policy holds"),
        passed,
        actual: format!("0.{}", 70 + i),
        threshold: ">= 0.80".to_owned(),
    }
}

fn action(kind: ActionKind, name: &str, outcome: Outcome) -> ActionDecision {
    ActionDecision {
        action: kind,
        op: ActionOp::Create,
        outcome,
        requested: true,
        gate_outcome: outcome,
        reason: format!("every {name} condition held"),
        conditions: (0..CONDITIONS_PER_ACTION)
            .map(|i| condition(name, i, outcome == Outcome::Execute))
            .collect(),
        capped_by: None,
    }
}

/// A run's record as the gate seals it: an event's metadata, the rules
/// classifier's answer, three action decisions with their conditions, and
/// the delivered ticket and page.
fn record() -> AuditRecord {
    let t = Utc.with_ymd_and_hms(2026, 11, 24, 3, 12, 0).unwrap();
    let output = r#"{"classification":"sev1","confidence":0.93,"requires_ticket":true,"requires_paging":true,"requires_mim":false,"recommended_team":"payments","rationale":"checkout error rate above 5% for 10 minutes"}"#;
    AuditRecord {
        schema_version: 1,
        seq: 0,
        run_id: "run_0192f0c1-7a3e-7c4d-9b1a-3f2e1d0c9b8a".into(),
        correlation_id: "corr_0192f0c1-7a3e-7c4d-9b1a-3f2e1d0c9b8b".into(),
        event: EventMeta {
            source: Source::Alertmanager,
            origin: "prometheus".into(),
            status: AlertStatus::Firing,
            environment: Environment::Production,
            service: "checkout".into(),
            alert_name: "HighErrorRate".into(),
            fingerprint: "5f0c2b7e9a1d4c3b8e6f0a2d4c6b8e0f".into(),
            occurred_at: t,
            submitted_by: Some("alertmanager@prod".into()),
            correlation_ids: Default::default(),
        },
        classifier: ClassifierInfo {
            classifier: "rules".into(),
            model: None,
        },
        model_output: Some(output.to_owned()),
        model_output_sha256: Some(sha256_hex(output.as_bytes())),
        classification: Some(Classification {
            classification: Severity::Sev1,
            confidence: 0.93,
            requires_ticket: true,
            requires_paging: true,
            requires_mim: false,
            recommended_team: "payments".into(),
            rationale: Some("checkout error rate above 5% for 10 minutes".into()),
        }),
        rejection: None,
        model_latency_ms: Some(3),
        prompt_sha256: None,
        model_usage: None,
        policy_version: "9c1d4e7f2a5b8c0d3e6f9a2b5c8d1e4f7a0b3c6d9e2f5a8b1c4d7e0f3a6b9c2d".into(),
        decision: Decision {
            policy_version: "9c1d4e7f2a5b8c0d3e6f9a2b5c8d1e4f7a0b3c6d9e2f5a8b1c4d7e0f3a6b9c2d"
                .into(),
            autonomy: AutonomyLevel::Paging,
            actions: vec![
                action(ActionKind::Ticket, "ticket", Outcome::Execute),
                action(ActionKind::Page, "page", Outcome::Execute),
                action(ActionKind::Mim, "mim", Outcome::Skip),
            ],
            duplicate_of: None,
            resolves: None,
            group: Some("production/checkout".into()),
            errors: Vec::new(),
        },
        actions: vec![
            ActionResult {
                action: ActionKind::Ticket,
                status: ActionStatus::Delivered,
                target: Some("servicenow".into()),
                external_ids: BTreeMap::from([(
                    "servicenow_number".to_owned(),
                    "INC0012345".to_owned(),
                )]),
                attempts: 1,
                error: None,
            },
            ActionResult {
                action: ActionKind::Page,
                status: ActionStatus::Delivered,
                target: Some("pagerduty".into()),
                external_ids: BTreeMap::from([(
                    "pagerduty_dedup_key".to_owned(),
                    "tg:run_0192f0c1:page".to_owned(),
                )]),
                attempts: 1,
                error: None,
            },
        ],
        timestamps: RunTimestamps {
            received_at: t,
            classified_at: t,
            decided_at: t,
            completed_at: t,
        },
        prev_hash: Sha256Hex::zero(),
        hash: Sha256Hex::zero(),
    }
}

fn bench(c: &mut Criterion) {
    let mut r = record();
    r.seal(1, Sha256Hex::zero());
    let value = serde_json::to_value(&r).unwrap();
    let canonical = canonical_json(&value);
    // The figure is per record of this size.
    println!(
        "audit record: {} bytes of JSON, {} canonical",
        serde_json::to_vec(&r).unwrap().len(),
        canonical.len()
    );
    assert_eq!(
        r.compute_hash(),
        r.hash,
        "a sealed record re-hashes the same"
    );

    let mut g = c.benchmark_group("audit_record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_serde_json_to_vec", |b| {
        b.iter(|| serde_json::to_vec(black_box(&r)).unwrap())
    });
    g.bench_function("to_value", |b| {
        b.iter(|| serde_json::to_value(black_box(&r)).unwrap())
    });
    g.bench_function("canonical_json", |b| {
        b.iter(|| canonical_json(black_box(&value)))
    });
    g.bench_function("sha256", |b| b.iter(|| sha256_hex(black_box(&canonical))));
    g.bench_function("compute_hash", |b| b.iter(|| black_box(&r).compute_hash()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
