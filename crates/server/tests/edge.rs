//! End to end, over real HTTP: the API edge (malformed events, body limit,
//! unknown source, health and metrics) and the audit file the gate writes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use std::collections::BTreeMap;

use common::{Harness, answer, event};
use serde_json::{Value, json};
use tg_sandbox::Target;

/// Asserts a problem+json answer with `status`; returns its body.
async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(ct, "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["type"].as_str().unwrap().starts_with("https://"),
        "{body}"
    );
    body
}

/// Nothing reached the store or any emulator.
async fn assert_nothing_happened(h: &mut Harness) {
    assert!(h.review().await.is_empty());
    for t in Target::ALL {
        assert_eq!(h.received(t), 0, "{t} received something");
    }
    h.stop_gate().await;
    assert_eq!(h.run_records(), Vec::<Value>::new(), "no run was audited");
}

/// Issue 21 (10): an event repeating a key (last wins in serde_json, first
/// in other parsers) is refused whole, 400 `duplicate-key` naming the key,
/// at the top level or nested, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_json_keys_are_400_duplicate_key_naming_the_key() {
    let mut h = Harness::start().await;
    for (source, body, key) in [
        (
            "generic",
            r#"{"service": "checkout", "alert_name": "a", "summary": "s", "service": "payments"}"#,
            "service",
        ),
        (
            "generic",
            r#"{"service": "checkout", "alert_name": "a", "summary": "s",
                "labels": {"env": "staging", "env": "prod"}}"#,
            "env",
        ),
        (
            "alertmanager",
            r#"{"version": "4", "status": "firing", "groupKey": "g", "alerts": [
                {"status": "firing", "status": "resolved", "labels": {"service": "a"},
                 "annotations": {}, "startsAt": "2026-11-24T03:12:00Z"}]}"#,
            "status",
        ),
    ] {
        let resp = h.post_raw(source, body.as_bytes().to_vec(), None).await;
        let p = problem(resp, 400).await;
        assert!(
            p["type"].as_str().unwrap().ends_with("/duplicate-key"),
            "{source}: {p}"
        );
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("duplicate key \"{key}\"")),
            "{source}: {p}"
        );
    }
    assert_nothing_happened(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_event_missing_service_is_400_problem_naming_the_field() {
    let mut h = Harness::start().await;
    let mut ev = event("checkout", "CheckoutErrors", "prod", "datadog", "x");
    ev.as_object_mut().unwrap().remove("service");
    let resp = h
        .post_raw("generic", serde_json::to_vec(&ev).unwrap(), None)
        .await;
    let p = problem(resp, 400).await;
    assert_eq!(p["field"], "service", "{p}");
    assert!(p["type"].as_str().unwrap().ends_with("/malformed-event"));
    assert!(p["detail"].as_str().unwrap().contains("service"), "{p}");
    assert_nothing_happened(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_payload_with_unsupported_version_is_400_problem_naming_version() {
    let mut h = Harness::start().await;
    let body = json!({
        "version": "3",
        "groupKey": "{}:{alertname=\"X\"}",
        "status": "firing",
        "receiver": "triage-gate",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "X", "service": "checkout"},
            "annotations": {"summary": "x"},
            "startsAt": "2026-11-24T03:00:00Z",
            "fingerprint": "abc"
        }]
    });
    let resp = h
        .post_raw("alertmanager", serde_json::to_vec(&body).unwrap(), None)
        .await;
    let p = problem(resp, 400).await;
    assert_eq!(p["field"], "version", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("\"3\""), "{p}");
    assert_nothing_happened(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413_problem_naming_body_bytes_max() {
    let mut h = Harness::start().await;
    // The test config sets body_bytes_max to 65536.
    let mut ev = event("checkout", "CheckoutErrors", "prod", "datadog", "x");
    ev["message"] = json!("a".repeat(70_000));
    let resp = h
        .post_raw("generic", serde_json::to_vec(&ev).unwrap(), None)
        .await;
    let p = problem(resp, 413).await;
    assert_eq!(p["limit"], "body_bytes_max", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("65536"), "{p}");
    assert_nothing_happened(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_source_is_404_problem() {
    let mut h = Harness::start().await;
    let ev = event("checkout", "CheckoutErrors", "prod", "datadog", "x");
    let resp = h
        .post_raw("nagios", serde_json::to_vec(&ev).unwrap(), None)
        .await;
    let p = problem(resp, 404).await;
    assert!(
        p["type"].as_str().unwrap().ends_with("/unknown-source"),
        "{p}"
    );
    assert!(p["detail"].as_str().unwrap().contains("nagios"), "{p}");
    assert_nothing_happened(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_answer_and_count_traffic() {
    let h = Harness::start().await;
    for path in ["/healthz", "/readyz"] {
        let resp = h
            .http
            .get(format!("{}{path}", h.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    let ready = h.get_json("/readyz").await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["capabilities"]["identity"]["mode"], "none");
    for target in ["servicenow", "pagerduty", "bridge"] {
        assert_eq!(
            ready["capabilities"]["actions"][target]["ready"], true,
            "{target}: {ready}"
        );
    }
    h.script_tool(
        "scn-metrics",
        answer("low", 0.9, false, false, false, "payments"),
    );
    h.run_generic(&event(
        "checkout",
        "CheckoutNoise",
        "prod",
        "datadog",
        "scn-metrics",
    ))
    .await;
    let resp = h
        .http
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    for name in [
        "triage_gate_events_accepted_total",
        "triage_gate_decisions_total",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && !l.trim_end().ends_with(" 0")),
            "{name} missing or zero in:\n{text}"
        );
    }
    assert!(
        text.contains(r#"triage_gate_decisions_total{action="ticket",outcome="skip"}"#),
        "{text}"
    );
}

/// Rewrites the audit file's lines through `f` into a copy and verifies it.
fn verify_tampered(
    lines: &[String],
    dir: &std::path::Path,
    name: &str,
    f: impl FnOnce(&mut Vec<String>),
) -> tg_audit::VerifyReport {
    let mut copy = lines.to_vec();
    f(&mut copy);
    let path = dir.join(name);
    std::fs::write(
        &path,
        copy.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    tg_audit::verify_file(&path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_file_has_one_record_per_run_and_detects_edit_delete_and_swap() {
    let mut h = Harness::start().await;
    h.script_tool(
        "scn-audit-t",
        answer("medium", 0.9, true, false, false, "payments"),
    );
    h.script_tool(
        "scn-audit-r",
        answer("medium", 0.4, true, false, false, "payments"),
    );
    let evs = [
        event("checkout", "A1", "prod", "datadog", "scn-audit-t"),
        event("checkout", "A2", "prod", "datadog", "scn-audit-r"),
        event("checkout", "A1", "prod", "datadog", "scn-audit-t"), // duplicate of the first
        event("payments-api", "A3", "staging", "datadog", "scn-audit-t"),
    ];
    let mut run_ids = Vec::new();
    for ev in &evs {
        let run = h.run_generic(ev).await;
        assert!(run["audit"]["seq"].as_u64().is_some(), "audited: {run}");
        run_ids.push(run["run_id"].as_str().unwrap().to_owned());
    }
    h.stop_gate().await;

    let path = h.audit_path();
    let report = tg_audit::verify_file(&path).unwrap();
    assert!(report.ok, "{report}");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(report.records, lines.len() as u64);
    let mut per_run: BTreeMap<String, usize> = BTreeMap::new();
    for v in h.run_records() {
        *per_run
            .entry(v["run_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = run_ids.iter().map(|r| (r.clone(), 1)).collect();
    assert_eq!(per_run, expected, "exactly one record per run");
    // A model-classified run's record carries latency, prompt hash and tokens;
    // the duplicate asked no model and carries none.
    let mut asked = 0;
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap();
        if v["model_output"].is_string() {
            asked += 1;
            assert!(
                v["prompt_sha256"].as_str().is_some_and(|h| h.len() == 64),
                "{v}"
            );
            assert!(v["model_usage"]["input_tokens"].as_u64().is_some(), "{v}");
            assert!(v["model_latency_ms"].as_u64().is_some(), "{v}");
        } else if v["decision"]["duplicate_of"].is_string() {
            assert!(v.get("model_latency_ms").is_none(), "{v}");
            assert!(v.get("prompt_sha256").is_none(), "{v}");
        }
    }
    assert!(asked >= 2, "the model was asked: {text}");

    let dir = tempfile::tempdir().unwrap();
    let edited = verify_tampered(&lines, dir.path(), "edited.jsonl", |l| {
        let mut v: Value = serde_json::from_str(&l[1]).unwrap();
        v["event"]["service"] = json!("someone-else");
        l[1] = serde_json::to_string(&v).unwrap();
    });
    let bad = edited.first_bad.expect("edit detected");
    assert!(!edited.ok);
    assert_eq!(bad.line, 2);
    assert!(bad.reason.starts_with("edited"), "{}", bad.reason);

    let deleted = verify_tampered(&lines, dir.path(), "deleted.jsonl", |l| {
        l.remove(1);
    });
    let bad = deleted.first_bad.expect("deletion detected");
    assert_eq!(bad.line, 2);
    assert!(bad.reason.starts_with("deleted"), "{}", bad.reason);

    let swapped = verify_tampered(&lines, dir.path(), "swapped.jsonl", |l| {
        l.swap(1, 2);
    });
    let bad = swapped.first_bad.expect("swap detected");
    assert_eq!(bad.line, 2);
    assert!(bad.reason.starts_with("reordered"), "{}", bad.reason);
}
