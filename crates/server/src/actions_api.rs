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
        "target": tg_store::OutboxTarget::of(a.kind),
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
    let mut body = action_json(&action);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("attempt_history".into(), json!(attempts));
    }
    Ok(Json(body).into_response())
}

/// `POST /v1/actions/{id}/retry`: a dead letter goes back to the outbox with a
/// fresh attempt budget (202); anything else is refused (404, 409).
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    match state.store.retry_dead(id, state.clock.now()).await {
        Ok(action) => {
            tracing::info!(action_id = id, run_id = %action.run_id, "dead letter retried by an operator");
            state.outbox.notify_one();
            Ok((StatusCode::ACCEPTED, Json(action_json(&action))).into_response())
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
