//! The outbox in the store, over a real SQLite file: what `outbox_counts`
//! reports as due matches what `claim_due` will claim (the cause of the flaky
//! five-minute-outage test), a probe goes alone, and an operator retry is
//! recorded with who did it and when.

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
    ActionKind, ActionResult, ActionStatus, AlertStatus, AutonomyLevel, Decision, Environment,
    Fingerprint, Impact, ImpactLevel, NormalizedEvent, Outcome, PlannedAction, RunId, Source,
};
use triage_gate_store::{AttemptOutcome, Claimed, DeliveryEnd, NewRun, OutboxTarget, Store};

const OWNER: &str = "outbox-test";
const LEASE_MS: u64 = 600_000;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap()
}

fn secs(n: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(n)
}

fn event(fp: &str) -> NormalizedEvent {
    NormalizedEvent {
        source: Source::Generic,
        origin: "cloudwatch".into(),
        status: AlertStatus::Firing,
        environment: Environment::Production,
        service: "checkout".into(),
        component: None,
        alert_name: "ErrorRate".into(),
        summary: "checkout errors".into(),
        error_signature: "errors".into(),
        fingerprint: Fingerprint(fp.into()),
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
    // From JSON, so fields added later with a default do not break this test.
    serde_json::from_value(json!({
        "kind": "ticket",
        "run_id": run,
        "correlation_id": format!("corr-{run}"),
        "idempotency_key": format!("tg:{run}:ticket"),
        "dedup_key": format!("dk-{run}"),
        "team": "payments",
        "service": "checkout",
        "environment": "production",
        "severity": "high",
        "confidence": 0.9,
        "fingerprint": format!("fp-{run}"),
        "title": "checkout errors",
        "details": "details",
        "links": [],
    }))
    .unwrap()
}

/// Accepts and decides `run` with one executed ticket (a pending ServiceNow action).
async fn decided_ticket(store: &Store, run: &str, now: DateTime<Utc>) {
    let run_id = RunId(run.into());
    store
        .accept(
            &[NewRun {
                run_id: run_id.clone(),
                correlation_id: tg_model::CorrelationId(format!("corr-{run}")),
                event: event(&format!("fp-{run}")),
                submitted_by: None,
            }],
            now,
        )
        .await
        .unwrap();
    let claimed = store
        .claim_next("test", t0(), chrono::Duration::seconds(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.run_id, run_id);
    let keys = tg_engine::Reads::of(
        "checkout",
        tg_model::Environment::Production,
        &Fingerprint(format!("fp-{run}")),
        Some("payments"),
        None,
        &tg_policy::Catalog::default(),
    );
    store
        .decide(&run_id, &keys, &json!({"test": true}), now, |_| {
            StepOutput {
                decision: Decision {
                    policy_version: "test".into(),
                    autonomy: AutonomyLevel::Paging,
                    actions: Vec::new(),
                    duplicate_of: None,
                    resolves: None,
                    group: None,
                    errors: Vec::new(),
                },
                planned: vec![Planned {
                    outcome: Outcome::Execute,
                    action: ticket(run),
                }],
                effects: Vec::new(),
            }
        })
        .await
        .unwrap();
}

async fn claim(store: &Store, free: usize, now: DateTime<Utc>) -> Vec<Claimed> {
    store
        .claim_due(OWNER, OutboxTarget::Servicenow, free, now, LEASE_MS)
        .await
        .unwrap()
}

fn keys_of(claims: &[Claimed]) -> Vec<String> {
    claims
        .iter()
        .map(|c| c.action.planned.idempotency_key.clone())
        .collect()
}

fn result(status: ActionStatus, attempts: u32) -> ActionResult {
    ActionResult {
        action: ActionKind::Ticket,
        status,
        target: Some("servicenow".into()),
        external_ids: BTreeMap::new(),
        attempts,
        error: None,
    }
}

async fn fail(store: &Store, c: &Claimed, now: DateTime<Utc>, retry_at: DateTime<Utc>) {
    let wait_ms = u64::try_from((retry_at - now).num_milliseconds()).unwrap();
    let p = store
        .record_attempt(
            c,
            OWNER,
            AttemptOutcome::Retryable,
            Some(503),
            Some("servicenow answered 503"),
            None,
            &DeliveryEnd::Retry {
                at: retry_at,
                wait_ms,
            },
            now,
        )
        .await
        .unwrap();
    assert!(p.recorded);
}

async fn deliver(store: &Store, c: &Claimed, now: DateTime<Utc>) {
    let p = store
        .record_attempt(
            c,
            OWNER,
            AttemptOutcome::Delivered,
            None,
            None,
            None,
            &DeliveryEnd::Delivered(result(ActionStatus::Delivered, c.attempt)),
            now,
        )
        .await
        .unwrap();
    assert!(p.recorded);
}

async fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    // SQLite, or PostgreSQL with TG_TEST_STORE=postgres: one suite, both backends.
    let store = triage_gate_store::testing::open_for_tests(dir.path())
        .await
        .unwrap();
    (dir, store)
}

#[tokio::test]
async fn next_due_is_the_head_not_an_earlier_action_waiting_behind_it() {
    let (_dir, store) = open().await;
    for run in ["a", "b", "c"] {
        decided_ticket(&store, run, t0()).await;
    }
    // The first claim takes two at once; both fail. The head is due in 30 s,
    // the second in 1 s: but the second waits behind the head.
    let first = claim(&store, 2, t0()).await;
    assert_eq!(keys_of(&first), ["tg:a:ticket", "tg:b:ticket"]);
    fail(&store, &first[0], t0(), secs(30)).await;
    fail(&store, &first[1], t0(), secs(1)).await;

    let c = store.outbox_counts(t0()).await.unwrap();
    assert_eq!((c.pending, c.in_flight, c.dead), (3, 0, 0));
    // Before the fix this was t0 + 1 s (b's due time): a driver of simulated
    // time moved there, nothing could be claimed, and its clock stalled.
    assert_eq!(c.next_due, Some(secs(30)), "the head decides: {c:?}");
    let sn = &c.by_target["servicenow"];
    assert_eq!((sn.pending, sn.in_flight, sn.dead), (3, 0, 0));
    assert_eq!(sn.next_due, Some(secs(30)));
    assert_eq!(sn.head_attempts, 1);
    assert!(sn.head_last_error.as_deref().unwrap().contains("503"));
    assert_eq!(sn.oldest_pending_at, Some(t0()));
    assert_eq!(c.by_target["pagerduty"].pending, 0);
    assert_eq!(c.by_target["pagerduty"].next_due, None);
    assert_eq!(c.by_target["bridge"].pending, 0);

    // b is due but may not overtake the head.
    assert!(claim(&store, 2, secs(2)).await.is_empty());

    // At the head's time, the head goes alone (a probe) ...
    let probe = claim(&store, 2, secs(30)).await;
    assert_eq!(keys_of(&probe), ["tg:a:ticket"]);
    // ... and while it is in flight nothing else of the target is claimed,
    // though b is due and a slot is free.
    assert!(claim(&store, 1, secs(31)).await.is_empty());
    let c = store.outbox_counts(secs(31)).await.unwrap();
    assert_eq!(c.in_flight, 1);
    assert_eq!(c.by_target["servicenow"].in_flight, 1);
    assert_eq!(
        c.by_target["servicenow"].next_due, None,
        "a probe is in flight"
    );
    assert_eq!(c.next_due, None);

    // The probe gets through: b (retried) goes alone, then c.
    deliver(&store, &probe[0], secs(31)).await;
    let c = store.outbox_counts(secs(31)).await.unwrap();
    assert_eq!(c.next_due, Some(secs(1)), "b is the head now, overdue");
    let next = claim(&store, 2, secs(31)).await;
    assert_eq!(keys_of(&next), ["tg:b:ticket"]);
    deliver(&store, &next[0], secs(31)).await;
    let last = claim(&store, 2, secs(31)).await;
    assert_eq!(keys_of(&last), ["tg:c:ticket"]);
    deliver(&store, &last[0], secs(31)).await;
    let c = store.outbox_counts(secs(31)).await.unwrap();
    assert_eq!((c.pending, c.in_flight, c.next_due), (0, 0, None));
}

#[tokio::test]
async fn a_retry_waits_for_first_attempts_in_flight_to_end() {
    let (_dir, store) = open().await;
    for run in ["a", "b"] {
        decided_ticket(&store, run, t0()).await;
    }
    let first = claim(&store, 2, t0()).await;
    assert_eq!(first.len(), 2);
    // b fails fast while a (a first attempt) is still in flight.
    fail(&store, &first[1], t0(), secs(1)).await;
    assert!(
        claim(&store, 1, secs(5)).await.is_empty(),
        "a retry goes alone: it waits for a"
    );
    deliver(&store, &first[0], secs(5)).await;
    assert_eq!(keys_of(&claim(&store, 2, secs(5)).await), ["tg:b:ticket"]);
}

#[tokio::test]
async fn an_operator_retry_is_recorded_with_who_and_when() {
    let (_dir, store) = open().await;
    decided_ticket(&store, "a", t0()).await;
    let c = claim(&store, 1, t0()).await;
    let p = store
        .record_attempt(
            &c[0],
            OWNER,
            AttemptOutcome::Permanent,
            Some(400),
            Some("servicenow answered 400"),
            None,
            &DeliveryEnd::Dead(result(ActionStatus::Failed, 1)),
            t0(),
        )
        .await
        .unwrap();
    assert!(p.recorded);
    let id = c[0].action.id;
    assert_eq!(store.outbox_counts(t0()).await.unwrap().dead, 1);

    let long = "x".repeat(triage_gate_store::RETRIED_BY_CHARS_MAX + 50);
    let again = store
        .retry_dead(id, Some("alice (client 0oa-ops)"), secs(60))
        .await
        .unwrap();
    assert!(!again.dead);
    assert_eq!(again.attempts, 0, "a fresh budget");
    // Not dead any more: a second retry is refused and not recorded.
    assert!(matches!(
        store.retry_dead(id, Some(&long), secs(61)).await,
        Err(triage_gate_store::RetryError::NotDead { .. })
    ));
    assert!(matches!(
        store.retry_dead(id + 100, None, secs(61)).await,
        Err(triage_gate_store::RetryError::NotFound(_))
    ));
    let retries = store.retries_of(id, 10).await.unwrap();
    assert_eq!(retries.len(), 1);
    assert_eq!(
        retries[0].retried_by.as_deref(),
        Some("alice (client 0oa-ops)")
    );
    assert_eq!(retries[0].retried_at, secs(60));
    assert_eq!(retries[0].after_attempt, 1);
    assert_eq!(retries[0].budget_spent, 1);

    // Dead again, retried with identity disabled (no caller), with a long label cut.
    let c = claim(&store, 1, secs(60)).await;
    assert_eq!(c[0].attempt_no, 2);
    store
        .record_attempt(
            &c[0],
            OWNER,
            AttemptOutcome::Permanent,
            Some(400),
            Some("again"),
            None,
            &DeliveryEnd::Dead(result(ActionStatus::Failed, 1)),
            secs(61),
        )
        .await
        .unwrap();
    store.retry_dead(id, None, secs(70)).await.unwrap();
    let c = claim(&store, 1, secs(70)).await;
    store
        .record_attempt(
            &c[0],
            OWNER,
            AttemptOutcome::Permanent,
            Some(400),
            Some("again"),
            None,
            &DeliveryEnd::Dead(result(ActionStatus::Failed, 1)),
            secs(71),
        )
        .await
        .unwrap();
    store.retry_dead(id, Some(&long), secs(80)).await.unwrap();
    let retries = store.retries_of(id, 10).await.unwrap();
    assert_eq!(retries.len(), 3);
    assert_eq!(retries[1].retried_by, None);
    assert_eq!(retries[1].after_attempt, 2);
    assert_eq!(
        retries[2].retried_by.as_deref().map(str::len),
        Some(triage_gate_store::RETRIED_BY_CHARS_MAX)
    );
    assert_eq!(retries[2].after_attempt, 3);
}

#[tokio::test]
async fn an_update_waits_for_the_create_it_acts_on() {
    let (_dir, store) = open().await;
    decided_ticket(&store, "a", t0()).await;
    // Run b's decision: a work note on a's incident (op update, parent a's ticket).
    let run_id = RunId("b".into());
    store
        .accept(
            &[NewRun {
                run_id: run_id.clone(),
                correlation_id: tg_model::CorrelationId("corr-b".into()),
                event: event("fp-a"),
                submitted_by: None,
            }],
            t0(),
        )
        .await
        .unwrap();
    store
        .claim_next("test", t0(), chrono::Duration::seconds(300))
        .await
        .unwrap()
        .unwrap();
    let mut update = ticket("b");
    update.op = tg_model::ActionOp::Update;
    update.parent_key = Some("tg:a:ticket".into());
    let keys = tg_engine::Reads::of(
        "checkout",
        tg_model::Environment::Production,
        &Fingerprint("fp-a".into()),
        Some("payments"),
        None,
        &tg_policy::Catalog::default(),
    );
    store
        .decide(&run_id, &keys, &json!({"test": true}), t0(), |_| {
            StepOutput {
                decision: Decision {
                    policy_version: "test".into(),
                    autonomy: AutonomyLevel::Paging,
                    actions: Vec::new(),
                    duplicate_of: None,
                    resolves: None,
                    group: None,
                    errors: Vec::new(),
                },
                planned: vec![Planned {
                    outcome: Outcome::Execute,
                    action: update,
                }],
                effects: Vec::new(),
            }
        })
        .await
        .unwrap();
    decided_ticket(&store, "c", t0()).await;

    // Four free slots: the create goes; its update (and c, behind it) wait.
    let first = claim(&store, 4, t0()).await;
    assert_eq!(keys_of(&first), ["tg:a:ticket"]);
    assert!(claim(&store, 4, t0()).await.is_empty());
    deliver(&store, &first[0], t0()).await;
    assert_eq!(
        keys_of(&claim(&store, 4, t0()).await),
        ["tg:b:ticket", "tg:c:ticket"]
    );
}
