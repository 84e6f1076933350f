//! The review queue end to end, over real HTTP to the real gate and the
//! sandbox emulators, real SQLite: an assist-mode service's drafts are approved
//! (delivered through the outbox) or rejected (with a reason); an approval is
//! re-checked at approval time (a spent paging budget refuses it, the item
//! stays open); every decision is an audit record with the reviewer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Harness, answer, event, outcome};
use serde_json::{Value, json};
use tg_sandbox::Target;

async fn post(h: &Harness, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = h.http.post(format!("{}{path}", h.base));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn item<'a>(items: &'a [Value], run_id: &str, action: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["run_id"] == run_id && i["action"] == action)
        .unwrap_or_else(|| panic!("no {action} item for {run_id}: {items:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_are_approved_or_rejected_rechecked_and_audited() {
    let mut h = Harness::start_with(&common::ungrouped(common::CONFIG)).await;
    // legacy-billing is at `assist`: its ticket and page are drafted.
    h.script_tool("REV-1", answer("high", 0.95, true, true, false, "payments"));
    let draft = h
        .run_generic(&event(
            "legacy-billing",
            "InvoiceErrors",
            "prod",
            "datadog",
            "REV-1",
        ))
        .await;
    assert_eq!(outcome(&draft, "ticket"), "review");
    assert_eq!(outcome(&draft, "page"), "review");
    let run_id = draft["run_id"].as_str().unwrap().to_owned();
    let items = h.review().await;
    let ticket_id = item(&items, &run_id, "ticket")["id"].as_i64().unwrap();
    let page_id = item(&items, &run_id, "page")["id"].as_i64().unwrap();
    // Each draft shows exactly what approving would send; never a routing key.
    let ticket_draft = &item(&items, &run_id, "ticket")["draft"];
    assert_eq!(ticket_draft["target"], "servicenow", "{ticket_draft}");
    assert_eq!(
        ticket_draft["body"]["assignment_group"],
        common::GROUP_PAYMENTS
    );
    assert_eq!(ticket_draft["body"]["urgency"], "1", "high: {ticket_draft}");
    let page_draft = &item(&items, &run_id, "page")["draft"];
    assert_eq!(
        page_draft["body"]["routing_key"], "[routing key of team payments]",
        "{page_draft}"
    );
    assert_eq!(page_draft["body"]["event_action"], "trigger");

    // The payments team's paging budget (burst 2) is spent by checkout's pages.
    for i in 0..2 {
        let marker = format!("REV-CO-{i}");
        h.script_tool(
            &marker,
            answer("high", 0.95, false, true, false, "payments"),
        );
        let r = h
            .run_generic(&event(
                "checkout",
                &format!("CheckoutDown{i}"),
                "prod",
                "datadog",
                &marker,
            ))
            .await;
        assert_eq!(outcome(&r, "page"), "execute", "{r}");
    }
    let pages_before = h.state().pagerduty_alerts().len();

    // Approving the page now: refused by the re-check, nothing sent, still open.
    let (status, problem) = post(&h, &format!("/v1/review/{page_id}/approve"), None).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        problem["type"]
            .as_str()
            .unwrap_or_default()
            .rsplit('/')
            .next(),
        Some("approval-refused"),
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("page:team:payments"),
        "{problem}"
    );
    assert_eq!(h.state().pagerduty_alerts().len(), pages_before);
    assert!(
        h.review().await.iter().any(|i| i["id"] == page_id),
        "still open"
    );

    // A rejection needs a reason; with one, the item closes and nothing is sent.
    let (status, problem) = post(&h, &format!("/v1/review/{page_id}/reject"), None).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["field"], "reason");
    let (status, body) = post(
        &h,
        &format!("/v1/review/{page_id}/reject"),
        Some(json!({"reason": "billing is not worth a page at night"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verdict"], "rejected");
    let (status, _) = post(&h, &format!("/v1/review/{page_id}/approve"), None).await;
    assert_eq!(status, 409, "a decided item cannot be decided again");

    // Approving the ticket: re-checked (no duplicate), delivered by the outbox.
    // Edits are checked: an empty title is refused, nothing changes.
    let (status, problem) = post(
        &h,
        &format!("/v1/review/{ticket_id}/approve"),
        Some(json!({"edits": {"title": "  "}})),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["field"], "edits.title");
    let (status, body) = post(
        &h,
        &format!("/v1/review/{ticket_id}/approve"),
        Some(json!({"reason": "confirmed on the dashboard",
                    "edits": {"title": "Invoices failing for EU customers", "severity": "medium"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verdict"], "approved");
    assert!(
        body["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["passed"] == true),
        "{body}"
    );
    let deadline = std::time::Instant::now() + common::RUN_TIMEOUT;
    while h.state().incidents().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the approved ticket never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(h.state().incidents().len(), 1);
    let incident = &h.state().incidents()[0];
    assert_eq!(
        incident.field("short_description"),
        Some("Invoices failing for EU customers"),
        "the reviewer's edit was sent"
    );
    assert_eq!(incident.field("urgency"), Some("2"), "medium");
    assert!(h.state().incidents()[0].field("correlation_id").is_some());
    assert!(
        h.review()
            .await
            .iter()
            .all(|i| i["run_id"] != run_id.as_str()),
        "both items closed"
    );
    // Unknown ids are 404s.
    let (status, _) = post(&h, "/v1/review/999999/approve", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        h.received(Target::Pagerduty),
        2,
        "only checkout's two pages"
    );

    // The story of the run tells who decided what, and the delivery after it.
    let deadline = std::time::Instant::now() + common::RUN_TIMEOUT;
    let story = loop {
        let s = h.get_json(&format!("/v1/audit?run_id={run_id}")).await;
        let lines: Vec<String> = s["story"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["what"].as_str().unwrap(),
                    e["text"].as_str().unwrap()
                )
            })
            .collect();
        if lines
            .iter()
            .any(|l| l.starts_with("attempt ticket") && l.contains("delivered"))
            || std::time::Instant::now() > deadline
        {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let pos = |needle: &str| {
        story
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {story:#?}"))
    };
    let refused = pos("page refused by");
    let rejected = pos("page rejected by");
    let approved = pos("ticket approved by");
    let delivered = pos("attempt ticket create to servicenow attempt 1: delivered");
    assert!(
        refused < rejected && rejected < approved && approved < delivered,
        "{story:#?}"
    );
    assert!(
        story[refused].contains("review.rate:page:team:payments"),
        "{}",
        story[refused]
    );
    assert!(story[rejected].contains("billing is not worth a page at night"));
    let records: Vec<Value> = h.get_json(&format!("/v1/audit?run_id={run_id}")).await["chain"]
        .as_array()
        .unwrap()
        .clone();
    let approval = records
        .iter()
        .find(|r| r["kind"] == "review_decision" && r["review"]["verdict"] == "approved")
        .unwrap();
    assert_eq!(
        approval["review"]["edits"]["title"],
        "Invoices failing for EU customers"
    );
    assert_eq!(approval["review"]["edits"]["severity"], "medium");

    // The evidence for a promotion: the gate would have paged (a human said
    // no: a false page) and ticketed (a human agreed).
    let report = h
        .get_json("/v1/reports/autonomy?service=legacy-billing&since=7d")
        .await;
    let line = &report["services"][0];
    assert_eq!(line["service"], "legacy-billing", "{report}");
    assert_eq!(line["level"], "assist");
    assert_eq!(line["next_level"], "limited");
    assert_eq!(
        (line["verdicts"].as_u64(), line["agreed"].as_u64()),
        (Some(2), Some(1)),
        "{report}"
    );
    assert_eq!(line["false_pages"], 1, "{report}");
    assert_eq!(line["missed_pages"], 0, "{report}");
    assert_eq!(line["meets_bar"], false);
    let (status, _) = {
        let resp = h
            .http
            .get(format!("{}/v1/reports/autonomy?since=forever", h.base))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), ())
    };
    assert_eq!(status, 400);
    h.stop_gate().await;
    let report = tg_audit::verify_file(h.audit_path()).unwrap();
    assert!(report.ok, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecided_drafts_expire_with_an_audit_record_and_are_never_sent() {
    let mut h = Harness::start_with(&format!(
        "{}\nreview:\n  expire_after_secs: 3600\n",
        common::ungrouped(common::CONFIG)
    ))
    .await;
    h.script_tool(
        "EXP-1",
        answer("high", 0.95, true, false, false, "payments"),
    );
    let draft = h
        .run_generic(&event(
            "legacy-billing",
            "InvoiceLag",
            "prod",
            "datadog",
            "EXP-1",
        ))
        .await;
    let run_id = draft["run_id"].as_str().unwrap().to_owned();
    let id = item(&h.review().await, &run_id, "ticket")["id"]
        .as_i64()
        .unwrap();
    // Filters: by team and service it is there; by another team it is not.
    let by_team = h
        .get_json("/v1/review?team=payments&service=legacy-billing")
        .await;
    assert!(
        by_team["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == id),
        "{by_team}"
    );
    let other = h.get_json("/v1/review?team=search").await;
    assert!(other["items"].as_array().unwrap().is_empty(), "{other}");
    let young = h.get_json("/v1/review?min_age_secs=60").await;
    assert!(young["items"].as_array().unwrap().is_empty(), "{young}");

    let state = h.gate.as_ref().unwrap().state.clone();
    h.advance_secs(1800);
    assert_eq!(
        triage_gate_server::review::expire_due(&state)
            .await
            .unwrap(),
        0,
        "not yet"
    );
    h.advance_secs(1801);
    assert_eq!(
        triage_gate_server::review::expire_due(&state)
            .await
            .unwrap(),
        1
    );
    assert!(
        h.review().await.iter().all(|i| i["id"] != id),
        "gone from the queue"
    );
    let (status, _) = post(&h, &format!("/v1/review/{id}/approve"), None).await;
    assert_eq!(status, 409, "an expired draft cannot be approved");
    assert!(h.state().incidents().is_empty());
    h.stop_gate().await;
    let expired: Vec<Value> = std::fs::read_to_string(h.audit_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "review_decision")
        .collect();
    assert_eq!(expired.len(), 1, "{expired:#?}");
    assert_eq!(expired[0]["review"]["verdict"], "expired");
    assert_eq!(expired[0]["actor"], "gate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_items_are_told_to_the_team_channel_once() {
    let cfg = common::ungrouped(common::CONFIG).replace(
        "    service: { burst: 5, per_hour: 6 }\n",
        "    service: { burst: 5, per_hour: 6 }\n  summary:\n    webhooks:\n      payments: { env: MIM_BRIDGE_WEBHOOK }\n",
    ) + "\nreview:\n  notify: true\n";
    let h = Harness::start_with(&cfg).await;
    h.script_tool("NT-1", answer("high", 0.95, true, false, false, "payments"));
    let draft = h
        .run_generic(&event(
            "legacy-billing",
            "InvoiceStuck",
            "prod",
            "datadog",
            "NT-1",
        ))
        .await;
    assert_eq!(outcome(&draft, "ticket"), "review");
    let id = item(
        &h.review().await,
        draft["run_id"].as_str().unwrap(),
        "ticket",
    )["id"]
        .as_i64()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let told = loop {
        let posts: Vec<String> = h
            .state()
            .bridge_posts()
            .iter()
            .map(|p| p.text.clone())
            .filter(|t| t.contains("review queue"))
            .collect();
        if !posts.is_empty() || std::time::Instant::now() > deadline {
            break posts;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains(&format!("#{id} ticket legacy-billing")),
        "{}",
        told[0]
    );
    // Told once: a few polls later, still one message.
    tokio::time::sleep(std::time::Duration::from_millis(4_500)).await;
    let again = h
        .state()
        .bridge_posts()
        .iter()
        .filter(|p| p.text.contains("review queue"))
        .count();
    assert_eq!(again, 1);
}

fn gate_outcome(run: &Value, action: &str) -> String {
    run["decision"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == action)
        .unwrap_or_else(|| panic!("no {action} in {run}"))["gate_outcome"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_opened_by_another_path_are_compared_with_the_gates_decision() {
    let mut h = Harness::start_with(&common::ungrouped(common::CONFIG)).await;
    // search is in shadow: the gate would page (its own outcome), does not.
    h.script_tool("EXT-1", answer("high", 0.95, true, true, false, "search"));
    let shadow = h
        .run_generic(&event("search", "QueryLatency", "prod", "datadog", "EXT-1"))
        .await;
    assert_eq!(outcome(&shadow, "page"), "skip", "{shadow}");
    assert_eq!(gate_outcome(&shadow, "page"), "execute", "{shadow}");
    // legacy-billing (assist): an unsure answer the page gate refuses.
    h.script_tool(
        "EXT-2",
        answer("medium", 0.30, true, true, false, "payments"),
    );
    let refused = h
        .run_generic(&event(
            "legacy-billing",
            "InvoiceLag",
            "prod",
            "datadog",
            "EXT-2",
        ))
        .await;
    assert_eq!(gate_outcome(&refused, "page"), "review", "{refused}");

    // A human paged for search from PagerDuty: the gate agreed.
    let report = json!({"system": "pagerduty", "external_id": "PX1", "action": "page",
        "service": "search", "opened_by": "alice@example.com"});
    let (status, body) = post(&h, "/v1/evidence/incidents", Some(report.clone())).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["verdict"], "agreed", "{body}");
    assert_eq!(body["run_id"], shadow["run_id"]);
    // The same incident reported again counts once.
    let (status, again) = post(&h, "/v1/evidence/incidents", Some(report)).await;
    assert_eq!((status, &again["verdict"]), (200, &json!("agreed")));
    // A human paged for legacy-billing, found by the run's correlation ID: a miss.
    let (status, body) = post(
        &h,
        "/v1/evidence/incidents",
        Some(
            json!({"system": "pagerduty", "external_id": "PX2", "action": "page",
            "service": "legacy-billing", "correlation_id": refused["correlation_id"]}),
        ),
    )
    .await;
    assert_eq!(
        (status, &body["verdict"]),
        (201, &json!("disagreed")),
        "{body}"
    );
    assert_eq!(body["run_id"], refused["run_id"]);
    // Nothing decided for that service: recorded, but no evidence either way.
    let (status, body) = post(
        &h,
        "/v1/evidence/incidents",
        Some(
            json!({"system": "servicenow", "external_id": "INC9", "action": "ticket",
            "service": "inventory"}),
        ),
    )
    .await;
    assert_eq!(
        (status, &body["verdict"]),
        (201, &json!("unmatched")),
        "{body}"
    );
    // Bad input names the field.
    let (status, body) = post(
        &h,
        "/v1/evidence/incidents",
        Some(
            json!({"system": "pagerduty", "external_id": "PX3", "action": "call",
            "service": "search"}),
        ),
    )
    .await;
    assert_eq!((status, &body["field"]), (400, &json!("action")), "{body}");

    let search = h
        .get_json("/v1/reports/autonomy?service=search&since=7d")
        .await;
    let line = &search["services"][0];
    assert_eq!(
        (line["verdicts"].as_u64(), line["agreed"].as_u64()),
        (Some(1), Some(1)),
        "{search}"
    );
    let billing = h
        .get_json("/v1/reports/autonomy?service=legacy-billing&since=7d")
        .await;
    assert_eq!(billing["services"][0]["missed_pages"], 1, "{billing}");

    let chain: Vec<Value> = h
        .get_json(&format!(
            "/v1/audit?run_id={}",
            shadow["run_id"].as_str().unwrap()
        ))
        .await["chain"]
        .as_array()
        .unwrap()
        .clone();
    let ext: Vec<&Value> = chain
        .iter()
        .filter(|r| r["kind"] == "external_incident")
        .collect();
    assert_eq!(ext.len(), 1, "reported twice, recorded once: {chain:#?}");
    assert_eq!(ext[0]["external"]["verdict"], "agreed");
    assert_eq!(ext[0]["external"]["opened_by"], "alice@example.com");
    h.stop_gate().await;
    let report = tg_audit::verify_file(h.audit_path()).unwrap();
    assert!(report.ok, "{report}");
}

/// The PagerDuty routing key the test secrets give `team` (see `common::test_secrets`).
fn routing_key_of(team: &str) -> String {
    let i = ["platform-ops", "dba", "payments", "search"]
        .iter()
        .position(|t| *t == team)
        .unwrap();
    format!("{i:0>2}{}", "t3stk3y0".repeat(4))[..32].to_owned()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + common::RUN_TIMEOUT;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Issue 20, item 1: with the model answering `recommended_team = dba` for
/// checkout (owned by payments), nothing reaches dba's routing key or
/// assignment group; the ticket goes to payments with the model's pick noted,
/// the page waits for a human, and an approved page still wakes payments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_naming_another_team_routes_nothing_to_it() {
    let h = Harness::start_with(&common::ungrouped(common::CONFIG)).await;
    h.script_tool("ROUTE-1", answer("high", 0.95, true, true, false, "dba"));
    let run = h
        .run_generic(&event(
            "checkout",
            "CheckoutDown",
            "prod",
            "datadog",
            "ROUTE-1",
        ))
        .await;
    assert_eq!(outcome(&run, "ticket"), "execute", "{run}");
    assert_eq!(outcome(&run, "page"), "review", "{run}");
    let team = common::failed_condition(&run, "page", "page.team");
    assert_eq!(team["actual"], "dba", "{team}");
    assert_eq!(team["threshold"], "== owner payments", "{team}");

    let incidents = h.state().incidents();
    assert_eq!(incidents.len(), 1);
    assert_eq!(
        incidents[0].field("assignment_group"),
        Some(common::GROUP_PAYMENTS),
        "assigned to the owner"
    );
    assert!(
        incidents[0]
            .field("description")
            .unwrap_or_default()
            .contains("model recommended team (not obeyed): dba"),
        "{:?}",
        incidents[0].field("description")
    );
    assert!(
        h.state().pagerduty_alerts().is_empty(),
        "no page without a human"
    );

    // The draft is for the owner; approving it pages payments, never dba.
    let run_id = run["run_id"].as_str().unwrap();
    let items = h.review().await;
    let page = item(&items, run_id, "page");
    assert_eq!(
        page["draft"]["body"]["routing_key"], "[routing key of team payments]",
        "{page}"
    );
    let (status, body) = post(
        &h,
        &format!("/v1/review/{}/approve", page["id"]),
        Some(json!({"reason": "payments confirmed"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sent"], true, "{body}");
    wait_for("the approved page", || {
        !h.state().pagerduty_alerts().is_empty()
    })
    .await;
    let alerts = h.state().pagerduty_alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].routing_key.expose(), routing_key_of("payments"));
    assert!(
        h.state()
            .pagerduty_alerts()
            .iter()
            .all(|a| a.routing_key.expose() != routing_key_of("dba"))
    );
    assert!(
        h.state()
            .incidents()
            .iter()
            .all(|i| i.field("assignment_group") != Some(common::GROUP_DBA))
    );
}

/// Issue 20, item 4: in shadow mode a reviewer's approval is recorded as a
/// human verdict and never reaches an incident tool; the answer says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_a_shadow_services_item_records_the_verdict_and_sends_nothing() {
    let mut h = Harness::start_with(&common::ungrouped(common::CONFIG)).await;
    let (_, page_id) = h.shadow_page_draft("SHADOW-1").await;

    let (status, body) = post(
        &h,
        &format!("/v1/review/{page_id}/approve"),
        Some(json!({"reason": "would have paged"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verdict"], "approved", "{body}");
    assert_eq!(body["sent"], false, "{body}");
    assert_eq!(body["shadow"], true, "{body}");
    assert!(
        body["note"].as_str().unwrap().contains("nothing is sent"),
        "{body}"
    );
    // Give the outbox every chance to (wrongly) deliver it.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    h.advance_to_next_attempt().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        h.received(Target::Pagerduty),
        0,
        "nothing reached PagerDuty"
    );
    assert!(
        h.review().await.iter().all(|i| i["id"] != page_id),
        "the item is decided"
    );
    // The verdict counts as evidence for a promotion.
    let report = h
        .get_json("/v1/reports/autonomy?service=search&since=7d")
        .await;
    assert_eq!(report["services"][0]["service"], "search", "{report}");
    assert_eq!(report["services"][0]["verdicts"], 1, "{report}");
    h.stop_gate().await;
    // The verdict is on the chain: evidence for `report autonomy`.
    let verdicts: Vec<Value> = std::fs::read_to_string(h.audit_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "review_decision" && r["review"]["action_id"] == page_id)
        .collect();
    assert_eq!(verdicts.len(), 1, "{verdicts:#?}");
    assert_eq!(verdicts[0]["review"]["verdict"], "approved");
    assert_eq!(
        verdicts[0]["review"]["conditions"][0]["id"],
        "review.shadow"
    );
}

async fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Issue 20 item 5: an approval runs the decision's storm rules at approval
/// time. A page drafted for an alert whose group was paged meanwhile is
/// refused (`page.group`, naming the run that paged); its ticket, approved,
/// becomes a work note on the group's incident, not a second incident. A MIM
/// drafted while another run opened one for the service is refused
/// (`mim.not_open`, naming that run). Emulator recordings are the evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_rechecks_grouping_and_the_open_major_incident() {
    let h = Harness::start_with(common::CONFIG).await;
    // checkout (paging, grouped by environment and service): B is drafted
    // (confidence below both thresholds), then A in the same group acts.
    h.script_tool("GRP-B", answer("high", 0.50, true, true, false, "payments"));
    let b = h
        .run_generic(&event("checkout", "LatencyB", "prod", "datadog", "GRP-B"))
        .await;
    assert_eq!(
        (outcome(&b, "ticket"), outcome(&b, "page")),
        ("review", "review"),
        "{b}"
    );
    h.script_tool("GRP-A", answer("high", 0.95, true, true, false, "payments"));
    let a = h
        .run_generic(&event("checkout", "ErrorsA", "prod", "datadog", "GRP-A"))
        .await;
    assert_eq!(
        (outcome(&a, "ticket"), outcome(&a, "page")),
        ("execute", "execute"),
        "{a}"
    );
    let a_run = a["run_id"].as_str().unwrap().to_owned();
    let b_run = b["run_id"].as_str().unwrap().to_owned();
    h.wait_completed(&a_run).await;
    let incidents = h.state().incidents();
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let pages = h.state().pagerduty_alerts().len();
    assert_eq!(pages, 1);

    let items = h.review().await;
    let page_id = item(&items, &b_run, "page")["id"].as_i64().unwrap();
    let ticket_id = item(&items, &b_run, "ticket")["id"].as_i64().unwrap();
    let (status, problem) = post(&h, &format!("/v1/review/{page_id}/approve"), None).await;
    assert_eq!(status, 409, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("page.group") && detail.contains(&a_run),
        "{problem}"
    );

    let (status, body) = post(&h, &format!("/v1/review/{ticket_id}/approve"), None).await;
    assert_eq!(status, 200, "{body}");
    let noted = wait_until("the work note on A's incident", || {
        let all = h.state().incidents();
        all.iter()
            .find(|i| i.work_notes.iter().any(|n| n.contains("LatencyB")))
            .map(|i| (all.len(), i.number.clone()))
    })
    .await;
    assert_eq!(
        noted,
        (1, incidents[0].number.clone()),
        "a work note, not a second incident"
    );
    assert_eq!(
        h.state().pagerduty_alerts().len(),
        pages,
        "no second page for the group"
    );

    // orders-db (mim autonomy): H's MIM is held (one signal), then two
    // origins confirm another alert's MIM, which opens.
    h.script_tool("MIM-H", answer("sev1", 0.95, true, true, true, "dba"));
    let held = h
        .run_generic(&event(
            "orders-db",
            "ReplicaLag",
            "prod",
            "datadog",
            "MIM-H",
        ))
        .await;
    assert_eq!(outcome(&held, "mim"), "review", "{held}");
    let held_run = held["run_id"].as_str().unwrap().to_owned();
    h.script_tool("MIM-O", answer("sev1", 0.95, true, true, true, "dba"));
    let open = h
        .run_generic(&event(
            "orders-db",
            "ConnectionsRefused",
            "prod",
            "cloudwatch",
            "MIM-O",
        ))
        .await;
    assert_eq!(outcome(&open, "mim"), "execute", "{open}");
    let open_run = open["run_id"].as_str().unwrap().to_owned();
    h.wait_completed(&open_run).await;
    let bridges = h.state().bridge_posts().len();
    let incidents = h.state().incidents().len();
    assert_eq!(bridges, 1);

    let items = h.review().await;
    let mim_id = item(&items, &held_run, "mim")["id"].as_i64().unwrap();
    let (status, problem) = post(&h, &format!("/v1/review/{mim_id}/approve"), None).await;
    assert_eq!(status, 409, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("mim.not_open") && detail.contains(&open_run),
        "{problem}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(h.state().bridge_posts().len(), bridges, "no second bridge");
    assert_eq!(
        h.state().incidents().len(),
        incidents,
        "no second major incident"
    );
    assert!(
        h.review().await.iter().any(|i| i["id"] == mim_id),
        "still open"
    );
}
