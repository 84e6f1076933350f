//! Chaos: the CI database-outage storm with every action emulator (ServiceNow,
//! PagerDuty, the chat bridge) failing 30% of its calls in all the ways (500,
//! 429 with Retry-After, timeouts, connection resets). Every executed action
//! must reach its emulator exactly once: one incident per executed ticket and
//! MIM (by correlation_id), one trigger per executed page, one bridge post per
//! MIM (the simulator's invariants compare the emulators' records with the
//! audit trail), and every run audited once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use serde_yaml_ng::{Mapping, Value};
use tg_sandbox::{ChaosKind, ChaosSpec};
use triage_gate_sim::{BASE_CONFIG, Options, Scenario, run};

/// The base config's `actions` section with short client timeouts (the
/// emulators stall `timeout` calls longer), enough attempts to ride out 30%
/// failures, and a fast idle poll.
fn chaos_actions() -> Value {
    let base: Mapping = serde_yaml_ng::from_str(BASE_CONFIG).unwrap();
    let mut actions = base.get("actions").unwrap().clone();
    let m = actions.as_mapping_mut().unwrap();
    for target in ["servicenow", "pagerduty", "bridge"] {
        m.get_mut(target)
            .unwrap()
            .as_mapping_mut()
            .unwrap()
            .insert("timeout_ms".into(), 300.into());
    }
    m.insert(
        "retry".into(),
        serde_yaml_ng::from_str(
            "{ attempts_max: 15, backoff_base_ms: 50, backoff_max_ms: 1000, retry_after_max_secs: 1, jitter_seed: 7 }",
        )
        .unwrap(),
    );
    m.insert(
        "concurrency".into(),
        serde_yaml_ng::from_str("{ servicenow: 4, pagerduty: 4, bridge: 1 }").unwrap(),
    );
    m.insert(
        "outbox".into(),
        serde_yaml_ng::from_str("{ lease_ms: 60000, idle_poll_ms: 20 }").unwrap(),
    );
    actions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_with_30_percent_action_faults_delivers_every_action_exactly_once() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/database-outage-ci.yaml");
    let mut scenario = Scenario::from_yaml(&std::fs::read_to_string(&path).unwrap()).unwrap();
    scenario.config.insert("actions".into(), chaos_actions());
    scenario.chaos = ["servicenow", "pagerduty", "bridge"]
        .into_iter()
        .enumerate()
        .map(|(i, target)| ChaosSpec {
            target: target.into(),
            fraction: 0.3,
            seed: 30 + i as u64,
            kinds: vec![
                ChaosKind::ServerError,
                ChaosKind::Throttled,
                ChaosKind::Timeout,
                ChaosKind::Reset,
            ],
            timeout_ms: 700,
            retry_after_secs: 1,
            count: None,
        })
        .collect();
    let report = run(
        &scenario,
        &Options {
            seed: 1,
            scale: 1.0,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    println!("{}", report.render());
    assert!(
        report.violations.is_empty(),
        "chaos seed 1: {:#?}",
        report.violations
    );
    assert!(
        report.faulted_action_calls >= 10,
        "the chaos hit: {} faulted calls",
        report.faulted_action_calls
    );
    assert_eq!(report.totals.mims, 1);
    assert!(report.totals.tickets >= 10, "{}", report.totals.tickets);
    assert_eq!(report.bridge_posts, 1);
    assert_eq!(report.incidents, report.totals.tickets + report.totals.mims);
    assert_eq!(report.pagerduty_triggers, report.totals.pages);
}
