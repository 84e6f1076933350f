//! End to end, over real HTTP: each outcome of each action (execute, review,
//! skip), checked against what the ServiceNow, PagerDuty and Slack emulators
//! received, plus model answers that break the classification contract.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use common::{
    GROUP_DBA, GROUP_PAYMENTS, Harness, action, action_result, answer, event, failed_condition,
    outcome, outcomes,
};
use serde_json::{Value, json};
use tg_sandbox::{ScriptReply, Target};

fn strs(a: [&str; 3]) -> [String; 3] {
    a.map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_executes_and_servicenow_receives_exactly_one_incident() {
    let h = Harness::start().await;
    h.script_tool(
        "scn-ticket-exec",
        answer("medium", 0.9, true, false, false, "payments"),
    );
    let run = h
        .run_generic_with(
            &event(
                "checkout",
                "CheckoutErrors",
                "prod",
                "datadog",
                "scn-ticket-exec",
            ),
            Some("caller-corr-42"),
        )
        .await;
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(run["correlation_id"], "caller-corr-42");
    assert_eq!(outcomes(&run), strs(["execute", "skip", "skip"]));

    let incidents = h.state().incidents();
    assert_eq!(incidents.len(), 1, "exactly one incident");
    let inc = &incidents[0];
    assert_eq!(
        inc.field("correlation_id"),
        Some(format!("tg:{run_id}:ticket").as_str())
    );
    assert_eq!(inc.field("assignment_group"), Some(GROUP_PAYMENTS));
    assert_eq!(inc.field("urgency"), Some("2"), "medium -> urgency 2");
    assert_eq!(inc.field("impact"), Some("2"), "medium -> impact 2");
    assert_ne!(inc.field("major_incident_state"), Some("proposed"));
    let notes = inc.work_notes.join("\n");
    assert!(notes.contains("caller-corr-42"), "work notes: {notes}");
    assert!(notes.contains(run_id), "work notes: {notes}");

    let result = action_result(&run, "ticket");
    assert_eq!(result["status"], "delivered");
    assert_eq!(
        result["result"]["external_ids"]["servicenow_number"],
        inc.number.as_str()
    );
    assert_eq!(h.received(Target::Pagerduty), 0);
    assert_eq!(h.received(Target::Bridge), 0);
    assert!(h.review().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_executes_and_pagerduty_receives_exactly_one_trigger() {
    let h = Harness::start().await;
    h.script_tool(
        "scn-page-exec",
        answer("high", 0.92, false, true, false, "payments"),
    );
    let run = h
        .run_generic(&event(
            "checkout",
            "CheckoutLatency",
            "production",
            "datadog",
            "scn-page-exec",
        ))
        .await;
    assert_eq!(outcomes(&run), strs(["skip", "execute", "skip"]));
    let fingerprint = run["event"]["fingerprint"].as_str().unwrap();

    let alerts = h.state().pagerduty_alerts();
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a.dedup_key, format!("tg:{fingerprint}"));
    assert_eq!(a.trigger_count, 1);
    let p = &a.first_payload;
    assert_eq!(p["severity"], "critical", "high -> critical");
    assert_eq!(p["group"], "payments");
    assert_eq!(p["source"], "checkout");
    assert_eq!(p["custom_details"]["correlation_id"], run["correlation_id"]);
    assert_eq!(p["custom_details"]["run_id"], run["run_id"]);
    let reqs = h.state().requests(Target::Pagerduty);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].body.as_ref().unwrap()["event_action"], "trigger");
    assert_eq!(
        action_result(&run, "page")["result"]["external_ids"]["pagerduty_dedup_key"],
        a.dedup_key.as_str()
    );
    assert_eq!(h.received(Target::Servicenow), 0);
    assert_eq!(h.received(Target::Bridge), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mim_with_one_signal_goes_to_review_naming_mim_signals() {
    let h = Harness::start().await;
    h.script_tool(
        "scn-mim-one",
        answer("sev1", 0.95, false, false, true, "dba"),
    );
    let run = h
        .run_generic(&event(
            "orders-db",
            "OrdersDbDown",
            "prod",
            "datadog",
            "scn-mim-one",
        ))
        .await;
    assert_eq!(outcomes(&run), strs(["skip", "skip", "review"]));
    let c = failed_condition(&run, "mim", "mim.signals");
    assert!(c["actual"].as_str().unwrap().starts_with('1'), "{c}");
    assert_eq!(c["threshold"], ">= 2");

    let review = h.review().await;
    assert_eq!(review.len(), 1, "{review:?}");
    assert_eq!(review[0]["run_id"], run["run_id"]);
    assert_eq!(review[0]["action"], "mim");
    h.assert_no_action_traffic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mim_executes_with_two_signals_proposing_a_major_incident_and_posting_to_the_bridge() {
    let h = Harness::start().await;
    h.script_tool(
        "scn-mim-two",
        answer("sev1", 0.95, false, false, true, "dba"),
    );
    // First signal (datadog): one origin only, so review; second (cloudwatch) confirms.
    let first = h
        .run_generic(&event(
            "orders-db",
            "OrdersDbDown",
            "prod",
            "datadog",
            "scn-mim-two",
        ))
        .await;
    assert_eq!(outcome(&first, "mim"), "review");
    let run = h
        .run_generic(&event(
            "orders-db",
            "OrdersDbLatency",
            "prod",
            "cloudwatch",
            "scn-mim-two",
        ))
        .await;
    assert_eq!(outcomes(&run), strs(["skip", "skip", "execute"]));
    let signals = action(&run, "mim")["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "mim.signals")
        .unwrap()
        .clone();
    assert_eq!(signals["passed"], true);
    assert!(signals["actual"].as_str().unwrap().contains("cloudwatch"));
    assert!(signals["actual"].as_str().unwrap().contains("datadog"));

    let run_id = run["run_id"].as_str().unwrap();
    let incidents = h.state().incidents();
    assert_eq!(
        incidents.len(),
        1,
        "only the executed MIM reaches ServiceNow"
    );
    let inc = &incidents[0];
    assert_eq!(inc.field("major_incident_state"), Some("proposed"));
    assert_eq!(
        inc.field("correlation_id"),
        Some(format!("tg:{run_id}:mim").as_str())
    );
    assert_eq!(inc.field("assignment_group"), Some(GROUP_DBA));
    assert_eq!(inc.field("urgency"), Some("1"));
    assert_eq!(inc.field("impact"), Some("1"));

    let posts = h.state().bridge_posts();
    assert_eq!(posts.len(), 1);
    assert!(
        posts[0].text.contains(&inc.number),
        "the announcement names the incident: {}",
        posts[0].text
    );
    assert_eq!(h.received(Target::Pagerduty), 0);
    let result = action_result(&run, "mim");
    assert_eq!(result["status"], "delivered");
    assert_eq!(result["result"]["external_ids"]["bridge"], "posted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_below_confidence_threshold_goes_to_review_with_nothing_sent() {
    let h = Harness::start().await;
    h.script_tool(
        "scn-lowconf",
        answer("medium", 0.5, true, false, false, "payments"),
    );
    let run = h
        .run_generic(&event(
            "checkout",
            "CheckoutErrors",
            "prod",
            "datadog",
            "scn-lowconf",
        ))
        .await;
    assert_eq!(outcomes(&run), strs(["review", "skip", "skip"]));
    let c = failed_condition(&run, "ticket", "ticket.confidence");
    assert_eq!(c["actual"], "0.50", "{c}");
    assert_eq!(c["threshold"], ">= 0.70");

    let review = h.review().await;
    assert_eq!(review.len(), 1, "{review:?}");
    assert_eq!(review[0]["kind"], "action");
    assert_eq!(review[0]["run_id"], run["run_id"]);
    assert_eq!(review[0]["action"], "ticket");
    assert_eq!(action_result(&run, "ticket")["review_state"], "open");
    h.assert_no_action_traffic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_event_goes_to_review_with_production_conditions_failed() {
    let h = Harness::start().await;
    h.script_tool(
        "scn-staging",
        answer("high", 0.95, true, true, false, "payments"),
    );
    let run = h
        .run_generic(&event(
            "checkout",
            "CheckoutErrors",
            "staging",
            "datadog",
            "scn-staging",
        ))
        .await;
    assert_eq!(outcomes(&run), strs(["review", "review", "skip"]));
    for (kind, id) in [("ticket", "ticket.production"), ("page", "page.production")] {
        let c = failed_condition(&run, kind, id);
        assert_eq!(c["actual"], "staging", "{c}");
        assert_eq!(c["threshold"], "== production");
    }
    let review = h.review().await;
    let mut listed: Vec<&str> = review
        .iter()
        .filter(|i| i["run_id"] == run["run_id"])
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, ["page", "ticket"]);
    h.assert_no_action_traffic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autonomy_caps_turn_gate_executes_into_review_or_skip() {
    let h = Harness::start().await;
    // Every gate passes; only the service's autonomy level stops the action.
    // search's own team for search (the first matching script answers):
    // a model naming another team than the owner sends the page to review.
    h.script_tool(
        "SearchErrors on search",
        answer("high", 0.95, true, true, false, "search"),
    );
    h.script_tool(
        "scn-cap",
        answer("high", 0.95, true, true, false, "payments"),
    );
    // limited: a high ticket and any page need approval.
    let limited = h
        .run_generic(&event(
            "payments-api",
            "PayErrors",
            "prod",
            "datadog",
            "scn-cap",
        ))
        .await;
    assert_eq!(outcomes(&limited), strs(["review", "review", "skip"]));
    for kind in ["ticket", "page"] {
        let a = action(&limited, kind);
        assert_eq!(a["gate_outcome"], "execute", "{a}");
        assert!(
            a["capped_by"]
                .as_str()
                .unwrap()
                .contains("limited autonomy"),
            "{a}"
        );
        assert!(
            a["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["passed"] == true),
            "no gate failed: {a}"
        );
    }
    // assist: everything is drafted for approval.
    let assist = h
        .run_generic(&event(
            "legacy-billing",
            "BillingErrors",
            "prod",
            "datadog",
            "scn-cap",
        ))
        .await;
    assert_eq!(outcomes(&assist), strs(["review", "review", "skip"]));
    assert!(
        action(&assist, "ticket")["capped_by"]
            .as_str()
            .unwrap()
            .contains("assist mode")
    );
    // shadow: recorded only, nothing to review.
    let shadow = h
        .run_generic(&event(
            "search",
            "SearchErrors",
            "prod",
            "datadog",
            "scn-cap",
        ))
        .await;
    assert_eq!(outcomes(&shadow), strs(["skip", "skip", "skip"]));
    assert!(
        action(&shadow, "page")["capped_by"]
            .as_str()
            .unwrap()
            .contains("shadow")
    );

    let review = h.review().await;
    assert_eq!(review.len(), 4, "2 limited + 2 assist: {review:?}");
    assert!(review.iter().all(|i| i["run_id"] != shadow["run_id"]));
    h.assert_no_action_traffic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_when_the_model_asks_for_nothing_sends_nothing() {
    let h = Harness::start().await;
    h.script_tool(
        "scn-skip",
        answer("low", 0.99, false, false, false, "payments"),
    );
    let run = h
        .run_generic(&event(
            "checkout",
            "CheckoutNoise",
            "prod",
            "datadog",
            "scn-skip",
        ))
        .await;
    assert_eq!(outcomes(&run), strs(["skip", "skip", "skip"]));
    for kind in ["ticket", "page", "mim"] {
        assert_eq!(action(&run, kind)["requested"], false);
    }
    assert_eq!(h.model_calls(), 1);
    assert!(h.review().await.is_empty());
    h.assert_no_action_traffic();
}

/// Sends an event whose model answer is `reply` and checks the contract rejection.
async fn assert_rejected(marker: &str, reply: ScriptReply, expected_reason: &str) {
    let h = Harness::start().await;
    h.script(marker, reply);
    let run = h
        .run_generic(&event(
            "checkout",
            "CheckoutErrors",
            "prod",
            "datadog",
            marker,
        ))
        .await;
    assert_eq!(
        run["classification"]["rejection"]["reason"], expected_reason,
        "{}",
        run["classification"]
    );
    assert_eq!(run["classification"]["classification"], Value::Null);
    assert_eq!(outcomes(&run), strs(["review", "review", "review"]));
    let c = failed_condition(&run, "ticket", "contract.valid");
    assert_eq!(c["actual"], expected_reason);

    let review = h.review().await;
    assert_eq!(review.len(), 1, "{review:?}");
    assert_eq!(review[0]["kind"], "run");
    assert_eq!(review[0]["run_id"], run["run_id"]);
    // A schema failure gets the one re-ask (on by default), and the scripted
    // model breaks the contract again; other rejections are not re-asked.
    let reasked = tg_classify::contract::is_schema_failure(expected_reason);
    assert_eq!(h.model_calls(), if reasked { 2 } else { 1 });
    if reasked {
        assert!(
            run["classification"]["rejection"]["detail"]
                .as_str()
                .unwrap()
                .starts_with("after one re-ask: "),
            "{}",
            run["classification"]
        );
    }
    h.assert_no_action_traffic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_answer_with_wrong_severity_enum_is_rejected_to_review() {
    let mut bad = answer("high", 0.9, true, true, false, "payments");
    bad["classification"] = json!("critical");
    assert_rejected(
        "scn-bad-enum",
        ScriptReply::ToolInput { tool_input: bad },
        "schema_violation:classification_invalid",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_answer_with_confidence_above_one_is_rejected_to_review() {
    assert_rejected(
        "scn-bad-conf",
        ScriptReply::ToolInput {
            tool_input: answer("high", 1.5, true, true, false, "payments"),
        },
        "schema_violation:confidence_out_of_range",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_answer_with_extra_field_is_rejected_to_review() {
    let mut bad = answer("high", 0.9, true, true, false, "payments");
    bad["escalate_to_ceo"] = json!(true);
    assert_rejected(
        "scn-bad-extra",
        ScriptReply::ToolInput { tool_input: bad },
        "schema_violation:extra_field",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_answer_as_text_instead_of_tool_call_is_rejected_to_review() {
    assert_rejected(
        "scn-bad-text",
        ScriptReply::Text {
            text: r#"{"classification":"high","confidence":0.9}"#.into(),
        },
        "no_tool_call",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_answer_naming_an_unknown_team_is_rejected_to_review() {
    assert_rejected(
        "scn-bad-team",
        ScriptReply::ToolInput {
            tool_input: answer("high", 0.95, true, true, false, "ghost-team"),
        },
        "unknown_team",
    )
    .await;
}
