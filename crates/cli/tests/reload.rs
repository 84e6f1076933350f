//! Hot reload (issue 9): SIGHUP makes `triage-gate serve` re-read its
//! configuration and policy. A valid change applies to the next decision
//! (new `policy_version`, new autonomy level) with no restart and is on the
//! audit chain; an invalid one is refused and the policy in force stays.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn config(dir: &Path, autonomy: &str, policy: Option<&str>) {
    let policy = policy
        .map(|p| format!("policy:\n  file: {p}\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("gate.yaml"),
        format!(
            "identity:\n  inbound:\n    mode: none\n    insecure_allow_anonymous: true\n\
             classifier:\n  provider: rules\n{policy}\
             catalog:\n  teams:\n    payments: {{ description: Payments }}\n  services:\n    \
             checkout: {{ team: payments, autonomy: {autonomy}, tier: 1 }}\n"
        ),
    )
    .unwrap();
}

fn hup(gate: &common::Gate) {
    let ok = Command::new("kill")
        .args(["-HUP", &gate.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // The signal is handled asynchronously; the reload takes milliseconds.
    std::thread::sleep(Duration::from_millis(500));
}

/// Posts an alert and waits for its decision.
async fn decide(http: &reqwest::Client, base: &str, alert: &str) -> Value {
    let resp: Value = http
        .post(format!("{base}/v1/events/generic"))
        .json(
            &json!({"service": "checkout", "alert_name": alert, "summary": "checkout errors",
            "source_system": "prometheus", "environment": "prod", "severity": "high",
            "status": "firing"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = resp["runs"][0]["run_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let run: Value = http
            .get(format!("{base}/v1/runs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["decision"].is_object() {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} not decided: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_policy_and_keeps_the_old_one_on_error() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), "shadow", None);
    let data = dir.path().join("data");
    let gate = common::start_gate(&dir.path().join("gate.yaml"), &data, &[]).await;
    let http = reqwest::Client::new();

    let before = decide(&http, &gate.base, "ErrorsA").await;
    assert_eq!(before["decision"]["autonomy"], "shadow", "{before}");
    let v1 = before["decision"]["policy_version"]
        .as_str()
        .unwrap()
        .to_owned();

    // A valid change: checkout moves up to assist.
    config(dir.path(), "assist", None);
    hup(&gate);
    let after = decide(&http, &gate.base, "ErrorsB").await;
    assert_eq!(after["decision"]["autonomy"], "assist", "{after}");
    let v2 = after["decision"]["policy_version"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(v1, v2, "the new version is recorded on the run");

    // An invalid policy: refused, the policy in force stays.
    std::fs::write(
        dir.path().join("bad.cedar"),
        "permit(principal, action, resource) when { context.nope };",
    )
    .unwrap();
    config(dir.path(), "paging", Some("bad.cedar"));
    hup(&gate);
    let kept = decide(&http, &gate.base, "ErrorsC").await;
    assert_eq!(kept["decision"]["autonomy"], "assist", "{kept}");
    assert_eq!(kept["decision"]["policy_version"], v2.as_str());

    // Start and reload are on the chain; the refused one is not.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(data.join("audit.jsonl")).unwrap_or_default();
        let loaded: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["kind"] == "config_loaded")
            .collect();
        if loaded.len() == 2 {
            assert_eq!(loaded[1]["config"]["policy_version"], v2.as_str());
            assert_eq!(loaded[1]["config"]["previous_policy_version"], v1.as_str());
            break;
        }
        assert!(
            Instant::now() < deadline && loaded.len() < 2,
            "config_loaded records: {loaded:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gate.kill();
}
