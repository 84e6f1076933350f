//! ServiceNow with OAuth 2.0 client credentials, over real HTTP against the
//! sandbox's `/oauth_token.do` and Table API: tokens are fetched once and
//! cached, a 401 drops the token and refetches once, and without a token no
//! Table API request is made (fail closed, retryable).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;

use tg_identity::{Algorithm, ClientAuth, ClientCredentials, TokenSource};
use tg_model::{
    ActionKind, ActionOp, ActionStatus, CorrelationId, Environment, Fingerprint, PlannedAction,
    RunId, Severity,
};
use tg_sandbox::{OutageSpec, Sandbox, SandboxConfig, Target};
use triage_gate_actions::{
    Attempt, DEFAULT_CLOSE_CODE, Executor, RetryPolicy, Secret, ServiceNowAuth, ServiceNowConfig,
};

const CLIENT_ID: &str = "tg-snow-client";
const CLIENT_SECRET: &str = "sn-oauth-client-secret-5c2e9f71";
const KEY_CLIENT_ID: &str = "tg-snow-key-client";
const PRIVATE_KEY: &str = include_str!("../../identity/tests/keys/rsa1.pem");
const PUBLIC_KEY: &str = include_str!("../../identity/tests/keys/rsa1.pub.pem");

async fn sandbox() -> Sandbox {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    sb.state()
        .servicenow_oauth_client(CLIENT_ID, CLIENT_SECRET)
        .unwrap();
    sb.state()
        .servicenow_oauth_client_key(KEY_CLIENT_ID, PUBLIC_KEY)
        .unwrap();
    sb.state().servicenow_oauth_enable_client_credentials(true);
    sb
}

fn source(sb: &Sandbox, auth: ClientAuth, client_id: &str) -> Arc<TokenSource> {
    Arc::new(
        TokenSource::new(ClientCredentials {
            token_url: sb.servicenow_token_url(),
            client_id: client_id.into(),
            auth,
            scopes: vec!["useraccount".into()],
            extra: Vec::new(),
            timeout_ms: 2_000,
            refresh_margin_secs: 60,
            tls: Default::default(),
        })
        .unwrap(),
    )
}

fn secret_source(sb: &Sandbox) -> Arc<TokenSource> {
    source(
        sb,
        ClientAuth::SecretPost {
            secret: Secret::new(CLIENT_SECRET),
        },
        CLIENT_ID,
    )
}

fn executor(sb: &Sandbox, tokens: Arc<TokenSource>) -> Executor {
    let snow = ServiceNowConfig {
        tls: Default::default(),
        base_url: sb.servicenow_url(),
        auth: ServiceNowAuth::OAuth(tokens),
        assignment_groups: [(
            "payments".to_owned(),
            "a715cd759f2002002920bde8132e7018".to_owned(),
        )]
        .into(),
        caller_id: None,
        close_code: DEFAULT_CLOSE_CODE.into(),
        timeout_ms: 2_000,
    };
    let once = RetryPolicy {
        attempts_max: 1,
        backoff_base_ms: 1,
        backoff_max_ms: 1,
        retry_after_max_secs: 1,
        jitter_seed: 7,
    };
    Executor::new(Some(snow), None, None, once).unwrap()
}

fn ticket(n: u32) -> PlannedAction {
    PlannedAction {
        kind: ActionKind::Ticket,
        op: ActionOp::Create,
        parent_key: None,
        run_id: RunId::from(format!("run_0190f0c2-7a3b-7c1d-9e2f-00000000000{n}").as_str()),
        correlation_id: CorrelationId::from("am:prod:9f3c1e2a"),
        idempotency_key: format!("tg:run_0190f0c2-{n}:ticket"),
        dedup_key: "tg:checkout:0123456789abcdef".into(),
        team: "payments".into(),
        service: "checkout".into(),
        environment: Environment::Production,
        severity: Severity::High,
        confidence: 0.91,
        fingerprint: Fingerprint::from("0123456789abcdef0123456789abcdef"),
        title: "Checkout latency SLO burn".into(),
        details: "p99 latency above 2s for 10 minutes".into(),
        links: Vec::new(),
    }
}

fn delivered(a: &Attempt) {
    assert_eq!(a.result.status, ActionStatus::Delivered, "{:?}", a.result);
    assert!(a.error.is_none(), "{:?}", a.error);
}

fn table_requests(sb: &Sandbox) -> usize {
    sb.state().requests(Target::Servicenow).len()
}

#[tokio::test]
async fn a_token_is_fetched_once_and_reused_across_actions() {
    let sb = sandbox().await;
    let exec = executor(&sb, secret_source(&sb));
    delivered(&exec.attempt(&ticket(1)).await);
    delivered(&exec.attempt(&ticket(2)).await);
    assert_eq!(sb.state().incidents().len(), 2);
    assert_eq!(
        sb.state().servicenow_tokens_issued(),
        1,
        "cached, not refetched"
    );
    // The token request is form encoded and its secret never recorded.
    let reqs = sb.state().requests(Target::ServicenowOauth);
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let recorded = serde_json::to_string(&reqs).unwrap();
    assert!(!recorded.contains(CLIENT_SECRET), "{recorded}");
    // The Table API saw the issued token, not a static one (the header is redacted
    // in recordings; the emulator accepted it, which it does only for issued tokens).
    assert!(
        sb.state()
            .requests(Target::Servicenow)
            .iter()
            .all(|r| r.status < 400)
    );
}

#[tokio::test]
async fn a_refused_token_is_dropped_and_refetched_once_within_the_attempt() {
    let sb = sandbox().await;
    let exec = executor(&sb, secret_source(&sb));
    delivered(&exec.attempt(&ticket(1)).await);
    // The instance forgets every token (revoked, or expired early).
    sb.state().servicenow_revoke_tokens();
    let a = exec.attempt(&ticket(2)).await;
    delivered(&a);
    assert_eq!(sb.state().servicenow_tokens_issued(), 2);
    let statuses: Vec<u16> = sb
        .state()
        .requests(Target::Servicenow)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        sb.state().incidents().len(),
        2,
        "no duplicate from the repeat"
    );
}

#[tokio::test]
async fn a_short_lived_token_is_refreshed_before_it_expires() {
    let sb = sandbox().await;
    // Tokens live 2 s; the margin (at most half the life) makes the source refetch after 1 s.
    sb.state().servicenow_oauth_token_lifetime(Some(2));
    let exec = executor(&sb, secret_source(&sb));
    delivered(&exec.attempt(&ticket(1)).await);
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    delivered(&exec.attempt(&ticket(2)).await);
    assert_eq!(sb.state().servicenow_tokens_issued(), 2);
    assert!(
        sb.state()
            .requests(Target::Servicenow)
            .iter()
            .all(|r| r.status != 401),
        "the expired token was never used"
    );
}

#[tokio::test]
async fn without_a_token_no_table_api_request_is_made() {
    let sb = sandbox().await;
    // The grant is off on the instance (its default).
    sb.state().servicenow_oauth_enable_client_credentials(false);
    let exec = executor(&sb, secret_source(&sb));
    let a = exec.attempt(&ticket(1)).await;
    assert_eq!(a.result.status, ActionStatus::Failed);
    let err = a.error.unwrap();
    assert!(
        !err.is_permanent(),
        "fail closed, and try again later: {err}"
    );
    assert!(err.to_string().contains("unauthorized_client"), "{err}");
    assert_eq!(table_requests(&sb), 0, "nothing reached the Table API");

    // The token endpoint is down (an outage on it alone): still nothing sent.
    sb.state().servicenow_oauth_enable_client_credentials(true);
    sb.state()
        .inject_outage(OutageSpec {
            target: "servicenow_oauth".into(),
            down_for_ms: 60_000,
            status: None,
            reset: false,
            retry_after_secs: None,
        })
        .unwrap();
    let a = exec.attempt(&ticket(1)).await;
    let err = a.error.unwrap();
    assert!(!err.is_permanent(), "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(table_requests(&sb), 0);
    assert!(!err.to_string().contains(CLIENT_SECRET));

    // Back up: the same action is delivered, once.
    sb.state().clear_faults();
    delivered(&exec.attempt(&ticket(1)).await);
    assert_eq!(sb.state().incidents().len(), 1);
}

#[tokio::test]
async fn private_key_jwt_client_authentication_is_verified() {
    let sb = sandbox().await;
    let pem = Secret::new(PRIVATE_KEY);
    let auth = ClientAuth::private_key_jwt(&pem, Algorithm::RS256, None).unwrap();
    let exec = executor(&sb, source(&sb, auth, KEY_CLIENT_ID));
    delivered(&exec.attempt(&ticket(1)).await);
    assert_eq!(sb.state().servicenow_tokens_issued(), 1);
    let recorded = serde_json::to_string(&sb.state().requests(Target::ServicenowOauth)).unwrap();
    assert!(
        recorded.contains("client_assertion=[redacted]"),
        "{recorded}"
    );

    // A key the client does not hold is refused (the emulator checks the signature).
    let other = Secret::new(include_str!("../../identity/tests/keys/rsa2.pem"));
    let wrong = ClientAuth::private_key_jwt(&other, Algorithm::RS256, None).unwrap();
    let exec = executor(&sb, source(&sb, wrong, KEY_CLIENT_ID));
    let a = exec.attempt(&ticket(2)).await;
    let err = a.error.unwrap();
    assert!(err.to_string().contains("invalid_client"), "{err}");
    assert_eq!(sb.state().incidents().len(), 1);
}

#[tokio::test]
async fn the_token_endpoint_takes_only_form_encoding_and_only_client_credentials() {
    let sb = sandbox().await;
    let http = reqwest::Client::new();
    let json = http
        .post(sb.servicenow_token_url())
        .header("content-type", "application/json")
        .body(
            serde_json::json!({
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 400);
    let password = http
        .post(sb.servicenow_token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=password&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&username=a&password=b"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(password.status(), 400);
    let body: serde_json::Value = serde_json::from_slice(&password.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"], "unsupported_grant_type");
    // The static sandbox token no longer opens the Table API once OAuth is configured.
    let table = http
        .get(format!("{}/api/now/table/incident", sb.servicenow_url()))
        .header("accept", "application/json")
        .bearer_auth(tg_sandbox::DEFAULT_SERVICENOW_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(table.status(), 401);
}
