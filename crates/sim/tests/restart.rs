//! Restart in the middle of a simulated storm: the gate is stopped halfway and
//! a new gate starts on the same data directory. Windows, buckets and the
//! breaker come back from the store: no duplicate action, no reset of limits.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use triage_gate_sim::{Options, Scenario, run, run_with_restart, timeline};

fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios")
        .join(format!("{name}.yaml"));
    Scenario::from_yaml(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_storm_changes_no_action_and_resets_no_limit() {
    let s = scenario("database-outage-ci");
    let opts = Options {
        seed: 1,
        scale: 1.0,
        ..Options::default()
    };
    let half = timeline(&s, &opts).unwrap().len() / 2;
    let straight = run(&s, &opts).await.unwrap();
    let restarted = run_with_restart(&s, &opts, half).await.unwrap();
    println!("{}", restarted.render());
    assert!(straight.violations.is_empty(), "{:#?}", straight.violations);
    assert!(
        restarted.violations.is_empty(),
        "restart after {half} events: {:#?}",
        restarted.violations
    );
    // The same actions, minute by minute, and the same held-back decisions.
    assert_eq!(straight.totals, restarted.totals);
    assert_eq!(straight.minutes, restarted.minutes);
    assert_eq!(straight.held, restarted.held);
    // The emulators saw each action once (no re-delivery, no second ticket).
    assert_eq!(straight.incidents, restarted.incidents);
    assert_eq!(straight.pagerduty_triggers, restarted.pagerduty_triggers);
    assert_eq!(straight.bridge_posts, restarted.bridge_posts);
    assert_eq!(straight.umbrella_tickets, restarted.umbrella_tickets);
    assert_eq!(straight.breaker_transitions, restarted.breaker_transitions);
    // The storm straddles the restart: the breaker opened before it and the
    // second half still held pages (the limits did not reset).
    assert!(restarted.umbrella_tickets == 1, "{}", restarted.render());
    assert_eq!(restarted.events, straight.events);
}
