//! The CloudWatch Logs sink against the sandbox's emulator (which verifies
//! SigV4 and every batch rule), over real HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use common::{assert_no_secret, env, one, rec, recs};
use tg_config::MapSecrets;
use tg_sandbox::{
    DEFAULT_BEDROCK_ACCESS_KEY_ID, DEFAULT_BEDROCK_SECRET_ACCESS_KEY, FaultSpec, Sandbox,
    SandboxConfig, Target,
};
use tg_ship::{ShipError, ShipRecord, Sink, cloudwatch_batch_bytes};

const GROUP: &str = "/triage-gate/audit";
const STREAM: &str = "gate-1";

async fn sandbox() -> Sandbox {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    sb.state().cloudwatch_create_log_stream(GROUP, STREAM);
    sb
}

fn sink_with(sb: &Sandbox, extra: &str, secret: &str) -> Box<dyn Sink> {
    let yaml = format!(
        "audit:\n  sinks:\n    - name: cw\n      type: cloudwatch\n      region: eu-west-1\n      endpoint: {}\n      log_group_name: {GROUP}\n      log_stream_name: {STREAM}\n      credentials:\n        access_key_id: {{env: AK}}\n        secret_access_key: {{env: SK}}\n        session_token: null\n{extra}",
        sb.cloudwatch_url()
    );
    let secrets = MapSecrets::default()
        .with(&env("AK"), DEFAULT_BEDROCK_ACCESS_KEY_ID)
        .with(&env("SK"), secret);
    one(&yaml, &secrets)
}

fn sink(sb: &Sandbox, extra: &str) -> Box<dyn Sink> {
    sink_with(sb, extra, DEFAULT_BEDROCK_SECRET_ACCESS_KEY)
}

fn stored(sb: &Sandbox) -> Vec<u64> {
    sb.state()
        .cloudwatch_events()
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.message).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn batches_arrive_once_in_order_as_messages() {
    let sb = sandbox().await;
    let s = sink(&sb, "");
    for range in [1..=3, 4..=9, 10..=10] {
        s.send(&recs(range)).await.unwrap();
    }
    assert_eq!(stored(&sb), (1..=10).collect::<Vec<_>>());
    let batch = recs(11..=11);
    s.send(&batch).await.unwrap();
    let last = sb.state().cloudwatch_events().pop().unwrap();
    assert_eq!(last.message, batch[0].json);
    assert_eq!(last.timestamp, batch[0].time.timestamp_millis());
    assert_eq!(
        (last.log_group_name.as_str(), last.log_stream_name.as_str()),
        (GROUP, STREAM)
    );
}

/// A record whose JSON is exactly `len` bytes.
fn sized(seq: u64, len: usize) -> ShipRecord {
    let mut r = rec(seq, chrono::Utc::now());
    let pad = len - r.json.len() - ",\"pad\":\"\"".len();
    r.json = format!(
        "{},\"pad\":\"{}\"}}",
        r.json.trim_end_matches('}'),
        "p".repeat(pad)
    );
    assert_eq!(r.json.len(), len);
    r
}

#[tokio::test]
async fn limits_match_the_api_exactly_and_an_over_limit_batch_is_never_sent() {
    let sb = sandbox().await;
    let default = sink(&sb, "").limits();
    assert_eq!(default.records_max, 10_000);
    assert_eq!(default.bytes_max, 1_048_576 - 26 * 10_000);
    // Two records filling the limits to the byte: accepted by the emulator,
    // which counts 26 bytes per event on top (1,048,576 in all).
    let s = sink(&sb, "      batch_records_max: 2\n");
    let l = s.limits();
    assert_eq!((l.records_max, l.bytes_max), (2, 1_048_576 - 52));
    let full = vec![
        sized(1, l.bytes_max / 2),
        sized(2, l.bytes_max - l.bytes_max / 2),
    ];
    assert!(l.admits(&full));
    assert_eq!(cloudwatch_batch_bytes(&full), 1_048_576);
    s.send(&full).await.unwrap();
    assert_eq!(stored(&sb), [1, 2]);
    // One byte more: refused here, before any request (the emulator refuses
    // 1,048,577 bytes: crates/sandbox/tests/cloudwatch.rs).
    let before = sb.state().requests(Target::Cloudwatch).len();
    let over = vec![
        sized(3, l.bytes_max / 2),
        sized(4, l.bytes_max - l.bytes_max / 2 + 1),
    ];
    assert!(!l.admits(&over));
    let err = s.send(&over).await.unwrap_err();
    assert!(matches!(err, ShipError::Refused { .. }), "{err:?}");
    let err = s.send(&recs(5..=7)).await.unwrap_err();
    assert!(matches!(err, ShipError::Refused { .. }), "{err:?}");
    assert_eq!(
        sb.state().requests(Target::Cloudwatch).len(),
        before,
        "nothing sent"
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_without_quoting_it() {
    let sb = sandbox().await;
    let wrong = "wrong/Secret/Key/EXAMPLE999999999999999";
    let err = sink_with(&sb, "", wrong)
        .send(&recs(1..=2))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ShipError::Refused { reason, .. } if reason.contains("InvalidSignatureException")),
        "{err:?}"
    );
    assert_no_secret(&err, wrong);
    assert_no_secret(&err, DEFAULT_BEDROCK_SECRET_ACCESS_KEY);
    assert!(stored(&sb).is_empty());
}

#[tokio::test]
async fn throttling_and_outages_are_retryable() {
    let sb = sandbox().await;
    let s = sink(&sb, "");
    for status in [400, 503] {
        sb.state()
            .inject_fault(FaultSpec {
                target: "cloudwatch".into(),
                status: Some(status),
                count: 1,
                retry_after_secs: None,
                delay_ms: None,
            })
            .unwrap();
        let err = s.send(&recs(1..=2)).await.unwrap_err();
        assert!(err.is_retryable(), "{status}: {err:?}");
    }
    s.send(&recs(1..=2)).await.unwrap();
    assert_eq!(stored(&sb), [1, 2]);
}

#[tokio::test]
async fn a_missing_stream_is_refused_or_created() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    sb.state().cloudwatch_create_log_group(GROUP);
    let err = sink(&sb, "").send(&recs(1..=1)).await.unwrap_err();
    assert!(
        matches!(&err, ShipError::Refused { reason, .. } if reason.contains("ResourceNotFoundException")),
        "{err:?}"
    );
    sink(&sb, "      create_stream: true\n")
        .send(&recs(1..=2))
        .await
        .unwrap();
    assert_eq!(stored(&sb), [1, 2]);
}

#[tokio::test]
async fn a_clock_step_back_and_a_batch_over_a_day_are_still_delivered_in_order() {
    let sb = sandbox().await;
    let now = chrono::Utc::now();
    let hours = |h: i64| now - chrono::Duration::hours(h);
    let batch = vec![
        rec(1, hours(30)),
        rec(2, hours(31)), // the clock stepped back
        rec(3, hours(2)),
        rec(4, hours(1)),
    ];
    sink(&sb, "").send(&batch).await.unwrap();
    assert_eq!(stored(&sb), [1, 2, 3, 4]);
    let puts = sb
        .state()
        .requests(Target::Cloudwatch)
        .into_iter()
        .filter(|r| r.status == 200)
        .count();
    assert_eq!(puts, 2, "split at the 24 h boundary");
}

#[tokio::test]
async fn an_event_cloudwatch_rejects_is_named() {
    let sb = sandbox().await;
    let old = chrono::Utc::now() - chrono::Duration::days(15);
    let batch = vec![rec(8, old), rec(9, old)];
    let err = sink(&sb, "").send(&batch).await.unwrap_err();
    assert!(
        matches!(&err, ShipError::Refused { seq: Some(8), reason } if reason.contains("older than 14 days")),
        "{err:?}"
    );
}
