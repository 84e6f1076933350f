//! The audit trail end to end, over real HTTP to the real gate and the sandbox
//! emulators, real SQLite: every later step (each delivery attempt, an
//! operator's replay, the configuration loaded) is a record on the one chain;
//! signed Ed25519 checkpoints verify with the public key alone and fail with
//! another key; `GET /v1/audit` tells a run's whole story in time order.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Harness, answer, event, outcome};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use serde_json::Value;
use tg_config::{Config, SecretRef};
use tg_sandbox::{FaultSpec, Sandbox, SandboxConfig};

/// Metrics are process-wide: these tests run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// The harness configuration with checkpoints every 4 records.
async fn start() -> Harness {
    let yaml = format!(
        "{}\naudit:\n  checkpoint:\n    key: {{ env: AUDIT_CHECKPOINT_KEY }}\n    every_records: 4\n    every_secs: 3600\n",
        common::ungrouped(common::CONFIG)
    );
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let config = Config::from_yaml(&yaml.replace("${SANDBOX}", &sandbox.base_url()), "test")
        .unwrap_or_else(|e| panic!("{e}"));
    let pem = key().to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let secrets =
        common::test_secrets(&sandbox).with(&SecretRef::Env("AUDIT_CHECKPOINT_KEY".into()), &pem);
    Harness::launch(sandbox, &config, &secrets).await
}

fn lines(h: &Harness) -> Vec<Value> {
    std::fs::read_to_string(h.audit_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_is_on_the_chain_and_checkpoints_verify_with_the_public_key_alone() {
    let _serial = SERIAL.lock().await;
    let mut h = start().await;
    // payments-api is at `limited`: a medium ticket executes. ServiceNow fails
    // twice first, so the ticket takes three attempts.
    h.script_tool(
        "AUD-1",
        answer("medium", 0.9, true, false, false, "payments"),
    );
    h.state()
        .inject_fault(FaultSpec {
            target: "servicenow".into(),
            status: Some(503),
            count: 2,
            retry_after_secs: None,
            delay_ms: None,
        })
        .unwrap();
    let ids = h
        .submit(
            "generic",
            &event("payments-api", "ApiErrors", "prod", "prometheus", "AUD-1"),
            None,
        )
        .await;
    let run_id = ids[0].clone();
    let mut done = h.get_run(&run_id).await;
    for _ in 0..50 {
        if done["status"] == "completed" {
            break;
        }
        h.advance_to_next_attempt().await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        done = h.get_run(&run_id).await;
    }
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(outcome(&done, "ticket"), "execute");
    for i in 0..4 {
        let marker = format!("AUD-S{i}");
        h.script_tool(&marker, answer("low", 0.9, false, false, false, "search"));
        let r = h
            .run_generic(&event(
                "search",
                &format!("Slow{i}"),
                "prod",
                "prometheus",
                &marker,
            ))
            .await;
        assert_eq!(r["status"], "completed", "{r}");
    }

    // The story of the run, from the API.
    let story = h.get_json(&format!("/v1/audit?run_id={run_id}")).await;
    assert_eq!(story["hashes_ok"], true, "{story}");
    let whats: Vec<&str> = story["story"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    let first = |w: &str| {
        whats
            .iter()
            .position(|x| *x == w)
            .unwrap_or_else(|| panic!("no {w} in {whats:?}"))
    };
    assert!(first("event") < first("classification"), "{whats:?}");
    assert!(first("classification") < first("decision"), "{whats:?}");
    assert!(first("decision") < first("attempt"), "{whats:?}");
    assert_eq!(
        whats.iter().filter(|w| **w == "attempt").count(),
        3,
        "{whats:?}"
    );
    assert!(
        whats.last() == Some(&"completed") || whats.last() == Some(&"action"),
        "{whats:?}"
    );
    // Issue 21 item 15: each attempt names the outbound identity it used.
    for e in story["story"].as_array().unwrap() {
        if e["what"] == "attempt" {
            assert!(
                e["text"]
                    .as_str()
                    .unwrap()
                    .ends_with("[as servicenow: static token (actions.servicenow.token)]"),
                "{e}"
            );
        }
    }
    let ticket_line = story["story"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["what"] == "decision" && e["text"].as_str().unwrap().starts_with("ticket"))
        .unwrap();
    assert!(
        ticket_line["text"].as_str().unwrap().contains("execute"),
        "{ticket_line}"
    );
    let delivered = story["story"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["what"] == "attempt")
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert!(
        delivered[0].contains("failed") && delivered[0].contains("HTTP 503"),
        "{delivered:?}"
    );
    assert!(
        delivered[2].contains("delivered") && delivered[2].contains("servicenow_number=INC"),
        "{delivered:?}"
    );

    // Bad queries are problems, not empty stories.
    let (status, _, body) = get(&h, "/v1/audit").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "run_id", "{body}");
    let (status, _, body) = get(&h, "/v1/audit?service=x&limit=0").await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = get(
        &h,
        "/v1/audit?service=x&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(status, 400, "{body}");

    h.stop_gate().await;
    let records = lines(&h);
    // The first record is the configuration this process started with.
    assert_eq!(records[0]["kind"], "config_loaded", "{}", records[0]);
    assert!(records[0]["config"]["policy_version"].is_string());
    let attempts: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "action_attempt" && r["run_id"] == run_id.as_str())
        .collect();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[2]["attempt"]["outcome"], "delivered");
    // Each attempt is sealed before the run's own record, which comes last.
    let run_pos = records
        .iter()
        .position(|r| r.get("kind").is_none() && r["run_id"] == run_id.as_str())
        .unwrap();
    assert!(
        attempts
            .iter()
            .all(|a| a["seq"].as_u64().unwrap() < records[run_pos]["seq"].as_u64().unwrap())
    );

    // Checkpoints: at least one, and the last one covers the last record before it (shutdown).
    let checkpoints: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "checkpoint")
        .collect();
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    let last = records.last().unwrap();
    assert_eq!(
        last["kind"], "checkpoint",
        "the shutdown signs the end: {last}"
    );

    let vk = key().verifying_key();
    let report = tg_audit::verify_file_with(h.audit_path(), Some(&vk)).unwrap();
    assert!(report.ok, "{report}");
    assert_eq!(report.checkpoints, checkpoints.len() as u64);
    assert_eq!(report.checkpoints_verified, report.checkpoints);
    assert_eq!(report.signed_upto, Some(report.records - 1));

    // Another key: the first checkpoint is the bad record.
    let other = SigningKey::from_bytes(&[7; 32]).verifying_key();
    let report = tg_audit::verify_file_with(h.audit_path(), Some(&other)).unwrap();
    let bad = report.first_bad.expect("another key fails");
    assert_eq!(bad.seq, checkpoints[0]["seq"].as_u64());
    assert!(bad.reason.contains("another key"), "{}", bad.reason);

    // A forged checkpoint (re-signed by another key under this key's id, hash recomputed): fails.
    let text = std::fs::read_to_string(h.audit_path()).unwrap();
    let mut ls: Vec<String> = text.lines().map(str::to_owned).collect();
    let i = ls
        .iter()
        .position(|l| l.contains("\"kind\":\"checkpoint\""))
        .unwrap();
    let mut cp: Value = serde_json::from_str(&ls[i]).unwrap();
    let at: chrono::DateTime<chrono::Utc> = serde_json::from_value(cp["at"].clone()).unwrap();
    let upto_hash = tg_model::Sha256Hex(cp["checkpoint"]["upto_hash"].as_str().unwrap().to_owned());
    let forged = tg_audit::sign_checkpoint(
        &SigningKey::from_bytes(&[9; 32]),
        cp["checkpoint"]["upto_seq"].as_u64().unwrap(),
        &upto_hash,
        &at,
    );
    cp["checkpoint"]["signature"] = Value::String(forged.signature);
    ls[i] = serde_json::to_string(&cp).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forged.jsonl");
    std::fs::write(&path, ls.join("\n") + "\n").unwrap();
    let report = tg_audit::verify_file_with(&path, Some(&vk)).unwrap();
    let bad = report.first_bad.expect("forgery detected");
    assert_eq!(bad.line, i + 1);
    // The edit itself breaks the record's hash first; either way the position is named.
    assert!(
        bad.reason.starts_with("edited") || bad.reason.contains("signature"),
        "{}",
        bad.reason
    );

    // The public key in PEM round-trips (what an auditor is given).
    let pub_pem = vk.to_public_key_pem(LineEnding::LF).unwrap();
    assert_eq!(tg_audit::verifying_key_from_pem(&pub_pem).unwrap(), vk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_is_recorded_once_per_change() {
    let _serial = SERIAL.lock().await;
    let mut h = start().await;
    h.stop_gate().await;
    let records = lines(&h);
    let configs = records
        .iter()
        .filter(|r| r["kind"] == "config_loaded")
        .count();
    assert_eq!(configs, 1, "{records:?}");
    assert!(records[0]["config"].get("previous_config_sha256").is_none());
}

async fn get(h: &Harness, path: &str) -> (u16, String, Value) {
    let resp = h
        .http
        .get(format!("{}{path}", h.base))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, ct, body)
}

/// An OTLP collector that is down, then back: the records wait in the store
/// (lag visible at `/v1/audit/sinks` and in `/metrics`), then arrive once, in
/// order; a rotated file sink holds the same chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_ship_from_the_store_through_an_outage_in_order_exactly_once() {
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let files = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}\naudit:\n  sinks:\n    - name: otel\n      type: otlp\n      endpoint: {}\n    - name: archive\n      type: file\n      path: {}\n      rotate_bytes: 8192\n      keep: 100\n",
        common::ungrouped(common::CONFIG),
        sandbox.otlp_url(),
        files.path().join("audit.jsonl").display()
    );
    let config = Config::from_yaml(&yaml.replace("${SANDBOX}", &sandbox.base_url()), "test")
        .unwrap_or_else(|e| panic!("{e}"));
    let secrets = common::test_secrets(&sandbox);
    sandbox
        .state()
        .inject_outage(tg_sandbox::OutageSpec {
            target: "otlp".into(),
            down_for_ms: 3_600_000,
            status: Some(503),
            reset: false,
            retry_after_secs: None,
        })
        .unwrap();
    let mut h = Harness::launch(sandbox, &config, &secrets).await;
    for i in 0..6 {
        let marker = format!("SINK-{i}");
        h.script_tool(&marker, answer("low", 0.9, false, false, false, "search"));
        let r = h
            .run_generic(&event(
                "search",
                &format!("Slow{i}"),
                "prod",
                "prometheus",
                &marker,
            ))
            .await;
        assert_eq!(r["status"], "completed", "{r}");
    }
    // Down: the collector has nothing, the lag shows, the archive has everything.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let sinks = loop {
        let s = h.get_json("/v1/audit/sinks").await;
        let archive = s["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["sink"] == "archive")
            .unwrap()
            .clone();
        if archive["lag_records"] == 0 || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let head = sinks["head"].as_u64().unwrap();
    assert!(head >= 7, "{sinks}");
    let otel = sinks["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["sink"] == "otel")
        .unwrap();
    assert_eq!(otel["lag_records"].as_u64(), Some(head), "{sinks}");
    assert!(
        otel["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("503"),
        "{sinks}"
    );
    assert!(h.state().otlp_records().is_empty());
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
        metrics.contains("triage_gate_audit_sink_lag_records{sink=\"otel\"}"),
        "{metrics}"
    );

    // Back up: everything arrives, once, in chain order.
    h.state().clear_faults();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    loop {
        let s = h.get_json("/v1/audit/sinks").await;
        let otel = s["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["sink"] == "otel")
            .unwrap()
            .clone();
        if otel["lag_records"] == 0 {
            assert!(otel["last_error"].is_null(), "{s}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the collector never caught up: {s}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let seqs: Vec<u64> = h
        .state()
        .otlp_records()
        .iter()
        .map(|r| {
            let text = r.body["stringValue"].as_str().unwrap();
            serde_json::from_str::<Value>(text).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(seqs.len() as u64 >= head);
    h.stop_gate().await;

    // The archive (rotated files, oldest first) holds the same chain, and it verifies.
    let mut parts: Vec<std::path::PathBuf> = std::fs::read_dir(files.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(parts.len() > 1, "the archive rotated: {parts:?}");
    // Rotation renames the live file to the next number: `audit.jsonl.1` is the
    // oldest, `audit.jsonl` the newest.
    parts.sort_by_key(|p| {
        p.extension()
            .and_then(|e| e.to_str())
            .and_then(|e| e.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    let mut all = String::new();
    for p in &parts {
        all.push_str(&std::fs::read_to_string(p).unwrap());
    }
    let joined = files.path().join("joined.jsonl");
    std::fs::write(&joined, &all).unwrap();
    let report = tg_audit::verify_file(&joined).unwrap();
    let firsts: Vec<String> = parts
        .iter()
        .map(|p| {
            let t = std::fs::read_to_string(p).unwrap();
            let seqs: Vec<u64> = t
                .lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["seq"]
                        .as_u64()
                        .unwrap()
                })
                .collect();
            format!("{}: {seqs:?}", p.display())
        })
        .collect();
    assert!(report.ok, "{report}\n{firsts:#?}");
    assert!(report.records >= head, "{report}");
}

/// Issue 21 item 15: with `classifier.output_retention: sha256` the store and
/// the audit trail keep only the SHA-256 of the model's text (not the text,
/// not its rationale), and the story and the console say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sha256_retention_only_the_hash_of_the_model_text_is_kept() {
    let _serial = SERIAL.lock().await;
    let yaml = common::ungrouped(common::CONFIG).replace(
        "    retries_max: 0\n",
        "    retries_max: 0\n  output_retention: sha256\n",
    );
    assert!(yaml.contains("output_retention: sha256"));
    let mut h = Harness::start_with(&yaml).await;
    h.script_tool(
        "RET-1",
        answer("medium", 0.9, true, false, false, "payments"),
    );
    let run = h
        .run_generic(&event(
            "payments-api",
            "ApiErrors",
            "prod",
            "prometheus",
            "RET-1",
        ))
        .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let text = run.to_string();
    assert!(
        !text.contains("scripted by the end-to-end test"),
        "the rationale is model text: {text}"
    );
    let story = h.get_json(&format!("/v1/audit?run_id={run_id}")).await;
    let line = story["story"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["what"] == "classification")
        .unwrap()
        .clone();
    assert!(
        line["text"].as_str().unwrap().contains("(text not kept)"),
        "{line}"
    );
    // The console's run page says so too (identity off: the console is open).
    let page = h
        .http
        .get(format!("{}/ui/runs/{run_id}", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("The model&#39;s text was not kept")
            || html.contains("The model's text was not kept"),
        "{html}"
    );
    assert!(!html.contains("scripted by the end-to-end test"));
    h.stop_gate().await;
    let records = h.run_records();
    let record = records
        .iter()
        .find(|r| r["run_id"] == run_id.as_str())
        .unwrap();
    assert!(
        record.get("model_output").is_none_or(Value::is_null),
        "{record}"
    );
    assert_eq!(
        record["model_output_sha256"].as_str().map(str::len),
        Some(64),
        "{record}"
    );
    assert!(
        !record
            .to_string()
            .contains("scripted by the end-to-end test")
    );
}
