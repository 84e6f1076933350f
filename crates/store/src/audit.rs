//! The audit chain in the store: sealing records, the postmortem query, and
//! the sinks' cursors (the store is the durable spool the sinks read from).

use chrono::{DateTime, Utc};
use sqlx::Row;
use tg_model::{AuditRecord, ChainRecord, Sha256Hex, StepKind, StepRecord};

use crate::sqlite::{LIST_ROWS_MAX, SqliteStore, corrupt, json};
use crate::{StoreError, from_ms, to_ms};

/// Records one postmortem query returns at most; more is reported as truncated.
pub const AUDIT_QUERY_ROWS_MAX: i64 = 20_000;
/// Longest error text kept on a sink's cursor.
pub const SINK_ERROR_CHARS_MAX: usize = 500;

/// The query columns of one chain row.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowMeta {
    pub at: Option<DateTime<Utc>>,
    pub subject_run: Option<String>,
    pub correlation_id: Option<String>,
    pub service: Option<String>,
}

impl RowMeta {
    pub(crate) fn of_run(r: &AuditRecord) -> RowMeta {
        RowMeta {
            at: Some(r.timestamps.received_at),
            subject_run: Some(r.run_id.to_string()),
            correlation_id: Some(r.correlation_id.to_string()),
            service: Some(r.event.service.clone()),
        }
    }

    fn of_step(r: &StepRecord, service: Option<&str>) -> RowMeta {
        RowMeta {
            at: Some(r.at),
            subject_run: r.run_id.as_ref().map(ToString::to_string),
            correlation_id: r.correlation_id.as_ref().map(ToString::to_string),
            service: service.map(str::to_owned),
        }
    }
}

/// The next chain position and the hash it must link to (inside the writer's transaction).
pub(crate) async fn chain_next(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
) -> Result<(i64, Sha256Hex), StoreError> {
    let last = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match last {
        Some(r) => {
            let s: i64 = r.try_get("seq")?;
            (s + 1, Sha256Hex(r.try_get("hash")?))
        }
        None => (1, Sha256Hex::zero()),
    })
}

/// Inserts one sealed chain row (inside the caller's transaction).
pub(crate) async fn insert_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    seq: i64,
    id: &str,
    hash: &Sha256Hex,
    record_json: &str,
    kind: &str,
    meta: &RowMeta,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (seq, run_id, hash, record_json, kind, at_ms, subject_run, correlation_id, service) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(seq)
    .bind(id)
    .bind(hash.as_str())
    .bind(record_json)
    .bind(kind)
    .bind(meta.at.map(to_ms))
    .bind(&meta.subject_run)
    .bind(&meta.correlation_id)
    .bind(&meta.service)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Seals a step record onto the chain (inside the caller's transaction).
/// `service` is the service it concerns, for the postmortem query.
pub(crate) async fn append_step(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    mut record: StepRecord,
    service: Option<&str>,
) -> Result<StepRecord, StoreError> {
    let (seq, prev) = chain_next(tx).await?;
    record.seal(u64::try_from(seq).unwrap_or(0), prev);
    // `run_id` holds the step's record id (unique, never a run's id).
    insert_row(
        tx,
        seq,
        &record.record_id,
        &record.hash,
        &json(&record)?,
        "step",
        &RowMeta::of_step(&record, service),
    )
    .await?;
    Ok(record)
}

/// What the postmortem query selects; every given filter must hold.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub run_id: Option<String>,
    pub correlation_id: Option<String>,
    pub service: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// At most [`AUDIT_QUERY_ROWS_MAX`].
    pub limit: i64,
}

/// One raw chain row, as the sinks ship it.
#[derive(Debug, Clone)]
pub struct ChainRow {
    pub seq: u64,
    pub kind: String,
    pub at: Option<DateTime<Utc>>,
    pub subject_run: Option<String>,
    pub correlation_id: Option<String>,
    pub service: Option<String>,
    pub record_json: String,
}

/// A sink's position in the chain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkCursor {
    pub sink: String,
    pub seq: u64,
    pub updated_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

fn seq_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn seq_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Seals a step record onto the chain in its own transaction.
    pub async fn append_step(
        &self,
        record: StepRecord,
        service: Option<&str>,
    ) -> Result<StepRecord, StoreError> {
        let mut tx = self.write.begin().await?;
        let sealed = append_step(&mut tx, record, service).await?;
        tx.commit().await?;
        Ok(sealed)
    }

    /// The last record's position and hash (`None`: empty chain).
    pub async fn audit_head(&self) -> Result<Option<(u64, Sha256Hex)>, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok((seq_u64(r.try_get("seq")?), Sha256Hex(r.try_get("hash")?))))
            .transpose()
    }

    /// The latest step record of `kind`, if any.
    pub async fn last_step(&self, kind: StepKind) -> Result<Option<StepRecord>, StoreError> {
        let s: Option<String> = sqlx::query_scalar(
            "SELECT record_json FROM audit WHERE kind = 'step' \
             AND json_extract(record_json, '$.kind') = ? ORDER BY seq DESC LIMIT 1",
        )
        .bind(kind.as_str())
        .fetch_optional(&self.read)
        .await?;
        s.map(|s| serde_json::from_str(&s).map_err(corrupt("audit step")))
            .transpose()
    }

    /// Chain records matching `q`, in chain order. With `run_id` or
    /// `correlation_id`, a record matches when it belongs to that run; with
    /// `service`, when it concerns that service. `from`/`to` bound when it
    /// happened. The bool is true when more matched than `limit`.
    pub async fn audit_query(
        &self,
        q: &AuditQuery,
    ) -> Result<(Vec<ChainRecord>, bool), StoreError> {
        let limit = q.limit.clamp(1, AUDIT_QUERY_ROWS_MAX);
        let mut qb =
            sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT record_json FROM audit WHERE 1 = 1");
        if let Some(r) = &q.run_id {
            qb.push(" AND subject_run = ").push_bind(r.clone());
        }
        if let Some(c) = &q.correlation_id {
            // A step keeps its run's correlation id, so one column answers both.
            qb.push(" AND correlation_id = ").push_bind(c.clone());
        }
        if let Some(s) = &q.service {
            qb.push(" AND service = ").push_bind(s.clone());
        }
        if let Some(f) = q.from {
            qb.push(" AND at_ms >= ").push_bind(to_ms(f));
        }
        if let Some(t) = q.to {
            qb.push(" AND at_ms <= ").push_bind(to_ms(t));
        }
        qb.push(" ORDER BY seq LIMIT ").push_bind(limit + 1);
        let rows: Vec<String> = qb.build_query_scalar().fetch_all(&self.read).await?;
        let truncated = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
        let records = rows
            .iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|s| serde_json::from_str(s).map_err(corrupt("audit record")))
            .collect::<Result<Vec<ChainRecord>, _>>()?;
        Ok((records, truncated))
    }

    /// Raw chain rows after `after`, in chain order, for the sinks.
    pub async fn chain_rows_after(
        &self,
        after: u64,
        limit: i64,
    ) -> Result<Vec<ChainRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, at_ms, subject_run, correlation_id, service, record_json \
             FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(seq_i64(after))
        .bind(limit.clamp(1, LIST_ROWS_MAX))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChainRow {
                    seq: seq_u64(r.try_get("seq")?),
                    kind: r.try_get("kind")?,
                    at: r.try_get::<Option<i64>, _>("at_ms")?.map(from_ms),
                    subject_run: r.try_get("subject_run")?,
                    correlation_id: r.try_get("correlation_id")?,
                    service: r.try_get("service")?,
                    record_json: r.try_get("record_json")?,
                })
            })
            .collect()
    }

    /// A sink's cursor (0 when it has shipped nothing yet).
    pub async fn sink_cursor(&self, sink: &str) -> Result<u64, StoreError> {
        let s: Option<i64> = sqlx::query_scalar("SELECT seq FROM audit_cursors WHERE sink = ?")
            .bind(sink)
            .fetch_optional(&self.write)
            .await?;
        Ok(s.map(seq_u64).unwrap_or(0))
    }

    /// Moves a sink's cursor forward after a delivered batch (never back).
    pub async fn advance_sink(
        &self,
        sink: &str,
        seq: u64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_cursors (sink, seq, updated_at, last_error) VALUES (?, ?, ?, NULL) \
             ON CONFLICT (sink) DO UPDATE SET seq = MAX(seq, excluded.seq), \
             updated_at = excluded.updated_at, last_error = NULL",
        )
        .bind(sink)
        .bind(seq_i64(seq))
        .bind(to_ms(now))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Notes a sink's failure on its cursor (the cursor does not move).
    pub async fn sink_failed(
        &self,
        sink: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let error: String = error.chars().take(SINK_ERROR_CHARS_MAX).collect();
        sqlx::query(
            "INSERT INTO audit_cursors (sink, seq, updated_at, last_error) VALUES (?, 0, ?, ?) \
             ON CONFLICT (sink) DO UPDATE SET updated_at = excluded.updated_at, last_error = excluded.last_error",
        )
        .bind(sink)
        .bind(to_ms(now))
        .bind(error)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Every sink's cursor.
    pub async fn sink_cursors(&self) -> Result<Vec<SinkCursor>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_cursors ORDER BY sink")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SinkCursor {
                    sink: r.try_get("sink")?,
                    seq: seq_u64(r.try_get("seq")?),
                    updated_at: from_ms(r.try_get("updated_at")?),
                    last_error: r.try_get("last_error")?,
                })
            })
            .collect()
    }
}
