//! Signed inbound webhooks over real HTTP: a sender that cannot present a
//! bearer JWT signs `"<timestamp>.<body>"` with HMAC-SHA256. Unsigned, tampered,
//! stale and replayed deliveries are refused with problem+json and create no
//! run; a good one is accepted and its run names the sender.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Harness, INBOUND_WEBHOOK_SECRET};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use triage_gate_server::Clock as _;

fn sign(secret: &str, ts: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post(h: &Harness, body: &[u8], sig: Option<(&str, i64)>) -> (u16, Value, String) {
    let mut req = h
        .http
        .post(format!("{}/v1/events/generic", h.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some((s, ts)) = sig {
        req = req
            .header("x-triagegate-signature", s)
            .header("x-triagegate-timestamp", ts.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, resp.json().await.unwrap_or(Value::Null), ct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_fresh_valid_signature_is_accepted_once_and_names_the_sender() {
    let config = common::CONFIG.replace(
        "storm:\n",
        "identity:\n  inbound:\n    webhooks:\n      - name: apm-prod\n        secret: { env: INBOUND_WEBHOOK_SECRET }\n        sources: [generic]\nstorm:\n",
    );
    let h = Harness::start_with(&config).await;
    let now = h.clock.now().timestamp();
    let body = serde_json::to_vec(&json!({
        "service": "checkout", "alert_name": "ErrorRate", "summary": "checkout 5xx above 5%",
        "source_system": "apm", "environment": "production", "severity": "low", "status": "firing"
    }))
    .unwrap();
    let good = sign(INBOUND_WEBHOOK_SECRET, now, &body);

    let refused = [
        (
            "unsigned",
            post(&h, &body, None).await,
            401,
            "signature_missing",
        ),
        (
            "tampered body",
            post(&h, br#"{"service":"checkout"}"#, Some((&good, now))).await,
            401,
            "signature_invalid",
        ),
        (
            "wrong secret",
            post(
                &h,
                &body,
                Some((&sign("not-the-secret-not-the-secret-0000", now, &body), now)),
            )
            .await,
            401,
            "signature_invalid",
        ),
        (
            "stale",
            post(
                &h,
                &body,
                Some((&sign(INBOUND_WEBHOOK_SECRET, now - 301, &body), now - 301)),
            )
            .await,
            401,
            "signature_stale",
        ),
        (
            "timestamp moved",
            post(&h, &body, Some((&good, now - 1))).await,
            401,
            "signature_invalid",
        ),
    ];
    for (case, (status, problem, ct), want, code) in &refused {
        assert_eq!(status, want, "{case}: {problem}");
        assert_eq!(ct, "application/problem+json", "{case}");
        assert_eq!(problem["field"], *code, "{case}: {problem}");
        assert!(
            !problem.to_string().contains(INBOUND_WEBHOOK_SECRET),
            "{case}: the secret leaked"
        );
    }

    let (status, answer, _) = post(&h, &body, Some((&good, now))).await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["runs"][0]["run_id"].as_str().unwrap().to_owned();
    let run = h.wait_completed(&run_id).await;
    assert_eq!(run["submitted_by"], "webhook:apm-prod", "{run}");

    // The same delivery again is a replay.
    let (status, problem, _) = post(&h, &body, Some((&good, now))).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["field"], "signature_replayed");

    // Only the one accepted delivery made a run.
    assert_eq!(h.runs_total().await, 1);
}

const WEBHOOK_CONFIG: &str = "identity:\n  inbound:\n    webhooks:\n      - name: apm-prod\n        secret: { env: INBOUND_WEBHOOK_SECRET }\n        sources: [generic]\nstorm:\n";

fn apm_body(alert: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "service": "checkout", "alert_name": alert, "summary": "checkout 5xx above 5%",
        "source_system": "apm", "environment": "production", "severity": "low", "status": "firing"
    }))
    .unwrap()
}

async fn post_to(
    h: &Harness,
    base: &str,
    path: &str,
    body: &[u8],
    sig: &str,
    ts: i64,
) -> (u16, Value) {
    let resp = h
        .http
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .header("x-triagegate-signature", sig)
        .header("x-triagegate-timestamp", ts.to_string())
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Issue 21 items 1 and 2: a delivery is accepted once inside its window,
/// whatever the case of its hex signature, and also by another replica or
/// after a restart (the replay memory is the store's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_accepted_once_whatever_its_hex_case_and_whichever_replica() {
    let config = common::CONFIG.replace("storm:\n", WEBHOOK_CONFIG);
    let h = Harness::start_with(&config).await;
    let now = h.clock.now().timestamp();
    let body = apm_body("ReplayDrill");
    let sig = sign(INBOUND_WEBHOOK_SECRET, now, &body);
    let path = "/v1/events/generic";
    let (status, answer) = post_to(&h, &h.base, path, &body, &sig, now).await;
    assert_eq!(status, 202, "{answer}");
    let upper = format!("v1={}", sig.trim_start_matches("v1=").to_uppercase());
    let (status, problem) = post_to(&h, &h.base, path, &body, &upper, now).await;
    assert_eq!(status, 409, "the upper-case copy was accepted: {problem}");
    assert_eq!(problem["field"], "signature_replayed");

    let other = h.second_gate(&config).await;
    let other_base = format!("http://{}", other.addr);
    for s in [&sig, &upper] {
        let (status, problem) = post_to(&h, &other_base, path, &body, s, now).await;
        assert_eq!(status, 409, "another replica accepted a replay: {problem}");
    }
    assert_eq!(h.runs_total().await, 1, "one delivery, one run");

    // Past the window the key is pruned, and a fresh delivery is accepted.
    h.advance_secs(301);
    let later = h.clock.now().timestamp();
    let fresh = sign(INBOUND_WEBHOOK_SECRET, later, &body);
    let (status, answer) = post_to(&h, &other_base, path, &body, &fresh, later).await;
    assert_eq!(status, 202, "{answer}");
    other.shutdown(std::time::Duration::from_secs(5)).await;
}

/// Issue 21 item 3: the path authorized is the path routed; an encoded
/// segment cannot reach a signed source unsigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_path_cannot_reach_a_signed_source_unsigned() {
    let config = common::CONFIG.replace(
        "storm:\n",
        &WEBHOOK_CONFIG.replace(
            "identity:\n  inbound:\n",
            "identity:\n  inbound:\n    mode: none\n    insecure_allow_anonymous: true\n",
        ),
    );
    let h = Harness::start_with(&config).await;
    let body = apm_body("EncodedPath");
    for path in [
        "/v1/events/gen%65ric",
        "/v1/events/%67eneric",
        "/v1%2Fevents/generic",
    ] {
        let resp = h
            .http
            .post(format!("{}{path}", h.base))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let problem: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 400, "{path}: {problem}");
    }
    let (status, _, _) = post(&h, &body, None).await;
    assert_eq!(status, 401, "the plain path still needs its signature");
    assert_eq!(h.runs_total().await, 0);
}

/// Issue 21 item 9: a v2 signature binds the route; a sender configured for
/// v2 only refuses v1, and a `+<ts>` timestamp is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_signatures_bind_the_route_and_timestamps_are_canonical() {
    let config = common::CONFIG.replace(
        "storm:\n",
        &WEBHOOK_CONFIG.replace(
            "sources: [generic]\n",
            "sources: [generic]\n        signature_versions: [v2]\n",
        ),
    );
    let h = Harness::start_with(&config).await;
    let now = h.clock.now().timestamp();
    let body = apm_body("V2Drill");
    let v2 = |path: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(INBOUND_WEBHOOK_SECRET.as_bytes()).unwrap();
        mac.update(format!("v2\nPOST\n{path}\n{now}\n").as_bytes());
        mac.update(&body);
        format!("v2={}", hex::encode(mac.finalize().into_bytes()))
    };
    let path = "/v1/events/generic";
    let (status, problem) = post_to(
        &h,
        &h.base,
        path,
        &body,
        &sign(INBOUND_WEBHOOK_SECRET, now, &body),
        now,
    )
    .await;
    assert_eq!(status, 401, "v1 from a v2-only sender: {problem}");
    let (status, problem) = post_to(&h, &h.base, path, &body, &v2("/v1/events/splunk"), now).await;
    assert_eq!(status, 401, "a v2 signature for another route: {problem}");
    let resp = h
        .http
        .post(format!("{}{path}", h.base))
        .header("x-triagegate-signature", v2(path))
        .header("x-triagegate-timestamp", format!("+{now}"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "a +<ts> timestamp");
    let (status, answer) = post_to(&h, &h.base, path, &body, &v2(path), now).await;
    assert_eq!(status, 202, "{answer}");
}
