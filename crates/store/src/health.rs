//! Whether the store can commit, and why not.
//!
//! A `202` promises a committed event. So the store keeps, beside its pool, a
//! small shared state that the write path updates on every commit: a failed
//! `COMMIT` (full disk, I/O error, read-only file system or database, a lock
//! held past the timeout, a lost connection) marks the store **failing** with
//! the cause; the next probe commit that succeeds marks it **writable** again. A
//! second cause comes from outside: the server's disk watcher marks the data
//! directory's file system **low** below `store.disk_free_min_bytes`, so
//! ingest refuses before SQLite has to.
//!
//! While the store is failing, ingest refuses at once with 503 (it does not
//! try a commit per request), workers and the outbox claim nothing, and
//! `/readyz` names the cause; a probe (`Store::probe_write`, driven by the
//! server every [`PROBE_INTERVAL_MS`]) is what notices that commits work
//! again. Each change of state is logged once and counted once.

use std::sync::Mutex;

use crate::StoreError;

/// How often the server probes a failing store with a one-row write.
pub const PROBE_INTERVAL_MS: u64 = 1_000;
/// Characters of a failure's cause kept (causes are database messages: no secrets).
pub const CAUSE_CHARS_MAX: usize = 300;

/// A snapshot of the store's health.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// Why the last commit failed, while no commit has succeeded since.
    pub failing: Option<String>,
    /// Why the disk is too full to accept more (the disk watcher's finding).
    pub disk_low: Option<String>,
}

impl Health {
    /// Whether a new event may be accepted.
    pub fn accepts(&self) -> bool {
        self.failing.is_none() && self.disk_low.is_none()
    }

    /// Whether workers and the outbox may claim work: only commit failures
    /// stop them. A low disk refuses new events and keeps deciding the
    /// accepted ones (the floor is the room for that).
    pub fn claims(&self) -> bool {
        self.failing.is_none()
    }

    /// The reason ingest refuses, if it does.
    pub fn refusal(&self) -> Option<&str> {
        self.failing.as_deref().or(self.disk_low.as_deref())
    }
}

/// Shared by every clone of a `Store`.
#[derive(Debug, Default)]
pub(crate) struct HealthCell {
    state: Mutex<Health>,
}

fn bounded(cause: &str) -> String {
    cause.chars().take(CAUSE_CHARS_MAX).collect()
}

impl HealthCell {
    pub(crate) fn snapshot(&self) -> Health {
        self.state.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut Health)) {
        let Ok(mut h) = self.state.lock() else {
            return;
        };
        let before = h.clone();
        f(&mut h);
        if before.failing.is_some() != h.failing.is_some() {
            match &h.failing {
                Some(cause) => {
                    tracing::error!(cause = %cause, "the store cannot commit: refusing events and claiming no work until a commit succeeds");
                    metrics::counter!("triage_gate_store_state_changes_total", "state" => "failing").increment(1);
                }
                None => {
                    tracing::warn!("the store commits again: accepting events and claiming work");
                    metrics::counter!("triage_gate_store_state_changes_total", "state" => "writable").increment(1);
                }
            }
            metrics::gauge!("triage_gate_store_writable").set(if h.failing.is_some() {
                0.0
            } else {
                1.0
            });
        }
        if before.disk_low.is_some() != h.disk_low.is_some() {
            match &h.disk_low {
                Some(cause) => {
                    tracing::error!(cause = %cause, "the disk is below its free-space floor: refusing new events");
                    metrics::counter!("triage_gate_store_state_changes_total", "state" => "disk_low").increment(1);
                }
                None => {
                    tracing::warn!(
                        "the disk is above its free-space floor again: accepting events"
                    );
                    metrics::counter!("triage_gate_store_state_changes_total", "state" => "disk_ok").increment(1);
                }
            }
            metrics::gauge!("triage_gate_store_disk_low").set(if h.disk_low.is_some() {
                1.0
            } else {
                0.0
            });
        }
    }

    /// The probe's commit reached the database: the store is writable.
    /// Only the probe says so: a small commit of some background task that
    /// happens to fit in a full disk's last free page proves nothing, and
    /// would make the state flap (and log) at every request.
    pub(crate) fn probe_committed(&self) {
        self.update(|h| h.failing = None);
    }

    /// A commit (or the rollback after a failure) did not go through.
    pub(crate) fn commit_failed(&self, cause: &str) {
        let cause = bounded(cause);
        self.update(|h| h.failing = Some(cause));
    }

    pub(crate) fn set_disk_low(&self, cause: Option<String>) {
        self.update(|h| h.disk_low = cause.as_deref().map(bounded));
    }
}

/// SQLite's primary result codes that mean the database cannot take a write
/// now (<https://www.sqlite.org/rescode.html>): BUSY 5, LOCKED 6, NOMEM 7,
/// READONLY 8, IOERR 10, CORRUPT 11, FULL 13, CANTOPEN 14, PROTOCOL 15, NOTADB 26.
const SQLITE_STORAGE_CODES: [i64; 10] = [5, 6, 7, 8, 10, 11, 13, 14, 15, 26];

/// PostgreSQL SQLSTATE classes and codes that mean the database cannot take a
/// write now: 08 connection exception, 53 insufficient resources (53100 disk
/// full), 57P0x shutdown, 58 system error, 25006 read-only transaction,
/// 55P03 lock not available.
fn pg_storage_state(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code.starts_with("58")
        || code == "25006"
        || code == "55P03"
}

impl StoreError {
    /// When this error means the store cannot write at all (as opposed to a
    /// problem with one row or one request), the cause in words.
    pub fn storage_failure(&self) -> Option<String> {
        match self {
            StoreError::Commit(cause) => Some(cause.clone()),
            StoreError::Db(e) => sqlx_storage_failure(e),
            _ => None,
        }
    }
}

pub(crate) fn sqlx_storage_failure(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Some(e.to_string()),
        sqlx::Error::Database(db) => {
            let code = db.code()?;
            let storage = if db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                pg_storage_state(&code)
            } else {
                // SQLite reports extended codes (e.g. 778 = SQLITE_IOERR_WRITE);
                // the primary code is the low byte.
                code.parse::<i64>()
                    .is_ok_and(|n| SQLITE_STORAGE_CODES.contains(&(n & 0xff)))
            };
            storage.then(|| db.message().to_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_failure_refuses_and_stops_claims_until_a_commit_succeeds() {
        let cell = HealthCell::default();
        assert!(cell.snapshot().accepts());
        cell.commit_failed("database or disk is full");
        let h = cell.snapshot();
        assert!(!h.accepts() && !h.claims());
        assert_eq!(h.refusal(), Some("database or disk is full"));
        cell.probe_committed();
        assert!(cell.snapshot().accepts());
    }

    #[test]
    fn a_low_disk_refuses_events_but_lets_workers_decide() {
        let cell = HealthCell::default();
        cell.set_disk_low(Some("12 MiB free, the floor is 64 MiB".into()));
        let h = cell.snapshot();
        assert!(!h.accepts());
        assert!(h.claims());
        cell.set_disk_low(None);
        assert!(cell.snapshot().accepts());
    }

    #[test]
    fn postgres_states_that_mean_no_write_are_storage_failures() {
        for code in ["53100", "25006", "08006", "57P01", "58030"] {
            assert!(pg_storage_state(code), "{code}");
        }
        for code in ["23505", "40001", "42P01"] {
            assert!(!pg_storage_state(code), "{code}");
        }
    }
}
