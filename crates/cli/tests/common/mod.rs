//! The real `triage-gate` binary as a child process, for the durability tests:
//! started on a free loopback port with a data dir, health-checked, and
//! SIGKILLed on drop if a test fails before stopping it.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test harness: a failed unwrap is a failed test; each test binary uses a part of it"
)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_triage-gate");
/// How long a started gate may take to answer /healthz.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A gate process that is SIGKILLed if the test fails before stopping it.
pub struct Gate {
    pub child: Child,
    pub base: String,
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gate {
    /// SIGKILL: no graceful shutdown, no flushing.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "a SIGKILLed gate cannot exit cleanly");
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `triage-gate serve` with `config` and `data_dir`, the environment
/// `env` (secret references of the config), and waits until it is healthy.
pub async fn start_gate(config: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Gate {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let mut gate = Gate {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = gate.child.try_wait().unwrap() {
            panic!("the gate exited during startup: {status}");
        }
        let ok = http
            .get(format!("{}/healthz", gate.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return gate;
        }
        assert!(
            Instant::now() < deadline,
            "the gate did not become healthy within {START_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
