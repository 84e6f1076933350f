//! Inbound identity end to end, over real HTTP: a JWKS served by a real HTTP
//! server, the gate configured with `identity.inbound.mode: jwt`, and the attack
//! table posted to `/v1/events/generic`. Every attack is 401/403 problem+json
//! and creates no run; a good token is accepted and its caller is written onto
//! the run and into the audit record; an unreachable issuer fails closed (503).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{CONFIG, Harness, event, t0};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tg_sandbox::Target;

const ISS: &str = "https://idp.test/oauth2/default";

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../identity/tests/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

struct Jwks {
    down: AtomicBool,
    /// Requests the key set endpoint received.
    fetches: std::sync::atomic::AtomicUsize,
}

async fn keys(State(s): State<Arc<Jwks>>) -> Response {
    s.fetches.fetch_add(1, Ordering::SeqCst);
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let rsa: Value = serde_json::from_slice(&key_file("rsa1.jwk.json")).unwrap();
    let ec: Value = serde_json::from_slice(&key_file("ec1.jwk.json")).unwrap();
    axum::Json(json!({ "keys": [rsa, ec] })).into_response()
}

async fn start() -> (Harness, Arc<Jwks>) {
    start_issuer(true).await
}

/// `up`: whether the issuer answers from the start (the gate fetches its key
/// set in the background as soon as it starts).
async fn start_issuer(up: bool) -> (Harness, Arc<Jwks>) {
    start_issuer_with(
        up,
        "    leeway_secs: 30\n    jwks_max_age_secs: 60\n    jwks_stale_max_secs: 120\n    jwks_refresh_min_interval_secs: 10\n",
    )
    .await
}

/// [`start_issuer`] with `inbound` appended to `identity.inbound`.
async fn start_issuer_with(up: bool, inbound: &str) -> (Harness, Arc<Jwks>) {
    let jwks = Arc::new(Jwks {
        down: AtomicBool::new(!up),
        fetches: std::sync::atomic::AtomicUsize::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/keys", get(keys))
        .with_state(jwks.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let yaml = format!(
        "{CONFIG}\nidentity:\n  inbound:\n    mode: jwt\n    issuer: {ISS}\n    audiences: [triage-gate]\n    jwks_url: http://{addr}/keys\n{inbound}"
    );
    (Harness::start_with(&yaml).await, jwks)
}

fn now() -> i64 {
    t0().timestamp()
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": "triage-gate", "sub": "alertmanager-prod", "client_id": "0oa-am",
        "iat": now() - 5, "exp": now() + 300, "scope": "events:write runs:read",
    })
}

fn sign_with(alg: Algorithm, key: &str, kid: &str, claims: &Value) -> String {
    let pem = key_file(&format!("{key}.pem"));
    let k = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    let mut h = Header::new(alg);
    h.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&h, claims, &k).unwrap()
}

fn sign(claims: &Value) -> String {
    sign_with(Algorithm::RS256, "rsa1", "rsa1", claims)
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// (name, Authorization header value or None, expected status).
fn attacks() -> Vec<(&'static str, Option<String>, u16)> {
    let good = sign(&claims());
    let parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let bearer = |t: String| Some(format!("Bearer {t}"));
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        bearer(sign(&c))
    };
    let mut rows = vec![
        ("no token", None, 401),
        (
            "basic auth instead of bearer",
            Some("Basic dXNlcjpwYXNz".to_owned()),
            401,
        ),
        (
            "alg none",
            bearer(format!(
                "{}.{}.",
                b64(&json!({"alg": "none"})),
                b64(&claims())
            )),
            401,
        ),
        (
            "HS256 keyed with the RSA public key",
            bearer(
                jsonwebtoken::encode(
                    &Header {
                        kid: Some("rsa1".into()),
                        ..Header::new(Algorithm::HS256)
                    },
                    &claims(),
                    &EncodingKey::from_secret(&key_file("rsa1.pub.pem")),
                )
                .unwrap(),
            ),
            401,
        ),
        (
            "wrong issuer",
            with("iss", json!("https://evil.example")),
            401,
        ),
        ("wrong audience", with("aud", json!("another-api")), 401),
        ("expired", with("exp", json!(now() - 60)), 401),
        ("not yet valid", with("nbf", json!(now() + 600)), 401),
        // identity.inbound.max_token_lifetime_secs (default 86400).
        (
            "exp in the year 9999",
            with("exp", json!(253_402_300_799_i64)),
            401,
        ),
        (
            "lifetime of two days",
            with("exp", json!(now() + 172_800)),
            401,
        ),
        (
            "no iat, exp two days away",
            {
                let mut c = claims();
                c.as_object_mut().unwrap().remove("iat");
                c["exp"] = json!(now() + 172_800);
                bearer(sign(&c))
            },
            401,
        ),
        (
            "unknown kid",
            bearer(sign_with(Algorithm::RS256, "rsa1", "nope", &claims())),
            401,
        ),
        (
            "tampered payload",
            bearer(format!(
                "{}.{}.{}",
                parts[0],
                b64(
                    &json!({"iss": ISS, "aud": "triage-gate", "sub": "x", "exp": now() + 300, "scope": "admin"})
                ),
                parts[2]
            )),
            401,
        ),
        (
            "tampered signature",
            bearer(format!(
                "{}.{}.{}A",
                parts[0],
                parts[1],
                &parts[2][..parts[2].len() - 1]
            )),
            401,
        ),
        ("missing scope", with("scope", json!("runs:read")), 403),
        (
            "another tenant's key under our kid",
            bearer(sign_with(Algorithm::RS256, "attacker", "rsa1", &claims())),
            401,
        ),
        (
            "RS256 token naming the EC key",
            bearer(sign_with(Algorithm::RS256, "rsa1", "ec1", &claims())),
            401,
        ),
        (
            "oversized token",
            bearer(format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2])),
            401,
        ),
        (
            "malformed base64",
            bearer(format!("{}.***.{}", parts[0], parts[2])),
            401,
        ),
    ];
    // jku / x5u: signed by the attacker, pointing at the attacker's keys.
    for (name, extra) in [
        ("jku header injection", ("jku", "https://evil.example/jwks")),
        ("x5u header injection", ("x5u", "https://evil.example/cert")),
    ] {
        let header = json!({"alg": "RS256", "kid": "attacker", extra.0: extra.1});
        let input = format!("{}.{}", b64(&header), b64(&claims()));
        let key = EncodingKey::from_rsa_pem(&key_file("attacker.pem")).unwrap();
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256).unwrap();
        rows.push((name, bearer(format!("{input}.{sig}")), 401));
    }
    rows
}

async fn post(h: &Harness, auth: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = h
        .http
        .post(format!("{}/v1/events/generic", h.base))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_is_refused_and_creates_no_run() {
    let (mut h, _jwks) = start().await;
    let rows = attacks();
    assert!(rows.len() >= 15);
    let ev = event("checkout", "CheckoutErrors", "prod", "prometheus", "attack");
    for (name, auth, status) in rows {
        let resp = post(&h, auth.as_deref(), &ev).await;
        assert_eq!(resp.status().as_u16(), status, "{name}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
        let www = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            www.as_deref().is_some_and(|w| w.starts_with("Bearer")),
            "{name}: {www:?}"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], status, "{name}: {body}");
    }
    // Reads need a token too; probes do not.
    let resp = h
        .http
        .get(format!("{}/v1/review", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    for path in ["/healthz", "/metrics"] {
        let resp = h
            .http
            .get(format!("{}{path}", h.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    let metrics = h
        .http
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("triage_gate_auth_refused_total"),
        "{metrics}"
    );
    // Nothing was accepted: no model call, no action, no audit record.
    for t in Target::ALL {
        assert_eq!(h.received(t), 0, "{t} received something");
    }
    h.stop_gate().await;
    assert_eq!(h.run_records(), Vec::<Value>::new(), "no run was audited");
}

/// Polls the run (with the caller's token) until it is completed and audited.
/// `GET /v1/runs/{run_id}` as the caller `auth`.
async fn get_run(h: &Harness, run_id: &str, auth: &str) -> Value {
    h.http
        .get(format!("{}/v1/runs/{run_id}", h.base))
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_completed(h: &Harness, run_id: &str, auth: &str) {
    for _ in 0..200 {
        let run: Value = get_run(h, run_id, auth).await;
        if run["status"] == "completed" {
            return;
        }
        if run["status"] == "decided" {
            h.advance_to_next_attempt().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("run {run_id} did not complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_token_is_accepted_and_the_caller_reaches_the_run_and_the_audit_record() {
    let (mut h, _jwks) = start().await;
    for (alg, key) in [(Algorithm::RS256, "rsa1"), (Algorithm::ES256, "ec1")] {
        let token = sign_with(alg, key, key, &claims());
        let auth = format!("Bearer {token}");
        let ev = event("checkout", "CheckoutErrors", "prod", "prometheus", key);
        let resp = post(&h, Some(&auth), &ev).await;
        assert_eq!(resp.status().as_u16(), 202);
        let body: Value = resp.json().await.unwrap();
        let run_id = body["runs"][0]["run_id"].as_str().unwrap().to_owned();
        let run: Value = get_run(&h, &run_id, &auth).await;
        assert_eq!(
            run["submitted_by"], "alertmanager-prod (client 0oa-am)",
            "{run}"
        );
        wait_completed(&h, &run_id, &auth).await;
    }
    h.stop_gate().await;
    let records = h.run_records();
    assert_eq!(records.len(), 2, "{records:#?}");
    for r in records {
        let text = r.to_string();
        assert!(
            text.contains("alertmanager-prod (client 0oa-am)"),
            "the audit record names the caller: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_issuer_fails_closed_with_503_and_recovers() {
    let (h, jwks) = start_issuer(false).await;
    let auth = format!("Bearer {}", sign(&claims()));
    let ev = event("checkout", "CheckoutErrors", "prod", "prometheus", "down");
    let resp = post(&h, Some(&auth), &ev).await;
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    // Readiness names the capability that is down.
    let ready = h
        .http
        .get(format!("{}/readyz", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["capabilities"]["identity"]["ready"], false, "{body}");
    assert_eq!(body["capabilities"]["store"]["ready"], true, "{body}");
    jwks.down.store(false, Ordering::SeqCst);
    // A dead issuer is asked again only after the no-keys retry interval.
    h.advance_secs(tg_identity::jwks::NO_KEYS_RETRY_SECS);
    let resp = post(&h, Some(&auth), &ev).await;
    assert_eq!(
        resp.status().as_u16(),
        202,
        "accepted once the issuer is back"
    );
    let ready = h
        .http
        .get(format!("{}/readyz", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
}

/// Issue 21 item 7: while no key set is held, neither a flood of requests
/// with bearer tokens (garbage or well-formed) nor anonymous `/readyz`
/// probes make the gate ask the issuer more than once per interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_issuer_is_not_asked_once_per_request() {
    let (h, jwks) = start_issuer(false).await;
    // The start-up warm-up asks once; then the retry interval passes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while jwks.fetches.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "no warm-up fetch");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    h.advance_secs(tg_identity::jwks::NO_KEYS_RETRY_SECS);
    let before = jwks.fetches.load(Ordering::SeqCst);
    let ev = event("checkout", "CheckoutErrors", "prod", "prometheus", "storm");
    let good = format!("Bearer {}", sign(&claims()));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let http = h.http.clone();
        let base = h.base.clone();
        let auth = if i % 2 == 0 {
            "Bearer x".to_owned()
        } else {
            good.clone()
        };
        let ev = ev.clone();
        tasks.push(tokio::spawn(async move {
            let post = http
                .post(format!("{base}/v1/events/generic"))
                .header("authorization", auth)
                .json(&ev)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            let ready = http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            (post, ready)
        }));
    }
    for t in tasks {
        let (post, ready) = t.await.unwrap();
        assert!(post == 401 || post == 503, "{post}");
        assert_eq!(ready, 503);
    }
    let fetched = jwks.fetches.load(Ordering::SeqCst) - before;
    assert!(
        fetched <= 1,
        "80 requests while the issuer is down made {fetched} key set fetches"
    );
}

/// The value (`name=value`) of the `Set-Cookie` named `name`.
fn set_cookie(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no {name} cookie set"))
}

fn between<'a>(html: &'a str, marker: &str) -> &'a str {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {html}"));
    let rest = &html[at + marker.len()..];
    &rest[..rest.find('"').unwrap()]
}

/// Issue 21 item 6: a CR/LF in `next` is ignored (never a 500); the sign-in
/// form needs its own token and a same-site `Origin` (login CSRF); signing
/// out ends the session for a copied cookie too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sign_in_is_csrf_protected_and_sign_out_ends_every_copy() {
    let (h, _jwks) = start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = format!("{}/ui/login", h.base);
    let resp = http
        .get(format!("{login}?next=/ui/now%0d%0aX-Injected:%201"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let login_cookie = set_cookie(&resp, "tg_login");
    let html = resp.text().await.unwrap();
    assert!(!html.contains("X-Injected"), "the unsafe next was kept");
    let form_token = between(&html, "name=\"login_csrf\" value=\"").to_owned();
    let token = sign(&claims());
    let attempt = |csrf: &str, next: &str, origin: Option<&str>| {
        let mut req = http.post(&login).header("cookie", &login_cookie).form(&[
            ("token", token.as_str()),
            ("next", next),
            ("login_csrf", csrf),
        ]);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    let r = attempt("", "/ui/now", None).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no form token");
    let r = attempt(&form_token, "/ui/now", Some("http://evil.example"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "another site's origin");
    // `Origin: null` (our own no-referrer policy) without the form token.
    let r = attempt("", "/ui/now", Some("null")).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "a null origin without the token"
    );
    let own = h.base.clone();
    let r = attempt(&form_token, "/ui/now\r\nX-Injected: 1", Some(&own))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "signed in");
    assert_eq!(
        r.headers()["location"],
        "/ui/now",
        "the unsafe next is ignored"
    );
    let session = set_cookie(&r, "tg_console");

    let page = http
        .get(format!("{}/ui/now", h.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let csrf = between(&html, "<meta name=\"csrf-token\" content=\"").to_owned();
    let out = http
        .post(format!("{}/ui/logout", h.base))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    // The cookie as it was before signing out (a copy) no longer works.
    let copy = http
        .get(format!("{}/ui/now", h.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(
        copy.status(),
        StatusCode::SEE_OTHER,
        "a copied cookie still works"
    );
    assert!(
        copy.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/ui/login"),
        "{:?}",
        copy.headers()
    );
}

/// Issue 20 item 3: independence is a property of verified senders. One JWT
/// client claiming two origins is one signal; a client bound to its origins
/// (`identity.inbound.origins`) cannot claim another; two clients bound to
/// two origins are two signals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_signals_are_verified_senders_bound_to_their_origins() {
    let (h, _jwks) = start_issuer_with(
        true,
        "    origins:\n      \"jwt:0oa-prom\": [prometheus]\n      \"jwt:0oa-cw\": [cloudwatch]\n",
    )
    .await;
    let bearer = |client: &str| {
        let mut c = claims();
        c["sub"] = json!(format!("{client}-sub"));
        c["client_id"] = json!(client);
        format!("Bearer {}", sign(&c))
    };
    let mim_answer = common::answer("sev1", 0.95, true, true, true, "dba");
    let decided = |run: reqwest::Response, auth: String| {
        let h = &h;
        async move {
            assert_eq!(run.status().as_u16(), 202);
            let body: Value = run.json().await.unwrap();
            let run_id = body["runs"][0]["run_id"].as_str().unwrap().to_owned();
            for _ in 0..400 {
                let run: Value = get_run(h, &run_id, &auth).await;
                if run["decision"].is_object() {
                    return run;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            panic!("run {run_id} was not decided");
        }
    };

    // One client (bound to nothing) claims two origins for checkout: one signal.
    let relay = bearer("0oa-relay");
    for (i, origin) in ["prometheus", "cloudwatch"].into_iter().enumerate() {
        let marker = format!("IND-R{i}");
        h.script_tool(
            &marker,
            common::answer("sev1", 0.95, true, true, true, "payments"),
        );
        let ev = event("checkout", &format!("Relay{i}"), "prod", origin, &marker);
        let run = decided(post(&h, Some(&relay), &ev).await, relay.clone()).await;
        let c = common::failed_condition(&run, "mim", "mim.signals");
        assert!(
            c["actual"]
                .as_str()
                .unwrap()
                .starts_with("1 (jwt:0oa-relay"),
            "{run}"
        );
    }

    // A bound client claiming another client's origin is refused, and no run is made.
    let cw = bearer("0oa-cw");
    let resp = post(
        &h,
        Some(&cw),
        &event("checkout", "Spoofed", "prod", "prometheus", "IND-S"),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 403);
    let problem: Value = resp.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("/origin-not-bound"),
        "{problem}"
    );

    // Two clients, each on its own origin, for orders-db (MIM autonomy): two
    // signals, and the MIM opens.
    let prom = bearer("0oa-prom");
    h.script_tool("IND-P", mim_answer.clone());
    decided(
        post(
            &h,
            Some(&prom),
            &event("orders-db", "ErrorsP", "prod", "prometheus", "IND-P"),
        )
        .await,
        prom.clone(),
    )
    .await;
    h.script_tool("IND-C", mim_answer.clone());
    let run = decided(
        post(
            &h,
            Some(&cw),
            &event("orders-db", "ErrorsC", "prod", "cloudwatch", "IND-C"),
        )
        .await,
        cw.clone(),
    )
    .await;
    let signals = common::action(&run, "mim")["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "mim.signals")
        .cloned()
        .unwrap();
    assert_eq!(signals["passed"], true, "{run}");
    assert_eq!(common::outcome(&run, "mim"), "execute", "{run}");
    assert_eq!(
        signals["actual"], "2 (jwt:0oa-cw (cloudwatch), jwt:0oa-prom (prometheus))",
        "{run}"
    );
    // The emulators: one major incident and one bridge, both for orders-db
    // (the relay's checkout alerts were one signal: no MIM).
    let mut waited = 0;
    while h.state().bridge_posts().is_empty() {
        assert!(waited < 400, "the confirmed MIM never reached the bridge");
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let posts = h.state().bridge_posts();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert!(posts[0].text.contains("orders-db"), "{}", posts[0].text);
    let majors: Vec<_> = h
        .state()
        .incidents()
        .into_iter()
        .filter(|i| i.field("major_incident_state") == Some("proposed"))
        .collect();
    assert_eq!(majors.len(), 1, "{majors:#?}");
    assert!(
        majors[0]
            .field("short_description")
            .is_some_and(|d| d.contains("orders-db")),
        "{majors:#?}"
    );
}
