//! The key set cache and the client-credentials token source over real HTTP,
//! against small in-test servers that count what they are asked: rotation,
//! the unknown-kid refresh rate limit, an IdP outage (last good set kept for a
//! bound, then fail closed), and every client authentication method.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use tg_model::Secret;
use triage_gate_identity::{
    Authenticator, ClientAuth, ClientCredentials, JwksConfig, JwtPolicy, ManualIdentityClock,
    OAuthError, TokenSource,
};

const NOW: i64 = 1_764_000_000;
const ISS: &str = "https://idp.test";
const AUD: &str = "triage-gate";

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn jwk(name: &str) -> Value {
    serde_json::from_slice(&key_file(&format!("{name}.jwk.json"))).unwrap()
}

fn token(key: &str, exp: i64) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(key.to_owned());
    let claims = json!({"iss": ISS, "aud": AUD, "sub": "svc", "iat": NOW - 5, "exp": exp, "scope": "events:write"});
    jsonwebtoken::encode(
        &h,
        &claims,
        &EncodingKey::from_rsa_pem(&key_file(&format!("{key}.pem"))).unwrap(),
    )
    .unwrap()
}

#[derive(Default)]
struct Idp {
    published: Mutex<Vec<String>>,
    fetches: AtomicUsize,
    down: AtomicBool,
}

async fn jwks(State(idp): State<Arc<Idp>>) -> Response {
    idp.fetches.fetch_add(1, Ordering::SeqCst);
    if idp.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys: Vec<Value> = idp
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|k| jwk(k))
        .collect();
    axum::Json(json!({ "keys": keys })).into_response()
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn idp_with(keys: &[&str]) -> (Arc<Idp>, Authenticator) {
    let idp = Arc::new(Idp::default());
    *idp.published.lock().unwrap() = keys.iter().map(|k| (*k).to_owned()).collect();
    let base = serve(
        Router::new()
            .route("/keys", get(jwks))
            .with_state(idp.clone()),
    )
    .await;
    let auth = Authenticator::new(
        JwtPolicy {
            issuer: ISS.to_owned(),
            audiences: vec![AUD.to_owned()],
            algorithms: vec![Algorithm::RS256],
            leeway_secs: 30,
            required_typ: None,
            max_lifetime_secs: triage_gate_identity::jwt::MAX_LIFETIME_SECS_DEFAULT,
        },
        JwksConfig {
            url: format!("{base}/keys"),
            timeout_ms: 2_000,
            max_age_secs: 600,
            refresh_min_interval_secs: 30,
            stale_max_secs: 3_600,
            ..Default::default()
        },
    )
    .unwrap();
    (idp, auth)
}

#[tokio::test]
async fn rotation_new_key_after_one_refresh_old_key_only_while_published() {
    let (idp, auth) = idp_with(&["rsa1"]).await;
    let old = token("rsa1", NOW + 3_000);
    assert!(auth.authenticate(&old, NOW).await.is_ok());
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);

    // The IdP rotates: publishes rsa2 beside rsa1.
    idp.published.lock().unwrap().push("rsa2".to_owned());
    let new = token("rsa2", NOW + 3_000);
    assert!(
        auth.authenticate(&new, NOW + 60).await.is_ok(),
        "one refresh on the unknown kid"
    );
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 2);
    assert!(
        auth.authenticate(&old, NOW + 61).await.is_ok(),
        "old key still published"
    );

    // rsa1 is withdrawn; once the cached set ages out, old tokens die with it.
    idp.published.lock().unwrap().retain(|k| k != "rsa1");
    assert!(auth.authenticate(&old, NOW + 60 + 601).await.is_err());
    assert!(auth.authenticate(&new, NOW + 60 + 602).await.is_ok());
}

#[tokio::test]
async fn unknown_kids_cannot_make_us_hammer_the_idp() {
    let (idp, auth) = idp_with(&["rsa1"]).await;
    assert!(
        auth.authenticate(&token("rsa1", NOW + 300), NOW)
            .await
            .is_ok()
    );
    for i in 0..50 {
        let forged = token("attacker", NOW + 300);
        let err = auth.authenticate(&forged, NOW + 1 + i).await.unwrap_err();
        assert_eq!(err.code(), "unknown_key");
    }
    // One fetch at start; the unknown kids within the 30 s interval cause at most one more.
    assert!(
        idp.fetches.load(Ordering::SeqCst) <= 2,
        "{} fetches",
        idp.fetches.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn idp_down_keeps_the_last_good_set_for_a_bound_then_fails_closed() {
    let (idp, auth) = idp_with(&["rsa1"]).await;
    let t = token("rsa1", NOW + 10_000);
    assert!(auth.authenticate(&t, NOW).await.is_ok());
    idp.down.store(true, Ordering::SeqCst);
    // Stale (past max-age) but inside stale_max_secs: still served.
    assert!(auth.authenticate(&t, NOW + 700).await.is_ok());
    assert!(auth.ready(NOW + 700).await);
    // Past the stale bound: 503-class refusal, never an accept.
    let err = auth.authenticate(&t, NOW + 3_700).await.unwrap_err();
    assert_eq!(err.code(), "keys_unavailable");
    assert_eq!(err.status(), 503);
    assert!(!auth.ready(NOW + 3_700).await);
    // The IdP comes back: accepted again.
    idp.down.store(false, Ordering::SeqCst);
    assert!(auth.authenticate(&t, NOW + 3_800).await.is_ok());
}

#[tokio::test]
async fn never_fetched_and_idp_down_is_unavailable_not_unauthorized() {
    let (idp, auth) = idp_with(&["rsa1"]).await;
    idp.down.store(true, Ordering::SeqCst);
    let err = auth
        .authenticate(&token("rsa1", NOW + 300), NOW)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "keys_unavailable");
}

// ---- client credentials ----

#[derive(Default)]
struct TokenEndpoint {
    calls: AtomicUsize,
    last_form: Mutex<Vec<(String, String)>>,
    last_auth: Mutex<Option<String>>,
    refuse: AtomicBool,
    /// Answer 503 (the IdP is down).
    down: AtomicBool,
    /// Hold each answer this long (so concurrent callers overlap a fetch).
    delay_ms: std::sync::atomic::AtomicU64,
}

async fn token_endpoint(
    State(ep): State<Arc<TokenEndpoint>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    ep.calls.fetch_add(1, Ordering::SeqCst);
    let delay = ep.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    if ep.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    *ep.last_form.lock().unwrap() = form.clone();
    *ep.last_auth.lock().unwrap() = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    if ep.refuse.load(Ordering::SeqCst) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client", "error_description": "client authentication failed"})),
        )
            .into_response();
    }
    axum::Json(json!({
        "access_token": format!("at-{}", ep.calls.load(Ordering::SeqCst)),
        "token_type": "Bearer", "expires_in": 600, "scope": "incident:write"
    }))
    .into_response()
}

async fn endpoint() -> (Arc<TokenEndpoint>, String) {
    let ep = Arc::new(TokenEndpoint::default());
    let base = serve(
        Router::new()
            .route("/token", post(token_endpoint))
            .with_state(ep.clone()),
    )
    .await;
    (ep, format!("{base}/token"))
}

fn source(url: &str, auth: ClientAuth) -> TokenSource {
    source_at(url, auth, Arc::new(ManualIdentityClock::new(NOW)))
}

fn source_at(url: &str, auth: ClientAuth, clock: Arc<ManualIdentityClock>) -> TokenSource {
    TokenSource::new(ClientCredentials {
        token_url: url.to_owned(),
        client_id: "gate client".to_owned(),
        auth,
        scopes: vec!["incident:write".to_owned()],
        extra: vec![],
        timeout_ms: 2_000,
        refresh_margin_secs: 60,
        tls: Default::default(),
    })
    .unwrap()
    .with_clock(clock)
}

fn form_get(form: &[(String, String)], k: &str) -> Option<String> {
    form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

#[tokio::test]
async fn client_secret_basic_urlencodes_then_caches_until_the_margin() {
    let (ep, url) = endpoint().await;
    let clock = Arc::new(ManualIdentityClock::new(NOW));
    let src = source_at(
        &url,
        ClientAuth::SecretBasic {
            secret: Secret::new("s3cr:t&x"),
        },
        clock.clone(),
    );
    let t1 = src.token().await.unwrap();
    assert_eq!(t1.expose(), "at-1");
    let auth = ep.last_auth.lock().unwrap().clone().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.strip_prefix("Basic ").unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        "gate+client:s3cr%3At%26x"
    );
    let form = ep.last_form.lock().unwrap().clone();
    assert_eq!(
        form_get(&form, "grant_type").as_deref(),
        Some("client_credentials")
    );
    assert_eq!(form_get(&form, "scope").as_deref(), Some("incident:write"));
    assert_eq!(form_get(&form, "client_secret"), None);
    // Cached until expires_in (600) minus the margin (60).
    clock.set(NOW + 539);
    assert_eq!(src.token().await.unwrap().expose(), "at-1");
    clock.set(NOW + 540);
    assert_eq!(src.token().await.unwrap().expose(), "at-2");
    assert_eq!(ep.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn client_secret_post_sends_the_secret_in_the_body_only() {
    let (ep, url) = endpoint().await;
    let src = source(
        &url,
        ClientAuth::SecretPost {
            secret: Secret::new("pw"),
        },
    );
    src.token().await.unwrap();
    let form = ep.last_form.lock().unwrap().clone();
    assert_eq!(form_get(&form, "client_id").as_deref(), Some("gate client"));
    assert_eq!(form_get(&form, "client_secret").as_deref(), Some("pw"));
    assert!(ep.last_auth.lock().unwrap().is_none());
}

#[tokio::test]
async fn private_key_jwt_assertion_verifies_with_the_clients_public_key() {
    let (ep, url) = endpoint().await;
    let src = source(
        &url,
        ClientAuth::private_key_jwt(
            &Secret::new(String::from_utf8(key_file("rsa2.pem")).unwrap()),
            Algorithm::RS256,
            Some("rsa2".to_owned()),
        )
        .unwrap(),
    );
    src.token().await.unwrap();
    let form = ep.last_form.lock().unwrap().clone();
    assert_eq!(
        form_get(&form, "client_assertion_type").as_deref(),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    let assertion = form_get(&form, "client_assertion").unwrap();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[url.as_str()]);
    v.validate_exp = false;
    let data = jsonwebtoken::decode::<Value>(
        &assertion,
        &DecodingKey::from_rsa_pem(&key_file("rsa2.pub.pem")).unwrap(),
        &v,
    )
    .unwrap();
    assert_eq!(data.claims["iss"], "gate client");
    assert_eq!(data.claims["sub"], "gate client");
    assert_eq!(
        data.claims["exp"].as_i64().unwrap() - data.claims["iat"].as_i64().unwrap(),
        60
    );
    assert!(data.claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch() {
    let (ep, url) = endpoint().await;
    let src = Arc::new(source(
        &url,
        ClientAuth::SecretPost {
            secret: Secret::new("pw"),
        },
    ));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = src.clone();
        tasks.push(tokio::spawn(async move {
            s.token().await.unwrap().expose().to_owned()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "at-1");
    }
    assert_eq!(ep.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_client_is_a_permanent_error_without_the_secret() {
    let (ep, url) = endpoint().await;
    ep.refuse.store(true, Ordering::SeqCst);
    let src = source(
        &url,
        ClientAuth::SecretPost {
            secret: Secret::new("do-not-leak-me"),
        },
    );
    let err = src.token().await.unwrap_err();
    assert!(err.is_permanent());
    assert!(matches!(err, OAuthError::Rejected { status: 401, .. }));
    let text = format!("{err} {err:?} {src:?}");
    assert!(!text.contains("do-not-leak-me"), "{text}");
    assert!(text.contains("invalid_client"));
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_retryable() {
    let src = source(
        "http://127.0.0.1:9/token",
        ClientAuth::SecretPost {
            secret: Secret::new("pw"),
        },
    );
    let err = src.token().await.unwrap_err();
    assert!(!err.is_permanent(), "{err}");
}

// ---- the injected clock, health and the probe ----

fn post_source(url: &str, clock: Arc<ManualIdentityClock>) -> TokenSource {
    source_at(
        url,
        ClientAuth::SecretPost {
            secret: Secret::new("probe-secret-never-shown"),
        },
        clock,
    )
}

#[tokio::test]
async fn the_token_is_refreshed_before_expiry_on_the_injected_clock() {
    let (ep, url) = endpoint().await;
    let clock = Arc::new(ManualIdentityClock::new(NOW));
    let src = post_source(&url, clock.clone());
    assert_eq!(src.token().await.unwrap().expose(), "at-1");
    let h = src.health();
    assert_eq!(h.valid_until, Some(NOW + 600));
    assert!(h.ready && h.token_valid);
    // expires_in 600, margin 60: cached up to 539 s, refetched from 540 s,
    // i.e. a minute before the IdP would refuse it.
    clock.set(NOW + 539);
    assert_eq!(src.token().await.unwrap().expose(), "at-1");
    assert_eq!(ep.calls.load(Ordering::SeqCst), 1);
    clock.set(NOW + 540);
    assert_eq!(src.token().await.unwrap().expose(), "at-2");
    assert_eq!(src.health().valid_until, Some(NOW + 540 + 600));
    assert_eq!(src.health().last_fetch_at, Some(NOW + 540));
}

#[tokio::test]
async fn a_failed_refresh_inside_the_margin_keeps_the_source_ready_until_expiry() {
    let (ep, url) = endpoint().await;
    let clock = Arc::new(ManualIdentityClock::new(NOW));
    let src = post_source(&url, clock.clone());
    src.token().await.unwrap();
    ep.down.store(true, Ordering::SeqCst);
    clock.set(NOW + 550);
    assert!(src.token().await.is_err());
    let h = src.health();
    assert!(h.ready, "the cached token is still valid: {h:?}");
    assert_eq!(h.last_fetch_ok, Some(false));
    assert_eq!(h.reason.as_deref(), Some("token endpoint answered 503"));
    // Past expiry with the IdP still down: not ready, and the reason says why.
    clock.set(NOW + 600);
    let h = src.health();
    assert!(!h.ready && !h.token_valid, "{h:?}");
    assert_eq!(h.consecutive_failures, 1);
    let text = serde_json::to_string(&h).unwrap();
    assert!(
        !text.contains("probe-secret-never-shown") && !text.contains("at-1"),
        "{text}"
    );
}

#[tokio::test]
async fn health_is_not_ready_before_any_token_and_after_a_refused_client() {
    let (ep, url) = endpoint().await;
    let clock = Arc::new(ManualIdentityClock::new(NOW));
    let src = post_source(&url, clock);
    let h = src.health();
    assert!(!h.ready);
    assert_eq!(h.reason.as_deref(), Some("no token obtained yet"));
    ep.refuse.store(true, Ordering::SeqCst);
    assert!(src.probe().await.is_err());
    let h = src.health();
    assert!(!h.ready);
    assert_eq!(
        h.reason.as_deref(),
        Some("token endpoint refused the client (401 invalid_client)")
    );
    // The IdP's free-text description is not repeated in readiness.
    assert!(!format!("{h:?}").contains("client authentication failed"));
    ep.refuse.store(false, Ordering::SeqCst);
    src.probe().await.unwrap();
    let h = src.health();
    assert!(
        h.ready && h.reason.is_none() && h.consecutive_failures == 0,
        "{h:?}"
    );
}

#[tokio::test]
async fn a_probe_and_actions_share_one_fetch() {
    let (ep, url) = endpoint().await;
    ep.delay_ms.store(200, Ordering::SeqCst);
    let clock = Arc::new(ManualIdentityClock::new(NOW));
    let src = Arc::new(post_source(&url, clock.clone()));
    let probe = {
        let s = src.clone();
        tokio::spawn(async move { s.probe().await })
    };
    // Let the probe start its (slow) fetch, then ask as the actions would.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut actions = Vec::new();
    for _ in 0..5 {
        let s = src.clone();
        actions.push(tokio::spawn(async move {
            s.token().await.unwrap().expose().to_owned()
        }));
    }
    probe.await.unwrap().unwrap();
    for a in actions {
        assert_eq!(a.await.unwrap(), "at-1");
    }
    assert_eq!(ep.calls.load(Ordering::SeqCst), 1);
    // A probe while a good token is cached asks nothing.
    clock.advance(100);
    src.probe().await.unwrap();
    assert_eq!(ep.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_background_probe_finds_a_down_idp_before_any_action() {
    let (ep, url) = endpoint().await;
    ep.down.store(true, Ordering::SeqCst);
    let src = Arc::new(post_source(&url, Arc::new(ManualIdentityClock::new(NOW))));
    let handle = triage_gate_identity::spawn_probes(
        &[("servicenow".to_owned(), src.clone())],
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    assert!(
        triage_gate_identity::spawn_probes(&[], std::time::Duration::ZERO).is_none(),
        "0 turns probes off"
    );
    // The first probe runs at once; the next waits the backoff (5 s, pure
    // `next_probe_delay`, unit-tested), so this sees exactly one attempt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while src.health().last_fetch_at.is_none() {
        assert!(std::time::Instant::now() < deadline, "no probe");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let h = src.health();
    assert!(!h.ready, "{h:?}");
    assert_eq!(h.reason.as_deref(), Some("token endpoint answered 503"));
    drop(handle);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(ep.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_private_key_that_is_not_pem_is_refused_without_quoting_it() {
    let err = ClientAuth::private_key_jwt(
        &Secret::new("-----BEGIN PRIVATE KEY-----\nnot-a-key-XYZZY\n"),
        Algorithm::RS256,
        None,
    )
    .unwrap_err();
    assert!(!err.contains("XYZZY"), "{err}");
    assert!(ClientAuth::private_key_jwt(&Secret::new("x"), Algorithm::HS256, None).is_err());
}
