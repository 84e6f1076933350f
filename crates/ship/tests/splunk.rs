//! The Splunk HEC sink against the sandbox's HEC emulator, over real HTTP.

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
use tg_sandbox::{OutageSpec, Sandbox, SandboxConfig};
use tg_ship::{ShipError, Sink};

const TOKEN: &str = "hec-token-5f1e-SECRET";

async fn sandbox() -> Sandbox {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    sb.state().splunk_set_token(TOKEN);
    sb
}

fn sink(sb: &Sandbox, extra: &str, token: &str) -> Box<dyn Sink> {
    let yaml = format!(
        "audit:\n  sinks:\n    - name: splunk\n      type: splunk_hec\n      url: {}\n      token: {{env: HEC}}\n      index: audit\n      ack_poll_ms: 10\n{extra}",
        sb.splunk_url()
    );
    one(&yaml, &MapSecrets::default().with(&env("HEC"), token))
}

/// The `seq` of every indexed event, in order.
fn indexed(sb: &Sandbox) -> Vec<u64> {
    sb.state()
        .splunk_events()
        .iter()
        .map(|e| e.event["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn batches_arrive_once_in_order_with_seq_and_hash_fields() {
    let sb = sandbox().await;
    let s = sink(&sb, "", TOKEN);
    assert_eq!(s.name(), "splunk");
    assert_eq!(s.limits().records_max, 500);
    for range in [1..=5, 6..=10, 11..=12] {
        s.send(&recs(range)).await.unwrap();
    }
    assert_eq!(indexed(&sb), (1..=12).collect::<Vec<_>>());
    let e = &sb.state().splunk_events()[6];
    assert_eq!(e.fields["seq"], "7");
    assert_eq!(e.fields["hash"], format!("{:064x}", 7));
    assert_eq!(e.fields["run_id"], "run_7");
    assert_eq!(e.index.as_deref(), Some("audit"));
    assert_eq!(e.source.as_deref(), Some("triage-gate"));
    assert_eq!(e.sourcetype.as_deref(), Some("triage-gate:audit"));
    assert!(e.time.is_some());
    assert!(e.event.is_object(), "the record is an object, not a string");
}

#[tokio::test]
async fn down_is_retryable_then_up_delivers() {
    let sb = sandbox().await;
    let s = sink(&sb, "", TOKEN);
    sb.state()
        .inject_outage(OutageSpec {
            target: "splunk".into(),
            down_for_ms: 60_000,
            status: None,
            reset: false,
            retry_after_secs: Some(4),
        })
        .unwrap();
    let batch = recs(1..=3);
    let err = s.send(&batch).await.unwrap_err();
    match &err {
        ShipError::Retryable {
            reason,
            retry_after,
        } => {
            assert!(reason.contains("503 code 9"), "{reason}");
            assert_eq!(*retry_after, Some(Duration::from_secs(4)));
        }
        other => panic!("{other:?}"),
    }
    assert!(indexed(&sb).is_empty());
    sb.state().clear_faults();
    s.send(&batch).await.unwrap();
    assert_eq!(indexed(&sb), [1, 2, 3]);
    // A host that is gone: connection refused is retryable too.
    let gone = {
        let url = sb.splunk_url();
        sb.shutdown().await;
        let yaml = format!(
            "audit:\n  sinks:\n    - name: splunk\n      type: splunk_hec\n      url: {url}\n      token: {{env: HEC}}\n      timeout_ms: 2000\n"
        );
        one(&yaml, &MapSecrets::default().with(&env("HEC"), TOKEN))
    };
    assert!(gone.send(&recs(4..=4)).await.unwrap_err().is_retryable());
}

#[tokio::test]
async fn a_wrong_token_is_refused_without_quoting_it() {
    let sb = sandbox().await;
    let wrong = "hec-token-WRONG-7c2a";
    let err = sink(&sb, "", wrong).send(&recs(1..=2)).await.unwrap_err();
    assert!(
        matches!(&err, ShipError::Refused { reason, seq: None } if reason.contains("403 code 4")),
        "{err:?}"
    );
    assert_no_secret(&err, wrong);
    assert_no_secret(&err, TOKEN);
    assert!(indexed(&sb).is_empty());
}

#[tokio::test]
async fn an_invalid_event_number_names_the_record() {
    let sb = sandbox().await;
    sb.state().splunk_allow_indexes(Some(vec!["main".into()]));
    let err = sink(&sb, "", TOKEN).send(&recs(41..=43)).await.unwrap_err();
    assert!(
        matches!(&err, ShipError::Refused { reason, seq: Some(41) } if reason.contains("code 7")),
        "{err:?}"
    );
}

#[tokio::test]
async fn with_ack_ok_means_acknowledged_and_a_missing_ack_is_in_doubt() {
    let sb = sandbox().await;
    sb.state().splunk_set_ack(true);
    let s = sink(&sb, "      ack: true\n      ack_timeout_ms: 400\n", TOKEN);
    s.send(&recs(1..=4)).await.unwrap();
    let events = sb.state().splunk_events();
    assert!(
        events
            .iter()
            .all(|e| e.ack_id == Some(0) && e.channel.is_some())
    );
    let acks = sb
        .state()
        .requests(tg_sandbox::Target::Splunk)
        .into_iter()
        .filter(|r| r.path.ends_with("/ack"))
        .count();
    assert!(acks >= 1, "the sink polled for its ack");

    sb.state().splunk_hold_acks(true);
    let started = std::time::Instant::now();
    let err = s.send(&recs(5..=6)).await.unwrap_err();
    assert!(
        matches!(&err, ShipError::Retryable { reason, .. } if reason.contains("not acknowledged") && reason.contains("may duplicate")),
        "{err:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(started.elapsed() < Duration::from_secs(5), "bounded wait");
    // The resend after the in-doubt failure duplicates: `seq` lets searches dedupe.
    sb.state().splunk_hold_acks(false);
    s.send(&recs(5..=6)).await.unwrap();
    assert_eq!(indexed(&sb), [1, 2, 3, 4, 5, 6, 5, 6]);

    // ack configured but off on the token: refused loudly (nothing to confirm with).
    sb.state().splunk_set_ack(false);
    let err = s.send(&recs(7..=7)).await.unwrap_err();
    assert!(
        matches!(&err, ShipError::Refused { reason, .. } if reason.contains("ackId")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_dropped_connection_after_indexing_is_retryable() {
    let sb = sandbox().await;
    sb.state().splunk_drop_after_index(1);
    let s = sink(&sb, "", TOKEN);
    let err = s.send(&recs(1..=2)).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(
        indexed(&sb),
        [1, 2],
        "indexed although the client cannot know"
    );
}

#[tokio::test]
async fn over_limit_batches_are_never_sent() {
    let sb = sandbox().await;
    let s = sink(&sb, "      batch_records_max: 2\n", TOKEN);
    let err = s.send(&recs(1..=3)).await.unwrap_err();
    assert!(
        matches!(err, ShipError::Refused { seq: None, .. }),
        "{err:?}"
    );
    assert!(sb.state().requests(tg_sandbox::Target::Splunk).is_empty());
}

#[tokio::test]
async fn build_errors_name_the_key_not_the_value() {
    let cfg = common::sinks(
        "audit:\n  sinks:\n    - name: s\n      type: splunk_hec\n      url: http://127.0.0.1:1\n      token: {env: MISSING_HEC}\n",
    );
    let err = match tg_ship::build(
        &cfg,
        &MapSecrets::default(),
        &tg_identity::TrustLoader::new(None),
    ) {
        Err(e) => e,
        Ok(_) => panic!("a missing secret must fail the build"),
    };
    assert!(err.starts_with("audit.sinks[0].token: "), "{err}");
    assert!(err.contains("env:MISSING_HEC"), "{err}");
}
