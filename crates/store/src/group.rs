//! Group commit for accepting events: concurrent `accept` calls are written in
//! one transaction (one fsync on SQLite, one commit round trip on PostgreSQL)
//! instead of one each. Nothing waits on purpose: while a commit is in
//! flight, the calls that arrive queue up, and the next commit takes all of
//! them (up to [`GROUP_RUNS_MAX`]). Each call returns only after the
//! transaction holding its runs committed, so a `202` still means durable; a
//! failed commit fails every call in it, and none of their runs exists.

use std::sync::Arc;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;
use crate::health::HealthCell;
use crate::tx::WriteTx;

/// Calls waiting for the next commit at most; beyond it `accept` answers
/// [`StoreError::Busy`] at once (the server turns it into 503 + Retry-After).
pub const GROUP_QUEUE_MAX: usize = 4_096;
/// Runs written by one commit at most (the rest go in the next).
pub const GROUP_RUNS_MAX: usize = 2_048;

/// One run, serialized by the caller (the costly part runs in parallel).
#[derive(Debug)]
pub(crate) struct Row {
    pub run_id: String,
    pub correlation_id: String,
    pub source: &'static str,
    pub service: String,
    pub environment: String,
    pub fingerprint: String,
    pub event_json: String,
    pub submitted_by: Option<String>,
    pub received_at: i64,
}

struct Job {
    rows: Vec<Row>,
    done: oneshot::Sender<Result<(), String>>,
}

/// What became of a call.
pub(crate) enum Sent {
    Done(Result<(), StoreError>),
    Stopped(Vec<Row>),
}

/// The handle `Store` keeps; the committing task ends when every handle is gone.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("rows", &self.rows.len())
            .finish()
    }
}

impl Group {
    /// Starts the committing task on the current runtime.
    pub(crate) fn start(pool: AnyPool, health: Arc<HealthCell>) -> Group {
        let (tx, rx) = mpsc::channel(GROUP_QUEUE_MAX);
        tokio::spawn(commit_loop(pool, health, rx));
        Group { tx }
    }

    /// Commits `rows` with whatever else is queued; returns once committed.
    /// `Stopped` gives the rows back when the task is gone (its runtime
    /// ended): the caller commits them itself.
    pub(crate) async fn accept(&self, rows: Vec<Row>) -> Sent {
        let (done, wait) = oneshot::channel();
        match self.tx.try_send(Job { rows, done }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Sent::Done(Err(StoreError::Busy(format!(
                    "{GROUP_QUEUE_MAX} accepts are waiting for a commit"
                ))));
            }
            Err(mpsc::error::TrySendError::Closed(job)) => return Sent::Stopped(job.rows),
        }
        match wait.await {
            Ok(r) => Sent::Done(r.map_err(StoreError::Commit)),
            // The task died with the job: whether it committed is unknown, so
            // the caller must not retry it as new; it answers as unavailable.
            Err(_) => Sent::Done(Err(StoreError::Busy(
                "the commit task stopped during the commit".into(),
            ))),
        }
    }
}

async fn commit_loop(pool: AnyPool, health: Arc<HealthCell>, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut runs = first.rows.len();
        let mut jobs = vec![first];
        while runs < GROUP_RUNS_MAX {
            match rx.try_recv() {
                Ok(job) => {
                    runs += job.rows.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("triage_gate_accept_group_runs").record(runs as f64);
        let result = insert_rows(&pool, &health, jobs.iter().flat_map(|j| &j.rows))
            .await
            .map_err(|e| e.to_string());
        for job in jobs {
            // A caller that gave up (its request timed out) is not waiting.
            let _ = job.done.send(result.clone());
        }
    }
}

/// Rows per `INSERT` statement (10 parameters each: far below SQLite's and
/// PostgreSQL's parameter limits). One statement per chunk instead of one
/// per row: each statement is a hand-off to the connection's thread.
const INSERT_CHUNK_ROWS: usize = 64;
/// Parameters of one row of [`insert_rows`].
const ROW_PARAMS: usize = 10;

/// Inserts `rows` in one transaction. A statement that fails because the
/// store cannot write marks it failing, like a failed commit: the gate then
/// refuses events until a commit goes through again.
pub(crate) async fn insert_rows<'a>(
    pool: &AnyPool,
    health: &Arc<HealthCell>,
    rows: impl Iterator<Item = &'a Row>,
) -> Result<(), StoreError> {
    let rows: Vec<&Row> = rows.collect();
    let mut tx = WriteTx::begin(pool, health).await?;
    for chunk in rows.chunks(INSERT_CHUNK_ROWS) {
        let sql = insert_sql(chunk.len());
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
                .bind(r.run_id.as_str())
                .bind(r.correlation_id.as_str())
                .bind("pending")
                .bind(r.source)
                .bind(r.service.as_str())
                .bind(r.environment.as_str())
                .bind(r.fingerprint.as_str())
                .bind(r.event_json.as_str())
                .bind(r.submitted_by.as_deref())
                .bind(r.received_at);
        }
        if let Err(e) = q.execute(&mut *tx).await {
            if let Some(cause) = crate::health::sqlx_storage_failure(&e) {
                health.commit_failed(&cause);
            }
            return Err(e.into());
        }
    }
    tx.commit().await
}

/// `INSERT INTO runs ... VALUES (...), (...)` for `n` rows.
fn insert_sql(n: usize) -> String {
    format!(
        "INSERT INTO runs (run_id, correlation_id, status, source, service, environment, \
         fingerprint, event_json, submitted_by, received_at) VALUES {}",
        crate::db::values_list(n, ROW_PARAMS)
    )
}

/// Shared so that every clone of a `Store` uses one committing task.
pub(crate) type GroupCell = Arc<std::sync::OnceLock<Group>>;
