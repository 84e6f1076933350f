//! The OTLP/HTTP logs receiver over real HTTP: shape validation, token,
//! partial success, faults.

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
use triage_gate_sandbox::Sandbox;

fn request(bodies: &[&str]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            json!({
                "timeUnixNano": format!("17855784001230000{i:02}"),
                "severityNumber": 9,
                "body": {"stringValue": b},
                "attributes": [{"key": "seq", "value": {"intValue": (i + 1).to_string()}}],
            })
        })
        .collect();
    json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "triage-gate"}}]},
        "scopeLogs": [{"scope": {"name": "triage-gate.audit"}, "logRecords": records}],
    }]})
}

async fn export(
    c: &reqwest::Client,
    sb: &Sandbox,
    body: &Value,
    token: Option<&str>,
) -> (u16, Value) {
    let mut r = c.post(format!("{}/v1/logs", sb.otlp_url())).json(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    json(r.send().await.unwrap()).await
}

#[tokio::test]
async fn valid_exports_are_kept_in_order() {
    let (sb, c) = start().await;
    assert_eq!(
        export(&c, &sb, &request(&["a", "b"]), None).await,
        (200, json!({}))
    );
    assert_eq!(export(&c, &sb, &request(&["c"]), None).await.0, 200);
    let recs = sb.state().otlp_records();
    let bodies: Vec<&str> = recs
        .iter()
        .map(|r| r.body["stringValue"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["a", "b", "c"]);
    assert_eq!(recs[0].time_unix_nano, "1785578400123000000");
    assert_eq!(recs[0].resource_attributes[0]["key"], "service.name");
    assert_eq!(recs[0].scope_name.as_deref(), Some("triage-gate.audit"));
    let (s, read) = json(
        c.get(format!("{}/_sandbox/otlp/logs", sb.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, read.as_array().map(Vec::len)), (200, Some(3)));
}

#[tokio::test]
async fn bad_shapes_are_refused_with_a_status() {
    let (sb, c) = start().await;
    let mut bad_time = request(&["a"]);
    bad_time["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["timeUnixNano"] = json!("-5");
    let mut two_members = request(&["a"]);
    two_members["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["body"] =
        json!({"stringValue": "a", "intValue": "1"});
    let mut no_key = request(&["a"]);
    no_key["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["attributes"] =
        json!([{"value": {"stringValue": "x"}}]);
    for (name, body) in [
        ("time", bad_time),
        ("anyvalue", two_members),
        ("key", no_key),
        ("list", json!({"resourceLogs": {}})),
    ] {
        let (s, b) = export(&c, &sb, &body, None).await;
        assert_eq!((s, b["code"].as_u64()), (400, Some(3)), "{name}: {b}");
    }
    let resp = c
        .post(format!("{}/v1/logs", sb.otlp_url()))
        .header("content-type", "application/x-protobuf")
        .body(vec![0u8, 1, 2])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert!(sb.state().otlp_records().is_empty());
}

#[tokio::test]
async fn token_partial_success_and_outage() {
    let (sb, c) = start().await;
    assert_eq!(
        control(&c, &sb, "otlp/settings", json!({"token": "otlp-secret-1"})).await,
        204
    );
    assert_eq!(export(&c, &sb, &request(&["a"]), None).await.0, 401);
    assert_eq!(export(&c, &sb, &request(&["a"]), Some("nope")).await.0, 401);
    assert_eq!(
        control(&c, &sb, "otlp/settings", json!({"reject_next": 1})).await,
        204
    );
    let (s, b) = export(&c, &sb, &request(&["a", "b"]), Some("otlp-secret-1")).await;
    assert_eq!(s, 200);
    assert_eq!(b["partialSuccess"]["rejectedLogRecords"], "1");
    assert_eq!(
        sb.state().otlp_records().len(),
        1,
        "the rejected one is not kept"
    );
    control(
        &c,
        &sb,
        "faults",
        json!({"target": "otlp", "status": 503, "count": 1, "retry_after_secs": 2}),
    )
    .await;
    let resp = c
        .post(format!("{}/v1/logs", sb.otlp_url()))
        .bearer_auth("otlp-secret-1")
        .json(&request(&["c"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["retry-after"], "2");
    let (s, b) = json(resp).await;
    assert_eq!((s, b["code"].as_u64()), (503, Some(14)));
    assert_eq!(
        export(&c, &sb, &request(&["c"]), Some("otlp-secret-1"))
            .await
            .0,
        200
    );
    assert_eq!(sb.state().otlp_records().len(), 2);
}
