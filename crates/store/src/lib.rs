//! Durable state behind one interface: accepted runs, decisions, planned actions,
//! storm-control state and the audit chain. SQLite is the zero-setup default.
//!
//! Invariants this crate keeps:
//! - an accepted run is committed before `accept` returns (the server answers 202 after);
//! - a decision, its planned actions and its storm-state effects commit together;
//! - a run's audit record and its `completed` status commit together, so a run is
//!   audited exactly once, and the chain is extended by one writer at a time.
//!
//! This crate must never decide anything: it stores what the engine decided.

mod audit;
mod autonomy;
mod console;
mod db;
mod evidence;
mod external;
mod group;
mod health;
mod outbox;
mod review;
mod storm;
pub mod testing;
mod tx;
mod wave;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tg_model::{ActionKind, ActionResult, NormalizedEvent, Outcome, PlannedAction, RunId};

pub use audit::{AUDIT_QUERY_ROWS_MAX, AuditQuery, ChainRow, SINK_ERROR_CHARS_MAX, SinkCursor};
pub use autonomy::{AutonomyCap, CAP_REASON_CHARS_MAX, CAPS_MAX, HOLD_SCAN_MAX};
pub use console::{
    CHART_BUCKET_MS, CHART_BUCKETS_MAX, ConsoleCounts, FEED_ROWS_MAX, FeedRun, MinuteCounts,
};
pub use db::{Backend, LIST_ROWS_MAX, Store, StoreOptions};
pub use evidence::{KindEvidence, ServiceEvidence};
pub use external::{EXTERNAL_CANDIDATES_MAX, ExternalIncident, ExternalRecorded};
pub use group::{GROUP_QUEUE_MAX, GROUP_RUNS_MAX};
pub use health::{CAUSE_CHARS_MAX, Health, PROBE_INTERVAL_MS};
pub use outbox::{
    ATTEMPT_ERROR_CHARS_MAX, AttemptOutcome, AttemptRow, Claimed, DeliveryEnd, OutboxCounts,
    OutboxTarget, Progress, RETRIED_BY_CHARS_MAX, RetryError, RetryRow, TargetBacklog,
};
pub use review::{
    DraftEdits, EXPIRE_BATCH_MAX, REVIEW_REASON_CHARS_MAX, ReviewError, Reviewed, Verdict,
};
pub use storm::{HELD_RUNS_MAX, HeldRow, TRANSITIONS_LIST_MAX, TransitionRow};
pub use wave::{PLANNED_ACTIONS_MAX, ROWS_PER_STATEMENT_MAX, WAVE_RUNS_MAX, Wave};

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored json for {what} is invalid: {source}")]
    Corrupt {
        what: String,
        source: serde_json::Error,
    },
    #[error("the store is busy: {0}")]
    Busy(String),
    #[error("the commit failed: {0}")]
    Commit(String),
    #[error("store configuration: {0}")]
    Config(String),
    #[error("run {0} not found")]
    NotFound(String),
    #[error("this delivery was already accepted inside its replay window")]
    Replayed,
    #[error("run {run_id} is {status}, expected {expected}")]
    WrongState {
        run_id: String,
        status: String,
        expected: &'static str,
    },
}

/// Lifecycle of a run in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted, waiting for a worker.
    Pending,
    /// Claimed by a worker (reset to pending on restart).
    Classifying,
    /// Decision committed; actions being delivered.
    Decided,
    /// Audited; nothing left to do.
    Completed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Classifying => "classifying",
            RunStatus::Decided => "decided",
            RunStatus::Completed => "completed",
        }
    }

    fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "pending" => RunStatus::Pending,
            "classifying" => RunStatus::Classifying,
            "decided" => RunStatus::Decided,
            "completed" => RunStatus::Completed,
            _ => return None,
        })
    }
}

/// Runs not yet completed, by stage ([`Store::open_runs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenRuns {
    pub pending: i64,
    pub classifying: i64,
    pub decided: i64,
}

impl OpenRuns {
    /// Every run not yet completed.
    pub fn total(self) -> i64 {
        self.pending + self.classifying + self.decided
    }

    /// Runs not yet decided (waiting for or held by a worker).
    pub fn processing(self) -> i64 {
        self.pending + self.classifying
    }
}

/// A run to accept.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub run_id: RunId,
    pub correlation_id: tg_model::CorrelationId,
    pub event: NormalizedEvent,
    pub submitted_by: Option<String>,
}

/// A run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct StoredRun {
    pub run_id: RunId,
    pub correlation_id: tg_model::CorrelationId,
    pub status: RunStatus,
    pub event: NormalizedEvent,
    pub submitted_by: Option<String>,
    pub received_at: DateTime<Utc>,
    pub classification: Option<serde_json::Value>,
    pub classified_at: Option<DateTime<Utc>>,
    pub decision: Option<tg_model::Decision>,
    pub decided_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub audit_seq: Option<u64>,
    pub audit_hash: Option<String>,
}

/// A planned action as stored.
#[derive(Debug, Clone, Serialize)]
pub struct StoredAction {
    pub run_id: RunId,
    pub kind: ActionKind,
    pub outcome: Outcome,
    pub status: tg_model::ActionStatus,
    pub planned: PlannedAction,
    pub result: Option<ActionResult>,
    pub review_state: Option<String>,
    /// The outbox id: decision order, and the handle of `/v1/actions/{id}`.
    pub id: i64,
    /// A dead letter: no more automatic attempts (an operator may retry it).
    pub dead: bool,
    /// Attempts made against the current budget.
    pub attempts: u32,
    /// When the outbox next tries it (pending actions only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last failure, bounded and scrubbed.
    pub last_error: Option<String>,
}

/// An open review item: an action a human must approve or reject, with its run.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewItem {
    /// The draft's outbox id: `POST /v1/review/{id}/approve|reject`.
    pub id: i64,
    pub run_id: RunId,
    pub action: ActionKind,
    pub service: String,
    pub team: String,
    pub environment: String,
    pub title: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
    /// The drafted action as it would be carried out.
    pub planned: PlannedAction,
}

/// A delivery that may be accepted once until `until` (Unix seconds): a
/// signed webhook (its decoded MAC, timestamp and body digest) or an SNS
/// message (its topic and `MessageId`), hashed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayKey {
    pub key: String,
    pub until: i64,
}

pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

pub(crate) fn outcome_str(o: Outcome) -> &'static str {
    o.as_str()
}

pub(crate) fn parse_kind(s: &str) -> Option<ActionKind> {
    ActionKind::ALL.into_iter().find(|k| k.as_str() == s)
}
