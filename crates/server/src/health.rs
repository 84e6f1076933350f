//! Keeps the store's health current (`tg_store::Health`): while commits fail,
//! a one-row write every [`tg_store::PROBE_INTERVAL_MS`] tells when they work
//! again (the gate then resumes by itself, no restart); and the free space of
//! the file systems holding the SQLite database and the audit file is held
//! against `store.disk_free_min_bytes`, so new events are refused before
//! SQLite runs out of room in the middle of a decision.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::AppState;

/// How often free space is measured (two `statvfs` calls: cheap). SQLite's
/// WAL can grow by megabytes a second under load, so the floor must be seen
/// crossed well before it is used up.
pub const DISK_CHECK_MS: u64 = 100;

/// What the disk watcher looks at: each path with what lives there.
#[derive(Debug, Clone)]
pub struct Watched {
    pub paths: Vec<(&'static str, PathBuf)>,
    pub floor_bytes: u64,
}

/// Free bytes for an unprivileged writer on `path`'s file system.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Measures every watched path once and records the finding on the store.
pub fn check_disk(state: &AppState, watched: &Watched) {
    if watched.floor_bytes == 0 {
        return;
    }
    let mut low = None;
    for (what, path) in &watched.paths {
        match free_bytes(path) {
            Ok(free) => {
                metrics::gauge!("triage_gate_disk_free_bytes", "holds" => *what).set(free as f64);
                if free < watched.floor_bytes && low.is_none() {
                    low = Some(format!(
                        "{} free on the file system of {} ({}), below store.disk_free_min_bytes = {}",
                        mib(free),
                        path.display(),
                        what,
                        mib(watched.floor_bytes)
                    ));
                }
            }
            // A path that cannot be measured (not created yet) is no finding.
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot measure free space")
            }
        }
    }
    state.store.set_disk_low(low);
}

/// Runs until cancelled: the disk check and, while the store is failing, the probe.
pub async fn task(state: AppState, watched: Watched, token: CancellationToken) {
    let tick = Duration::from_millis(DISK_CHECK_MS);
    let probe_every = Duration::from_millis(tg_store::PROBE_INTERVAL_MS);
    let mut last_probe = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        check_disk(&state, &watched);
        if state.store.health().failing.is_some() && last_probe.elapsed() >= probe_every {
            last_probe = std::time::Instant::now();
            match state.store.probe_write(state.clock.now()).await {
                Ok(()) => {
                    // Runs accepted before the failure wait for the workers.
                    state.work.notify_waiters();
                    state.outbox.notify_waiters();
                }
                Err(e) => tracing::debug!(error = %e, "the store still cannot commit"),
            }
        }
    }
}
