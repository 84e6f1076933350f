//! Read queries of the web console (`server::ui`): the per-minute chart and
//! the live feed. Read-only, bounded, and in SQL both backends run as it is
//! (integer division of millisecond columns grouped by its output alias,
//! `LIKE`, `CASE`, `COALESCE`, `$N` parameters). The chart reads the last hour
//! by `runs.received_at` and `actions.created_at`, each indexed (migration
//! 0014 / postgres 0002).

use chrono::{DateTime, Utc};
use sqlx::Row;
use tg_model::{Decision, NormalizedEvent, RunId};

use crate::db::corrupt;
use crate::{RunStatus, Store, StoreError, from_ms, to_ms};

/// Milliseconds in one chart bucket.
pub const CHART_BUCKET_MS: i64 = 60_000;
/// Buckets a chart query returns at most (a day of minutes).
pub const CHART_BUCKETS_MAX: i64 = 1_440;
/// Runs the live feed lists at most.
pub const FEED_ROWS_MAX: i64 = 200;

/// One minute of the chart. Minutes with nothing in them are left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MinuteCounts {
    /// Start of the minute, Unix milliseconds (a multiple of [`CHART_BUCKET_MS`]).
    pub minute_ms: i64,
    /// Events received (one run each).
    pub events: i64,
    /// Of those, runs whose decision suppressed an action (a duplicate inside
    /// its dedup window, a page held back by the storm breaker or a budget).
    pub suppressed: i64,
    /// Actions created for execution (sent to an incident tool, or queued to be).
    pub actions: i64,
}

/// A run as the live feed shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedRun {
    pub run_id: RunId,
    pub status: RunStatus,
    pub service: String,
    pub environment: String,
    pub received_at: DateTime<Utc>,
    pub event: NormalizedEvent,
    pub decision: Option<Decision>,
}

/// A decision that suppressed anything holds this, outside any string (a
/// quote inside a JSON string is always escaped, so event text cannot fake it).
const SUPPRESSED_PATTERN: &str = "%\"outcome\":\"suppressed\"%";

impl Store {
    /// Events, suppressed runs and executed actions per minute in `[from, to)`,
    /// oldest first; at most [`CHART_BUCKETS_MAX`] minutes (the latest ones).
    pub async fn console_minutes(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteCounts>, StoreError> {
        let (from_ms_, to_ms_) = (to_ms(from), to_ms(to));
        let from_ms_ = from_ms_.max(to_ms_ - CHART_BUCKETS_MAX * CHART_BUCKET_MS);
        let mut minutes: std::collections::BTreeMap<i64, MinuteCounts> =
            std::collections::BTreeMap::new();
        let runs = sqlx::query(
            "SELECT received_at / $1 AS m, COUNT(*) AS n, \
             SUM(CASE WHEN decision_json LIKE $2 THEN 1 ELSE 0 END) AS suppressed \
             FROM runs WHERE received_at >= $3 AND received_at < $4 \
             GROUP BY m",
        )
        .bind(CHART_BUCKET_MS)
        .bind(SUPPRESSED_PATTERN)
        .bind(from_ms_)
        .bind(to_ms_)
        .fetch_all(&self.read)
        .await?;
        for r in runs {
            let m: i64 = r.try_get("m")?;
            let e = minutes.entry(m).or_insert_with(|| empty(m));
            e.events = r.try_get("n")?;
            e.suppressed = r.try_get::<Option<i64>, _>("suppressed")?.unwrap_or(0);
        }
        let actions = sqlx::query(
            "SELECT created_at / $1 AS m, COUNT(*) AS n FROM actions \
             WHERE outcome = 'execute' AND created_at >= $2 AND created_at < $3 \
             GROUP BY m",
        )
        .bind(CHART_BUCKET_MS)
        .bind(from_ms_)
        .bind(to_ms_)
        .fetch_all(&self.read)
        .await?;
        for r in actions {
            let m: i64 = r.try_get("m")?;
            minutes.entry(m).or_insert_with(|| empty(m)).actions = r.try_get("n")?;
        }
        Ok(minutes.into_values().collect())
    }

    /// The latest runs, newest first (at most [`FEED_ROWS_MAX`]).
    pub async fn console_feed(&self, limit: i64) -> Result<Vec<FeedRun>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, status, service, environment, received_at, event_json, decision_json \
             FROM runs ORDER BY seq DESC LIMIT $1",
        )
        .bind(limit.clamp(1, FEED_ROWS_MAX))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                Ok(FeedRun {
                    run_id: RunId(r.try_get("run_id")?),
                    status: status.parse().unwrap_or(RunStatus::Pending),
                    service: r.try_get("service")?,
                    environment: r.try_get("environment")?,
                    received_at: from_ms(r.try_get("received_at")?),
                    event: serde_json::from_str(&r.try_get::<String, _>("event_json")?)
                        .map_err(corrupt("event"))?,
                    decision: r
                        .try_get::<Option<String>, _>("decision_json")?
                        .map(|s| serde_json::from_str(&s).map_err(corrupt("decision")))
                        .transpose()?,
                })
            })
            .collect()
    }

    /// Open review items (drafted actions and run-level items) and runs accepted.
    pub async fn console_counts(&self) -> Result<ConsoleCounts, StoreError> {
        let review_actions: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM actions WHERE review_state = 'open'")
                .fetch_one(&self.read)
                .await?;
        let review_runs: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE review_state = 'open'")
                .fetch_one(&self.read)
                .await?;
        // The latest acceptance position, not COUNT(*): one index lookup
        // however large the store (runs are never deleted).
        let runs: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM runs")
            .fetch_one(&self.read)
            .await?;
        Ok(ConsoleCounts {
            review_open: review_actions + review_runs,
            runs,
        })
    }
}

/// Totals shown in the console's header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConsoleCounts {
    pub review_open: i64,
    pub runs: i64,
}

fn empty(m: i64) -> MinuteCounts {
    MinuteCounts {
        minute_ms: m.saturating_mul(CHART_BUCKET_MS),
        events: 0,
        suppressed: 0,
        actions: 0,
    }
}

impl Store {
    /// Ends a console session for good: until `until` (its own expiry, Unix
    /// seconds) a cookie carrying `sid` is refused, on every replica.
    pub async fn revoke_console_session(&self, sid: &str, until: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_revoked (sid, until_ms) VALUES ($1, $2) \
             ON CONFLICT (sid) DO UPDATE SET until_ms = excluded.until_ms",
        )
        .bind(sid)
        .bind(until.saturating_mul(1_000))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Whether the console session `sid` was signed out.
    pub async fn console_session_revoked(&self, sid: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM console_revoked WHERE sid = $1")
            .bind(sid)
            .fetch_one(&self.read)
            .await?;
        Ok(n > 0)
    }

    /// Forgets revocations of sessions that have expired by `now`.
    pub async fn prune_console_revoked(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM console_revoked WHERE until_ms < $1")
            .bind(to_ms(now))
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }
}
