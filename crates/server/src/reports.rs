//! `GET /v1/reports/autonomy`: per service, the evidence for moving up a
//! level: runs, what the gate would have done, how human verdicts on its
//! drafts agreed with it, false and missed pages, and whether the configured
//! bar (`review.promotion`) is met.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tg_config::PromotionBar;
use tg_model::AutonomyLevel;
use tg_store::ServiceEvidence;

use crate::AppState;
use crate::problem::Problem;

/// Longest window of a report (a year).
pub const REPORT_WINDOW_DAYS_MAX: i64 = 366;
/// Default window.
pub const REPORT_WINDOW_DEFAULT: &str = "30d";

/// One service's line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceReport {
    pub service: String,
    pub level: AutonomyLevel,
    pub next_level: Option<AutonomyLevel>,
    pub runs: u64,
    /// Human verdicts: drafts approved or rejected, and incidents humans opened
    /// by another path for a run the gate did not act on.
    pub verdicts: u64,
    /// Verdicts that matched the gate's own outcome.
    pub agreed: u64,
    /// `agreed / verdicts`; `None` before any verdict.
    pub agreement: Option<f64>,
    /// Pages the gate would have sent that a human rejected.
    pub false_pages: u64,
    /// Pages the gate refused that a human approved, or opened by another path.
    pub missed_pages: u64,
    pub expired: u64,
    pub meets_bar: bool,
    /// Why not, when it does not.
    pub short_of: Vec<String>,
}

/// The report line of one service (pure).
pub fn service_report(
    service: &str,
    level: AutonomyLevel,
    ev: &ServiceEvidence,
    bar: &PromotionBar,
) -> ServiceReport {
    let mut verdicts = 0;
    let mut agreed = 0;
    let mut expired = 0;
    for k in ev.by_kind.values() {
        verdicts += k.approved_gate_execute
            + k.approved_gate_refused
            + k.rejected_gate_execute
            + k.rejected_gate_refused
            + k.external_gate_execute
            + k.external_gate_refused;
        agreed += k.approved_gate_execute + k.rejected_gate_refused + k.external_gate_execute;
        expired += k.expired;
    }
    let page = ev.by_kind.get("page");
    let agreement = (verdicts > 0).then(|| agreed as f64 / verdicts as f64);
    let next_level = AutonomyLevel::ALL.into_iter().find(|l| *l > level);
    let mut short_of = Vec::new();
    if ev.runs < bar.runs_min {
        short_of.push(format!("runs {} < {}", ev.runs, bar.runs_min));
    }
    if verdicts < bar.verdicts_min {
        short_of.push(format!("human verdicts {verdicts} < {}", bar.verdicts_min));
    }
    match agreement {
        Some(a) if a < bar.agreement_min => {
            short_of.push(format!("agreement {a:.3} < {}", bar.agreement_min));
        }
        _ => {}
    }
    if next_level.is_none() {
        short_of.push("already at the highest level".to_owned());
    }
    ServiceReport {
        service: service.to_owned(),
        level,
        next_level,
        runs: ev.runs,
        verdicts,
        agreed,
        agreement,
        false_pages: page.map_or(0, |p| p.rejected_gate_execute),
        missed_pages: page.map_or(0, |p| p.approved_gate_refused + p.external_gate_refused),
        expired,
        meets_bar: short_of.is_empty(),
        short_of,
    }
}

/// `30d`, `12h`, `90m` as a duration.
fn parse_window(s: &str) -> Option<chrono::Duration> {
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = n.parse().ok().filter(|n| *n > 0)?;
    let d = match unit {
        "d" => chrono::Duration::days(n),
        "h" => chrono::Duration::hours(n),
        "m" => chrono::Duration::minutes(n),
        _ => return None,
    };
    (d <= chrono::Duration::days(REPORT_WINDOW_DAYS_MAX)).then_some(d)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportQuery {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    since: Option<String>,
}

pub(crate) async fn autonomy(
    State(state): State<AppState>,
    q: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let bad =
        |d: String| Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query", d);
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let since_text = q.since.as_deref().unwrap_or(REPORT_WINDOW_DEFAULT);
    let window = parse_window(since_text).ok_or_else(|| {
        bad(format!(
            "since {since_text:?} is not a window like 30d, 12h or 90m (at most {REPORT_WINDOW_DAYS_MAX}d)"
        ))
        .field("since")
    })?;
    let now = state.clock.now();
    let evidence = state
        .store
        .autonomy_evidence(now - window, q.service.as_deref())
        .await
        .map_err(|e| Problem::internal("the store cannot be read", &e))?;
    let policy = state.pipeline.policy();
    let catalog = &policy.catalog;
    let bar = &state.pipeline.promotion;
    let mut services: Vec<String> = catalog.services.keys().cloned().collect();
    services.extend(evidence.keys().cloned());
    services.sort();
    services.dedup();
    let empty = ServiceEvidence::default();
    let lines: Vec<ServiceReport> = services
        .iter()
        .filter(|s| q.service.as_ref().is_none_or(|w| w == *s))
        .map(|s| {
            service_report(
                s,
                catalog.autonomy_for(s),
                evidence.get(s).unwrap_or(&empty),
                bar,
            )
        })
        .collect();
    Ok(Json(json!({
        "since": now - window,
        "until": now,
        "bar": bar,
        "services": lines,
        "evidence": evidence,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tg_store::KindEvidence;

    fn ev(runs: u64, page: KindEvidence) -> ServiceEvidence {
        ServiceEvidence {
            runs,
            by_kind: [("page".to_owned(), page)].into_iter().collect(),
        }
    }

    #[test]
    fn agreement_false_and_missed_pages_and_the_bar() {
        let bar = PromotionBar {
            runs_min: 200,
            agreement_min: 0.95,
            verdicts_min: 20,
        };
        let page = KindEvidence {
            approved_gate_execute: 90,
            rejected_gate_refused: 6,
            rejected_gate_execute: 3,
            approved_gate_refused: 1,
            ..KindEvidence::default()
        };
        let r = service_report(
            "checkout",
            AutonomyLevel::Assist,
            &ev(250, page.clone()),
            &bar,
        );
        assert_eq!((r.verdicts, r.agreed), (100, 96));
        assert_eq!((r.false_pages, r.missed_pages), (3, 1));
        assert_eq!(r.next_level, Some(AutonomyLevel::Limited));
        assert!(r.meets_bar, "{:?}", r.short_of);
        let few = service_report("checkout", AutonomyLevel::Assist, &ev(150, page), &bar);
        assert!(!few.meets_bar);
        assert_eq!(few.short_of, vec!["runs 150 < 200".to_owned()]);
        let worse = KindEvidence {
            approved_gate_execute: 80,
            rejected_gate_execute: 20,
            ..KindEvidence::default()
        };
        let r = service_report("checkout", AutonomyLevel::Assist, &ev(300, worse), &bar);
        assert!(!r.meets_bar);
        assert!(
            r.short_of[0].starts_with("agreement 0.800"),
            "{:?}",
            r.short_of
        );
        // Incidents humans opened by another path count as verdicts: one the
        // gate would have opened agrees, one it refused is a missed page.
        let outside = KindEvidence {
            external_gate_execute: 18,
            external_gate_refused: 2,
            ..KindEvidence::default()
        };
        let r = service_report("checkout", AutonomyLevel::Shadow, &ev(250, outside), &bar);
        assert_eq!((r.verdicts, r.agreed, r.missed_pages), (20, 18, 2));
        assert!(!r.meets_bar, "0.9 < 0.95: {:?}", r.short_of);
        let top = service_report("db", AutonomyLevel::Mim, &ServiceEvidence::default(), &bar);
        assert_eq!(top.next_level, None);
        assert!(top.agreement.is_none());
    }

    #[test]
    fn windows() {
        assert_eq!(parse_window("30d"), Some(chrono::Duration::days(30)));
        assert_eq!(parse_window("12h"), Some(chrono::Duration::hours(12)));
        assert_eq!(parse_window("0d"), None);
        assert_eq!(parse_window("400d"), None);
        assert_eq!(parse_window("d"), None);
        assert_eq!(parse_window(""), None);
        assert_eq!(parse_window("5w"), None);
    }
}
