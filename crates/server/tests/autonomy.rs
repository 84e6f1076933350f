//! The kill switch over real HTTP: a cap on everything drops every service to
//! shadow for the very next decision, a team cap drops one team, lifting a cap
//! restores the catalog's level; each change is an audit record with the caller.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Harness, answer, event, outcome, outcomes};
use serde_json::{Value, json};

async fn set(h: &Harness, body: Value) -> (u16, Value) {
    let resp = h
        .http
        .post(format!("{}/v1/autonomy", h.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn page_worthy(h: &Harness, n: usize) -> Value {
    let marker = format!("KS-{n}");
    h.script_tool(&marker, answer("high", 0.95, true, true, false, "payments"));
    h.run_generic(&event(
        "checkout",
        &format!("CheckoutDown{n}"),
        "prod",
        "datadog",
        &marker,
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_caps_the_next_decision_and_is_audited() {
    let mut h = Harness::start_with(&common::ungrouped(common::CONFIG)).await;
    // checkout is at `paging`: ticket and page execute.
    let before = page_worthy(&h, 0).await;
    assert_eq!(outcome(&before, "page"), "execute", "{before}");

    // Everything to shadow.
    let (status, body) = set(
        &h,
        json!({"scope": "all", "level": "shadow", "reason": "AI paging suspended during INC-42"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["level"], "shadow");
    let shadowed = page_worthy(&h, 1).await;
    assert_eq!(
        outcomes(&shadowed),
        ["skip", "skip", "skip"].map(String::from),
        "{shadowed}"
    );
    assert_eq!(shadowed["decision"]["autonomy"], "shadow");
    assert_eq!(
        h.state().pagerduty_alerts().len(),
        1,
        "no page while shadowed"
    );
    let view = h.get_json("/v1/autonomy").await;
    let checkout = view["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "checkout")
        .unwrap();
    assert_eq!(checkout["configured"], "paging");
    assert_eq!(checkout["effective"], "shadow", "{view}");

    // Lift it, cap only the payments team at assist: the page becomes a draft.
    let (status, body) = set(&h, json!({"scope": "all", "level": null})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["from"], "shadow");
    let (status, _) = set(&h, json!({"scope": "team:payments", "level": "assist"})).await;
    assert_eq!(status, 200);
    let capped = page_worthy(&h, 2).await;
    assert_eq!(outcome(&capped, "page"), "review", "{capped}");
    assert_eq!(capped["decision"]["autonomy"], "assist");
    let (status, _) = set(&h, json!({"scope": "team:payments", "level": null})).await;
    assert_eq!(status, 200);
    let after = page_worthy(&h, 3).await;
    assert_eq!(outcome(&after, "page"), "execute", "{after}");

    // Bad scopes are 400s naming the field.
    for bad in [
        json!({"scope": "everything", "level": "shadow"}),
        json!({"scope": "team:nobody", "level": "shadow"}),
        json!({"scope": "service:a b", "level": "shadow"}),
        json!({"scope": "all", "level": "reckless"}),
    ] {
        let (status, body) = set(&h, bad.clone()).await;
        assert_eq!(status, 400, "{bad} -> {body}");
    }

    h.stop_gate().await;
    let changes: Vec<Value> = std::fs::read_to_string(h.audit_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "autonomy_change")
        .collect();
    assert_eq!(changes.len(), 4, "{changes:#?}");
    assert_eq!(changes[0]["autonomy"]["scope"], "all");
    assert_eq!(changes[0]["autonomy"]["to"], "shadow");
    assert_eq!(
        changes[0]["autonomy"]["reason"],
        "AI paging suspended during INC-42"
    );
    assert!(changes[0]["actor"].is_string());
    assert!(changes[1]["autonomy"].get("to").is_none(), "lifted");
    let report = tg_audit::verify_file(h.audit_path()).unwrap();
    assert!(report.ok, "{report}");
}

/// During a running storm of page-worthy alerts, with PagerDuty slow so pages
/// queue in the outbox, `all -> shadow` stops every page within one second of
/// the switch (wall-clock timestamps of the emulator's requests): new
/// decisions are shadowed, and queued pages are drafted instead of sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kill_switch_stops_all_paging_within_a_second_during_a_storm() {
    // Budgets wide open: only the kill switch may stop these pages.
    let cfg = common::ungrouped(common::CONFIG)
        .replace(
            "team: { burst: 2, per_hour: 6 }",
            "team: { burst: 1000, per_hour: 100000 }",
        )
        .replace(
            "service: { burst: 5, per_hour: 6 }",
            "service: { burst: 1000, per_hour: 100000 }",
        );
    let h = Harness::start_with(&cfg).await;
    h.script_tool(
        "STORM",
        answer("high", 0.95, false, true, false, "payments"),
    );
    // PagerDuty answers slowly: pages pile up in the outbox.
    h.state()
        .inject_fault(tg_sandbox::FaultSpec {
            target: "pagerduty".into(),
            status: None,
            count: 10_000,
            retry_after_secs: None,
            delay_ms: Some(150),
        })
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm = {
        let stop = stop.clone();
        let base = h.base.clone();
        let http = h.http.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = event("checkout", &format!("Storm{n}"), "prod", "datadog", "STORM");
                let resp = http
                    .post(format!("{base}/v1/events/generic"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202);
                n += 1;
                tokio::time::sleep(std::time::Duration::from_millis(15)).await;
            }
            n
        })
    };
    // Let pages flow and queue.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let before = h.state().requests(tg_sandbox::Target::Pagerduty).len();
    assert!(before > 0, "pages flowed before the switch");
    let switched_at = chrono::Utc::now();
    let (status, body) = set(
        &h,
        json!({"scope": "all", "level": "shadow", "reason": "storm drill"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The storm goes on for two more seconds.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = storm.await.unwrap();
    assert!(sent > 50, "a storm: {sent} events");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let late: Vec<_> = h
        .state()
        .requests(tg_sandbox::Target::Pagerduty)
        .into_iter()
        .filter(|r| r.received_at > switched_at + chrono::Duration::seconds(1))
        .map(|r| r.received_at)
        .collect();
    assert!(
        late.is_empty(),
        "pages reached PagerDuty more than 1 s after the switch at {switched_at}: {late:?}"
    );
    // Queued pages were drafted, not dropped: they wait in the review queue.
    let held = h
        .review()
        .await
        .iter()
        .filter(|i| i["action"] == "page")
        .count();
    assert!(held > 0, "pages queued at the switch were held, not sent");
    let view = h.get_json("/v1/autonomy").await;
    assert_eq!(view["caps"][0]["level"], "shadow");
    eprintln!(
        "storm: {sent} events, {before} pages before the switch, {held} queued pages held for review"
    );
}

/// Issue 20, item 7: a team's kill switch holds every queued action of the
/// team's services, by the catalog owner (whatever team the model named), with
/// the policy's own autonomy table (`limited` creates only low and medium
/// tickets alone, so a queued high ticket is held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_cap_holds_queued_actions_of_its_services_by_owner() {
    let h = Harness::start_with(&common::ungrouped(common::CONFIG)).await;
    // ServiceNow fails once: the ticket waits in the outbox for its retry.
    h.state()
        .inject_fault(tg_sandbox::FaultSpec {
            target: "servicenow".into(),
            status: Some(503),
            count: 1,
            retry_after_secs: None,
            delay_ms: None,
        })
        .unwrap();
    // checkout is owned by payments; the model names dba.
    h.script_tool("KS-OWNER", answer("high", 0.95, true, false, false, "dba"));
    let ids = h
        .submit(
            "generic",
            &event("checkout", "CheckoutDown", "prod", "datadog", "KS-OWNER"),
            None,
        )
        .await;
    let run_id = ids[0].clone();
    let deadline = std::time::Instant::now() + common::RUN_TIMEOUT;
    while h
        .state()
        .requests(tg_sandbox::Target::Servicenow)
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "no ticket attempt");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The failed attempt is recorded; its retry waits for the (manual) clock.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, body) = set(&h, json!({"scope": "team:payments", "level": "limited"})).await;
    assert_eq!(status, 200, "{body}");
    // The outbox holds it before its retry: a review item, not an incident.
    let deadline = std::time::Instant::now() + common::RUN_TIMEOUT;
    while !h
        .review()
        .await
        .iter()
        .any(|i| i["run_id"] == run_id.as_str() && i["action"] == "ticket")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the queued ticket was not held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    h.advance_to_next_attempt().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(h.state().incidents().is_empty(), "nothing was delivered");
}
