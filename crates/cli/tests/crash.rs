//! Durability acceptance tests against the real `triage-gate` binary.
//!
//! The crash test accepts an event with no workers, SIGKILLs the process, and
//! checks that a restart carries the run out exactly once: one ServiceNow
//! incident, one PagerDuty trigger, one audit record, and nothing again on a
//! further restart. The emulators run in-process (the sandbox crate) so the
//! test can read what they received.

// Test code: a failed unwrap is a failed test. The cli crate has no clippy.toml
// that relaxes these for helpers outside #[test] functions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Gate};
use serde_json::{Value, json};
use tg_sandbox::{Sandbox, SandboxConfig};

/// How long a run may take to complete after a restart.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// A 32-character PagerDuty integration key.
const PD_KEY: &str = "0123456789abcdef0123456789abcdef";

fn write_config(dir: &Path, sandbox: &str, workers: usize) -> PathBuf {
    let yaml = format!(
        r#"server:
  workers: {workers}
  shutdown_grace_ms: 1000
identity:
  inbound:
    mode: none
    insecure_allow_anonymous: true
classifier:
  provider: rules
catalog:
  teams:
    payments: {{ description: "Payments SRE" }}
  services:
    checkout: {{ team: payments, autonomy: paging, tier: 1 }}
actions:
  servicenow:
    base_url: {sandbox}/servicenow
    token: {{ env: TG_CRASH_SERVICENOW_TOKEN }}
    assignment_groups:
      payments: 1c832706732023002728660c4cf6a7b9
  pagerduty:
    base_url: {sandbox}/pagerduty
    routing_keys:
      payments: {{ env: TG_CRASH_PD_KEY_PAYMENTS }}
  retry:
    attempts_max: 3
    backoff_base_ms: 20
    backoff_max_ms: 200
"#
    );
    let path = dir.join(format!("config-workers-{workers}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn start_gate(config: &Path, data_dir: &Path) -> Gate {
    common::start_gate(
        config,
        data_dir,
        &[
            (
                "TG_CRASH_SERVICENOW_TOKEN",
                tg_sandbox::DEFAULT_SERVICENOW_TOKEN,
            ),
            ("TG_CRASH_PD_KEY_PAYMENTS", PD_KEY),
        ],
    )
    .await
}

async fn get_run(base: &str, run_id: &str) -> Value {
    let resp = reqwest::get(format!("{base}/v1/runs/{run_id}"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET /v1/runs/{run_id}");
    resp.json().await.unwrap()
}

async fn wait_completed(base: &str, run_id: &str) -> Value {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let run = get_run(base, run_id).await;
        if run["status"] == "completed" {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} not completed within {RUN_TIMEOUT:?}: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The audit record of `run_id` (the step records of its attempts left out).
fn audit_lines_for(data_dir: &Path, run_id: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(data_dir.join("audit.jsonl")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["run_id"] == run_id && r.get("kind").is_none())
        .collect()
}

fn page_worthy_event() -> Value {
    // Production, 150 affected customers: impact high -> the rules classifier
    // answers high 0.86 with a ticket and a page; `checkout` is at `paging`.
    json!({
        "service": "checkout",
        "alert_name": "CheckoutErrorRate",
        "summary": "checkout 5xx above 5% in eu-west-1",
        "source_system": "cloudwatch",
        "environment": "prod",
        "severity": "high",
        "status": "firing",
        "impact": {"affected_customers": 150, "error_rate": 0.12}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_run_survives_sigkill_and_is_carried_out_exactly_once() {
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let idle = write_config(tmp.path(), &sandbox.base_url(), 0);
    let working = write_config(tmp.path(), &sandbox.base_url(), 2);

    // 1. Accept with no workers, then SIGKILL.
    let gate = start_gate(&idle, &data).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/events/generic", gate.base))
        .json(&page_worthy_event())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let accepted: Value = resp.json().await.unwrap();
    let runs = accepted["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{accepted}");
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(get_run(&gate.base, &run_id).await["status"], "pending");
    gate.kill();
    assert!(sandbox.state().incidents().is_empty());
    assert!(sandbox.state().pagerduty_alerts().is_empty());

    // 2. The 202 was a promise: the run is in the store after the crash.
    {
        let store = tg_store::Store::open(&data.join("triage-gate.sqlite"))
            .await
            .unwrap();
        let stored = store
            .get_run(&tg_model::RunId(run_id.clone()))
            .await
            .unwrap()
            .expect("the accepted run is in the store after SIGKILL");
        assert_eq!(stored.status, tg_store::RunStatus::Pending);
        assert_eq!(stored.event.service, "checkout");
    }
    assert!(audit_lines_for(&data, &run_id).is_empty());

    // 3. Restart with workers: the run is decided, executed and audited.
    let gate = start_gate(&working, &data).await;
    let run = wait_completed(&gate.base, &run_id).await;
    let outcomes: Vec<(String, String)> = run["decision"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&("ticket".into(), "execute".into()))
            && outcomes.contains(&("page".into(), "execute".into())),
        "expected ticket and page executed: {outcomes:?}"
    );
    let st = sandbox.state();
    assert_eq!(st.incidents().len(), 1, "exactly one ServiceNow incident");
    let alerts = st.pagerduty_alerts();
    assert_eq!(alerts.len(), 1, "exactly one PagerDuty alert");
    assert_eq!(alerts[0].trigger_count, 1, "exactly one PagerDuty trigger");
    let mine = audit_lines_for(&data, &run_id);
    assert_eq!(mine.len(), 1, "exactly one audit record for the run");
    let report = tg_audit::verify_file(data.join("audit.jsonl")).unwrap();
    assert!(report.ok, "{report}");
    // The run's record, and step records (configuration, its delivery attempts).
    let lines = std::fs::read_to_string(data.join("audit.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(report.records, lines as u64);
    let seq = mine[0]["seq"].clone();
    gate.kill();

    // 4. A further restart neither processes nor audits it again.
    let gate = start_gate(&working, &data).await;
    // Give the workers time to pick up anything they (wrongly) thought was pending.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = get_run(&gate.base, &run_id).await;
    assert_eq!(again["status"], "completed");
    assert_eq!(again["audit"]["seq"], seq);
    assert_eq!(st.incidents().len(), 1);
    assert_eq!(st.pagerduty_alerts().len(), 1);
    assert_eq!(st.pagerduty_alerts()[0].trigger_count, 1);
    assert_eq!(
        st.requests(tg_sandbox::Target::Pagerduty).len(),
        1,
        "no second PagerDuty request"
    );
    assert_eq!(audit_lines_for(&data, &run_id).len(), 1);
    let report = tg_audit::verify_file(data.join("audit.jsonl")).unwrap();
    assert!(report.ok, "{report}");
    gate.kill();
    sandbox.shutdown().await;
}

fn run_bin(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A drill's explicit acknowledgement of anonymous API access.
const ANONYMOUS_ACK: &str =
    "identity:\n  inbound:\n    mode: none\n    insecure_allow_anonymous: true\n";

#[test]
fn serve_and_config_check_refuse_anonymous_access_unless_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    // No config at all, and a config without an identity section: refused
    // before anything listens, naming the two ways out.
    let out = run_bin(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        tmp.path().join("d").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("identity.inbound.mode: jwt")
            && stderr.contains("insecure_allow_anonymous: true"),
        "{stderr}"
    );
    let bare = tmp.path().join("bare.yaml");
    std::fs::write(&bare, "server:\n  workers: 1\n").unwrap();
    let out = run_bin(&["config", "check", bare.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("insecure_allow_anonymous"));
    // The acknowledgement with jwt is a mistake, named with file and line.
    let odd = tmp.path().join("odd.yaml");
    std::fs::write(
        &odd,
        "identity:\n  inbound:\n    mode: jwt\n    issuer: https://idp.example\n    jwks_url: https://idp.example/keys\n    insecure_allow_anonymous: true\n",
    )
    .unwrap();
    let out = run_bin(&["config", "check", odd.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("insecure_allow_anonymous"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_check_names_file_and_line_of_a_bad_value_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.yaml");
    std::fs::write(
        &good,
        format!("{ANONYMOUS_ACK}catalog:\n  teams:\n    payments: {{}}\n  services:\n    checkout: {{ team: payments, autonomy: paging }}\n"),
    )
    .unwrap();
    let out = run_bin(&["config", "check", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = tmp.path().join("bad.yaml");
    // Line 6: an autonomy level that does not exist.
    std::fs::write(
        &bad,
        "server:\n  workers: 1\ncatalog:\n  teams:\n    payments: {}\n  services:\n    checkout: { team: payments, autonomy: sometimes }\n",
    )
    .unwrap();
    let out = run_bin(&["config", "check", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad config must fail: {stderr}");
    let at = format!("{}:7", bad.display());
    assert!(stderr.contains(&at), "expected {at:?} in: {stderr}");
    assert!(
        stderr.contains("sometimes"),
        "names the bad value: {stderr}"
    );
}

#[test]
fn demo_exits_zero_and_its_audit_trail_detects_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("demo");
    let started = Instant::now();
    let out = run_bin(&["demo", "--data-dir", data.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stdout_demo = stdout.to_string();
    let stderr_demo = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Totals over"), "{stdout}");
    for line in [
        "tickets created",
        "pages sent",
        "MIM bridges opened",
        "duplicates suppressed",
        "waiting for a human",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains("Emulators match the decisions one for one"),
        "{stdout}"
    );
    // What the README promises the demo shows: tickets, pages, exactly one
    // MIM, suppressed duplicates and review items.
    let total = |label: &str| -> usize {
        stdout
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count for {label:?} in:\n{stdout}"))
    };
    assert!(total("tickets created") >= 1, "{stdout}");
    assert!(total("pages sent") >= 1, "{stdout}");
    assert_eq!(total("MIM bridges opened"), 1, "{stdout}");
    assert!(total("duplicates suppressed") >= 1, "{stdout}");
    assert!(total("waiting for a human") >= 1, "{stdout}");
    eprintln!("demo took {:?}", started.elapsed());

    // The demo's audit file verifies ...
    let audit = data.join("audit.jsonl");
    let out = run_bin(&["audit", "verify", audit.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: "));

    // Issue 21 item 14(b): the demo runs with inbound identity on: every run
    // names the detecting system's own client as its verified caller, and
    // the one major incident was confirmed by two distinct senders.
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        stdout_demo.contains("identity: each source submits with its own JWT access token"),
        "{stdout_demo}"
    );
    for client in [
        "demo-cloudwatch",
        "demo-prometheus",
        "demo-apm",
        "demo-splunk",
    ] {
        assert!(
            text.contains(&format!("\"submitted_by\":\"{client}\"")),
            "no run submitted by {client}"
        );
    }
    assert!(
        !stderr_demo.contains("not authenticated"),
        "no anonymous-access warning: {stderr_demo}"
    );

    // ... and an edit to its second record is found and named.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(lines.len() >= 3, "the demo audits several runs");
    let mut record: Value = serde_json::from_str(&lines[1]).unwrap();
    record["run_id"] = json!("run_tampered");
    lines[1] = serde_json::to_string(&record).unwrap();
    let tampered = tmp.path().join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let out = run_bin(&["audit", "verify", tampered.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "tampering must fail: {stdout}");
    assert!(stdout.contains("line 2"), "names the line: {stdout}");

    store_audit_tools(&data, tmp.path());
}

fn stdout_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `audit verify --data-dir` over the store with the demo's public key,
/// `audit show`, another key, and edits made to the store itself.
fn store_audit_tools(data: &Path, tmp: &Path) {
    let public = data.join("audit-checkpoint.pub.pem");
    let d = data.to_str().unwrap();
    let out = run_bin(&[
        "audit",
        "verify",
        "--data-dir",
        d,
        "--public-key",
        public.to_str().unwrap(),
    ]);
    let text = stdout_of(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("signatures verified"), "{text}");

    let out = run_bin(&["audit", "show", "--data-dir", d, "--service", "orders-db"]);
    let text = stdout_of(&out);
    assert!(out.status.success(), "{text}");
    for what in [
        "event",
        "classification",
        "decision",
        "attempt",
        "completed",
        "FAIL mim.signals",
    ] {
        assert!(text.contains(what), "no {what:?} in the story:\n{text}");
    }
    let out = run_bin(&[
        "audit",
        "show",
        "--data-dir",
        d,
        "--service",
        "no-such-service",
    ]);
    assert!(!out.status.success(), "nothing matched is a failure");

    // A key pair the gate never used: its checkpoints do not verify.
    let other = tmp.join("other.pem");
    let out = run_bin(&["audit", "keygen", other.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout_of(&out));
    let out = run_bin(&["audit", "keygen", other.to_str().unwrap()]);
    assert!(!out.status.success(), "keygen never overwrites a key");
    let other_pub = tmp.join("other.pem.pub");
    let out = run_bin(&[
        "audit",
        "verify",
        "--data-dir",
        d,
        "--public-key",
        other_pub.to_str().unwrap(),
    ]);
    let text = stdout_of(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("another key"), "{text}");

    // Edits to the store: each is found, and the position named.
    let cases: [(&str, &str, &str); 4] = [
        (
            "edit",
            "UPDATE audit SET record_json = json_set(record_json, '$.schema_version', 2) WHERE seq = 3",
            "seq 3) : edited",
        ),
        (
            "delete",
            "DELETE FROM audit WHERE seq = 3",
            "seq 4): deleted",
        ),
        (
            "reorder",
            "UPDATE audit SET seq = -4 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = 3; \
             UPDATE audit SET seq = 3 WHERE seq = -4",
            "reordered",
        ),
        (
            "insert",
            "INSERT INTO audit (seq, run_id, hash, record_json, kind) SELECT 1000, 'x', hash, record_json, kind FROM audit WHERE seq = 3",
            "seq 3",
        ),
    ];
    for (name, sql, expect) in cases {
        let copy = tmp.join(format!("store-{name}"));
        std::fs::create_dir_all(&copy).unwrap();
        for f in [
            "triage-gate.sqlite",
            "triage-gate.sqlite-wal",
            "triage-gate.sqlite-shm",
        ] {
            if data.join(f).exists() {
                std::fs::copy(data.join(f), copy.join(f)).unwrap();
            }
        }
        tamper(&copy.join("triage-gate.sqlite"), sql);
        let out = run_bin(&["audit", "verify", "--data-dir", copy.to_str().unwrap()]);
        let text = stdout_of(&out);
        assert!(!out.status.success(), "{name} must fail: {text}");
        assert!(text.contains("broken at line"), "{name}: {text}");
        let expect = expect.replace(") : ", "): ");
        assert!(
            text.contains(&expect),
            "{name}: expected {expect:?} in {text}"
        );
    }
}

fn tamper(db: &Path, sql: &str) {
    use sqlx::ConnectOptions as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    });
}

/// `triage-gate autonomy set --all --level shadow` against a running gate: the
/// next page-worthy event pages nobody; `clear` restores paging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_from_the_command_line() {
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &sandbox.base_url(), 2);
    let gate = start_gate(&config, &tmp.path().join("data")).await;
    let base = gate.base.clone();
    let cli = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_bin(&args)
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let out = cli(args(&[
        "autonomy", "set", "--all", "--level", "shadow", "--reason", "drill", "--server", &base,
    ]))
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stdout_of(&out));
    assert!(
        stdout_of(&out).contains("no cap -> shadow"),
        "{}",
        stdout_of(&out)
    );
    let out = cli(args(&["autonomy", "show", "--server", &base]))
        .await
        .unwrap();
    let text = stdout_of(&out);
    assert!(
        out.status.success() && text.contains("cap all") && text.contains("shadow"),
        "{text}"
    );

    let post = |body: Value| {
        let base = base.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(format!("{base}/v1/events/generic"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 202);
            let v: Value = resp.json().await.unwrap();
            v["runs"][0]["run_id"].as_str().unwrap().to_owned()
        }
    };
    let run = wait_completed(&base, &post(page_worthy_event()).await).await;
    assert_eq!(run["decision"]["autonomy"], "shadow", "{run}");
    assert!(sandbox.state().pagerduty_alerts().is_empty());

    let out = cli(args(&["autonomy", "clear", "--all", "--server", &base]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stdout_of(&out));
    // Neither flag nor scope: clap refuses before any call.
    let out = cli(args(&[
        "autonomy", "set", "--level", "shadow", "--server", &base,
    ]))
    .await
    .unwrap();
    assert!(!out.status.success());
    let out = cli(args(&[
        "report", "autonomy", "--since", "1d", "--server", &base,
    ]))
    .await
    .unwrap();
    let text = stdout_of(&out);
    assert!(
        out.status.success() && text.contains("agreement") && text.contains("checkout"),
        "{text}"
    );
    let mut again = page_worthy_event();
    again["alert_name"] = json!("CheckoutErrorRateAgain");
    let run = wait_completed(&base, &post(again).await).await;
    assert_ne!(run["decision"]["autonomy"], "shadow", "{run}");
    gate.kill();
}
