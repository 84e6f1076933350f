//! The CLI in pipes (issue 19): a closed stdout (`| head -1`) ends every
//! command quietly, without a panic; `actions list` with nothing says so.

use std::process::{Command, Stdio};

use super::{BIN, DRILL_IDENTITY, repo, text};
use crate::common::start_gate;

/// Runs the binary with a stdout whose reader is already gone.
fn with_closed_stdout(args: &[&str]) -> (std::process::ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("TRIAGE_GATE_LOG_FORMAT")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_exits_quietly_on_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gate.yaml");
    std::fs::write(&config, DRILL_IDENTITY).unwrap();
    let data = dir.path().join("data");
    let gate = start_gate(&config, &data, &[]).await;
    let base = gate.base.clone();
    let shipped = repo().join("policy-tests/shipped.yaml");
    let audit = data.join("audit.jsonl");
    let key = dir.path().join("key.pem");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let commands: Vec<String> = vec![
        format!("report autonomy --server {base}"),
        format!("autonomy show --server {base}"),
        format!("actions list --status pending --server {base}"),
        format!("config check {}", path(&config)),
        format!("policy test {}", path(&shipped)),
        format!("audit verify {}", path(&audit)),
        format!("audit keygen {}", path(&key)),
        "--help".into(),
        "--version".into(),
    ];
    for cmd in commands {
        let args: Vec<String> = cmd.split(' ').map(str::to_owned).collect();
        let (status, stderr) = tokio::task::spawn_blocking(move || {
            with_closed_stdout(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        assert!(!stderr.contains("panicked"), "{cmd}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{cmd}: {stderr}");
        assert!(status.success(), "{cmd}: {status} {stderr}");
    }

    // As a user types it.
    let shell = format!("{BIN} report autonomy --server {base} | head -1");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .arg("-c")
            .arg(shell)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
    assert_eq!(
        out.stdout.iter().filter(|b| **b == b'\n').count(),
        1,
        "{}",
        text(&out)
    );

    // Nothing to list: said on stderr, nothing on stdout.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["actions", "list", "--server", &base])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no dead-letter actions at"),
        "{}",
        text(&out)
    );
    drop(gate);
}
