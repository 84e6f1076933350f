//! The kill switch: runtime autonomy caps per service, team or everything.
//! `POST /v1/autonomy` sets or lifts a cap (scope `admin`), audited with the
//! caller; `GET /v1/autonomy` shows each catalog service's effective level.
//! A cap is read in every decision's transaction: it applies to the next
//! decision, with no restart. Caps only lower a level; raising one is a
//! catalog change (recorded on the chain at the next start).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tg_model::AutonomyLevel;

use crate::AppState;
use crate::problem::Problem;

/// Longest service or team name in a scope.
pub const SCOPE_NAME_CHARS_MAX: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetCap {
    /// `all`, `team:<team>` or `service:<service>`.
    scope: String,
    /// The cap; `null` lifts it.
    level: Option<AutonomyLevel>,
    #[serde(default)]
    reason: Option<String>,
}

fn bad(field: &str, detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-body",
        "Invalid body",
        detail,
    )
    .field(field)
}

#[expect(
    clippy::result_large_err,
    reason = "a Problem is the handler's answer; it is built once per request"
)]
fn check_scope(state: &AppState, scope: &str) -> Result<(), Problem> {
    if scope == "all" {
        return Ok(());
    }
    let (kind, name) = scope.split_once(':').ok_or_else(|| {
        bad(
            "scope",
            "scope is `all`, `team:<team>` or `service:<service>`",
        )
    })?;
    if name.is_empty()
        || name.chars().count() > SCOPE_NAME_CHARS_MAX
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad(
            "scope",
            format!("{kind} name must be 1..={SCOPE_NAME_CHARS_MAX} of [A-Za-z0-9._-]"),
        ));
    }
    match kind {
        "team" if state.pipeline.policy().catalog.known_teams().contains(name) => Ok(()),
        "team" => Err(bad("scope", format!("team {name:?} is not in the catalog"))),
        // An unlisted service may still send alerts (at the catalog's default level).
        "service" => Ok(()),
        _ => Err(bad(
            "scope",
            "scope is `all`, `team:<team>` or `service:<service>`",
        )),
    }
}

/// `POST /v1/autonomy`.
pub(crate) async fn set(
    State(state): State<AppState>,
    caller: Option<axum::Extension<tg_identity::Caller>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, Problem> {
    let req: SetCap = serde_json::from_slice(&body)
        .map_err(|e| bad("", format!("not an autonomy change: {e}")))?;
    check_scope(&state, &req.scope)?;
    let reason = req
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > tg_store::CAP_REASON_CHARS_MAX)
    {
        return Err(bad(
            "reason",
            format!("longer than {} characters", tg_store::CAP_REASON_CHARS_MAX),
        ));
    }
    let by = crate::auth::submitted_by(caller.as_ref().map(|c| &c.0))
        .unwrap_or_else(|| "anonymous (identity disabled)".to_owned());
    let now = state.clock.now();
    let step = state
        .store
        .set_autonomy_cap(&req.scope, req.level, reason.as_deref(), &by, now)
        .await
        .map_err(|e| Problem::internal("the store cannot be written", &e))?;
    tracing::warn!(scope = %req.scope, level = ?req.level.map(AutonomyLevel::as_str), by = %by, "autonomy cap changed");
    state.audited.notify_waiters();
    Ok(Json(json!({
        "scope": req.scope,
        "level": req.level,
        "from": step.autonomy.as_ref().and_then(|a| a.from),
        "by": by,
        "at": now,
        "audit_seq": step.seq,
    })))
}

/// `GET /v1/autonomy`: the caps in force and every catalog service's level.
pub(crate) async fn get(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let caps = state
        .store
        .autonomy_caps()
        .await
        .map_err(|e| Problem::internal("the store cannot be read", &e))?;
    let cap_of = |scope: &str| caps.iter().find(|c| c.scope == scope).map(|c| c.level);
    let policy = state.pipeline.policy();
    let catalog = &policy.catalog;
    let services: Vec<Value> = catalog
        .services
        .iter()
        .map(|(name, svc)| {
            let applied = [
                cap_of("all"),
                cap_of(&format!("team:{}", svc.team)),
                cap_of(&format!("service:{name}")),
            ]
            .into_iter()
            .flatten()
            .min();
            let configured = catalog.autonomy_for(name);
            json!({
                "service": name,
                "team": svc.team,
                "configured": configured,
                "cap": applied,
                "effective": applied.map_or(configured, |c| configured.min(c)),
            })
        })
        .collect();
    Ok(Json(json!({ "caps": caps, "services": services })))
}
