//! The executor against an emulated ServiceNow, PagerDuty and chat webhook, over real HTTP.

mod common;

use std::time::{Duration, Instant};

use axum::http::Method;
use common::*;
use serde_json::Value;
use tg_model::{ActionKind, ActionStatus, Severity};
use triage_gate_actions::{
    BridgeFormat, ConfigError, Executor, RetryPolicy, Secret, ServiceNowAuth, ServiceNowConfig,
    TargetError,
};

const INCIDENT: &str = "/api/now/table/incident";

fn all_secrets() -> Vec<&'static str> {
    vec![SNOW_TOKEN, PD_KEY_PAYMENTS, PD_KEY_SEARCH, "webhooksecret"]
}

fn assert_no_secret(text: &str) {
    for s in all_secrets() {
        assert!(!text.contains(s), "secret {s:?} leaked into {text:?}");
    }
}

// ---------------------------------------------------------------- ServiceNow

#[tokio::test]
async fn ticket_is_created_after_an_empty_lookup() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    let mut a = action(ActionKind::Ticket);
    // 200 chars, multi-byte: the cut must land on a char boundary at 160 chars.
    a.title = "é".repeat(200);
    let r = exec.execute(&a).await;
    assert_eq!(r.status, ActionStatus::Delivered, "{r:?}");
    assert_eq!(r.attempts, 1);
    assert_eq!(r.target.as_deref(), Some("servicenow"));
    assert_eq!(r.external_ids["servicenow_number"], "INC0010001");
    assert_eq!(r.external_ids["servicenow_sys_id"].len(), 32);

    let gets = emu.seen_on(Method::GET, INCIDENT);
    assert_eq!(gets.len(), 1);
    let q = &gets[0].query;
    assert_eq!(
        q["sysparm_query"],
        format!("correlation_id={}^active=true", a.idempotency_key)
    );
    assert_eq!(q["sysparm_limit"], "1");
    assert!(q["sysparm_fields"].starts_with("sys_id,number,state"));
    assert_eq!(
        gets[0].header("authorization"),
        Some(format!("Bearer {SNOW_TOKEN}").as_str())
    );

    let posts = emu.seen_on(Method::POST, INCIDENT);
    assert_eq!(posts.len(), 1);
    let p = &posts[0];
    assert_eq!(p.header("accept"), Some("application/json"));
    assert_eq!(p.header("content-type"), Some("application/json"));
    let body = p.json();
    let obj = body.as_object().unwrap();
    assert!(
        obj.values().all(Value::is_string),
        "every value must be a string: {body}"
    );
    assert_eq!(
        body["short_description"].as_str().unwrap().chars().count(),
        160
    );
    assert_eq!(body["description"], a.details);
    assert_eq!(body["urgency"], "1");
    assert_eq!(body["impact"], "2");
    assert_eq!(body["assignment_group"], "a715cd759f2002002920bde8132e7018");
    assert_eq!(body["caller_id"], "6816f79cc0a8016401c5a33be04be441");
    assert_eq!(body["category"], "software");
    assert_eq!(body["correlation_id"], a.idempotency_key);
    // The run's correlation ID, as ARCHITECTURE.md says (not a constant).
    assert_eq!(body["correlation_display"], a.correlation_id.as_str());
    let notes = body["work_notes"].as_str().unwrap();
    assert!(
        notes.contains("https://prometheus.example.com/graph?g0.expr=x"),
        "{notes}"
    );
    assert!(notes.contains(a.run_id.as_str()), "{notes}");
    assert!(
        !notes.contains("javascript:"),
        "non-web links are dropped: {notes}"
    );
    assert!(obj.get("major_incident_state").is_none());
}

#[tokio::test]
async fn severity_maps_to_urgency_and_impact() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(1));
    for (i, (sev, u, imp)) in [
        (Severity::Sev1, "1", "1"),
        (Severity::High, "1", "2"),
        (Severity::Medium, "2", "2"),
        (Severity::Low, "3", "3"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut a = action(ActionKind::Ticket);
        a.severity = sev;
        a.idempotency_key = format!("tg:sev:{i}");
        assert_eq!(exec.execute(&a).await.status, ActionStatus::Delivered);
        let body = emu.seen_on(Method::POST, INCIDENT)[i].json();
        assert_eq!(
            (
                body["urgency"].as_str().unwrap(),
                body["impact"].as_str().unwrap()
            ),
            (u, imp),
            "{sev}"
        );
    }
}

#[tokio::test]
async fn no_create_when_the_lookup_finds_the_incident() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    let a = action(ActionKind::Ticket);
    emu.seed_incident(
        &a.idempotency_key,
        "aaaabbbbccccddddeeeeffff00001111",
        "INC0000042",
    );
    let r = exec.execute(&a).await;
    assert_eq!(r.status, ActionStatus::Delivered, "{r:?}");
    assert_eq!(r.external_ids["servicenow_number"], "INC0000042");
    assert_eq!(
        r.external_ids["servicenow_sys_id"],
        "aaaabbbbccccddddeeeeffff00001111"
    );
    assert!(emu.seen_on(Method::POST, INCIDENT).is_empty());
}

#[tokio::test]
async fn executing_the_same_ticket_twice_creates_one_incident() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    let a = action(ActionKind::Ticket);
    let first = exec.execute(&a).await;
    let second = exec.execute(&a).await;
    assert_eq!(first.external_ids, second.external_ids);
    assert_eq!(emu.seen_on(Method::POST, INCIDENT).len(), 1);
    assert_eq!(emu.incidents().len(), 1);
}

#[tokio::test]
async fn a_create_whose_reply_timed_out_is_found_on_retry_not_created_again() {
    let (emu, addr) = start().await;
    let mut cfg = snow_config(addr);
    cfg.timeout_ms = 300;
    let exec = Executor::new(Some(cfg), None, None, fast_retry(3)).unwrap();
    // The emulator creates the incident but answers after the client gave up.
    emu.fault("snow_post", Fault::slow(1500));
    let r = exec.execute(&action(ActionKind::Ticket)).await;
    assert_eq!(r.status, ActionStatus::Delivered, "{r:?}");
    assert_eq!(r.attempts, 2);
    assert_eq!(emu.incidents().len(), 1);
    assert_eq!(emu.seen_on(Method::POST, INCIDENT).len(), 1);
    assert_eq!(r.external_ids["servicenow_number"], "INC0010001");
}

#[tokio::test]
async fn a_lookup_row_for_another_correlation_id_is_refused() {
    let (emu, addr) = start().await;
    emu.0.lock().unwrap().ignore_query = true;
    emu.seed_incident(
        "someone-else",
        "aaaabbbbccccddddeeeeffff00001111",
        "INC0000001",
    );
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    let r = exec.execute(&action(ActionKind::Ticket)).await;
    assert_eq!(r.status, ActionStatus::Failed);
    assert_eq!(r.attempts, 1, "permanent: no retry");
    assert!(
        r.error.as_deref().unwrap().contains("someone-else"),
        "{r:?}"
    );
    assert!(emu.seen_on(Method::POST, INCIDENT).is_empty());
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_succeeds() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    emu.fault(
        "snow_post",
        Fault::status(
            429,
            r#"{"error":{"message":"Rate limit exceeded","detail":"Rate limit of 100 requests per hour for Table API exceeded"},"status":"failure"}"#,
        )
        .with_header("retry-after", "1")
        .with_header("x-ratelimit-limit", "100"),
    );
    let started = Instant::now();
    let r = exec.execute(&action(ActionKind::Ticket)).await;
    assert_eq!(r.status, ActionStatus::Delivered, "{r:?}");
    assert_eq!(r.attempts, 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    // The retry looked up again before creating.
    assert_eq!(emu.seen_on(Method::GET, INCIDENT).len(), 2);
    assert_eq!(emu.incidents().len(), 1);
}

#[tokio::test]
async fn retry_after_is_capped_by_policy() {
    let (emu, addr) = start().await;
    let retry = RetryPolicy {
        retry_after_max_secs: 0,
        ..fast_retry(2)
    };
    let exec = executor(addr, BridgeFormat::Slack, retry);
    emu.fault(
        "snow_get",
        Fault::status(429, "").with_header("retry-after", "3600"),
    );
    let started = Instant::now();
    let r = exec.execute(&action(ActionKind::Ticket)).await;
    assert_eq!(r.status, ActionStatus::Delivered, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn repeated_500s_fail_after_attempts_max() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    for _ in 0..5 {
        emu.fault(
            "snow_get",
            Fault::status(
                500,
                r#"{"error":{"message":"Internal error","detail":""},"status":"failure"}"#,
            ),
        );
    }
    let r = exec.execute(&action(ActionKind::Ticket)).await;
    assert_eq!(r.status, ActionStatus::Failed);
    assert_eq!(r.attempts, 3);
    assert_eq!(emu.seen_on(Method::GET, INCIDENT).len(), 3);
    let err = r.error.unwrap();
    assert!(
        err.contains("http 500") && err.contains("Internal error"),
        "{err}"
    );
}

#[tokio::test]
async fn a_400_fails_at_once_with_the_servicenow_message() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(4));
    emu.fault(
        "snow_post",
        Fault::status(400, r#"{"error":{"message":"Invalid field value","detail":"urgency must be 1, 2 or 3"},"status":"failure"}"#),
    );
    let r = exec.execute(&action(ActionKind::Ticket)).await;
    assert_eq!(r.status, ActionStatus::Failed);
    assert_eq!(r.attempts, 1);
    assert_eq!(emu.seen_on(Method::POST, INCIDENT).len(), 1);
    let err = r.error.unwrap();
    assert!(
        err.contains("http 400")
            && err.contains("Invalid field value")
            && err.contains("urgency must be"),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_token_fails_without_the_token_in_the_error() {
    let (emu, addr) = start().await;
    let mut cfg = snow_config(addr);
    cfg.auth = ServiceNowAuth::Token(Secret::new("wrong-token-123456"));
    let exec = Executor::new(Some(cfg), None, None, fast_retry(3)).unwrap();
    // The instance echoes what it got (some proxies do).
    emu.fault("snow_get", Fault::status(401, r#"{"error":{"message":"User Not Authenticated","detail":"bad token wrong-token-123456"},"status":"failure"}"#));
    let r = exec.execute(&action(ActionKind::Ticket)).await;
    assert_eq!(r.status, ActionStatus::Failed);
    assert_eq!(r.attempts, 1);
    let err = r.error.unwrap();
    assert!(err.contains("User Not Authenticated"), "{err}");
    assert!(!err.contains("wrong-token-123456"), "{err}");
}

#[tokio::test]
async fn missing_assignment_group_or_bad_key_fails_before_any_request() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    let mut a = action(ActionKind::Ticket);
    a.team = "unknown-team".into();
    let r = exec.execute(&a).await;
    assert_eq!(r.status, ActionStatus::Failed);
    assert_eq!(r.attempts, 0);
    assert!(
        r.error
            .unwrap()
            .contains("no assignment group for team \"unknown-team\"")
    );
    let mut a = action(ActionKind::Ticket);
    a.idempotency_key = "key^ORactive=false".into();
    let r = exec.execute(&a).await;
    assert_eq!(r.status, ActionStatus::Failed);
    assert!(r.error.unwrap().contains("not a valid correlation_id"));
    assert!(emu.seen().is_empty());
}

// ---------------------------------------------------------------- PagerDuty

#[tokio::test]
async fn page_body_has_the_events_v2_shape() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    let a = action(ActionKind::Page);
    let r = exec.execute(&a).await;
    assert_eq!(r.status, ActionStatus::Delivered, "{r:?}");
    assert_eq!(r.target.as_deref(), Some("pagerduty"));
    assert_eq!(r.external_ids["pagerduty_dedup_key"], a.dedup_key);
    let sent = emu.seen_on(Method::POST, "/v2/enqueue");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].header("content-type"), Some("application/json"));
    assert!(
        sent[0].header("authorization").is_none(),
        "events v2 takes no auth header"
    );
    let b = sent[0].json();
    assert_eq!(b["routing_key"], PD_KEY_PAYMENTS);
    assert_eq!(b["event_action"], "trigger");
    assert_eq!(b["dedup_key"], a.dedup_key);
    assert_eq!(b["client"], "triage-gate");
    let p = &b["payload"];
    assert_eq!(p["summary"], a.title);
    assert_eq!(p["source"], "checkout");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["group"], "payments");
    assert_eq!(p["class"], "alert");
    assert!(chrono::DateTime::parse_from_rfc3339(p["timestamp"].as_str().unwrap()).is_ok());
    assert_eq!(p["custom_details"]["run_id"], a.run_id.as_str());
    assert_eq!(p["custom_details"]["correlation_id"], "am:prod:9f3c1e2a");
    assert_eq!(p["custom_details"]["confidence"], 0.91);
    assert_eq!(p["custom_details"]["environment"], "production");
    assert_eq!(
        b["links"],
        serde_json::json!([{"href": "https://prometheus.example.com/graph?g0.expr=x", "text": "generator"}])
    );
}

#[tokio::test]
async fn page_severity_and_routing_key_follow_the_action() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(1));
    let cases = [
        (Severity::Sev1, "critical"),
        (Severity::High, "critical"),
        (Severity::Medium, "error"),
        (Severity::Low, "warning"),
    ];
    for (sev, _) in cases {
        let mut a = action(ActionKind::Page);
        a.severity = sev;
        a.team = "search".into();
        assert_eq!(exec.execute(&a).await.status, ActionStatus::Delivered);
    }
    let sent = emu.seen_on(Method::POST, "/v2/enqueue");
    for (i, (_, want)) in cases.iter().enumerate() {
        let b = sent[i].json();
        assert_eq!(b["payload"]["severity"], *want);
        assert_eq!(b["routing_key"], PD_KEY_SEARCH);
    }
}

#[tokio::test]
async fn page_summary_is_cut_to_1024_chars() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(1));
    let mut a = action(ActionKind::Page);
    a.title = "ü".repeat(1500);
    assert_eq!(exec.execute(&a).await.status, ActionStatus::Delivered);
    let b = emu.seen_on(Method::POST, "/v2/enqueue")[0].json();
    assert_eq!(
        b["payload"]["summary"].as_str().unwrap().chars().count(),
        1024
    );
}

#[tokio::test]
async fn a_team_without_a_routing_key_fails_permanently() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    let mut a = action(ActionKind::Page);
    a.team = "storage".into();
    let r = exec.execute(&a).await;
    assert_eq!(r.status, ActionStatus::Failed);
    assert_eq!(r.attempts, 0);
    assert_eq!(
        r.error.as_deref(),
        Some("pagerduty: no routing key for team \"storage\"")
    );
    assert!(emu.seen().is_empty());
}

#[tokio::test]
async fn a_pagerduty_400_is_permanent_and_its_echoed_key_is_scrubbed() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(4));
    emu.fault(
        "pd",
        Fault::status(
            400,
            format!(r#"{{"status":"invalid event","message":"Event object is invalid","errors":["routing_key {PD_KEY_PAYMENTS} is disabled"]}}"#),
        ),
    );
    let r = exec.execute(&action(ActionKind::Page)).await;
    assert_eq!(r.status, ActionStatus::Failed);
    assert_eq!(r.attempts, 1);
    let err = r.error.unwrap();
    assert!(
        err.contains("invalid event")
            && err.contains("Event object is invalid")
            && err.contains("is disabled"),
        "{err}"
    );
    assert_no_secret(&err);
}

#[tokio::test]
async fn a_pagerduty_429_without_retry_after_backs_off_then_succeeds() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    emu.fault("pd", Fault::status(429, ""));
    emu.fault("pd", Fault::status(502, "bad gateway"));
    let r = exec.execute(&action(ActionKind::Page)).await;
    assert_eq!(r.status, ActionStatus::Delivered, "{r:?}");
    assert_eq!(r.attempts, 3);
    assert_eq!(emu.seen_on(Method::POST, "/v2/enqueue").len(), 3);
}

#[tokio::test]
async fn resolve_page_sends_a_resolve_event() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    let r = exec.resolve_page("payments", "tg:checkout:abc").await;
    assert_eq!(r.status, ActionStatus::Delivered, "{r:?}");
    let b = emu.seen_on(Method::POST, "/v2/enqueue")[0].json();
    assert_eq!(
        b,
        serde_json::json!({"routing_key": PD_KEY_PAYMENTS, "event_action": "resolve", "dedup_key": "tg:checkout:abc"})
    );
    let r = exec.resolve_page("nobody", "tg:checkout:abc").await;
    assert_eq!(r.status, ActionStatus::Failed);
}

// ---------------------------------------------------------------- MIM

#[tokio::test]
async fn mim_proposes_a_major_incident_and_announces_it_on_slack() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    let mut a = action(ActionKind::Mim);
    a.severity = Severity::Medium; // a MIM is 1/1 whatever the severity
    a.title = "checkout down <!channel> & more".into();
    let r = exec.execute(&a).await;
    assert_eq!(r.status, ActionStatus::Delivered, "{r:?}");
    assert_eq!(r.target.as_deref(), Some("servicenow+bridge"));
    assert_eq!(r.attempts, 2);
    assert_eq!(r.external_ids["servicenow_number"], "INC0010001");
    assert_eq!(r.external_ids["bridge"], "posted");
    assert!(r.external_ids.contains_key("servicenow_sys_id"));

    let snow = emu.seen_on(Method::POST, INCIDENT)[0].json();
    assert_eq!(snow["major_incident_state"], "proposed");
    assert_eq!(snow["urgency"], "1");
    assert_eq!(snow["impact"], "1");
    assert_eq!(snow["correlation_id"], a.idempotency_key);

    let hook = emu.seen_on(Method::POST, "/services/");
    assert_eq!(hook.len(), 1);
    assert_eq!(hook[0].path, WEBHOOK_PATH);
    let b = hook[0].json();
    let text = b["text"].as_str().unwrap();
    assert!(
        text.contains("INC0010001") && text.contains("checkout"),
        "{text}"
    );
    let section = b["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(section.contains("INC0010001"), "{section}");
    assert!(
        section.contains("<https://meet.example.com/mi-bridge|join>"),
        "{section}"
    );
    assert!(
        section.contains(&format!("http://{addr}/nav_to.do?uri=incident.do?sys_id=")),
        "{section}"
    );
    assert!(
        section.contains("&lt;!channel&gt; &amp; more"),
        "alert text must not mention anyone: {section}"
    );
    let links = b["blocks"][1]["elements"][0]["text"].as_str().unwrap();
    assert!(
        links.contains("https://prometheus.example.com/graph?g0.expr=x|generator"),
        "{links}"
    );
    assert!(!b.to_string().contains("javascript:"));
}

#[tokio::test]
async fn mim_announces_on_teams_with_an_adaptive_card() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Teams, fast_retry(3));
    let r = exec.execute(&action(ActionKind::Mim)).await;
    assert_eq!(r.status, ActionStatus::Delivered, "{r:?}");
    let b = emu.seen_on(Method::POST, "/workflows/")[0].json();
    assert_eq!(b["type"], "message");
    let att = &b["attachments"][0];
    assert_eq!(
        att["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert!(att["contentUrl"].is_null());
    let card = &att["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert!(
        card["body"][0]["text"]
            .as_str()
            .unwrap()
            .contains("INC0010001")
    );
    assert_eq!(card["body"][1]["text"], "Checkout latency SLO burn");
    let facts = card["body"][2]["facts"].to_string();
    assert!(
        facts.contains("checkout") && facts.contains("payments"),
        "{facts}"
    );
    let actions = card["actions"].as_array().unwrap();
    assert!(actions.iter().all(|x| x["type"] == "Action.OpenUrl"));
    assert_eq!(actions[0]["url"], "https://meet.example.com/mi-bridge");
    assert!(
        actions[1]["url"]
            .as_str()
            .unwrap()
            .contains("incident.do?sys_id=")
    );
    assert_eq!(
        actions[2]["url"],
        "https://prometheus.example.com/graph?g0.expr=x"
    );
    assert_eq!(actions.len(), 3, "non-web links are dropped");
}

#[tokio::test]
async fn teams_throttling_hidden_in_a_200_is_retried() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Teams, fast_retry(3));
    emu.fault(
        "bridge",
        Fault::status(
            200,
            "Microsoft Teams endpoint returned HTTP error 429 with ContextId x",
        ),
    );
    let r = exec.execute(&action(ActionKind::Mim)).await;
    assert_eq!(r.status, ActionStatus::Delivered, "{r:?}");
    assert_eq!(r.attempts, 3, "1 servicenow + 2 bridge");
    assert_eq!(emu.seen_on(Method::POST, "/workflows/").len(), 2);
}

#[tokio::test]
async fn a_slack_error_code_fails_the_mim_but_keeps_the_incident_and_hides_the_webhook() {
    let (emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    emu.fault("bridge", Fault::status(404, "channel_not_found"));
    let a = action(ActionKind::Mim);
    let r = exec.execute(&a).await;
    assert_eq!(r.status, ActionStatus::Failed);
    assert_eq!(r.attempts, 2, "404 is not retried");
    assert_eq!(r.external_ids["servicenow_number"], "INC0010001");
    assert!(!r.external_ids.contains_key("bridge"));
    let err = r.error.unwrap();
    assert!(
        err.contains("http 404") && err.contains("channel_not_found"),
        "{err}"
    );
    assert_no_secret(&err);
    // Retrying the whole action reuses the incident and only re-announces.
    let r = exec.execute(&a).await;
    assert_eq!(r.status, ActionStatus::Delivered, "{r:?}");
    assert_eq!(emu.incidents().len(), 1);
    assert_eq!(emu.seen_on(Method::POST, "/services/").len(), 2);
}

#[tokio::test]
async fn an_unreachable_webhook_error_does_not_name_its_url() {
    let (emu, addr) = start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut bridge = bridge_config(closed, BridgeFormat::Slack);
    bridge.timeout_ms = 500;
    let exec = Executor::new(Some(snow_config(addr)), None, Some(bridge), fast_retry(2)).unwrap();
    let r = exec.execute(&action(ActionKind::Mim)).await;
    assert_eq!(r.status, ActionStatus::Failed);
    assert_eq!(
        r.attempts, 3,
        "1 servicenow + 2 bridge: connection errors are retried"
    );
    let err = r.error.unwrap();
    assert!(err.starts_with("bridge: "), "{err}");
    assert_no_secret(&err);
    assert!(err.contains("connection failed"), "{err}");
    assert_eq!(emu.incidents().len(), 1);
}

#[tokio::test]
async fn a_target_that_is_not_configured_fails_without_requests() {
    let (emu, addr) = start().await;
    let exec = Executor::new(Some(snow_config(addr)), None, None, fast_retry(3)).unwrap();
    let r = exec.execute(&action(ActionKind::Page)).await;
    assert_eq!((r.status, r.attempts), (ActionStatus::Failed, 0));
    assert_eq!(
        r.error.as_deref(),
        Some("pagerduty: pagerduty is not configured")
    );
    let r = exec.execute(&action(ActionKind::Mim)).await;
    assert_eq!(r.status, ActionStatus::Failed);
    assert!(r.error.unwrap().contains("bridge is not configured"));
    assert!(
        emu.seen().is_empty(),
        "no incident is opened for a MIM that cannot be announced"
    );
}

// ---------------------------------------------------------------- secrets and config

#[tokio::test]
async fn debug_output_never_shows_a_secret() {
    let (_emu, addr) = start().await;
    let exec = executor(addr, BridgeFormat::Slack, fast_retry(3));
    let shown = format!(
        "{exec:?} {:?} {:?} {:?}",
        snow_config(addr),
        pd_config(addr),
        bridge_config(addr, BridgeFormat::Teams)
    );
    assert!(shown.contains("[redacted]"));
    assert_no_secret(&shown);
}

#[test]
fn config_is_validated_without_echoing_secrets() {
    let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let bad_url = ServiceNowConfig {
        base_url: "not a url".into(),
        ..snow_config(addr)
    };
    let err = Executor::new(Some(bad_url), None, None, RetryPolicy::default()).unwrap_err();
    assert!(
        matches!(err, ConfigError::BaseUrl { .. }) && err.to_string().contains("not a url"),
        "{err}"
    );

    let zero = ServiceNowConfig {
        timeout_ms: 0,
        ..snow_config(addr)
    };
    let err = Executor::new(Some(zero), None, None, RetryPolicy::default()).unwrap_err();
    assert!(err.to_string().contains("timeout_ms 0"), "{err}");

    let mut bridge = bridge_config(addr, BridgeFormat::Slack);
    bridge.webhook_url = Some(Secret::new("hooks.slack.com/services/webhooksecret"));
    let err = Executor::new(None, None, Some(bridge), RetryPolicy::default()).unwrap_err();
    assert!(matches!(err, ConfigError::WebhookUrl { .. }));
    assert_no_secret(&err.to_string());

    let too_many = RetryPolicy {
        attempts_max: 50,
        ..RetryPolicy::default()
    };
    let err = Executor::new(None, None, None, too_many).unwrap_err();
    assert!(err.to_string().contains("attempts_max"), "{err}");
}

#[test]
fn target_errors_say_their_class() {
    let e = TargetError::Permanent {
        target: "pagerduty",
        detail: "http 400: invalid event".into(),
    };
    assert!(e.is_permanent());
    assert_eq!(e.to_string(), "pagerduty: http 400: invalid event");
}
