//! `POST /v1/evidence/incidents`: an incident opened by another path (a human
//! in ServiceNow, a PagerDuty webhook, another integration) is reported here
//! and compared with what the gate decided for the same service. That is the
//! shadow evidence no review verdict covers: a page the gate would have sent
//! agrees with the human who sent it; a page it refused is a miss.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tg_model::{ActionKind, CorrelationId};

use crate::AppState;
use crate::problem::Problem;

/// Longest `system` name (`servicenow`, `pagerduty`, ...).
pub const SYSTEM_CHARS_MAX: usize = 32;
/// Longest external identifier.
pub const EXTERNAL_ID_CHARS_MAX: usize = 128;
/// Longest `opened_by`.
pub const OPENED_BY_CHARS_MAX: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Body {
    system: String,
    external_id: String,
    /// `ticket`, `page` or `mim`.
    action: String,
    service: String,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    opened_by: Option<String>,
    /// RFC 3339; the gate's clock when absent.
    #[serde(default)]
    opened_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn bad(field: &str, detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-body",
        "Invalid body",
        detail,
    )
    .field(field.to_owned())
}

/// A bounded, printable field; `None` when absent or blank.
#[expect(
    clippy::result_large_err,
    reason = "a Problem is the handler's answer; it is built once per request"
)]
fn field(v: Option<String>, name: &str, max: usize) -> Result<Option<String>, Problem> {
    let Some(v) = v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.chars().count() > max {
        return Err(
            bad(name, format!("{name} is longer than {max} characters")).limit(max.to_string())
        );
    }
    if v.chars().any(char::is_control) {
        return Err(bad(name, format!("{name} holds a control character")));
    }
    Ok(Some(v))
}

#[expect(
    clippy::result_large_err,
    reason = "a Problem is the handler's answer; it is built once per request"
)]
fn required(v: String, name: &str, max: usize) -> Result<String, Problem> {
    field(Some(v), name, max)?.ok_or_else(|| bad(name, format!("{name} is empty")))
}

pub(crate) async fn report(
    State(state): State<AppState>,
    caller: Option<axum::Extension<tg_identity::Caller>>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let b: Body = serde_json::from_slice(&body)
        .map_err(|e| bad("", format!("not an incident report: {e}")))?;
    let system = required(b.system, "system", SYSTEM_CHARS_MAX)?;
    if !system
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(bad(
            "system",
            "system is lowercase letters, digits, '_' and '-'",
        ));
    }
    let external_id = required(b.external_id, "external_id", EXTERNAL_ID_CHARS_MAX)?;
    let kind = ActionKind::ALL
        .into_iter()
        .find(|k| k.as_str() == b.action)
        .ok_or_else(|| bad("action", "action is ticket, page or mim"))?;
    let service = required(
        b.service,
        "service",
        tg_model::event::limits::NAME_BYTES_MAX,
    )?;
    let environment = field(
        b.environment,
        "environment",
        tg_model::event::limits::NAME_BYTES_MAX,
    )?;
    let correlation_id = match field(b.correlation_id, "correlation_id", EXTERNAL_ID_CHARS_MAX)? {
        Some(c) if CorrelationId::is_valid(&c) => Some(CorrelationId(c)),
        Some(_) => return Err(bad("correlation_id", "not a valid correlation ID")),
        None => None,
    };
    let opened_by = field(b.opened_by, "opened_by", OPENED_BY_CHARS_MAX)?;
    let now = state.clock.now();
    let opened_at = b.opened_at.unwrap_or(now);
    let reported_by = crate::auth::submitted_by(caller.as_ref().map(|c| &c.0))
        .unwrap_or_else(|| "anonymous (identity disabled)".to_owned());
    let window = chrono::Duration::seconds(
        i64::try_from(state.pipeline.review_external_match_secs).unwrap_or(i64::MAX),
    );
    let x = tg_store::ExternalIncident {
        system,
        external_id,
        kind,
        service,
        environment,
        correlation_id,
        opened_by,
        opened_at,
        reported_by,
    };
    let done = state
        .store
        .record_external(&x, window, now)
        .await
        .map_err(|e| Problem::internal("the store cannot be written", &e))?;
    if done.new {
        tracing::info!(system = %x.system, external_id = %x.external_id, verdict = %done.verdict, "external incident recorded");
        state.audited.notify_waiters();
    }
    let status = if done.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(done))).into_response())
}
