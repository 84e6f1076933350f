//! Several gate replicas on one PostgreSQL database, events delivered to them
//! round-robin like a load balancer would: the same decisions and the same
//! actions as a single gate, no duplicate ticket or page.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use triage_gate_sim::{Options, Report, Scenario, run};

fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios")
        .join(format!("{name}.yaml"));
    Scenario::from_yaml(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn on_postgres(s: &Scenario, replicas: usize, serial: bool) -> Report {
    let url = tg_store::testing::fresh_postgres_database().await.unwrap();
    let report = run(
        s,
        &Options {
            seed: 3,
            scale: 1.0,
            replicas,
            store_url: Some(url),
            serial,
        },
    )
    .await
    .unwrap();
    println!("{replicas} replica(s):\n{}", report.render());
    assert!(
        report.violations.is_empty(),
        "{replicas} replica(s): {:#?}",
        report.violations
    );
    report
}

/// `text` with every `run_<uuid>` cut down to `run_`.
fn without_run_ids(text: &str) -> String {
    let mut parts = text.split("run_");
    let mut out = parts.next().unwrap_or_default().to_owned();
    for p in parts {
        out.push_str("run_");
        out.push_str(p.trim_start_matches(|c: char| c.is_ascii_hexdigit() || c == '-'));
    }
    out
}

/// What reached the incident tools.
fn actions(r: &Report) -> [usize; 7] {
    [
        r.incidents,
        r.work_notes,
        r.ticket_resolves,
        r.pagerduty_triggers,
        r.pagerduty_resolved,
        r.bridge_posts,
        r.umbrella_tickets,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_decide_and_act_exactly_like_one() {
    if !tg_store::testing::postgres_available().await {
        eprintln!("SKIPPED: no PostgreSQL at TG_TEST_POSTGRES_URL");
        return;
    }
    let s = scenario("database-outage-ci");
    // One event at a time, so that decisions follow acceptance order in both.
    let one = on_postgres(&s, 1, true).await;
    let three = on_postgres(&s, 3, true).await;
    assert!(one.events > 300, "a storm, not a handful: {}", one.events);
    assert_eq!(one.events, three.events);
    assert_eq!(one.decisions.len(), three.decisions.len());
    for (a, b) in one.decisions.iter().zip(&three.decisions) {
        // Run ids differ between two runs; everything else must not.
        assert_eq!(
            without_run_ids(&format!("{a:?}")),
            without_run_ids(&format!("{b:?}")),
            "decision {} differs",
            a.index
        );
    }
    assert_eq!(actions(&one), actions(&three));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_concurrent_replicas_keep_every_storm_invariant() {
    if !tg_store::testing::postgres_available().await {
        eprintln!("SKIPPED: no PostgreSQL at TG_TEST_POSTGRES_URL");
        return;
    }
    // Every replica's workers at once: the invariants (one ticket per
    // fingerprint and group, pages within every budget, one MIM, one audit
    // record per event, emulators see each action once) still hold.
    let r = on_postgres(&scenario("database-outage-ci"), 3, false).await;
    assert_eq!(r.totals.mims, 1, "exactly one MIM: {}", r.render());
}
