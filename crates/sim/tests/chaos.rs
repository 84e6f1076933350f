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

use triage_gate_sim::{Options, Scenario, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_with_30_percent_action_faults_delivers_every_action_exactly_once() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/database-outage-ci.yaml");
    let mut scenario = Scenario::from_yaml(&std::fs::read_to_string(&path).unwrap()).unwrap();
    scenario.with_action_chaos(0.3, 30).unwrap();
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
