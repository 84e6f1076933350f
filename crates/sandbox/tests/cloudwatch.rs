//! The CloudWatch Logs emulator over real HTTP: SigV4, resources, every
//! `PutLogEvents` batch rule, individually rejected events.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use common::{control, json, start};
use serde_json::{Value, json};
use triage_gate_sandbox::{
    DEFAULT_BEDROCK_ACCESS_KEY_ID, DEFAULT_BEDROCK_SECRET_ACCESS_KEY, Sandbox,
};

const GROUP: &str = "/triage-gate/audit";
const STREAM: &str = "prod-1";
const PUT: &str = "Logs_20140328.PutLogEvents";

/// A signed call (service `service`, secret `secret`).
async fn call_as(
    c: &reqwest::Client,
    sb: &Sandbox,
    target: &str,
    body: &Value,
    service: &str,
    secret: &str,
) -> (u16, Value) {
    let url = format!("{}/", sb.cloudwatch_url());
    let bytes = serde_json::to_vec(body).unwrap();
    let identity: Identity =
        Credentials::new(DEFAULT_BEDROCK_ACCESS_KEY_ID, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target),
    ];
    let req = SignableRequest::new(
        "POST",
        url.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(&bytes),
    )
    .unwrap();
    let (instructions, _) = sign(req, &params).unwrap().into_parts();
    let mut r = c.post(&url).body(bytes.clone());
    for (k, v) in headers {
        r = r.header(k, v);
    }
    for (k, v) in instructions.headers() {
        r = r.header(k, v);
    }
    json(r.send().await.unwrap()).await
}

async fn call(c: &reqwest::Client, sb: &Sandbox, target: &str, body: &Value) -> (u16, Value) {
    call_as(
        c,
        sb,
        target,
        body,
        "logs",
        DEFAULT_BEDROCK_SECRET_ACCESS_KEY,
    )
    .await
}

fn put(events: Vec<Value>) -> Value {
    json!({"logGroupName": GROUP, "logStreamName": STREAM, "logEvents": events})
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn only_correctly_signed_requests_for_logs_get_in() {
    let (sb, c) = start().await;
    sb.state().cloudwatch_create_log_stream(GROUP, STREAM);
    let body = put(vec![json!({"timestamp": now_ms(), "message": "m"})]);
    let (s, b) = json(
        c.post(format!("{}/", sb.cloudwatch_url()))
            .header("x-amz-target", PUT)
            .header("content-type", "application/x-amz-json-1.1")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["__type"].as_str()),
        (400, Some("MissingAuthenticationTokenException"))
    );
    let (s, b) = call_as(&c, &sb, PUT, &body, "logs", "wrong/secret").await;
    assert_eq!(
        (s, b["__type"].as_str()),
        (400, Some("InvalidSignatureException")),
        "{b}"
    );
    let (s, b) = call_as(
        &c,
        &sb,
        PUT,
        &body,
        "bedrock",
        DEFAULT_BEDROCK_SECRET_ACCESS_KEY,
    )
    .await;
    assert_eq!(
        (s, b["__type"].as_str()),
        (400, Some("InvalidSignatureException")),
        "{b}"
    );
    assert!(sb.state().cloudwatch_events().is_empty());
    assert_eq!(call(&c, &sb, PUT, &body).await.0, 200);
    assert_eq!(sb.state().cloudwatch_events().len(), 1);
    let (s, b) = call(&c, &sb, "Logs_20140328.DeleteLogGroup", &json!({})).await;
    assert_eq!(
        (s, b["__type"].as_str()),
        (400, Some("UnknownOperationException"))
    );
}

#[tokio::test]
async fn group_and_stream_must_exist_and_streams_can_be_created() {
    let (sb, c) = start().await;
    let body = put(vec![json!({"timestamp": now_ms(), "message": "m"})]);
    let (s, b) = call(&c, &sb, PUT, &body).await;
    assert_eq!(
        (s, b["__type"].as_str()),
        (400, Some("ResourceNotFoundException"))
    );
    assert_eq!(b["message"], "The specified log group does not exist.");
    assert_eq!(
        control(
            &c,
            &sb,
            "cloudwatch/streams",
            json!({"log_group_name": GROUP})
        )
        .await,
        204
    );
    let (_, b) = call(&c, &sb, PUT, &body).await;
    assert_eq!(b["message"], "The specified log stream does not exist.");
    let create = json!({"logGroupName": GROUP, "logStreamName": STREAM});
    assert_eq!(
        call(&c, &sb, "Logs_20140328.CreateLogStream", &create).await,
        (200, json!({}))
    );
    let (s, b) = call(&c, &sb, "Logs_20140328.CreateLogStream", &create).await;
    assert_eq!(
        (s, b["__type"].as_str()),
        (400, Some("ResourceAlreadyExistsException"))
    );
    let (s, b) = call(&c, &sb, PUT, &body).await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get("rejectedLogEventsInfo").is_none());
}

#[tokio::test]
async fn every_batch_rule_is_enforced() {
    let (sb, c) = start().await;
    sb.state().cloudwatch_create_log_stream(GROUP, STREAM);
    let t = now_ms();
    let ev = |ts: i64, m: &str| json!({"timestamp": ts, "message": m});
    let invalid = |b: &Value| b["__type"] == "InvalidParameterException";
    // count
    let (s, b) = call(&c, &sb, PUT, &put(vec![])).await;
    assert!(s == 400 && invalid(&b), "{b}");
    let many: Vec<Value> = (0..10_001).map(|_| ev(t, "x")).collect();
    let (s, b) = call(&c, &sb, PUT, &put(many)).await;
    assert!(s == 400 && invalid(&b), "{b}");
    let most: Vec<Value> = (0..10_000).map(|_| ev(t, "x")).collect();
    assert_eq!(call(&c, &sb, PUT, &put(most)).await.0, 200);
    // bytes: messages + 26 each, 1,048,576 at most
    let exact = "y".repeat(1_048_576 - 2 * 26 - 10);
    let (s, b) = call(&c, &sb, PUT, &put(vec![ev(t, &exact), ev(t, "0123456789")])).await;
    assert_eq!(s, 200, "exactly the limit is accepted: {b}");
    let (s, b) = call(
        &c,
        &sb,
        PUT,
        &put(vec![ev(t, &exact), ev(t, "0123456789X")]),
    )
    .await;
    assert!(s == 400 && invalid(&b), "one byte over: {b}");
    assert!(b["message"].as_str().unwrap().contains("1048577"), "{b}");
    // order, span, empty message, negative timestamp
    let (s, b) = call(&c, &sb, PUT, &put(vec![ev(t, "b"), ev(t - 1, "a")])).await;
    assert!(s == 400 && invalid(&b), "{b}");
    assert!(b["message"].as_str().unwrap().contains("chronological"));
    let day = 24 * 3600 * 1000;
    let (s, b) = call(&c, &sb, PUT, &put(vec![ev(t - day - 1, "a"), ev(t, "b")])).await;
    assert!(s == 400 && invalid(&b), "{b}");
    assert!(b["message"].as_str().unwrap().contains("24 hours"));
    let (s, b) = call(&c, &sb, PUT, &put(vec![ev(t, "")])).await;
    assert!(s == 400 && invalid(&b), "{b}");
    let (s, _) = call(&c, &sb, PUT, &put(vec![ev(-1, "a")])).await;
    assert_eq!(s, 400);
    assert_eq!(
        sb.state().cloudwatch_events().len(),
        10_002,
        "only accepted batches stored"
    );
}

#[tokio::test]
async fn too_new_and_too_old_events_are_rejected_alone() {
    let (sb, c) = start().await;
    sb.state().cloudwatch_create_log_stream(GROUP, STREAM);
    let t = now_ms();
    let old = t - 15 * 24 * 3600 * 1000;
    let future = t + 3 * 3600 * 1000;
    let body = put(vec![
        json!({"timestamp": old, "message": "old"}),
        json!({"timestamp": t, "message": "ok-1"}),
        json!({"timestamp": t + 1, "message": "ok-2"}),
        json!({"timestamp": future, "message": "new"}),
    ]);
    let (s, b) = call(&c, &sb, PUT, &body).await;
    assert_eq!(s, 200);
    assert_eq!(
        b["rejectedLogEventsInfo"],
        json!({"tooOldLogEventEndIndex": 1, "tooNewLogEventStartIndex": 3})
    );
    let stored: Vec<String> = sb
        .state()
        .cloudwatch_events()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(stored, ["ok-1", "ok-2"]);
    let (s, read) = json(
        c.get(format!("{}/_sandbox/cloudwatch/events", sb.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, read[1]["message"].as_str()), (200, Some("ok-2")));
}
