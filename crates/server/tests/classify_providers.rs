//! Bedrock and OpenAI-compatible providers wired through `build_pipeline`, end
//! to end over real HTTP and SQLite: the guard's cache answers after the dedup
//! window expired, the re-ask, the rules fallback (marked in the run), and a
//! bad SigV4 signature failing closed to review.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use common::{CONFIG, Harness, answer, event, outcome};
use serde_json::json;
use tg_config::{Config, SecretRef};
use tg_sandbox::{FaultSpec, ModelScript, Sandbox, SandboxConfig, ScriptReply, Target};

const ANTHROPIC_BLOCK: &str = "  provider: anthropic
  anthropic:
    base_url: ${SANDBOX}/anthropic
    model: claude-sonnet-4-5
    api_key: { env: ANTHROPIC_API_KEY }
    timeout_ms: 5000
    retries_max: 0
";

const BEDROCK_BLOCK: &str = "  provider: bedrock
  reask: true
  bedrock:
    region: us-east-1
    model_id: anthropic.claude-3-5-sonnet-20240620-v1:0
    base_url: ${SANDBOX}/bedrock
    timeout_ms: 5000
    retries_max: 0
  guard:
    cache_ttl_secs: 3600
    breaker_failures: 2
    fallback: ${FALLBACK}
";

const OPENAI_BLOCK: &str = "  provider: openai
  reask: true
  openai:
    base_url: ${SANDBOX}/openai
    model: qwen3:8b
    api_key: { env: OPENAI_API_KEY }
    timeout_ms: 5000
    retries_max: 0
";

/// A gate whose classifier section is `block`; AWS credentials come from the
/// standard variable names through the secret source.
async fn start(block: &str, aws_secret: &str) -> Harness {
    assert!(
        CONFIG.contains(ANTHROPIC_BLOCK),
        "the shared test config changed"
    );
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let yaml = CONFIG
        .replace(ANTHROPIC_BLOCK, block)
        .replace("${SANDBOX}", &sandbox.base_url());
    let config = Config::from_yaml(&yaml, "test").unwrap_or_else(|e| panic!("{e}"));
    let secrets = common::test_secrets(&sandbox)
        .with(
            &SecretRef::Env("AWS_ACCESS_KEY_ID".into()),
            tg_sandbox::DEFAULT_BEDROCK_ACCESS_KEY_ID,
        )
        .with(&SecretRef::Env("AWS_SECRET_ACCESS_KEY".into()), aws_secret);
    Harness::launch(sandbox, &config, &secrets).await
}

fn bedrock(fallback: &str) -> String {
    BEDROCK_BLOCK.replace("${FALLBACK}", fallback)
}

fn tool(v: serde_json::Value) -> ScriptReply {
    ScriptReply::ToolInput { tool_input: v }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_answers_and_the_cache_holds_after_the_dedup_window_expired() {
    let h = start(
        &bedrock("none"),
        tg_sandbox::DEFAULT_BEDROCK_SECRET_ACCESS_KEY,
    )
    .await;
    h.state()
        .script_bedrock(ModelScript::new(
            "scn-bedrock",
            tool(answer("medium", 0.9, true, false, false, "payments")),
        ))
        .unwrap();
    let ev = event(
        "checkout",
        "CheckoutErrors",
        "prod",
        "datadog",
        "scn-bedrock",
    );
    let first = h.run_generic(&ev).await;
    assert_eq!(outcome(&first, "ticket"), "execute");
    assert_eq!(first["classification"]["info"]["classifier"], "bedrock");
    assert_eq!(
        first["classification"]["info"]["model"],
        "anthropic.claude-3-5-sonnet-20240620-v1:0"
    );
    assert!(
        first["classification"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(first["classification"]["prompt_sha256"].is_string());
    assert!(first["classification"]["output_sha256"].is_string());

    // Past the 600 s dedup window the run is new, but the answer is cached.
    h.advance_secs(601);
    let second = h.run_generic(&ev).await;
    assert_eq!(second["decision"]["duplicate_of"], serde_json::Value::Null);
    assert_eq!(outcome(&second, "ticket"), "execute");
    assert_eq!(
        second["classification"]["info"]["classifier"],
        "bedrock (cached)"
    );
    assert_eq!(
        second["classification"]["output_sha256"],
        first["classification"]["output_sha256"]
    );
    assert_eq!(
        h.received(Target::Bedrock),
        1,
        "one model call for both runs"
    );
    // The service's group is still open: the second run adds a work note to
    // the first run's ticket instead of opening a second one.
    assert_eq!(h.state().incidents().len(), 1);
    let notes = h.state().servicenow_updates();
    assert_eq!(notes.iter().filter(|u| u.adds_work_note()).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_provider_is_answered_by_the_rules_fallback_and_marked() {
    let h = start(
        &bedrock("rules"),
        tg_sandbox::DEFAULT_BEDROCK_SECRET_ACCESS_KEY,
    )
    .await;
    h.state()
        .inject_fault(FaultSpec {
            target: "bedrock".into(),
            status: Some(503),
            count: 10,
            retry_after_secs: None,
            delay_ms: None,
        })
        .unwrap();
    let mut classifiers = Vec::new();
    for (i, svc) in ["checkout", "payments-api", "orders-db"].iter().enumerate() {
        let run = h
            .run_generic(&event(
                svc,
                &format!("Errors{i}"),
                "prod",
                "datadog",
                "scn-fb",
            ))
            .await;
        assert!(
            run["classification"]["classification"].is_object(),
            "{}",
            run["classification"]
        );
        classifiers.push(run["classification"]["info"]["classifier"].clone());
    }
    assert_eq!(
        classifiers,
        [
            json!("rules (fallback from bedrock: provider_error:overloaded)"),
            json!("rules (fallback from bedrock: provider_error:overloaded)"),
            json!("rules (fallback from bedrock: provider_unavailable:circuit_open)"),
        ]
    );
    assert_eq!(
        h.received(Target::Bedrock),
        2,
        "the open breaker makes no call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_fails_closed_to_review() {
    let h = start(&bedrock("none"), "not-the-sandbox-secret").await;
    let run = h
        .run_generic(&event(
            "checkout",
            "CheckoutErrors",
            "prod",
            "datadog",
            "scn-sig",
        ))
        .await;
    assert_eq!(
        run["classification"]["rejection"]["reason"],
        "provider_error:http_403"
    );
    assert_eq!(outcome(&run, "ticket"), "review");
    assert_eq!(h.review().await.len(), 1);
    h.assert_no_action_traffic();
    let text = run.to_string();
    assert!(!text.contains("not-the-sandbox-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_reasks_once_after_a_schema_failure_then_acts() {
    let h = start(OPENAI_BLOCK, tg_sandbox::DEFAULT_BEDROCK_SECRET_ACCESS_KEY).await;
    h.state()
        .script_openai(ModelScript {
            times: Some(1),
            ..ModelScript::new(
                "scn-openai",
                tool(answer("medium", 0.9, true, false, false, "ghost-team")),
            )
        })
        .unwrap();
    h.state()
        .script_openai(ModelScript::new(
            "scn-openai",
            tool(answer("medium", 0.9, true, false, false, "payments")),
        ))
        .unwrap();
    let run = h
        .run_generic(&event(
            "checkout",
            "CheckoutErrors",
            "prod",
            "datadog",
            "scn-openai",
        ))
        .await;
    assert_eq!(run["classification"]["info"]["classifier"], "openai");
    assert_eq!(outcome(&run, "ticket"), "execute");
    assert_eq!(h.received(Target::Openai), 2);
}
