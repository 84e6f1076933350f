//! `Guarded` over real HTTP to the sandbox's Anthropic emulator: the storm
//! acceptance (5,000 alerts, one or fifty fingerprints, 64 in flight), the
//! cache TTL on an injected clock, single-flight, breaker, budget, timeout,
//! saturation and the rules fallback. Model calls are counted by the emulator.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

extern crate triage_gate_classify as tg_classify;

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Duration as ChronoDuration;
use serde_json::json;
use tg_classify::contract::reason;
use tg_classify::guard::cache_key;
use tg_classify::{
    AnthropicClassifier, AnthropicConfig, Classifier, GuardConfig, Guarded, ManualGuardClock,
    RulesClassifier, Secret,
};
use tg_model::{Fingerprint, ImpactLevel, NormalizedEvent};
use tg_sandbox::{AnthropicScript, FaultSpec, Sandbox, SandboxConfig, ScriptReply, Target};

fn anthropic(sb: &Sandbox) -> AnthropicClassifier {
    let mut c = AnthropicConfig::new(
        "claude-sonnet-4-5",
        Secret::new(tg_sandbox::DEFAULT_ANTHROPIC_API_KEY),
    );
    c.base_url = sb.anthropic_url();
    c.retries_max = 0;
    c.timeout_ms = 5_000;
    AnthropicClassifier::new(c).unwrap()
}

async fn sandbox() -> Sandbox {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    sb.state()
        .script_anthropic(AnthropicScript {
            when_contains: "event_json".into(),
            reply: ScriptReply::ToolInput {
                tool_input: json!({
                    "classification": "medium", "confidence": 0.9,
                    "requires_ticket": true, "requires_paging": false, "requires_mim": false,
                    "recommended_team": "payments",
                }),
            },
            stop_reason: None,
            times: None,
        })
        .unwrap();
    sb
}

fn guarded(
    sb: &Sandbox,
    config: GuardConfig,
    clock: Arc<ManualGuardClock>,
    fallback: bool,
) -> Arc<Guarded<AnthropicClassifier>> {
    let fb: Option<Arc<dyn Classifier>> =
        fallback.then(|| Arc::new(RulesClassifier::default_rules()) as Arc<dyn Classifier>);
    Arc::new(Guarded::new(anthropic(sb), config, clock, fb).unwrap())
}

fn cached(ttl: u64) -> GuardConfig {
    GuardConfig {
        cache_ttl_secs: ttl,
        concurrency_max: 16,
        calls_per_minute: 100_000,
        ..GuardConfig::default()
    }
}

/// Alert `i` of fingerprint `fp`: same content, its own IDs and timestamps.
fn alert(fp: usize, i: usize) -> NormalizedEvent {
    let mut e = common::event(ImpactLevel::High);
    e.fingerprint = Fingerprint::from(format!("{fp:032x}").as_str());
    e.summary = format!("error rate above 5% on checkout api (series {fp})");
    e.correlation_ids
        .insert("alertmanager".into(), format!("alert-{fp}-{i}"));
    let shift = ChronoDuration::milliseconds(i64::try_from(i).unwrap());
    e.received_at += shift;
    e.occurred_at += shift;
    e
}

fn model_calls(sb: &Sandbox) -> usize {
    sb.state().requests(Target::Anthropic).len()
}

/// Classifies every event with `in_flight` concurrent callers; returns the outcomes' classifier names.
async fn storm(
    g: Arc<Guarded<AnthropicClassifier>>,
    events: Vec<NormalizedEvent>,
    in_flight: usize,
) -> Vec<String> {
    let events = Arc::new(events);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (g, events, next) = (g.clone(), events.clone(), next.clone());
        tasks.spawn(async move {
            let teams = common::teams();
            let mut names = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(e) = events.get(i) else { break };
                let out = g.classify(e, &teams).await;
                assert!(out.result.is_ok(), "{:?}", out.result);
                names.push(out.info.classifier);
            }
            names
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_of_5000_alerts_with_one_fingerprint_makes_exactly_one_model_call() {
    let sb = sandbox().await;
    let g = guarded(
        &sb,
        cached(600),
        Arc::new(ManualGuardClock::default()),
        false,
    );
    let events: Vec<_> = (0..5_000).map(|i| alert(7, i)).collect();
    let names = storm(g.clone(), events, 64).await;
    assert_eq!(names.len(), 5_000);
    assert_eq!(model_calls(&sb), 1);
    assert_eq!(g.stats().provider_calls, 1);
    assert_eq!(names.iter().filter(|n| *n == "anthropic").count(), 1);
    assert_eq!(
        names.iter().filter(|n| *n == "anthropic (cached)").count(),
        4_999
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_of_5000_alerts_with_50_fingerprints_makes_50_model_calls() {
    let sb = sandbox().await;
    let g = guarded(
        &sb,
        cached(600),
        Arc::new(ManualGuardClock::default()),
        false,
    );
    // Interleaved, so fingerprints overlap in flight.
    let events: Vec<_> = (0..5_000).map(|i| alert(i % 50, i)).collect();
    let names = storm(g.clone(), events, 64).await;
    assert_eq!(names.len(), 5_000);
    assert_eq!(model_calls(&sb), 50);
    assert_eq!(g.stats().provider_calls, 50);
    let s = g.stats();
    assert_eq!(s.cache_hits + s.coalesced, 4_950, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_calls_share_one_model_call_even_without_cache_retention() {
    let sb = sandbox().await;
    // The first model call is slow, so all 100 callers overlap with it.
    sb.state()
        .inject_fault(FaultSpec {
            target: "anthropic".into(),
            status: None,
            count: 1,
            retry_after_secs: None,
            delay_ms: Some(300),
        })
        .unwrap();
    let g = guarded(&sb, cached(0), Arc::new(ManualGuardClock::default()), false);
    let events: Vec<_> = (0..100).map(|i| alert(1, i)).collect();
    storm(g.clone(), events, 100).await;
    assert_eq!(model_calls(&sb), 1);
    assert_eq!(g.stats().coalesced, 99);
    // Nothing retained: the next identical call asks again.
    let out = g.classify(&alert(1, 0), &common::teams()).await;
    assert_eq!(out.info.classifier, "anthropic");
    assert_eq!(model_calls(&sb), 2);
    assert_eq!(g.cache_len(), 0);
}

#[tokio::test]
async fn cached_answers_expire_after_the_ttl_on_the_injected_clock() {
    let sb = sandbox().await;
    let clock = Arc::new(ManualGuardClock::default());
    let g = guarded(&sb, cached(60), clock.clone(), false);
    let teams = common::teams();
    let first = g.classify(&alert(3, 0), &teams).await;
    assert!(first.usage.is_some());
    clock.advance_ms(59_999);
    let hit = g.classify(&alert(3, 1), &teams).await;
    assert_eq!(hit.info.classifier, "anthropic (cached)");
    assert_eq!(hit.usage, None, "a cache hit costs no tokens");
    assert_eq!(hit.raw_output, first.raw_output);
    assert_eq!(hit.prompt_sha256, first.prompt_sha256);
    assert_eq!(hit.result, first.result);
    assert_eq!(model_calls(&sb), 1);
    clock.advance_ms(1);
    let again = g.classify(&alert(3, 2), &teams).await;
    assert_eq!(again.info.classifier, "anthropic");
    assert_eq!(model_calls(&sb), 2);
}

#[test]
fn the_cache_key_ignores_timestamps_and_ids_but_not_content_or_teams() {
    let teams = common::teams();
    let a = cache_key(&alert(1, 0), &teams);
    assert_eq!(a, cache_key(&alert(1, 4_000), &teams));
    assert!(a.starts_with(&format!("{:032x}:", 1)));
    let mut other = alert(1, 0);
    other.environment = tg_model::Environment::Staging;
    assert_ne!(a, cache_key(&other, &teams));
    let mut t2 = teams.clone();
    t2.known_teams.insert("new-team".into());
    assert_ne!(a, cache_key(&alert(1, 0), &t2));
}

fn fault(status: Option<u16>, count: u32, delay_ms: Option<u64>) -> FaultSpec {
    FaultSpec {
        target: "anthropic".into(),
        status,
        count,
        retry_after_secs: None,
        delay_ms,
    }
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_and_probes_after_the_cooldown() {
    let sb = sandbox().await;
    let clock = Arc::new(ManualGuardClock::default());
    let g = guarded(
        &sb,
        GuardConfig {
            breaker_failures: 3,
            breaker_cooldown_secs: 30,
            ..cached(600)
        },
        clock.clone(),
        false,
    );
    let teams = common::teams();
    sb.state().inject_fault(fault(Some(529), 4, None)).unwrap();
    for i in 0..3 {
        let r = g.classify(&alert(i, 0), &teams).await.result.unwrap_err();
        assert_eq!(r.reason, reason::PROVIDER_OVERLOADED);
    }
    // Open: refused without a model call, fail closed.
    let r = g.classify(&alert(10, 0), &teams).await.result.unwrap_err();
    assert_eq!(r.reason, reason::UNAVAILABLE_CIRCUIT_OPEN);
    assert_eq!(model_calls(&sb), 3);
    // Failures are not cached: the same event is refused again, still no call.
    clock.advance_ms(29_999);
    let r = g.classify(&alert(0, 0), &teams).await.result.unwrap_err();
    assert_eq!(r.reason, reason::UNAVAILABLE_CIRCUIT_OPEN);
    assert_eq!(model_calls(&sb), 3);
    // Half-open: one probe; it fails (the 4th fault), so the breaker opens again.
    clock.advance_ms(1);
    let r = g.classify(&alert(0, 0), &teams).await.result.unwrap_err();
    assert_eq!(r.reason, reason::PROVIDER_OVERLOADED);
    assert_eq!(model_calls(&sb), 4);
    let r = g.classify(&alert(0, 0), &teams).await.result.unwrap_err();
    assert_eq!(r.reason, reason::UNAVAILABLE_CIRCUIT_OPEN);
    // After another cool-down the probe succeeds and the breaker closes.
    clock.advance_ms(30_000);
    assert!(g.classify(&alert(0, 0), &teams).await.result.is_ok());
    assert!(g.classify(&alert(1, 0), &teams).await.result.is_ok());
    assert_eq!(model_calls(&sb), 6);
}

#[tokio::test]
async fn over_budget_calls_fail_closed_until_the_bucket_refills() {
    let sb = sandbox().await;
    let clock = Arc::new(ManualGuardClock::default());
    let g = guarded(
        &sb,
        GuardConfig {
            calls_per_minute: 3,
            ..cached(600)
        },
        clock.clone(),
        false,
    );
    let teams = common::teams();
    for i in 0..3 {
        assert!(g.classify(&alert(i, 0), &teams).await.result.is_ok());
    }
    let r = g.classify(&alert(3, 0), &teams).await.result.unwrap_err();
    assert_eq!(r.reason, reason::UNAVAILABLE_OVER_BUDGET);
    // A cached answer is still served over budget.
    assert!(g.classify(&alert(0, 9), &teams).await.result.is_ok());
    assert_eq!(model_calls(&sb), 3);
    clock.advance_ms(20_000);
    assert!(g.classify(&alert(3, 0), &teams).await.result.is_ok());
    assert_eq!(model_calls(&sb), 4);
}

#[tokio::test]
async fn a_slow_model_is_cut_by_the_call_timeout_and_a_full_pool_by_the_permit_wait() {
    let sb = sandbox().await;
    let g = guarded(
        &sb,
        GuardConfig {
            call_timeout_ms: 150,
            concurrency_max: 1,
            permit_wait_ms: 50,
            ..cached(600)
        },
        Arc::new(ManualGuardClock::default()),
        false,
    );
    sb.state()
        .inject_fault(fault(None, 1, Some(1_000)))
        .unwrap();
    let teams = common::teams();
    let (a, b) = (alert(1, 0), alert(2, 0));
    let (slow, saturated) = tokio::join!(g.classify(&a, &teams), async {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        g.classify(&b, &teams).await
    });
    assert_eq!(slow.result.unwrap_err().reason, reason::UNAVAILABLE_TIMEOUT);
    assert_eq!(
        saturated.result.unwrap_err().reason,
        reason::UNAVAILABLE_SATURATED
    );
    // One call reached the provider (the emulator records it once it answers).
    assert_eq!(g.stats().provider_calls, 1);
    assert_eq!(g.stats().unavailable, 1);
}

#[tokio::test]
async fn with_the_rules_fallback_an_unavailable_provider_is_answered_and_marked() {
    let sb = sandbox().await;
    let g = guarded(
        &sb,
        GuardConfig {
            breaker_failures: 1,
            ..cached(600)
        },
        Arc::new(ManualGuardClock::default()),
        true,
    );
    sb.state().inject_fault(fault(Some(529), 1, None)).unwrap();
    let teams = common::teams();
    let first = g.classify(&alert(1, 0), &teams).await;
    assert!(first.result.is_ok(), "{:?}", first.result);
    assert_eq!(
        first.info.classifier,
        "rules (fallback from anthropic: provider_error:overloaded)"
    );
    let second = g.classify(&alert(2, 0), &teams).await;
    assert_eq!(
        second.info.classifier,
        "rules (fallback from anthropic: provider_unavailable:circuit_open)"
    );
    assert_eq!(model_calls(&sb), 1);
    assert_eq!(g.stats().fallbacks, 2);
    // Fallback answers are never cached: once the provider is back it answers.
    assert_eq!(g.cache_len(), 0);
}
