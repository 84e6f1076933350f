//! Storm-control tables (migration 0004): the breaker per environment, service
//! sightings, breaker transitions, held-back pages and summary bookkeeping;
//! groups (migration 0007).
//!
//! The decide transaction (`crate::wave`) reads and writes them through the
//! engine's `MemState`; everything else here is a read for `GET /v1/storm`
//! or the held-back summary task.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use tg_engine::Effect;
use tg_storm::{BreakerState, BucketState, Sighting};

use crate::db::corrupt;
use crate::{Store, StoreError, from_ms, to_ms};

/// Run IDs kept per held-back line (the summary lists at most this many).
pub const HELD_RUNS_MAX: i64 = 100;
/// Transitions returned by one read at most.
pub const TRANSITIONS_LIST_MAX: i64 = 1_000;

use crate::db::Tx;

/// The environment's most recent sightings (at most `SIGHTINGS_MAX`).
pub(crate) async fn load_sightings<'e, E>(
    on: E,
    environment: &str,
) -> Result<Vec<Sighting>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows = sqlx::query(
        "SELECT service, seen_at FROM storm_sightings WHERE environment = $1 \
         ORDER BY seen_at DESC, service LIMIT $2",
    )
    .bind(environment)
    .bind(i64::try_from(tg_storm::breaker::SIGHTINGS_MAX).unwrap_or(i64::MAX))
    .fetch_all(on)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Sighting {
                service: r.try_get("service")?,
                seen_at: from_ms(r.try_get("seen_at")?),
            })
        })
        .collect()
}

/// Counts a held-back page on its summary line (team, service, environment,
/// reason), keeping at most [`HELD_RUNS_MAX`] of its run IDs.
pub(crate) async fn hold_page(tx: &mut Tx, h: &tg_engine::HeldPage) -> Result<(), StoreError> {
    // `run_ids` is a JSON array of at most HELD_RUNS_MAX run ids.
    let sql = match crate::db::backend_of(tx) {
        crate::Backend::Sqlite => {
            "INSERT INTO storm_held (team, service, environment, reason, lim, count, first_at, last_at, run_ids) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $7, json_array($8)) \
             ON CONFLICT (team, service, environment, reason) DO UPDATE SET \
             lim = excluded.lim, count = storm_held.count + 1, \
             last_at = CASE WHEN storm_held.last_at > excluded.last_at THEN storm_held.last_at ELSE excluded.last_at END, \
             run_ids = CASE WHEN json_array_length(storm_held.run_ids) < $9 \
               THEN json_insert(storm_held.run_ids, '$[#]', $10) ELSE storm_held.run_ids END"
        }
        crate::Backend::Postgres => {
            "INSERT INTO storm_held (team, service, environment, reason, lim, count, first_at, last_at, run_ids) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $7, jsonb_build_array($8::text)::text) \
             ON CONFLICT (team, service, environment, reason) DO UPDATE SET \
             lim = excluded.lim, count = storm_held.count + 1, \
             last_at = CASE WHEN storm_held.last_at > excluded.last_at THEN storm_held.last_at ELSE excluded.last_at END, \
             run_ids = CASE WHEN jsonb_array_length(storm_held.run_ids::jsonb) < $9 \
               THEN (storm_held.run_ids::jsonb || jsonb_build_array($10::text))::text ELSE storm_held.run_ids END"
        }
    };
    sqlx::query(sql)
        .bind(&h.team)
        .bind(&h.service)
        .bind(&h.environment)
        .bind(h.reason.as_str())
        .bind(&h.limit)
        .bind(to_ms(h.at))
        .bind(to_ms(h.at))
        .bind(h.run_id.as_str())
        .bind(HELD_RUNS_MAX)
        .bind(h.run_id.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// After the transaction that recorded it committed: a breaker transition
/// becomes a metric and a structured log line.
pub(crate) fn transition_committed(
    environment: &str,
    run_id: &tg_model::RunId,
    t: &tg_storm::Transition,
) {
    let env = tg_model::Environment::from_label(environment).as_str();
    metrics::counter!("triage_gate_storm_breaker_transitions_total", "to" => t.to.as_str(), "environment" => env)
        .increment(1);
    let open = if t.to == tg_storm::BreakerPosition::Open {
        1.0
    } else {
        0.0
    };
    metrics::gauge!("triage_gate_storm_breaker_open", "environment" => env).set(open);
    tracing::warn!(
        environment = %environment,
        to = t.to.as_str(),
        services = t.services,
        threshold = t.threshold,
        storm_id = %t.storm_id,
        run_id = %run_id,
        reason = %t.reason,
        "storm breaker transition"
    );
}

/// One recorded breaker transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransitionRow {
    pub seq: i64,
    pub environment: String,
    pub to: String,
    pub at: DateTime<Utc>,
    pub services: i64,
    pub threshold: i64,
    pub storm_id: String,
    pub run_id: String,
    pub reason: String,
}

/// Pages held back for one (team, service, environment, reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldRow {
    pub team: String,
    pub service: String,
    pub environment: String,
    pub reason: String,
    /// The last limit that held (bucket key or storm id).
    pub limit: String,
    pub count: i64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    /// The first [`HELD_RUNS_MAX`] runs held back.
    pub run_ids: Vec<String>,
}

impl Store {
    /// A time check of every open breaker, in one write transaction: `check`
    /// gets each open breaker with its sightings and returns the effects to
    /// persist (`tg_engine::tick_breaker`). Returns what was persisted.
    pub async fn tick_breakers(
        &self,
        check: impl Fn(&str, &BreakerState, &[Sighting]) -> Vec<Effect>,
    ) -> Result<Vec<Effect>, StoreError> {
        // Most ticks change nothing: they are decided on a read first and
        // take the write lock only when a breaker is due to move.
        let open = "SELECT environment, state_json FROM storm_breaker WHERE open = 1";
        let mut due = false;
        for r in sqlx::query(open).fetch_all(&self.read).await? {
            let environment: String = r.try_get("environment")?;
            let json_state: String = r.try_get("state_json")?;
            let stored: BreakerState =
                serde_json::from_str(&json_state).map_err(corrupt("storm breaker"))?;
            let sightings = load_sightings(&self.read, &environment).await?;
            if !check(&environment, &stored, &sightings).is_empty() {
                due = true;
                break;
            }
        }
        if !due {
            return Ok(Vec::new());
        }
        // Checked again under the lock: a wave may have moved it meanwhile.
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(open).fetch_all(&mut *tx).await?;
        let mut all = Vec::new();
        let mut transitions = Vec::new();
        for r in rows {
            let environment: String = r.try_get("environment")?;
            let json_state: String = r.try_get("state_json")?;
            let stored: BreakerState =
                serde_json::from_str(&json_state).map_err(corrupt("storm breaker"))?;
            let sightings = load_sightings(&mut *tx, &environment).await?;
            let effects = check(&environment, &stored, &sightings);
            let mut state = tg_engine::MemState::default();
            state.breakers.insert(environment.clone(), stored);
            transitions.extend(crate::wave::persist(&mut tx, &mut state, &effects).await?);
            all.extend(effects);
        }
        tx.commit().await?;
        crate::wave::transitions_committed(&transitions);
        Ok(all)
    }

    /// Every environment's stored breaker.
    pub async fn storm_breakers(&self) -> Result<Vec<(String, BreakerState)>, StoreError> {
        let rows =
            sqlx::query("SELECT environment, state_json FROM storm_breaker ORDER BY environment")
                .fetch_all(&self.read)
                .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let s: String = r.try_get("state_json")?;
            out.push((
                r.try_get("environment")?,
                serde_json::from_str(&s).map_err(corrupt("storm breaker"))?,
            ));
        }
        Ok(out)
    }

    /// The stored sightings of an environment, newest first (bounded).
    pub async fn storm_sightings(&self, environment: &str) -> Result<Vec<Sighting>, StoreError> {
        load_sightings(&self.read, environment).await
    }

    /// Breaker transitions in order (at most `limit`, newest last).
    pub async fn storm_transitions(&self, limit: i64) -> Result<Vec<TransitionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM (SELECT * FROM storm_transitions ORDER BY seq DESC LIMIT $1) t ORDER BY seq",
        )
        .bind(limit.clamp(1, TRANSITIONS_LIST_MAX))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TransitionRow {
                    seq: r.try_get("seq")?,
                    environment: r.try_get("environment")?,
                    to: r.try_get("to_state")?,
                    at: from_ms(r.try_get("at")?),
                    services: r.try_get("services")?,
                    threshold: r.try_get("threshold")?,
                    storm_id: r.try_get("storm_id")?,
                    run_id: r.try_get("run_id")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Every paging bucket as stored (key, state), by key (bounded).
    pub async fn buckets(&self) -> Result<Vec<(String, BucketState)>, StoreError> {
        let rows =
            sqlx::query("SELECT key, tokens_milli, updated_at FROM buckets ORDER BY key LIMIT $1")
                .bind(crate::LIST_ROWS_MAX)
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(crate::db::keyed_bucket).collect()
    }

    /// Held-back pages, optionally only those held after `since`, by team and service (bounded).
    pub async fn held_back(
        &self,
        team: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<HeldRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM storm_held WHERE ($1 IS NULL OR team = $1) AND last_at > $2 \
             ORDER BY team, service, environment, reason LIMIT $3",
        )
        .bind(team)
        .bind(since.map_or(i64::MIN, to_ms))
        .bind(crate::LIST_ROWS_MAX)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let ids: String = r.try_get("run_ids")?;
                Ok(HeldRow {
                    team: r.try_get("team")?,
                    service: r.try_get("service")?,
                    environment: r.try_get("environment")?,
                    reason: r.try_get("reason")?,
                    limit: r.try_get("lim")?,
                    count: r.try_get("count")?,
                    first_at: from_ms(r.try_get("first_at")?),
                    last_at: from_ms(r.try_get("last_at")?),
                    run_ids: serde_json::from_str(&ids).map_err(corrupt("held run ids"))?,
                })
            })
            .collect()
    }

    /// When the held-back summary was last sent to `team`.
    pub async fn summary_sent_at(&self, team: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let t: Option<i64> =
            sqlx::query_scalar("SELECT sent_at FROM storm_summaries WHERE team = $1")
                .bind(team)
                .fetch_optional(&self.read)
                .await?;
        Ok(t.map(from_ms))
    }

    /// Records that a summary went to `team` at `at`, only if none was sent after
    /// `at - interval` (so two servers sharing the store never both send one).
    /// Returns whether this caller won the slot.
    pub async fn claim_summary_slot(
        &self,
        team: &str,
        at: DateTime<Utc>,
        interval: chrono::Duration,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO storm_summaries (team, sent_at) VALUES ($1, $2) \
             ON CONFLICT (team) DO UPDATE SET sent_at = excluded.sent_at \
             WHERE storm_summaries.sent_at <= $3",
        )
        .bind(team)
        .bind(to_ms(at))
        .bind(to_ms(at - interval))
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}
