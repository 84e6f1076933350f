//! How fast the console renders with a busy store: 10,000 runs received over
//! the last hour (a storm: most of them suppressed duplicates, a fifth with a
//! queued ticket, a tenth with drafts to review) in a real SQLite file, then
//! each page requested through the real router (`tg_server::app`: edge
//! layers, session guard, handlers, store). Every page must answer 200 within
//! [`PAGE_BUDGET_MS`] (the median of [`SAMPLES`]; all samples are printed).
//!
//! `cargo test -p triage-gate-server --test console_render -- --nocapture`
//! prints the figures (add `--release` for the optimised build's).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Duration as Span;
use common::{CONFIG, t0};
use serde_json::json;
use tg_engine::{Planned, StepOutput};
use tg_model::{
    ActionDecision, ActionKind, ActionOp, AlertStatus, AutonomyLevel, Condition, CorrelationId,
    Decision, Environment, Fingerprint, Impact, ImpactLevel, NormalizedEvent, Outcome,
    PlannedAction, RunId, Source,
};
use tg_store::{NewRun, Store};
use tower::ServiceExt as _;
use triage_gate_server as tg_server;

/// Runs in the store.
const RUNS: usize = 10_000;
/// The acceptance bar for one page.
const PAGE_BUDGET_MS: u128 = 200;
/// Requests timed per page (after one warm-up).
const SAMPLES: usize = 5;

const SERVICES: [&str; 5] = [
    "checkout",
    "payments-api",
    "orders-db",
    "legacy-billing",
    "search",
];

fn event(i: usize, at: chrono::DateTime<chrono::Utc>) -> NormalizedEvent {
    let service = SERVICES[i % SERVICES.len()];
    NormalizedEvent {
        source: Source::Alertmanager,
        origin: ["prometheus", "cloudwatch", "datadog"][i % 3].into(),
        status: AlertStatus::Firing,
        environment: Environment::Production,
        service: service.into(),
        component: None,
        alert_name: "HighErrorRate".into(),
        summary: format!("{service}: 5xx ratio above 5% for 5 minutes (#{i})"),
        error_signature: "http_5xx".into(),
        fingerprint: Fingerprint(format!("fp-{}", i % 50)),
        correlation_ids: BTreeMap::new(),
        impact: Impact {
            level: ImpactLevel::High,
            evidence: Vec::new(),
        },
        log_pointers: Vec::new(),
        labels: [("cluster".to_owned(), "eu-1".to_owned())].into(),
        occurred_at: at,
        received_at: at,
        sender: None,
    }
}

fn condition(id: &str, passed: bool) -> Condition {
    Condition {
        id: id.into(),
        description: format!("{id} holds"),
        passed,
        actual: if passed { "0.95" } else { "0.61" }.into(),
        threshold: ">= 0.80".into(),
    }
}

fn decision_for(kind: ActionKind, outcome: Outcome, reason: &str) -> ActionDecision {
    ActionDecision {
        action: kind,
        op: ActionOp::Create,
        outcome,
        requested: true,
        gate_outcome: outcome,
        reason: reason.into(),
        conditions: vec![
            condition(&format!("{}.requested", kind.as_str()), true),
            condition(
                &format!("{}.confidence", kind.as_str()),
                outcome != Outcome::Review,
            ),
            condition("storm.breaker", outcome != Outcome::Suppressed),
        ],
        capped_by: None,
    }
}

fn planned(run: &str, kind: ActionKind, service: &str) -> PlannedAction {
    serde_json::from_value(json!({
        "kind": kind.as_str(), "run_id": run, "correlation_id": format!("corr-{run}"),
        "idempotency_key": format!("tg:{run}:{}", kind.as_str()), "dedup_key": format!("dk-{run}"),
        "team": "payments", "service": service, "environment": "production",
        "severity": "high", "confidence": 0.9, "fingerprint": "fp",
        "title": format!("{service}: 5xx ratio above 5%"), "details": "details", "links": [],
    }))
    .unwrap()
}

/// Accepts and decides `RUNS` runs spread over the hour before `now`.
async fn populate(store: &Store, now: chrono::DateTime<chrono::Utc>) {
    let step_ms = 3_600_000 / i64::try_from(RUNS).unwrap();
    let start = now - Span::hours(1);
    for chunk in (0..RUNS).collect::<Vec<_>>().chunks(500) {
        let at = start + Span::milliseconds(step_ms * i64::try_from(chunk[0]).unwrap());
        let runs: Vec<NewRun> = chunk
            .iter()
            .map(|&i| NewRun {
                run_id: RunId(format!("run_{i:08}")),
                correlation_id: CorrelationId(format!("corr-{i}")),
                event: event(
                    i,
                    start + Span::milliseconds(step_ms * i64::try_from(i).unwrap()),
                ),
                submitted_by: Some("alertmanager-prod".into()),
            })
            .collect();
        store.accept(&runs, at).await.unwrap();
    }
    for i in 0..RUNS {
        let run = store
            .claim_next("render", now, Span::seconds(300))
            .await
            .unwrap()
            .expect("a pending run");
        let id = run.run_id.to_string();
        let service = run.event.service.clone();
        let at = run.received_at + Span::milliseconds(40);
        let (actions, plans) = match i % 10 {
            // A fifth: a ticket queued for ServiceNow.
            0 | 5 => (
                vec![decision_for(
                    ActionKind::Ticket,
                    Outcome::Execute,
                    "all conditions hold",
                )],
                vec![Planned {
                    outcome: Outcome::Execute,
                    action: planned(&id, ActionKind::Ticket, &service),
                }],
            ),
            // A tenth: ticket and page drafted for review.
            3 => (
                vec![
                    decision_for(
                        ActionKind::Ticket,
                        Outcome::Review,
                        "confidence below the ticket threshold",
                    ),
                    decision_for(
                        ActionKind::Page,
                        Outcome::Review,
                        "confidence below the paging threshold",
                    ),
                ],
                vec![
                    Planned {
                        outcome: Outcome::Review,
                        action: planned(&id, ActionKind::Ticket, &service),
                    },
                    Planned {
                        outcome: Outcome::Review,
                        action: planned(&id, ActionKind::Page, &service),
                    },
                ],
            ),
            // The rest: duplicates and held pages.
            _ => (
                vec![
                    decision_for(ActionKind::Ticket, Outcome::Suppressed, "duplicate"),
                    decision_for(ActionKind::Page, Outcome::Suppressed, "storm mode"),
                ],
                Vec::new(),
            ),
        };
        let keys = tg_engine::Reads::of(
            &service,
            tg_model::Environment::Production,
            &run.event.fingerprint,
            Some("payments"),
            None,
            &tg_policy::Catalog::default(),
        );
        store
            .decide(
                &run.run_id,
                &keys,
                &json!({"info": {"classifier": "rules"}, "latency_ms": 3}),
                at,
                |_| StepOutput {
                    decision: Decision {
                        policy_version: "perf".into(),
                        autonomy: AutonomyLevel::Assist,
                        actions,
                        duplicate_of: None,
                        resolves: None,
                        group: None,
                        errors: Vec::new(),
                    },
                    planned: plans,
                    effects: Vec::new(),
                },
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_within_budget_with_10k_runs() {
    let sandbox = tg_sandbox::Sandbox::start(tg_sandbox::SandboxConfig::default())
        .await
        .unwrap();
    let yaml = format!(
        "{}\nidentity:\n  inbound:\n    mode: none\n    insecure_allow_anonymous: true\n",
        CONFIG.replace("${SANDBOX}", &sandbox.base_url())
    );
    let config = tg_config::Config::from_yaml(&yaml, "perf").unwrap();
    let now = t0() + Span::hours(1);
    let clock = Arc::new(tg_server::ManualClock::new(now));
    let pipeline = tg_server::build_pipeline_with_clock(
        &config,
        None,
        &common::test_secrets(&sandbox),
        clock.clone(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // SQLite, or PostgreSQL with TG_TEST_STORE=postgres.
    let store = tg_store::testing::open_for_tests(dir.path()).await.unwrap();
    let filled = Instant::now();
    populate(&store, now).await;
    eprintln!("populated {RUNS} runs in {:?}", filled.elapsed());
    let counts = store.console_counts().await.unwrap();
    assert_eq!(counts.runs, i64::try_from(RUNS).unwrap());
    assert!(counts.review_open >= 2 * i64::try_from(RUNS / 10).unwrap());

    let state = tg_server::AppState {
        store,
        pipeline: Arc::new(pipeline),
        clock,
        work: Arc::new(tokio::sync::Notify::new()),
        audited: Arc::new(tokio::sync::Notify::new()),
        completed: Arc::new(tokio::sync::Notify::new()),
        outbox: Arc::new(tokio::sync::Notify::new()),
        audit_file: None,
        limits: tg_server::Limits {
            body_bytes_max: 65_536,
            backlog_max: 100_000,
            request_timeout_ms: 10_000,
            concurrency_max: 64,
        },
        instance: "render-test".into(),
    };
    let app = tg_server::app(state);
    let pages = [
        "/ui/now",
        "/ui/now/live",
        "/ui/review",
        "/ui/runs/run_00000003",
        "/ui/autonomy",
    ];
    let mut report = Vec::new();
    for path in pages {
        let get = || {
            Request::get(path)
                .header("accept", "text/html")
                .body(Body::empty())
                .unwrap()
        };
        let warm = app.clone().oneshot(get()).await.unwrap();
        assert_eq!(warm.status(), StatusCode::OK, "{path}");
        let mut ms = Vec::with_capacity(SAMPLES);
        let mut bytes = 0;
        for _ in 0..SAMPLES {
            let t = Instant::now();
            let resp = app.clone().oneshot(get()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            ms.push(t.elapsed());
            bytes = body.len();
            assert!(bytes > 1_000, "{path} rendered {bytes} bytes");
        }
        ms.sort();
        let median = ms[SAMPLES / 2];
        eprintln!(
            "{path:28} median {:>7.1} ms  max {:>7.1} ms  ({bytes} bytes)",
            median.as_secs_f64() * 1e3,
            ms[SAMPLES - 1].as_secs_f64() * 1e3
        );
        report.push((path, median));
    }
    for (path, median) in report {
        assert!(
            median < Duration::from_millis(u64::try_from(PAGE_BUDGET_MS).unwrap()),
            "{path} took {median:?} with {RUNS} runs (budget {PAGE_BUDGET_MS} ms)"
        );
    }
}
