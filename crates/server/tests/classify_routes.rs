//! Classifier configuration end to end, over real HTTP and SQLite against the
//! sandbox: profiles routed per environment (staging to the OpenAI-compatible
//! emulator, production to Anthropic), the guard on the server's `ManualClock`
//! (cache TTL expiry is deterministic), guard metrics on `/metrics`, and Bedrock
//! with web-identity credentials from STS (happy path and failing closed).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use common::{CONFIG, Harness, answer, event, outcome};
use tg_config::Config;
use tg_sandbox::{ModelScript, Sandbox, SandboxConfig, ScriptReply, Target};

const ANTHROPIC_BLOCK: &str = "  provider: anthropic
  anthropic:
    base_url: ${SANDBOX}/anthropic
    model: claude-sonnet-4-5
    api_key: { env: ANTHROPIC_API_KEY }
    timeout_ms: 5000
    retries_max: 0
";

/// Anthropic stays the default; staging and development go to a local model.
const ROUTED_BLOCK: &str = "  provider: anthropic
  anthropic:
    base_url: ${SANDBOX}/anthropic
    model: claude-sonnet-4-5
    api_key: { env: ANTHROPIC_API_KEY }
    timeout_ms: 5000
    retries_max: 0
  profiles:
    nonprod:
      provider: openai
      openai:
        base_url: ${SANDBOX}/openai
        model: qwen3:8b
        api_key: { env: OPENAI_API_KEY }
        timeout_ms: 5000
        retries_max: 0
      guard:
        cache_ttl_secs: 3600
  routes:
    - environments: [staging, development]
      profile: nonprod
";

const WEB_IDENTITY_BLOCK: &str = "  provider: bedrock
  bedrock:
    region: us-east-1
    model_id: anthropic.claude-3-5-sonnet-20240620-v1:0
    base_url: ${SANDBOX}/bedrock
    timeout_ms: 5000
    retries_max: 0
    credentials:
      web_identity:
        token_file: ${TOKEN_FILE}
        role_arn: arn:aws:iam::123456789012:role/triage-gate-sandbox
        sts_base_url: ${SANDBOX}/sts
        duration_secs: 900
        timeout_ms: 5000
";

/// A gate whose classifier section is `block`, on a `ManualClock` shared with the guard.
async fn start(block: &str, token_file: &str) -> Harness {
    assert!(
        CONFIG.contains(ANTHROPIC_BLOCK),
        "the shared test config changed"
    );
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let yaml = CONFIG
        .replace(ANTHROPIC_BLOCK, block)
        .replace("${SANDBOX}", &sandbox.base_url())
        .replace("${TOKEN_FILE}", token_file);
    let config = Config::from_yaml(&yaml, "test").unwrap_or_else(|e| panic!("{e}"));
    let secrets = common::test_secrets(&sandbox);
    Harness::launch(sandbox, &config, &secrets).await
}

fn tool(v: serde_json::Value) -> ScriptReply {
    ScriptReply::ToolInput { tool_input: v }
}

async fn metrics(h: &Harness) -> String {
    h.http
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the first sample whose line starts with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_goes_to_the_local_model_and_production_to_claude() {
    let h = start(ROUTED_BLOCK, "").await;
    let good = answer("medium", 0.9, true, false, false, "payments");
    h.script_tool("scn-route", good.clone());
    h.state()
        .script_openai(ModelScript::new("scn-route", tool(good)))
        .unwrap();
    let staging = h
        .run_generic(&event(
            "checkout",
            "CheckoutErrors",
            "staging",
            "datadog",
            "scn-route",
        ))
        .await;
    let prod = h
        .run_generic(&event(
            "checkout",
            "CheckoutErrors",
            "prod",
            "datadog",
            "scn-route",
        ))
        .await;
    let dev = h
        .run_generic(&event(
            "search",
            "SearchSlow",
            "dev",
            "datadog",
            "scn-route",
        ))
        .await;
    assert_eq!(staging["classification"]["info"]["classifier"], "openai");
    assert_eq!(staging["classification"]["info"]["model"], "qwen3:8b");
    assert_eq!(dev["classification"]["info"]["classifier"], "openai");
    assert_eq!(prod["classification"]["info"]["classifier"], "anthropic");
    assert_eq!(prod["classification"]["info"]["model"], "claude-sonnet-4-5");
    for run in [&staging, &prod, &dev] {
        assert!(run["classification"]["classification"].is_object(), "{run}");
        assert!(run["classification"]["prompt_sha256"].is_string());
        assert!(run["classification"]["output_sha256"].is_string());
    }
    assert_eq!(h.received(Target::Openai), 2);
    assert_eq!(h.model_calls(), 1, "one Anthropic call, for production");
    // Each profile has its own guard, named in the metrics.
    let text = metrics(&h).await;
    let calls = |profile: &str, provider: &str| {
        sample(
            &text,
            &format!(
                "triage_gate_classifier_calls_total{{profile=\"{profile}\",provider=\"{provider}\"}}"
            ),
        )
    };
    assert!(calls("nonprod", "openai").unwrap() >= 2.0, "{text}");
    assert!(calls("default", "anthropic").unwrap() >= 1.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_ttl_runs_on_the_servers_clock_and_the_metrics_move() {
    // Default guard: cache_ttl_secs 300 on the gate's ManualClock.
    let h = start(ANTHROPIC_BLOCK, "").await;
    h.script_tool(
        "scn-ttl",
        answer("medium", 0.9, true, false, false, "payments"),
    );
    let ev = event("checkout", "CheckoutErrors", "prod", "datadog", "scn-ttl");
    let hits_line =
        "triage_gate_classifier_cache_hits_total{profile=\"default\",provider=\"anthropic\"}";
    let first = h.run_generic(&ev).await;
    assert_eq!(first["classification"]["info"]["classifier"], "anthropic");
    let before = sample(&metrics(&h).await, hits_line).unwrap_or(0.0);
    // The resolution closes the dedup window without a model call.
    let mut resolved = ev.clone();
    resolved["status"] = "resolved".into();
    h.run_generic(&resolved).await;
    // 100 s later (inside the TTL) the same alert fires again: the cache answers.
    h.advance_secs(100);
    let second = h.run_generic(&ev).await;
    assert_eq!(second["decision"]["duplicate_of"], serde_json::Value::Null);
    assert_eq!(
        second["classification"]["info"]["classifier"],
        "anthropic (cached)"
    );
    assert_eq!(h.model_calls(), 1);
    let after = sample(&metrics(&h).await, hits_line).unwrap();
    assert!(
        after >= before + 1.0,
        "cache hits moved: {before} -> {after}"
    );
    // 301 s on the gate's clock (no real time passes): the entry expired.
    h.run_generic(&resolved).await;
    h.advance_secs(301);
    let third = h.run_generic(&ev).await;
    assert_eq!(third["classification"]["info"]["classifier"], "anthropic");
    assert_eq!(h.model_calls(), 2, "the expired entry made a new call");
    let text = metrics(&h).await;
    for name in [
        "triage_gate_classifier_calls_total",
        "triage_gate_classifier_single_flight_joins_total",
        "triage_gate_classifier_timeouts_total",
        "triage_gate_classifier_fallbacks_total",
        "triage_gate_classifier_breaker_opens_total",
        "triage_gate_classifier_breaker_state",
    ] {
        assert!(
            text.contains(&format!(
                "{name}{{profile=\"default\",provider=\"anthropic\"}}"
            )),
            "{name} missing: {text}"
        );
    }
    assert!(text.contains("triage_gate_classifier_refusals_total{profile=\"default\",provider=\"anthropic\",reason=\"over_budget\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_with_web_identity_acts_and_fails_closed_when_sts_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, tg_sandbox::DEFAULT_WEB_IDENTITY_TOKEN).unwrap();
    let h = start(WEB_IDENTITY_BLOCK, token_file.to_str().unwrap()).await;
    h.state()
        .script_bedrock(ModelScript::new(
            "scn-wi",
            tool(answer("medium", 0.9, true, false, false, "payments")),
        ))
        .unwrap();
    let run = h
        .run_generic(&event(
            "checkout",
            "CheckoutErrors",
            "prod",
            "datadog",
            "scn-wi",
        ))
        .await;
    assert_eq!(run["classification"]["info"]["classifier"], "bedrock");
    assert_eq!(outcome(&run, "ticket"), "execute");
    assert_eq!(h.state().sts_calls().len(), 1);

    // The token rotates to one STS does not accept, and the credentials must
    // be refreshed: the run goes to review, nothing is sent anywhere.
    let forged = "eyJhbGciOiJSUzI1NiJ9.forged-by-nobody.c2ln";
    std::fs::write(&token_file, forged).unwrap();
    h.state().sts_expire_credentials();
    let before = h.state().incidents().len();
    let run = h
        .run_generic(&event(
            "payments-api",
            "PaymentsErrors",
            "prod",
            "datadog",
            "scn-wi",
        ))
        .await;
    assert_eq!(
        run["classification"]["rejection"]["reason"], "provider_error:credentials",
        "{}",
        run["classification"]
    );
    assert_eq!(outcome(&run, "ticket"), "review");
    assert_eq!(h.state().incidents().len(), before);
    let text = run.to_string();
    assert!(!text.contains(forged));
    assert!(!text.contains(tg_sandbox::DEFAULT_WEB_IDENTITY_TOKEN));
}
