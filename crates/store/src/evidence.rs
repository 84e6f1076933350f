//! Evidence for moving a service up (or down) a level: what the gate decided
//! and would have done, and what humans did with its drafts. Aggregated in SQL
//! so a month of runs costs one scan, not one row each in memory.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Store, StoreError, to_ms};

/// Per service, per action kind: decisions and human verdicts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct KindEvidence {
    /// The gate's own outcome was `execute` (what it would have done at full autonomy).
    pub gate_would_act: u64,
    /// Actually executed (at the service's level).
    pub executed: u64,
    /// Drafts humans approved / rejected / let expire, by the gate's own outcome.
    pub approved_gate_execute: u64,
    pub approved_gate_refused: u64,
    pub rejected_gate_execute: u64,
    pub rejected_gate_refused: u64,
    pub expired: u64,
    /// Incidents opened outside the gate (`POST /v1/evidence/incidents`) for a
    /// run whose action the gate would have executed too / would not have.
    pub external_gate_execute: u64,
    pub external_gate_refused: u64,
}

/// One service's evidence in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServiceEvidence {
    pub runs: u64,
    pub by_kind: BTreeMap<String, KindEvidence>,
}

impl Store {
    /// Evidence per service for runs decided since `since` (one service, or all).
    pub async fn autonomy_evidence(
        &self,
        since: DateTime<Utc>,
        service: Option<&str>,
    ) -> Result<BTreeMap<String, ServiceEvidence>, StoreError> {
        let mut out: BTreeMap<String, ServiceEvidence> = BTreeMap::new();
        let since_at = since;
        let since = to_ms(since);
        let runs = sqlx::query(
            "SELECT service, COUNT(*) AS n FROM runs WHERE decided_at >= $1 \
             AND ($2 IS NULL OR service = $3) GROUP BY service",
        )
        .bind(since)
        .bind(service)
        .bind(service)
        .fetch_all(&self.read)
        .await?;
        for r in runs {
            let s: String = r.try_get("service")?;
            out.entry(s).or_default().runs = u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0);
        }
        // One row per (service, action) over the decisions' action arrays.
        let sql = match self.backend {
            crate::Backend::Sqlite => {
                "SELECT r.service AS service, json_extract(a.value, '$.action') AS kind, \
                 SUM(CASE WHEN json_extract(a.value, '$.gate_outcome') = 'execute' THEN 1 ELSE 0 END) AS would, \
                 SUM(CASE WHEN json_extract(a.value, '$.outcome') = 'execute' THEN 1 ELSE 0 END) AS did \
                 FROM runs r, json_each(r.decision_json, '$.actions') a \
                 WHERE r.decided_at >= $1 AND r.decision_json IS NOT NULL AND ($2 IS NULL OR r.service = $3) \
                 GROUP BY 1, 2"
            }
            crate::Backend::Postgres => {
                "SELECT r.service AS service, a.value ->> 'action' AS kind, \
                 SUM(CASE WHEN a.value ->> 'gate_outcome' = 'execute' THEN 1 ELSE 0 END) AS would, \
                 SUM(CASE WHEN a.value ->> 'outcome' = 'execute' THEN 1 ELSE 0 END) AS did \
                 FROM runs r, jsonb_array_elements(r.decision_json::jsonb -> 'actions') a \
                 WHERE r.decided_at >= $1 AND r.decision_json IS NOT NULL AND ($2 IS NULL OR r.service = $3) \
                 GROUP BY 1, 2"
            }
        };
        let decided = sqlx::query(sql)
            .bind(since)
            .bind(service)
            .bind(service)
            .fetch_all(&self.read)
            .await?;
        for r in decided {
            let s: String = r.try_get("service")?;
            let kind: String = r.try_get("kind")?;
            let e = out.entry(s).or_default().by_kind.entry(kind).or_default();
            e.gate_would_act = u64::try_from(r.try_get::<i64, _>("would")?).unwrap_or(0);
            e.executed = u64::try_from(r.try_get::<i64, _>("did")?).unwrap_or(0);
        }
        let sql = match self.backend {
            crate::Backend::Sqlite => {
                "SELECT r.service AS service, x.kind AS kind, x.review_state AS verdict, \
                 (SELECT json_extract(d.value, '$.gate_outcome') FROM json_each(r.decision_json, '$.actions') d \
                  WHERE json_extract(d.value, '$.action') = x.kind) AS gate, COUNT(*) AS n \
                 FROM actions x JOIN runs r ON r.run_id = x.run_id \
                 WHERE x.review_state IN ('approved', 'rejected', 'expired') AND r.decided_at >= $1 \
                 AND ($2 IS NULL OR r.service = $3) GROUP BY 1, 2, 3, 4"
            }
            crate::Backend::Postgres => {
                "SELECT r.service AS service, x.kind AS kind, x.review_state AS verdict, \
                 (SELECT d.value ->> 'gate_outcome' FROM jsonb_array_elements(r.decision_json::jsonb -> 'actions') d \
                  WHERE d.value ->> 'action' = x.kind) AS gate, COUNT(*) AS n \
                 FROM actions x JOIN runs r ON r.run_id = x.run_id \
                 WHERE x.review_state IN ('approved', 'rejected', 'expired') AND r.decided_at >= $1 \
                 AND ($2 IS NULL OR r.service = $3) GROUP BY 1, 2, 3, 4"
            }
        };
        let reviewed = sqlx::query(sql)
            .bind(since)
            .bind(service)
            .bind(service)
            .fetch_all(&self.read)
            .await?;
        for r in reviewed {
            let s: String = r.try_get("service")?;
            let kind: String = r.try_get("kind")?;
            let verdict: String = r.try_get("verdict")?;
            let gate: Option<String> = r.try_get("gate")?;
            let n = u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0);
            let e = out.entry(s).or_default().by_kind.entry(kind).or_default();
            let would = gate.as_deref() == Some("execute");
            match (verdict.as_str(), would) {
                ("approved", true) => e.approved_gate_execute += n,
                ("approved", false) => e.approved_gate_refused += n,
                ("rejected", true) => e.rejected_gate_execute += n,
                ("rejected", false) => e.rejected_gate_refused += n,
                _ => e.expired += n,
            }
        }
        for (s, kind, verdict, n) in self.external_counts(since_at, service).await? {
            let e = out.entry(s).or_default().by_kind.entry(kind).or_default();
            match verdict.as_str() {
                "agreed" => e.external_gate_execute += n,
                "disagreed" => e.external_gate_refused += n,
                // `own` (the gate's own incident seen again) and `unmatched`
                // (no decision to compare with) are not evidence either way.
                _ => {}
            }
        }
        Ok(out)
    }
}
