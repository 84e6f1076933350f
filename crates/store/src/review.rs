//! A human's decision on a drafted action, in one transaction: the re-check at
//! approval time (engine, pure), the draft's new state, the paging tokens an
//! approved page takes, and the step record on the audit chain.

use chrono::{DateTime, Utc};
use sqlx::Row;
use tg_engine::StormSettings;
use tg_model::{ActionOp, Condition, ReviewStep, StepKind, StepRecord};

use crate::db::action_from_row;
use crate::{Store, StoreError, StoredAction, to_ms};

/// Longest reviewer reason kept.
pub const REVIEW_REASON_CHARS_MAX: usize = 1_000;

/// What the reviewer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
}

/// Why a review decision was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("no review item {0}")]
    NotFound(i64),
    #[error("review item {id} is {state}, not open")]
    NotOpen { id: i64, state: String },
    /// The approval's re-check failed (recorded on the chain; the item stays open).
    #[error("the re-check at approval time failed")]
    Refused { conditions: Vec<Condition> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ReviewError {
    fn from(e: sqlx::Error) -> Self {
        ReviewError::Store(StoreError::from(e))
    }
}

/// Fields a reviewer may change in a draft before approving it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DraftEdits {
    /// At most `tg_model::action::TITLE_BYTES_MAX` bytes.
    pub title: Option<String>,
    /// At most `tg_model::action::DETAILS_BYTES_MAX` bytes.
    pub details: Option<String>,
    pub severity: Option<tg_model::Severity>,
}

impl DraftEdits {
    fn apply(
        &self,
        planned: &mut tg_model::PlannedAction,
    ) -> std::collections::BTreeMap<String, String> {
        let mut changed = std::collections::BTreeMap::new();
        if let Some(t) = &self.title {
            planned.title.clone_from(t);
            changed.insert("title".to_owned(), t.clone());
        }
        if let Some(d) = &self.details {
            planned.details.clone_from(d);
            changed.insert("details".to_owned(), d.clone());
        }
        if let Some(s) = self.severity {
            planned.severity = s;
            changed.insert("severity".to_owned(), s.as_str().to_owned());
        }
        changed
    }
}

/// An applied decision.
#[derive(Debug, Clone)]
pub struct Reviewed {
    pub action: StoredAction,
    pub conditions: Vec<Condition>,
    /// The service is in shadow mode now: the verdict is recorded (evidence
    /// for `report autonomy`) and nothing is sent, approved or not.
    pub shadow: bool,
}

/// The id of the condition an approval in shadow mode records.
pub const SHADOW_CONDITION: &str = "review.shadow";

impl Store {
    /// Approves or rejects the open draft `id` as `by`. An approval is
    /// decided by [`tg_engine::approve`] on the state as it is now (autonomy
    /// and kill switch, dedup, the group's ticket or page, storm mode, the
    /// paging budgets, one MIM per service) and, if it holds, turns the draft
    /// (or a work note on the group's ticket) into an executed action in the
    /// outbox. In shadow
    /// mode (the service's level in `catalog`, lowered by any runtime cap, at
    /// approval time) the verdict is recorded as a human's and nothing is sent.
    #[expect(
        clippy::too_many_arguments,
        reason = "one reviewer's decision, its facts recorded in one call"
    )]
    pub async fn review_decide(
        &self,
        id: i64,
        verdict: Verdict,
        by: &str,
        reason: Option<&str>,
        edits: &DraftEdits,
        settings: &StormSettings,
        catalog: &tg_policy::Catalog,
        now: DateTime<Utc>,
    ) -> Result<Reviewed, ReviewError> {
        let reason = reason.map(|r| r.chars().take(REVIEW_REASON_CHARS_MAX).collect::<String>());
        let mut tx = self.begin_write().await?;
        // Breaker transitions an approval caused (none today: approvals
        // spend budgets and open windows, they do not move the breaker).
        let mut transitions = Vec::new();
        let row = sqlx::query("SELECT * FROM actions WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(ReviewError::NotFound(id))?;
        let state: Option<String> = row.try_get("review_state")?;
        if state.as_deref() != Some("open") {
            return Err(ReviewError::NotOpen {
                id,
                state: state.unwrap_or_else(|| "not a review item".to_owned()),
            });
        }
        let action = action_from_row(&row)?;
        let mut planned = action.planned.clone();
        let mut edited = std::collections::BTreeMap::new();
        // The autonomy table decides what an approval may do, at approval time.
        let runtime_cap = crate::autonomy::cap_for(
            &mut tx,
            &planned.service,
            catalog.owner_team(&planned.service),
        )
        .await?;
        let level = catalog.autonomy_for(&planned.service);
        let level = runtime_cap.map_or(level, |c| level.min(c));
        let shadow = level == tg_model::AutonomyLevel::Shadow;
        let (verdict_text, conditions) = match verdict {
            Verdict::Approve if shadow => {
                // Recorded as the human's verdict; status stays not_executed: never delivered.
                sqlx::query(
                    "UPDATE actions SET review_state = 'approved', updated_at = $1 WHERE id = $2",
                )
                .bind(to_ms(now))
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let shadow_condition = Condition {
                    id: SHADOW_CONDITION.to_owned(),
                    description:
                        "above shadow mode an approval is sent; in shadow it is recorded only"
                            .to_owned(),
                    passed: false,
                    actual: format!("{} (at approval time)", level.as_str()),
                    threshold: "above shadow to send".to_owned(),
                };
                ("approved", vec![shadow_condition])
            }
            Verdict::Reject => {
                sqlx::query(
                    "UPDATE actions SET review_state = 'rejected', updated_at = $1 WHERE id = $2",
                )
                .bind(to_ms(now))
                .bind(id)
                .execute(&mut *tx)
                .await?;
                ("rejected", Vec::new())
            }
            Verdict::Approve => {
                let open_create = if planned.op == ActionOp::Create {
                    open_create(&mut tx, &action, settings, now).await?
                } else {
                    None
                };
                // The run's group, as its decision named it.
                let decision: Option<String> =
                    sqlx::query_scalar("SELECT decision_json FROM runs WHERE run_id = $1")
                        .bind(planned.run_id.as_str())
                        .fetch_optional(&mut *tx)
                        .await?
                        .flatten();
                let group = decision
                    .and_then(|d| serde_json::from_str::<tg_model::Decision>(&d).ok())
                    .and_then(|d| d.group);
                let reads = tg_engine::Reads::of(
                    &planned.service,
                    planned.environment,
                    &planned.fingerprint,
                    Some(&planned.team),
                    group.clone(),
                    catalog,
                );
                let mut mem = crate::wave::load(&mut tx, &[&reads]).await?;
                let state = mem.load(&reads);
                let approved = tg_engine::approve(
                    catalog,
                    settings,
                    &state,
                    tg_engine::Approval {
                        planned: &planned,
                        group: group.as_deref(),
                        open_create: open_create.as_ref(),
                    },
                    now,
                );
                if approved.allowed {
                    planned = approved.action;
                    edited = edits.apply(&mut planned);
                    if planned != action.planned {
                        sqlx::query("UPDATE actions SET planned_json = $1 WHERE id = $2")
                            .bind(crate::db::json(&planned)?)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    transitions =
                        crate::wave::persist(&mut tx, &mut mem, &approved.effects).await?;
                    sqlx::query(
                        "UPDATE actions SET review_state = 'approved', outcome = 'execute', \
                         status = 'pending', attempts = 0, next_attempt_at = $1, updated_at = $2 WHERE id = $3",
                    )
                    .bind(to_ms(now))
                    .bind(to_ms(now))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    ("approved", approved.conditions)
                } else {
                    ("refused", approved.conditions)
                }
            }
        };
        let decisions: i64 =
            // A key range (`prefix` up to `prefix` with ':' + 1) uses the unique index on run_id.
            sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE run_id >= $1 AND run_id < $2")
                .bind(format!("review:{id}:"))
                .bind(format!("review:{id};"))
                .fetch_one(&mut *tx)
                .await?;
        let step = StepRecord {
            run_id: Some(planned.run_id.clone()),
            correlation_id: Some(planned.correlation_id.clone()),
            review: Some(ReviewStep {
                action_key: planned.idempotency_key.clone(),
                action_id: id,
                action: action.kind.as_str().to_owned(),
                verdict: verdict_text.to_owned(),
                reason,
                conditions: conditions.clone(),
                edits: edited,
            }),
            ..StepRecord::new(
                StepKind::ReviewDecision,
                format!("review:{id}:{decisions}"),
                now,
                by,
            )
        };
        crate::audit::append_step(&mut tx, step, Some(&planned.service)).await?;
        let after = sqlx::query("SELECT * FROM actions WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let action = action_from_row(&after)?;
        tx.commit().await?;
        crate::wave::transitions_committed(&transitions);
        if verdict_text == "refused" {
            return Err(ReviewError::Refused { conditions });
        }
        Ok(Reviewed {
            action,
            conditions,
            shadow,
        })
    }
}

/// Drafts expired per call at most (the rest on the next).
pub const EXPIRE_BATCH_MAX: i64 = 500;

impl Store {
    /// Expires open drafts created at or before `cutoff`: never sent, each an
    /// audit step record (`verdict: expired`). Returns the expired ids.
    pub async fn expire_reviews(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "SELECT * FROM actions WHERE review_state = 'open' AND created_at <= $1 ORDER BY id LIMIT $2",
        )
        .bind(to_ms(cutoff))
        .bind(EXPIRE_BATCH_MAX)
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let action = action_from_row(row)?;
            sqlx::query(
                "UPDATE actions SET review_state = 'expired', updated_at = $1 WHERE id = $2",
            )
            .bind(to_ms(now))
            .bind(action.id)
            .execute(&mut *tx)
            .await?;
            let planned = &action.planned;
            let step = StepRecord {
                run_id: Some(planned.run_id.clone()),
                correlation_id: Some(planned.correlation_id.clone()),
                review: Some(ReviewStep {
                    action_key: planned.idempotency_key.clone(),
                    action_id: action.id,
                    action: action.kind.as_str().to_owned(),
                    verdict: "expired".to_owned(),
                    reason: Some(format!("open since {}", planned_created(row)?)),
                    conditions: Vec::new(),
                    edits: Default::default(),
                }),
                ..StepRecord::new(
                    StepKind::ReviewDecision,
                    format!("review:{}:expired", action.id),
                    now,
                    "gate",
                )
            };
            crate::audit::append_step(&mut tx, step, Some(&planned.service)).await?;
            ids.push(action.id);
        }
        tx.commit().await?;
        Ok(ids)
    }
}

fn planned_created(row: &sqlx::any::AnyRow) -> Result<String, StoreError> {
    let ms: i64 = row.try_get("created_at")?;
    Ok(crate::from_ms(ms).to_rfc3339())
}

/// Another run's executed create of `action`'s kind for its fingerprint inside
/// the dedup window: the incident the draft would open is already open.
async fn open_create(
    tx: &mut crate::db::Tx,
    action: &StoredAction,
    settings: &StormSettings,
    now: DateTime<Utc>,
) -> Result<Option<tg_model::RunId>, StoreError> {
    let sql = match crate::db::backend_of(tx) {
        crate::Backend::Sqlite => {
            "SELECT run_id FROM actions WHERE kind = $1 AND id <> $2 AND outcome = 'execute' \
             AND status IN ('pending', 'delivered') \
             AND json_extract(planned_json, '$.fingerprint') = $3 \
             AND json_extract(planned_json, '$.op') IS NULL AND created_at >= $4 LIMIT 1"
        }
        crate::Backend::Postgres => {
            "SELECT run_id FROM actions WHERE kind = $1 AND id <> $2 AND outcome = 'execute' \
             AND status IN ('pending', 'delivered') \
             AND (planned_json::jsonb ->> 'fingerprint') = $3 \
             AND (planned_json::jsonb ->> 'op') IS NULL AND created_at >= $4 LIMIT 1"
        }
    };
    Ok(sqlx::query_scalar::<_, String>(sql)
        .bind(action.kind.as_str())
        .bind(action.id)
        .bind(action.planned.fingerprint.as_str())
        .bind(to_ms(now - settings.dedup_window))
        .fetch_optional(&mut **tx)
        .await?
        .map(tg_model::RunId))
}
