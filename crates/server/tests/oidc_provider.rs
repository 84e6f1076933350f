//! Interop with a real, widely used OpenID Connect provider (issue 21 item
//! 14a): panva's `oidc-provider` (npm, pinned by `tests/oidc/package-lock.json`)
//! runs as a child process on loopback (`tests/oidc/provider.mjs`). The gate
//! is configured from the provider's discovery document (`issuer`,
//! `jwks_uri`); tokens are fetched from its token endpoint with the OAuth 2.0
//! client-credentials grant over real HTTP. Nothing is mocked: the JWKS, the
//! tokens and their signatures are the provider's own.
//!
//! - a client-credentials token for the resource `triage-gate` is accepted
//!   (202) and its client is the run's caller, in the run and its audit record;
//! - the provider's token with its payload changed, re-signed by another key
//!   under the provider's `kid`, issued for another audience, or without
//!   `events:write` is refused (401/403 problem+json with the reason) and
//!   makes no run;
//! - after the provider rotates its signing key, a token signed with the new
//!   key is accepted (the gate refetches the JWKS on the unknown `kid`), one
//!   signed with the previous key still is while the provider publishes it,
//!   and one signed with a key the provider no longer publishes is refused
//!   once the gate's cached key set has aged out.
//!
//! Needs `npm ci --prefix tests/oidc` and Node.js 20+ (`node` on PATH, or
//! `$NODE`). Without `tests/oidc/node_modules` the tests are skipped loudly,
//! unless `TG_REQUIRE_OIDC_PROVIDER` is set (`.ci/run` sets it): then they fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{CONFIG, Harness, event};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

/// Set (to anything) to make a missing `tests/oidc/node_modules` a failure.
const REQUIRE_ENV: &str = "TG_REQUIRE_OIDC_PROVIDER";
/// How long the provider may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The gate's `jwks_max_age_secs` in these tests.
const JWKS_MAX_AGE_SECS: i64 = 60;

fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc")
}

/// The provider process; killed (and its stdin closed) on drop.
struct Provider {
    child: Child,
    _stdin: ChildStdin,
    issuer: String,
    admin_token: String,
    clients: BTreeMap<String, String>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the provider's discovery document says.
struct Discovery {
    jwks_uri: String,
    token_endpoint: String,
}

impl Provider {
    /// Starts `node tests/oidc/provider.mjs`, or `None` (after a loud message)
    /// when its packages are not installed and nothing requires them.
    fn start(test: &str) -> Option<Provider> {
        let dir = oidc_dir();
        if !dir.join("node_modules").is_dir() {
            let why = "tests/oidc has no node_modules; run `npm ci --prefix tests/oidc`";
            assert!(
                std::env::var_os(REQUIRE_ENV).is_none(),
                "{REQUIRE_ENV} is set but {why}"
            );
            // Straight to stderr, past the test harness's capture, so a skip is seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!!\n!!! SKIPPED {test}: {why} (set {REQUIRE_ENV}=1 to make this a failure)\n!!!!!!!!\n"
            );
            return None;
        }
        let node = std::env::var_os("NODE").unwrap_or_else(|| "node".into());
        let mut child = Command::new(&node)
            .arg("provider.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {node:?} (Node.js 20+ is needed): {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        // The reader thread hands over the ready line, then keeps draining
        // stdout (to stderr) so the provider never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let ready = serde_json::from_str::<Value>(&line)
                    .ok()
                    .filter(|v| v.get("issuer").is_some());
                match (ready, tx.take()) {
                    (Some(v), Some(sender)) => {
                        let _ = sender.send(v);
                    }
                    (_, sender) => {
                        tx = sender;
                        eprintln!("oidc-provider stdout: {line}");
                    }
                }
            }
        });
        let mut provider = Provider {
            child,
            _stdin: stdin,
            issuer: String::new(),
            admin_token: String::new(),
            clients: BTreeMap::new(),
        };
        let ready = match rx.recv_timeout(START_TIMEOUT) {
            Ok(v) => v,
            Err(e) => {
                let status = provider.child.try_wait();
                panic!(
                    "the OIDC provider printed no ready line within {START_TIMEOUT:?} ({e}); \
                     process status {status:?}; see its stderr above"
                )
            }
        };
        provider.issuer = ready["issuer"].as_str().unwrap().to_owned();
        provider.admin_token = ready["admin_token"].as_str().unwrap().to_owned();
        provider.clients = serde_json::from_value(ready["clients"].clone()).unwrap();
        Some(provider)
    }

    /// OpenID Connect discovery, checked as a relying party would.
    async fn discover(&self, http: &reqwest::Client) -> Discovery {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "GET {url}");
        let doc: Value = resp.json().await.unwrap();
        assert_eq!(doc["issuer"], self.issuer.as_str(), "{doc}");
        let grants = doc["grant_types_supported"].as_array().unwrap();
        assert!(grants.iter().any(|g| g == "client_credentials"), "{doc}");
        Discovery {
            jwks_uri: doc["jwks_uri"].as_str().unwrap().to_owned(),
            token_endpoint: doc["token_endpoint"].as_str().unwrap().to_owned(),
        }
    }

    /// A client-credentials access token for `client`, `scope` and `resource`
    /// (client_secret_basic).
    async fn token(
        &self,
        http: &reqwest::Client,
        d: &Discovery,
        client: &str,
        scope: &str,
        resource: &str,
    ) -> String {
        let resp = http
            .post(&d.token_endpoint)
            .basic_auth(client, Some(&self.clients[client]))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("resource", resource),
            ])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "token endpoint: {body}");
        assert_eq!(body["token_type"], "Bearer", "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Rotates the provider's signing key; returns the new key's id.
    async fn rotate(&self, http: &reqwest::Client) -> String {
        let resp = http
            .post(format!("{}/admin/rotate", self.issuer))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().await.unwrap();
        body["kid"].as_str().unwrap().to_owned()
    }
}

/// The gate's clock starts at the wall clock's time and is moved forward to
/// it before each request (the provider's tokens carry real `iat`/`exp`).
fn wall_clock() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
}

fn catch_up(h: &Harness) {
    use common::tg_server::Clock as _;
    let behind = wall_clock() - h.clock.now();
    if behind > chrono::Duration::zero() {
        h.clock.advance(behind);
    }
}

/// The gate, configured from the provider's discovery document.
async fn gate(p: &Provider, d: &Discovery) -> Harness {
    let yaml = format!(
        "{CONFIG}\nidentity:\n  inbound:\n    mode: jwt\n    issuer: {}\n    jwks_url: {}\n    \
         audiences: [triage-gate]\n    algorithms: [RS256]\n    required_typ: at+jwt\n    \
         leeway_secs: 30\n    jwks_max_age_secs: {JWKS_MAX_AGE_SECS}\n    \
         jwks_refresh_min_interval_secs: 1\n",
        p.issuer, d.jwks_uri
    );
    Harness::start_with_at(&yaml, wall_clock()).await
}

/// The token's header and claims, decoded without verification.
fn parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let mut next =
        || serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    (next(), next())
}

/// POSTs a generic event with `Authorization: Bearer <token>`.
async fn post(h: &Harness, token: &str, marker: &str) -> (u16, Value) {
    catch_up(h);
    let resp = h
        .http
        .post(format!("{}/v1/events/generic", h.base))
        .bearer_auth(token)
        .json(&event(
            "checkout",
            "CheckoutErrors",
            "prod",
            "prometheus",
            marker,
        ))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status != 202 {
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{marker}"
        );
    }
    (status, resp.json().await.unwrap())
}

/// Asserts the gate refused with `status` and reason code `code`.
async fn refused(h: &Harness, token: &str, marker: &str, status: u16, code: &str) {
    let (got, body) = post(h, token, marker).await;
    assert_eq!(got, status, "{marker}: {body}");
    assert_eq!(body["status"], status, "{marker}: {body}");
    assert_eq!(body["field"], code, "{marker}: {body}");
}

/// Asserts the gate accepted the event; returns its run ID.
async fn accepted(h: &Harness, token: &str, marker: &str) -> String {
    let (got, body) = post(h, token, marker).await;
    assert_eq!(got, 202, "{marker}: {body}");
    body["runs"][0]["run_id"].as_str().unwrap().to_owned()
}

/// Polls the run (with `token`) until it is completed and audited.
async fn wait_completed(h: &Harness, run_id: &str, token: &str) {
    let deadline = tokio::time::Instant::now() + common::RUN_TIMEOUT;
    loop {
        catch_up(h);
        let run: Value = h
            .http
            .get(format!("{}/v1/runs/{run_id}", h.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["status"] == "completed" {
            return;
        }
        if run["status"] == "decided" {
            h.advance_to_next_attempt().await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run_id} did not complete: {run}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_credentials_token_from_oidc_provider_is_accepted_and_names_its_client() {
    let Some(p) = Provider::start("a_client_credentials_token_from_oidc_provider_is_accepted")
    else {
        return;
    };
    let http = reqwest::Client::new();
    let d = p.discover(&http).await;
    let mut h = gate(&p, &d).await;
    let token = p
        .token(
            &http,
            &d,
            "tg-events",
            "events:write runs:read",
            "urn:triage-gate",
        )
        .await;
    let (header, claims) = parts(&token);
    // What makes this an RFC 9068 token the gate verifies, as the provider made it.
    assert_eq!(header["typ"], "at+jwt", "{header}");
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(claims["aud"], "triage-gate", "{claims}");
    assert_eq!(claims["client_id"], "tg-events", "{claims}");
    assert_eq!(claims["scope"], "events:write runs:read", "{claims}");

    let run_id = accepted(&h, &token, "oidc-good").await;
    let run: Value = h
        .http
        .get(format!("{}/v1/runs/{run_id}", h.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // oidc-provider's client-credentials tokens have `sub` = `client_id`.
    assert_eq!(run["submitted_by"], "tg-events", "{run}");
    wait_completed(&h, &run_id, &token).await;
    h.stop_gate().await;
    let records = h.run_records();
    assert_eq!(records.len(), 1, "{records:#?}");
    assert!(
        records[0].to_string().contains("tg-events"),
        "the audit record names the provider's client: {}",
        records[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_misdirected_tokens_from_oidc_provider_are_refused() {
    let Some(p) = Provider::start("tampered_or_misdirected_tokens_from_oidc_provider_are_refused")
    else {
        return;
    };
    let http = reqwest::Client::new();
    let d = p.discover(&http).await;
    let mut h = gate(&p, &d).await;
    let good = p
        .token(
            &http,
            &d,
            "tg-events",
            "events:write runs:read",
            "urn:triage-gate",
        )
        .await;
    let segments: Vec<&str> = good.split('.').collect();
    let (header, claims) = parts(&good);

    // 1. The payload changed (another client, `admin` scope), the signature kept.
    let mut forged = claims.clone();
    forged["client_id"] = "tg-admin".into();
    forged["sub"] = "tg-admin".into();
    forged["scope"] = "admin".into();
    let forged_b64 = URL_SAFE_NO_PAD.encode(forged.to_string());
    let tampered = format!("{}.{forged_b64}.{}", segments[0], segments[2]);
    refused(&h, &tampered, "oidc-tampered", 401, "bad_signature").await;

    // 2. The same header and claims, signed by a key the provider never
    //    published, under the provider's own `kid`.
    let input = format!("{}.{}", segments[0], segments[1]);
    let attacker = std::fs::read(format!(
        "{}/../identity/tests/keys/attacker.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_rsa_pem(&attacker).unwrap(),
        Algorithm::RS256,
    )
    .unwrap();
    assert!(header["kid"].is_string(), "{header}");
    refused(
        &h,
        &format!("{input}.{sig}"),
        "oidc-other-key",
        401,
        "bad_signature",
    )
    .await;

    // 3. A genuine token from the same provider, for another API.
    let other = p
        .token(
            &http,
            &d,
            "tg-events",
            "events:write runs:read",
            "urn:other-api",
        )
        .await;
    assert_eq!(parts(&other).1["aud"], "other-api");
    refused(&h, &other, "oidc-other-aud", 401, "wrong_audience").await;

    // 4. A genuine token for triage-gate from a client allowed only to read.
    let reader = p
        .token(&http, &d, "tg-reader", "runs:read", "urn:triage-gate")
        .await;
    assert_eq!(parts(&reader).1["scope"], "runs:read");
    refused(&h, &reader, "oidc-reader", 403, "insufficient_scope").await;

    // The good token still works, and nothing refused made a run.
    let run_id = accepted(&h, &good, "oidc-good").await;
    wait_completed(&h, &run_id, &good).await;
    h.stop_gate().await;
    assert_eq!(h.run_records().len(), 1, "only the good token made a run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_follows_oidc_provider_key_rotation() {
    let Some(p) = Provider::start("the_gate_follows_oidc_provider_key_rotation") else {
        return;
    };
    let http = reqwest::Client::new();
    let d = p.discover(&http).await;
    let h = gate(&p, &d).await;
    let scope = "events:write runs:read";
    let first = p
        .token(&http, &d, "tg-events", scope, "urn:triage-gate")
        .await;
    let first_kid = parts(&first).0["kid"].as_str().unwrap().to_owned();
    accepted(&h, &first, "rot-1").await;

    // The provider publishes a new key first (the previous one stays).
    let new_kid = p.rotate(&http).await;
    assert_ne!(new_kid, first_kid);
    let second = p
        .token(&http, &d, "tg-events", scope, "urn:triage-gate")
        .await;
    assert_eq!(
        parts(&second).0["kid"],
        new_kid.as_str(),
        "signed with the new key"
    );
    // The gate's key set is fresh but lacks the kid: one refetch, rate-limited
    // to once per jwks_refresh_min_interval_secs (1 s of the gate's clock).
    h.advance_secs(1);
    accepted(&h, &second, "rot-2").await;
    accepted(&h, &first, "rot-1-still").await;

    // A second rotation drops the first key from the provider's JWKS: once the
    // gate's cached set has aged out (jwks_max_age_secs), its tokens are refused.
    let third_kid = p.rotate(&http).await;
    let third = p
        .token(&http, &d, "tg-events", scope, "urn:triage-gate")
        .await;
    assert_eq!(parts(&third).0["kid"], third_kid.as_str());
    h.advance_secs(JWKS_MAX_AGE_SECS + 1);
    accepted(&h, &third, "rot-3").await;
    accepted(&h, &second, "rot-2-still").await;
    refused(&h, &first, "rot-1-retired", 401, "unknown_key").await;
}
