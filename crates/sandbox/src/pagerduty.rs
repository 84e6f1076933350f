//! PagerDuty Events API v2 emulator, under `/pagerduty` (`POST /v2/enqueue`).
//!
//! Validates events as PagerDuty does and answers with its shapes (202
//! `{"status":"success",...}`, 400 `{"status":"invalid event",...}` listing
//! every problem). Keeps alert state per (routing_key, dedup_key): a trigger on
//! an open alert merges into it, acknowledge/resolve apply only to an open alert
//! (otherwise they are dropped, still with 202), a trigger after resolve opens a
//! new alert.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::SandboxState;
use crate::record::{Secret, lock};

/// Largest event PagerDuty accepts, in bytes.
pub const EVENT_BYTES_MAX: usize = 512_000;
/// Alerts kept (open and closed); triggers that would open more fail with 500.
pub const ALERTS_MAX: usize = 10_000;
/// Length of an Events API v2 integration key.
pub const ROUTING_KEY_CHARS: usize = 32;
/// Longest `payload.summary`.
pub const SUMMARY_CHARS_MAX: usize = 1024;
/// Longest `dedup_key`.
pub const DEDUP_KEY_CHARS_MAX: usize = 255;

const SEVERITIES: &[&str] = &["critical", "error", "warning", "info"];

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Triggered,
    Acknowledged,
    Resolved,
}

/// One alert as PagerDuty would hold it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// The integration key it arrived on (redacted in JSON and Debug).
    pub routing_key: Secret,
    pub dedup_key: String,
    pub status: AlertStatus,
    /// Triggers received for this alert, the first included (merges add to it).
    pub trigger_count: u32,
    /// The `payload` of the trigger that opened it.
    pub first_payload: Value,
    /// The `payload` of the latest trigger merged into it.
    pub last_payload: Value,
    /// `links` of the opening trigger (empty when none).
    pub links: Vec<Value>,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Alert {
    pub fn is_open(&self) -> bool {
        self.status != AlertStatus::Resolved
    }
}

#[derive(Debug, Default)]
pub(crate) struct PagerDutyState {
    alerts: Mutex<Vec<Alert>>,
}

impl PagerDutyState {
    pub(crate) fn alerts(&self) -> Vec<Alert> {
        lock(&self.alerts).clone()
    }

    pub(crate) fn reset(&self) {
        lock(&self.alerts).clear();
    }
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new().route("/v2/enqueue", post(enqueue))
}

fn invalid(errors: Vec<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": errors,
        })),
    )
        .into_response()
}

fn unrecognized() -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "status": "Unrecognized object",
            "message": "Event object format is unrecognized",
            "errors": ["JSON parse error"],
        })),
    )
        .into_response()
}

fn is_blank(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(_) => false,
    }
}

/// A validated event.
#[derive(Debug)]
struct Event {
    routing_key: String,
    action: String,
    dedup_key: Option<String>,
    payload: Value,
    links: Vec<Value>,
}

/// Check an event the way PagerDuty does, collecting every problem.
fn validate(event: &Map<String, Value>) -> Result<Event, Vec<String>> {
    let mut errors = Vec::new();
    let routing_key = match event.get("routing_key") {
        Some(Value::String(k)) if !k.trim().is_empty() => {
            if k.chars().count() != ROUTING_KEY_CHARS {
                errors.push(format!(
                    "Length of 'routing_key' is incorrect (should be {ROUTING_KEY_CHARS} characters)"
                ));
            }
            if !k.chars().all(|c| c.is_ascii_alphanumeric()) {
                errors.push("'routing_key' cannot contain non-alphanumeric characters.".into());
            }
            k.clone()
        }
        Some(v) if !is_blank(Some(v)) => {
            errors.push("'routing_key' must be a string".into());
            String::new()
        }
        _ => {
            errors.push("'routing_key' is missing or blank".into());
            String::new()
        }
    };
    let action = match event.get("event_action") {
        Some(Value::String(a)) if ["trigger", "acknowledge", "resolve"].contains(&a.as_str()) => {
            a.clone()
        }
        v if is_blank(v) => {
            errors.push("'event_action' is missing or blank".into());
            String::new()
        }
        _ => {
            errors.push(
                "'event_action' is invalid (must be one of the following: 'trigger', 'acknowledge' or 'resolve')"
                    .into(),
            );
            String::new()
        }
    };
    let dedup_key = match event.get("dedup_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if d.is_empty() => None,
        Some(Value::String(d)) => {
            if d.chars().count() > DEDUP_KEY_CHARS_MAX {
                errors.push(format!(
                    "'dedup_key' is too long (maximum is {DEDUP_KEY_CHARS_MAX} characters)"
                ));
            }
            Some(d.clone())
        }
        Some(_) => {
            errors.push("'dedup_key' must be a string".into());
            None
        }
    };
    if matches!(action.as_str(), "acknowledge" | "resolve") && dedup_key.is_none() {
        errors.push("'dedup_key' is missing or blank".into());
    }
    let payload = event.get("payload").cloned().unwrap_or(Value::Null);
    if action == "trigger" {
        validate_payload(&payload, &mut errors);
    }
    let links = validate_links(event, &mut errors);
    if errors.is_empty() {
        Ok(Event {
            routing_key,
            action,
            dedup_key,
            payload,
            links,
        })
    } else {
        Err(errors)
    }
}

fn validate_payload(payload: &Value, errors: &mut Vec<String>) {
    let Some(p) = payload.as_object() else {
        errors.push("'payload' is missing or blank".into());
        return;
    };
    match p.get("summary") {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            if s.chars().count() > SUMMARY_CHARS_MAX {
                errors.push(format!(
                    "'payload.summary' is too long (maximum is {SUMMARY_CHARS_MAX} characters)"
                ));
            }
        }
        v if is_blank(v) => errors.push("'payload.summary' is missing or blank".into()),
        _ => errors.push("'payload.summary' must be a string".into()),
    }
    match p.get("source") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        v if is_blank(v) => errors.push("'payload.source' is missing or blank".into()),
        _ => errors.push("'payload.source' must be a string".into()),
    }
    match p.get("severity") {
        Some(Value::String(s)) if SEVERITIES.contains(&s.as_str()) => {}
        v if is_blank(v) => errors.push("'payload.severity' is missing or blank".into()),
        _ => errors.push(
            "'payload.severity' is invalid (must be one of the following: 'critical', 'warning', 'error' or 'info')"
                .into(),
        ),
    }
    for field in ["component", "group", "class"] {
        if p.get(field).is_some_and(|v| !v.is_string() && !v.is_null()) {
            errors.push(format!("'payload.{field}' must be a string"));
        }
    }
    match p.get("timestamp") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if DateTime::parse_from_rfc3339(t).is_ok() || lenient_iso(t) => {}
        Some(_) => errors.push("'payload.timestamp' is not a valid ISO 8601 timestamp".into()),
    }
    if p.get("custom_details")
        .is_some_and(|v| v.is_array() || v.is_boolean())
    {
        errors.push("'payload.custom_details' must be an object".into());
    }
}

/// PagerDuty's own examples use `+0000` offsets, which RFC 3339 does not allow.
fn lenient_iso(t: &str) -> bool {
    DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%z").is_ok()
}

fn validate_links(event: &Map<String, Value>, errors: &mut Vec<String>) -> Vec<Value> {
    match event.get("links") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(links)) => {
            for (i, l) in links.iter().enumerate() {
                if !l.get("href").is_some_and(Value::is_string) {
                    errors.push(format!("'links[{i}].href' is missing or blank"));
                }
            }
            if let Some(Value::Array(images)) = event.get("images") {
                for (i, img) in images.iter().enumerate() {
                    let https = img
                        .get("src")
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.starts_with("https://"));
                    if !https {
                        errors.push(format!("'images[{i}].src' must be an HTTPS URL"));
                    }
                }
            }
            links.clone()
        }
        Some(_) => {
            errors.push("'links' must be an array".into());
            Vec::new()
        }
    }
}

async fn enqueue(State(state): State<Arc<SandboxState>>, body: Bytes) -> Response {
    if body.len() > EVENT_BYTES_MAX {
        return invalid(vec![format!(
            "Event is too large ({} bytes; maximum is {EVENT_BYTES_MAX})",
            body.len()
        )]);
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&body) else {
        return unrecognized();
    };
    let event = match validate(&obj) {
        Ok(e) => e,
        Err(errors) => return invalid(errors),
    };
    let now = Utc::now();
    let dedup_key = event
        .dedup_key
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let mut alerts = lock(&state.pagerduty.alerts);
    // INVARIANT: at most one open alert per (routing_key, dedup_key).
    let open = alerts.iter_mut().find(|a| {
        a.is_open() && a.dedup_key == dedup_key && a.routing_key.expose() == event.routing_key
    });
    match (event.action.as_str(), open) {
        ("trigger", Some(alert)) => {
            alert.trigger_count = alert.trigger_count.saturating_add(1);
            alert.last_payload = event.payload;
            alert.updated_at = now;
        }
        ("trigger", None) => {
            if alerts.len() >= ALERTS_MAX {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(json!({
                        "status": "error",
                        "message": format!("sandbox alert store is full ({ALERTS_MAX} alerts)"),
                        "errors": [],
                    })),
                )
                    .into_response();
            }
            alerts.push(Alert {
                routing_key: Secret::new(event.routing_key),
                dedup_key: dedup_key.clone(),
                status: AlertStatus::Triggered,
                trigger_count: 1,
                first_payload: event.payload.clone(),
                last_payload: event.payload,
                links: event.links,
                opened_at: now,
                updated_at: now,
            });
        }
        ("acknowledge", Some(alert)) => {
            alert.status = AlertStatus::Acknowledged;
            alert.updated_at = now;
        }
        ("resolve", Some(alert)) => {
            alert.status = AlertStatus::Resolved;
            alert.updated_at = now;
        }
        // Acknowledge/resolve of an unknown or closed alert is accepted and dropped.
        _ => {}
    }
    drop(alerts);
    (
        StatusCode::ACCEPTED,
        axum::Json(
            json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key}),
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn collects_every_error() {
        let errs = validate(&obj(json!({
            "routing_key": "short!",
            "event_action": "trigger",
            "payload": {"summary": "", "source": "x", "severity": "fatal"}
        })))
        .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].contains("Length of 'routing_key'"));
    }

    #[test]
    fn resolve_needs_dedup_key_but_not_payload() {
        let key = "0123456789abcdef0123456789abcdef";
        let errs =
            validate(&obj(json!({"routing_key": key, "event_action": "resolve"}))).unwrap_err();
        assert_eq!(errs, vec!["'dedup_key' is missing or blank".to_string()]);
        assert!(
            validate(&obj(
                json!({"routing_key": key, "event_action": "resolve", "dedup_key": "k"})
            ))
            .is_ok()
        );
    }
}
