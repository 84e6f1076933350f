//! The outbox at the API: list pending actions and dead letters, read one
//! action with its attempts, and replay a dead letter.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tg_store::{RetryError, StoredAction};

use crate::AppState;
use crate::problem::Problem;

/// Default actions per page of `GET /v1/actions`.
pub const ACTIONS_PAGE_DEFAULT: i64 = 100;
/// Most actions per page of `GET /v1/actions` (`limit` above it is refused).
pub const ACTIONS_PAGE_MAX: i64 = 500;
/// Most attempts shown for one action.
pub const ATTEMPTS_SHOWN_MAX: i64 = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: String,
    #[serde(default)]
    limit: Option<i64>,
    /// Only actions with an id greater than this (the previous page's `next_after`).
    #[serde(default)]
    after: Option<i64>,
}

pub(crate) fn action_json(a: &StoredAction) -> Value {
    let status = if a.dead {
        "dead"
    } else {
        match a.status {
            tg_model::ActionStatus::Pending => "pending",
            tg_model::ActionStatus::Delivered => "delivered",
            tg_model::ActionStatus::Failed => "failed",
            tg_model::ActionStatus::NotExecuted => "not_executed",
        }
    };
    json!({
        "id": a.id,
        "run_id": a.run_id,
        "action": a.kind,
        // The system acted on (the one kind -> target map, as attempt
        // records name it) and the outbox lane the action waits in.
        "target": a.kind.target(),
        "lane": tg_store::OutboxTarget::of(a.kind),
        "status": status,
        "idempotency_key": a.planned.idempotency_key,
        "service": a.planned.service,
        "team": a.planned.team,
        "title": a.planned.title,
        "attempts": a.attempts,
        "next_attempt_at": a.next_attempt_at,
        "last_error": a.last_error,
        "result": a.result,
    })
}

fn read_error(e: &tg_store::StoreError) -> Problem {
    Problem::internal("the store cannot be read", e)
}

/// `GET /v1/actions?status=pending|dead[&limit=N][&after=ID]`, in decision order.
pub(crate) async fn list(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = q.map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "Invalid query",
            e.body_text(),
        )
    })?;
    if !matches!(q.status.as_str(), "pending" | "dead") {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "Invalid query",
            format!(
                "status {:?} is not one of pending, dead",
                tg_engine::truncate(&q.status, 32)
            ),
        )
        .field("status"));
    }
    let limit = q.limit.unwrap_or(ACTIONS_PAGE_DEFAULT);
    if !(1..=ACTIONS_PAGE_MAX).contains(&limit) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "limit-exceeded",
            "A limit was exceeded",
            format!("limit {limit} is outside 1..={ACTIONS_PAGE_MAX}"),
        )
        .field("limit")
        .limit("ACTIONS_PAGE_MAX"));
    }
    let actions = state
        .store
        .actions_with_status(&q.status, q.after.unwrap_or(0), limit)
        .await
        .map_err(|e| read_error(&e))?;
    let next_after = (i64::try_from(actions.len()).unwrap_or(0) == limit)
        .then(|| actions.last().map(|a| a.id))
        .flatten();
    let counts = state
        .store
        .outbox_counts(state.clock.now())
        .await
        .map_err(|e| read_error(&e))?;
    Ok(Json(json!({
        "actions": actions.iter().map(action_json).collect::<Vec<_>>(),
        "next_after": next_after,
        "outbox": counts,
    }))
    .into_response())
}

#[expect(
    clippy::result_large_err,
    reason = "a Problem is what every handler returns; this runs once per request"
)]
fn parse_id(id: &str) -> Result<i64, Problem> {
    id.parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| Problem::not_found("action"))
}

/// `GET /v1/actions/{id}`: the action and its recorded attempts.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let action = state
        .store
        .action_by_id(id)
        .await
        .map_err(|e| read_error(&e))?
        .ok_or_else(|| Problem::not_found("action"))?;
    let attempts = state
        .store
        .attempts_of(id, ATTEMPTS_SHOWN_MAX)
        .await
        .map_err(|e| read_error(&e))?;
    let retries = state
        .store
        .retries_of(id, ATTEMPTS_SHOWN_MAX)
        .await
        .map_err(|e| read_error(&e))?;
    let mut body = action_json(&action);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("attempt_history".into(), history(&attempts, &retries));
    }
    Ok(Json(body).into_response())
}

/// The attempts and the operator retries, in the order they happened: each
/// retry right after the attempt it followed. Entries carry `kind`: `attempt`
/// (an attempt row) or `operator_retry` (`by`: the verified caller, `null` with
/// inbound identity disabled; `at`; `budget_spent`: the attempts it reset).
fn history(attempts: &[tg_store::AttemptRow], retries: &[tg_store::RetryRow]) -> Value {
    let retry_json = |r: &tg_store::RetryRow| {
        json!({
            "kind": "operator_retry",
            "after_attempt": r.after_attempt,
            "by": r.retried_by,
            "at": r.retried_at,
            "budget_spent": r.budget_spent,
        })
    };
    let mut out = Vec::with_capacity(attempts.len().saturating_add(retries.len()));
    let mut pending = retries.iter().peekable();
    for a in attempts {
        while let Some(r) = pending.next_if(|r| r.after_attempt < a.attempt) {
            out.push(retry_json(r));
        }
        let mut entry = json!(a);
        if let Some(obj) = entry.as_object_mut() {
            obj.insert("kind".into(), json!("attempt"));
        }
        out.push(entry);
    }
    out.extend(pending.map(retry_json));
    Value::Array(out)
}

/// `POST /v1/actions/{id}/retry`: a dead letter goes back to the outbox with a
/// fresh attempt budget (202); anything else is refused (404, 409).
/// The retry is recorded with the verified caller (with inbound identity on)
/// and the time, and shows in the action's `attempt_history`.
pub(crate) async fn retry(
    State(state): State<AppState>,
    caller: Option<axum::Extension<tg_identity::Caller>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let by = crate::auth::submitted_by(caller.as_ref().map(|c| &c.0));
    let now = state.clock.now();
    match state.store.retry_dead(id, by.as_deref(), now).await {
        Ok(action) => {
            tracing::info!(
                action_id = id,
                run_id = %action.run_id,
                by = by.as_deref().unwrap_or("(identity disabled)"),
                "dead letter retried by an operator"
            );
            state.outbox.notify_one();
            let mut body = action_json(&action);
            if let Some(obj) = body.as_object_mut() {
                obj.insert("retried_by".into(), json!(by));
                obj.insert("retried_at".into(), json!(now));
            }
            Ok((StatusCode::ACCEPTED, Json(body)).into_response())
        }
        Err(RetryError::NotFound(_)) => Err(Problem::not_found("action")),
        Err(e @ RetryError::NotDead { .. }) => Err(Problem::new(
            StatusCode::CONFLICT,
            "not-dead",
            "Action is not a dead letter",
            e.to_string(),
        )),
        Err(RetryError::Store(e)) => Err(Problem::internal("the store cannot be written", &e)),
    }
}
