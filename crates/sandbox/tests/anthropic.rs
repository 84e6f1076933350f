//! Anthropic Messages API emulator over real HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use std::sync::Arc;

use common::{API_KEY, control, json, start, start_with};
use serde_json::{Value, json};
use triage_gate_sandbox::{BrainReply, ModelBrain, SandboxConfig};

fn request(text: &str) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 512,
        "system": "Classify operational alerts.",
        "tools": [{"name": "classify_alert", "description": "Return classification",
                   "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "tool", "name": "classify_alert"},
        "messages": [{"role": "user", "content": text}],
    })
}

async fn send(c: &reqwest::Client, url: &str, body: &Value) -> (u16, Value, Option<String>) {
    let resp = c
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", API_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap();
    let rid = resp
        .headers()
        .get("request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let (s, b) = json(resp).await;
    (s, b, rid)
}

#[tokio::test]
async fn forced_tool_answers_with_the_default_brain() {
    let (sb, c) = start().await;
    let (status, body, rid) = send(&c, &sb.anthropic_url(), &request("disk full on db-1")).await;
    assert_eq!(status, 200);
    assert!(rid.unwrap().starts_with("req_"));
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["stop_reason"], "tool_use");
    assert_eq!(body["stop_sequence"], Value::Null);
    let block = &body["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "classify_alert");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    let c: tg_model::Classification = serde_json::from_value(block["input"].clone()).unwrap();
    assert_eq!(c.recommended_team, "platform-ops");
    assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(body["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

/// Breaks one thing in a valid request.
type Breaker = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn rejects_bad_auth_version_and_bodies() {
    let (sb, c) = start().await;
    let url = format!("{}/v1/messages", sb.anthropic_url());
    let body = request("x");

    for key in [None, Some("sk-wrong")] {
        let mut req = c
            .post(&url)
            .header("anthropic-version", "2023-06-01")
            .json(&body);
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let (s, b) = json(req.send().await.unwrap()).await;
        assert_eq!(s, 401);
        assert_eq!(b["type"], "error");
        assert_eq!(b["error"]["type"], "authentication_error");
    }

    let (s, b) = json(
        c.post(&url)
            .header("x-api-key", API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(b["error"]["type"], "invalid_request_error");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic-version")
    );

    let broken: Vec<(Breaker, &str)> = vec![
        (
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("model");
            }),
            "model",
        ),
        (
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("max_tokens");
            }),
            "max_tokens",
        ),
        (Box::new(|v| v["max_tokens"] = json!(0)), "max_tokens"),
        (Box::new(|v| v["max_tokens"] = json!("512")), "max_tokens"),
        (Box::new(|v| v["messages"] = json!([])), "messages"),
        (
            Box::new(|v| v["tool_choice"] = json!({"type": "tool", "name": "other_tool"})),
            "other_tool",
        ),
        (
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("tools");
            }),
            "tool_choice",
        ),
    ];
    for (breaker, needle) in broken {
        let mut b = request("x");
        breaker(&mut b);
        let (s, resp, _) = send(&c, &sb.anthropic_url(), &b).await;
        assert_eq!(s, 400, "{b}");
        assert_eq!(resp["type"], "error");
        assert_eq!(resp["error"]["type"], "invalid_request_error");
        assert!(
            resp["error"]["message"].as_str().unwrap().contains(needle),
            "{needle}: {resp}"
        );
    }
}

#[tokio::test]
async fn scripted_replies_override_the_brain() {
    let (sb, c) = start().await;
    let url = sb.anthropic_url();
    assert_eq!(
        control(&c, &sb, "anthropic/script", json!({"when_contains": "payments", "reply": {"tool_input": {"classification": "sev1"}}, "times": 1})).await,
        204
    );
    assert_eq!(
        control(
            &c,
            &sb,
            "anthropic/script",
            json!({"when_contains": "chatty", "reply": {"text": "I think it's fine"}})
        )
        .await,
        204
    );
    assert_eq!(
        control(&c, &sb, "anthropic/script", json!({"when_contains": "busy", "reply": {"status": 529, "body": {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}}})).await,
        204
    );
    assert_eq!(
        control(&c, &sb, "anthropic/script", json!({"when_contains": "cut", "reply": {"tool_input": {"a": 1}}, "stop_reason": "max_tokens"})).await,
        204
    );
    assert_eq!(
        control(
            &c,
            &sb,
            "anthropic/script",
            json!({"when_contains": "x", "reply": {"text": "t"}, "times": 0})
        )
        .await,
        400
    );

    let (s, b, _) = send(&c, &url, &request("payments are failing")).await;
    assert_eq!(s, 200);
    assert_eq!(b["content"][0]["input"], json!({"classification": "sev1"}));
    // times: 1 is spent; the brain answers again.
    let (_, b, _) = send(&c, &url, &request("payments are failing")).await;
    assert_eq!(b["content"][0]["input"]["recommended_team"], "platform-ops");

    let (_, b, _) = send(&c, &url, &request("chatty model")).await;
    assert_eq!(
        b["content"][0],
        json!({"type": "text", "text": "I think it's fine"})
    );
    assert_eq!(b["stop_reason"], "end_turn");

    let (s, b, rid) = send(&c, &url, &request("busy day")).await;
    assert_eq!(s, 529);
    assert_eq!(b["error"]["type"], "overloaded_error");
    assert!(rid.is_some());

    let (_, b, _) = send(&c, &url, &request("cut short")).await;
    assert_eq!(b["stop_reason"], "max_tokens");
}

#[tokio::test]
async fn answers_that_exceed_max_tokens_are_truncated() {
    let (sb, c) = start().await;
    let mut body = request("x");
    body["max_tokens"] = json!(5);
    let (s, b, _) = send(&c, &sb.anthropic_url(), &body).await;
    assert_eq!(s, 200);
    assert_eq!(b["stop_reason"], "max_tokens");
    assert_eq!(b["content"][0]["input"], json!({}));
    assert_eq!(b["usage"]["output_tokens"], 5);
}

struct EchoBrain;

impl ModelBrain for EchoBrain {
    fn answer(&self, user_text: &str) -> BrainReply {
        BrainReply::ToolInput(json!({"echo": user_text}))
    }
}

#[tokio::test]
async fn a_configured_brain_sees_the_last_user_message() {
    let (sb, c) = start_with(SandboxConfig {
        anthropic_api_key: API_KEY.into(),
        brain: Some(Arc::new(EchoBrain)),
        ..SandboxConfig::default()
    })
    .await;
    let mut body = request("ignored");
    body["messages"] = json!([
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "alert: cpu high"}]}
    ]);
    let (s, b, _) = send(&c, &sb.anthropic_url(), &body).await;
    assert_eq!(s, 200);
    assert_eq!(b["content"][0]["input"], json!({"echo": "alert: cpu high"}));
}
