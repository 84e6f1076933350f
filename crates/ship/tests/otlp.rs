//! The OTLP/HTTP logs sink against the sandbox's receiver, over real HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::{assert_no_secret, env, one, recs};
use tg_config::MapSecrets;
use tg_sandbox::{FaultSpec, Sandbox, SandboxConfig};
use tg_ship::{ShipError, Sink};

const TOKEN: &str = "otlp-bearer-3e9d-SECRET";

fn sink(sb: &Sandbox, token: Option<&str>) -> Box<dyn Sink> {
    let (line, secrets) = match token {
        Some(t) => (
            "      token: {env: OTLP}\n",
            MapSecrets::default().with(&env("OTLP"), t),
        ),
        None => ("", MapSecrets::default()),
    };
    let yaml = format!(
        "audit:\n  sinks:\n    - name: otel\n      type: otlp\n      endpoint: {}\n{line}",
        sb.otlp_url()
    );
    one(&yaml, &secrets)
}

fn received(sb: &Sandbox) -> Vec<u64> {
    sb.state()
        .otlp_records()
        .iter()
        .map(|r| {
            let body = r.body["stringValue"].as_str().unwrap();
            serde_json::from_str::<serde_json::Value>(body).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn batches_arrive_once_in_order_with_attributes() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    sb.state().otlp_require_token(Some(TOKEN));
    let s = sink(&sb, Some(TOKEN));
    let first = recs(1..=4);
    s.send(&first).await.unwrap();
    s.send(&recs(5..=6)).await.unwrap();
    assert_eq!(received(&sb), [1, 2, 3, 4, 5, 6]);
    let r = &sb.state().otlp_records()[0];
    assert_eq!(
        r.resource_attributes,
        serde_json::json!([{"key": "service.name", "value": {"stringValue": "triage-gate"}}])
    );
    assert_eq!(
        r.time_unix_nano,
        first[0].time.timestamp_nanos_opt().unwrap().to_string()
    );
    let attrs = r.attributes.as_array().unwrap();
    assert!(attrs.contains(&serde_json::json!({"key": "seq", "value": {"intValue": "1"}})));
    assert!(
        attrs.contains(&serde_json::json!({"key": "run_id", "value": {"stringValue": "run_1"}}))
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_without_quoting_it() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    sb.state().otlp_require_token(Some(TOKEN));
    let wrong = "otlp-bearer-WRONG-11aa";
    let err = sink(&sb, Some(wrong)).send(&recs(1..=1)).await.unwrap_err();
    assert!(
        matches!(&err, ShipError::Refused { reason, .. } if reason.contains("401")),
        "{err:?}"
    );
    assert_no_secret(&err, wrong);
    assert_no_secret(&err, TOKEN);
}

#[tokio::test]
async fn unavailable_is_retryable_with_retry_after_then_delivered() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let s = sink(&sb, None);
    for status in [429, 503, 504] {
        sb.state()
            .inject_fault(FaultSpec {
                target: "otlp".into(),
                status: Some(status),
                count: 1,
                retry_after_secs: Some(2),
                delay_ms: None,
            })
            .unwrap();
        match s.send(&recs(1..=2)).await.unwrap_err() {
            ShipError::Retryable { retry_after, .. } if status != 504 => {
                assert_eq!(retry_after, Some(Duration::from_secs(2)), "{status}");
            }
            ShipError::Retryable { .. } => {}
            other => panic!("{status}: {other:?}"),
        }
    }
    sb.state()
        .inject_fault(FaultSpec {
            target: "otlp".into(),
            status: Some(400),
            count: 1,
            retry_after_secs: None,
            delay_ms: None,
        })
        .unwrap();
    assert!(matches!(
        s.send(&recs(1..=2)).await.unwrap_err(),
        ShipError::Refused { .. }
    ));
    s.send(&recs(1..=2)).await.unwrap();
    assert_eq!(received(&sb), [1, 2]);
}

#[tokio::test]
async fn a_partial_success_is_a_refusal() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    sb.state().otlp_reject_next(1);
    let err = sink(&sb, None).send(&recs(1..=3)).await.unwrap_err();
    assert!(
        matches!(&err, ShipError::Refused { reason, .. } if reason.contains("rejected 1 of 3")),
        "{err:?}"
    );
}
