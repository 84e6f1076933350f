//! Group commit for accepting events: concurrent `accept` calls are written in
//! one transaction (one fsync on SQLite, one commit round trip on PostgreSQL)
//! instead of one each. Nothing waits on purpose: while a commit is in
//! flight, the calls that arrive queue up, and the next commit takes all of
//! them (up to [`GROUP_RUNS_MAX`]). Each call returns only after the
//! transaction holding its runs committed, so a `202` still means durable; a
//! failed commit fails every call in it, and none of their runs exists.
//!
//! A call may carry a [`ReplayKey`] (a signed delivery, an SNS message): the
//! key is inserted in the same transaction as the call's runs, and a key
//! already held inside its window makes that call [`StoreError::Replayed`]
//! with none of its runs written, the others unaffected. So "accepted once
//! within the window" holds across restarts and replicas (the unique key
//! settles a race between two replicas), and a delivery refused for any other
//! reason was not remembered: the sender's retry is accepted.

use std::sync::Arc;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use crate::health::HealthCell;
use crate::tx::WriteTx;
use crate::{ReplayKey, StoreError};

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

/// One call's rows and replay key.
pub(crate) struct Job {
    pub rows: Vec<Row>,
    pub replay: Option<ReplayKey>,
    /// When the call was made (the replay window is checked against it).
    pub now_ms: i64,
}

/// How one call ended.
#[derive(Debug, Clone)]
enum JobEnd {
    Committed,
    Replayed,
    Failed(String),
}

struct Queued {
    job: Job,
    done: oneshot::Sender<JobEnd>,
}

/// What became of a call.
pub(crate) enum Sent {
    Done(Result<(), StoreError>),
    Stopped(Job),
}

/// The handle `Store` keeps; the committing task ends when every handle is gone.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    tx: mpsc::Sender<Queued>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued")
            .field("rows", &self.job.rows.len())
            .field("replay", &self.job.replay.is_some())
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

    /// Commits `job` with whatever else is queued; returns once committed.
    /// `Stopped` gives the job back when the task is gone (its runtime
    /// ended): the caller commits it itself.
    pub(crate) async fn accept(&self, job: Job) -> Sent {
        let (done, wait) = oneshot::channel();
        match self.tx.try_send(Queued { job, done }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Sent::Done(Err(StoreError::Busy(format!(
                    "{GROUP_QUEUE_MAX} accepts are waiting for a commit"
                ))));
            }
            Err(mpsc::error::TrySendError::Closed(q)) => return Sent::Stopped(q.job),
        }
        match wait.await {
            Ok(JobEnd::Committed) => Sent::Done(Ok(())),
            Ok(JobEnd::Replayed) => Sent::Done(Err(StoreError::Replayed)),
            Ok(JobEnd::Failed(e)) => Sent::Done(Err(StoreError::Commit(e))),
            // The task died with the job: whether it committed is unknown, so
            // the caller must not retry it as new; it answers as unavailable.
            Err(_) => Sent::Done(Err(StoreError::Busy(
                "the commit task stopped during the commit".into(),
            ))),
        }
    }
}

async fn commit_loop(pool: AnyPool, health: Arc<HealthCell>, mut rx: mpsc::Receiver<Queued>) {
    while let Some(first) = rx.recv().await {
        let mut runs = first.job.rows.len();
        let mut queued = vec![first];
        while runs < GROUP_RUNS_MAX {
            match rx.try_recv() {
                Ok(q) => {
                    runs += q.job.rows.len();
                    queued.push(q);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("triage_gate_accept_group_runs").record(runs as f64);
        let jobs: Vec<&Job> = queued.iter().map(|q| &q.job).collect();
        let ends: Vec<JobEnd> = match insert_jobs(&pool, &health, &jobs).await {
            Ok(replayed) => replayed
                .into_iter()
                .map(|r| {
                    if r {
                        JobEnd::Replayed
                    } else {
                        JobEnd::Committed
                    }
                })
                .collect(),
            Err(e) => vec![JobEnd::Failed(e.to_string()); queued.len()],
        };
        for (q, end) in queued.into_iter().zip(ends) {
            // A caller that gave up (its request timed out) is not waiting.
            let _ = q.done.send(end);
        }
    }
}

/// Commits one job alone (the committing task is gone).
pub(crate) async fn insert_one(
    pool: &AnyPool,
    health: &Arc<HealthCell>,
    job: &Job,
) -> Result<(), StoreError> {
    match insert_jobs(pool, health, &[job]).await?.first() {
        Some(true) => Err(StoreError::Replayed),
        _ => Ok(()),
    }
}

/// Records `key` unless it is held inside its window: whether it was new.
async fn remember(tx: &mut WriteTx, key: &ReplayKey, now_ms: i64) -> Result<bool, sqlx::Error> {
    let until_ms = key.until.saturating_mul(1_000);
    let done = sqlx::query(
        "INSERT INTO delivery_replay (key, until_ms) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET until_ms = excluded.until_ms \
         WHERE delivery_replay.until_ms < $3",
    )
    .bind(key.key.as_str())
    .bind(until_ms)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Rows per `INSERT` statement (10 parameters each: far below SQLite's and
/// PostgreSQL's parameter limits). One statement per chunk instead of one
/// per row: each statement is a hand-off to the connection's thread.
const INSERT_CHUNK_ROWS: usize = 64;
/// Parameters of one row of [`insert_rows`].
const ROW_PARAMS: usize = 10;

/// Inserts the jobs' rows in one transaction, except those of a job whose
/// replay key is held: `Ok` tells, per job, whether it was a replay. A
/// statement that fails because the store cannot write marks it failing,
/// like a failed commit: the gate then refuses events until a commit goes
/// through again.
async fn insert_jobs(
    pool: &AnyPool,
    health: &Arc<HealthCell>,
    jobs: &[&Job],
) -> Result<Vec<bool>, StoreError> {
    let mut tx = WriteTx::begin(pool, health).await?;
    let storage = |e: sqlx::Error| {
        if let Some(cause) = crate::health::sqlx_storage_failure(&e) {
            health.commit_failed(&cause);
        }
        StoreError::from(e)
    };
    let mut replayed = Vec::with_capacity(jobs.len());
    for job in jobs {
        let fresh = match &job.replay {
            Some(key) => remember(&mut tx, key, job.now_ms).await.map_err(storage)?,
            None => true,
        };
        replayed.push(!fresh);
    }
    let rows: Vec<&Row> = jobs
        .iter()
        .zip(&replayed)
        .filter(|(_, r)| !**r)
        .flat_map(|(j, _)| &j.rows)
        .collect();
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
        q.execute(&mut *tx).await.map_err(storage)?;
    }
    tx.commit().await?;
    Ok(replayed)
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
