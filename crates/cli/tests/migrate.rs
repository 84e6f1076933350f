//! `triage-gate migrate CONFIG`: creates the schema of the configured store
//! (SQLite in the data dir, or PostgreSQL) and prints its version; a password
//! in `store.url` is refused with the file's line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_triage-gate");

fn migrate(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gate.yaml");
    let data = dir.path().join("data");
    std::fs::write(
        &path,
        format!("server:\n  data_dir: {}\n{config}", data.display()),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("migrate")
        .arg(&path)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The number of migration files for a backend.
fn migrations(backend: &str) -> usize {
    std::fs::read_dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../store/migrations")
            .join(backend),
    )
    .unwrap()
    .count()
}

#[test]
fn sqlite_is_migrated_to_the_latest_version() {
    let (ok, out) = migrate("");
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "sqlite store at schema version {}",
            migrations("sqlite")
        )),
        "{out}"
    );
}

#[tokio::test]
async fn postgres_is_migrated_to_the_latest_version_and_again_is_a_no_op() {
    if !tg_store::testing::postgres_available().await {
        eprintln!("SKIPPED: no PostgreSQL at TG_TEST_POSTGRES_URL");
        return;
    }
    let url = tg_store::testing::fresh_postgres_database().await.unwrap();
    let want = format!(
        "postgres store at schema version {}",
        migrations("postgres")
    );
    for _ in 0..2 {
        let (ok, out) = migrate(&format!("store:\n  url: {url}\n"));
        assert!(ok, "{out}");
        assert!(out.contains(&want), "{out}");
    }
}

#[test]
fn a_password_in_the_url_is_refused_with_its_line() {
    let (ok, out) = migrate("store:\n  url: postgres://u:secret@db.internal/gate\n");
    assert!(!ok);
    assert!(
        out.contains("gate.yaml:4: store.url: holds a password"),
        "{out}"
    );
    assert!(
        !out.contains("secret@"),
        "the password is not echoed: {out}"
    );
}
