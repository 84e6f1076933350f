//! Fault injection, recording with redaction, reset and shutdown, over real HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::{API_KEY, ROUTING_KEY, SN_TOKEN, control, json, start};
use serde_json::json;
use triage_gate_sandbox::{FaultSpec, SandboxConfig, Target};

#[tokio::test]
async fn servicenow_fault_is_a_rate_limit_with_its_headers_then_clears() {
    let (sb, c) = start().await;
    assert_eq!(
        control(
            &c,
            &sb,
            "faults",
            json!({"target": "servicenow", "status": 429, "count": 2, "retry_after_secs": 7})
        )
        .await,
        204
    );
    let url = format!("{}/api/now/table/incident", sb.servicenow_url());
    let post = || {
        c.post(&url)
            .bearer_auth(SN_TOKEN)
            .header("accept", "application/json")
            .json(&json!({"short_description": "x"}))
            .send()
    };
    for _ in 0..2 {
        let resp = post().await.unwrap();
        assert_eq!(resp.status(), 429);
        let h = resp.headers();
        assert_eq!(h["retry-after"], "7");
        for name in ["x-ratelimit-limit", "x-ratelimit-reset", "x-ratelimit-rule"] {
            assert!(h.contains_key(name), "{name}");
        }
        let (_, b) = json(resp).await;
        assert_eq!(b["status"], "failure");
        assert_eq!(b["error"]["message"], "Rate limit exceeded");
    }
    assert_eq!(post().await.unwrap().status(), 201);
    assert_eq!(
        sb.state().incidents().len(),
        1,
        "faulted requests create nothing"
    );
    let recs = sb.state().requests(Target::Servicenow);
    assert_eq!(
        recs.iter()
            .map(|r| (r.status, r.faulted))
            .collect::<Vec<_>>(),
        vec![(429, true), (429, true), (201, false)]
    );
}

#[tokio::test]
async fn faults_use_each_target_error_shape() {
    let (sb, c) = start().await;
    let st = sb.state();
    let fault = |target: &str, status: u16| FaultSpec {
        target: target.into(),
        status: Some(status),
        count: 1,
        retry_after_secs: Some(3),
        delay_ms: None,
    };
    st.inject_fault(fault("anthropic", 529)).unwrap();
    let resp = c
        .post(format!("{}/v1/messages", sb.anthropic_url()))
        .header("x-api-key", API_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 529);
    assert!(resp.headers().contains_key("request-id"));
    let (_, b) = json(resp).await;
    assert_eq!(b["type"], "error");
    assert_eq!(b["error"]["type"], "overloaded_error");

    st.inject_fault(fault("pagerduty", 429)).unwrap();
    let resp = c
        .post(format!("{}/v2/enqueue", sb.pagerduty_url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(
        !resp.headers().contains_key("retry-after"),
        "PagerDuty sends no Retry-After"
    );
    let (_, b) = json(resp).await;
    assert!(b["status"].is_string() && b["message"].is_string());

    st.inject_fault(fault("pagerduty", 503)).unwrap();
    let resp = c
        .post(format!("{}/v2/enqueue", sb.pagerduty_url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);

    st.inject_fault(fault("bridge", 429)).unwrap();
    let url = sb.slack_webhook_url("hook");
    let resp = c
        .post(&url)
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_eq!(resp.text().await.unwrap(), "rate_limited");
    assert!(st.bridge_posts().is_empty());

    // Invalid fault specs are refused with problem+json.
    let resp = c
        .post(format!("{}/_sandbox/faults", sb.base_url()))
        .json(&json!({"target": "jira", "status": 500, "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn delay_fault_trips_a_client_timeout() {
    let (sb, c) = start().await;
    sb.state()
        .inject_fault(FaultSpec {
            target: "pagerduty".into(),
            status: None,
            count: 1,
            retry_after_secs: None,
            delay_ms: Some(2_000),
        })
        .unwrap();
    let err = c
        .post(format!("{}/v2/enqueue", sb.pagerduty_url()))
        .timeout(Duration::from_millis(200))
        .json(&json!({}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
}

#[tokio::test]
async fn recordings_redact_every_secret() {
    let (sb, c) = start().await;
    let hook = "T9/B9/hook-secret-xyz";
    c.post(format!("{}/api/now/table/incident", sb.servicenow_url()))
        .bearer_auth(SN_TOKEN)
        .header("accept", "application/json")
        .json(&json!({"short_description": "x"}))
        .send()
        .await
        .unwrap();
    c.post(format!("{}/v2/enqueue", sb.pagerduty_url()))
        .json(
            &json!({"routing_key": ROUTING_KEY, "event_action": "trigger",
                      "payload": {"summary": "s", "source": "h", "severity": "info"}}),
        )
        .send()
        .await
        .unwrap();
    c.post(format!("{}/v1/messages", sb.anthropic_url()))
        .header("x-api-key", API_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    c.post(sb.slack_webhook_url(hook))
        .json(&json!({"text": "t"}))
        .send()
        .await
        .unwrap();

    let mut all = String::new();
    for target in ["servicenow", "pagerduty", "anthropic", "bridge"] {
        let (s, recs) = json(
            c.get(format!("{}/_sandbox/requests/{target}", sb.base_url()))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(recs.as_array().unwrap().len(), 1, "{target}");
        all.push_str(&recs.to_string());
    }
    for secret in [SN_TOKEN, API_KEY, ROUTING_KEY, hook] {
        assert!(
            !all.contains(secret),
            "{secret} leaked into recordings: {all}"
        );
    }
    let sn = &sb.state().requests(Target::Servicenow)[0];
    assert_eq!(sn.headers["authorization"], "[redacted]");
    assert_eq!(sn.method, "POST");
    assert_eq!(sn.path, "/servicenow/api/now/table/incident");
    assert_eq!(sn.body.as_ref().unwrap()["short_description"], "x");
    assert_eq!(sn.status, 201);
    let pd = &sb.state().requests(Target::Pagerduty)[0];
    assert_eq!(pd.body.as_ref().unwrap()["routing_key"], "[redacted]");
    assert_eq!(sb.state().requests(Target::Anthropic)[0].status, 400);
    assert_eq!(
        sb.state().requests(Target::Bridge)[0].path,
        "/bridge/slack/[redacted]"
    );

    // Debug output of config, state and alerts hides secrets too.
    let cfg = SandboxConfig {
        servicenow_token: SN_TOKEN.into(),
        anthropic_api_key: API_KEY.into(),
        ..SandboxConfig::default()
    };
    let debug = format!(
        "{cfg:?} {:?} {:?} {:?}",
        sb.state(),
        sb.state().pagerduty_alerts(),
        sb.state().bridge_posts()
    );
    for secret in [SN_TOKEN, API_KEY, ROUTING_KEY, hook] {
        assert!(!debug.contains(secret), "{secret} leaked into Debug");
    }

    assert_eq!(control(&c, &sb, "reset", json!({})).await, 204);
    assert!(sb.state().requests(Target::Servicenow).is_empty());
    assert!(sb.state().incidents().is_empty());
    assert!(sb.state().pagerduty_alerts().is_empty());
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let (sb, c) = start().await;
    let base = sb.base_url();
    assert_eq!(
        c.get(format!("{base}/_sandbox/servicenow/incidents"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    sb.shutdown().await;
    let fresh = reqwest::Client::new();
    assert!(
        fresh
            .get(format!("{base}/_sandbox/servicenow/incidents"))
            .send()
            .await
            .is_err()
    );
}
