//! Splunk HTTP Event Collector emulator, under `/splunk`
//! (`POST /services/collector/event`, `/services/collector`,
//! `/services/collector/event/1.0`, `POST /services/collector/ack`,
//! `GET /services/collector/health`).
//!
//! As strict as HEC: the token (`Authorization: Splunk <token>`, or Basic with
//! the token as password), concatenated JSON event objects, `event` required
//! and non-blank, flat indexed `fields`, allowed indexes, and, with indexer
//! acknowledgement on, a channel GUID on every request and ack ids per channel.
//! Errors are `{"text","code"}` with `invalid-event-number` for a bad event,
//! status and code per the HEC table. A batch is indexed whole or not at all.
//! Every indexed event is kept, in order, for tests to read back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::SandboxState;
use crate::record::lock;

/// Events kept; a batch that would go beyond answers 503 code 9 (server busy).
pub const SPLUNK_EVENTS_MAX: usize = 200_000;
/// Ack ids remembered per channel (the oldest are forgotten first).
pub const ACKS_PER_CHANNEL_MAX: usize = 10_000;
/// Channels remembered.
pub const CHANNELS_MAX: usize = 1_000;
/// Ack ids one poll may ask about.
pub const ACK_QUERY_IDS_MAX: usize = 1_000;

/// One event as HEC indexed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplunkEvent {
    /// The `event` value as sent (an object, a string or a number).
    pub event: Value,
    pub time: Option<f64>,
    pub host: Option<String>,
    pub source: Option<String>,
    pub sourcetype: Option<String>,
    pub index: Option<String>,
    /// Indexed fields as sent.
    pub fields: BTreeMap<String, Value>,
    /// The request's channel, if any.
    pub channel: Option<String>,
    /// The ack id of the request that carried it (with acknowledgement on).
    pub ack_id: Option<u64>,
}

#[derive(Debug, Default)]
struct Channel {
    next_ack: u64,
    /// Ack id -> indexed. Released ids answer true.
    acks: BTreeMap<u64, bool>,
}

#[derive(Debug, Default)]
struct Inner {
    token: Option<String>,
    ack: bool,
    hold_acks: bool,
    indexes: Option<BTreeSet<String>>,
    events: Vec<SplunkEvent>,
    channels: BTreeMap<String, Channel>,
    drop_after_index: u32,
}

#[derive(Debug, Default)]
pub(crate) struct SplunkState {
    inner: Mutex<Inner>,
}

impl SplunkState {
    pub(crate) fn new(token: &str) -> Self {
        SplunkState {
            inner: Mutex::new(Inner {
                token: Some(token.to_owned()),
                ..Inner::default()
            }),
        }
    }

    pub(crate) fn events(&self) -> Vec<SplunkEvent> {
        lock(&self.inner).events.clone()
    }

    pub(crate) fn set_token(&self, token: &str) {
        lock(&self.inner).token = Some(token.to_owned());
    }

    pub(crate) fn set_ack(&self, on: bool) {
        lock(&self.inner).ack = on;
    }

    /// While held, new ack ids stay pending (answer false); releasing marks them indexed.
    pub(crate) fn hold_acks(&self, hold: bool) {
        let mut g = lock(&self.inner);
        g.hold_acks = hold;
        if !hold {
            for ch in g.channels.values_mut() {
                for v in ch.acks.values_mut() {
                    *v = true;
                }
            }
        }
    }

    pub(crate) fn allow_indexes(&self, indexes: Option<Vec<String>>) {
        lock(&self.inner).indexes = indexes.map(|v| v.into_iter().collect());
    }

    pub(crate) fn drop_after_index(&self, n: u32) {
        lock(&self.inner).drop_after_index = n;
    }

    /// Drops events, channels and settings; the token stays.
    pub(crate) fn reset(&self) {
        let mut g = lock(&self.inner);
        let token = g.token.take();
        *g = Inner {
            token,
            ..Inner::default()
        };
    }
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new()
        .route("/services/collector/event", post(event))
        .route("/services/collector", post(event))
        .route("/services/collector/event/1.0", post(event))
        .route("/services/collector/ack", post(ack))
        .route("/services/collector/health", get(health))
        .layer(DefaultBodyLimit::max(crate::AUDIT_BODY_BYTES_MAX))
}

/// `{"text","code"}` with the status HEC uses for that code.
pub(crate) fn hec(code: u16, invalid_event: Option<usize>) -> Response {
    let (status, text) = match code {
        0 => (200, "Success"),
        1 => (403, "Token disabled"),
        2 => (401, "Token is required"),
        3 => (401, "Invalid authorization"),
        4 => (403, "Invalid token"),
        5 => (400, "No data"),
        6 => (400, "Invalid data format"),
        7 => (400, "Incorrect index"),
        8 => (500, "Internal server error"),
        9 => (503, "Server is busy"),
        10 => (400, "Data channel is missing"),
        11 => (400, "Invalid data channel"),
        12 => (400, "Event field is required"),
        13 => (400, "Event field cannot be blank"),
        14 => (400, "ACK is disabled"),
        15 => (400, "Error in handling indexed fields"),
        16 => (400, "Query string authorization is not enabled"),
        17 => (200, "HEC is healthy"),
        18 => (503, "HEC is unhealthy, queues are full"),
        19 => (503, "HEC is unhealthy, ack service unavailable"),
        _ => (
            503,
            "HEC is unhealthy, queues are full, ack service unavailable",
        ),
    };
    let mut body = json!({"text": text, "code": code});
    if let (Some(i), Some(obj)) = (invalid_event, body.as_object_mut()) {
        obj.insert("invalid-event-number".into(), json!(i));
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (status, axum::Json(body)).into_response()
}

/// The HEC answer for an injected fault of `status`.
pub(crate) fn fault_response(status: StatusCode) -> Response {
    let code = match status.as_u16() {
        401 => 3,
        403 => 4,
        500 => 8,
        503 | 429 => 9,
        s if s >= 500 => 8,
        _ => 6,
    };
    let mut resp = hec(code, None);
    *resp.status_mut() = status;
    resp
}

/// The token check: `Ok(())` or the HEC error code.
fn authorize(
    inner: &Inner,
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
) -> Result<(), u16> {
    if query.contains_key("token") {
        return Err(16);
    }
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(2);
    };
    let presented = if let Some(t) = value.strip_prefix("Splunk ") {
        t.trim().to_owned()
    } else if let Some(b) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or(3u16)?;
        decoded
            .split_once(':')
            .map(|(_, p)| p.to_owned())
            .ok_or(3u16)?
    } else {
        return Err(3);
    };
    match &inner.token {
        Some(t) if crate::sigv4::constant_time_eq(t.as_bytes(), presented.as_bytes()) => Ok(()),
        _ => Err(4),
    }
}

/// The channel from the header or `?channel=`; `Err(11)` if it is not a GUID.
fn channel(headers: &HeaderMap, query: &BTreeMap<String, String>) -> Result<Option<String>, u16> {
    let raw = headers
        .get("x-splunk-request-channel")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.get("channel").cloned());
    match raw {
        None => Ok(None),
        Some(c) => match uuid::Uuid::parse_str(c.trim()) {
            Ok(u) => Ok(Some(u.to_string())),
            Err(_) => Err(11),
        },
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// Checks one event object; `Err(code)` per the HEC table.
fn check_event(v: &Value, indexes: Option<&BTreeSet<String>>) -> Result<SplunkEvent, u16> {
    let Some(obj) = v.as_object() else {
        return Err(6);
    };
    let Some(event) = obj.get("event") else {
        return Err(12);
    };
    if is_blank(event) {
        return Err(13);
    }
    let text = |k: &str| -> Result<Option<String>, u16> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(6),
        }
    };
    let time = match obj.get("time") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_f64().ok_or(6u16)?),
        Some(Value::String(s)) => Some(s.trim().parse::<f64>().map_err(|_| 6u16)?),
        Some(_) => return Err(6),
    };
    let index = text("index")?;
    if let (Some(ix), Some(allowed)) = (&index, indexes)
        && !allowed.contains(ix)
    {
        return Err(7);
    }
    let mut fields = BTreeMap::new();
    match obj.get("fields") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let flat = match v {
                    Value::String(_) => true,
                    Value::Array(a) => a.iter().all(Value::is_string),
                    _ => false,
                };
                if !flat {
                    return Err(15);
                }
                fields.insert(k.clone(), v.clone());
            }
        }
        Some(_) => return Err(15),
    }
    Ok(SplunkEvent {
        event: event.clone(),
        time,
        host: text("host")?,
        source: text("source")?,
        sourcetype: text("sourcetype")?,
        index,
        fields,
        channel: None,
        ack_id: None,
    })
}

async fn event(
    State(state): State<Arc<SandboxState>>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = &state.splunk;
    let (ack_on, indexes) = {
        let g = lock(&s.inner);
        if let Err(code) = authorize(&g, &headers, &query) {
            return hec(code, None);
        }
        (g.ack, g.indexes.clone())
    };
    let channel = match channel(&headers, &query) {
        Ok(c) => c,
        Err(code) => return hec(code, None),
    };
    if ack_on && channel.is_none() {
        return hec(10, None);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return hec(5, None);
    }
    let mut events = Vec::new();
    for (i, item) in serde_json::Deserializer::from_slice(&body)
        .into_iter::<Value>()
        .enumerate()
    {
        let Ok(v) = item else {
            return hec(6, Some(i));
        };
        match check_event(&v, indexes.as_ref()) {
            Ok(mut e) => {
                e.channel.clone_from(&channel);
                events.push(e);
            }
            Err(code) => return hec(code, Some(i)),
        }
    }
    let (ack_id, drop) = {
        let mut g = lock(&s.inner);
        if g.events.len().saturating_add(events.len()) > SPLUNK_EVENTS_MAX {
            return hec(9, None);
        }
        let ack_id = match (&channel, g.ack) {
            (Some(ch), true) => {
                if !g.channels.contains_key(ch) && g.channels.len() >= CHANNELS_MAX {
                    return hec(9, None);
                }
                let held = g.hold_acks;
                let c = g.channels.entry(ch.clone()).or_default();
                let id = c.next_ack;
                c.next_ack += 1;
                c.acks.insert(id, !held);
                while c.acks.len() > ACKS_PER_CHANNEL_MAX {
                    c.acks.pop_first();
                }
                Some(id)
            }
            _ => None,
        };
        for e in &mut events {
            e.ack_id = ack_id;
        }
        g.events.extend(events);
        let drop = g.drop_after_index > 0;
        if drop {
            g.drop_after_index -= 1;
        }
        (ack_id, drop)
    };
    if drop {
        // Indexed, then the connection is dropped unanswered: the client is in doubt.
        std::panic::resume_unwind(Box::new(
            "sandbox: splunk drops the connection after indexing",
        ));
    }
    let mut body = json!({"text": "Success", "code": 0});
    if let (Some(id), Some(obj)) = (ack_id, body.as_object_mut()) {
        obj.insert("ackId".into(), json!(id));
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

#[derive(Deserialize)]
struct AckQuery {
    acks: Vec<u64>,
}

async fn ack(
    State(state): State<Arc<SandboxState>>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = &state.splunk;
    let g = lock(&s.inner);
    if let Err(code) = authorize(&g, &headers, &query) {
        return hec(code, None);
    }
    if !g.ack {
        return hec(14, None);
    }
    let ch = match channel(&headers, &query) {
        Ok(Some(c)) => c,
        Ok(None) => return hec(10, None),
        Err(code) => return hec(code, None),
    };
    let Ok(q) = serde_json::from_slice::<AckQuery>(&body) else {
        return hec(6, None);
    };
    if q.acks.len() > ACK_QUERY_IDS_MAX {
        return hec(6, None);
    }
    let Some(c) = g.channels.get(&ch) else {
        return hec(11, None);
    };
    let acks: BTreeMap<String, bool> = q
        .acks
        .iter()
        .map(|id| (id.to_string(), c.acks.get(id).copied().unwrap_or(false)))
        .collect();
    (StatusCode::OK, axum::Json(json!({ "acks": acks }))).into_response()
}

async fn health() -> Response {
    hec(17, None)
}
