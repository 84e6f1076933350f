//! Pages as PagerDuty REST API incidents with a scoped OAuth token, against
//! the sandbox's REST and token emulators over real HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;

use tg_identity::{ClientAuth, ClientCredentials, TokenSource};
use tg_model::{
    ActionKind, ActionOp, ActionStatus, CorrelationId, Environment, Fingerprint, PlannedAction,
    RunId, Severity,
};
use tg_sandbox::{Sandbox, SandboxConfig, Target};
use triage_gate_actions::{
    Attempt, Executor, PAGERDUTY_ACCEPT_V2, PagerDutyConfig, PagerDutyRest, RetryPolicy, Secret,
    TargetError,
};

const CLIENT_ID: &str = "pd-app-7f3a";
const CLIENT_SECRET: &str = "pd-client-secret-0123456789abcdef";
const SERVICE: &str = "PWIXJZS";
const FROM: &str = "mi-bot@example.com";

fn once() -> RetryPolicy {
    RetryPolicy {
        attempts_max: 1,
        backoff_base_ms: 1,
        backoff_max_ms: 1,
        retry_after_max_secs: 1,
        jitter_seed: 1,
    }
}

async fn sandbox() -> Sandbox {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    sb.state()
        .pagerduty_oauth_client(CLIENT_ID, CLIENT_SECRET, "acme");
    sb
}

fn tokens(sb: &Sandbox, secret: &str, scopes: &[&str]) -> Arc<TokenSource> {
    Arc::new(
        TokenSource::new(ClientCredentials {
            token_url: sb.pagerduty_token_url(),
            client_id: CLIENT_ID.into(),
            auth: ClientAuth::SecretPost {
                secret: Secret::new(secret),
            },
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            extra: Vec::new(),
            timeout_ms: 2_000,
            refresh_margin_secs: 60,
            tls: Default::default(),
        })
        .unwrap(),
    )
}

const SCOPES: &[&str] = &["as_account-us.acme", "incidents.read", "incidents.write"];

fn executor_with(sb: &Sandbox, tokens: Arc<TokenSource>) -> Executor {
    let pd = PagerDutyConfig {
        tls: Default::default(),
        base_url: sb.pagerduty_url(),
        routing_keys: Default::default(),
        timeout_ms: 2_000,
        rest: Some(PagerDutyRest {
            base_url: sb.pagerduty_api_url(),
            from: FROM.into(),
            service_ids: [("payments".to_owned(), SERVICE.to_owned())].into(),
            tokens,
        }),
    };
    Executor::new(None, Some(pd), None, once()).unwrap()
}

fn executor(sb: &Sandbox) -> Executor {
    executor_with(sb, tokens(sb, CLIENT_SECRET, SCOPES))
}

fn page() -> PlannedAction {
    PlannedAction {
        kind: ActionKind::Page,
        op: ActionOp::Create,
        parent_key: None,
        run_id: RunId::from("run_0190f0c2-7a3b-7c1d-9e2f-000000000001"),
        correlation_id: CorrelationId::from("am:prod:9f3c1e2a"),
        idempotency_key: "tg:run_0190f0c2:page".into(),
        dedup_key: "tg:checkout:0123456789abcdef".into(),
        team: "payments".into(),
        service: "checkout".into(),
        environment: Environment::Production,
        severity: Severity::High,
        confidence: 0.91,
        fingerprint: Fingerprint::from("0123456789abcdef0123456789abcdef"),
        title: "Checkout latency SLO burn".into(),
        details: "p99 latency above 2s for 10 minutes".into(),
        links: vec![],
    }
}

fn resolve_of(p: &PlannedAction) -> PlannedAction {
    PlannedAction {
        op: ActionOp::Resolve,
        parent_key: Some(p.idempotency_key.clone()),
        idempotency_key: "tg:run_0190f0c3:page:resolve".into(),
        ..p.clone()
    }
}

fn delivered(a: &Attempt) {
    assert_eq!(a.result.status, ActionStatus::Delivered, "{:?}", a.result);
    assert!(a.error.is_none());
}

fn rest_requests(sb: &Sandbox) -> Vec<tg_sandbox::RecordedRequest> {
    sb.state()
        .requests(Target::Pagerduty)
        .into_iter()
        .filter(|r| r.path.starts_with("/pagerduty/rest/"))
        .collect()
}

#[tokio::test]
async fn a_page_opens_one_rest_incident_with_the_required_headers() {
    let sb = sandbox().await;
    let exec = executor(&sb);
    let p = page();
    let a = exec.attempt(&p).await;
    delivered(&a);
    let id = a.result.external_ids["pagerduty_incident_id"].clone();
    assert_eq!(a.result.external_ids["pagerduty_incident_number"], "1");
    assert_eq!(a.result.external_ids["pagerduty_status"], "triggered");
    // Repeated (a crash before the outcome was stored): found, not created again.
    let again = exec.attempt(&p).await;
    delivered(&again);
    assert_eq!(again.result.external_ids["pagerduty_incident_id"], id);

    let incidents = sb.state().pagerduty_rest_incidents();
    assert_eq!(incidents.len(), 1);
    let i = &incidents[0];
    assert_eq!(i.incident_key.as_deref(), Some(p.idempotency_key.as_str()));
    assert_eq!(i.service_id, SERVICE);
    assert_eq!(i.urgency, "high");
    assert_eq!(i.created_by, FROM);
    assert!(i.details.as_deref().unwrap().contains(p.run_id.as_str()));

    let reqs = rest_requests(&sb);
    let methods: Vec<&str> = reqs.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["GET", "POST", "GET"], "lookup, create, lookup");
    for r in &reqs {
        assert_eq!(r.headers["accept"], PAGERDUTY_ACCEPT_V2);
        assert_eq!(r.headers["from"], FROM);
        assert_eq!(r.headers["authorization"], "[redacted]");
    }
    assert!(
        reqs[0]
            .query
            .as_deref()
            .unwrap()
            .contains("incident_key=tg%3Arun_0190f0c2%3Apage")
    );
    assert_eq!(
        sb.state().pagerduty_token_requests(),
        1,
        "the token is cached"
    );
    // The token request is form-encoded and its secret never recorded.
    let token_req = sb
        .state()
        .requests(Target::Pagerduty)
        .into_iter()
        .find(|r| r.path == "/pagerduty/oauth/token")
        .unwrap();
    let form = token_req.body.unwrap().to_string();
    assert!(form.contains("grant_type=client_credentials"), "{form}");
    assert!(form.contains("as_account-us.acme"), "{form}");
    assert!(!form.contains(CLIENT_SECRET), "{form}");
}

#[tokio::test]
async fn a_400_for_an_existing_open_incident_is_looked_up() {
    let sb = sandbox().await;
    let exec = executor(&sb);
    let p = page();
    delivered(&exec.attempt(&p).await);
    // The list lags: the lookup misses, the create is refused as a duplicate.
    sb.state().pagerduty_stale_lists(1);
    let a = exec.attempt(&p).await;
    delivered(&a);
    assert_eq!(a.result.external_ids["pagerduty_incident_number"], "1");
    assert_eq!(sb.state().pagerduty_rest_incidents().len(), 1);
    let posts: Vec<u16> = rest_requests(&sb)
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.status)
        .collect();
    assert_eq!(posts, [201, 400]);
}

#[tokio::test]
async fn without_a_token_nothing_is_sent_and_the_attempt_is_retryable() {
    let sb = sandbox().await;
    let exec = executor(&sb);
    sb.state().pagerduty_fail_token_requests(1);
    let a = exec.attempt(&page()).await;
    assert!(
        matches!(a.error, Some(TargetError::Retryable { .. })),
        "{:?}",
        a.error
    );
    assert!(
        a.result
            .error
            .as_deref()
            .unwrap()
            .contains("no PagerDuty API token"),
        "{:?}",
        a.result.error
    );
    assert!(rest_requests(&sb).is_empty(), "fail closed");
    delivered(&exec.attempt(&page()).await);

    // A refused client is retryable too (someone may fix the app), still fail closed.
    let sb = sandbox().await;
    let exec = executor_with(&sb, tokens(&sb, "wrong-secret-0000000000000000", SCOPES));
    let a = exec.attempt(&page()).await;
    assert!(matches!(a.error, Some(TargetError::Retryable { .. })));
    let err = a.result.error.unwrap();
    assert!(err.contains("invalid_client"), "{err}");
    assert!(!err.contains("wrong-secret"), "{err}");
    assert!(rest_requests(&sb).is_empty());
}

#[tokio::test]
async fn a_revoked_token_is_refetched() {
    let sb = sandbox().await;
    let exec = executor(&sb);
    delivered(&exec.attempt(&page()).await);
    sb.state().pagerduty_revoke_tokens();
    let a = exec.attempt(&resolve_of(&page())).await;
    assert!(
        matches!(a.error, Some(TargetError::Retryable { .. })),
        "{:?}",
        a.error
    );
    assert!(a.result.error.unwrap().contains("http 401"));
    let a = exec.attempt(&resolve_of(&page())).await;
    delivered(&a);
    assert_eq!(sb.state().pagerduty_token_requests(), 2);
}

#[tokio::test]
async fn a_token_without_write_scope_is_refused_permanently() {
    let sb = sandbox().await;
    let exec = executor_with(
        &sb,
        tokens(
            &sb,
            CLIENT_SECRET,
            &["as_account-us.acme", "incidents.read"],
        ),
    );
    let a = exec.attempt(&page()).await;
    assert!(
        a.error.as_ref().is_some_and(TargetError::is_permanent),
        "{:?}",
        a.error
    );
    let err = a.result.error.unwrap();
    assert!(
        err.contains("http 403") && err.contains("Access Denied"),
        "{err}"
    );
    assert!(sb.state().pagerduty_rest_incidents().is_empty());
}

#[tokio::test]
async fn resolve_closes_the_rest_incident_once() {
    let sb = sandbox().await;
    let exec = executor(&sb);
    let p = page();
    delivered(&exec.attempt(&p).await);
    let r = resolve_of(&p);
    let a = exec.attempt(&r).await;
    delivered(&a);
    assert_eq!(a.result.external_ids["pagerduty_status"], "resolved");
    assert_eq!(sb.state().pagerduty_rest_incidents()[0].status, "resolved");
    let again = exec.attempt(&r).await;
    delivered(&again);
    assert!(again.result.external_ids["pagerduty_noop"].contains("already resolved"));
    let puts = rest_requests(&sb)
        .iter()
        .filter(|x| x.method == "PUT")
        .count();
    assert_eq!(puts, 1);
    // Nothing to resolve: a delivered no-op. No parent: permanent.
    let mut other = resolve_of(&p);
    other.parent_key = Some("tg:never-opened:page".into());
    let a = exec.attempt(&other).await;
    delivered(&a);
    assert!(a.result.external_ids["pagerduty_noop"].contains("no PagerDuty incident"));
    other.parent_key = None;
    assert!(exec.attempt(&other).await.error.unwrap().is_permanent());
}
