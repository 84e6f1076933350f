//! Runtime autonomy caps (the kill switch): read in every decision's
//! transaction, so a change applies to the next decision, with no restart.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use tg_model::{AutonomyLevel, AutonomyStep, StepKind, StepRecord};

use crate::{Store, StoreError, from_ms, to_ms};

/// Longest reason kept with a cap.
pub const CAP_REASON_CHARS_MAX: usize = 1_000;
/// Caps listed at most.
pub const CAPS_MAX: i64 = 10_000;

/// One cap as stored.
#[derive(Debug, Clone, Serialize)]
pub struct AutonomyCap {
    pub scope: String,
    pub level: AutonomyLevel,
    pub reason: Option<String>,
    pub set_by: String,
    pub set_at: DateTime<Utc>,
}

pub(crate) fn parse_level(s: &str) -> Option<AutonomyLevel> {
    AutonomyLevel::ALL.into_iter().find(|l| l.as_str() == s)
}

/// The lowest cap over `all`, `team:<team>` and `service:<service>` (inside a transaction).
pub(crate) async fn cap_for(
    tx: &mut crate::db::Tx,
    service: &str,
    team: Option<&str>,
) -> Result<Option<AutonomyLevel>, StoreError> {
    let levels: Vec<String> =
        sqlx::query_scalar("SELECT level FROM autonomy_caps WHERE scope IN ('all', $1, $2)")
            .bind(format!("service:{service}"))
            .bind(team.map_or_else(String::new, |t| format!("team:{t}")))
            .fetch_all(&mut **tx)
            .await?;
    // An unreadable level is the lowest (fail closed: shadow).
    Ok(levels
        .iter()
        .map(|l| parse_level(l).unwrap_or(AutonomyLevel::Shadow))
        .min())
}

impl Store {
    /// Sets (`Some`) or lifts (`None`) the cap of `scope`, as `by`, and seals
    /// the change on the audit chain, in one transaction.
    pub async fn set_autonomy_cap(
        &self,
        scope: &str,
        level: Option<AutonomyLevel>,
        reason: Option<&str>,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<StepRecord, StoreError> {
        let reason = reason.map(|r| r.chars().take(CAP_REASON_CHARS_MAX).collect::<String>());
        let mut tx = self.begin_write().await?;
        let before: Option<String> =
            sqlx::query_scalar("SELECT level FROM autonomy_caps WHERE scope = $1")
                .bind(scope)
                .fetch_optional(&mut *tx)
                .await?;
        match level {
            Some(l) => {
                sqlx::query(
                    "INSERT INTO autonomy_caps (scope, level, reason, set_by, set_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (scope) DO UPDATE SET level = excluded.level, reason = excluded.reason, \
                     set_by = excluded.set_by, set_at = excluded.set_at",
                )
                .bind(scope)
                .bind(l.as_str())
                .bind(&reason)
                .bind(by)
                .bind(to_ms(now))
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM autonomy_caps WHERE scope = $1")
                    .bind(scope)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let changes: i64 =
            // A key range (`prefix` up to `prefix` with ':' + 1) uses the unique index on run_id.
            sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE run_id >= $1 AND run_id < $2")
                .bind(format!("autonomy:{scope}:"))
                .bind(format!("autonomy:{scope};"))
                .fetch_one(&mut *tx)
                .await?;
        let step = StepRecord {
            autonomy: Some(AutonomyStep {
                scope: scope.to_owned(),
                from: before.as_deref().and_then(parse_level),
                to: level,
                reason,
            }),
            ..StepRecord::new(
                StepKind::AutonomyChange,
                format!("autonomy:{scope}:{changes}"),
                now,
                by,
            )
        };
        let service = scope.strip_prefix("service:");
        let sealed = crate::audit::append_step(&mut tx, step, service).await?;
        tx.commit().await?;
        Ok(sealed)
    }

    /// Every cap in force.
    pub async fn autonomy_caps(&self) -> Result<Vec<AutonomyCap>, StoreError> {
        let rows = sqlx::query("SELECT * FROM autonomy_caps ORDER BY scope LIMIT $1")
            .bind(CAPS_MAX)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                let level: String = r.try_get("level")?;
                Ok(AutonomyCap {
                    scope: r.try_get("scope")?,
                    level: parse_level(&level).unwrap_or(AutonomyLevel::Shadow),
                    reason: r.try_get("reason")?,
                    set_by: r.try_get("set_by")?,
                    set_at: from_ms(r.try_get("set_at")?),
                })
            })
            .collect()
    }
}

/// Pending actions examined per call at most.
pub const HOLD_SCAN_MAX: i64 = 10_000;

impl Store {
    /// The kill switch reaches the outbox too: a pending, unclaimed create
    /// (ticket, page, MIM) that [`tg_policy::cap`] would no longer execute
    /// under the lowest cap over `all`, its service, and its service's owner
    /// team in `catalog` (and the team it is routed to, if another) is not
    /// delivered; it becomes an open review draft, with an audit step record.
    /// The store decides nothing itself: the autonomy table is the policy's.
    /// Returns the runs left with nothing pending (to be audited). Nothing to
    /// do, and one query, when no cap is set.
    pub async fn hold_capped(
        &self,
        catalog: &tg_policy::Catalog,
        now: DateTime<Utc>,
    ) -> Result<Vec<tg_model::RunId>, StoreError> {
        // Caps are few: read them once, match in memory.
        let caps: std::collections::BTreeMap<String, AutonomyLevel> =
            sqlx::query("SELECT scope, level FROM autonomy_caps")
                .fetch_all(&self.read)
                .await?
                .iter()
                .map(|r| {
                    let level: String = r.try_get("level")?;
                    Ok((
                        r.try_get::<String, _>("scope")?,
                        parse_level(&level).unwrap_or(AutonomyLevel::Shadow),
                    ))
                })
                .collect::<Result<_, StoreError>>()?;
        if caps.is_empty() {
            return Ok(Vec::new());
        }
        let now_ms = to_ms(now);
        let mut tx = self.begin_write().await?;
        // A create has no `op` in its planned JSON.
        let sql = match self.backend {
            crate::Backend::Sqlite => {
                "SELECT * FROM actions WHERE status = 'pending' \
                 AND NOT (claimed_by IS NOT NULL AND lease_until > $1) \
                 AND json_extract(planned_json, '$.op') IS NULL ORDER BY id LIMIT $2"
            }
            crate::Backend::Postgres => {
                "SELECT * FROM actions WHERE status = 'pending' \
                 AND NOT (claimed_by IS NOT NULL AND lease_until > $1) \
                 AND (planned_json::jsonb ->> 'op') IS NULL ORDER BY id LIMIT $2"
            }
        };
        let rows = sqlx::query(sql)
            .bind(now_ms)
            .bind(HOLD_SCAN_MAX)
            .fetch_all(&mut *tx)
            .await?;
        let mut runs = Vec::new();
        for row in &rows {
            let action = crate::db::action_from_row(row)?;
            let planned = &action.planned;
            // A team's kill switch holds its services by owner (the catalog's),
            // and whatever is routed to it.
            let owner = catalog.owner_team(&planned.service);
            let Some(cap) = [
                caps.get("all"),
                owner.and_then(|t| caps.get(&format!("team:{t}"))),
                caps.get(&format!("team:{}", planned.team)),
                caps.get(&format!("service:{}", planned.service)),
            ]
            .into_iter()
            .flatten()
            .min()
            .copied() else {
                continue;
            };
            let (allowed, _) = tg_policy::cap(
                cap,
                false,
                action.kind,
                planned.severity,
                tg_model::Outcome::Execute,
            );
            if allowed == tg_model::Outcome::Execute {
                continue;
            }
            sqlx::query(
                "UPDATE actions SET status = 'not_executed', outcome = 'review', review_state = 'open', \
                 claimed_by = NULL, lease_until = NULL, next_attempt_at = NULL, updated_at = $1 WHERE id = $2",
            )
            .bind(now_ms)
            .bind(action.id)
            .execute(&mut *tx)
            .await?;
            let step = StepRecord {
                run_id: Some(planned.run_id.clone()),
                correlation_id: Some(planned.correlation_id.clone()),
                review: Some(tg_model::ReviewStep {
                    action_key: planned.idempotency_key.clone(),
                    action_id: action.id,
                    action: action.kind.as_str().to_owned(),
                    verdict: "held".to_owned(),
                    reason: Some(format!(
                        "autonomy capped at {} before delivery; drafted for review",
                        cap.as_str()
                    )),
                    conditions: Vec::new(),
                    edits: Default::default(),
                }),
                ..StepRecord::new(
                    StepKind::ReviewDecision,
                    format!("review:{}:held", action.id),
                    now,
                    "kill-switch",
                )
            };
            crate::audit::append_step(&mut tx, step, Some(&planned.service)).await?;
            let left: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM actions WHERE run_id = $1 AND status = 'pending'",
            )
            .bind(planned.run_id.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if left == 0 {
                runs.push(planned.run_id.clone());
            }
        }
        tx.commit().await?;
        runs.dedup();
        Ok(runs)
    }
}
