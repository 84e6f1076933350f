//! Chain verification, as `triage-gate audit verify` runs it over
//! `audit.jsonl`: `verify_lines` of a sealed chain of N run records (parse
//! each line, recompute its hash over the canonical JSON, check `seq` and
//! `prev_hash`), next to a baseline from the same run: parsing the same
//! lines into `serde_json::Value` alone, which any reader of the file pays.
//! The ratio is the cost of hashing and linking over reading.
//!
//! ```sh
//! cargo bench -p triage-gate-audit --bench verify
//! ```
//!
//! Criterion reports `thrpt` in elem/s = records/s.

// A benchmark harness: a failed setup should stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark setup: a failure is a broken benchmark"
)]

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tg_model::{
    ActionDecision, ActionKind, ActionOp, ActionResult, ActionStatus, AlertStatus, AuditRecord,
    AutonomyLevel, ClassifierInfo, Condition, Decision, Environment, EventMeta, Outcome,
    RunTimestamps, Sha256Hex, Source,
};
use triage_gate_audit::verify_lines;

/// Records in the chain verified per iteration.
const CHAIN_RECORDS: u64 = 1_000;

/// Run record `n`: an event's metadata, a ticket and a page decided with
/// their conditions, the ticket delivered.
fn record(n: u64) -> AuditRecord {
    let t = Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap()
        + chrono::Duration::milliseconds(i64::try_from(n).unwrap() * 100);
    let decided = |kind: ActionKind, name: &str| ActionDecision {
        action: kind,
        op: ActionOp::Create,
        outcome: Outcome::Execute,
        requested: true,
        gate_outcome: Outcome::Execute,
        reason: format!("every {name} condition held"),
        conditions: (0..4)
            .map(|i| Condition {
                id: format!("{name}.condition_{i}"),
                description: format!("{name}: condition {i} of the shipped policy"),
                passed: true,
                actual: "0.93".into(),
                threshold: ">= 0.80".into(),
            })
            .collect(),
        capped_by: None,
    };
    AuditRecord {
        schema_version: 1,
        seq: 0,
        run_id: format!("run_{n:08}").into(),
        correlation_id: format!("corr_{n:08}").into(),
        event: EventMeta {
            source: Source::Alertmanager,
            origin: "prometheus".into(),
            status: AlertStatus::Firing,
            environment: Environment::Production,
            service: format!("svc-{:02}", n % 40),
            alert_name: "HighErrorRate".into(),
            fingerprint: format!("{n:032x}").into(),
            occurred_at: t,
            submitted_by: None,
            correlation_ids: Default::default(),
        },
        classifier: ClassifierInfo {
            classifier: "rules".into(),
            model: None,
        },
        model_output: Some(format!(
            "{{\"classification\":\"high\",\"confidence\":0.93,\"n\":{n}}}"
        )),
        model_output_sha256: None,
        classification: None,
        rejection: None,
        model_latency_ms: Some(2),
        prompt_sha256: None,
        model_usage: None,
        policy_version: "pv1".into(),
        decision: Decision {
            policy_version: "pv1".into(),
            autonomy: AutonomyLevel::Paging,
            actions: vec![
                decided(ActionKind::Ticket, "ticket"),
                decided(ActionKind::Page, "page"),
            ],
            duplicate_of: None,
            resolves: None,
            group: None,
            errors: Vec::new(),
        },
        actions: vec![ActionResult {
            action: ActionKind::Ticket,
            status: ActionStatus::Delivered,
            target: Some("servicenow".into()),
            external_ids: [("servicenow_number".to_owned(), format!("INC{n:07}"))].into(),
            attempts: 1,
            error: None,
        }],
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

/// A sealed chain of `len` records, one JSON line each, as `audit.jsonl` holds it.
fn chain_lines(len: u64) -> Vec<String> {
    let mut prev = Sha256Hex::zero();
    (1..=len)
        .map(|n| {
            let mut r = record(n);
            r.seal(n, prev.clone());
            prev = r.hash.clone();
            serde_json::to_string(&r).unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let lines = chain_lines(CHAIN_RECORDS);
    let report = verify_lines(&lines, None);
    assert!(report.ok, "the benchmark's chain verifies: {report}");
    assert_eq!(report.records, CHAIN_RECORDS);

    let mut g = c.benchmark_group(format!("chain_{CHAIN_RECORDS}"));
    g.throughput(Throughput::Elements(CHAIN_RECORDS));
    g.bench_function("baseline_parse_lines", |b| {
        b.iter(|| {
            // One value at a time, dropped after use, as the verifier does.
            for l in black_box(&lines) {
                black_box(serde_json::from_str::<serde_json::Value>(l).unwrap());
            }
        })
    });
    g.bench_function("verify_lines", |b| {
        b.iter(|| verify_lines(black_box(&lines), None))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
