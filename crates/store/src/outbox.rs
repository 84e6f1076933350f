//! The transactional outbox: `decide` commits planned actions with the decision
//! (`status = pending`); a delivery loop claims due actions here, one attempt per
//! claim, and records each attempt and its result.
//!
//! Claims are leases (`claimed_by`, `lease_until`): a delivery that dies leaves a
//! claim that expires (or is released on restart) and the action is delivered
//! again; targets are idempotent per action (ServiceNow `correlation_id`
//! lookup, PagerDuty `dedup_key`), so a second delivery finds the first.
//!
//! Order: per target, actions are claimed in `id` (decision) order, and a failed
//! action at the head of a target goes alone when it is due again (a probe), so
//! a target that comes back serves its backlog in decision order and a target
//! that is down sees one request per backoff, not one per queued action.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use tg_model::{
    ActionKind, ActionResult, AttemptStep, PlannedAction, ReplayStep, RunId, StepKind, StepRecord,
};

use crate::db::action_from_row;
use crate::{Store, StoreError, StoredAction, from_ms, to_ms};

/// Characters of a target's error text kept per attempt and as `last_error`.
pub const ATTEMPT_ERROR_CHARS_MAX: usize = 500;

/// The concurrency class of an action: the system it is delivered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxTarget {
    Servicenow,
    Pagerduty,
    /// A major incident: the ServiceNow major-incident proposal, then the chat bridge.
    Bridge,
}

impl OutboxTarget {
    pub const ALL: [OutboxTarget; 3] = [
        OutboxTarget::Servicenow,
        OutboxTarget::Pagerduty,
        OutboxTarget::Bridge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutboxTarget::Servicenow => "servicenow",
            OutboxTarget::Pagerduty => "pagerduty",
            OutboxTarget::Bridge => "bridge",
        }
    }

    /// The lane of an action kind. INVARIANT: the lane's system is one of
    /// [`ActionKind::target`]'s (`outbox::tests::each_lane_is_a_system_of_its_kinds_target`).
    pub fn of(kind: ActionKind) -> OutboxTarget {
        match kind {
            ActionKind::Ticket => OutboxTarget::Servicenow,
            ActionKind::Page => OutboxTarget::Pagerduty,
            ActionKind::Mim => OutboxTarget::Bridge,
        }
    }
}

/// The outbox queue (`actions.target` column) of an action kind: a delivery
/// lane, not the system acted on; that is [`ActionKind::target`], which
/// attempt records name.
pub(crate) fn target_of(kind: ActionKind) -> &'static str {
    OutboxTarget::of(kind).as_str()
}

/// An action claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub action: StoredAction,
    /// Attempts against the current budget, this one included (1-based).
    pub attempt: u32,
    /// Number of this attempt in the action's history (`action_attempts.attempt`).
    pub attempt_no: i64,
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Delivered,
    Retryable,
    Throttled,
    Permanent,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retryable => "retryable",
            AttemptOutcome::Throttled => "throttled",
            AttemptOutcome::Permanent => "permanent",
        }
    }
}

/// What the action becomes after an attempt.
#[derive(Debug, Clone)]
pub enum DeliveryEnd {
    Delivered(ActionResult),
    /// Try again at `at` (`wait_ms` after now: backoff or the target's Retry-After).
    Retry {
        at: DateTime<Utc>,
        wait_ms: u64,
    },
    /// Attempts ran out or the target refused it for good.
    Dead(ActionResult),
}

/// The run's state after an attempt was recorded.
#[derive(Debug, Clone)]
pub struct Progress {
    pub run_id: RunId,
    /// The run is `decided` (not yet audited).
    pub run_decided: bool,
    /// The run's actions still `pending`.
    pub pending_left: i64,
    /// False when the claim had been lost (lease expired and taken): the result
    /// was not applied; the other delivery owns the action.
    pub recorded: bool,
}

/// The outbox backlog.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutboxCounts {
    pub pending: i64,
    pub dead: i64,
    /// Pending actions held by a live claim (being delivered).
    pub in_flight: i64,
    /// Per target, every target listed (zeros included).
    pub by_target: BTreeMap<String, TargetBacklog>,
    /// The earliest time at which the outbox can claim an action, over the
    /// targets with no probe in flight: the minimum of [`TargetBacklog::next_due`].
    pub next_due: Option<DateTime<Utc>>,
    /// When the oldest pending action was decided.
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// One target's share of the outbox backlog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetBacklog {
    /// Actions waiting for delivery (in flight included).
    pub pending: i64,
    /// Dead letters waiting for an operator.
    pub dead: i64,
    /// Pending actions held by a live claim (being delivered).
    pub in_flight: i64,
    /// When the target's head (its first unclaimed pending action in decision
    /// order) is due: the earliest time [`Store::claim_due`] claims
    /// anything for this target. `None` when nothing waits, or while a retried
    /// head is in flight (a probe goes alone; nothing is claimed until it ends).
    pub next_due: Option<DateTime<Utc>>,
    /// Attempts the head has made against its budget (0: not tried yet; above
    /// 0 the target is being probed by the head alone).
    pub head_attempts: u32,
    /// The head's last error (bounded, scrubbed), if it failed before.
    pub head_last_error: Option<String>,
    /// When the target's oldest pending action was decided.
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// One recorded attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub attempt: i64,
    pub claimed_by: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub retry_after_ms: Option<i64>,
}

/// Characters of an operator's label kept on a recorded retry.
pub const RETRIED_BY_CHARS_MAX: usize = 256;

/// One recorded operator retry of a dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct RetryRow {
    /// Attempts recorded before the retry: it sits after attempt `after_attempt`.
    pub after_attempt: i64,
    /// The spent budget the retry reset to 0.
    pub budget_spent: i64,
    /// The verified caller's label; `None` when inbound identity is disabled.
    pub retried_by: Option<String>,
    pub retried_at: DateTime<Utc>,
}

/// Why an operator retry was refused.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("action {0} not found")]
    NotFound(i64),
    #[error("action {id} is {status}; only a dead action can be retried")]
    NotDead { id: i64, status: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn cut(text: &str) -> String {
    text.chars().take(ATTEMPT_ERROR_CHARS_MAX).collect()
}

impl Store {
    /// After a restart of the only process using a SQLite file: claims of
    /// the previous process are released (its deliveries died with it) and
    /// its unfinished attempts marked `interrupted`. A released action is due
    /// again no earlier than `now + grace`, so a request the dead process had
    /// in flight lands (or fails) at the target before the idempotent retry
    /// looks it up. On PostgreSQL other replicas hold live claims: nothing is
    /// released here; a dead replica's claims are taken over when their lease
    /// expires ([`Store::claim_due`]), the lease standing in for the grace.
    pub async fn release_claims(
        &self,
        now: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> Result<u64, StoreError> {
        if self.backend.shared() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        interrupt_attempts(&mut tx, None, now, now + grace).await?;
        let r = sqlx::query(
            "UPDATE actions SET claimed_by = NULL, lease_until = NULL, \
             next_attempt_at = CASE WHEN COALESCE(next_attempt_at, 0) > $1 THEN next_attempt_at ELSE $1 END \
             WHERE claimed_by IS NOT NULL",
        )
        .bind(to_ms(now + grace))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }

    /// Claims up to `free` due actions of `target` for `owner`, in decision
    /// order: stops at the first action not yet due (so later ones do not
    /// overtake it) and at an action whose parent (the create an update or
    /// resolve acts on, `parent_key`) is still pending. A retried action is a
    /// probe that goes alone: it is claimed only when nothing else of the
    /// target is in flight, and while it is in flight nothing else of the
    /// target is claimed (a target that fails sees one request per backoff,
    /// never one per queued action).
    ///
    /// A parent is on the same target and earlier in decision order, so while
    /// it waits it is this target's head (what `outbox_counts` reports as due)
    /// or in flight.
    pub async fn claim_due(
        &self,
        owner: &str,
        target: OutboxTarget,
        free: usize,
        now: DateTime<Utc>,
        lease_ms: u64,
    ) -> Result<Vec<Claimed>, StoreError> {
        if free == 0 {
            return Ok(Vec::new());
        }
        let now_ms = to_ms(now);
        let lease_until = now_ms.saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX));
        let mut tx = self.begin_write().await?;
        // Live claims of this target; `attempts > 1` is a claimed retry: a probe.
        let held = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(CASE WHEN attempts > 1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS probes FROM actions \
             WHERE status = 'pending' AND target = $1 AND claimed_by IS NOT NULL AND lease_until > $2",
        )
        .bind(target.as_str())
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        let in_flight: i64 = held.try_get("n")?;
        let probes: i64 = held.try_get("probes")?;
        if probes > 0 {
            // INVARIANT: a probe goes alone.
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT * FROM actions WHERE status = 'pending' AND target = $1 \
             AND NOT (claimed_by IS NOT NULL AND lease_until > $2) ORDER BY id LIMIT $3",
        )
        .bind(target.as_str())
        .bind(now_ms)
        .bind(i64::try_from(free).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let action = action_from_row(row)?;
            let due: Option<i64> = row.try_get("next_attempt_at")?;
            let stale_claim: Option<String> = row.try_get("claimed_by")?;
            if due.is_some_and(|d| d > now_ms) {
                break;
            }
            let retried = action.attempts > 0;
            if retried && (in_flight > 0 || !out.is_empty()) {
                // A probe waits until it can go alone; later actions wait behind it.
                break;
            }
            if let Some(parent) = &action.planned.parent_key {
                // INVARIANT: an update or resolve is not delivered while the
                // create it acts on is pending (claimed together, it could
                // overtake it); it and the actions after it wait.
                let parent_pending: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM actions WHERE idempotency_key = $1 AND status = 'pending'",
                )
                .bind(parent)
                .fetch_optional(&mut *tx)
                .await?;
                if parent_pending.is_some() {
                    break;
                }
            }
            if stale_claim.is_some() {
                // The claim's lease expired: its holder died (a replica, or this
                // process before a restart). Its attempt ends as interrupted.
                interrupt_attempts(&mut tx, Some(action.id), now, now).await?;
            }
            sqlx::query(
                "UPDATE actions SET claimed_by = $1, lease_until = $2, attempts = attempts + 1, \
                 updated_at = $3 WHERE id = $4",
            )
            .bind(owner)
            .bind(lease_until)
            .bind(now_ms)
            .bind(action.id)
            .execute(&mut *tx)
            .await?;
            let attempt_no: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(attempt), 0) + 1 FROM action_attempts WHERE action_id = $1",
            )
            .bind(action.id)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO action_attempts (action_id, attempt, claimed_by, started_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(action.id)
            .bind(attempt_no)
            .bind(owner)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            let attempt = action.attempts.saturating_add(1);
            out.push(Claimed {
                action,
                attempt,
                attempt_no,
            });
            if retried {
                break;
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Pending actions claimed by owners matching `pattern` (SQL `LIKE`):
    /// what a replica holds (its owner names carry its process id).
    pub async fn claims_held_by(&self, pattern: &str) -> Result<i64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM actions WHERE status = 'pending' AND claimed_by LIKE $1",
        )
        .bind(pattern)
        .fetch_one(&self.read)
        .await?;
        Ok(n)
    }

    /// Records how an attempt ended and what the action becomes, in one
    /// transaction. The action is changed only while `owner` still holds the claim.
    #[expect(
        clippy::too_many_arguments,
        reason = "one attempt's facts, recorded in one call"
    )]
    pub async fn record_attempt(
        &self,
        claimed: &Claimed,
        owner: &str,
        outcome: AttemptOutcome,
        http_status: Option<u16>,
        error: Option<&str>,
        identity: Option<&str>,
        end: &DeliveryEnd,
        now: DateTime<Utc>,
    ) -> Result<Progress, StoreError> {
        let now_ms = to_ms(now);
        let error = error.map(cut);
        let id = claimed.action.id;
        let mut tx = self.begin_write().await?;
        let wait_ms = match end {
            DeliveryEnd::Retry { wait_ms, .. } => Some(i64::try_from(*wait_ms).unwrap_or(i64::MAX)),
            _ => None,
        };
        sqlx::query(
            "UPDATE action_attempts SET finished_at = $1, outcome = $2, http_status = $3, error = $4, \
             retry_after_ms = $5 WHERE action_id = $6 AND attempt = $7",
        )
        .bind(now_ms)
        .bind(outcome.as_str())
        .bind(http_status.map(i64::from))
        .bind(&error)
        .bind(wait_ms)
        .bind(id)
        .bind(claimed.attempt_no)
        .execute(&mut *tx)
        .await?;
        const FENCE: &str =
            "WHERE id = $5 AND status = 'pending' AND claimed_by = $6 AND attempts = $7";
        let (sql, result, at) = match end {
            DeliveryEnd::Delivered(r) => (
                format!(
                    "UPDATE actions SET status = 'delivered', result_json = $1, next_attempt_at = $2, \
                     last_error = $3, claimed_by = NULL, lease_until = NULL, updated_at = $4 {FENCE}"
                ),
                Some(json(r)?),
                None,
            ),
            DeliveryEnd::Retry { at, .. } => (
                format!(
                    "UPDATE actions SET result_json = $1, next_attempt_at = $2, last_error = $3, \
                     claimed_by = NULL, lease_until = NULL, updated_at = $4 {FENCE}"
                ),
                claimed.action.result.as_ref().map(json).transpose()?,
                Some(to_ms(*at)),
            ),
            DeliveryEnd::Dead(r) => (
                format!(
                    "UPDATE actions SET status = 'dead', result_json = $1, next_attempt_at = $2, \
                     last_error = $3, claimed_by = NULL, lease_until = NULL, updated_at = $4 {FENCE}"
                ),
                Some(json(r)?),
                None,
            ),
        };
        let last_error = match end {
            DeliveryEnd::Delivered(_) => None,
            _ => error.clone(),
        };
        let applied = sqlx::query(&sql)
            .bind(result)
            .bind(at)
            .bind(last_error)
            .bind(now_ms)
            .bind(id)
            .bind(owner)
            .bind(i64::from(claimed.attempt))
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if applied {
            // Every attempt that counted is a record on the chain, sealed with it.
            let planned = &claimed.action.planned;
            let (outcome_text, external_ids, next_at) = match end {
                DeliveryEnd::Delivered(r) => ("delivered", r.external_ids.clone(), None),
                DeliveryEnd::Retry { at, .. } => ("failed", Default::default(), Some(*at)),
                DeliveryEnd::Dead(r) => ("dead", r.external_ids.clone(), None),
            };
            let step = StepRecord {
                run_id: Some(planned.run_id.clone()),
                correlation_id: Some(planned.correlation_id.clone()),
                attempt: Some(AttemptStep {
                    action_key: planned.idempotency_key.clone(),
                    action: planned.kind.as_str().to_owned(),
                    op: planned.op.as_str().to_owned(),
                    target: claimed.action.kind.target().to_owned(),
                    attempt: u32::try_from(claimed.attempt_no).unwrap_or(u32::MAX),
                    outcome: outcome_text.to_owned(),
                    http_status,
                    external_ids,
                    error: error.clone(),
                    next_attempt_at: next_at,
                    identity: identity.map(cut),
                }),
                ..StepRecord::new(
                    StepKind::ActionAttempt,
                    format!("attempt:{}:{}", planned.idempotency_key, claimed.attempt_no),
                    now,
                    "outbox",
                )
            };
            crate::audit::append_step(&mut tx, step, Some(&planned.service)).await?;
        }
        let run_id = claimed.action.run_id.as_str();
        let pending_left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM actions WHERE run_id = $1 AND status = 'pending'",
        )
        .bind(run_id)
        .fetch_one(&mut *tx)
        .await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM runs WHERE run_id = $1")
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(Progress {
            run_id: claimed.action.run_id.clone(),
            run_decided: status.as_deref() == Some("decided"),
            pending_left,
            recorded: applied,
        })
    }

    /// Pending actions of a run (0: every action is delivered, dead or not executed).
    pub async fn pending_count(&self, run_id: &RunId) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM actions WHERE run_id = $1 AND status = 'pending'",
        )
        .bind(run_id.as_str())
        .fetch_one(&self.write)
        .await?)
    }

    /// The outbox backlog (for metrics, the review API and the simulator),
    /// totals and per target.
    ///
    /// `next_due` is when the outbox can next claim something: per target, the
    /// due time of its first unclaimed pending action in decision order (the
    /// actions behind it wait for it, whatever their own `next_attempt_at`),
    /// and no time for a target whose probe is in flight. A driver of simulated
    /// time (the simulator, the end-to-end harness) moves its clock there when
    /// nothing is in flight; the earliest `next_attempt_at` of all pending
    /// actions would name an action that cannot go, and the clock would stall.
    pub async fn outbox_counts(&self, now: DateTime<Utc>) -> Result<OutboxCounts, StoreError> {
        let now_ms = to_ms(now);
        let mut c = OutboxCounts::default();
        for t in OutboxTarget::ALL {
            c.by_target
                .insert(t.as_str().to_owned(), TargetBacklog::default());
        }
        let rows = sqlx::query(
            "SELECT target, status, COUNT(*) AS n, \
             CAST(COALESCE(SUM(CASE WHEN claimed_by IS NOT NULL AND lease_until > $1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS in_flight, \
             MIN(created_at) AS oldest \
             FROM actions WHERE status IN ('pending', 'dead') GROUP BY target, status",
        )
        .bind(now_ms)
        .fetch_all(&self.read)
        .await?;
        for r in rows {
            let target: String = r.try_get("target")?;
            let status: String = r.try_get("status")?;
            let n: i64 = r.try_get("n")?;
            let e = c.by_target.entry(target).or_default();
            if status == "pending" {
                let in_flight: i64 = r.try_get("in_flight")?;
                let oldest = r.try_get::<Option<i64>, _>("oldest")?.map(from_ms);
                e.pending += n;
                e.in_flight += in_flight;
                e.oldest_pending_at = oldest;
                c.pending += n;
                c.in_flight += in_flight;
                c.oldest_pending_at = match (c.oldest_pending_at, oldest) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            } else {
                e.dead += n;
                c.dead += n;
            }
        }
        // The head of each target (first pending action, claimed or not).
        let heads = sqlx::query(
            "SELECT target, attempts, last_error FROM actions WHERE id IN \
             (SELECT MIN(id) FROM actions WHERE status = 'pending' GROUP BY target)",
        )
        .fetch_all(&self.read)
        .await?;
        for r in heads {
            let target: String = r.try_get("target")?;
            let attempts: i64 = r.try_get("attempts")?;
            let e = c.by_target.entry(target).or_default();
            e.head_attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
            e.head_last_error = r.try_get("last_error")?;
        }
        // The first unclaimed pending action of each target with no probe in
        // flight: what `claim_due` would look at first.
        let next = sqlx::query(
            "SELECT a.target, a.next_attempt_at FROM actions a WHERE a.id IN \
             (SELECT MIN(id) FROM actions WHERE status = 'pending' \
              AND NOT (claimed_by IS NOT NULL AND lease_until > $1) GROUP BY target) \
             AND NOT EXISTS (SELECT 1 FROM actions p WHERE p.status = 'pending' \
              AND p.target = a.target AND p.claimed_by IS NOT NULL AND p.lease_until > $2 \
              AND p.attempts > 1)",
        )
        .bind(now_ms)
        .bind(now_ms)
        .fetch_all(&self.read)
        .await?;
        for r in next {
            let target: String = r.try_get("target")?;
            // A pending action always has a due time; none would mean "now".
            let due = r
                .try_get::<Option<i64>, _>("next_attempt_at")?
                .map_or(now, from_ms);
            c.by_target.entry(target).or_default().next_due = Some(due);
            c.next_due = Some(c.next_due.map_or(due, |d| d.min(due)));
        }
        Ok(c)
    }

    /// Actions with `status` (`pending` or `dead`) after `after_id`, in decision order.
    pub async fn actions_with_status(
        &self,
        status: &str,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredAction>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM actions WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3")
                .bind(status)
                .bind(after_id)
                .bind(limit.clamp(1, crate::LIST_ROWS_MAX))
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(action_from_row).collect()
    }

    pub async fn action_by_id(&self, id: i64) -> Result<Option<StoredAction>, StoreError> {
        let row = sqlx::query("SELECT * FROM actions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| action_from_row(&r)).transpose()
    }

    /// The recorded attempts of an action, oldest first (at most `limit`).
    pub async fn attempts_of(&self, id: i64, limit: i64) -> Result<Vec<AttemptRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM action_attempts WHERE action_id = $1 ORDER BY attempt LIMIT $2",
        )
        .bind(id)
        .bind(limit.clamp(1, crate::LIST_ROWS_MAX))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    attempt: r.try_get("attempt")?,
                    claimed_by: r.try_get("claimed_by")?,
                    started_at: from_ms(r.try_get("started_at")?),
                    finished_at: r.try_get::<Option<i64>, _>("finished_at")?.map(from_ms),
                    outcome: r.try_get("outcome")?,
                    http_status: r
                        .try_get::<Option<i64>, _>("http_status")?
                        .and_then(|s| u16::try_from(s).ok()),
                    error: r.try_get("error")?,
                    retry_after_ms: r.try_get("retry_after_ms")?,
                })
            })
            .collect()
    }

    /// An operator's retry of a dead letter: pending again, due now, with a
    /// fresh attempt budget. The attempt history is kept, and the retry itself
    /// is recorded in the same transaction: who (`by`, the verified caller's
    /// label; `None` when inbound identity is disabled) and when.
    pub async fn retry_dead(
        &self,
        id: i64,
        by: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StoredAction, RetryError> {
        let now_ms = to_ms(now);
        let by = by.map(|b| b.chars().take(RETRIED_BY_CHARS_MAX).collect::<String>());
        let mut tx = self.begin_write().await?;
        let before = sqlx::query("SELECT status, attempts FROM actions WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        let Some(before) = before else {
            return Err(RetryError::NotFound(id));
        };
        let status: String = before.try_get("status").map_err(StoreError::from)?;
        if status != "dead" {
            return Err(RetryError::NotDead { id, status });
        }
        let budget_spent: i64 = before.try_get("attempts").map_err(StoreError::from)?;
        let row = sqlx::query(
            "UPDATE actions SET status = 'pending', attempts = 0, next_attempt_at = $1, \
             claimed_by = NULL, lease_until = NULL, updated_at = $2 WHERE id = $3 AND status = 'dead' \
             RETURNING *",
        )
        .bind(now_ms)
        .bind(now_ms)
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let action = action_from_row(&row)?;
        sqlx::query(
            "INSERT INTO action_retries (action_id, after_attempt, budget_spent, retried_by, retried_at) \
             VALUES ($1, (SELECT COALESCE(MAX(attempt), 0) FROM action_attempts WHERE action_id = $2), $3, $4, $5)",
        )
        .bind(id)
        .bind(id)
        .bind(budget_spent)
        .bind(&by)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        // The replay is on the chain, so the redelivery's attempts (which follow
        // it) are explained even when the run was audited long before.
        let replays: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM action_retries WHERE action_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        let planned = &action.planned;
        let step = StepRecord {
            run_id: Some(planned.run_id.clone()),
            correlation_id: Some(planned.correlation_id.clone()),
            replay: Some(ReplayStep {
                action_key: planned.idempotency_key.clone(),
                action_id: id,
                attempts_before: u32::try_from(budget_spent).unwrap_or(u32::MAX),
            }),
            ..StepRecord::new(
                StepKind::ActionReplay,
                format!("replay:{id}:{replays}"),
                now,
                by.clone().unwrap_or_else(|| "anonymous".to_owned()),
            )
        };
        crate::audit::append_step(&mut tx, step, Some(&planned.service)).await?;
        tx.commit().await?;
        Ok(action)
    }

    /// The operator retries of an action, oldest first (at most `limit`).
    pub async fn retries_of(&self, id: i64, limit: i64) -> Result<Vec<RetryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM action_retries WHERE action_id = $1 \
             ORDER BY after_attempt, retried_at, rowid LIMIT $2",
        )
        .bind(id)
        .bind(limit.clamp(1, crate::LIST_ROWS_MAX))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RetryRow {
                    after_attempt: r.try_get("after_attempt")?,
                    budget_spent: r.try_get("budget_spent")?,
                    retried_by: r.try_get("retried_by")?,
                    retried_at: from_ms(r.try_get("retried_at")?),
                })
            })
            .collect()
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|source| StoreError::Corrupt {
        what: "value to store".into(),
        source,
    })
}

/// Marks the unfinished attempts of one action (or of every action) as
/// `interrupted`, each with a step record on the chain: the process that made
/// them died, and the action is delivered again idempotently from `next_at`.
async fn interrupt_attempts(
    tx: &mut crate::db::Tx,
    action_id: Option<i64>,
    now: DateTime<Utc>,
    next_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let cut_short = sqlx::query(
        "SELECT a.action_id, a.attempt, x.planned_json, x.kind FROM action_attempts a \
         JOIN actions x ON x.id = a.action_id WHERE a.finished_at IS NULL \
         AND ($1 IS NULL OR a.action_id = $2) ORDER BY a.rowid",
    )
    .bind(action_id)
    .bind(action_id)
    .fetch_all(&mut **tx)
    .await?;
    for row in &cut_short {
        let planned: PlannedAction =
            serde_json::from_str(&row.try_get::<String, _>("planned_json")?)
                .map_err(crate::db::corrupt("planned action"))?;
        let attempt_no: i64 = row.try_get("attempt")?;
        let step = StepRecord {
            run_id: Some(planned.run_id.clone()),
            correlation_id: Some(planned.correlation_id.clone()),
            attempt: Some(AttemptStep {
                action_key: planned.idempotency_key.clone(),
                action: planned.kind.as_str().to_owned(),
                op: planned.op.as_str().to_owned(),
                target: planned.kind.target().to_owned(),
                attempt: u32::try_from(attempt_no).unwrap_or(u32::MAX),
                outcome: "interrupted".to_owned(),
                http_status: None,
                external_ids: Default::default(),
                error: Some(
                    "the gate stopped during the attempt; delivered again idempotently".to_owned(),
                ),
                next_attempt_at: Some(next_at),
                identity: None,
            }),
            ..StepRecord::new(
                StepKind::ActionAttempt,
                format!("attempt:{}:{attempt_no}", planned.idempotency_key),
                now,
                "outbox",
            )
        };
        crate::audit::append_step(tx, step, Some(&planned.service)).await?;
    }
    sqlx::query(
        "UPDATE action_attempts SET finished_at = $1, outcome = 'interrupted' \
         WHERE finished_at IS NULL AND ($2 IS NULL OR action_id = $3)",
    )
    .bind(to_ms(now))
    .bind(action_id)
    .bind(action_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lane is a delivery queue, not a second kind -> target map: it
    /// always names a system the one map ([`ActionKind::target`]) names.
    #[test]
    fn each_lane_is_a_system_of_its_kinds_target() {
        for kind in ActionKind::ALL {
            let lane = OutboxTarget::of(kind).as_str();
            assert!(
                kind.target().split('+').any(|system| system == lane),
                "{kind}: lane {lane} is not part of target {}",
                kind.target()
            );
        }
        assert_eq!(ActionKind::Mim.target(), "servicenow+bridge");
    }
}
