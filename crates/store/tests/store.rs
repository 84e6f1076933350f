//! The SQLite store over a real database file: atomic accept, queue order,
//! crash requeue, decide-with-effects and the sealed audit chain.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use tg_engine::{Effect, StepOutput};
use tg_model::audit::{AUDIT_SCHEMA_VERSION, EventMeta, RunTimestamps};
use tg_model::{
    AlertStatus, AuditRecord, AutonomyLevel, ClassifierInfo, CorrelationId, Decision, Environment,
    Fingerprint, Impact, ImpactLevel, NormalizedEvent, RunId, Sha256Hex, Source,
};
use tg_storm::DedupEntry;
use triage_gate_store::{NewRun, RunStatus, Store, StoreError};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap()
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

fn new_run(id: &str, fp: &str) -> NewRun {
    NewRun {
        run_id: RunId(id.into()),
        correlation_id: CorrelationId(format!("corr-{id}")),
        event: event(fp),
        submitted_by: None,
    }
}

fn keys(fp: &str) -> tg_engine::Reads {
    tg_engine::Reads::of(
        "checkout",
        tg_model::Environment::Production,
        &Fingerprint(fp.into()),
        Some("payments"),
        None,
        &tg_policy::Catalog::default(),
    )
}

fn decision() -> Decision {
    Decision {
        policy_version: "test".into(),
        autonomy: AutonomyLevel::Shadow,
        actions: Vec::new(),
        duplicate_of: None,
        resolves: None,
        group: None,
        errors: Vec::new(),
    }
}

fn audit_record(run_id: &str, fp: &str) -> AuditRecord {
    let e = event(fp);
    AuditRecord {
        schema_version: AUDIT_SCHEMA_VERSION,
        seq: 0,
        run_id: RunId(run_id.into()),
        correlation_id: CorrelationId(format!("corr-{run_id}")),
        event: EventMeta {
            source: e.source,
            origin: e.origin,
            status: e.status,
            environment: e.environment,
            service: e.service,
            alert_name: e.alert_name,
            fingerprint: e.fingerprint,
            occurred_at: e.occurred_at,
            submitted_by: None,
            correlation_ids: Default::default(),
        },
        classifier: ClassifierInfo {
            classifier: "rules".into(),
            model: None,
        },
        model_output: None,
        model_output_sha256: None,
        classification: None,
        rejection: None,
        model_latency_ms: None,
        prompt_sha256: None,
        model_usage: None,
        policy_version: "test".into(),
        decision: decision(),
        actions: Vec::new(),
        timestamps: RunTimestamps {
            received_at: t0(),
            classified_at: t0(),
            decided_at: t0(),
            completed_at: t0(),
        },
        prev_hash: Sha256Hex::zero(),
        hash: Sha256Hex::zero(),
    }
}

async fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    // SQLite, or PostgreSQL with TG_TEST_STORE=postgres: one suite, both backends.
    let store = triage_gate_store::testing::open_for_tests(dir.path())
        .await
        .unwrap();
    (dir, store)
}

/// Decides `id` with a step that opens a dedup window for `fp` (when none is open).
async fn decide(store: &Store, id: &str, fp: &str, now: DateTime<Utc>) -> Option<DedupEntry> {
    let run_id = RunId(id.into());
    let mut seen = None;
    store
        .decide(
            &run_id,
            &keys(fp),
            &json!({"skipped": "test"}),
            now,
            |state| {
                seen = state.dedup.clone();
                let effects = if state.dedup.is_none() {
                    vec![Effect::OpenDedup(DedupEntry::open(
                        Fingerprint(fp.into()),
                        run_id.clone(),
                        now,
                        Duration::minutes(10),
                    ))]
                } else {
                    Vec::new()
                };
                StepOutput {
                    decision: decision(),
                    planned: Vec::new(),
                    effects,
                }
            },
        )
        .await
        .unwrap();
    seen
}

#[tokio::test]
async fn a_batch_is_accepted_all_or_nothing() {
    let (_dir, store) = open().await;
    store
        .accept(&[new_run("a", "fp-1"), new_run("b", "fp-2")], t0())
        .await
        .unwrap();
    assert_eq!(store.backlog().await.unwrap(), 2);
    // The second run of this batch collides with "a": the first must not stay either.
    let err = store
        .accept(&[new_run("c", "fp-3"), new_run("a", "fp-1")], t0())
        .await;
    assert!(err.is_err());
    assert!(store.get_run(&RunId("c".into())).await.unwrap().is_none());
    assert_eq!(store.backlog().await.unwrap(), 2);
    let a = store.get_run(&RunId("a".into())).await.unwrap().unwrap();
    assert_eq!(a.status, RunStatus::Pending);
    assert_eq!(a.event, event("fp-1"));
}

#[tokio::test]
async fn claims_follow_acceptance_order_and_interrupted_claims_are_requeued() {
    let (_dir, store) = open().await;
    store.accept(&[new_run("r1", "fp-1")], t0()).await.unwrap();
    store
        .accept(&[new_run("r2", "fp-2"), new_run("r3", "fp-3")], t0())
        .await
        .unwrap();
    let lease = chrono::Duration::seconds(300);
    let claim = |owner: &'static str, at: DateTime<Utc>| {
        let store = store.clone();
        async move {
            store
                .claim_next(owner, at, lease)
                .await
                .unwrap()
                .map(|r| r.run_id.as_str().to_owned())
        }
    };
    let first = store.claim_next("a", t0(), lease).await.unwrap().unwrap();
    assert_eq!(first.run_id.as_str(), "r1");
    assert_eq!(first.status, RunStatus::Classifying);
    assert_eq!(claim("a", t0()).await.as_deref(), Some("r2"));
    // Worker `a` dies. While its leases hold, nobody else takes its runs.
    let later = t0() + chrono::Duration::seconds(299);
    assert_eq!(claim("b", later).await.as_deref(), Some("r3"));
    assert_eq!(claim("b", later).await, None);
    // Once they expire, the oldest comes first again.
    let expired = t0() + chrono::Duration::seconds(301);
    assert_eq!(claim("b", expired).await.as_deref(), Some("r1"));
    assert_eq!(claim("b", expired).await.as_deref(), Some("r2"));
    assert_eq!(claim("b", expired).await, None);
    match store.backend() {
        // The only process on a SQLite file requeues its own claims at start.
        triage_gate_store::Backend::Sqlite => {
            assert_eq!(store.requeue_interrupted().await.unwrap(), 3);
            assert_eq!(claim("c", t0()).await.as_deref(), Some("r1"));
        }
        // Replicas share PostgreSQL: a start-up never takes live claims.
        triage_gate_store::Backend::Postgres => {
            assert_eq!(store.requeue_interrupted().await.unwrap(), 0);
            assert_eq!(claim("c", expired).await, None);
        }
    }
}

#[tokio::test]
async fn decide_persists_effects_and_complete_seals_a_chain_once() {
    let (_dir, store) = open().await;
    store
        .accept(
            &[
                new_run("r1", "fp-1"),
                new_run("r2", "fp-1"),
                new_run("r3", "fp-2"),
            ],
            t0(),
        )
        .await
        .unwrap();
    let fp = Fingerprint("fp-1".into());
    assert!(store.dedup_entry(&fp).await.unwrap().is_none());

    for _ in 0..3 {
        store
            .claim_next("test", t0(), chrono::Duration::seconds(300))
            .await
            .unwrap()
            .unwrap();
    }
    // r1 opens the window; the effect is committed with the decision.
    assert_eq!(decide(&store, "r1", "fp-1", t0()).await, None);
    let entry = store.dedup_entry(&fp).await.unwrap().unwrap();
    assert_eq!(entry.first_run_id.as_str(), "r1");
    assert_eq!(entry.expires_at, t0() + Duration::minutes(10));
    // r2 (same fingerprint) is prefetched the window r1 opened.
    let seen = decide(&store, "r2", "fp-1", t0() + Duration::minutes(1)).await;
    assert_eq!(seen.unwrap().first_run_id.as_str(), "r1");
    decide(&store, "r3", "fp-2", t0()).await;
    let r1 = store.get_run(&RunId("r1".into())).await.unwrap().unwrap();
    assert_eq!(r1.status, RunStatus::Decided);
    assert_eq!(r1.decision, Some(decision()));

    let mut sealed = Vec::new();
    for id in ["r1", "r2", "r3"] {
        sealed.push(
            store
                .complete(audit_record(id, "fp-1"), t0())
                .await
                .unwrap(),
        );
    }
    assert_eq!(sealed.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(sealed[0].prev_hash, Sha256Hex::zero());
    assert_eq!(sealed[1].prev_hash, sealed[0].hash);
    assert_eq!(sealed[2].prev_hash, sealed[1].hash);
    for r in &sealed {
        assert_eq!(r.hash, r.compute_hash());
    }
    let stored: Vec<AuditRecord> = store
        .audit_after(0, 10)
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.run().cloned())
        .collect();
    assert_eq!(stored, sealed);
    let r2 = store.get_run(&RunId("r2".into())).await.unwrap().unwrap();
    assert_eq!(r2.status, RunStatus::Completed);
    assert_eq!(r2.audit_seq, Some(2));

    // Never audited twice.
    let again = store.complete(audit_record("r2", "fp-1"), t0()).await;
    assert!(
        matches!(again, Err(StoreError::WrongState { .. })),
        "{again:?}"
    );
    assert_eq!(store.audit_after(0, 10).await.unwrap().len(), 3);
}
