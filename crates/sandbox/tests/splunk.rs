//! The Splunk HEC emulator over real HTTP: tokens, concatenated events,
//! per-event errors, indexer acknowledgement, faults.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use common::{control, json, start};
use serde_json::{Value, json};
use triage_gate_sandbox::{DEFAULT_SPLUNK_HEC_TOKEN, Sandbox};

const CHANNEL: &str = "8d3f0c1e-5b7a-4c2d-9e1f-0a1b2c3d4e5f";

async fn post(
    c: &reqwest::Client,
    sb: &Sandbox,
    auth: Option<&str>,
    channel: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut req = c
        .post(format!("{}/services/collector/event", sb.splunk_url()))
        .body(body.to_owned());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(ch) = channel {
        req = req.header("x-splunk-request-channel", ch);
    }
    json(req.send().await.unwrap()).await
}

fn auth() -> String {
    format!("Splunk {DEFAULT_SPLUNK_HEC_TOKEN}")
}

#[tokio::test]
async fn tokens_are_checked_with_hec_codes() {
    let (sb, c) = start().await;
    let ev = r#"{"event":{"a":1}}"#;
    assert_eq!(
        post(&c, &sb, None, None, ev).await,
        (401, json!({"text": "Token is required", "code": 2}))
    );
    assert_eq!(post(&c, &sb, Some("Bearer x"), None, ev).await.1["code"], 3);
    assert_eq!(
        post(&c, &sb, Some("Splunk wrong"), None, ev).await,
        (403, json!({"text": "Invalid token", "code": 4}))
    );
    let basic = format!(
        "Basic {}",
        base64_encode(&format!("x:{DEFAULT_SPLUNK_HEC_TOKEN}"))
    );
    assert_eq!(post(&c, &sb, Some(&basic), None, ev).await.0, 200);
    assert_eq!(sb.state().splunk_events().len(), 1);
    let recorded = sb.state().requests(triage_gate_sandbox::Target::Splunk);
    assert!(
        recorded
            .iter()
            .all(|r| !format!("{r:?}").contains(DEFAULT_SPLUNK_HEC_TOKEN)),
        "the token never reaches a recording"
    );
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn a_bad_event_refuses_the_whole_batch_naming_it() {
    let (sb, c) = start().await;
    let a = auth();
    let cases = [
        ("", 400, 5, None),
        ("  \n", 400, 5, None),
        (r#"{"event":1}{"time":2}"#, 400, 12, Some(1)),
        (r#"{"event":1}{"event":"  "}"#, 400, 13, Some(1)),
        (r#"{"event":1}{"event":2"#, 400, 6, Some(1)),
        (r#"[{"event":1}]"#, 400, 6, Some(0)),
        (r#"{"event":1,"fields":{"x":{"y":1}}}"#, 400, 15, Some(0)),
        (r#"{"event":1,"time":"noon"}"#, 400, 6, Some(0)),
    ];
    for (body, status, code, invalid) in cases {
        let (s, b) = post(&c, &sb, Some(&a), None, body).await;
        assert_eq!((s, b["code"].as_u64()), (status, Some(code)), "{body}: {b}");
        assert_eq!(
            b.get("invalid-event-number").and_then(Value::as_u64),
            invalid,
            "{body}"
        );
    }
    assert!(sb.state().splunk_events().is_empty(), "nothing indexed");
    sb.state()
        .splunk_allow_indexes(Some(vec!["audit".to_owned()]));
    let (s, b) = post(
        &c,
        &sb,
        Some(&a),
        None,
        r#"{"event":1,"index":"audit"} {"event":2,"index":"main"}"#,
    )
    .await;
    assert_eq!(
        (s, &b["code"], &b["invalid-event-number"]),
        (400, &json!(7), &json!(1))
    );
    let batch = r#"{"time":1785578400.123,"host":"h","source":"s","sourcetype":"st","index":"audit","event":{"seq":1},"fields":{"seq":"1","tags":["a","b"]}}
{"event":{"seq":2},"index":"audit"}{"event":"three","index":"audit"}"#;
    assert_eq!(
        post(&c, &sb, Some(&a), None, batch).await,
        (200, json!({"text": "Success", "code": 0}))
    );
    let events = sb.state().splunk_events();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].event, json!({"seq": 1}));
    assert_eq!(events[0].time, Some(1_785_578_400.123));
    assert_eq!(events[0].fields["tags"], json!(["a", "b"]));
    assert_eq!(events[2].event, json!("three"));
    let (s, read) = json(
        c.get(format!("{}/_sandbox/splunk/events", sb.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(read.as_array().unwrap().len(), 3);
    assert_eq!(read[1]["event"]["seq"], 2);
}

#[tokio::test]
async fn indexer_acknowledgement_needs_a_channel_and_answers_per_id() {
    let (sb, c) = start().await;
    let a = auth();
    let ack = |channel: Option<&str>, ids: Value| {
        let mut req = c
            .post(format!("{}/services/collector/ack", sb.splunk_url()))
            .header("authorization", a.clone())
            .json(&json!({ "acks": ids }));
        if let Some(ch) = channel {
            req = req.header("x-splunk-request-channel", ch.to_owned());
        }
        req.send()
    };
    assert_eq!(
        json(ack(Some(CHANNEL), json!([0])).await.unwrap()).await.1["code"],
        14
    );
    assert_eq!(
        control(&c, &sb, "splunk/settings", json!({"ack": true})).await,
        204
    );
    let ev = r#"{"event":{"a":1}}"#;
    assert_eq!(post(&c, &sb, Some(&a), None, ev).await.1["code"], 10);
    assert_eq!(
        post(&c, &sb, Some(&a), Some("not-a-guid"), ev).await.1["code"],
        11
    );
    let first = post(&c, &sb, Some(&a), Some(CHANNEL), ev).await;
    assert_eq!(
        first,
        (200, json!({"text": "Success", "code": 0, "ackId": 0}))
    );
    sb.state().splunk_hold_acks(true);
    assert_eq!(
        post(&c, &sb, Some(&a), Some(CHANNEL), ev).await.1["ackId"],
        1
    );
    let (s, b) = json(ack(Some(CHANNEL), json!([0, 1, 9])).await.unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(b, json!({"acks": {"0": true, "1": false, "9": false}}));
    sb.state().splunk_hold_acks(false);
    let (_, b) = json(ack(Some(CHANNEL), json!([1])).await.unwrap()).await;
    assert_eq!(b, json!({"acks": {"1": true}}));
    assert_eq!(
        json(ack(None, json!([1])).await.unwrap()).await.1["code"],
        10
    );
    let other = "00000000-0000-4000-8000-000000000000";
    assert_eq!(
        json(ack(Some(other), json!([1])).await.unwrap()).await.1["code"],
        11
    );
    let events = sb.state().splunk_events();
    assert_eq!(
        events.iter().map(|e| e.ack_id).collect::<Vec<_>>(),
        [Some(0), Some(1)]
    );
}

#[tokio::test]
async fn down_means_server_busy_and_up_again_indexes() {
    let (sb, c) = start().await;
    let a = auth();
    assert_eq!(
        control(
            &c,
            &sb,
            "faults/outage",
            json!({"target": "splunk", "down_for_ms": 60_000, "retry_after_secs": 3})
        )
        .await,
        204
    );
    let resp = c
        .post(format!("{}/services/collector/event", sb.splunk_url()))
        .header("authorization", a.clone())
        .body(r#"{"event":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_eq!(
        json(resp).await,
        (503, json!({"text": "Server is busy", "code": 9}))
    );
    assert!(sb.state().splunk_events().is_empty());
    let cleared = c
        .delete(format!("{}/_sandbox/faults", sb.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    assert_eq!(post(&c, &sb, Some(&a), None, r#"{"event":1}"#).await.0, 200);
    // In doubt: indexed, but the answer never comes.
    sb.state().splunk_drop_after_index(1);
    let dropped = c
        .post(format!("{}/services/collector/event", sb.splunk_url()))
        .header("authorization", a.clone())
        .body(r#"{"event":2}"#)
        .send()
        .await;
    assert!(dropped.is_err(), "{dropped:?}");
    assert_eq!(sb.state().splunk_events().len(), 2);
    let (s, h) = json(
        c.get(format!("{}/services/collector/health", sb.splunk_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, h["code"].as_u64()), (200, Some(17)));
}
