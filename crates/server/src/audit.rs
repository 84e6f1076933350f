//! The audit trail at run time: the configuration record at start, signed
//! checkpoints, and the postmortem query (`GET /v1/audit`).

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tg_audit::SigningKey;
use tg_model::{ConfigStep, StepKind, StepRecord};
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::problem::Problem;

/// How often the checkpointer looks at the chain's head (besides being woken).
pub const CHECKPOINT_POLL_MS: u64 = 1_000;
/// Records `GET /v1/audit` returns by default.
pub const AUDIT_PAGE_DEFAULT: i64 = 5_000;
/// Longest filter value accepted by `GET /v1/audit`.
pub const AUDIT_FILTER_CHARS_MAX: usize = 256;

/// Signed checkpoints (`audit.checkpoint`).
pub struct CheckpointSettings {
    /// Wiped on drop (ed25519-dalek zeroizes its signing keys).
    pub key: SigningKey,
    pub every_records: u64,
    pub every_secs: u64,
}

/// What the audit tasks need from the configuration.
/// (The configuration's hash is the policy's: `build::Policy::config_sha256`,
/// replaced by a reload.)
pub struct AuditSettings {
    pub checkpoint: Option<CheckpointSettings>,
}

impl std::fmt::Debug for AuditSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSettings")
            .field("checkpoints", &self.checkpoint.is_some())
            .finish()
    }
}

/// Builds the settings; the key is read through the secret source and never shown.
pub fn settings(
    config: &tg_config::Config,
    secrets: &dyn tg_config::SecretSource,
) -> anyhow::Result<AuditSettings> {
    let c = &config.audit.checkpoint;
    let checkpoint = match &c.key {
        None => None,
        Some(r) => {
            let pem = secrets
                .read(r)
                .map_err(|e| anyhow::anyhow!("audit.checkpoint.key: {e}"))?;
            let key = tg_audit::signing_key_from_pem(pem.expose())
                .map_err(|e| anyhow::anyhow!("audit.checkpoint.key: {e}"))?;
            Some(CheckpointSettings {
                key,
                every_records: c.every_records,
                every_secs: c.every_secs,
            })
        }
    };
    Ok(AuditSettings { checkpoint })
}

/// Records what this process loaded when it differs from the last record of
/// it: a policy or configuration change is on the chain, at the time it took effect.
pub async fn record_config_loaded(state: &AppState) -> anyhow::Result<()> {
    let policy = state.pipeline.policy();
    let policy_version = policy.gates.version().to_owned();
    let config_sha256 = policy.config_sha256.clone();
    let last = state.store.last_step(StepKind::ConfigLoaded).await?;
    let previous = last.as_ref().and_then(|s| s.config.clone());
    if previous
        .as_ref()
        .is_some_and(|p| p.policy_version == policy_version && p.config_sha256 == config_sha256)
    {
        return Ok(());
    }
    let now = state.clock.now();
    let step = StepRecord {
        config: Some(ConfigStep {
            policy_version: policy_version.clone(),
            config_sha256: config_sha256.clone(),
            previous_policy_version: previous.as_ref().map(|p| p.policy_version.clone()),
            previous_config_sha256: previous.map(|p| p.config_sha256),
        }),
        ..StepRecord::new(
            StepKind::ConfigLoaded,
            format!(
                "config:{}:{}",
                config_sha256.as_str(),
                now.timestamp_millis()
            ),
            now,
            "gate",
        )
    };
    state.store.append_step(step, None).await?;
    tracing::info!(policy_version = %policy_version, config_sha256 = %config_sha256, "configuration recorded on the audit chain");
    state.audited.notify_waiters();
    Ok(())
}

/// Signs the chain's head when enough has been sealed since the last
/// checkpoint (or enough time has passed with anything new). Does nothing
/// without a key. The shutdown checkpoint is the audit-file writer's, so the
/// file's last catch-up includes it.
pub async fn checkpoint_task(state: AppState, token: CancellationToken) {
    let Some(cp) = state.pipeline.audit.checkpoint.as_ref() else {
        return;
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = state.audited.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(CHECKPOINT_POLL_MS)) => {}
        }
        if let Err(e) = checkpoint_if_due(&state, cp, false).await {
            tracing::error!(error = %e, "audit checkpoint failed; will retry");
        }
    }
}

/// One checkpoint decision. `force`: sign whatever is new (shutdown).
pub async fn checkpoint_if_due(
    state: &AppState,
    cp: &CheckpointSettings,
    force: bool,
) -> anyhow::Result<Option<u64>> {
    let Some((head_seq, head_hash)) = state.store.audit_head().await? else {
        return Ok(None);
    };
    let last = state.store.last_step(StepKind::Checkpoint).await?;
    let now = state.clock.now();
    let (since, last_at) = match &last {
        // Records sealed after the last checkpoint record.
        Some(l) => (head_seq.saturating_sub(l.seq), Some(l.at)),
        None => (head_seq, None),
    };
    if since == 0 {
        return Ok(None);
    }
    let old_enough = last_at.is_none_or(|at| {
        (now - at).num_seconds() >= i64::try_from(cp.every_secs).unwrap_or(i64::MAX)
    });
    if !(force || since >= cp.every_records || old_enough) {
        return Ok(None);
    }
    let signed = tg_audit::sign_checkpoint(&cp.key, head_seq, &head_hash, &now);
    let step = StepRecord {
        checkpoint: Some(signed),
        ..StepRecord::new(
            StepKind::Checkpoint,
            format!("checkpoint:{head_seq}"),
            now,
            "gate",
        )
    };
    // Another record may have been sealed meanwhile: the checkpoint still signs
    // a head that was the chain's, and lands after it.
    state.store.append_step(step, None).await?;
    crate::metrics::audit_checkpoint();
    state.audited.notify_waiters();
    Ok(Some(head_seq))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    from: Option<DateTime<Utc>>,
    #[serde(default)]
    to: Option<DateTime<Utc>>,
    #[serde(default)]
    limit: Option<i64>,
}

fn bad_query(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-query",
        "Invalid query",
        detail,
    )
}

/// `GET /v1/audit?run_id=|correlation_id=|service=[&from=&to=][&limit=]`:
/// the records and the story, in time order, each record's hash rechecked.
pub(crate) async fn get_audit(
    State(state): State<AppState>,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(q) = q.map_err(|e| bad_query(e.body_text()))?;
    if q.run_id.is_none() && q.correlation_id.is_none() && q.service.is_none() {
        return Err(
            bad_query("name run_id, correlation_id or service (with from/to to bound it)")
                .field("run_id"),
        );
    }
    for (name, v) in [
        ("run_id", &q.run_id),
        ("correlation_id", &q.correlation_id),
        ("service", &q.service),
    ] {
        if v.as_ref()
            .is_some_and(|v| v.chars().count() > AUDIT_FILTER_CHARS_MAX)
        {
            return Err(bad_query(format!(
                "{name} is longer than {AUDIT_FILTER_CHARS_MAX} characters"
            ))
            .field(name)
            .limit(AUDIT_FILTER_CHARS_MAX.to_string()));
        }
    }
    if let (Some(f), Some(t)) = (q.from, q.to)
        && f > t
    {
        return Err(bad_query("from is after to").field("from"));
    }
    let limit = q.limit.unwrap_or(AUDIT_PAGE_DEFAULT);
    if !(1..=tg_store::AUDIT_QUERY_ROWS_MAX).contains(&limit) {
        return Err(bad_query(format!(
            "limit {limit} is outside 1..={}",
            tg_store::AUDIT_QUERY_ROWS_MAX
        ))
        .field("limit")
        .limit(tg_store::AUDIT_QUERY_ROWS_MAX.to_string()));
    }
    let query = tg_store::AuditQuery {
        run_id: q.run_id.clone(),
        correlation_id: q.correlation_id.clone(),
        service: q.service.clone(),
        from: q.from,
        to: q.to,
        limit,
    };
    let (records, truncated) = state
        .store
        .audit_query(&query)
        .await
        .map_err(|e| Problem::internal("the audit trail cannot be read", &e))?;
    let story = tg_audit::story::story(&records);
    let hashes_ok = story.iter().all(|e| e.hash_ok);
    Ok(Json(json!({
        "query": {
            "run_id": q.run_id, "correlation_id": q.correlation_id, "service": q.service,
            "from": q.from, "to": q.to, "limit": limit,
        },
        "records": records.len(),
        "truncated": truncated,
        // Each record's own hash is recomputed here; the links between records
        // (and the checkpoints' signatures) are checked over the whole chain by `audit verify`.
        "hashes_ok": hashes_ok,
        "story": story,
        "chain": records,
    })))
}

/// `GET /v1/audit/sinks`: each audit sink's cursor, lag and last error.
pub(crate) async fn get_sinks(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let read = |e: tg_store::StoreError| Problem::internal("the audit trail cannot be read", &e);
    let head = state
        .store
        .audit_head()
        .await
        .map_err(read)?
        .map_or(0, |(s, _)| s);
    let cursors = state.store.sink_cursors().await.map_err(read)?;
    let sinks: Vec<Value> = state
        .pipeline
        .sinks
        .iter()
        .map(|sink| {
            let c = cursors.iter().find(|c| c.sink == sink.name());
            let seq = c.map_or(0, |c| c.seq);
            json!({
                "sink": sink.name(),
                "shipped_upto": seq,
                "lag_records": head.saturating_sub(seq),
                "updated_at": c.map(|c| c.updated_at),
                "last_error": c.and_then(|c| c.last_error.clone()),
            })
        })
        .collect();
    Ok(Json(json!({ "head": head, "sinks": sinks })))
}
