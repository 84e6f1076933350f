//! End to end, over real HTTP: duplicate suppression, the paging budget,
//! resolution closing the suppression window, and delivery through injected
//! ServiceNow faults. Time moves only through the gate's `ManualClock`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use common::{Harness, action_result, answer, event, failed_condition, outcome, outcomes};
use serde_json::json;
use tg_sandbox::{FaultSpec, Target};

fn strs(a: [&str; 3]) -> [String; 3] {
    a.map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_inside_window_is_suppressed_without_model_call_then_acts_after_expiry() {
    let h = Harness::start_with(&common::ungrouped(common::CONFIG)).await;
    h.script_tool(
        "scn-dup",
        answer("high", 0.95, true, true, false, "payments"),
    );
    let ev = event("checkout", "CheckoutErrors", "prod", "datadog", "scn-dup");

    let first = h.run_generic(&ev).await;
    assert_eq!(outcomes(&first), strs(["execute", "execute", "skip"]));
    assert_eq!(h.model_calls(), 1);

    h.advance_secs(599);
    let second = h.run_generic(&ev).await;
    assert_eq!(
        second["event"]["fingerprint"],
        first["event"]["fingerprint"]
    );
    assert_eq!(
        outcomes(&second),
        strs(["suppressed", "suppressed", "suppressed"])
    );
    assert_eq!(second["decision"]["duplicate_of"], first["run_id"]);
    let c = failed_condition(&second, "page", "dedup.window");
    assert!(
        c["actual"]
            .as_str()
            .unwrap()
            .contains(first["run_id"].as_str().unwrap())
    );
    assert_eq!(h.model_calls(), 1, "a duplicate costs no model call");
    assert_eq!(h.state().incidents().len(), 1, "no second incident");
    assert_eq!(h.received(Target::Pagerduty), 1, "no second page");
    assert!(h.review().await.is_empty(), "suppression is not a review");

    // 600 s after the first run the window (half-open) has closed.
    h.advance_secs(1);
    let third = h.run_generic(&ev).await;
    assert_eq!(third["decision"]["duplicate_of"], serde_json::Value::Null);
    assert_eq!(outcomes(&third), strs(["execute", "execute", "skip"]));
    assert_eq!(h.model_calls(), 2);
    let incidents = h.state().incidents();
    assert_eq!(incidents.len(), 2, "a new ticket for the new run");
    assert_eq!(
        incidents[1].field("correlation_id"),
        Some(format!("tg:{}:ticket", third["run_id"].as_str().unwrap()).as_str())
    );
    assert_eq!(h.received(Target::Pagerduty), 2, "paged again");
    // Same dedup_key: PagerDuty merges the second trigger into the open alert.
    let alerts = h.state().pagerduty_alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].trigger_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_beyond_team_burst_goes_to_review_with_page_rate_then_refills() {
    let h = Harness::start_with(&common::ungrouped(common::CONFIG)).await;
    // Team burst is 2, refilled at 6 an hour: one token per 600 s.
    h.script_tool(
        "scn-rate",
        answer("high", 0.95, false, true, false, "payments"),
    );
    for i in 0..2 {
        let run = h
            .run_generic(&event(
                "checkout",
                &format!("Alert{i}"),
                "prod",
                "datadog",
                "scn-rate",
            ))
            .await;
        assert_eq!(outcome(&run, "page"), "execute", "page {i} is within burst");
    }
    let third = h
        .run_generic(&event("checkout", "Alert2", "prod", "datadog", "scn-rate"))
        .await;
    assert_eq!(outcome(&third, "page"), "review");
    let c = failed_condition(&third, "page", "page.rate");
    // The value names the bucket that ran out (the team's; the service's has 5).
    assert_eq!(c["actual"], "0 (page:team:payments)", "{c}");
    assert_eq!(c["threshold"], "> 0 (page:team:payments: burst 2, 6/h)");
    assert_eq!(h.state().pagerduty_alerts().len(), 2, "exactly burst pages");
    assert_eq!(h.received(Target::Pagerduty), 2);
    let review = h.review().await;
    assert_eq!(review.len(), 1);
    assert_eq!(review[0]["run_id"], third["run_id"]);
    assert_eq!(review[0]["action"], "page");

    h.advance_secs(600);
    let fourth = h
        .run_generic(&event("checkout", "Alert3", "prod", "datadog", "scn-rate"))
        .await;
    assert_eq!(outcome(&fourth, "page"), "execute", "one token refilled");
    assert_eq!(h.state().pagerduty_alerts().len(), 3);

    let fifth = h
        .run_generic(&event("checkout", "Alert4", "prod", "datadog", "scn-rate"))
        .await;
    assert_eq!(outcome(&fifth, "page"), "review", "and only one");
    assert_eq!(h.state().pagerduty_alerts().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolved_alert_skips_everything_and_a_refire_reuses_the_open_ticket() {
    let h = Harness::start_with(&common::ungrouped(common::CONFIG)).await;
    h.script_tool(
        "scn-resolve",
        answer("medium", 0.9, true, false, false, "payments"),
    );
    let firing = event(
        "checkout",
        "CheckoutErrors",
        "prod",
        "datadog",
        "scn-resolve",
    );
    let first = h.run_generic(&firing).await;
    assert_eq!(outcome(&first, "ticket"), "execute");
    assert_eq!(h.model_calls(), 1);

    h.advance_secs(60);
    let mut resolved_ev = firing.clone();
    resolved_ev["status"] = json!("resolved");
    let resolved = h.run_generic(&resolved_ev).await;
    assert_eq!(
        resolved["event"]["fingerprint"],
        first["event"]["fingerprint"]
    );
    assert_eq!(outcomes(&resolved), strs(["skip", "skip", "skip"]));
    let c = failed_condition(&resolved, "ticket", "event.firing");
    assert_eq!(c["actual"], "resolved");
    assert_eq!(h.model_calls(), 1, "a resolution needs no model call");
    assert_eq!(h.state().incidents().len(), 1);

    // Well inside the original 600 s window, yet not a duplicate: it was closed,
    // so the re-fire is classified again (by the guard's cache: same content
    // 120 s later, inside the default 300 s TTL, so no second model call). Its
    // ticket is still open, though: the re-fire is attached to it rather than
    // opening a second incident.
    h.advance_secs(60);
    let again = h.run_generic(&firing).await;
    assert_eq!(again["decision"]["duplicate_of"], serde_json::Value::Null);
    assert_eq!(
        again["classification"]["info"]["classifier"],
        "anthropic (cached)"
    );
    assert_eq!(h.model_calls(), 1);
    assert_eq!(outcome(&again, "ticket"), "suppressed");
    let c = failed_condition(&again, "ticket", "ticket.open");
    assert!(c["actual"].as_str().unwrap().contains("is open"), "{c}");
    assert_eq!(h.state().incidents().len(), 1, "no second incident");
    assert_eq!(h.received(Target::Pagerduty), 0);
}

/// Injects `fault` for ServiceNow, sends a ticket-worthy event, and checks one
/// incident exists for the run and the result counts more than one attempt.
async fn ticket_survives(fault: FaultSpec, marker: &str) {
    let h = Harness::start_with(&common::ungrouped(common::CONFIG)).await;
    h.script_tool(
        marker,
        answer("medium", 0.9, true, false, false, "payments"),
    );
    h.state().inject_fault(fault).unwrap();
    let run = h
        .run_generic(&event(
            "checkout",
            "CheckoutErrors",
            "prod",
            "datadog",
            marker,
        ))
        .await;
    assert_eq!(outcome(&run, "ticket"), "execute");
    let result = action_result(&run, "ticket");
    assert_eq!(result["status"], "delivered", "{result}");
    let attempts = result["result"]["attempts"].as_u64().unwrap();
    assert!(attempts > 1, "attempts {attempts}");

    let key = format!("tg:{}:ticket", run["run_id"].as_str().unwrap());
    let incidents = h.state().incidents();
    assert_eq!(
        incidents
            .iter()
            .filter(|i| i.field("correlation_id") == Some(key.as_str()))
            .count(),
        1,
        "exactly one incident for {key}"
    );
    assert_eq!(incidents.len(), 1);
    let reqs = h.state().requests(Target::Servicenow);
    assert!(reqs.iter().any(|r| r.faulted), "the fault was hit");
    assert_eq!(
        reqs.iter()
            .filter(|r| r.method == "POST" && !r.faulted && r.status < 300)
            .count(),
        1,
        "one successful create"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_500s_are_retried_and_the_ticket_is_created_once() {
    ticket_survives(
        FaultSpec {
            target: "servicenow".into(),
            status: Some(500),
            count: 2,
            retry_after_secs: None,
            delay_ms: None,
        },
        "scn-sn-500",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_429_with_retry_after_is_honoured_and_the_ticket_is_created_once() {
    ticket_survives(
        FaultSpec {
            target: "servicenow".into(),
            status: Some(429),
            count: 1,
            retry_after_secs: Some(1),
            delay_ms: None,
        },
        "scn-sn-429",
    )
    .await;
}
