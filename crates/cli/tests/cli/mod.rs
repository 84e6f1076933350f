//! The binary as a user types it (issue 19).

mod config_check;
mod docs_commands;
mod examples;
mod logs;
mod pipes;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_triage-gate");

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the binary with `args` (RUST_LOG=warn, no token, text logs).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("TRIAGE_GATE_LOG_FORMAT")
        .env_remove("TRIAGE_GATE_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// An anonymous loopback drill: what `serve` needs to start without an IdP.
pub const DRILL_IDENTITY: &str =
    "identity: { inbound: { mode: none, insecure_allow_anonymous: true } }\n";
