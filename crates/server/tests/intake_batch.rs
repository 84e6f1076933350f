//! The intake's batch entry (`tg_server::accept_in_order`, what the simulator
//! hands a time step to) and a repeat decided inside its wave: real gate,
//! real SQLite, the Claude emulator as the model.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::{Harness, answer, event, tg_server};
use tg_model::Source;

/// Waits until every accepted run is audited (bounded).
async fn settled(h: &Harness) -> Vec<tg_store::StoredRun> {
    let store = &h.gate.as_ref().expect("gate running").state.store;
    for _ in 0..500 {
        if store.open_runs().await.expect("store readable").total() == 0 {
            return store
                .runs_in_order(0, 100)
                .await
                .expect("store readable")
                .into_iter()
                .map(|(_, r)| r)
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("runs still open after 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_its_order_and_a_repeat_in_it_is_a_duplicate_decided_without_the_model() {
    let h = Harness::start().await;
    h.script_tool(
        "batch-a",
        answer("medium", 0.9, true, false, false, "payments"),
    );
    h.script_tool(
        "batch-b",
        answer("low", 0.9, false, false, false, "payments"),
    );
    let a = serde_json::to_vec(&event("checkout", "A1", "prod", "datadog", "batch-a")).unwrap();
    let b = serde_json::to_vec(&event("checkout", "B1", "prod", "datadog", "batch-b")).unwrap();
    let state = &h.gate.as_ref().expect("gate running").state;
    let accepted = tg_server::accept_in_order(
        state,
        &[
            (Source::Generic, a.as_slice()),
            (Source::Generic, b.as_slice()),
            (Source::Generic, a.as_slice()),
        ],
    )
    .await
    .expect("accepted");
    assert_eq!(accepted, 3);

    let runs = settled(&h).await;
    let names: Vec<&str> = runs.iter().map(|r| r.event.alert_name.as_str()).collect();
    assert_eq!(
        names,
        ["A1", "B1", "A1"],
        "acceptance order is the order given"
    );
    // The repeat came in the same claim as the run it repeats: its pre-check
    // ran on the state that run's decision left, so it never reached the model.
    let skipped = runs[2]
        .classification
        .as_ref()
        .expect("classification record")["skipped"]
        .as_str()
        .map(str::to_owned);
    assert_eq!(
        skipped,
        Some(format!("duplicate of {}", runs[0].run_id)),
        "{:?}",
        runs[2].classification
    );
    assert_eq!(h.model_calls(), 2, "one model call per distinct alert");
    let first = runs[0].decision.as_ref().expect("decided");
    let repeat = runs[2].decision.as_ref().expect("decided");
    assert_ne!(first.actions, repeat.actions, "the repeat is suppressed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_bad_body_is_refused_whole_and_stores_nothing() {
    let h = Harness::start().await;
    let good =
        serde_json::to_vec(&event("checkout", "A1", "prod", "datadog", "bad-batch")).unwrap();
    let state = &h.gate.as_ref().expect("gate running").state;
    let refused = tg_server::accept_in_order(
        state,
        &[
            (Source::Generic, good.as_slice()),
            (Source::Generic, b"{not json".as_slice()),
        ],
    )
    .await
    .expect_err("refused");
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.kind.ends_with("malformed-event"), "{refused:?}");
    assert_eq!(
        h.runs_total().await,
        0,
        "nothing of a refused batch is stored"
    );
}
