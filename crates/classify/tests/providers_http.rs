//! The Bedrock Converse and OpenAI-compatible classifiers over real HTTP,
//! against the sandbox emulators (SigV4 verified by the Bedrock emulator with
//! the AWS signer; strict `response_format` checked by the OpenAI emulator).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

extern crate triage_gate_classify as tg_classify;

mod common;

use serde_json::{Value, json};
use tg_classify::contract::reason;
use tg_classify::{
    AwsCredentials, BedrockClassifier, BedrockConfig, Classifier, ClassifyOutcome,
    OpenAiClassifier, OpenAiConfig, RetryPolicy, Secret, Severity,
};
use tg_model::ImpactLevel;
use tg_sandbox::{FaultSpec, ModelScript, Sandbox, SandboxConfig, ScriptReply, Target};

const REGION: &str = "us-east-1";
const MODEL_ID: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

fn fast_retry(retries_max: u32) -> RetryPolicy {
    RetryPolicy {
        timeout_ms: 2_000,
        retries_max,
        retry_after_max_secs: 1,
        backoff_base_ms: 5,
        backoff_max_ms: 20,
    }
}

fn creds(secret: &str) -> AwsCredentials {
    AwsCredentials {
        access_key_id: Secret::new(tg_sandbox::DEFAULT_BEDROCK_ACCESS_KEY_ID),
        secret_access_key: Secret::new(secret),
        session_token: None,
    }
}

fn bedrock(sb: &Sandbox, retries_max: u32) -> BedrockClassifier {
    bedrock_with(
        sb,
        creds(tg_sandbox::DEFAULT_BEDROCK_SECRET_ACCESS_KEY),
        retries_max,
    )
}

fn bedrock_with(sb: &Sandbox, credentials: AwsCredentials, retries_max: u32) -> BedrockClassifier {
    let mut c = BedrockConfig::new(REGION, MODEL_ID, credentials);
    c.base_url = Some(sb.bedrock_url());
    c.retry = fast_retry(retries_max);
    BedrockClassifier::new(c).unwrap()
}

fn openai(sb: &Sandbox, retries_max: u32) -> OpenAiClassifier {
    let mut c = OpenAiConfig::new(sb.openai_url(), "qwen3:8b");
    c.api_key = Some(Secret::new(tg_sandbox::DEFAULT_OPENAI_API_KEY));
    c.retry = fast_retry(retries_max);
    OpenAiClassifier::new(c).unwrap()
}

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig::default()).await.unwrap()
}

/// The event's summary is "error rate above 5% on checkout api": every test
/// scripts on a substring of it.
const MARK: &str = "checkout api";

async fn run(c: &dyn Classifier) -> ClassifyOutcome {
    c.classify(&common::event(ImpactLevel::High), &common::teams())
        .await
}

fn good() -> Value {
    json!({
        "classification": "high",
        "confidence": 0.91,
        "requires_ticket": true,
        "requires_paging": true,
        "requires_mim": false,
        "recommended_team": "payments",
        "rationale": "checkout error rate above 5%",
    })
}

fn with(field: &str, value: Value) -> Value {
    let mut v = good();
    v[field] = value;
    v
}

fn without(field: &str) -> Value {
    let mut v = good();
    v.as_object_mut().unwrap().remove(field);
    v
}

fn tool(v: Value) -> ScriptReply {
    ScriptReply::ToolInput { tool_input: v }
}

fn text(t: &str) -> ScriptReply {
    ScriptReply::Text { text: t.to_owned() }
}

#[tokio::test]
async fn bedrock_good_answer_is_signed_validated_and_recorded() {
    let sb = sandbox().await;
    sb.state()
        .script_bedrock(ModelScript::new(MARK, tool(good())))
        .unwrap();
    let c = bedrock(&sb, 0);
    let out = run(&c).await;
    let cl = out.result.as_ref().expect("accepted");
    assert_eq!(cl.classification, Severity::High);
    assert_eq!(cl.recommended_team, "payments");
    assert_eq!(out.info.classifier, "bedrock");
    assert_eq!(out.info.model.as_deref(), Some(MODEL_ID));
    assert!(out.usage.unwrap().input_tokens > 0);
    assert!(out.prompt_sha256.is_some());
    let raw: Value = serde_json::from_str(out.raw_output.as_deref().unwrap()).unwrap();
    assert_eq!(raw, good());

    let reqs = sb.state().requests(Target::Bedrock);
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.status, 200);
    assert_eq!(
        r.path,
        "/bedrock/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    assert_eq!(r.headers["authorization"], "[redacted]");
    assert!(r.headers.contains_key("x-amz-date"));
    let body = r.body.as_ref().unwrap();
    assert_eq!(
        body["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "classify_alert"}})
    );
    assert_eq!(
        body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["type"],
        "object"
    );
    assert_eq!(body["inferenceConfig"]["temperature"], 0);
    assert!(
        body["system"][0]["text"]
            .as_str()
            .unwrap()
            .contains("untrusted data")
    );
    assert!(
        body["messages"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("<event_json>")
    );
}

#[tokio::test]
async fn bedrock_signature_with_the_wrong_secret_is_refused_with_bedrocks_error_shape() {
    let sb = sandbox().await;
    let c = bedrock_with(&sb, creds("not-the-secret"), 0);
    let out = run(&c).await;
    let r = out.result.unwrap_err();
    assert_eq!(r.reason, "provider_error:http_403");
    assert!(
        r.detail.contains("InvalidSignatureException"),
        "{}",
        r.detail
    );
    assert!(!r.detail.contains("not-the-secret"));

    // Unknown access key, and a missing session token the emulator requires.
    let mut wrong_id = creds(tg_sandbox::DEFAULT_BEDROCK_SECRET_ACCESS_KEY);
    wrong_id.access_key_id = Secret::new("AKIAUNKNOWN000000000");
    let r = run(&bedrock_with(&sb, wrong_id, 0))
        .await
        .result
        .unwrap_err();
    assert!(
        r.detail.contains("UnrecognizedClientException"),
        "{}",
        r.detail
    );

    let sb2 = Sandbox::start(SandboxConfig {
        bedrock_credentials: tg_sandbox::BedrockCredentials {
            access_key_id: tg_sandbox::DEFAULT_BEDROCK_ACCESS_KEY_ID.into(),
            secret_access_key: tg_sandbox::DEFAULT_BEDROCK_SECRET_ACCESS_KEY.into(),
            session_token: Some("session-token-SECRET".into()),
        },
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    sb2.state()
        .script_bedrock(ModelScript::new(MARK, tool(good())))
        .unwrap();
    let r = run(&bedrock(&sb2, 0)).await.result.unwrap_err();
    assert!(
        r.detail.contains("UnrecognizedClientException"),
        "{}",
        r.detail
    );
    let mut with_token = creds(tg_sandbox::DEFAULT_BEDROCK_SECRET_ACCESS_KEY);
    with_token.session_token = Some(Secret::new("session-token-SECRET"));
    let out = run(&bedrock_with(&sb2, with_token, 0)).await;
    assert!(out.result.is_ok(), "{:?}", out.result);
    let rec = &sb2.state().requests(Target::Bedrock)[1];
    assert_eq!(rec.headers["x-amz-security-token"], "[redacted]");
}

#[tokio::test]
async fn a_tampered_body_fails_the_signature() {
    // Sign one body, send another: the emulator recomputes and refuses.
    let sb = sandbox().await;
    let c = bedrock(&sb, 0);
    let body: &'static [u8] = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
    let signed = c.sign_headers(body, std::time::SystemTime::now()).unwrap();
    let send = |b: &'static [u8]| {
        let mut req = reqwest::Client::new()
            .post(c.url())
            .header("content-type", "application/json")
            .body(b);
        for (k, v) in &signed {
            req = req.header(k.as_str(), v.as_str());
        }
        req.send()
    };
    let resp = send(br#"{"messages":[{"role":"user","content":[{"text":"HI"}]}]}"#)
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers()["x-amzn-errortype"],
        "InvalidSignatureException"
    );
    let msg: Value = resp.json().await.unwrap();
    assert!(msg["message"].as_str().unwrap().contains("does not match"));
    // The body that was signed passes.
    let resp = send(body).await.unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["stopReason"], "end_turn");
}

#[tokio::test]
async fn openai_good_answer_uses_strict_json_schema_and_is_validated() {
    let sb = sandbox().await;
    let mut answer = good();
    answer["rationale"] = Value::Null;
    sb.state()
        .script_openai(ModelScript::new(MARK, tool(answer)))
        .unwrap();
    let out = run(&openai(&sb, 0)).await;
    let cl = out.result.as_ref().expect("accepted");
    assert_eq!(cl.rationale, None);
    assert_eq!(out.info.classifier, "openai");
    assert!(out.usage.unwrap().output_tokens > 0);
    let reqs = sb.state().requests(Target::Openai);
    assert_eq!(reqs[0].status, 200);
    assert_eq!(reqs[0].headers["authorization"], "[redacted]");
    let body = reqs[0].body.as_ref().unwrap();
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(body["temperature"], 0);
    assert_eq!(body["messages"][0]["role"], "system");
    assert!(
        body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("one JSON object")
    );
}

#[tokio::test]
async fn openai_wrong_key_is_401_and_never_echoed() {
    let sb = sandbox().await;
    let mut c = OpenAiConfig::new(sb.openai_url(), "m");
    c.api_key = Some(Secret::new("sk-WRONG-key-123"));
    c.retry = fast_retry(0);
    let out = run(&OpenAiClassifier::new(c).unwrap()).await;
    let r = out.result.unwrap_err();
    assert_eq!(r.reason, "provider_error:http_401");
    assert!(!r.detail.contains("sk-WRONG"), "{}", r.detail);
}

fn content_cases() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "wrong enum",
            with("classification", json!("critical")),
            reason::CLASSIFICATION_INVALID,
        ),
        (
            "confidence 1.5",
            with("confidence", json!(1.5)),
            reason::CONFIDENCE_OUT_OF_RANGE,
        ),
        (
            "confidence as a string",
            with("confidence", json!("0.9")),
            reason::WRONG_TYPE,
        ),
        (
            "negative confidence",
            with("confidence", json!(-0.1)),
            reason::CONFIDENCE_OUT_OF_RANGE,
        ),
        (
            "missing field",
            without("requires_paging"),
            reason::MISSING_FIELD,
        ),
        (
            "extra field",
            with("escalate_to_ceo", json!(true)),
            reason::EXTRA_FIELD,
        ),
        (
            "unknown team",
            with("recommended_team", json!("ghost-team")),
            reason::UNKNOWN_TEAM,
        ),
        (
            "empty team",
            with("recommended_team", json!("")),
            reason::TEAM_EMPTY,
        ),
        (
            "team too long",
            with("recommended_team", json!("t".repeat(200))),
            reason::TEAM_TOO_LONG,
        ),
        (
            "huge rationale",
            with("rationale", json!("r".repeat(3000))),
            reason::RATIONALE_TOO_LONG,
        ),
        (
            "paging as a string",
            with("requires_paging", json!("yes")),
            reason::WRONG_TYPE,
        ),
        (
            "array instead of object",
            json!([good()]),
            reason::NOT_OBJECT,
        ),
        ("null answer", Value::Null, reason::NOT_OBJECT),
    ]
}

#[tokio::test]
async fn bedrock_malformed_answers_each_get_their_reason_code() {
    let sb = sandbox().await;
    let mut cfg = BedrockConfig::new(
        REGION,
        MODEL_ID,
        creds(tg_sandbox::DEFAULT_BEDROCK_SECRET_ACCESS_KEY),
    );
    cfg.base_url = Some(sb.bedrock_url());
    cfg.retry = fast_retry(0);
    cfg.max_tokens = 2048;
    let c = BedrockClassifier::new(cfg).unwrap();
    let mut cases: Vec<(String, ModelScript, &str)> = content_cases()
        .into_iter()
        .map(|(n, v, code)| (n.to_owned(), ModelScript::new(MARK, tool(v)), code))
        .collect();
    let converse = |content: Value, stop: &str| {
        json!({"output": {"message": {"role": "assistant", "content": content}},
               "stopReason": stop, "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}})
    };
    let raw = |body: Value| ScriptReply::Raw { status: 200, body };
    let tool_block = |name: &str, input: Value| json!({"toolUse": {"toolUseId": "t1", "name": name, "input": input}});
    let mut more = vec![
        ("text instead of a tool call", ModelScript::new(MARK, text(&good().to_string())), reason::NO_TOOL_CALL),
        ("markdown-wrapped json as text", ModelScript::new(MARK, text(&format!("```json\n{}\n```", good()))), reason::NO_TOOL_CALL),
        ("two tool calls", ModelScript::new(MARK, raw(converse(json!([tool_block("classify_alert", good()), tool_block("classify_alert", good())]), "tool_use"))), reason::MULTIPLE_TOOL_CALLS),
        ("wrong tool name", ModelScript::new(MARK, raw(converse(json!([tool_block("page_everyone", good())]), "tool_use"))), reason::WRONG_TOOL),
        ("empty content", ModelScript::new(MARK, raw(converse(json!([]), "end_turn"))), reason::NO_TOOL_CALL),
        ("tool call without tool_use stop", ModelScript::new(MARK, raw(converse(json!([tool_block("classify_alert", good())]), "end_turn"))), reason::NO_TOOL_CALL),
        ("truncated", ModelScript { stop_reason: Some("max_tokens".into()), ..ModelScript::new(MARK, tool(good())) }, reason::TRUNCATED),
        ("context window exceeded", ModelScript { stop_reason: Some("model_context_window_exceeded".into()), ..ModelScript::new(MARK, tool(good())) }, reason::TRUNCATED),
        ("guardrail", ModelScript { stop_reason: Some("guardrail_intervened".into()), ..ModelScript::new(MARK, tool(good())) }, reason::REFUSAL),
        ("malformed tool use", ModelScript { stop_reason: Some("malformed_tool_use".into()), ..ModelScript::new(MARK, tool(good())) }, reason::NOT_JSON),
        ("duplicate keys", ModelScript { body_text: Some(r#"{"output":{"message":{"role":"assistant","content":[{"toolUse":{"toolUseId":"t","name":"classify_alert","input":{"classification":"low","classification":"sev1","confidence":0.9,"requires_ticket":true,"requires_paging":true,"requires_mim":true,"recommended_team":"payments"}}}]}},"stopReason":"tool_use"}"#.into()), ..ModelScript::new(MARK, tool(good())) }, reason::DUPLICATE_KEY),
        ("200 that is not a Converse body", ModelScript { body_text: Some("<html>gateway</html>".into()), ..ModelScript::new(MARK, tool(good())) }, reason::PROVIDER_INVALID_RESPONSE),
    ]
    .into_iter()
    .map(|(n, s, c)| (n.to_owned(), s, c))
    .collect::<Vec<_>>();
    cases.append(&mut more);
    assert!(cases.len() >= 20, "{} cases", cases.len());
    for (name, mut script, code) in cases {
        sb.state().reset();
        script.times = Some(1);
        sb.state().script_bedrock(script).unwrap();
        let out = run(&c).await;
        let r = out
            .result
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted {:?}", out.result));
        assert_eq!(r.reason, code, "{name}: {}", r.detail);
        assert!(
            tg_classify::REASON_CODES.contains(&r.reason.as_str()),
            "{name}"
        );
        assert_eq!(
            sb.state().requests(Target::Bedrock).len(),
            1,
            "{name}: no re-ask by default"
        );
    }
}

#[tokio::test]
async fn openai_malformed_answers_each_get_their_reason_code() {
    let sb = sandbox().await;
    let mut cfg = OpenAiConfig::new(sb.openai_url(), "qwen3:8b");
    cfg.api_key = Some(Secret::new(tg_sandbox::DEFAULT_OPENAI_API_KEY));
    cfg.retry = fast_retry(0);
    cfg.max_tokens = 2048;
    let c = OpenAiClassifier::new(cfg).unwrap();
    let mut cases: Vec<(String, ModelScript, &str)> = content_cases()
        .into_iter()
        .map(|(n, v, code)| (n.to_owned(), ModelScript::new(MARK, tool(v)), code))
        .collect();
    let completion = |message: Value, finish: &str| {
        json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": finish}],
               "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
    };
    let raw = |body: Value| ScriptReply::Raw { status: 200, body };
    let g = good().to_string();
    let mut more = vec![
        ("not json", ModelScript::new(MARK, text("severity: high, page the team")), reason::NOT_JSON),
        ("markdown-wrapped json", ModelScript::new(MARK, text(&format!("```json\n{g}\n```"))), reason::NOT_JSON),
        ("trailing text", ModelScript::new(MARK, text(&format!("{g} I hope this helps"))), reason::NOT_JSON),
        ("NaN confidence", ModelScript::new(MARK, text(&g.replace("0.91", "NaN"))), reason::NOT_JSON),
        ("duplicate keys", ModelScript::new(MARK, text(&g.replacen("{", r#"{"classification":"low","#, 1))), reason::DUPLICATE_KEY),
        ("empty content", ModelScript::new(MARK, text("")), reason::EMPTY),
        ("null content", ModelScript::new(MARK, raw(completion(json!({"role": "assistant", "content": null}), "stop"))), reason::EMPTY),
        ("truncated (finish_reason length)", ModelScript { stop_reason: Some("length".into()), ..ModelScript::new(MARK, tool(good())) }, reason::TRUNCATED),
        ("refusal", ModelScript { refusal: Some("I can't help with that.".into()), ..ModelScript::new(MARK, tool(good())) }, reason::REFUSAL),
        ("content filter", ModelScript { stop_reason: Some("content_filter".into()), ..ModelScript::new(MARK, tool(good())) }, reason::REFUSAL),
        ("tool calls instead of content", ModelScript::new(MARK, raw(completion(json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "classify_alert", "arguments": g}}]}), "tool_calls"))), reason::NO_TOOL_CALL),
        ("two choices", ModelScript::new(MARK, raw(json!({"choices": [{"index": 0, "message": {"content": g}, "finish_reason": "stop"}, {"index": 1, "message": {"content": g}, "finish_reason": "stop"}]}))), reason::PROVIDER_INVALID_RESPONSE),
        ("200 that is not a completion", ModelScript { body_text: Some("not json at all".into()), ..ModelScript::new(MARK, tool(good())) }, reason::PROVIDER_INVALID_RESPONSE),
    ]
    .into_iter()
    .map(|(n, s, c)| (n.to_owned(), s, c))
    .collect::<Vec<_>>();
    cases.append(&mut more);
    assert!(cases.len() >= 20, "{} cases", cases.len());
    for (name, mut script, code) in cases {
        sb.state().reset();
        script.times = Some(1);
        sb.state().script_openai(script).unwrap();
        let out = run(&c).await;
        let r = out
            .result
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted {:?}", out.result));
        assert_eq!(r.reason, code, "{name}: {}", r.detail);
        assert!(
            tg_classify::REASON_CODES.contains(&r.reason.as_str()),
            "{name}"
        );
    }
}

#[tokio::test]
async fn throttling_is_retried_within_bounds_then_fails_closed() {
    let sb = sandbox().await;
    sb.state()
        .script_bedrock(ModelScript::new(MARK, tool(good())))
        .unwrap();
    sb.state()
        .script_openai(ModelScript::new(MARK, tool(good())))
        .unwrap();
    let fault = |target: &str, status: u16, count: u32| FaultSpec {
        target: target.into(),
        status: Some(status),
        count,
        retry_after_secs: Some(0),
        delay_ms: None,
    };
    // One 429 then success.
    sb.state().inject_fault(fault("bedrock", 429, 1)).unwrap();
    assert!(run(&bedrock(&sb, 2)).await.result.is_ok());
    assert_eq!(sb.state().requests(Target::Bedrock).len(), 2);
    sb.state().inject_fault(fault("openai", 429, 1)).unwrap();
    assert!(run(&openai(&sb, 2)).await.result.is_ok());
    assert_eq!(sb.state().requests(Target::Openai).len(), 2);

    // Always unavailable: 1 + retries_max attempts, then a stable code.
    let before = sb.state().requests(Target::Bedrock).len();
    sb.state().inject_fault(fault("bedrock", 503, 100)).unwrap();
    let r = run(&bedrock(&sb, 2)).await.result.unwrap_err();
    assert_eq!(r.reason, reason::PROVIDER_OVERLOADED);
    assert!(
        r.detail.contains("ServiceUnavailableException"),
        "{}",
        r.detail
    );
    assert_eq!(sb.state().requests(Target::Bedrock).len() - before, 3);

    sb.state().reset();
    sb.state().inject_fault(fault("bedrock", 429, 100)).unwrap();
    let r = run(&bedrock(&sb, 1)).await.result.unwrap_err();
    assert_eq!(r.reason, reason::PROVIDER_RATE_LIMITED);
    assert!(r.detail.contains("ThrottlingException"));

    sb.state().reset();
    sb.state().inject_fault(fault("openai", 500, 100)).unwrap();
    let before = sb.state().requests(Target::Openai).len();
    let r = run(&openai(&sb, 1)).await.result.unwrap_err();
    assert_eq!(r.reason, "provider_error:http_500");
    assert_eq!(sb.state().requests(Target::Openai).len() - before, 2);

    // A 400 is not retried.
    sb.state().reset();
    sb.state().inject_fault(fault("openai", 400, 5)).unwrap();
    let r = run(&openai(&sb, 3)).await.result.unwrap_err();
    assert_eq!(r.reason, "provider_error:http_400");
    assert_eq!(sb.state().requests(Target::Openai).len(), 1);
}

#[tokio::test]
async fn a_slow_model_times_out_per_attempt() {
    let sb = sandbox().await;
    let mut c = BedrockConfig::new(
        REGION,
        MODEL_ID,
        creds(tg_sandbox::DEFAULT_BEDROCK_SECRET_ACCESS_KEY),
    );
    c.base_url = Some(sb.bedrock_url());
    c.retry = RetryPolicy {
        timeout_ms: 100,
        ..fast_retry(1)
    };
    let b = BedrockClassifier::new(c).unwrap();
    sb.state()
        .inject_fault(FaultSpec {
            target: "bedrock".into(),
            status: None,
            count: 2,
            retry_after_secs: None,
            delay_ms: Some(1_000),
        })
        .unwrap();
    let out = run(&b).await;
    let r = out.result.unwrap_err();
    assert_eq!(r.reason, reason::PROVIDER_TIMEOUT);
    assert!(
        out.latency_ms >= 200,
        "two attempts of 100 ms: {}",
        out.latency_ms
    );
}

#[tokio::test]
async fn one_reask_after_a_schema_failure_tells_only_the_reason_code() {
    let sb = sandbox().await;
    // First answer names an unknown team; the re-ask (same marker) gets a good one.
    sb.state()
        .script_openai(ModelScript {
            times: Some(1),
            ..ModelScript::new(MARK, tool(with("recommended_team", json!("ghost-team"))))
        })
        .unwrap();
    sb.state()
        .script_openai(ModelScript::new(MARK, tool(good())))
        .unwrap();
    let mut c = OpenAiConfig::new(sb.openai_url(), "m");
    c.api_key = Some(Secret::new(tg_sandbox::DEFAULT_OPENAI_API_KEY));
    c.retry = fast_retry(0);
    c.reask = true;
    let o = OpenAiClassifier::new(c).unwrap();
    let out = run(&o).await;
    assert!(out.result.is_ok(), "{:?}", out.result);
    let reqs = sb.state().requests(Target::Openai);
    assert_eq!(reqs.len(), 2);
    let second = reqs[1].body.as_ref().unwrap()["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(second.contains("reason: unknown_team"), "{second}");
    assert!(
        !second.contains("ghost-team"),
        "the rejected answer is never echoed"
    );
    // Usage covers both calls.
    assert!(out.usage.unwrap().input_tokens > 0);

    // Still broken after the re-ask: rejected, exactly two calls, detail says so.
    sb.state().reset();
    sb.state()
        .script_bedrock(ModelScript::new(MARK, tool(with("confidence", json!(7)))))
        .unwrap();
    let mut bc = BedrockConfig::new(
        REGION,
        MODEL_ID,
        creds(tg_sandbox::DEFAULT_BEDROCK_SECRET_ACCESS_KEY),
    );
    bc.base_url = Some(sb.bedrock_url());
    bc.retry = fast_retry(0);
    bc.reask = true;
    let out = run(&BedrockClassifier::new(bc).unwrap()).await;
    let r = out.result.unwrap_err();
    assert_eq!(r.reason, reason::CONFIDENCE_OUT_OF_RANGE);
    assert!(r.detail.starts_with("after one re-ask: "), "{}", r.detail);
    assert_eq!(sb.state().requests(Target::Bedrock).len(), 2);

    // Not a schema failure (truncation): no re-ask.
    sb.state().reset();
    sb.state()
        .script_bedrock(ModelScript {
            stop_reason: Some("max_tokens".into()),
            ..ModelScript::new(MARK, tool(good()))
        })
        .unwrap();
    let mut bc = BedrockConfig::new(
        REGION,
        MODEL_ID,
        creds(tg_sandbox::DEFAULT_BEDROCK_SECRET_ACCESS_KEY),
    );
    bc.base_url = Some(sb.bedrock_url());
    bc.retry = fast_retry(0);
    bc.reask = true;
    let r = run(&BedrockClassifier::new(bc).unwrap())
        .await
        .result
        .unwrap_err();
    assert_eq!(r.reason, reason::TRUNCATED);
    assert_eq!(sb.state().requests(Target::Bedrock).len(), 1);
}

#[tokio::test]
async fn credentials_never_appear_in_outcomes_errors_or_debug() {
    let secret = "SECRET-aws-key-material-0123456789";
    let sb = sandbox().await;
    let c = bedrock_with(&sb, creds(secret), 0);
    let out = run(&c).await;
    let dump = format!("{out:?} {c:?}");
    assert!(!dump.contains(secret), "{dump}");
    // A model that echoes a credential has it scrubbed from the record.
    let sb = sandbox().await;
    sb.state()
        .script_openai(ModelScript::new(
            MARK,
            text(&format!("my key is {}", tg_sandbox::DEFAULT_OPENAI_API_KEY)),
        ))
        .unwrap();
    let o = openai(&sb, 0);
    let out = run(&o).await;
    let dump = format!("{out:?} {o:?}");
    assert!(!dump.contains(tg_sandbox::DEFAULT_OPENAI_API_KEY), "{dump}");
    assert!(out.raw_output.unwrap().contains("[redacted]"));
}
