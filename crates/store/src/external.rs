//! Incidents that reached an incident tool by another path (a human opened
//! one, another integration did), matched to what the gate decided for the
//! same service: the part of shadow evidence no review verdict covers.

use chrono::{DateTime, Utc};
use sqlx::Row;
use tg_model::{ActionKind, CorrelationId, Decision, ExternalStep, Outcome, StepKind, StepRecord};

use crate::db::corrupt;
use crate::{Store, StoreError, to_ms};

/// Decided runs of a service looked at per report, newest first.
pub const EXTERNAL_CANDIDATES_MAX: i64 = 50;

/// An incident reported from outside.
#[derive(Debug, Clone)]
pub struct ExternalIncident {
    pub system: String,
    pub external_id: String,
    pub kind: ActionKind,
    pub service: String,
    pub environment: Option<String>,
    /// When given, the run is found by it (the gate's own correlation ID).
    pub correlation_id: Option<CorrelationId>,
    pub opened_by: Option<String>,
    pub opened_at: DateTime<Utc>,
    /// Who reported it (the caller of the API).
    pub reported_by: String,
}

/// What a report became.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExternalRecorded {
    /// False when the same (system, external_id) was reported before.
    pub new: bool,
    pub verdict: String,
    pub run_id: Option<String>,
    pub gate_outcome: Option<Outcome>,
}

/// One decided run a report might belong to.
struct Candidate {
    run_id: String,
    correlation_id: String,
    decision: Decision,
}

/// The verdict of a report against the candidates, newest first (pure).
///
/// Any candidate whose action the gate executed makes the incident the gate's
/// own (its ticket seen again by the reporting integration): not evidence.
/// Otherwise the newest candidate with the action decides: the gate's own
/// outcome `execute` means it agreed with the human, anything else a miss.
fn judge(kind: ActionKind, candidates: &[Candidate]) -> (String, Option<usize>, Option<Outcome>) {
    let with_action = || {
        candidates
            .iter()
            .enumerate()
            .filter_map(move |(i, c)| c.decision.get(kind).map(|a| (i, a)))
    };
    if let Some((i, a)) = with_action().find(|(_, a)| a.outcome == Outcome::Execute) {
        return ("own".to_owned(), Some(i), Some(a.gate_outcome));
    }
    match with_action().next() {
        Some((i, a)) if a.gate_outcome == Outcome::Execute => {
            ("agreed".to_owned(), Some(i), Some(a.gate_outcome))
        }
        Some((i, a)) => ("disagreed".to_owned(), Some(i), Some(a.gate_outcome)),
        None => ("unmatched".to_owned(), None, None),
    }
}

impl Store {
    /// Records a report once per (system, external_id), matched to the
    /// service's decided runs (by correlation ID, else those decided within
    /// `window` before it opened), with an audit step record.
    pub async fn record_external(
        &self,
        x: &ExternalIncident,
        window: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<ExternalRecorded, StoreError> {
        let mut tx = self.begin_write().await?;
        let seen = sqlx::query(
            "SELECT verdict, run_id, gate_outcome FROM external_incidents \
             WHERE system = $1 AND external_id = $2",
        )
        .bind(&x.system)
        .bind(&x.external_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = seen {
            let gate: Option<String> = r.try_get("gate_outcome")?;
            return Ok(ExternalRecorded {
                new: false,
                verdict: r.try_get("verdict")?,
                run_id: r.try_get("run_id")?,
                gate_outcome: gate.as_deref().and_then(Outcome::parse),
            });
        }
        let (rows, matched_by) = match &x.correlation_id {
            Some(c) => (
                sqlx::query(
                    "SELECT run_id, correlation_id, decision_json FROM runs \
                     WHERE correlation_id = $1 AND service = $2 AND decision_json IS NOT NULL \
                     ORDER BY decided_at DESC LIMIT $3",
                )
                .bind(c.as_str())
                .bind(&x.service)
                .bind(EXTERNAL_CANDIDATES_MAX)
                .fetch_all(&mut *tx)
                .await?,
                "correlation_id",
            ),
            None => (
                sqlx::query(
                    "SELECT run_id, correlation_id, decision_json FROM runs \
                     WHERE service = $1 AND decided_at >= $2 AND decided_at <= $3 \
                     AND ($4 IS NULL OR environment = $4) AND decision_json IS NOT NULL \
                     ORDER BY decided_at DESC LIMIT $5",
                )
                .bind(&x.service)
                .bind(to_ms(x.opened_at - window))
                .bind(to_ms(x.opened_at))
                .bind(&x.environment)
                .bind(EXTERNAL_CANDIDATES_MAX)
                .fetch_all(&mut *tx)
                .await?,
                "service_window",
            ),
        };
        let mut candidates = Vec::with_capacity(rows.len());
        for r in &rows {
            let text: String = r.try_get("decision_json")?;
            candidates.push(Candidate {
                run_id: r.try_get("run_id")?,
                correlation_id: r.try_get("correlation_id")?,
                decision: serde_json::from_str(&text).map_err(corrupt("runs.decision_json"))?,
            });
        }
        let (verdict, at, gate_outcome) = judge(x.kind, &candidates);
        let matched = at.and_then(|i| candidates.get(i));
        sqlx::query(
            "INSERT INTO external_incidents (system, external_id, kind, service, environment, \
             run_id, gate_outcome, verdict, opened_at, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&x.system)
        .bind(&x.external_id)
        .bind(x.kind.as_str())
        .bind(&x.service)
        .bind(&x.environment)
        .bind(matched.map(|c| c.run_id.as_str()))
        .bind(gate_outcome.map(Outcome::as_str))
        .bind(&verdict)
        .bind(to_ms(x.opened_at))
        .bind(to_ms(now))
        .execute(&mut *tx)
        .await?;
        let step = StepRecord {
            run_id: matched.map(|c| tg_model::RunId(c.run_id.clone())),
            correlation_id: matched.map(|c| CorrelationId(c.correlation_id.clone())),
            external: Some(ExternalStep {
                system: x.system.clone(),
                external_id: x.external_id.clone(),
                action: x.kind.as_str().to_owned(),
                opened_by: x.opened_by.clone(),
                opened_at: x.opened_at,
                matched_by: matched.map(|_| matched_by.to_owned()),
                gate_outcome,
                verdict: verdict.clone(),
            }),
            ..StepRecord::new(
                StepKind::ExternalIncident,
                format!("external:{}:{}", x.system, x.external_id),
                now,
                x.reported_by.clone(),
            )
        };
        crate::audit::append_step(&mut tx, step, Some(&x.service)).await?;
        tx.commit().await?;
        Ok(ExternalRecorded {
            new: true,
            verdict,
            run_id: matched.map(|c| c.run_id.clone()),
            gate_outcome,
        })
    }

    /// Reports in the window per (service, kind, verdict), for the autonomy report.
    pub(crate) async fn external_counts(
        &self,
        since: DateTime<Utc>,
        service: Option<&str>,
    ) -> Result<Vec<(String, String, String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT service, kind, verdict, COUNT(*) AS n FROM external_incidents \
             WHERE opened_at >= $1 AND ($2 IS NULL OR service = $2) GROUP BY 1, 2, 3",
        )
        .bind(to_ms(since))
        .bind(service)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("service")?,
                    r.try_get("kind")?,
                    r.try_get("verdict")?,
                    u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use tg_model::{ActionDecision, AutonomyLevel};

    fn cand(run: &str, page: Option<(Outcome, Outcome)>) -> Candidate {
        let actions = page
            .map(|(outcome, gate_outcome)| ActionDecision {
                action: ActionKind::Page,
                op: Default::default(),
                outcome,
                requested: true,
                gate_outcome,
                reason: String::new(),
                conditions: Vec::new(),
                capped_by: None,
            })
            .into_iter()
            .collect();
        Candidate {
            run_id: run.to_owned(),
            correlation_id: format!("c-{run}"),
            decision: Decision {
                policy_version: "p".into(),
                autonomy: AutonomyLevel::Shadow,
                actions,
                duplicate_of: None,
                resolves: None,
                group: None,
                errors: Vec::new(),
            },
        }
    }

    #[test]
    fn the_newest_run_with_the_action_decides_and_the_gates_own_incident_is_no_evidence() {
        use Outcome::{Execute, Review, Skip};
        let v = |c: &[Candidate]| {
            let (v, i, g) = judge(ActionKind::Page, c);
            (v, i, g)
        };
        assert_eq!(v(&[]), ("unmatched".into(), None, None));
        assert_eq!(v(&[cand("a", None)]), ("unmatched".into(), None, None));
        // Shadow: the gate would have paged (gate execute, outcome skip).
        assert_eq!(
            v(&[cand("a", None), cand("b", Some((Skip, Execute)))]),
            ("agreed".into(), Some(1), Some(Execute))
        );
        // Newest first: the newer refusal decides over an older would-page.
        assert_eq!(
            v(&[
                cand("a", Some((Review, Review))),
                cand("b", Some((Skip, Execute)))
            ]),
            ("disagreed".into(), Some(0), Some(Review))
        );
        // The gate paged for one of them itself: the report is its own page.
        assert_eq!(
            v(&[
                cand("a", Some((Review, Review))),
                cand("b", Some((Execute, Execute)))
            ]),
            ("own".into(), Some(1), Some(Execute))
        );
    }
}
