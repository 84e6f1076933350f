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
    let store = &h.gate.as_ref().unwrap().state.store;
    let total: i64 = store
        .count_by_status()
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(total, 1);
}
