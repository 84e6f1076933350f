//! High availability on PostgreSQL (issue 10), with the real `triage-gate`
//! binary as child processes:
//!
//! - three replicas share one database; one is SIGKILLed while it holds a
//!   delivery: its claims are taken over by the others once their lease
//!   expires, and every action is delivered once, nothing lost;
//! - the database itself is stopped mid-storm and started again: events sent
//!   while it is down get `503` + `Retry-After`, every `202` is processed and
//!   audited exactly once, and processing resumes.
//!
//! The first test needs the PostgreSQL at `TG_TEST_POSTGRES_URL`; the second
//! runs a private PostgreSQL cluster (Debian's `initdb`/`pg_ctl`, as the
//! `postgres` user when run as root) so it can stop it. Under `CI=true` a
//! missing server or binary fails the test instead of skipping it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tg_sandbox::{FaultSpec, Sandbox, SandboxConfig, ServiceNowRules};

/// Every ServiceNow and PagerDuty request is answered after this long, so a
/// kill lands inside a delivery.
const TARGET_DELAY_MS: u64 = 700;
/// The outbox lease of the test config: a dead replica's deliveries are taken
/// over after this.
const OUTBOX_LEASE_MS: u64 = 6_000;
/// How long every run may take to complete after the storm.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
const SERVICES: [(&str, &str); 4] = [
    ("checkout", "payments"),
    ("payments-api", "payments"),
    ("orders-db", "dba"),
    ("search", "search"),
];
const PD_KEYS: [(&str, &str); 3] = [
    ("TG_HA_PD_KEY_PAYMENTS", "0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    ("TG_HA_PD_KEY_DBA", "1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
    ("TG_HA_PD_KEY_SEARCH", "2ccccccccccccccccccccccccccccccc"),
];

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn write_config(dir: &Path, sandbox: &str, store_url: &str) -> PathBuf {
    let yaml = format!(
        r#"server:
  workers: 2
  shutdown_grace_ms: 1000
store:
  url: {store_url}
  run_lease_secs: 5
  acquire_timeout_ms: 1000
identity:
  inbound:
    mode: none
    insecure_allow_anonymous: true
classifier:
  provider: rules
catalog:
  teams:
    payments: {{ description: "Payments SRE" }}
    dba: {{ description: "Database reliability" }}
    search: {{ description: "Search" }}
  services:
    checkout: {{ team: payments, autonomy: paging, tier: 1 }}
    payments-api: {{ team: payments, autonomy: paging, tier: 1 }}
    orders-db: {{ team: dba, autonomy: paging, tier: 0 }}
    search: {{ team: search, autonomy: limited, tier: 2 }}
actions:
  servicenow:
    base_url: {sandbox}/servicenow
    token: {{ env: TG_HA_SERVICENOW_TOKEN }}
    timeout_ms: 1500
    assignment_groups:
      payments: 1c832706732023002728660c4cf6a7b9
      dba: 8a4dde73c6112278017a6a4baf547aa7
      search: 679434f053231300e321ddeeff7b12d8
  pagerduty:
    base_url: {sandbox}/pagerduty
    timeout_ms: 1500
    routing_keys:
      payments: {{ env: TG_HA_PD_KEY_PAYMENTS }}
      dba: {{ env: TG_HA_PD_KEY_DBA }}
      search: {{ env: TG_HA_PD_KEY_SEARCH }}
  outbox:
    lease_ms: {OUTBOX_LEASE_MS}
    idle_poll_ms: 200
  retry:
    attempts_max: 10
    backoff_base_ms: 50
    backoff_max_ms: 1000
"#
    );
    let path = dir.join("ha.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn start_gate(config: &Path, data: &Path) -> common::Gate {
    let mut env: Vec<(&str, &str)> = vec![(
        "TG_HA_SERVICENOW_TOKEN",
        tg_sandbox::DEFAULT_SERVICENOW_TOKEN,
    )];
    env.extend(PD_KEYS);
    common::start_gate(config, data, &env).await
}

/// A storm of generic alerts: 20 faults (service x alert), each reported
/// several times (duplicates), severity high so that tickets and pages act.
fn storm(events: usize) -> Vec<Value> {
    (0..events)
        .map(|n| {
            let (service, _) = SERVICES[n % SERVICES.len()];
            let alert = format!("Fault{}", (n / SERVICES.len()) % 5);
            let origin = ["prometheus", "cloudwatch", "apm"][n % 3];
            json!({
                "service": service,
                "alert_name": alert,
                "summary": format!("{service} {alert} above threshold"),
                "source_system": origin,
                "environment": "prod",
                "severity": "high",
                "status": "firing",
            })
        })
        .collect()
}

fn sandbox_with_slow_targets(sandbox: &Sandbox) {
    let st = sandbox.state_arc();
    // The gate must not lean on the emulator refusing a second incident.
    st.set_servicenow_rules(ServiceNowRules {
        unique_active_correlation_id: false,
        ..ServiceNowRules::default()
    });
    for target in ["servicenow", "pagerduty"] {
        st.inject_fault(FaultSpec {
            target: target.into(),
            status: None,
            count: tg_sandbox::faults::FAULT_COUNT_MAX,
            retry_after_secs: None,
            delay_ms: Some(TARGET_DELAY_MS),
        })
        .unwrap();
    }
}

/// Posts `body` until it is answered; returns the run ids of a `202`, or
/// `None` for a `503` (whose `Retry-After` is checked).
async fn post(http: &reqwest::Client, base: &str, body: &Value) -> Option<Vec<String>> {
    let resp = http
        .post(format!("{base}/v1/events/generic"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").cloned();
    let answer: Value = resp.json().await.unwrap();
    match status {
        202 => Some(
            answer["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["run_id"].as_str().unwrap().to_owned())
                .collect(),
        ),
        503 => {
            assert!(retry_after.is_some(), "a 503 says when to retry: {answer}");
            None
        }
        _ => panic!("event refused with {status}: {answer}"),
    }
}

/// Waits until every run in the store is completed and audited.
async fn drain(store: &tg_store::Store) -> i64 {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        if let Ok(counts) = store.count_by_status().await {
            let total: i64 = counts.iter().map(|(_, n)| n).sum();
            let open: i64 = counts
                .iter()
                .filter(|(s, _)| *s != tg_store::RunStatus::Completed)
                .map(|(_, n)| n)
                .sum();
            if open == 0 && total > 0 {
                return total;
            }
            assert!(
                Instant::now() < deadline,
                "not drained within {DRAIN_TIMEOUT:?}: {counts:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The chain verifies; every accepted run has exactly one run record; every
/// ServiceNow incident is one audited delivery and none is duplicated;
/// PagerDuty saw no more triggers per dedup key than audited attempts.
async fn check_exactly_once(store: &tg_store::Store, accepted: &[String], sandbox: &Sandbox) {
    let lines = store.audit_lines().await.unwrap();
    let report = tg_audit::verify_lines(&lines, None);
    assert!(report.ok, "{report}");
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r.get("kind").is_none())
        .collect();
    let mut by_run: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        *by_run
            .entry(r["run_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let unique: BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(unique.len(), accepted.len(), "a run id answered twice");
    for id in accepted {
        assert_eq!(
            by_run.get(id),
            Some(&1),
            "accepted run {id}: one audit record"
        );
    }
    assert!(by_run.values().all(|n| *n == 1), "a run audited twice");
    let mut numbers = BTreeSet::new();
    let mut attempts: BTreeMap<String, u64> = BTreeMap::new();
    for r in &records {
        for a in r["actions"].as_array().unwrap() {
            if a["status"] == "not_executed" {
                continue;
            }
            assert_eq!(a["status"], "delivered", "nothing fails here: {r}");
            if let Some(n) = a["external_ids"]["servicenow_number"].as_str() {
                numbers.insert(n.to_owned());
            }
            if let Some(k) = a["external_ids"]["pagerduty_dedup_key"].as_str() {
                *attempts.entry(k.to_owned()).or_default() += a["attempts"].as_u64().unwrap();
            }
        }
    }
    let incidents = sandbox.state().incidents();
    assert!(!incidents.is_empty(), "the storm opened incidents");
    let mut correlations = BTreeSet::new();
    for i in &incidents {
        let c = i.field("correlation_id").unwrap_or_default().to_owned();
        assert!(correlations.insert(c.clone()), "two incidents for {c}");
        assert!(
            numbers.contains(&i.number),
            "incident {} is not audited",
            i.number
        );
    }
    assert_eq!(
        numbers.len(),
        incidents.len(),
        "an audited incident is missing"
    );
    for a in sandbox.state().pagerduty_alerts() {
        let allowed = attempts.get(&a.dedup_key).copied().unwrap_or(0);
        assert!(
            u64::from(a.trigger_count) <= allowed,
            "{} triggered {} times, {allowed} attempts audited",
            a.dedup_key,
            a.trigger_count
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_delivery_hands_its_claims_over_and_nothing_is_duplicated() {
    if !tg_store::testing::postgres_available().await {
        eprintln!("SKIPPED: no PostgreSQL at TG_TEST_POSTGRES_URL");
        return;
    }
    let url = tg_store::testing::fresh_postgres_database().await.unwrap();
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    sandbox_with_slow_targets(&sandbox);
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &sandbox.base_url(), &url);
    let mut gates = Vec::new();
    for r in 0..3 {
        gates.push(Some(
            start_gate(&config, &tmp.path().join(format!("r{r}"))).await,
        ));
    }
    let store = tg_store::Store::connect(&tg_store::testing::test_options(&url))
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let events = storm(48);
    let victim_pid = gates[1].as_ref().unwrap().child.id();
    let mut accepted = Vec::new();
    let mut killed_holding = 0i64;
    for (n, body) in events.iter().enumerate() {
        // Round-robin over the live replicas, like a load balancer.
        let live: Vec<&common::Gate> = gates.iter().flatten().collect();
        let base = live[n % live.len()].base.clone();
        accepted.extend(post(&http, &base, body).await.unwrap());
        if n == 20 {
            // Kill replica 1 while it holds a delivery.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                killed_holding = store
                    .claims_held_by(&format!("%-{victim_pid}-%"))
                    .await
                    .unwrap();
                if killed_holding > 0 || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            gates[1].take().unwrap().kill();
        }
    }
    assert!(
        killed_holding > 0,
        "the victim never held a delivery to kill it in"
    );
    let total = drain(&store).await;
    assert_eq!(usize::try_from(total).unwrap(), accepted.len());
    check_exactly_once(&store, &accepted, &sandbox).await;
    // The dead replica's attempts ended as interrupted and were taken over.
    let interrupted = store
        .audit_lines()
        .await
        .unwrap()
        .iter()
        .filter(|l| l.contains("\"outcome\":\"interrupted\""))
        .count();
    assert!(interrupted >= 1, "no delivery was taken over");
    eprintln!(
        "killed replica held {killed_holding} claim(s); {interrupted} attempt(s) interrupted and \
         taken over; {} runs accepted, all audited once",
        accepted.len()
    );
    for g in gates.into_iter().flatten() {
        g.kill();
    }
}

/// A PostgreSQL cluster of this test's own, so that it can be stopped.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    /// More `-c name=value` server options (TLS).
    extra: String,
}

impl Cluster {
    fn tool(name: &str) -> Option<PathBuf> {
        let candidates = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| d.path().join("bin").join(name))
            .chain([PathBuf::from("/usr/local/bin").join(name)]);
        candidates.into_iter().find(|p| p.exists())
    }

    fn run(&self, args: &[&str]) -> std::process::ExitStatus {
        let pg_ctl = Cluster::tool("pg_ctl").unwrap();
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            Command::new(&pg_ctl)
        };
        cmd.args(args).status().unwrap()
    }

    fn init() -> Option<Cluster> {
        Cluster::init_with(|_| String::new())
    }

    /// `prepare` gets the cluster's directory before it starts (owned by
    /// the server's user afterwards) and returns more server options.
    fn init_with(prepare: impl FnOnce(&Path) -> String) -> Option<Cluster> {
        let initdb = Cluster::tool("initdb")?;
        let as_postgres = nix_is_root();
        let dir = tempfile::Builder::new().prefix("tg-pg-").tempdir().unwrap();
        let extra = prepare(dir.path());
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown to postgres");
        }
        let data = dir.path().join("data");
        let mut cmd = if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&initdb);
            c
        } else {
            Command::new(&initdb)
        };
        let ok = cmd
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "initdb");
        let cluster = Cluster {
            dir,
            port: common::free_port(),
            as_postgres,
            extra,
        };
        cluster.start();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 {}",
            self.port,
            self.dir.path().display(),
            self.extra
        );
        let log = self.dir.path().join("log").display().to_string();
        let status = self.run(&["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"]);
        assert!(status.success(), "pg_ctl start");
    }

    /// Like a crash of the database: no checkpoint, connections cut.
    fn stop(&self) {
        let status = self.run(&["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
        assert!(status.success(), "pg_ctl stop");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run(&["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_storm_refuses_with_503_and_loses_nothing() {
    let Some(cluster) = Cluster::init() else {
        assert!(!ci(), "CI needs Debian's initdb and pg_ctl for this test");
        eprintln!("SKIPPED: no initdb/pg_ctl");
        return;
    };
    let url = cluster.url();
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &sandbox.base_url(), &url);
    let gate = start_gate(&config, &tmp.path().join("data")).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let events = storm(60);
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    let mut down_at = None;
    for (n, body) in events.iter().enumerate() {
        if n == 20 {
            cluster.stop();
            down_at = Some(Instant::now());
        }
        if n == 40 {
            cluster.start();
            down_at = None;
        }
        loop {
            match post(&http, &gate.base, body).await {
                Some(ids) => {
                    assert!(down_at.is_none(), "a 202 while the database is down");
                    accepted.extend(ids);
                    break;
                }
                // Refused while down: sent again once it is back, below.
                None if down_at.is_some() => {
                    refused.push(body.clone());
                    break;
                }
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    assert_eq!(
        refused.len(),
        20,
        "every event sent while the database was down got 503"
    );
    for body in &refused {
        loop {
            if let Some(ids) = post(&http, &gate.base, body).await {
                accepted.extend(ids);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let store = tg_store::Store::connect(&tg_store::testing::test_options(&url))
        .await
        .unwrap();
    let total = drain(&store).await;
    assert_eq!(usize::try_from(total).unwrap(), accepted.len());
    check_exactly_once(&store, &accepted, &sandbox).await;
    eprintln!(
        "{} events refused with 503 while PostgreSQL was down, {} runs accepted, all audited once",
        refused.len(),
        accepted.len()
    );
    gate.kill();
}

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "openssl {args:?}");
}

/// A CA, a server certificate for `localhost` only signed by it, and a
/// second CA that signed nothing: written into `dir`.
fn make_certificates(dir: &Path) {
    let days = ["-days", "2"];
    for ca in ["ca", "other-ca"] {
        let (key, pem, subj) = (
            format!("{ca}.key"),
            format!("{ca}.pem"),
            format!("/CN=tg-test-{ca}"),
        );
        let mut args = vec![
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem,
            "-subj", &subj,
        ];
        args.extend(days);
        openssl(dir, &args);
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-extfile",
        "ext.cnf",
    ];
    args.extend(days);
    openssl(dir, &args);
}

/// Issue 21 item 11: TLS to PostgreSQL. `verify-full` accepts the server's
/// certificate only when it chains to `store.tls_ca_file` and names the host
/// connected to; `verify-ca` checks the chain only; `require` encrypts. The
/// connection made really is TLS (`pg_stat_ssl`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_verifies_the_servers_certificate() {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(!ci(), "CI needs openssl for this test");
        eprintln!("SKIPPED: no openssl");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let Some(cluster) = Cluster::init_with(|dir| {
        for f in ["server.pem", "server.key"] {
            std::fs::copy(certs.path().join(f), dir.join(f)).unwrap();
        }
        // The server refuses a key others can read.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        format!(
            "-c ssl=on -c ssl_cert_file={0}/server.pem -c ssl_key_file={0}/server.key",
            dir.display()
        )
    }) else {
        assert!(!ci(), "CI needs Debian's initdb and pg_ctl for this test");
        eprintln!("SKIPPED: no initdb/pg_ctl");
        return;
    };
    let ca = certs.path().join("ca.pem");
    let other = certs.path().join("other-ca.pem");
    let connect = |host: &str, mode: &str, ca: Option<&Path>| {
        let mut opts = tg_store::testing::test_options(&format!(
            "postgres://postgres@{host}:{}/postgres",
            cluster.port
        ));
        opts.tls_mode = Some(mode.to_owned());
        opts.tls_ca_file = ca.map(Path::to_path_buf);
        opts.acquire_timeout = Duration::from_secs(5);
        async move { tg_store::Store::connect(&opts).await }
    };
    connect("localhost", "verify-full", Some(&ca))
        .await
        .expect("verify-full with the right CA and host");
    let wrong_host = connect("127.0.0.1", "verify-full", Some(&ca)).await;
    assert!(
        wrong_host.is_err(),
        "a certificate for localhost accepted for 127.0.0.1 under verify-full"
    );
    // verify-ca checks the chain (with sqlx 0.8's rustls the host is checked
    // too: stricter than libpq, documented).
    connect("localhost", "verify-ca", Some(&ca))
        .await
        .expect("verify-ca with the right CA");
    let untrusted = connect("localhost", "verify-ca", Some(&other)).await;
    assert!(untrusted.is_err(), "verify-ca accepted an untrusted CA");
    let untrusted = connect("localhost", "verify-full", Some(&other)).await;
    assert!(
        untrusted.is_err(),
        "a certificate from an untrusted CA accepted"
    );
    connect("127.0.0.1", "require", None)
        .await
        .expect("require");

    // The connection is encrypted.
    use sqlx::Connection as _;
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        cluster.port,
        ca.display()
    );
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert!(ssl, "the connection is not TLS");
}
