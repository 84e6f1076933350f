//! The signed-webhook receiver over real HTTP: a good signature is accepted;
//! a tampered body, an old timestamp, a wrong secret, a missing header and a
//! replay are refused.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use common::{json, start};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use triage_gate_sandbox::Refusal;

const SECRET: &str = "whsec-sandbox-0123456789abcdef0123456789";

fn sign(secret: &str, ts: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    ts: Option<i64>,
    sig: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut req = c
        .post(url)
        .header("content-type", "application/json")
        .header("x-triagegate-delivery", "tg:run_1:mim:mim-bot")
        .body(body.to_owned());
    if let Some(ts) = ts {
        req = req.header("x-triagegate-timestamp", ts.to_string());
    }
    if let Some(sig) = sig {
        req = req.header("x-triagegate-signature", sig);
    }
    json(req.send().await.unwrap()).await
}

#[tokio::test]
async fn good_signatures_are_accepted_and_everything_else_is_refused() {
    let (sb, c) = start().await;
    let url = sb.signed_webhook_url("mim-bot", SECRET);
    let now = chrono::Utc::now().timestamp();
    let body = r#"{"type":"major_incident.proposed","run_id":"run_1"}"#;

    let (status, answer) = post(&c, &url, Some(now), Some(&sign(SECRET, now, body)), body).await;
    assert_eq!(status, 200, "{answer}");
    let got = sb.state().signed_deliveries();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "mim-bot");
    assert_eq!(got[0].timestamp, now);
    assert_eq!(got[0].body["run_id"], "run_1");
    assert_eq!(got[0].delivery_id.as_deref(), Some("tg:run_1:mim:mim-bot"));

    // Several signatures (a secret rotation): any valid v1 passes.
    let t2 = now - 1;
    let both = format!("v1={},{}", "00".repeat(32), sign(SECRET, t2, body));
    assert_eq!(post(&c, &url, Some(t2), Some(&both), body).await.0, 200);

    let tampered = body.replace("run_1", "run_2");
    let cases = [
        // The body changed after signing.
        (
            Some(now),
            Some(sign(SECRET, now, body)),
            tampered.clone(),
            401,
        ),
        // Signed with another secret.
        (
            Some(now),
            Some(sign("whsec-someone-else-0000000000000000", now, body)),
            body.to_owned(),
            401,
        ),
        // Older than the 300 s window (and validly signed for that time).
        (
            Some(now - 301),
            Some(sign(SECRET, now - 301, body)),
            body.to_owned(),
            401,
        ),
        // From the future beyond the window.
        (
            Some(now + 301),
            Some(sign(SECRET, now + 301, body)),
            body.to_owned(),
            401,
        ),
        // The timestamp header says another time than the one signed.
        (
            Some(now - 2),
            Some(sign(SECRET, now, body)),
            body.to_owned(),
            401,
        ),
        // Headers missing or malformed.
        (None, Some(sign(SECRET, now, body)), body.to_owned(), 401),
        (Some(now), None, body.to_owned(), 401),
        (
            Some(now),
            Some("sha256=abcd".to_owned()),
            body.to_owned(),
            401,
        ),
        // An exact replay of the accepted delivery.
        (
            Some(now),
            Some(sign(SECRET, now, body)),
            body.to_owned(),
            409,
        ),
    ];
    for (i, (ts, sig, b, want)) in cases.into_iter().enumerate() {
        let (status, answer) = post(&c, &url, ts, sig.as_deref(), &b).await;
        assert_eq!(status, want, "case {i}: {answer}");
        assert!(answer["error"].is_string(), "case {i}: {answer}");
    }
    assert_eq!(
        sb.state().signed_deliveries().len(),
        2,
        "no refused delivery is recorded"
    );
    let refusals = sb.state().signed_refusals();
    assert_eq!(refusals[&Refusal::BadSignature], 3);
    assert_eq!(refusals[&Refusal::StaleTimestamp], 2);
    assert_eq!(refusals[&Refusal::MissingTimestamp], 1);
    assert_eq!(refusals[&Refusal::MissingSignature], 2);
    assert_eq!(refusals[&Refusal::Replayed], 1);

    // An unknown receiver is 404; the receiver shares the bridge's fault injection.
    let other = format!("{}/bridge/signed/nobody", sb.base_url());
    assert_eq!(
        post(&c, &other, Some(now), Some(&sign(SECRET, now, body)), body)
            .await
            .0,
        404
    );
    sb.state()
        .inject_fault(triage_gate_sandbox::FaultSpec {
            target: "bridge".into(),
            status: Some(503),
            count: 1,
            retry_after_secs: None,
            delay_ms: None,
        })
        .unwrap();
    let t3 = now - 3;
    assert_eq!(
        post(&c, &url, Some(t3), Some(&sign(SECRET, t3, body)), body)
            .await
            .0,
        503
    );
    assert_eq!(sb.state().signed_deliveries().len(), 2);
}
