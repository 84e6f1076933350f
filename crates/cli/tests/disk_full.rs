//! Issue 28: a 202 only after a commit that reached the disk, on every way a
//! commit can fail, with the real `triage-gate` binary as a child process.
//!
//! - SQLite on a 3 MB tmpfs that fills up: every answer is 202 or 503 (with
//!   `Retry-After`), readiness follows the store, the gate resumes by itself
//!   once the file system is enlarged, and after a SIGKILL and a restart every
//!   event ever answered 202 is in the store and the audit chain verifies.
//! - The low-disk guard: below `store.disk_free_min_bytes` events are refused
//!   before SQLite fails, and accepted again once there is room.
//! - PostgreSQL with an injected failure of the COMMIT itself (a deferred
//!   constraint trigger raising `disk_full`) and a read-only database: no 202
//!   without a commit, and the gate resumes when the fault is lifted.
//!
//! The tmpfs tests mount a file system, so they need root (CI runs as root);
//! the PostgreSQL test needs the server at `TG_TEST_POSTGRES_URL`. Under
//! `CI=true` a missing capability fails the test instead of skipping it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (the test is skipped) when mounting is not allowed here,
    /// unless under CI, where the test fails instead.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(!ci(), "CI=true: cannot mount a tmpfs (the test needs root)");
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount to {size} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let yaml = format!(
        "identity:\n  inbound:\n    mode: none\n    insecure_allow_anonymous: true\n{extra}"
    );
    let path = dir.join("gate.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// One generic event with a 400-character summary (as in the report).
fn event(i: usize) -> Value {
    json!({
        "service": format!("svc-{}", i % 7),
        "environment": "prod",
        "alert_name": format!("DiskFullDrill{i}"),
        "summary": format!("{i:05} {}", "x".repeat(394)),
        "severity": "warning",
        "source_system": "prometheus",
    })
}

#[derive(Default, Debug)]
struct Tally {
    accepted: Vec<String>,
    refused: usize,
}

/// Sends events `range` one at a time. Every answer must be 202 (its run id
/// kept) or 503 with `Retry-After` and a problem body; nothing else.
async fn send(http: &reqwest::Client, base: &str, range: std::ops::Range<usize>, t: &mut Tally) {
    for i in range {
        let r = http
            .post(format!("{base}/v1/events/generic"))
            .json(&event(i))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        match status {
            202 => {
                let body: Value = r.json().await.unwrap();
                for run in body["runs"].as_array().unwrap() {
                    t.accepted.push(run["run_id"].as_str().unwrap().to_owned());
                }
            }
            503 => {
                assert!(
                    r.headers().contains_key("retry-after"),
                    "a 503 without Retry-After"
                );
                let body: Value = r.json().await.unwrap();
                assert!(
                    body["detail"].as_str().is_some_and(|d| !d.is_empty()),
                    "a 503 without a detail: {body}"
                );
                t.refused += 1;
            }
            other => panic!("event {i}: answered {other}, expected 202 or 503"),
        }
    }
}

async fn ready(http: &reqwest::Client, base: &str) -> (u16, Value) {
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until `/readyz` answers `want`, returning its body.
async fn wait_ready(http: &reqwest::Client, base: &str, want: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = ready(http, base).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz did not answer {want} within {within:?}; last {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every run answered 202 is in the store of the running gate.
async fn assert_all_stored(http: &reqwest::Client, base: &str, runs: &[String]) {
    for run_id in runs {
        let r = http
            .get(format!("{base}/v1/runs/{run_id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            200,
            "run {run_id} was answered 202 and is not in the store"
        );
    }
}

/// Waits until every accepted run is completed (decided and audited).
async fn wait_completed(http: &reqwest::Client, base: &str, runs: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    for run_id in runs {
        loop {
            let body: Value = http
                .get(format!("{base}/v1/runs/{run_id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["status"] == "completed" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} not completed within {within:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `triage-gate audit verify ARGS` succeeds (a store's data dir or a file).
fn verify_audit(args: &[&std::ffi::OsStr]) {
    let out = Command::new(common::BIN)
        .args(["audit", "verify"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_answers_503_never_loses_a_202_and_resumes_by_itself() {
    let Some(fs) = Tmpfs::mount("3m") else { return };
    let conf_dir = tempfile::tempdir().unwrap();
    // The floor off: this test is about commits that fail.
    let config = write_config(conf_dir.path(), "store:\n  disk_free_min_bytes: 0\n");
    let data = fs.path().join("data");
    let http = reqwest::Client::new();
    let mut t = Tally::default();

    // Phase 1: fill the file system.
    let gate = common::start_gate(&config, &data, &[]).await;
    send(&http, &gate.base, 0..400, &mut t).await;
    assert!(
        t.refused > 0,
        "400 events of 400 characters never filled a 3 MB file system: {t:?}"
    );
    let first_refusals = t.refused;
    // Readiness follows the store, and names it.
    let (status, body) = ready(&http, &gate.base).await;
    assert_eq!(status, 503, "/readyz with a full disk: {body}");
    assert_eq!(body["capabilities"]["store"]["ready"], false, "{body}");
    assert!(
        body["capabilities"]["store"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("full")),
        "the readiness reason names the cause: {body}"
    );

    // Phase 2: still full. Whatever is answered 202 must be committed.
    send(&http, &gate.base, 400..500, &mut t).await;
    assert!(
        t.refused > first_refusals,
        "a full disk kept accepting: {t:?}"
    );

    // Phase 3: room again; the gate resumes without a restart.
    fs.resize("64m");
    wait_ready(&http, &gate.base, 200, Duration::from_secs(15)).await;
    let before = t.accepted.len();
    send(&http, &gate.base, 500..520, &mut t).await;
    assert_eq!(
        t.accepted.len() - before,
        20,
        "after space returned, every event is accepted: {t:?}"
    );
    assert_all_stored(&http, &gate.base, &t.accepted).await;

    // SIGKILL, restart on the same data: every 202 is there, and is decided.
    gate.kill();
    let gate = common::start_gate(&config, &data, &[]).await;
    assert_all_stored(&http, &gate.base, &t.accepted).await;
    wait_completed(&http, &gate.base, &t.accepted, Duration::from_secs(60)).await;
    drop(gate);
    // Nothing answered 503 was half-stored: the store holds exactly the runs
    // answered 202, no more.
    let store = tg_store::Store::open(&data.join("triage-gate.sqlite"))
        .await
        .unwrap();
    let stored = store.count_runs().await.unwrap();
    assert_eq!(
        usize::try_from(stored).unwrap(),
        t.accepted.len(),
        "runs in the store vs events answered 202: {t:?}"
    );
    drop(store);
    verify_audit(&["--data-dir".as_ref(), data.as_os_str()]);
    // The audit file, written from the store while the disk was full, holds no
    // torn line: it verifies as far as it got.
    verify_audit(&[data.join("audit.jsonl").as_os_str()]);
    eprintln!(
        "disk full: {} answered 202 (all stored), {} answered 503",
        t.accepted.len(),
        t.refused
    );
}

/// Free bytes on `path`'s file system, as `df` reports them.
fn available_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_free_space_floor_events_are_refused_before_sqlite_fails() {
    const MIB: u64 = 1024 * 1024;
    // A floor of 12 MiB on a 32 MiB file system: far more than SQLite's WAL
    // needs to decide what is already accepted, so no commit may fail.
    let Some(fs) = Tmpfs::mount("32m") else {
        return;
    };
    let conf_dir = tempfile::tempdir().unwrap();
    let floor = 12 * MIB;
    let config = write_config(
        conf_dir.path(),
        &format!("store:\n  disk_free_min_bytes: {floor}\n"),
    );
    let data = fs.path().join("data");
    let http = reqwest::Client::new();
    let mut t = Tally::default();
    let gate = common::start_gate(&config, &data, &[]).await;
    // Fill to 4 MiB above the floor, then send events until the guard refuses.
    let ballast = fs.path().join("ballast");
    let room = available_bytes(fs.path()) - floor - 4 * MIB;
    std::fs::write(&ballast, vec![0u8; usize::try_from(room).unwrap()]).unwrap();
    wait_ready(&http, &gate.base, 200, Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while t.refused == 0 {
        send(&http, &gate.base, i..i + 1, &mut t).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        i += 1;
        assert!(
            Instant::now() < deadline,
            "the floor never refused an event: {t:?}"
        );
    }
    let body = wait_ready(&http, &gate.base, 503, Duration::from_secs(5)).await;
    let store = &body["capabilities"]["store"];
    assert_eq!(store["disk_low"], true, "{body}");
    assert_eq!(
        store["commits"], true,
        "the guard refused before any commit failed: {body}"
    );
    // Accepted runs are still decided while new ones are refused.
    wait_completed(&http, &gate.base, &t.accepted, Duration::from_secs(60)).await;
    // Room again: accepted again.
    std::fs::remove_file(&ballast).unwrap();
    wait_ready(&http, &gate.base, 200, Duration::from_secs(10)).await;
    let before = t.accepted.len();
    send(&http, &gate.base, i..i + 5, &mut t).await;
    assert_eq!(t.accepted.len() - before, 5, "{t:?}");
    let (_, body) = ready(&http, &gate.base).await;
    eprintln!(
        "low disk: {} accepted, {} refused by the floor; {body}",
        t.accepted.len(),
        t.refused
    );
    assert_all_stored(&http, &gate.base, &t.accepted).await;
}

/// PostgreSQL: a trigger that fails the COMMIT itself (deferred to commit
/// time, SQLSTATE 53100 disk_full) while `tg_fault` holds a row.
const PG_FAULT_SQL: &str = "
CREATE TABLE tg_fault (on_commit BOOLEAN NOT NULL);
CREATE FUNCTION tg_fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM tg_fault WHERE on_commit) THEN
    RAISE EXCEPTION 'injected commit failure: could not extend file' USING ERRCODE = '53100';
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER tg_fail_runs AFTER INSERT OR UPDATE ON runs
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tg_fail_commit();
CREATE CONSTRAINT TRIGGER tg_fail_probe AFTER INSERT OR UPDATE ON store_probe
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tg_fail_commit();
";

async fn pg_exec(url: &str, sql: &str) {
    use sqlx::Connection as _;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_failures_answer_503_and_never_a_202_without_a_commit() {
    if !tg_store::testing::postgres_available().await {
        assert!(!ci(), "CI=true: no PostgreSQL at TG_TEST_POSTGRES_URL");
        eprintln!("SKIPPED: no PostgreSQL at TG_TEST_POSTGRES_URL");
        return;
    }
    let url = tg_store::testing::fresh_postgres_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        // A short lease: runs the killed process held are taken over soon.
        &format!("store:\n  url: {url}\n  acquire_timeout_ms: 1000\n  run_lease_secs: 5\n"),
    );
    let http = reqwest::Client::new();
    let mut t = Tally::default();
    let gate = common::start_gate(&config, &dir.path().join("data"), &[]).await;
    send(&http, &gate.base, 0..10, &mut t).await;
    assert_eq!(t.accepted.len(), 10, "{t:?}");

    // 1. The COMMIT itself fails.
    pg_exec(&url, PG_FAULT_SQL).await;
    pg_exec(&url, "INSERT INTO tg_fault VALUES (true)").await;
    let before = t.accepted.len();
    send(&http, &gate.base, 10..30, &mut t).await;
    assert_eq!(
        t.accepted.len(),
        before,
        "a 202 while every commit fails: {t:?}"
    );
    let body = wait_ready(&http, &gate.base, 503, Duration::from_secs(5)).await;
    assert!(
        body["capabilities"]["store"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("injected commit failure")),
        "{body}"
    );
    pg_exec(&url, "DELETE FROM tg_fault").await;
    wait_ready(&http, &gate.base, 200, Duration::from_secs(15)).await;
    send(&http, &gate.base, 30..40, &mut t).await;
    assert_eq!(t.accepted.len(), before + 10, "resumed: {t:?}");

    // 2. The database turns read-only under the gate's connections (changed
    // from the server's admin database, which stays writable).
    let db = url.rsplit('/').next().unwrap().to_owned();
    let admin = std::env::var("TG_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| tg_store::testing::DEFAULT_TEST_POSTGRES_URL.to_owned());
    pg_exec(
        &admin,
        &format!(
            "ALTER DATABASE \"{db}\" SET default_transaction_read_only = on; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{db}' AND pid <> pg_backend_pid();"
        ),
    )
    .await;
    let before = t.accepted.len();
    send(&http, &gate.base, 40..60, &mut t).await;
    assert_eq!(
        t.accepted.len(),
        before,
        "a 202 on a read-only database: {t:?}"
    );
    wait_ready(&http, &gate.base, 503, Duration::from_secs(5)).await;
    pg_exec(
        &admin,
        &format!(
            "ALTER DATABASE \"{db}\" SET default_transaction_read_only = off; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{db}' AND pid <> pg_backend_pid();"
        ),
    )
    .await;
    wait_ready(&http, &gate.base, 200, Duration::from_secs(15)).await;
    send(&http, &gate.base, 60..70, &mut t).await;
    assert_eq!(t.accepted.len(), before + 10, "resumed: {t:?}");

    // Every 202 is stored and decided, also after a SIGKILL and a restart.
    gate.kill();
    let gate = common::start_gate(&config, &dir.path().join("data"), &[]).await;
    assert_all_stored(&http, &gate.base, &t.accepted).await;
    wait_completed(&http, &gate.base, &t.accepted, Duration::from_secs(60)).await;
    eprintln!(
        "postgres: {} answered 202 (all stored), {} answered 503",
        t.accepted.len(),
        t.refused
    );
}
