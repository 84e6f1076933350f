//! "IdP down" acceptance (issue 7), end to end over real HTTP to the real
//! gate and the sandbox, real SQLite, simulated time shared with the sandbox:
//! ServiceNow is configured with OAuth client credentials and its token
//! endpoint (`/oauth_token.do`) is down while events arrive. Events are
//! accepted (202) and decided, no action reaches the Table API (fail closed:
//! no token, no request), nothing is lost or dead-lettered; once the token
//! endpoint is back every action is delivered exactly once. Readiness names
//! the target whose token source cannot get a token before any action queues
//! (the background probe).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, answer, event, outcome};
use serde_json::Value;
use tg_sandbox::{OutageSpec, Target};
use triage_gate_server::Clock as _;

/// The OAuth client the sandbox instance knows. Its secret is the harness's
/// `SERVICENOW_TOKEN` secret (the harness's secret map is shared by every test).
const CLIENT_ID: &str = "tg-idp-down-client";

const STATIC_TOKEN: &str = "    token: { env: SERVICENOW_TOKEN }\n";
const RETRY_BLOCK: &str = "  retry:
    attempts_max: 4
    backoff_base_ms: 5
    backoff_max_ms: 20
    retry_after_max_secs: 2
";

/// Turns the background token probe off: the outage test drives every
/// token request itself (a probe at build time would race its set-up).
const PROBES_OFF: &str = "identity:\n  outbound:\n    probe_interval_secs: 0\n";

fn config() -> String {
    format!("{}{PROBES_OFF}", oauth_config())
}

fn oauth_config() -> String {
    assert!(common::CONFIG.contains(STATIC_TOKEN) && common::CONFIG.contains(RETRY_BLOCK));
    assert!(!common::CONFIG.contains("\nidentity:"));
    common::CONFIG
        .replace(
            STATIC_TOKEN,
            &format!(
                "    auth:
      oauth:
        client_id: {CLIENT_ID}
        client_secret: {{ env: SERVICENOW_TOKEN }}
        scope: useraccount
        timeout_ms: 2000
"
            ),
        )
        .replace(
            RETRY_BLOCK,
            "  retry:
    attempts_max: 20
    backoff_base_ms: 1000
    backoff_max_ms: 30000
    retry_after_max_secs: 30
",
        )
}

/// Waits (wall time) until no delivery is in flight.
async fn settle(h: &Harness) {
    let store = &h.gate.as_ref().unwrap().state.store;
    for _ in 0..400 {
        let c = store.outbox_counts(h.clock.now()).await.unwrap();
        if c.in_flight == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("a delivery stayed in flight");
}

async fn wait_status(h: &Harness, run_id: &str, status: &str) -> Value {
    for _ in 0..1000 {
        let run = h.get_run(run_id).await;
        if run["status"] == status {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {run_id} never reached {status}");
}

async fn actions(h: &Harness, status: &str) -> Vec<Value> {
    h.get_json(&format!("/v1/actions?status={status}")).await["actions"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_accepts_events_executes_nothing_then_delivers_each_once() {
    let h = Harness::start_with(&config()).await;
    let clock = h.clock.clone();
    h.state().set_clock(Arc::new(move || clock.now()));
    h.state()
        .servicenow_oauth_client(CLIENT_ID, tg_sandbox::DEFAULT_SERVICENOW_TOKEN)
        .unwrap();
    h.state().servicenow_oauth_enable_client_credentials(true);
    // The IdP (the instance's token endpoint) is down for five simulated minutes;
    // the Table API itself is up.
    h.state()
        .inject_outage(OutageSpec {
            target: "servicenow_oauth".into(),
            down_for_ms: 300_000,
            status: Some(503),
            reset: false,
            retry_after_secs: None,
        })
        .unwrap();

    let mut runs = Vec::new();
    for (i, service) in ["checkout", "payments-api", "checkout", "payments-api"]
        .iter()
        .enumerate()
    {
        let marker = format!("idp-down-{i}");
        h.script_tool(
            &marker,
            answer("medium", 0.9, true, false, false, "payments"),
        );
        // `submit` asserts the 202.
        runs.extend(
            h.submit(
                "generic",
                &event(service, &format!("Errors{i}"), "prod", "datadog", &marker),
                None,
            )
            .await,
        );
    }
    assert_eq!(runs.len(), 4);
    for id in &runs {
        let run = wait_status(&h, id, "decided").await;
        assert_eq!(outcome(&run, "ticket"), "execute", "{run}");
    }
    settle(&h).await;

    // Four simulated minutes: the token endpoint is probed, the Table API never called.
    for _ in 0..24 {
        h.advance_secs(10);
        h.gate.as_ref().unwrap().state.outbox.notify_one();
        tokio::time::sleep(Duration::from_millis(20)).await;
        settle(&h).await;
    }
    assert_eq!(
        h.received(Target::Servicenow),
        0,
        "no action was executed without a token"
    );
    assert!(h.state().incidents().is_empty());
    let probes = h.state().requests(Target::ServicenowOauth);
    assert!(probes.len() >= 3, "the IdP was probed: {}", probes.len());
    assert!(probes.iter().all(|r| r.faulted && r.status == 503));
    assert_eq!(h.state().servicenow_tokens_issued(), 0);
    // Nothing lost, nothing dead: every action waits in the outbox.
    let pending = actions(&h, "pending").await;
    assert_eq!(pending.len(), 4, "{pending:?}");
    assert!(actions(&h, "dead").await.is_empty());
    let head_error = pending[0]["last_error"].as_str().unwrap();
    assert!(
        head_error.contains("no ServiceNow OAuth token"),
        "{head_error}"
    );
    assert!(!head_error.contains(tg_sandbox::DEFAULT_SERVICENOW_TOKEN));
    for id in &runs {
        assert_eq!(h.get_run(id).await["status"], "decided", "not audited yet");
    }

    // The IdP is back: every action is delivered, exactly once.
    h.advance_secs(90);
    for _ in 0..50 {
        if actions(&h, "pending").await.is_empty() {
            break;
        }
        h.advance_to_next_attempt().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &runs {
        let run = h.wait_completed(id).await;
        assert_eq!(run["actions"][0]["status"], "delivered", "{run}");
        assert_eq!(run["audit"]["actions"][0]["status"], "delivered", "{run}");
    }
    // One alert of each service opened its incident; the other is in the same
    // group, so it became a work note on it: two creates, two notes, each once.
    // (Which of two simultaneous alerts decides first is up to the workers.)
    let created: Vec<String> = h
        .state()
        .incidents()
        .iter()
        .map(|i| i.field("correlation_id").unwrap().to_owned())
        .collect();
    assert_eq!(created.len(), 2, "one incident per group: {created:?}");
    let opened = |r: &String| created.contains(&format!("tg:{r}:ticket"));
    // checkout: runs 0 and 2; payments-api: runs 1 and 3.
    for (a, b) in [(&runs[0], &runs[2]), (&runs[1], &runs[3])] {
        assert!(
            opened(a) != opened(b),
            "one incident per group, none twice: {created:?}"
        );
    }
    let mut notes: Vec<String> = h
        .state()
        .servicenow_updates()
        .iter()
        .filter(|u| u.adds_work_note())
        .map(|u| {
            let text = &u.written["work_notes"];
            text.lines().last().unwrap().to_owned()
        })
        .collect();
    notes.sort();
    notes.dedup();
    assert_eq!(notes.len(), 2, "two notes, each added once: {notes:?}");
    assert_eq!(
        h.state().servicenow_updates().len(),
        2,
        "no note was added twice"
    );
    for r in runs.iter().filter(|r| !opened(r)) {
        assert!(
            notes.iter().any(|n| n.contains(r.as_str())),
            "run {r} has its note: {notes:?}"
        );
    }
    // Deliveries shared one cached token (single-flight, not one per action).
    assert_eq!(h.state().servicenow_tokens_issued(), 1);
    assert!(actions(&h, "dead").await.is_empty());
}

async fn readyz(h: &Harness) -> (u16, Value) {
    let resp = h
        .http
        .get(format!("{}/readyz", h.base))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Polls (wall time) until readiness says `servicenow` is `ready`.
async fn wait_servicenow_ready(h: &Harness, ready: bool) -> (u16, Value) {
    // The probe backs off 5 s after its first failure.
    for _ in 0..1_000 {
        let (status, body) = readyz(h).await;
        let sn = &body["capabilities"]["actions"]["servicenow"];
        if sn["ready"] == ready && sn["token"]["last_fetch_at"].is_i64() {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "servicenow never became ready={ready}: {:?}",
        readyz(h).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_a_target_without_a_token_before_any_action_queues() {
    // The instance does not know the client yet (bad credentials): the
    // background probe learns it before a single event arrives.
    let h = Harness::start_with(&oauth_config()).await;
    let (status, body) = wait_servicenow_ready(&h, false).await;
    let sn = &body["capabilities"]["actions"]["servicenow"];
    assert_eq!(sn["pending"], 0, "no action queued: {body}");
    assert!(
        sn["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("token endpoint refused the client (")),
        "{body}"
    );
    assert_eq!(sn["token"]["token_valid"], false, "{body}");
    // The gate itself stays ready: events are accepted and wait in the outbox
    // (503 is for the store and inbound identity only).
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    let text = body.to_string();
    assert!(
        !text.contains(tg_sandbox::DEFAULT_SERVICENOW_TOKEN),
        "no secret in readiness: {text}"
    );
    assert_eq!(h.received(Target::Servicenow), 0);

    // The client is registered: the next probe (after its backoff) gets a
    // token, and readiness says so, still before any action.
    h.state()
        .servicenow_oauth_client(CLIENT_ID, tg_sandbox::DEFAULT_SERVICENOW_TOKEN)
        .unwrap();
    h.state().servicenow_oauth_enable_client_credentials(true);
    let (_, body) = wait_servicenow_ready(&h, true).await;
    let sn = &body["capabilities"]["actions"]["servicenow"];
    assert_eq!(sn["token"]["token_valid"], true, "{body}");
    assert!(sn.get("reason").is_none(), "{body}");
    assert_eq!(h.state().servicenow_tokens_issued(), 1);
    assert!(!body.to_string().contains("access_token"));
    assert_eq!(h.received(Target::Servicenow), 0, "a probe sends no action");
}
