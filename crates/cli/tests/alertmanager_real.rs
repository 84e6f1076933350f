//! A real Prometheus Alertmanager delivers to a real `triage-gate`.
//!
//! The test starts the `triage-gate` binary, then Alertmanager (Debian package
//! `prometheus-alertmanager`) with a generated config whose webhook receiver
//! points at the gate, posts alerts to Alertmanager's `POST /api/v2/alerts`,
//! resolves one of them, and checks what the gate recorded: one audited run per
//! alert, the resolution carrying the same fingerprint as the firing run, and
//! Alertmanager's own fingerprint and group key kept as correlation IDs.
//!
//! The Alertmanager binary is `$ALERTMANAGER_BIN`, else `alertmanager` or
//! `prometheus-alertmanager` on `PATH`. Without one the test prints why and
//! passes, unless `CI` is set: in CI a missing binary is a failure (`.ci/run`
//! installs the package).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_triage-gate");
/// How long the gate or Alertmanager may take to answer its health check.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long Alertmanager may take to deliver and the gate to audit a run
/// (group_wait and group_interval are 1 s).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// Names the Alertmanager binary goes by.
const ALERTMANAGER_NAMES: &[&str] = &["alertmanager", "prometheus-alertmanager"];

/// A child process killed when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_alertmanager() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ALERTMANAGER_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ALERTMANAGER_NAMES.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

async fn wait_healthy(proc: &mut Proc, url: &str, what: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = proc.0.try_wait().unwrap() {
            panic!("{what} exited during startup: {status}");
        }
        let ok = http
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not answer {url} within {START_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The runs' audit records (step records, which have a `kind`, left out).
fn audit_records(data_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(data_dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r.get("kind").is_none())
        .collect()
}

/// Waits until the audit trail has a record of `alert_name` with `status`.
async fn wait_audited(data_dir: &Path, alert_name: &str, status: &str) -> Value {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        if let Some(r) = audit_records(data_dir)
            .into_iter()
            .find(|r| r["event"]["alert_name"] == alert_name && r["event"]["status"] == status)
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no {status} run of {alert_name} audited within {DELIVERY_TIMEOUT:?}; audit: {:#?}",
            audit_records(data_dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn alert(name: &str, service: &str, description: &str, ends_at: Option<String>) -> Value {
    let mut a = json!({
        "labels": {"alertname": name, "service": service, "env": "prod", "severity": "critical",
                   "instance": "10.0.0.7:9100"},
        "annotations": {"summary": format!("{name} on {service}"), "description": description,
                        "runbook_url": "https://runbooks.example.com/alerts"},
        "generatorURL": "http://prometheus.example.com/graph?g0.expr=up"
    });
    if let Some(t) = ends_at {
        a["endsAt"] = json!(t);
    }
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_alertmanager_delivers_firing_and_resolved_alerts_as_runs() {
    let Some(am_bin) = find_alertmanager() else {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        assert!(
            !ci,
            "CI is set but no Alertmanager binary was found (looked for $ALERTMANAGER_BIN, \
             then {ALERTMANAGER_NAMES:?} on PATH); .ci/run installs the Debian package \
             prometheus-alertmanager"
        );
        // Straight to stderr, past the test harness's capture, so a skip is seen.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED real_alertmanager_delivers_firing_and_resolved_alerts_as_runs: no \
             Alertmanager binary ($ALERTMANAGER_BIN, or {ALERTMANAGER_NAMES:?} on PATH); \
             install it with `apt-get install prometheus-alertmanager`"
        );
        return;
    };
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    // 1. The gate: rules classifier, every service in shadow mode (nothing to
    //    deliver), so each accepted alert becomes a completed, audited run.
    let gate_port = free_port();
    let gate_config = tmp.path().join("gate.yaml");
    std::fs::write(
        &gate_config,
        "server:\n  workers: 2\n  shutdown_grace_ms: 1000\nclassifier:\n  provider: rules\n\
         identity:\n  inbound:\n    mode: none\n    insecure_allow_anonymous: true\n\
         catalog:\n  teams:\n    payments: {}\n  services:\n    checkout: { team: payments, autonomy: shadow }\n",
    )
    .unwrap();
    let mut gate = Proc(
        Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&gate_config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{gate_port}"))
            .arg("--data-dir")
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let gate_base = format!("http://127.0.0.1:{gate_port}");
    wait_healthy(&mut gate, &format!("{gate_base}/healthz"), "triage-gate").await;

    // 2. Alertmanager, one group per alert name, flushed every second,
    //    clustering off (no gossip port), its state in the temp dir.
    let am_port = free_port();
    let am_config = tmp.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: triage-gate\n  group_by: [alertname]\n  group_wait: 1s\n\
             \x20 group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: triage-gate\n    webhook_configs:\n\
             \x20     - url: {gate_base}/v1/events/alertmanager\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let mut am = Proc(
        Command::new(&am_bin)
            .arg(format!("--config.file={}", am_config.display()))
            .arg(format!(
                "--storage.path={}",
                tmp.path().join("am").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let am_base = format!("http://127.0.0.1:{am_port}");
    wait_healthy(&mut am, &format!("{am_base}/-/ready"), "alertmanager").await;
    eprintln!("{} started in {:?}", am_bin.display(), started.elapsed());

    // 3. Two firing alerts, in two groups.
    let http = reqwest::Client::new();
    let post = |alerts: Value| {
        let http = http.clone();
        let url = format!("{am_base}/api/v2/alerts");
        async move {
            let resp = http.post(url).json(&alerts).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        }
    };
    let checkout_desc = "upstream timeout after 3012 ms on 10.0.0.7";
    post(json!([
        alert("CheckoutErrorRate", "checkout", checkout_desc, None),
        alert(
            "OrdersDbDown",
            "orders-db",
            "connection refused on 10.0.0.9:5432",
            None
        ),
    ]))
    .await;
    let checkout = wait_audited(&data, "CheckoutErrorRate", "firing").await;
    let orders = wait_audited(&data, "OrdersDbDown", "firing").await;
    for (r, service) in [(&checkout, "checkout"), (&orders, "orders-db")] {
        assert_eq!(r["event"]["source"], "alertmanager", "{r}");
        assert_eq!(r["event"]["origin"], "prometheus", "{r}");
        assert_eq!(r["event"]["environment"], "production", "{r}");
        assert_eq!(r["event"]["service"], service, "{r}");
    }

    // The run holds the normalized event with Alertmanager's own IDs and links.
    let run_id = checkout["run_id"].as_str().unwrap();
    let run: Value = http
        .get(format!("{gate_base}/v1/runs/{run_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event = &run["event"];
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(event["impact"]["level"], "critical", "{event}");
    let ids = event["correlation_ids"].as_object().unwrap();
    assert!(
        ids["alertmanager_fingerprint"]
            .as_str()
            .is_some_and(|f| f.len() == 16),
        "{ids:?}"
    );
    assert!(
        ids["group_key"]
            .as_str()
            .is_some_and(|k| k.contains("CheckoutErrorRate")),
        "{ids:?}"
    );
    let pointers: BTreeMap<&str, &str> = event["log_pointers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["label"].as_str().unwrap(), p["url"].as_str().unwrap()))
        .collect();
    assert_eq!(
        pointers.get("generator"),
        Some(&"http://prometheus.example.com/graph?g0.expr=up")
    );
    assert_eq!(
        pointers.get("runbook"),
        Some(&"https://runbooks.example.com/alerts")
    );

    // 4. Resolve one: Alertmanager sends it as resolved; the gate records the
    //    resolution under the firing run's fingerprint.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    post(json!([alert(
        "CheckoutErrorRate",
        "checkout",
        checkout_desc,
        Some(now)
    )]))
    .await;
    let resolved = wait_audited(&data, "CheckoutErrorRate", "resolved").await;
    assert_eq!(
        resolved["event"]["fingerprint"], checkout["event"]["fingerprint"],
        "a resolution shares its firing run's fingerprint"
    );
    assert_ne!(resolved["run_id"], checkout["run_id"]);

    // Exactly the runs Alertmanager delivered, no more: two firing, one resolved.
    // (A group is re-sent only when it changes; repeat_interval is an hour.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all: Vec<(String, String)> = audit_records(&data)
        .iter()
        .map(|r| {
            (
                r["event"]["alert_name"].as_str().unwrap().to_owned(),
                r["event"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("CheckoutErrorRate".to_owned(), "firing".to_owned()),
            ("CheckoutErrorRate".to_owned(), "resolved".to_owned()),
            ("OrdersDbDown".to_owned(), "firing".to_owned()),
        ],
        "audited runs: {all:?}"
    );
    let report = tg_audit::verify_file(data.join("audit.jsonl")).unwrap();
    // Three run records, plus step records (configuration, delivery attempts).
    let lines = std::fs::read_to_string(data.join("audit.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(report.ok && report.records == lines as u64, "{report}");
    eprintln!("alertmanager round trip took {:?}", started.elapsed());
}
