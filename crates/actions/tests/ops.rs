//! Update and resolve ops and signed webhooks, against the sandbox's strict
//! emulators over real HTTP: ServiceNow work notes exactly once, resolves
//! idempotent, PagerDuty resolve through `attempt`, a signed webhook verified
//! by the sandbox's receiver.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

use tg_model::{
    ActionKind, ActionOp, ActionStatus, CorrelationId, Environment, Fingerprint, LogPointer,
    PlannedAction, RunId, Severity,
};
use tg_sandbox::{AlertStatus, FaultSpec, Sandbox, SandboxConfig, Target};
use triage_gate_actions::{
    Attempt, BridgeConfig, BridgeFormat, DEFAULT_CLOSE_CODE, Executor, PagerDutyConfig,
    RetryPolicy, Secret, ServiceNowAuth, ServiceNowConfig, SignedWebhook, TargetError,
};

const SN_TOKEN: &str = "sn-ops-token-4b1d9e";
const PD_KEY: &str = "0123456789abcdef0123456789abcdef";
const HOOK_SECRET: &str = "whsec-0123456789abcdef0123456789abcdef";
const SLACK_TOKEN: &str = "T0OPS/B0OPS/ops-webhook";

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig {
        servicenow_token: SN_TOKEN.into(),
        ..SandboxConfig::default()
    })
    .await
    .unwrap()
}

fn once() -> RetryPolicy {
    RetryPolicy {
        attempts_max: 1,
        backoff_base_ms: 1,
        backoff_max_ms: 1,
        retry_after_max_secs: 1,
        jitter_seed: 7,
    }
}

fn snow(sb: &Sandbox) -> ServiceNowConfig {
    ServiceNowConfig {
        tls: Default::default(),
        base_url: sb.servicenow_url(),
        auth: ServiceNowAuth::Token(Secret::new(SN_TOKEN)),
        assignment_groups: [(
            "payments".to_owned(),
            "a715cd759f2002002920bde8132e7018".to_owned(),
        )]
        .into(),
        caller_id: None,
        close_code: DEFAULT_CLOSE_CODE.into(),
        timeout_ms: 2_000,
    }
}

fn pd(sb: &Sandbox) -> PagerDutyConfig {
    PagerDutyConfig {
        tls: Default::default(),
        base_url: sb.pagerduty_url(),
        routing_keys: [("payments".to_owned(), Secret::new(PD_KEY))].into(),
        timeout_ms: 2_000,
        rest: None,
    }
}

fn executor(sb: &Sandbox, bridge: Option<BridgeConfig>) -> Executor {
    Executor::new(Some(snow(sb)), Some(pd(sb)), bridge, once()).unwrap()
}

fn create(kind: ActionKind) -> PlannedAction {
    PlannedAction {
        kind,
        op: ActionOp::Create,
        parent_key: None,
        run_id: RunId::from("run_0190f0c2-7a3b-7c1d-9e2f-000000000001"),
        correlation_id: CorrelationId::from("am:prod:9f3c1e2a"),
        idempotency_key: format!("tg:run_0190f0c2:{kind}"),
        dedup_key: "tg:checkout:0123456789abcdef".into(),
        team: "payments".into(),
        service: "checkout".into(),
        environment: Environment::Production,
        severity: Severity::High,
        confidence: 0.91,
        fingerprint: Fingerprint::from("0123456789abcdef0123456789abcdef"),
        title: "Checkout latency SLO burn".into(),
        details: "p99 latency above 2s for 10 minutes".into(),
        links: vec![LogPointer {
            label: "graph".into(),
            url: "https://prometheus.example.com/graph?g0.expr=x".into(),
        }],
    }
}

/// An op on the incident `parent` opened, planned by a later run.
fn follow_up(parent: &PlannedAction, op: ActionOp, n: u32) -> PlannedAction {
    PlannedAction {
        op,
        parent_key: Some(parent.idempotency_key.clone()),
        run_id: RunId::from(format!("run_0190f0c2-7a3b-7c1d-9e2f-00000000010{n}").as_str()),
        idempotency_key: format!("tg:run_0190f0c2-{n}:{}:{}", parent.kind, op.as_str()),
        details: format!("second origin apm confirms the fault ({n})"),
        ..parent.clone()
    }
}

fn delivered(a: &Attempt) {
    assert_eq!(a.result.status, ActionStatus::Delivered, "{:?}", a.result);
    assert!(a.error.is_none(), "{:?}", a.error);
}

async fn opened(sb: &Sandbox, exec: &Executor) -> PlannedAction {
    let ticket = create(ActionKind::Ticket);
    delivered(&exec.attempt(&ticket).await);
    assert_eq!(sb.state().incidents().len(), 1);
    ticket
}

// ---------------------------------------------------------------- work notes

#[tokio::test]
async fn a_note_is_added_once_even_when_the_attempt_is_repeated() {
    let sb = sandbox().await;
    let exec = executor(&sb, None);
    let ticket = opened(&sb, &exec).await;
    let note = follow_up(&ticket, ActionOp::Update, 1);

    let first = exec.attempt(&note).await;
    delivered(&first);
    assert_eq!(first.result.target.as_deref(), Some("servicenow"));
    assert_eq!(first.result.external_ids["servicenow_note"], "added");
    assert_eq!(first.result.external_ids["servicenow_number"], "INC0010001");
    // A crash after the PATCH, before the outcome was stored: the outbox tries again.
    let again = exec.attempt(&note).await;
    delivered(&again);
    assert_eq!(
        again.result.external_ids["servicenow_note"],
        "already_present"
    );

    let notes: Vec<_> = sb
        .state()
        .servicenow_updates()
        .into_iter()
        .filter(|u| u.adds_work_note())
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    let text = &notes[0].written["work_notes"];
    assert!(
        text.starts_with("second origin apm confirms the fault (1)"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!("\n[triage-gate {}]", note.idempotency_key)),
        "{text}"
    );
    // A second, different update is its own note.
    delivered(&exec.attempt(&follow_up(&ticket, ActionOp::Update, 2)).await);
    assert_eq!(
        sb.state().incidents()[0].work_notes.len(),
        3,
        "create + 2 notes"
    );
}

#[tokio::test]
async fn a_note_whose_patch_landed_but_was_never_recorded_is_not_added_again() {
    let sb = sandbox().await;
    let exec = executor(&sb, None);
    let ticket = opened(&sb, &exec).await;
    let note = follow_up(&ticket, ActionOp::Update, 1);
    // What the lost attempt wrote, straight to the emulator.
    let sys_id = sb.state().incidents()[0].sys_id.clone();
    let resp = reqwest::Client::new()
        .patch(format!(
            "{}/api/now/table/incident/{sys_id}",
            sb.servicenow_url()
        ))
        .bearer_auth(SN_TOKEN)
        .header("accept", "application/json")
        .json(&serde_json::json!({
            "work_notes": format!("{}\n[triage-gate {}]", note.details, note.idempotency_key)
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let a = exec.attempt(&note).await;
    delivered(&a);
    assert_eq!(a.result.external_ids["servicenow_note"], "already_present");
    assert_eq!(sb.state().incidents()[0].work_notes.len(), 2);
    // The check read the journal as display text.
    let reads: Vec<_> = sb
        .state()
        .requests(Target::Servicenow)
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&sys_id))
        .collect();
    assert_eq!(reads.len(), 1);
    let q = reads[0].query.as_deref().unwrap();
    assert!(
        q.contains("sysparm_display_value=true") && q.contains("sysparm_fields=work_notes"),
        "{q}"
    );
}

#[tokio::test]
async fn a_note_for_a_closed_incident_is_a_delivered_noop() {
    let sb = sandbox().await;
    let exec = executor(&sb, None);
    let ticket = create(ActionKind::Ticket); // never created
    let a = exec.attempt(&follow_up(&ticket, ActionOp::Update, 1)).await;
    delivered(&a);
    let why = &a.result.external_ids["servicenow_noop"];
    assert!(
        why.contains("no active incident") && why.contains(&ticket.idempotency_key),
        "{why}"
    );
    assert!(sb.state().servicenow_updates().is_empty());
}

#[tokio::test]
async fn an_update_without_a_parent_key_fails_permanently_before_any_request() {
    let sb = sandbox().await;
    let exec = executor(&sb, None);
    let mut note = follow_up(&create(ActionKind::Ticket), ActionOp::Update, 1);
    note.parent_key = None;
    let a = exec.attempt(&note).await;
    assert_eq!(a.result.status, ActionStatus::Failed);
    assert_eq!(a.result.attempts, 0);
    assert!(
        matches!(a.error, Some(TargetError::Permanent { .. })),
        "{:?}",
        a.error
    );
    assert!(
        a.result.error.as_deref().unwrap().contains("no parent_key"),
        "{:?}",
        a.result.error
    );
    note.parent_key = Some("bad^ORactive=false".into());
    assert!(exec.attempt(&note).await.error.unwrap().is_permanent());
    assert!(sb.state().requests(Target::Servicenow).is_empty());
}

#[tokio::test]
async fn faults_on_any_step_are_retryable_or_throttled_and_the_note_lands_once() {
    let sb = sandbox().await;
    let exec = executor(&sb, None);
    let ticket = opened(&sb, &exec).await;
    let note = follow_up(&ticket, ActionOp::Update, 1);
    let fault = |status: u16, retry_after_secs: Option<u64>| FaultSpec {
        target: "servicenow".into(),
        status: Some(status),
        count: 1,
        retry_after_secs,
        delay_ms: None,
    };
    // The lookup answers 503.
    sb.state().inject_fault(fault(503, None)).unwrap();
    let a = exec.attempt(&note).await;
    assert!(
        matches!(a.error, Some(TargetError::Retryable { .. })),
        "{:?}",
        a.error
    );
    assert_eq!(a.result.status, ActionStatus::Failed);
    // Rate limited, with Retry-After.
    sb.state().inject_fault(fault(429, Some(7))).unwrap();
    let a = exec.attempt(&note).await;
    match a.error {
        Some(TargetError::Throttled { retry_after, .. }) => {
            assert_eq!(retry_after, Some(std::time::Duration::from_secs(7)));
        }
        other => panic!("expected throttled, got {other:?}"),
    }
    // The emulator stalls past the client's timeout (before doing any work).
    let mut slow = snow(&sb);
    slow.timeout_ms = 300;
    let slow_exec = Executor::new(Some(slow), None, None, once()).unwrap();
    sb.state()
        .inject_fault(FaultSpec {
            target: "servicenow".into(),
            status: None,
            count: 1,
            retry_after_secs: None,
            delay_ms: Some(1_000),
        })
        .unwrap();
    let a = slow_exec.attempt(&note).await;
    assert!(
        matches!(a.error, Some(TargetError::Retryable { .. })),
        "a timeout is retryable: {:?}",
        a.error
    );
    // The clean attempt leaves exactly one copy of the note.
    sb.state().clear_faults();
    delivered(&exec.attempt(&note).await);
    let marker = format!("[triage-gate {}]", note.idempotency_key);
    let copies = sb.state().incidents()[0]
        .work_notes
        .iter()
        .filter(|n| n.contains(&marker))
        .count();
    assert_eq!(copies, 1);
}

// ---------------------------------------------------------------- resolve

#[tokio::test]
async fn resolve_sets_resolved_with_the_close_code_once() {
    let sb = sandbox().await;
    let exec = executor(&sb, None);
    let ticket = opened(&sb, &exec).await;
    let resolve = follow_up(&ticket, ActionOp::Resolve, 1);
    let a = exec.attempt(&resolve).await;
    delivered(&a);
    assert_eq!(a.result.external_ids["servicenow_state"], "6");
    let inc = &sb.state().incidents()[0];
    assert_eq!(inc.field("state"), Some("6"));
    assert_eq!(inc.field("close_code"), Some(DEFAULT_CLOSE_CODE));
    assert_eq!(inc.field("close_notes"), Some(resolve.details.as_str()));
    assert!(!inc.is_active());

    let again = exec.attempt(&resolve).await;
    delivered(&again);
    assert!(again.result.external_ids.contains_key("servicenow_noop"));
    let resolves = sb
        .state()
        .servicenow_updates()
        .iter()
        .filter(|u| u.resolves())
        .count();
    assert_eq!(resolves, 1);
}

#[tokio::test]
async fn a_refused_resolve_is_permanent_and_names_the_data_policy() {
    let sb = sandbox().await;
    let mut cfg = snow(&sb);
    cfg.close_code = String::new(); // the instance's data policy wants one
    let exec = Executor::new(Some(cfg), None, None, once()).unwrap();
    let ticket = opened(&sb, &exec).await;
    let a = exec
        .attempt(&follow_up(&ticket, ActionOp::Resolve, 1))
        .await;
    assert!(
        a.error.as_ref().is_some_and(TargetError::is_permanent),
        "{:?}",
        a.error
    );
    let err = a.result.error.unwrap();
    assert!(
        err.contains("http 403") && err.contains("close_code"),
        "{err}"
    );
    assert!(!err.contains(SN_TOKEN));
    assert!(sb.state().incidents()[0].is_active());
}

#[tokio::test]
async fn a_page_resolve_goes_through_attempt_and_is_idempotent() {
    let sb = sandbox().await;
    let exec = executor(&sb, None);
    let page = create(ActionKind::Page);
    delivered(&exec.attempt(&page).await);
    let resolve = follow_up(&page, ActionOp::Resolve, 1);
    let a = exec.attempt(&resolve).await;
    delivered(&a);
    assert_eq!(a.result.external_ids["pagerduty_event"], "resolve");
    assert_eq!(a.result.external_ids["pagerduty_dedup_key"], page.dedup_key);
    let alerts = sb.state().pagerduty_alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].status, AlertStatus::Resolved);
    // Resolving again (a repeat after a crash) is accepted and changes nothing.
    delivered(&exec.attempt(&resolve).await);
    assert_eq!(sb.state().pagerduty_alerts().len(), 1);
    // A page outage is a retryable class.
    sb.state()
        .inject_fault(FaultSpec {
            target: "pagerduty".into(),
            status: Some(502),
            count: 1,
            retry_after_secs: None,
            delay_ms: None,
        })
        .unwrap();
    let a = exec.attempt(&resolve).await;
    assert!(
        matches!(a.error, Some(TargetError::Retryable { .. })),
        "{:?}",
        a.error
    );
}

#[tokio::test]
async fn unsupported_ops_fail_permanently_without_requests() {
    let sb = sandbox().await;
    let exec = executor(&sb, None);
    for (kind, op) in [
        (ActionKind::Page, ActionOp::Update),
        (ActionKind::Mim, ActionOp::Resolve),
    ] {
        let a = exec.attempt(&follow_up(&create(kind), op, 1)).await;
        assert!(
            a.error.as_ref().is_some_and(TargetError::is_permanent),
            "{kind} {op:?}"
        );
        assert!(
            a.result
                .error
                .as_deref()
                .unwrap()
                .contains("is not supported"),
            "{:?}",
            a.result.error
        );
    }
    assert!(sb.state().requests(Target::Servicenow).is_empty());
    assert!(sb.state().requests(Target::Pagerduty).is_empty());
}

// ---------------------------------------------------------------- signed webhook

fn bridge(sb: &Sandbox, hook_secret: &str) -> BridgeConfig {
    BridgeConfig {
        tls: Default::default(),
        webhook_url: Some(Secret::new(sb.slack_webhook_url(SLACK_TOKEN))),
        format: BridgeFormat::Slack,
        conference_url: Some("https://meet.example.com/mi".into()),
        timeout_ms: 2_000,
        webhooks: vec![SignedWebhook {
            name: "mim-bot".into(),
            // The receiver verifies with HOOK_SECRET, whatever we sign with.
            url: sb.signed_webhook_url("mim-bot", HOOK_SECRET),
            secret: Secret::new(hook_secret),
        }],
    }
}

#[tokio::test]
async fn a_major_incident_is_announced_to_a_signed_webhook_the_receiver_verifies() {
    let sb = sandbox().await;
    let exec = executor(&sb, Some(bridge(&sb, HOOK_SECRET)));
    let mim = create(ActionKind::Mim);
    let a = exec.attempt(&mim).await;
    delivered(&a);
    assert_eq!(a.result.external_ids["bridge"], "posted");
    assert_eq!(a.result.external_ids["webhook:mim-bot"], "posted");

    let got = sb.state().signed_deliveries();
    assert_eq!(got.len(), 1, "refusals: {:?}", sb.state().signed_refusals());
    let d = &got[0];
    let delivery_id = format!("{}:mim-bot", mim.idempotency_key);
    assert_eq!(d.delivery_id.as_deref(), Some(delivery_id.as_str()));
    let b = &d.body;
    assert_eq!(b["type"], "major_incident.proposed");
    assert_eq!(b["delivery_id"], delivery_id);
    assert_eq!(b["run_id"], mim.run_id.as_str());
    assert_eq!(b["correlation_id"], "am:prod:9f3c1e2a");
    assert_eq!(b["incident"]["number"], "INC0010001");
    assert_eq!(b["incident"]["sys_id"], sb.state().incidents()[0].sys_id);
    assert!(
        b["incident"]["url"]
            .as_str()
            .unwrap()
            .contains("incident.do?sys_id=")
    );
    assert_eq!(b["evidence"]["service"], "checkout");
    assert_eq!(b["evidence"]["details"], mim.details);
    assert_eq!(b["evidence"]["links"][0]["url"], mim.links[0].url);
    assert_eq!(b["conference_url"], "https://meet.example.com/mi");
    assert_eq!(sb.state().bridge_posts().len(), 1, "the chat post too");
    assert!(!b.to_string().contains(HOOK_SECRET));
}

#[tokio::test]
async fn a_webhook_signed_with_the_wrong_secret_is_refused_and_the_error_hides_it() {
    let sb = sandbox().await;
    let wrong = "whsec-wrong-wrong-wrong-wrong-wrong-wrong";
    let exec = executor(&sb, Some(bridge(&sb, wrong)));
    let a = exec.attempt(&create(ActionKind::Mim)).await;
    assert!(
        a.error.as_ref().is_some_and(TargetError::is_permanent),
        "{:?}",
        a.error
    );
    let err = a.result.error.unwrap();
    assert!(
        err.contains("http 401") && err.contains("mim-bot") && err.contains("signature"),
        "{err}"
    );
    assert!(!err.contains(wrong) && !err.contains(HOOK_SECRET), "{err}");
    assert!(sb.state().signed_deliveries().is_empty());
    assert_eq!(
        a.result.external_ids["bridge"], "posted",
        "the chat post went out before the webhook failed"
    );
}

#[tokio::test]
async fn bridge_config_is_checked() {
    let sb = sandbox().await;
    let mut b = bridge(&sb, HOOK_SECRET);
    b.webhooks[0].secret = Secret::new("too-short");
    let err = Executor::new(None, None, Some(b), once())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mim-bot") && err.contains("shorter than 32"),
        "{err}"
    );
    assert!(!err.contains("too-short"));
    let mut b = bridge(&sb, HOOK_SECRET);
    b.webhooks.push(b.webhooks[0].clone());
    let err = Executor::new(None, None, Some(b), once())
        .unwrap_err()
        .to_string();
    assert!(err.contains("used twice"), "{err}");
    let mut b = bridge(&sb, HOOK_SECRET);
    b.webhooks = (0..9)
        .map(|i| SignedWebhook {
            name: format!("hook-{i}"),
            ..b.webhooks[0].clone()
        })
        .collect();
    let err = Executor::new(None, None, Some(b), once())
        .unwrap_err()
        .to_string();
    assert!(err.contains("9 signed webhooks; at most 8"), "{err}");
    let mut b = bridge(&sb, HOOK_SECRET);
    b.webhook_url = None;
    b.webhooks.clear();
    let err = Executor::new(None, None, Some(b), once())
        .unwrap_err()
        .to_string();
    assert!(err.contains("neither"), "{err}");
    // Signed webhooks alone are a valid bridge.
    let mut b = bridge(&sb, HOOK_SECRET);
    b.webhook_url = None;
    let exec = executor(&sb, Some(b));
    delivered(&exec.attempt(&create(ActionKind::Mim)).await);
    assert!(sb.state().bridge_posts().is_empty());
    assert_eq!(sb.state().signed_deliveries().len(), 1);
}
