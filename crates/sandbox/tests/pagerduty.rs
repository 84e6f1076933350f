//! PagerDuty Events API v2 emulator over real HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use common::{ROUTING_KEY, json, start};
use serde_json::{Value, json};
use triage_gate_sandbox::AlertStatus;

async fn enqueue(c: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    json(
        c.post(format!("{url}/v2/enqueue"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn trigger(dedup: Option<&str>) -> Value {
    let mut e = json!({
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "payload": {"summary": "checkout latency", "source": "checkout.prod", "severity": "critical",
                    "timestamp": "2015-07-17T08:42:58.315+0000"},
    });
    if let Some(d) = dedup {
        e["dedup_key"] = json!(d);
    }
    e
}

/// The 202 schema of PagerDuty's published OpenAPI document (copied from /work/shared/reference/specs).
fn success_schema() -> Value {
    let spec: Value =
        serde_json::from_str(include_str!("fixtures/pagerduty-events-v2.openapi.json")).unwrap();
    spec["components"]["responses"]["Success"]["content"]["application/json"]["schema"].clone()
}

#[tokio::test]
async fn trigger_answers_202_matching_the_openapi_schema() {
    let (sb, c) = start().await;
    let (status, body) = enqueue(&c, &sb.pagerduty_url(), trigger(Some("am:prod:1"))).await;
    assert_eq!(status, 202);
    assert_eq!(
        body,
        json!({"status": "success", "message": "Event processed", "dedup_key": "am:prod:1"})
    );
    let schema = success_schema();
    assert!(schema["required"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(jsonschema::is_valid(&schema, &body));

    // Without a dedup_key PagerDuty generates one and returns it.
    let (status, body) = enqueue(&c, &sb.pagerduty_url(), trigger(None)).await;
    assert_eq!(status, 202);
    let key = body["dedup_key"].as_str().unwrap();
    assert_eq!(key.len(), 32);
    let alerts = sb.state().pagerduty_alerts();
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[1].dedup_key, key);
    assert_eq!(alerts[0].routing_key.expose(), ROUTING_KEY);
    assert_eq!(alerts[0].first_payload["summary"], "checkout latency");
}

#[tokio::test]
async fn invalid_events_are_refused_with_pagerduty_errors() {
    let (sb, c) = start().await;
    let url = sb.pagerduty_url();
    let cases: Vec<(Value, &str)> = vec![
        (
            {
                let mut e = trigger(None);
                e["routing_key"] = json!("0123456789abcdef0123456789abcde");
                e
            },
            "routing_key",
        ),
        (
            {
                let mut e = trigger(None);
                e["event_action"] = json!("escalate");
                e
            },
            "event_action",
        ),
        (
            {
                let mut e = trigger(None);
                e["payload"]["summary"] = json!("x".repeat(1025));
                e
            },
            "payload.summary",
        ),
        (
            {
                let mut e = trigger(None);
                e["payload"].as_object_mut().unwrap().remove("source");
                e
            },
            "payload.source",
        ),
        (
            {
                let mut e = trigger(None);
                e["payload"]["severity"] = json!("sev1");
                e
            },
            "payload.severity",
        ),
        (
            {
                let mut e = trigger(None);
                e.as_object_mut().unwrap().remove("payload");
                e
            },
            "payload",
        ),
        (trigger(Some(&"k".repeat(256))), "dedup_key"),
        (
            json!({"routing_key": ROUTING_KEY, "event_action": "resolve"}),
            "dedup_key",
        ),
        (
            json!({"routing_key": ROUTING_KEY, "event_action": "acknowledge"}),
            "dedup_key",
        ),
    ];
    for (event, field) in cases {
        let (status, body) = enqueue(&c, &url, event.clone()).await;
        assert_eq!(status, 400, "{event}");
        assert_eq!(body["status"], "invalid event");
        assert_eq!(body["message"], "Event object is invalid");
        let errors = body["errors"].as_array().unwrap();
        assert!(
            errors.iter().any(|e| e.as_str().unwrap().contains(field)),
            "{field}: {body}"
        );
    }
    // Exactly at the limits is fine.
    let mut ok = trigger(Some(&"k".repeat(255)));
    ok["payload"]["summary"] = json!("s".repeat(1024));
    assert_eq!(enqueue(&c, &url, ok).await.0, 202);

    let resp = c
        .post(format!("{url}/v2/enqueue"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, body) = json(resp).await;
    assert_eq!(status, 400);
    assert_eq!(body["status"], "Unrecognized object");
    assert_eq!(sb.state().pagerduty_alerts().len(), 1);
}

#[tokio::test]
async fn triggers_merge_resolve_closes_and_retrigger_opens_anew() {
    let (sb, c) = start().await;
    let url = sb.pagerduty_url();
    assert_eq!(enqueue(&c, &url, trigger(Some("k1"))).await.0, 202);
    assert_eq!(enqueue(&c, &url, trigger(Some("k1"))).await.0, 202);
    let alerts = sb.state().pagerduty_alerts();
    assert_eq!(alerts.len(), 1, "a trigger on an open alert merges");
    assert_eq!(alerts[0].trigger_count, 2);

    // Acknowledge/resolve through another integration key is dropped.
    let other = "ffffffffffffffffffffffffffffffff";
    let (s, _) = enqueue(
        &c,
        &url,
        json!({"routing_key": other, "event_action": "resolve", "dedup_key": "k1"}),
    )
    .await;
    assert_eq!(s, 202);
    assert_eq!(
        sb.state().pagerduty_alerts()[0].status,
        AlertStatus::Triggered
    );

    let ack = json!({"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": "k1"});
    assert_eq!(enqueue(&c, &url, ack).await.0, 202);
    assert_eq!(
        sb.state().pagerduty_alerts()[0].status,
        AlertStatus::Acknowledged
    );

    let resolve = json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "k1"});
    assert_eq!(enqueue(&c, &url, resolve.clone()).await.0, 202);
    assert_eq!(
        sb.state().pagerduty_alerts()[0].status,
        AlertStatus::Resolved
    );
    // A late resolve is accepted and changes nothing.
    assert_eq!(enqueue(&c, &url, resolve).await.0, 202);

    assert_eq!(enqueue(&c, &url, trigger(Some("k1"))).await.0, 202);
    let alerts = sb.state().pagerduty_alerts();
    assert_eq!(alerts.len(), 2, "a trigger after resolve opens a new alert");
    assert_eq!(alerts[1].status, AlertStatus::Triggered);
    assert_eq!(alerts[1].trigger_count, 1);

    // The control API shows alerts with the routing key redacted.
    let (_, listed) = json(
        c.get(format!("{}/_sandbox/pagerduty/alerts", sb.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["routing_key"], "[redacted]");
    assert_eq!(listed[0]["trigger_count"], 2);
}
