//! CloudWatch Logs emulator, at `POST /cloudwatch/` (and `POST /`), with
//! `X-Amz-Target: Logs_20140328.PutLogEvents` or `.CreateLogStream`; awsJson 1.1).
//!
//! Authenticates first (SigV4, service `logs`, the sandbox's AWS credentials),
//! then enforces every `PutLogEvents` rule: group and stream exist
//! (`ResourceNotFoundException`), 1..=10,000 events, at most 1,048,576 bytes
//! counted as UTF-8 message bytes + 26 per event, non-empty messages,
//! chronological order, a span of at most 24 hours among valid events.
//! Events more than 2 hours in the future or older than 14 days are rejected
//! individually (`rejectedLogEventsInfo`) while the rest are stored. Errors are
//! `{"__type","message"}`, 400 for client faults and throttling, 500 for
//! `ServiceUnavailableException`. Stored events can be read back in order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::{Value, json};

use crate::SandboxState;
use crate::record::lock;

/// The SigV4 signing name of CloudWatch Logs.
pub const SIGNING_NAME: &str = "logs";
/// Events per `PutLogEvents` at most.
pub const EVENTS_PER_CALL_MAX: usize = 10_000;
/// Bytes per `PutLogEvents` at most (messages + [`EVENT_OVERHEAD_BYTES`] each).
pub const BATCH_BYTES_MAX: usize = 1_048_576;
/// What each event adds to the batch size.
pub const EVENT_OVERHEAD_BYTES: usize = 26;
/// Longest span of valid events in one call, in milliseconds.
pub const SPAN_MS_MAX: i64 = 24 * 3600 * 1000;
/// Events further in the future than this are rejected individually.
pub const FUTURE_MS_MAX: i64 = 2 * 3600 * 1000;
/// Events older than this are rejected individually.
pub const PAST_MS_MAX: i64 = 14 * 24 * 3600 * 1000;
/// Events kept in all; a call that would go beyond answers `ServiceUnavailableException`.
pub const STORED_EVENTS_MAX: usize = 500_000;
/// Log groups, and streams per group, at most.
pub const GROUPS_MAX: usize = 1_000;

const TARGET_PREFIX: &str = "Logs_20140328.";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// One stored log event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEvent {
    pub log_group_name: String,
    pub log_stream_name: String,
    pub timestamp: i64,
    pub message: String,
}

#[derive(Debug, Default)]
struct Inner {
    groups: BTreeMap<String, BTreeSet<String>>,
    events: Vec<LogEvent>,
}

#[derive(Debug, Default)]
pub(crate) struct CloudWatchState {
    inner: Mutex<Inner>,
}

impl CloudWatchState {
    pub(crate) fn create_group(&self, group: &str) {
        let mut g = lock(&self.inner);
        if g.groups.len() < GROUPS_MAX {
            g.groups.entry(group.to_owned()).or_default();
        }
    }

    pub(crate) fn create_stream(&self, group: &str, stream: &str) {
        let mut g = lock(&self.inner);
        if g.groups.len() < GROUPS_MAX || g.groups.contains_key(group) {
            let streams = g.groups.entry(group.to_owned()).or_default();
            if streams.len() < GROUPS_MAX {
                streams.insert(stream.to_owned());
            }
        }
    }

    pub(crate) fn events(&self) -> Vec<LogEvent> {
        lock(&self.inner).events.clone()
    }

    pub(crate) fn reset(&self) {
        *lock(&self.inner) = Inner::default();
    }
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    // Served at the root (`POST /`, as AWS) and under `/cloudwatch/`; merged,
    // not nested, because a nested `/` would not match the trailing slash.
    Router::new()
        .route("/", post(dispatch))
        .route("/cloudwatch/", post(dispatch))
        .layer(DefaultBodyLimit::max(crate::AUDIT_BODY_BYTES_MAX))
}

/// An awsJson 1.1 error.
pub(crate) fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut resp = (
        status,
        axum::Json(json!({"__type": kind, "message": message})),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

fn invalid(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "InvalidParameterException",
        message,
    )
}

/// The answer to an injected fault of `status`.
pub(crate) fn fault_response(status: StatusCode) -> Response {
    match status.as_u16() {
        400 | 429 => error(status, "ThrottlingException", "Rate exceeded"),
        401 | 403 => error(
            status,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        404 => error(
            status,
            "ResourceNotFoundException",
            "The specified log stream does not exist.",
        ),
        s if s >= 500 => error(
            status,
            "ServiceUnavailableException",
            "The service cannot complete the request.",
        ),
        _ => error(status, "InvalidParameterException", "Invalid request."),
    }
}

fn ok(body: Value) -> Response {
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

async fn dispatch(
    State(state): State<Arc<SandboxState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Authentication comes first, as at AWS (awsJson services answer 400).
    if let Err(e) = crate::sigv4::verify(&state, &uri, &headers, &body, SIGNING_NAME) {
        return error(StatusCode::BAD_REQUEST, e.kind, &e.message);
    }
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(op) = target.strip_prefix(TARGET_PREFIX) else {
        return error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            "Operation is not supported.",
        );
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with(CONTENT_TYPE) {
        return error(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "Content-Type must be application/x-amz-json-1.1",
        );
    }
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "The request body is not a JSON object.",
        );
    };
    let now = state.faults.now().timestamp_millis();
    match op {
        "PutLogEvents" => put_log_events(&state.cloudwatch, &req, now),
        "CreateLogStream" => create_log_stream(&state.cloudwatch, &req),
        _ => error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            "Operation is not supported.",
        ),
    }
}

/// `logGroupName` and `logStreamName`, checked against the model's constraints.
fn names(req: &serde_json::Map<String, Value>) -> Result<(String, String), Box<Response>> {
    let group = req.get("logGroupName").and_then(Value::as_str);
    let stream = req.get("logStreamName").and_then(Value::as_str);
    let (Some(group), Some(stream)) = (group, stream) else {
        return Err(Box::new(invalid(
            "1 validation error detected: logGroupName and logStreamName must not be null",
        )));
    };
    let group_ok = (1..=512).contains(&group.len())
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_/#".contains(c));
    if !group_ok {
        return Err(Box::new(invalid(
            "1 validation error detected: Value at 'logGroupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+",
        )));
    }
    if !(1..=512).contains(&stream.len()) || stream.contains([':', '*']) {
        return Err(Box::new(invalid(
            "1 validation error detected: Value at 'logStreamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [^:*]*",
        )));
    }
    Ok((group.to_owned(), stream.to_owned()))
}

fn create_log_stream(cw: &CloudWatchState, req: &serde_json::Map<String, Value>) -> Response {
    let (group, stream) = match names(req) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let mut g = lock(&cw.inner);
    let Some(streams) = g.groups.get_mut(&group) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ResourceNotFoundException",
            "The specified log group does not exist.",
        );
    };
    if streams.contains(&stream) {
        return error(
            StatusCode::BAD_REQUEST,
            "ResourceAlreadyExistsException",
            "The specified log stream already exists",
        );
    }
    if streams.len() >= GROUPS_MAX {
        return error(
            StatusCode::BAD_REQUEST,
            "LimitExceededException",
            "Resource limit exceeded.",
        );
    }
    streams.insert(stream);
    ok(json!({}))
}

fn put_log_events(
    cw: &CloudWatchState,
    req: &serde_json::Map<String, Value>,
    now: i64,
) -> Response {
    let (group, stream) = match names(req) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let Some(Value::Array(items)) = req.get("logEvents") else {
        return invalid(
            "1 validation error detected: Value null at 'logEvents' failed to satisfy constraint: Member must not be null",
        );
    };
    if items.is_empty() || items.len() > EVENTS_PER_CALL_MAX {
        return invalid(&format!(
            "1 validation error detected: Value at 'logEvents' failed to satisfy constraint: Member must have length between 1 and {EVENTS_PER_CALL_MAX} (got {})",
            items.len()
        ));
    }
    let mut events: Vec<(i64, String)> = Vec::with_capacity(items.len());
    let mut bytes = 0usize;
    for (i, e) in items.iter().enumerate() {
        let ts = e.get("timestamp").and_then(Value::as_i64);
        let msg = e.get("message").and_then(Value::as_str);
        let (Some(ts), Some(msg)) = (ts, msg) else {
            return invalid(&format!(
                "1 validation error detected: logEvents.{} needs a timestamp (long) and a message (string)",
                i + 1
            ));
        };
        if ts < 0 {
            return invalid(&format!(
                "1 validation error detected: Value at 'logEvents.{}.member.timestamp' failed to satisfy constraint: Member must have value greater than or equal to 0",
                i + 1
            ));
        }
        if msg.is_empty() {
            return invalid(&format!(
                "1 validation error detected: Value at 'logEvents.{}.member.message' failed to satisfy constraint: Member must have length greater than or equal to 1",
                i + 1
            ));
        }
        bytes = bytes.saturating_add(msg.len() + EVENT_OVERHEAD_BYTES);
        events.push((ts, msg.to_owned()));
    }
    if bytes > BATCH_BYTES_MAX {
        return invalid(&format!(
            "Upload too large: {bytes} bytes exceeds limit of {BATCH_BYTES_MAX}"
        ));
    }
    if events.windows(2).any(|w| match w {
        [a, b] => b.0 < a.0,
        _ => false,
    }) {
        return invalid(
            "Log events in a single PutLogEvents request must be in chronological order.",
        );
    }
    // Individually rejected: too old at the front, too new at the back.
    let too_old_end = events
        .iter()
        .take_while(|(t, _)| *t < now - PAST_MS_MAX)
        .count();
    let too_new_start = events
        .iter()
        .position(|(t, _)| *t > now + FUTURE_MS_MAX)
        .unwrap_or(events.len());
    let valid = events.get(too_old_end..too_new_start).unwrap_or_default();
    if let (Some(first), Some(last)) = (valid.first(), valid.last())
        && last.0 - first.0 > SPAN_MS_MAX
    {
        return invalid(
            "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.",
        );
    }
    let mut g = lock(&cw.inner);
    match g.groups.get(&group) {
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "ResourceNotFoundException",
                "The specified log group does not exist.",
            );
        }
        Some(streams) if !streams.contains(&stream) => {
            return error(
                StatusCode::BAD_REQUEST,
                "ResourceNotFoundException",
                "The specified log stream does not exist.",
            );
        }
        Some(_) => {}
    }
    if g.events.len().saturating_add(valid.len()) > STORED_EVENTS_MAX {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceUnavailableException",
            "The service cannot complete the request.",
        );
    }
    g.events.extend(valid.iter().map(|(t, m)| LogEvent {
        log_group_name: group.clone(),
        log_stream_name: stream.clone(),
        timestamp: *t,
        message: m.clone(),
    }));
    let mut rejected = serde_json::Map::new();
    if too_old_end > 0 {
        rejected.insert("tooOldLogEventEndIndex".into(), json!(too_old_end));
    }
    if too_new_start < events.len() {
        rejected.insert("tooNewLogEventStartIndex".into(), json!(too_new_start));
    }
    let mut body = json!({"nextSequenceToken": format!("{:056}", g.events.len())});
    if !rejected.is_empty()
        && let Some(obj) = body.as_object_mut()
    {
        obj.insert("rejectedLogEventsInfo".into(), Value::Object(rejected));
    }
    ok(body)
}
