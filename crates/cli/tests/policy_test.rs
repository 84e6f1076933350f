//! `triage-gate policy test`: the shipped table tests pass; a changed
//! expectation fails with the condition that settled it; a malformed file is
//! refused with its line.
//!
//! The `cli` modules test the binary as a user types it (issue 19): the
//! commands the docs show, `config check` against `serve`, every shipped
//! example configuration, pipes and log output. They live in this test
//! binary rather than in one of their own: each test binary is another link.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod cli;
mod common;

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_triage-gate");

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policy-tests/shipped.yaml")
}

fn run(file: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["policy", "test"])
        .arg(file)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_shipped_table_tests_pass() {
    let (ok, text) = run(&shipped());
    assert!(ok, "{text}");
    assert!(text.contains("22 passed, 0 failed"), "{text}");
}

#[test]
fn a_moved_decision_fails_naming_its_condition() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(shipped()).unwrap();
    // The 0.75 case: claim the page would be sent.
    let changed = text.replacen(
        "expect: { ticket: execute, page: review, mim: skip }",
        "expect: { ticket: execute, page: execute, mim: skip }",
        1,
    );
    assert_ne!(changed, text);
    std::fs::write(dir.path().join("changed.yaml"), changed).unwrap();
    std::fs::copy(
        shipped().with_file_name("gate.yaml"),
        dir.path().join("gate.yaml"),
    )
    .unwrap();
    let (ok, out) = run(&dir.path().join("changed.yaml"));
    assert!(!ok, "{out}");
    assert!(out.contains("21 passed, 1 failed"), "{out}");
    assert!(
        out.contains("page: expected execute, decided review"),
        "{out}"
    );
    assert!(out.contains("FAIL page.confidence: 0.75"), "{out}");
}

#[test]
fn a_malformed_file_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "cases:\n  - name: x\n    expcet: {}\n").unwrap();
    let (ok, out) = run(&path);
    assert!(!ok);
    assert!(out.contains("bad.yaml:3:"), "{out}");
}
