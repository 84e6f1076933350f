//! The audit chain in the store: sealing records, the postmortem query, and
//! the sinks' cursors (the store is the durable spool the sinks read from).

use chrono::{DateTime, Utc};
use sqlx::Row;
use tg_model::{AuditRecord, ChainRecord, Sha256Hex, StepKind, StepRecord};

use crate::db::{Backend, LIST_ROWS_MAX, Store, corrupt, json};
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

    pub(crate) fn of_step(r: &StepRecord, service: Option<&str>) -> RowMeta {
        RowMeta {
            at: Some(r.at),
            subject_run: r.run_id.as_ref().map(ToString::to_string),
            correlation_id: r.correlation_id.as_ref().map(ToString::to_string),
            service: service.map(str::to_owned),
        }
    }
}

/// The next chain position and the hash it must link to (inside the writer's transaction).
pub(crate) async fn chain_next(tx: &mut crate::db::Tx) -> Result<(i64, Sha256Hex), StoreError> {
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
    tx: &mut crate::db::Tx,
    seq: i64,
    id: &str,
    hash: &Sha256Hex,
    record_json: &str,
    kind: &str,
    meta: &RowMeta,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (seq, run_id, hash, record_json, kind, at_ms, subject_run, correlation_id, service) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
    tx: &mut crate::db::Tx,
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

impl Store {
    /// Seals a step record onto the chain in its own transaction.
    pub async fn append_step(
        &self,
        record: StepRecord,
        service: Option<&str>,
    ) -> Result<StepRecord, StoreError> {
        let mut tx = self.begin_write().await?;
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
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT record_json FROM audit WHERE kind = 'step' \
                 AND json_extract(record_json, '$.kind') = $1 ORDER BY seq DESC LIMIT 1"
            }
            Backend::Postgres => {
                "SELECT record_json FROM audit WHERE kind = 'step' \
                 AND (record_json::jsonb ->> 'kind') = $1 ORDER BY seq DESC LIMIT 1"
            }
        };
        let s: Option<String> = sqlx::query_scalar(sql)
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
        // Only the given filters are in the SQL (so each can use its index);
        // parameters are numbered as they are added.
        enum Arg<'a> {
            Text(&'a str),
            Int(i64),
        }
        let mut sql = String::from("SELECT record_json FROM audit WHERE 1 = 1");
        let mut args: Vec<Arg<'_>> = Vec::new();
        let mut filter = |sql: &mut String, cond: &str, arg| {
            args.push(arg);
            sql.push_str(&format!(" AND {cond} ${}", args.len()));
        };
        if let Some(r) = &q.run_id {
            filter(&mut sql, "subject_run =", Arg::Text(r));
        }
        if let Some(c) = &q.correlation_id {
            // A step keeps its run's correlation id, so one column answers both.
            filter(&mut sql, "correlation_id =", Arg::Text(c));
        }
        if let Some(s) = &q.service {
            filter(&mut sql, "service =", Arg::Text(s));
        }
        if let Some(f) = q.from {
            filter(&mut sql, "at_ms >=", Arg::Int(to_ms(f)));
        }
        if let Some(t) = q.to {
            filter(&mut sql, "at_ms <=", Arg::Int(to_ms(t)));
        }
        args.push(Arg::Int(limit + 1));
        sql.push_str(&format!(" ORDER BY seq LIMIT ${}", args.len()));
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for a in args {
            query = match a {
                Arg::Text(t) => query.bind(t),
                Arg::Int(i) => query.bind(i),
            };
        }
        let rows: Vec<String> = query.fetch_all(&self.read).await?;
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
             FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
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
        let s: Option<i64> = sqlx::query_scalar("SELECT seq FROM audit_cursors WHERE sink = $1")
            .bind(sink)
            .fetch_optional(&self.write)
            .await?;
        Ok(s.map(seq_u64).unwrap_or(0))
    }

    /// Takes (or keeps) the right to ship `sink` for `owner` until `until`,
    /// unless another owner's lease is still running at `now`. Returns the
    /// stored cursor when `owner` holds the lease, `None` when another does.
    pub async fn hold_sink(
        &self,
        sink: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar(
            "INSERT INTO audit_cursors (sink, seq, updated_at, last_error, owner, lease_until) \
             VALUES ($1, 0, $2, NULL, $3, $4) \
             ON CONFLICT (sink) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until \
             WHERE audit_cursors.owner IS NULL OR audit_cursors.owner = excluded.owner \
             OR audit_cursors.lease_until IS NULL OR audit_cursors.lease_until <= $5 \
             RETURNING seq",
        )
        .bind(sink)
        .bind(to_ms(now))
        .bind(owner)
        .bind(to_ms(until))
        .bind(to_ms(now))
        .fetch_optional(&self.write)
        .await?;
        Ok(seq.map(seq_u64))
    }

    /// Moves a sink's cursor forward after a delivered batch (never back).
    pub async fn advance_sink(
        &self,
        sink: &str,
        seq: u64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_cursors (sink, seq, updated_at, last_error) VALUES ($1, $2, $3, NULL) \
             ON CONFLICT (sink) DO UPDATE SET seq = CASE WHEN audit_cursors.seq > excluded.seq \
             THEN audit_cursors.seq ELSE excluded.seq END, \
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
            "INSERT INTO audit_cursors (sink, seq, updated_at, last_error) VALUES ($1, 0, $2, $3) \
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
