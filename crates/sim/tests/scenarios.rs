//! Every shipped scenario (CI variants) through the real gate: the storm
//! invariants hold and the expectations of each scenario are met.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use triage_gate_sim::{Options, Scenario, run};

fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios")
        .join(format!("{name}.yaml"));
    Scenario::from_yaml(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn holds(name: &str, seed: u64) -> triage_gate_sim::Report {
    let report = run(
        &scenario(name),
        &Options {
            seed,
            scale: 1.0,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    println!("{}", report.render());
    assert!(
        report.violations.is_empty(),
        "{name} seed {seed}: {:#?}",
        report.violations
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_ci_pages_within_budget_and_declares_one_mim() {
    let r = holds("database-outage-ci", 1).await;
    assert_eq!(r.totals.mims, 1);
    // Splunk was down for 10 simulated minutes, and still holds the whole chain
    // exactly once, in order (a broken invariant otherwise), as does CloudWatch.
    assert!(r.sink_calls_refused > 0, "the Splunk outage happened");
    assert!(r.shipped["splunk"] > r.audit_records, "{:?}", r.shipped);
    assert_eq!(r.shipped["splunk"], r.shipped["cloudwatch"]);
    assert!(
        r.totals.suppressed > r.totals.tickets,
        "the storm is mostly suppressed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_alert_pages_once_per_window() {
    let r = holds("flapping-alert", 1).await;
    assert!(
        r.held.keys().any(|k| k.contains("page.flap")),
        "{:?}",
        r.held
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_storm_acts_on_nothing() {
    let r = holds("staging-storm", 3).await;
    assert_eq!((r.totals.tickets, r.totals.pages, r.totals.mims), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_burn_pages_once_on_escalation() {
    let r = holds("slow-burn", 1).await;
    assert_eq!(r.totals.pages, 1);
    assert_eq!(r.totals.tickets, 1, "the escalation keeps the open ticket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_incidents_each_act() {
    let r = holds("overlapping-incidents", 5).await;
    assert!(r.totals.pages >= 2, "one page per incident at least");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_decisions() {
    let s = scenario("flapping-alert");
    let a = run(
        &s,
        &Options {
            seed: 9,
            scale: 1.0,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let b = run(
        &s,
        &Options {
            seed: 9,
            scale: 1.0,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(a.minutes, b.minutes);
    assert_eq!(a.held, b.held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_alerts_share_one_incident_that_resolves_once() {
    // `holds` checks the invariants and the scenario's expectations (1 ticket,
    // 2 work notes, 1 page, 2 resolutions), emulator records included.
    let r = holds("grouped-incident", 7).await;
    assert_eq!(r.totals.tickets, 1);
    assert_eq!(r.totals.notes, 2);
    assert_eq!(r.totals.resolves, 2);
    assert_eq!(r.incidents, 1, "one ServiceNow incident for the group");
}
