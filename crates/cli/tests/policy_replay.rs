//! `triage-gate policy diff --events gate.yaml --with CHANGE.yaml` (issue 22
//! item 6): a real store, filled through the gate's own decide transaction,
//! replayed by the binary under the configuration and under a change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;

use chrono::{Duration, TimeZone, Utc};
use tg_model::{
    AlertStatus, Classification, CorrelationId, Environment, Fingerprint, Impact, ImpactLevel,
    NormalizedEvent, RunId, Severity, Source,
};

const BIN: &str = env!("CARGO_BIN_EXE_triage-gate");

fn event(service: &str, at: chrono::DateTime<Utc>) -> NormalizedEvent {
    NormalizedEvent {
        source: Source::Generic,
        origin: "apm".into(),
        status: AlertStatus::Firing,
        environment: Environment::Production,
        service: service.into(),
        component: None,
        alert_name: "ErrorRate".into(),
        summary: format!("{service} errors"),
        error_signature: "errors".into(),
        fingerprint: Fingerprint(format!("fp-{service}")),
        correlation_ids: BTreeMap::new(),
        impact: Impact {
            level: ImpactLevel::High,
            evidence: vec!["affected_customers=150".into()],
        },
        log_pointers: Vec::new(),
        labels: BTreeMap::new(),
        occurred_at: at,
        received_at: at,
        sender: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stricter_page_threshold_moves_the_pages_the_gate_really_sent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let gate_yaml = format!(
        "identity:\n  inbound: {{ mode: none, insecure_allow_anonymous: true }}\n\
         server:\n  data_dir: {}\n\
         classifier:\n  provider: rules\n\
         catalog:\n  defaults:\n    thresholds: {{ ticket: 0.70, page: 0.80, mim: 0.85 }}\n\
         \x20 teams:\n    payments: {{ description: Payments }}\n\
         \x20 services:\n    checkout: {{ team: payments, autonomy: paging }}\n\
         \x20   payments-api: {{ team: payments, autonomy: paging }}\n",
        data.display()
    );
    let config_path = dir.path().join("gate.yaml");
    std::fs::write(&config_path, &gate_yaml).unwrap();
    let change = dir.path().join("stricter.yaml");
    std::fs::write(
        &change,
        "catalog: { defaults: { thresholds: { page: 0.95 } } }\n",
    )
    .unwrap();

    // What the gate decided: two page-worthy answers at 0.9, through the
    // store's wave (the server's own path), under gate.yaml's policy.
    let config = tg_config::Config::from_yaml(&gate_yaml, "gate.yaml").unwrap();
    let pipeline =
        tg_server::build::check_pipeline(&config, None, &tg_config::MapSecrets::default()).unwrap();
    let store = tg_store::Store::open(&data.join("triage-gate.sqlite"))
        .await
        .unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 12, 7, 3, 0, 0).unwrap();
    let answer = Classification {
        classification: Severity::High,
        confidence: 0.9,
        requires_ticket: true,
        requires_paging: true,
        requires_mim: false,
        recommended_team: "payments".into(),
        rationale: None,
    };
    let record = serde_json::json!({
        "info": {"classifier": "rules", "model": null},
        "classification": answer,
    });
    for (i, service) in ["checkout", "payments-api"].into_iter().enumerate() {
        let at = t0 + Duration::minutes(i64::try_from(i).unwrap());
        let run_id = RunId(format!("run_{i}"));
        let correlation_id = CorrelationId(format!("corr-{i}"));
        let ev = event(service, at);
        store
            .accept(
                &[tg_store::NewRun {
                    run_id: run_id.clone(),
                    correlation_id: correlation_id.clone(),
                    event: ev.clone(),
                    submitted_by: None,
                }],
                at,
            )
            .await
            .unwrap();
        let policy = pipeline.policy();
        let reads = tg_engine::reads(&ev, Some(&answer), &pipeline.storm, &policy.catalog);
        let mut wave = store.begin_wave(&[(&run_id, &reads)], at).await.unwrap();
        let outs = tg_engine::decide_wave(
            wave.state(),
            tg_engine::Policy {
                gates: &policy.gates,
                catalog: &policy.catalog,
                settings: &pipeline.storm,
            },
            &[tg_engine::WaveRun {
                reads: &reads,
                run_id: &run_id,
                correlation_id: &correlation_id,
                event: &ev,
                classification: Some(Ok(&answer)),
            }],
            at,
        );
        let page = outs[0].decision.get(tg_model::ActionKind::Page).unwrap();
        assert_eq!(page.outcome, tg_model::Outcome::Execute, "{page:?}");
        wave.apply_unsealed(&run_id, &record, &outs[0]).unwrap();
        wave.commit().await.unwrap();
    }
    drop(store);

    let out = Command::new(BIN)
        .args(["policy", "diff", "--events"])
        .arg(&config_path)
        .arg("--with")
        .arg(&change)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("2 recorded decisions replayed"), "{stdout}");
    assert!(stdout.contains("2 moved by"), "{stdout}");
    assert!(stdout.contains("as recorded: 2 of 2"), "{stdout}");
    for run in ["run_0", "run_1"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(run))
            .unwrap_or_else(|| panic!("{run} not listed: {stdout}"));
        assert!(line.contains("page: execute -> review"), "{line}");
        // The condition that moved it, with its value and new threshold.
        assert!(line.contains("now fails: 0.90, needs >= 0.95"), "{line}");
    }

    // Unchanged configuration: nothing moves.
    let same = dir.path().join("same.yaml");
    std::fs::write(
        &same,
        "catalog: { defaults: { thresholds: { page: 0.80 } } }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["policy", "diff", "--events"])
        .arg(&config_path)
        .arg("--with")
        .arg(&same)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("0 moved by"), "{stdout}");
}
