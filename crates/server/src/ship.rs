//! Audit shipping: the store is the durable spool. Each configured sink
//! (`audit.sinks`) has a cursor in the store and a task that sends the records
//! after it, in chain order, in batches within the sink's limits. The cursor
//! moves only after the sink accepted the whole batch, so an outage or a
//! restart delays records but never loses one; a record is sent again only
//! when an attempt's outcome is unknown (see docs/audit-sinks.md).

use std::sync::Arc;
use std::time::Duration;

use tg_ship::{ShipError, ShipRecord, Sink};
use tokio_util::sync::CancellationToken;

use crate::AppState;

/// First wait after a failed batch; doubles up to [`SINK_BACKOFF_MAX_MS`].
pub const SINK_BACKOFF_MIN_MS: u64 = 200;
/// Longest wait between two tries of a failing sink (a `Retry-After` is capped here too).
pub const SINK_BACKOFF_MAX_MS: u64 = 30_000;
/// Wait before resending a batch the sink refused (a configuration problem:
/// bad token, missing log group). Records are kept; an operator fixes the sink.
pub const SINK_REFUSED_WAIT_MS: u64 = 60_000;
/// How often an idle sink looks for new records (besides being woken).
pub const SINK_IDLE_POLL_MS: u64 = 500;
/// Records read from the store per batch at most (a sink's own limit may be lower).
pub const SINK_READ_MAX: usize = 1_000;
/// How long a replica holds the right to ship a sink without renewing it
/// (wall time: it is about whether a process is alive). A replica that dies
/// hands its sinks to another after this.
pub const SINK_LEASE_MS: i64 = 15_000;
/// A held lease is renewed once less than this is left of it: a batch
/// starts with at least this long before another replica may take over, and
/// a busy sink renews about once per `SINK_LEASE_MS - SINK_LEASE_RENEW_MS`
/// instead of writing to the store before every batch.
pub const SINK_LEASE_RENEW_MS: i64 = 10_000;
/// How long a shutdown waits for each sink's last batch.
pub const SINK_FLUSH_GRACE_MS: u64 = 5_000;

/// Starts one shipping task per sink.
pub fn spawn_all(
    state: &AppState,
    token: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    for sink in state.pipeline.sinks.iter().cloned() {
        let st = state.clone();
        let token = token.clone();
        tasks.spawn(async move { run(st, sink, token).await });
    }
}

fn to_ship(row: tg_store::ChainRow, now: chrono::DateTime<chrono::Utc>) -> ShipRecord {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("kind".to_owned(), row.kind);
    for (k, v) in [
        ("run_id", row.subject_run),
        ("correlation_id", row.correlation_id),
        ("service", row.service),
    ] {
        if let Some(v) = v {
            fields.insert(k.to_owned(), v);
        }
    }
    ShipRecord {
        seq: row.seq,
        time: row.at.unwrap_or(now),
        json: row.record_json,
        fields,
    }
}

/// The records after `cursor` that fit one call to `sink` (at least one).
async fn next_batch(
    state: &AppState,
    sink: &dyn Sink,
    cursor: u64,
) -> Result<Vec<ShipRecord>, tg_store::StoreError> {
    let limits = sink.limits();
    let want = limits.records_max.clamp(1, SINK_READ_MAX);
    let rows = state
        .store
        .chain_rows_after(cursor, i64::try_from(want).unwrap_or(1))
        .await?;
    let now = state.clock.now();
    let mut batch: Vec<ShipRecord> = rows.into_iter().map(|r| to_ship(r, now)).collect();
    // At least one: a record over the byte limit alone goes alone, and the sink names it.
    batch.truncate(limits.fit(&batch).max(1));
    Ok(batch)
}

async fn report_lag(state: &AppState, name: &str, cursor: u64) {
    if let Ok(Some((head, _))) = state.store.audit_head().await {
        crate::metrics::sink_lag(name, head.saturating_sub(cursor));
    }
}

/// Ships until cancelled; then one bounded last try.
pub async fn run(state: AppState, sink: Arc<dyn Sink>, token: CancellationToken) {
    let name = sink.name().to_owned();
    let mut cursor = loop {
        match state.store.sink_cursor(&name).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "cannot read the sink's cursor; will retry");
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(SINK_BACKOFF_MAX_MS)) => {}
                }
            }
        }
    };
    let mut backoff = SINK_BACKOFF_MIN_MS;
    let mut lease = None;
    loop {
        if token.is_cancelled() {
            let _ = tokio::time::timeout(
                Duration::from_millis(SINK_FLUSH_GRACE_MS),
                ship_once(&state, sink.as_ref(), &name, &mut cursor, &mut lease),
            )
            .await;
            return;
        }
        let wait = match ship_once(&state, sink.as_ref(), &name, &mut cursor, &mut lease).await {
            Shipped::Some => {
                backoff = SINK_BACKOFF_MIN_MS;
                continue;
            }
            Shipped::Nothing => {
                backoff = SINK_BACKOFF_MIN_MS;
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = state.audited.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(SINK_IDLE_POLL_MS)) => {}
                }
                continue;
            }
            Shipped::Failed(after) => {
                let wait = after.unwrap_or(backoff).min(SINK_BACKOFF_MAX_MS);
                backoff = backoff.saturating_mul(2).min(SINK_BACKOFF_MAX_MS);
                wait
            }
            Shipped::Refused => SINK_REFUSED_WAIT_MS,
        };
        tokio::select! {
            _ = token.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
}

enum Shipped {
    Some,
    Nothing,
    /// Try again after this many ms (the sink's Retry-After), or the backoff.
    Failed(Option<u64>),
    Refused,
}

/// Ships the next batch after `cursor`, if any. `lease` is when this
/// replica's right to ship the sink ends, as last taken: it is taken (or
/// renewed) only when there is something to ship and less than
/// [`SINK_LEASE_RENEW_MS`] of it is left, so an idle sink writes nothing.
async fn ship_once(
    state: &AppState,
    sink: &dyn Sink,
    name: &str,
    cursor: &mut u64,
    lease: &mut Option<chrono::DateTime<chrono::Utc>>,
) -> Shipped {
    let read = |cursor: u64| async move {
        let batch = next_batch(state, sink, cursor).await;
        if let Err(e) = &batch {
            tracing::error!(sink = %name, error = %e, "cannot read audit records to ship");
        }
        batch
    };
    let Ok(mut batch) = read(*cursor).await else {
        return Shipped::Failed(None);
    };
    if batch.is_empty() {
        report_lag(state, name, *cursor).await;
        return Shipped::Nothing;
    }
    // Replicas share the cursor; one ships a sink at a time: the lease holder,
    // from the stored cursor (another replica may have moved it).
    let wall = chrono::Utc::now();
    let fresh = lease
        .is_some_and(|until| until - wall > chrono::Duration::milliseconds(SINK_LEASE_RENEW_MS));
    if !fresh {
        let until = wall + chrono::Duration::milliseconds(SINK_LEASE_MS);
        match state
            .store
            .hold_sink(name, &state.instance, wall, until)
            .await
        {
            Ok(Some(stored)) => {
                *lease = Some(until);
                if stored > *cursor {
                    *cursor = stored;
                    let Ok(again) = read(*cursor).await else {
                        return Shipped::Failed(None);
                    };
                    batch = again;
                }
            }
            Ok(None) => {
                *lease = None;
                return Shipped::Nothing;
            }
            Err(e) => {
                *lease = None;
                tracing::error!(sink = %name, error = %e, "cannot take the sink's lease");
                return Shipped::Failed(None);
            }
        }
    }
    let Some(last) = batch.last().map(|r| r.seq) else {
        report_lag(state, name, *cursor).await;
        return Shipped::Nothing;
    };
    let n = batch.len();
    match sink.send(&batch).await {
        Ok(()) => {
            if let Err(e) = state
                .store
                .advance_sink(name, last, state.clock.now())
                .await
            {
                // Shipped but not recorded: the batch is sent again after a restart.
                tracing::error!(sink = %name, error = %e, "cannot record the sink's cursor");
            }
            *cursor = last;
            crate::metrics::sink_shipped(name, n);
            report_lag(state, name, *cursor).await;
            Shipped::Some
        }
        Err(err) => {
            let (kind, wait, refused) = match &err {
                ShipError::Retryable { retry_after, .. } => (
                    "retryable",
                    retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    false,
                ),
                ShipError::Refused { .. } => ("refused", None, true),
            };
            crate::metrics::sink_failed(name, kind);
            report_lag(state, name, *cursor).await;
            let text = err.to_string();
            if let Err(e) = state
                .store
                .sink_failed(name, &text, state.clock.now())
                .await
            {
                tracing::error!(sink = %name, error = %e, "cannot record the sink's failure");
            }
            if refused {
                tracing::error!(sink = %name, error = %text, "the sink refused audit records; they are kept and sent again");
                Shipped::Refused
            } else {
                tracing::warn!(sink = %name, error = %text, "audit sink unavailable; will retry");
                Shipped::Failed(wait)
            }
        }
    }
}
