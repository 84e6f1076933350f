//! The console's read queries over a real SQLite file: events, suppressed runs
//! and executed actions per minute from real decisions (serialized by the
//! model's own types, so the suppression pattern is checked against the real
//! JSON), an event whose text imitates the pattern is not counted, and the
//! feed is newest first.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use tg_engine::{Planned, StepOutput};
use tg_model::{
    ActionDecision, ActionKind, ActionOp, AlertStatus, AutonomyLevel, Decision, Environment,
    Fingerprint, Impact, ImpactLevel, NormalizedEvent, Outcome, PlannedAction, RunId, Source,
};
use triage_gate_store::{NewRun, RunStatus, Store};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap()
}

fn event(summary: &str) -> NormalizedEvent {
    NormalizedEvent {
        source: Source::Generic,
        origin: "cloudwatch".into(),
        status: AlertStatus::Firing,
        environment: Environment::Production,
        service: "checkout".into(),
        component: None,
        alert_name: "ErrorRate".into(),
        summary: summary.into(),
        error_signature: "errors".into(),
        fingerprint: Fingerprint("fp".into()),
        correlation_ids: BTreeMap::new(),
        impact: Impact {
            level: ImpactLevel::High,
            evidence: Vec::new(),
        },
        log_pointers: Vec::new(),
        labels: BTreeMap::new(),
        occurred_at: t0(),
        received_at: t0(),
        sender: None,
    }
}

fn ticket(run: &str) -> PlannedAction {
    serde_json::from_value(json!({
        "kind": "ticket", "run_id": run, "correlation_id": format!("corr-{run}"),
        "idempotency_key": format!("tg:{run}:ticket"), "dedup_key": format!("dk-{run}"),
        "team": "payments", "service": "checkout", "environment": "production",
        "severity": "high", "confidence": 0.9, "fingerprint": "fp",
        "title": "checkout errors", "details": "details", "links": [],
    }))
    .unwrap()
}

fn action(kind: ActionKind, outcome: Outcome) -> ActionDecision {
    ActionDecision {
        action: kind,
        op: ActionOp::Create,
        outcome,
        requested: true,
        gate_outcome: outcome,
        reason: "test".into(),
        conditions: Vec::new(),
        capped_by: None,
    }
}

/// What a run's decision did.
#[derive(Clone, Copy)]
enum Did {
    Ticket,
    Suppressed,
    Nothing,
}

async fn run(store: &Store, id: &str, summary: &str, at: DateTime<Utc>, did: Did) {
    let run_id = RunId(id.into());
    store
        .accept(
            &[NewRun {
                run_id: run_id.clone(),
                correlation_id: tg_model::CorrelationId(format!("corr-{id}")),
                event: event(summary),
                submitted_by: None,
            }],
            at,
        )
        .await
        .unwrap();
    store
        .claim_next("test", at, Duration::seconds(300))
        .await
        .unwrap()
        .unwrap();
    let keys = tg_engine::Reads::of(
        "checkout",
        tg_model::Environment::Production,
        &Fingerprint(format!("fp-{id}")),
        Some("payments"),
        None,
        &tg_policy::Catalog::default(),
    );
    let (actions, planned) = match did {
        Did::Ticket => (
            vec![action(ActionKind::Ticket, Outcome::Execute)],
            vec![Planned {
                outcome: Outcome::Execute,
                action: ticket(id),
            }],
        ),
        Did::Suppressed => (
            vec![
                action(ActionKind::Ticket, Outcome::Skip),
                action(ActionKind::Page, Outcome::Suppressed),
            ],
            Vec::new(),
        ),
        Did::Nothing => (vec![action(ActionKind::Ticket, Outcome::Skip)], Vec::new()),
    };
    store
        .decide(&run_id, &keys, &json!({"test": true}), at, |_| StepOutput {
            decision: Decision {
                policy_version: "test".into(),
                autonomy: AutonomyLevel::Paging,
                actions,
                duplicate_of: None,
                resolves: None,
                group: None,
                errors: Vec::new(),
            },
            planned,
            effects: Vec::new(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn per_minute_counts_and_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let store = triage_gate_store::testing::open_for_tests(dir.path())
        .await
        .unwrap();
    let m = |min: i64, sec: i64| t0() + Duration::minutes(min) + Duration::seconds(sec);
    // Minute 0: two events, one ticket. Minute 2: three events, two suppressed
    // (one by its decision; the other's text only imitates the pattern).
    run(&store, "r1", "a", m(0, 1), Did::Ticket).await;
    run(&store, "r2", "b", m(0, 59), Did::Nothing).await;
    run(&store, "r3", "c", m(2, 0), Did::Suppressed).await;
    run(
        &store,
        "r4",
        r#""outcome":"suppressed""#,
        m(2, 10),
        Did::Nothing,
    )
    .await;
    run(&store, "r5", "e", m(2, 30), Did::Suppressed).await;
    // Outside the window asked for.
    run(
        &store,
        "r0",
        "old",
        t0() - Duration::minutes(61),
        Did::Ticket,
    )
    .await;

    let got = store
        .console_minutes(t0() - Duration::minutes(60), m(3, 0))
        .await
        .unwrap();
    let as_tuples: Vec<(i64, i64, i64, i64)> = got
        .iter()
        .map(|c| {
            (
                (c.minute_ms - t0().timestamp_millis()) / 60_000,
                c.events,
                c.suppressed,
                c.actions,
            )
        })
        .collect();
    assert_eq!(as_tuples, vec![(0, 2, 0, 1), (2, 3, 2, 0)]);

    let feed = store.console_feed(3).await.unwrap();
    let ids: Vec<&str> = feed.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["r0", "r5", "r4"], "newest accepted first");
    assert_eq!(feed[1].status, RunStatus::Decided);
    assert!(feed[1].decision.is_some());

    let counts = store.console_counts().await.unwrap();
    assert_eq!(counts.runs, 6);
    assert_eq!(counts.review_open, 0);
}
