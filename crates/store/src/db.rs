//! The store on one of two backends, through sqlx's `Any` driver so every
//! query is written once (`$N` parameters, which SQLite accepts too):
//!
//! - **SQLite** (the zero-setup default): one write connection, so every write
//!   transaction is serial, and a small pool of read-only readers (WAL).
//! - **PostgreSQL** (replicas): one pool. Write transactions that read and
//!   change shared state (decisions, storm state, the audit chain, reviews)
//!   take one transaction-scoped advisory lock first, so they are serial
//!   across every replica exactly as they are on SQLite's single writer; no
//!   leader is needed and a dead replica holds nothing (the lock ends with its
//!   session). Accepting events takes no lock, and claiming runs uses
//!   `FOR UPDATE SKIP LOCKED`.
//!
//! Where the dialects differ (JSON functions, row locking) the query is chosen
//! by [`Backend`]; those places are few and each says so.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor, Row};
use tg_engine::{StepOutput, StepState};
use tg_model::{
    ActionKind, ActionResult, ActionStatus, AuditRecord, ChainRecord, Outcome, RunId, Sha256Hex,
};
use tg_storm::{BucketState, DedupEntry};

use crate::audit::{RowMeta, chain_next, insert_row};
use crate::{
    NewRun, OpenRuns, ReviewItem, RunStatus, StoreError, StoredAction, StoredRun, from_ms,
    parse_kind, to_ms,
};

/// A transaction on either backend.
pub(crate) type Tx = crate::tx::WriteTx;

/// Readers in the SQLite pool.
pub const READ_CONNECTIONS_MAX: u32 = 4;
/// How long a SQLite statement waits for a lock before failing.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Rows returned by one list query at most.
pub const LIST_ROWS_MAX: i64 = 1_000;
/// The advisory lock every shared-state write transaction takes on PostgreSQL
/// (an arbitrary constant: "tg" in ASCII).
pub const PG_WRITE_LOCK: i64 = 0x7467;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The backend of a URL (`sqlite:` or `postgres:`/`postgresql:`).
    pub fn of_url(url: &str) -> Option<Backend> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            _ => None,
        }
    }

    /// Whether several gate processes may share the database (claims are then
    /// released by lease expiry, never wholesale at start-up).
    pub fn shared(self) -> bool {
        self == Backend::Postgres
    }
}

/// How to reach a PostgreSQL database (SQLite needs only a path).
#[derive(Clone)]
pub struct StoreOptions {
    /// `postgres://user@host:port/db` (no password: see `password`).
    pub url: String,
    /// Kept out of the URL so that the URL can be logged.
    pub password: Option<String>,
    /// Connections in the pool at most.
    pub pool_max: u32,
    /// Connecting (and waiting for a pooled connection) fails after this.
    pub acquire_timeout: Duration,
    /// A statement running longer is cancelled by the server.
    pub statement_timeout: Duration,
    /// TLS to the server: `disable`, `prefer`, `require`, `verify-ca` or
    /// `verify-full` (libpq's `sslmode`); `None` keeps the URL's own.
    pub tls_mode: Option<String>,
    /// The root certificate(s) (PEM) the server's certificate must chain
    /// to, for `verify-ca` and `verify-full` (libpq's `sslrootcert`).
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("pool_max", &self.pool_max)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("tls_mode", &self.tls_mode)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) write: AnyPool,
    pub(crate) read: AnyPool,
    pub(crate) backend: Backend,
    /// Group commit of accepts, started on first use.
    pub(crate) group: crate::group::GroupCell,
    /// The last backlog count, when it was taken, and runs accepted since.
    pub(crate) backlog_cache: std::sync::Arc<BacklogCache>,
    /// Whether commits go through (`health.rs`).
    pub(crate) health: std::sync::Arc<crate::health::HealthCell>,
}

/// How old a backlog count may be before the next `backlog_estimate` counts again.
pub const BACKLOG_CACHE_MS: u64 = 100;

#[derive(Debug, Default)]
pub(crate) struct BacklogCache {
    counted: std::sync::Mutex<Option<(std::time::Instant, i64)>>,
    accepted_since: std::sync::atomic::AtomicI64,
}

pub(crate) fn corrupt(what: &str) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
    move |source| StoreError::Corrupt {
        what: what.to_owned(),
        source,
    }
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(corrupt("value to store"))
}

/// A SQLite URL for `path` in `mode` (`rwc` or `ro`), the path percent-encoded.
fn sqlite_url(path: &Path, mode: &str) -> String {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(mode == "rwc")
        .read_only(mode == "ro");
    opts.to_url_lossy().to_string()
}

/// Runs `sql` (session settings) on every new connection.
fn pragmas_hook(
    sql: String,
) -> impl for<'c> Fn(
    &'c mut sqlx::AnyConnection,
    sqlx::pool::PoolConnectionMetadata,
) -> futures_core::future::BoxFuture<'c, Result<(), sqlx::Error>>
+ Send
+ Sync
+ 'static {
    move |conn, _meta| {
        let sql = sql.clone();
        Box::pin(async move {
            conn.execute(sql.as_str()).await?;
            Ok(())
        })
    }
}

/// The backend a transaction runs on (for the few dialect-specific queries).
pub(crate) fn backend_of(conn: &sqlx::AnyConnection) -> Backend {
    if conn.backend_name().eq_ignore_ascii_case("postgresql") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// The claim on SQLite (see [`Store::claim_batch`]).
pub(crate) const CLAIM_SQLITE: &str = "UPDATE runs SET status = 'classifying', claimed_by = $1, lease_until = $2 WHERE seq IN \
     (SELECT seq FROM (SELECT seq FROM runs WHERE status = 'pending' ORDER BY seq LIMIT $4) \
      UNION ALL SELECT seq FROM (SELECT seq FROM runs WHERE status = 'classifying' \
      AND lease_until <= $3 ORDER BY seq LIMIT $4) ORDER BY seq LIMIT $4) \
     RETURNING *";

impl Store {
    /// Opens (creating if needed) a SQLite database file and runs migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let url = sqlite_url(path, "rwc");
        // FULL: a commit survives power loss, not only a process crash.
        let pragmas = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};"
        );
        // A local file's connection cannot go stale: no ping before each
        // use (one hand-off to the connection's thread per transaction saved).
        let write = AnyPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .after_connect(pragmas_hook(pragmas.clone()))
            .connect_with(AnyConnectOptions::from_str(&url)?.disable_statement_logging())
            .await?;
        SQLITE_MIGRATOR.run(&write).await?;
        let read = AnyPoolOptions::new()
            .max_connections(READ_CONNECTIONS_MAX)
            .test_before_acquire(false)
            .after_connect(pragmas_hook(format!(
                "PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};"
            )))
            .connect_with(
                AnyConnectOptions::from_str(&sqlite_url(path, "ro"))?.disable_statement_logging(),
            )
            .await?;
        Ok(Store {
            write,
            read,
            backend: Backend::Sqlite,
            group: Default::default(),
            backlog_cache: Default::default(),
            health: Default::default(),
        })
    }

    /// Connects to PostgreSQL and runs migrations (one replica at a time: the
    /// migrator takes its own advisory lock).
    pub async fn connect(opts: &StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let mut url = url::Url::parse(&opts.url).map_err(|e| StoreError::Config(e.to_string()))?;
        if let Some(p) = &opts.password {
            url.set_password(Some(p))
                .map_err(|()| StoreError::Config("the URL cannot carry a password".into()))?;
        }
        // TLS as libpq spells it, on the URL sqlx parses.
        if opts.tls_mode.is_some() || opts.tls_ca_file.is_some() {
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "sslmode" && k != "sslrootcert")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let mut q = url.query_pairs_mut();
            q.clear().extend_pairs(kept);
            if let Some(m) = &opts.tls_mode {
                q.append_pair("sslmode", m);
            }
            if let Some(ca) = &opts.tls_ca_file {
                q.append_pair("sslrootcert", &ca.display().to_string());
            }
        }
        let timeout_ms = opts.statement_timeout.as_millis();
        let pool = AnyPoolOptions::new()
            .max_connections(opts.pool_max.max(1))
            .acquire_timeout(opts.acquire_timeout)
            .after_connect(pragmas_hook(format!(
                "SET statement_timeout = {timeout_ms}; SET lock_timeout = {timeout_ms};"
            )))
            .connect_with(AnyConnectOptions::from_str(url.as_str())?.disable_statement_logging())
            .await?;
        POSTGRES_MIGRATOR.run(&pool).await?;
        Ok(Store {
            write: pool.clone(),
            read: pool,
            backend: Backend::Postgres,
            group: Default::default(),
            backlog_cache: Default::default(),
            health: Default::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The latest migration applied (its number: `0012_...` is 12).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&self.read)
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// Begins a write transaction that reads and changes shared state: on
    /// PostgreSQL it first takes the store's advisory lock (held until commit
    /// or rollback), which makes these transactions serial across replicas.
    pub(crate) async fn begin_write(&self) -> Result<Tx, StoreError> {
        let mut tx = Tx::begin(&self.write, &self.health).await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_WRITE_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// Whether commits go through, and whether the disk has room for more
    /// events (`health.rs`).
    pub fn health(&self) -> crate::Health {
        self.health.snapshot()
    }

    /// The disk watcher's finding: `Some(cause)` while the data's file system
    /// is below its free-space floor (new events are refused), `None` once
    /// it is above again.
    pub fn set_disk_low(&self, cause: Option<String>) {
        self.health.set_disk_low(cause);
    }

    /// Reports an error a caller got from the store: one that means the
    /// store cannot write (full disk, I/O error, read-only, connection lost)
    /// marks it failing, so the gate stops accepting and claiming until a
    /// commit (or [`Store::probe_write`]) goes through.
    pub fn observe_error(&self, e: &StoreError) {
        if let Some(cause) = e.storage_failure() {
            self.health.commit_failed(&cause);
        }
    }

    /// Commits a one-row write: `Ok` means the store commits again (and is
    /// marked writable); an error keeps it failing with the new cause.
    pub async fn probe_write(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = Tx::begin(&self.write, &self.health).await?;
        let wrote = sqlx::query(
            "INSERT INTO store_probe (id, probed_at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
        )
        .bind(to_ms(now))
        .execute(&mut *tx)
        .await;
        if let Err(e) = wrote {
            if let Some(cause) = crate::health::sqlx_storage_failure(&e) {
                self.health.commit_failed(&cause);
            }
            return Err(e.into());
        }
        tx.commit().await?;
        self.health.probe_committed();
        Ok(())
    }

    /// Forgets replay keys whose window closed before `now`; returns how many.
    pub async fn prune_replay(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM delivery_replay WHERE until_ms < $1")
            .bind(to_ms(now))
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.read).await.is_ok()
    }

    /// Commits every run of a batch, or none, before returning; concurrent
    /// calls share one transaction (group commit, `group.rs`).
    pub async fn accept(&self, runs: &[NewRun], now: DateTime<Utc>) -> Result<(), StoreError> {
        self.accept_once(runs, None, now).await
    }

    /// Like [`Store::accept`], for a delivery that may be accepted once
    /// inside its window (`replay`): a key already held answers
    /// [`StoreError::Replayed`] and stores nothing; the key is remembered in
    /// the transaction that commits the runs (`group.rs`).
    pub async fn accept_once(
        &self,
        runs: &[NewRun],
        replay: Option<&crate::ReplayKey>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        use crate::group::{Group, Job, Row, Sent, insert_one};
        let received_at = to_ms(now);
        let rows = runs
            .iter()
            .map(|r| {
                Ok(Row {
                    run_id: r.run_id.as_str().to_owned(),
                    correlation_id: r.correlation_id.as_str().to_owned(),
                    source: r.event.source.as_str(),
                    service: r.event.service.clone(),
                    environment: r.event.environment.as_str().to_owned(),
                    fingerprint: r.event.fingerprint.as_str().to_owned(),
                    event_json: json(&r.event)?,
                    submitted_by: r.submitted_by.clone(),
                    received_at,
                })
            })
            .collect::<Result<Vec<Row>, StoreError>>()?;
        let n = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        let group = self
            .group
            .get_or_init(|| Group::start(self.write.clone(), self.health.clone()));
        let job = Job {
            rows,
            replay: replay.cloned(),
            now_ms: received_at,
        };
        match group.accept(job).await {
            Sent::Done(r) => r?,
            // Started on a runtime that has ended: commit here.
            Sent::Stopped(job) => insert_one(&self.write, &self.health, &job).await?,
        }
        self.backlog_cache
            .accepted_since
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The backlog for load shedding at the edge: counted at most every
    /// [`BACKLOG_CACHE_MS`], plus what this process accepted since (so a
    /// burst sees itself). Approximate by what other replicas accepted and
    /// workers decided within one period; [`Store::backlog`] is exact.
    pub async fn backlog_estimate(&self) -> Result<i64, StoreError> {
        use std::sync::atomic::Ordering;
        let fresh = self
            .backlog_cache
            .counted
            .lock()
            .ok()
            .and_then(|c| *c)
            .filter(|(at, _)| at.elapsed() < std::time::Duration::from_millis(BACKLOG_CACHE_MS));
        if let Some((_, n)) = fresh {
            return Ok(n.saturating_add(self.backlog_cache.accepted_since.load(Ordering::Relaxed)));
        }
        // Reset before counting: what commits during the count is in it or after it.
        self.backlog_cache
            .accepted_since
            .store(0, Ordering::Relaxed);
        let n = self.backlog().await?;
        if let Ok(mut c) = self.backlog_cache.counted.lock() {
            *c = Some((std::time::Instant::now(), n));
        }
        Ok(n)
    }

    /// Runs accepted but not yet decided (the processing backlog).
    pub async fn backlog(&self) -> Result<i64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE status IN ('pending', 'classifying')",
        )
        .fetch_one(&self.read)
        .await?;
        Ok(n)
    }

    /// After a restart of the only process using a SQLite file: every run it
    /// had claimed goes back to pending at once. (On PostgreSQL other replicas
    /// may hold live claims; theirs are taken over only when their lease
    /// expires, by [`Store::claim_next`].)
    pub async fn requeue_interrupted(&self) -> Result<u64, StoreError> {
        if self.backend.shared() {
            return Ok(0);
        }
        let r = sqlx::query(
            "UPDATE runs SET status = 'pending', claimed_by = NULL, lease_until = NULL \
             WHERE status = 'classifying'",
        )
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected())
    }

    /// Claims the oldest run that is pending, or claimed under a lease that
    /// expired (its worker died), for `owner` until `now + lease`.
    pub async fn claim_next(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Option<StoredRun>, StoreError> {
        Ok(self.claim_batch(owner, now, lease, 1).await?.pop())
    }

    /// Claims up to `limit` runs at once (one statement, one commit), oldest
    /// first: those pending, or claimed under a lease that expired (their
    /// worker died), for `owner` until `now + lease`. On PostgreSQL concurrent
    /// replicas skip each other's locked rows instead of queueing behind them.
    pub async fn claim_batch(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: i64,
    ) -> Result<Vec<StoredRun>, StoreError> {
        // Two index searches (`runs_status`: status, seq), never one `OR`:
        // with an `OR` SQLite gathers every pending run and sorts them, and
        // each claim cost O(backlog) on the writer (8 ms at 48,000 pending
        // runs, against 0.07 ms; bench/README.md, session of 2026-12-07).
        let sql = match self.backend {
            Backend::Sqlite => CLAIM_SQLITE,
            Backend::Postgres => {
                "WITH p AS (SELECT seq FROM runs WHERE status = 'pending' ORDER BY seq LIMIT $4 \
                   FOR UPDATE SKIP LOCKED), \
                 e AS (SELECT seq FROM runs WHERE status = 'classifying' AND lease_until <= $3 \
                   ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 UPDATE runs SET status = 'classifying', claimed_by = $1, lease_until = $2 WHERE seq IN \
                 (SELECT seq FROM (SELECT seq FROM p UNION ALL SELECT seq FROM e) u ORDER BY seq LIMIT $4) \
                 RETURNING *"
            }
        };
        let now_ms = to_ms(now);
        let rows = sqlx::query(sql)
            .bind(owner)
            .bind(now_ms.saturating_add(lease.num_milliseconds()))
            .bind(now_ms)
            .bind(limit.clamp(1, LIST_ROWS_MAX))
            .fetch_all(&self.write)
            .await?;
        // RETURNING has no order: acceptance order is `seq`.
        let mut runs = rows
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("seq")?, run_from_row(r)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        runs.sort_by_key(|(seq, _)| *seq);
        Ok(runs.into_iter().map(|(_, r)| r).collect())
    }

    /// Puts a claimed run back in the queue (after a failure mid-processing).
    pub async fn release(&self, run_id: &RunId) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runs SET status = 'pending', claimed_by = NULL, lease_until = NULL \
             WHERE run_id = $1 AND status = 'classifying'",
        )
        .bind(run_id.as_str())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// The suppression window stored for a fingerprint, if any (a read-only
    /// pre-check that saves a model call; `decide` re-checks authoritatively).
    pub async fn dedup_entry(
        &self,
        fingerprint: &tg_model::Fingerprint,
    ) -> Result<Option<DedupEntry>, StoreError> {
        Ok(self
            .dedup_entries(&[fingerprint])
            .await?
            .remove(fingerprint))
    }

    /// [`Store::dedup_entry`] of several fingerprints in one read (at most
    /// [`crate::WAVE_RUNS_MAX`]): a wave's pre-check.
    pub async fn dedup_entries(
        &self,
        fingerprints: &[&tg_model::Fingerprint],
    ) -> Result<std::collections::BTreeMap<tg_model::Fingerprint, DedupEntry>, StoreError> {
        let mut out = std::collections::BTreeMap::new();
        for chunk in fingerprints.chunks(crate::WAVE_RUNS_MAX) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT fingerprint, first_run_id, opened_at, expires_at, impact, resolved, paged_at, \
                 ticket_run, origins FROM dedup WHERE fingerprint IN ({})",
                params.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for fp in chunk {
                q = q.bind(fp.as_str());
            }
            for r in q.fetch_all(&self.read).await? {
                let fp = tg_model::Fingerprint(r.try_get("fingerprint")?);
                let entry = dedup_from_row(&fp, &r)?;
                out.insert(fp, entry);
            }
        }
        Ok(out)
    }

    /// Runs whose decision is committed but which are not yet audited, oldest first.
    pub async fn decided_runs(&self) -> Result<Vec<RunId>, StoreError> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT run_id FROM runs WHERE status = 'decided' ORDER BY seq")
                .fetch_all(&self.read)
                .await?;
        Ok(ids.into_iter().map(RunId).collect())
    }

    /// Runs decided at or before `before` that no action keeps open: their
    /// audit record is all that is left to write (oldest first, at most `limit`).
    pub async fn stale_decided(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<RunId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT run_id FROM runs r WHERE status = 'decided' AND decided_at <= $1 \
             AND NOT EXISTS (SELECT 1 FROM actions a WHERE a.run_id = r.run_id AND a.status = 'pending') \
             ORDER BY seq LIMIT $2",
        )
        .bind(to_ms(before))
        .bind(limit.clamp(1, LIST_ROWS_MAX))
        .fetch_all(&self.read)
        .await?;
        Ok(ids.into_iter().map(RunId).collect())
    }

    /// Decides one run in its own wave: `step` gets the state the run's
    /// `reads` name and returns the output to persist; the run moves from
    /// `classifying` to `decided` with its classification and decision
    /// (tests and tools; the worker decides whole waves, `crate::wave`).
    pub async fn decide(
        &self,
        run_id: &RunId,
        reads: &tg_engine::Reads,
        classification: &serde_json::Value,
        now: DateTime<Utc>,
        step: impl FnOnce(&StepState) -> StepOutput,
    ) -> Result<StepOutput, StoreError> {
        let mut wave = self.begin_wave(&[(run_id, reads)], now).await?;
        if !wave.claimable(run_id) {
            return Err(match self.get_run(run_id).await? {
                None => StoreError::NotFound(run_id.to_string()),
                Some(r) => StoreError::WrongState {
                    run_id: run_id.to_string(),
                    status: r.status.as_str().to_owned(),
                    expected: "classifying",
                },
            });
        }
        let state = wave.state().load(reads);
        let out = step(&state);
        wave.state().apply(&out.effects);
        // Nothing is sealed here: the run is audited when it completes.
        wave.apply_unsealed(run_id, classification, &out)?;
        wave.commit().await?;
        Ok(out)
    }
}

/// Seals a run's audit record as chain entry `seq` after `prev` and inserts
/// it (inside the caller's transaction, which holds the writer).
async fn seal_run_record(
    tx: &mut Tx,
    record: &mut AuditRecord,
    seq: i64,
    prev: Sha256Hex,
) -> Result<(), StoreError> {
    record.seal(u64::try_from(seq).unwrap_or(0), prev);
    insert_row(
        tx,
        seq,
        record.run_id.as_str(),
        &record.hash,
        &json(record)?,
        "run",
        &RowMeta::of_run(record),
    )
    .await
}

/// `($1, .., $cols), ($cols+1, ..), ...` for a multi-row `INSERT` of `rows`
/// rows (both backends take `$N` parameters).
pub(crate) fn values_list(rows: usize, cols: usize) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|i| {
            let params: Vec<String> = (1..=cols).map(|c| format!("${}", i * cols + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    tuples.join(", ")
}

impl Store {
    /// Actions of a run that are waiting to be delivered.
    pub async fn pending_actions(&self, run_id: &RunId) -> Result<Vec<StoredAction>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM actions WHERE run_id = $1 AND status = 'pending' ORDER BY created_at, kind",
        )
        .bind(run_id.as_str())
        .fetch_all(&self.write)
        .await?;
        rows.iter().map(action_from_row).collect()
    }

    /// Every planned action of a run.
    pub async fn actions(&self, run_id: &RunId) -> Result<Vec<StoredAction>, StoreError> {
        let rows = sqlx::query("SELECT * FROM actions WHERE run_id = $1 ORDER BY kind")
            .bind(run_id.as_str())
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(action_from_row).collect()
    }

    /// Stores what delivering an action produced.
    pub async fn record_action_result(
        &self,
        run_id: &RunId,
        kind: ActionKind,
        result: &ActionResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE actions SET status = $1, result_json = $2, updated_at = $3 WHERE run_id = $4 AND kind = $5",
        )
        .bind(action_status_str(result.status))
        .bind(json(result)?)
        .bind(to_ms(now))
        .bind(run_id.as_str())
        .bind(kind.as_str())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Seals `record` onto the chain and completes its run, in one transaction.
    /// Returns the sealed record. A run already completed is an error, so no run
    /// is ever audited twice.
    pub async fn complete(
        &self,
        mut record: AuditRecord,
        now: DateTime<Utc>,
    ) -> Result<AuditRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM runs WHERE run_id = $1")
                .bind(record.run_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if status.as_deref() != Some("decided") {
            return Err(StoreError::WrongState {
                run_id: record.run_id.to_string(),
                status: status.unwrap_or_else(|| "missing".into()),
                expected: "decided",
            });
        }
        // INVARIANT: the one audit record carries final action results.
        let pending: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM actions WHERE run_id = $1 AND status = 'pending'",
        )
        .bind(record.run_id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        if pending > 0 {
            return Err(StoreError::WrongState {
                run_id: record.run_id.to_string(),
                status: format!("decided with {pending} action(s) pending"),
                expected: "decided with every action delivered or dead",
            });
        }
        let (seq, prev) = chain_next(&mut tx).await?;
        seal_run_record(&mut tx, &mut record, seq, prev).await?;
        sqlx::query(
            "UPDATE runs SET status = 'completed', completed_at = $1, audit_seq = $2, audit_hash = $3 \
             WHERE run_id = $4",
        )
        .bind(to_ms(now))
        .bind(seq)
        .bind(record.hash.as_str())
        .bind(record.run_id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Chain records (runs' and steps') with `seq` greater than `after`, in
    /// chain order (at most `limit`).
    pub async fn audit_after(
        &self,
        after: u64,
        limit: i64,
    ) -> Result<Vec<ChainRecord>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT record_json FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(limit.clamp(1, LIST_ROWS_MAX))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|s| serde_json::from_str(s).map_err(corrupt("audit record")))
            .collect()
    }

    /// The raw stored audit lines in chain order, for verification.
    pub async fn audit_lines(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT record_json FROM audit ORDER BY seq")
                .fetch_all(&self.read)
                .await?,
        )
    }

    pub async fn get_run(&self, run_id: &RunId) -> Result<Option<StoredRun>, StoreError> {
        let row = sqlx::query("SELECT * FROM runs WHERE run_id = $1")
            .bind(run_id.as_str())
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| run_from_row(&r)).transpose()
    }

    /// Runs in acceptance order after position `after` (its `seq`), at most
    /// `limit`: for comparing two runs of the same scenario.
    pub async fn runs_in_order(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, StoredRun)>, StoreError> {
        let rows = sqlx::query("SELECT * FROM runs WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(limit.clamp(1, LIST_ROWS_MAX))
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("seq")?, run_from_row(r)?)))
            .collect()
    }

    /// The audit record of a run, once completed.
    pub async fn audit_of(&self, run_id: &RunId) -> Result<Option<AuditRecord>, StoreError> {
        let s: Option<String> =
            sqlx::query_scalar("SELECT record_json FROM audit WHERE run_id = $1 AND kind = 'run'")
                .bind(run_id.as_str())
                .fetch_optional(&self.read)
                .await?;
        s.map(|s| serde_json::from_str(&s).map_err(corrupt("audit record")))
            .transpose()
    }

    /// Runs in the store, any status.
    pub async fn count_runs(&self) -> Result<i64, StoreError> {
        Ok(self.count_by_status().await?.iter().map(|(_, n)| n).sum())
    }

    /// Runs counted by status (for readiness and the demo).
    pub async fn count_by_status(&self) -> Result<Vec<(RunStatus, i64)>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
            .fetch_all(&self.read)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let s: String = r.try_get("status")?;
            if let Some(st) = RunStatus::parse(&s) {
                out.push((st, r.try_get("n")?));
            }
        }
        Ok(out)
    }

    /// Runs not yet completed, by stage: reads those runs' entries of the
    /// `runs_status` index only, not the whole table (the simulator asks
    /// after every time step).
    pub async fn open_runs(&self) -> Result<OpenRuns, StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM runs \
             WHERE status IN ('pending', 'classifying', 'decided') GROUP BY status",
        )
        .fetch_all(&self.read)
        .await?;
        let mut out = OpenRuns::default();
        for r in rows {
            let n: i64 = r.try_get("n")?;
            match RunStatus::parse(&r.try_get::<String, _>("status")?) {
                Some(RunStatus::Pending) => out.pending = n,
                Some(RunStatus::Classifying) => out.classifying = n,
                Some(RunStatus::Decided) => out.decided = n,
                _ => {}
            }
        }
        Ok(out)
    }

    /// Open review items, oldest first.
    pub async fn review_queue(&self, limit: i64) -> Result<Vec<ReviewItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.id, a.run_id, a.kind, a.planned_json, a.created_at, r.decision_json \
             FROM actions a JOIN runs r ON r.run_id = a.run_id \
             WHERE a.review_state = 'open' ORDER BY a.created_at, a.run_id, a.kind LIMIT $1",
        )
        .bind(limit.clamp(1, LIST_ROWS_MAX))
        .fetch_all(&self.read)
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows {
            let kind_s: String = r.try_get("kind")?;
            let Some(kind) = parse_kind(&kind_s) else {
                continue;
            };
            let planned: tg_model::PlannedAction =
                serde_json::from_str(&r.try_get::<String, _>("planned_json")?)
                    .map_err(corrupt("planned action"))?;
            let decision: Option<tg_model::Decision> = r
                .try_get::<Option<String>, _>("decision_json")?
                .map(|s| serde_json::from_str(&s).map_err(corrupt("decision")))
                .transpose()?;
            let reason = decision
                .as_ref()
                .and_then(|d| d.get(kind))
                .map(|a| a.reason.clone())
                .unwrap_or_default();
            items.push(ReviewItem {
                id: r.try_get("id")?,
                run_id: planned.run_id.clone(),
                action: kind,
                service: planned.service.clone(),
                team: planned.team.clone(),
                environment: planned.environment.as_str().to_owned(),
                title: planned.title.clone(),
                reason,
                created_at: from_ms(r.try_get("created_at")?),
                planned: planned.clone(),
            });
        }
        Ok(items)
    }

    /// Runs that a decision sent to review although nothing was planned (rejected
    /// model answers): listed in the review queue as run-level items.
    pub async fn runs_needing_review(&self, limit: i64) -> Result<Vec<StoredRun>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM runs WHERE review_state = 'open' ORDER BY seq LIMIT $1")
                .bind(limit.clamp(1, LIST_ROWS_MAX))
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(run_from_row).collect()
    }
}

pub(crate) fn dedup_from_row(
    fingerprint: &tg_model::Fingerprint,
    r: &sqlx::any::AnyRow,
) -> Result<DedupEntry, StoreError> {
    let impact: String = r.try_get("impact")?;
    Ok(DedupEntry {
        fingerprint: fingerprint.clone(),
        first_run_id: RunId(r.try_get("first_run_id")?),
        opened_at: from_ms(r.try_get("opened_at")?),
        expires_at: from_ms(r.try_get("expires_at")?),
        // An unreadable level is `unknown`, the lowest: any known level then escalates (fail open to acting, never to silence).
        impact: serde_json::from_value(serde_json::Value::String(impact))
            .unwrap_or(tg_model::ImpactLevel::Unknown),
        resolved: r.try_get::<i64, _>("resolved")? != 0,
        paged_at: r.try_get::<Option<i64>, _>("paged_at")?.map(from_ms),
        ticket_run: r.try_get::<Option<String>, _>("ticket_run")?.map(RunId),
        origins: serde_json::from_str(&r.try_get::<String, _>("origins")?)
            .map_err(corrupt("dedup origins"))?,
    })
}

/// A `buckets` row selected as `key, tokens_milli, updated_at`.
pub(crate) fn keyed_bucket(r: &sqlx::any::AnyRow) -> Result<(String, BucketState), StoreError> {
    Ok((
        r.try_get("key")?,
        BucketState {
            tokens_milli: r.try_get("tokens_milli")?,
            updated_at: from_ms(r.try_get("updated_at")?),
        },
    ))
}

pub(crate) fn impact_str(level: tg_model::ImpactLevel) -> &'static str {
    use tg_model::ImpactLevel as L;
    match level {
        L::Unknown => "unknown",
        L::None => "none",
        L::Low => "low",
        L::Medium => "medium",
        L::High => "high",
        L::Critical => "critical",
    }
}

pub(crate) fn action_status_str(s: ActionStatus) -> &'static str {
    match s {
        ActionStatus::NotExecuted => "not_executed",
        ActionStatus::Pending => "pending",
        ActionStatus::Delivered => "delivered",
        ActionStatus::Failed => "failed",
    }
}

fn parse_action_status(s: &str) -> ActionStatus {
    match s {
        "pending" => ActionStatus::Pending,
        "delivered" => ActionStatus::Delivered,
        // A dead letter failed for good (until an operator retries it).
        "failed" | "dead" => ActionStatus::Failed,
        _ => ActionStatus::NotExecuted,
    }
}

fn run_from_row(r: &sqlx::any::AnyRow) -> Result<StoredRun, StoreError> {
    let status_s: String = r.try_get("status")?;
    let opt_ms = |col: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(r.try_get::<Option<i64>, _>(col)?.map(from_ms))
    };
    Ok(StoredRun {
        run_id: RunId(r.try_get("run_id")?),
        correlation_id: tg_model::CorrelationId(r.try_get("correlation_id")?),
        status: RunStatus::parse(&status_s).unwrap_or(RunStatus::Pending),
        event: serde_json::from_str(&r.try_get::<String, _>("event_json")?)
            .map_err(corrupt("event"))?,
        submitted_by: r.try_get("submitted_by")?,
        received_at: from_ms(r.try_get("received_at")?),
        classification: r
            .try_get::<Option<String>, _>("classification_json")?
            .map(|s| serde_json::from_str(&s).map_err(corrupt("classification")))
            .transpose()?,
        classified_at: opt_ms("classified_at")?,
        decision: r
            .try_get::<Option<String>, _>("decision_json")?
            .map(|s| serde_json::from_str(&s).map_err(corrupt("decision")))
            .transpose()?,
        decided_at: opt_ms("decided_at")?,
        completed_at: opt_ms("completed_at")?,
        audit_seq: r
            .try_get::<Option<i64>, _>("audit_seq")?
            .and_then(|s| u64::try_from(s).ok()),
        audit_hash: r.try_get("audit_hash")?,
    })
}

pub(crate) fn action_from_row(r: &sqlx::any::AnyRow) -> Result<StoredAction, StoreError> {
    let kind_s: String = r.try_get("kind")?;
    let outcome_s: String = r.try_get("outcome")?;
    let status_s: String = r.try_get("status")?;
    Ok(StoredAction {
        run_id: RunId(r.try_get("run_id")?),
        kind: parse_kind(&kind_s).unwrap_or(ActionKind::Ticket),
        outcome: if outcome_s == "execute" {
            Outcome::Execute
        } else {
            Outcome::Review
        },
        status: parse_action_status(&status_s),
        planned: serde_json::from_str(&r.try_get::<String, _>("planned_json")?)
            .map_err(corrupt("planned action"))?,
        result: r
            .try_get::<Option<String>, _>("result_json")?
            .map(|s| serde_json::from_str(&s).map_err(corrupt("action result")))
            .transpose()?,
        review_state: r.try_get("review_state")?,
        id: r.try_get("id")?,
        dead: status_s == "dead",
        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
        next_attempt_at: r.try_get::<Option<i64>, _>("next_attempt_at")?.map(from_ms),
        last_error: r.try_get("last_error")?,
    })
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::parse(s).ok_or_else(|| format!("unknown run status {s:?}"))
    }
}
