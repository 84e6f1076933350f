//! Logs fit where they go (issue 19): no colour codes when stderr is not a
//! terminal; `--log-format json` (or TRIAGE_GATE_LOG_FORMAT=json) writes one
//! JSON object per line, with the run's `run_id` and `correlation_id`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{BIN, DRILL_IDENTITY};
use crate::common::free_port;

/// Runs `serve` with stderr into a file, posts one event, waits for its run,
/// stops the gate and returns what it logged.
async fn serve_logs(env: &[(&str, &str)], args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gate.yaml");
    std::fs::write(&config, DRILL_IDENTITY).unwrap();
    let log = dir.path().join("stderr.log");
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["serve", "--config", config.to_str().unwrap()])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info,triage_gate_server=debug")
        .env_remove("TRIAGE_GATE_LOG_FORMAT")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let runs: serde_json::Value = loop {
        let sent = http
            .post(format!("{base}/v1/events/generic"))
            .json(
                &serde_json::json!({"service": "checkout", "environment": "prod",
                "alert_name": "HighErrorRate", "summary": "checkout 5xx above 5%",
                "severity": "critical", "source_system": "prometheus"}),
            )
            .send()
            .await;
        if let Ok(r) = sent {
            break r.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "the gate did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let run_id = runs["runs"][0]["run_id"].as_str().unwrap().to_owned();
    loop {
        let run: serde_json::Value = http
            .get(format!("{base}/v1/runs/{run_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not complete");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(&log).unwrap() + "\nRUN " + &run_id
}

#[tokio::test]
async fn text_logs_into_a_file_carry_no_colour_codes() {
    let logs = serve_logs(&[], &[]).await;
    assert!(logs.lines().count() >= 3, "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escape in a log file:\n{logs}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_run() {
    for (env, args) in [
        (vec![], vec!["--log-format", "json"]),
        (vec![("TRIAGE_GATE_LOG_FORMAT", "json")], vec![]),
    ] {
        let logs = serve_logs(&env, &args).await;
        let (logs, run_id) = logs.rsplit_once("\nRUN ").unwrap();
        let mut with_run = 0;
        for line in logs.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(
                v["level"].is_string() && v["timestamp"].is_string(),
                "{line}"
            );
            if v["span"]["run_id"] == run_id {
                assert!(v["span"]["correlation_id"].is_string(), "{line}");
                with_run += 1;
            }
        }
        assert!(with_run >= 1, "no line names run {run_id}:\n{logs}");
        assert!(logs.contains("triage-gate listening on"), "{logs}");
    }
}
