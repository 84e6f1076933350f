//! OTLP/HTTP logs receiver, under `/otlp` (`POST /v1/logs`, JSON encoding).
//!
//! Validates the `ExportLogsServiceRequest` shape (resourceLogs, scopeLogs,
//! logRecords; `timeUnixNano` an unsigned integer as a string or number;
//! `body` and attribute values `AnyValue`s with exactly one member; attribute
//! lists of `{key, value}`), answers 400 with a `google.rpc.Status` JSON on a
//! bad shape, 415 for anything but `application/json`, 401 when a bearer
//! token is required and missing or wrong. Accepted log records are kept, in
//! order, with their resource attributes. A test can make the next answer a
//! `partialSuccess` rejecting the last N records of that request.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::SandboxState;
use crate::record::lock;

/// Log records kept; a request that would go beyond answers 503.
pub const OTLP_RECORDS_MAX: usize = 500_000;
/// Nesting of `AnyValue`s (arrays, kvlists) accepted.
pub const ANY_VALUE_DEPTH_MAX: usize = 16;

/// One accepted log record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OtlpLogRecord {
    /// The resource's attributes (KeyValue list, as sent).
    pub resource_attributes: Value,
    pub scope_name: Option<String>,
    /// Nanoseconds since the epoch, as sent (a decimal string).
    pub time_unix_nano: String,
    /// The `AnyValue` body, as sent.
    pub body: Value,
    /// The KeyValue list, as sent.
    pub attributes: Value,
}

#[derive(Debug, Default)]
struct Inner {
    token: Option<String>,
    reject_next: u64,
    records: Vec<OtlpLogRecord>,
}

#[derive(Debug, Default)]
pub(crate) struct OtlpState {
    inner: Mutex<Inner>,
}

impl OtlpState {
    pub(crate) fn records(&self) -> Vec<OtlpLogRecord> {
        lock(&self.inner).records.clone()
    }

    pub(crate) fn require_token(&self, token: Option<&str>) {
        lock(&self.inner).token = token.map(str::to_owned);
    }

    pub(crate) fn reject_next(&self, n: u64) {
        lock(&self.inner).reject_next = n;
    }

    pub(crate) fn reset(&self) {
        *lock(&self.inner) = Inner::default();
    }
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new()
        .route("/v1/logs", post(export))
        .layer(DefaultBodyLimit::max(crate::AUDIT_BODY_BYTES_MAX))
}

/// A `google.rpc.Status` answer.
pub(crate) fn status(code: StatusCode, rpc_code: u8, message: &str) -> Response {
    (
        code,
        axum::Json(json!({"code": rpc_code, "message": message})),
    )
        .into_response()
}

/// The answer to an injected fault of `code`.
pub(crate) fn fault_response(code: StatusCode) -> Response {
    let rpc = match code.as_u16() {
        400 => 3,
        401 => 16,
        403 => 7,
        429 => 8,
        502..=504 => 14,
        _ => 13,
    };
    status(code, rpc, code.canonical_reason().unwrap_or("error"))
}

fn bad(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, 3, &message)
}

/// Checks an `AnyValue`: exactly one of the known members, well typed.
fn any_value(v: &Value, path: &str, depth: usize) -> Result<(), String> {
    if depth > ANY_VALUE_DEPTH_MAX {
        return Err(format!("{path}: nested too deeply"));
    }
    let Some(obj) = v.as_object() else {
        return Err(format!("{path}: an AnyValue is an object"));
    };
    if obj.len() != 1 {
        return Err(format!("{path}: an AnyValue has exactly one member"));
    }
    let Some((k, inner)) = obj.iter().next() else {
        return Err(format!("{path}: empty AnyValue"));
    };
    let ok = match k.as_str() {
        "stringValue" | "bytesValue" => inner.is_string(),
        "boolValue" => inner.is_boolean(),
        "intValue" => inner.is_i64() || inner.as_str().is_some_and(|s| s.parse::<i64>().is_ok()),
        "doubleValue" => inner.is_number(),
        "arrayValue" => {
            let values = inner.get("values").and_then(Value::as_array);
            match values {
                Some(vs) => {
                    for (i, x) in vs.iter().enumerate() {
                        any_value(x, &format!("{path}.arrayValue.values[{i}]"), depth + 1)?;
                    }
                    true
                }
                None => inner.as_object().is_some_and(Map::is_empty),
            }
        }
        "kvlistValue" => {
            key_values(
                inner.get("values").unwrap_or(&Value::Null),
                &format!("{path}.kvlistValue.values"),
                depth + 1,
                true,
            )?;
            true
        }
        _ => return Err(format!("{path}: unknown AnyValue member {k:?}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{path}.{k}: wrong type"))
    }
}

/// Checks a KeyValue list (absent is fine when `optional`).
fn key_values(v: &Value, path: &str, depth: usize, optional: bool) -> Result<(), String> {
    let items = match v {
        Value::Null if optional => return Ok(()),
        Value::Array(a) => a,
        _ => return Err(format!("{path}: expected a list of {{key, value}}")),
    };
    for (i, kv) in items.iter().enumerate() {
        let key = kv.get("key").and_then(Value::as_str);
        if key.is_none_or(str::is_empty) {
            return Err(format!("{path}[{i}].key: required"));
        }
        match kv.get("value") {
            Some(val) => any_value(val, &format!("{path}[{i}].value"), depth)?,
            None => return Err(format!("{path}[{i}].value: required")),
        }
    }
    Ok(())
}

fn unsigned(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().ok().map(|n| n.to_string())
        }
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}

/// Every log record of the request, validated.
fn parse(req: &Value) -> Result<Vec<OtlpLogRecord>, String> {
    let Some(resource_logs) = req.get("resourceLogs") else {
        return Ok(Vec::new());
    };
    let Some(resource_logs) = resource_logs.as_array() else {
        return Err("resourceLogs: expected a list".into());
    };
    let mut out = Vec::new();
    for (r, rl) in resource_logs.iter().enumerate() {
        let rp = format!("resourceLogs[{r}]");
        let resource_attributes = rl
            .get("resource")
            .and_then(|x| x.get("attributes"))
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        key_values(
            &resource_attributes,
            &format!("{rp}.resource.attributes"),
            0,
            true,
        )?;
        let scope_logs = match rl.get("scopeLogs") {
            None => continue,
            Some(Value::Array(a)) => a,
            Some(_) => return Err(format!("{rp}.scopeLogs: expected a list")),
        };
        for (s, sl) in scope_logs.iter().enumerate() {
            let sp = format!("{rp}.scopeLogs[{s}]");
            let scope_name = sl
                .get("scope")
                .and_then(|x| x.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let records = match sl.get("logRecords") {
                None => continue,
                Some(Value::Array(a)) => a,
                Some(_) => return Err(format!("{sp}.logRecords: expected a list")),
            };
            for (i, lr) in records.iter().enumerate() {
                let lp = format!("{sp}.logRecords[{i}]");
                if !lr.is_object() {
                    return Err(format!("{lp}: expected an object"));
                }
                let time = match lr.get("timeUnixNano") {
                    None => "0".to_owned(),
                    v => unsigned(v).ok_or_else(|| {
                        format!("{lp}.timeUnixNano: expected an unsigned 64-bit integer")
                    })?,
                };
                if let Some(v) = lr.get("observedTimeUnixNano")
                    && unsigned(Some(v)).is_none()
                {
                    return Err(format!(
                        "{lp}.observedTimeUnixNano: expected an unsigned 64-bit integer"
                    ));
                }
                if let Some(n) = lr.get("severityNumber")
                    && n.as_u64().is_none_or(|n| n > 24)
                {
                    return Err(format!("{lp}.severityNumber: expected 0..=24"));
                }
                let body = lr.get("body").cloned().unwrap_or(Value::Null);
                if !body.is_null() {
                    any_value(&body, &format!("{lp}.body"), 0)?;
                }
                let attributes = lr
                    .get("attributes")
                    .cloned()
                    .unwrap_or(Value::Array(Vec::new()));
                key_values(&attributes, &format!("{lp}.attributes"), 0, true)?;
                out.push(OtlpLogRecord {
                    resource_attributes: resource_attributes.clone(),
                    scope_name: scope_name.clone(),
                    time_unix_nano: time,
                    body,
                    attributes,
                });
            }
        }
    }
    Ok(out)
}

async fn export(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let o = &state.otlp;
    let required = lock(&o.inner).token.clone();
    if let Some(token) = required {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = presented
            .is_some_and(|p| crate::sigv4::constant_time_eq(p.as_bytes(), token.as_bytes()));
        if !ok {
            return status(
                StatusCode::UNAUTHORIZED,
                16,
                "missing or invalid bearer token",
            );
        }
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            3,
            "this receiver takes application/json (OTLP JSON encoding)",
        );
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("the body is not JSON".into());
    };
    if !req.is_object() {
        return bad("an ExportLogsServiceRequest is a JSON object".into());
    }
    let mut records = match parse(&req) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let mut g = lock(&o.inner);
    if g.records.len().saturating_add(records.len()) > OTLP_RECORDS_MAX {
        return status(StatusCode::SERVICE_UNAVAILABLE, 14, "receiver is full");
    }
    let reject = usize::try_from(g.reject_next)
        .unwrap_or(usize::MAX)
        .min(records.len());
    g.reject_next = 0;
    records.truncate(records.len() - reject);
    g.records.extend(records);
    if reject > 0 {
        return (
            StatusCode::OK,
            axum::Json(json!({"partialSuccess": {
                "rejectedLogRecords": reject.to_string(),
                "errorMessage": "rejected by the sandbox",
            }})),
        )
            .into_response();
    }
    (StatusCode::OK, axum::Json(json!({}))).into_response()
}
