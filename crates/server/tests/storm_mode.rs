//! End to end, over real HTTP: the storm-mode breaker (per environment), the
//! umbrella ticket, pages held back and named in the decision, `GET /v1/storm`,
//! the breaker metrics, and the held-back summary sent to the team's webhook
//! on the gate's `ManualClock`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::{CONFIG, Harness, action, answer, event, failed_condition, outcome};

/// The test config with a breaker that opens above 2 services and a summary
/// webhook for `payments` (the sandbox's Slack webhook).
fn config() -> String {
    // Grouping off: this test is about the breaker alone.
    let cfg = common::ungrouped(CONFIG);
    cfg.replace(
        "    service: { burst: 5, per_hour: 6 }\n",
        "    service: { burst: 5, per_hour: 6 }
  breaker:
    open_services: 2
    close_services: 1
    window_secs: 300
    cooldown_secs: 600
    umbrella_team: payments
  summary:
    interval_secs: 60
    webhooks:
      payments: { env: MIM_BRIDGE_WEBHOOK }
",
    )
}

fn condition<'a>(run: &'a serde_json::Value, kind: &str, id: &str) -> &'a serde_json::Value {
    action(run, kind)["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id} on {kind}: {}", action(run, kind)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_opens_the_breaker_holds_pages_and_one_umbrella_ticket_carries_it() {
    let cfg = config();
    assert!(cfg.contains("breaker:"), "the config template changed");
    let h = Harness::start_with(&cfg).await;
    // Each service's owner (the first matching script answers): a model
    // naming another team than the owner sends the page to review (issue 20).
    for (svc, team) in [("orders-db", "dba"), ("search", "search")] {
        h.script_tool(
            &format!(" on {svc}"),
            answer("high", 0.95, true, true, false, team),
        );
    }
    h.script_tool(
        "scn-storm",
        answer("high", 0.95, true, true, false, "payments"),
    );

    // Two services: the breaker stays closed and checkout pages.
    let first = h
        .run_generic(&event("checkout", "Errors", "prod", "datadog", "scn-storm"))
        .await;
    assert_eq!(outcome(&first, "page"), "execute");
    let closed = condition(&first, "page", "storm.breaker");
    assert_eq!(closed["passed"], true);
    assert_eq!(closed["actual"], "closed: 1 services alerting within 300s");
    h.advance_secs(5);
    h.run_generic(&event(
        "payments-api",
        "Errors",
        "prod",
        "datadog",
        "scn-storm",
    ))
    .await;
    h.advance_secs(5);

    // The third service opens it: its page is held, its run carries the umbrella.
    let opener = h
        .run_generic(&event(
            "orders-db",
            "Errors",
            "prod",
            "datadog",
            "scn-storm",
        ))
        .await;
    assert_eq!(outcome(&opener, "page"), "suppressed");
    let c = failed_condition(&opener, "page", "storm.breaker");
    assert!(
        c["actual"]
            .as_str()
            .unwrap()
            .contains("3 services alerting within 300s"),
        "{c}"
    );
    assert!(
        c["threshold"]
            .as_str()
            .unwrap()
            .starts_with("<= 2 services")
    );
    assert_eq!(outcome(&opener, "ticket"), "execute");
    let umbrella = condition(&opener, "ticket", "storm.umbrella");
    assert!(
        umbrella["actual"]
            .as_str()
            .unwrap()
            .starts_with("storm:production")
    );
    let key = format!("tg:{}:ticket", opener["run_id"].as_str().unwrap());
    let incident = h
        .state()
        .incidents()
        .into_iter()
        .find(|i| i.field("correlation_id") == Some(key.as_str()))
        .expect("the umbrella incident reached ServiceNow");
    assert!(
        incident
            .field("short_description")
            .unwrap_or_default()
            .contains("storm:production"),
        "{:?}",
        incident.fields
    );

    // Another checkout fault while open: no page, no ticket of its own.
    h.advance_secs(5);
    let pages_before = h.state().pagerduty_alerts().len();
    let incidents_before = h.state().incidents().len();
    let held = h
        .run_generic(&event(
            "checkout",
            "Latency",
            "prod",
            "datadog",
            "scn-storm",
        ))
        .await;
    assert_eq!(outcome(&held, "page"), "suppressed");
    assert_eq!(outcome(&held, "ticket"), "suppressed");
    assert!(
        action(&held, "ticket")["reason"]
            .as_str()
            .unwrap()
            .contains(opener["run_id"].as_str().unwrap())
    );
    assert_eq!(h.state().pagerduty_alerts().len(), pages_before);
    assert_eq!(h.state().incidents().len(), incidents_before);

    // A staging storm is another breaker: production's is untouched by it.
    for svc in ["checkout", "payments-api", "orders-db", "search"] {
        h.run_generic(&event(svc, "Errors", "staging", "datadog", "scn-storm"))
            .await;
    }

    let storm = h.get_json("/v1/storm").await;
    let breakers = storm["breakers"].as_array().unwrap();
    let prod = breakers
        .iter()
        .find(|b| b["environment"] == "production")
        .unwrap();
    assert_eq!(prod["open"], true, "{storm}");
    assert_eq!(prod["services"], 3);
    assert_eq!(prod["open_threshold"], 2);
    assert_eq!(prod["umbrella_run"], opener["run_id"]);
    let staging = breakers
        .iter()
        .find(|b| b["environment"] == "staging")
        .unwrap();
    assert_eq!(staging["open"], true, "4 staging services");
    assert_ne!(staging["storm_id"], prod["storm_id"]);
    let held_back = storm["held_back"].as_array().unwrap();
    let checkout = held_back
        .iter()
        .find(|r| r["service"] == "checkout" && r["environment"] == "production")
        .unwrap_or_else(|| panic!("{storm}"));
    assert_eq!(checkout["reason"], "breaker");
    assert_eq!(checkout["team"], "payments");
    assert_eq!(checkout["count"], 1);
    assert_eq!(checkout["run_ids"][0], held["run_id"]);
    let bucket = storm["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["key"] == "page:service:checkout")
        .unwrap_or_else(|| panic!("{storm}"));
    assert_eq!(
        (bucket["burst"].as_u64(), bucket["tokens"].as_i64()),
        (Some(5), Some(4))
    );
    let transitions = storm["transitions"].as_array().unwrap();
    assert_eq!(
        transitions.len(),
        2,
        "production and staging opened: {storm}"
    );
    assert!(transitions.iter().all(|t| t["to"] == "open"));

    let metrics = h
        .http
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("triage_gate_storm_breaker_transitions_total")
                && l.contains("to=\"open\"")
                && l.contains("environment=\"production\"")
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("triage_gate_storm_breaker_open")
                && l.contains("environment=\"production\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );

    // The summary task sends the team's held-back pages, at most once per
    // interval of the gate's clock (the first may have gone out mid-storm).
    let summaries = |h: &Harness| -> Vec<String> {
        h.state()
            .bridge_posts()
            .iter()
            .filter(|p| p.text.contains("held back"))
            .map(|p| p.text.clone())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while summaries(&h).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no summary posted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The clock moved 15 s since the first held page: no second summary yet.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(summaries(&h).len(), 1, "at most one summary per interval");
    // After the interval (on the gate's clock), what was held since goes out.
    h.advance_secs(61);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = summaries(&h).join("\n");
        if all.contains(held["run_id"].as_str().unwrap()) {
            assert!(all.contains("team payments"), "{all}");
            assert!(
                all.contains("checkout (production): 1 held by breaker"),
                "{all}"
            );
            // orders-db is dba's (its catalog owner): not in payments' summary.
            assert!(!all.contains("orders-db (production)"), "{all}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "held run not summarized: {all}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(summaries(&h).len() <= 2);
}
