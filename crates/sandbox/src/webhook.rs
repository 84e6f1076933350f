//! A receiver of triage-gate's signed webhooks, under `/bridge/signed/{name}`.
//!
//! It verifies a delivery the way docs/webhooks.md tells receivers to:
//! `X-TriageGate-Timestamp` (Unix seconds) within [`REPLAY_WINDOW_SECS`] of
//! the sandbox's clock, `X-TriageGate-Signature: v1=<hex>` equal, in constant
//! time, to HMAC-SHA256(secret, `"<timestamp>.<raw body>"`), and a
//! (timestamp, signature) pair never accepted before. Accepted deliveries are
//! recorded; refusals answer 401 (or 409 for a replay) with
//! `{"error": "<reason>"}` and are counted, never recorded as deliveries.
//!
//! A receiver exists once registered with its secret
//! (`SandboxState::register_signed_webhook`); any other name answers 404.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::SandboxState;
use crate::record::{Secret, lock};

/// How far a delivery's timestamp may be from the receiver's clock, either way.
pub const REPLAY_WINDOW_SECS: i64 = 300;
/// Accepted deliveries kept; older ones are dropped first.
pub const DELIVERIES_MAX: usize = 10_000;
/// Signatures remembered to refuse replays (within the window).
pub const SEEN_SIGNATURES_MAX: usize = 100_000;
/// Receivers that may be registered.
pub const RECEIVERS_MAX: usize = 256;
/// The timestamp header.
pub const TIMESTAMP_HEADER: &str = "x-triagegate-timestamp";
/// The signature header (`v1=<hex>`, several comma-separated during a secret rotation).
pub const SIGNATURE_HEADER: &str = "x-triagegate-signature";

/// One accepted, verified delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignedDelivery {
    /// The receiver's name (the path segment).
    pub name: String,
    /// The signed timestamp (Unix seconds).
    pub timestamp: i64,
    /// The body, parsed.
    pub body: Value,
    /// `X-TriageGate-Delivery`, when sent.
    pub delivery_id: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// Why a delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    MissingTimestamp,
    StaleTimestamp,
    MissingSignature,
    BadSignature,
    Replayed,
    NotJson,
}

impl Refusal {
    fn text(self) -> &'static str {
        match self {
            Refusal::MissingTimestamp => "missing or malformed X-TriageGate-Timestamp",
            Refusal::StaleTimestamp => "timestamp outside the replay window",
            Refusal::MissingSignature => "missing or malformed X-TriageGate-Signature",
            Refusal::BadSignature => "signature does not match",
            Refusal::Replayed => "this signature was already accepted",
            Refusal::NotJson => "body is not a JSON object",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Refusal::Replayed => StatusCode::CONFLICT,
            Refusal::NotJson => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

/// Why a receiver could not be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiverError {
    #[error("receiver name is empty, longer than 64, or has characters outside [A-Za-z0-9_-]")]
    BadName,
    #[error("receiver secret is empty")]
    EmptySecret,
    #[error("too many receivers (max {RECEIVERS_MAX})")]
    TooMany,
}

#[derive(Debug, Default)]
pub(crate) struct WebhookState {
    receivers: Mutex<BTreeMap<String, Secret>>,
    deliveries: Mutex<VecDeque<SignedDelivery>>,
    seen: Mutex<VecDeque<(i64, String)>>,
    refusals: Mutex<BTreeMap<Refusal, u64>>,
}

impl WebhookState {
    pub(crate) fn register(&self, name: &str, secret: &str) -> Result<(), ReceiverError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !ok {
            return Err(ReceiverError::BadName);
        }
        if secret.is_empty() {
            return Err(ReceiverError::EmptySecret);
        }
        let mut receivers = lock(&self.receivers);
        if !receivers.contains_key(name) && receivers.len() >= RECEIVERS_MAX {
            return Err(ReceiverError::TooMany);
        }
        receivers.insert(name.to_owned(), Secret::new(secret));
        Ok(())
    }

    pub(crate) fn deliveries(&self) -> Vec<SignedDelivery> {
        lock(&self.deliveries).iter().cloned().collect()
    }

    pub(crate) fn refusals(&self) -> BTreeMap<Refusal, u64> {
        lock(&self.refusals).clone()
    }

    /// Forget deliveries, refusals and seen signatures; receivers stay (configuration).
    pub(crate) fn reset(&self) {
        lock(&self.deliveries).clear();
        lock(&self.seen).clear();
        lock(&self.refusals).clear();
    }

    fn refuse(&self, why: Refusal) -> Response {
        *lock(&self.refusals).entry(why).or_default() += 1;
        (why.status(), axum::Json(json!({"error": why.text()}))).into_response()
    }
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new().route("/signed/{name}", post(receive))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `v1=` signatures of the header, hex-decoded (malformed ones skipped).
fn v1_signatures(value: &str) -> Vec<Vec<u8>> {
    value
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h).ok())
        .collect()
}

/// Verifies `body` against the headers at `now` with `secret`; the matched
/// signature (hex) on success.
pub fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
    now: i64,
) -> Result<(i64, String), Refusal> {
    let timestamp: i64 = header_str(headers, TIMESTAMP_HEADER)
        .filter(|t| !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or(Refusal::MissingTimestamp)?;
    if (now - timestamp).abs() > REPLAY_WINDOW_SECS {
        return Err(Refusal::StaleTimestamp);
    }
    let candidates = header_str(headers, SIGNATURE_HEADER)
        .map(v1_signatures)
        .unwrap_or_default();
    if candidates.is_empty() {
        return Err(Refusal::MissingSignature);
    }
    for candidate in candidates {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return Err(Refusal::BadSignature);
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // INVARIANT: constant-time comparison (`verify_slice` uses `subtle`).
        if mac.verify_slice(&candidate).is_ok() {
            return Ok((timestamp, hex::encode(candidate)));
        }
    }
    Err(Refusal::BadSignature)
}

async fn receive(
    State(state): State<Arc<SandboxState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let webhooks = &state.webhooks;
    let Some(secret) = lock(&webhooks.receivers).get(&name).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "no such receiver"})),
        )
            .into_response();
    };
    let now = state.faults.now();
    let (timestamp, signature) =
        match verify(&headers, &body, secret.expose().as_bytes(), now.timestamp()) {
            Ok(v) => v,
            Err(why) => return webhooks.refuse(why),
        };
    {
        let mut seen = lock(&webhooks.seen);
        // Entries older than the window can never match again: drop them.
        while seen
            .front()
            .is_some_and(|(t, _)| now.timestamp() - *t > REPLAY_WINDOW_SECS)
        {
            seen.pop_front();
        }
        if seen.iter().any(|(t, s)| *t == timestamp && *s == signature) {
            drop(seen);
            return webhooks.refuse(Refusal::Replayed);
        }
        if seen.len() >= SEEN_SIGNATURES_MAX {
            seen.pop_front();
        }
        seen.push_back((timestamp, signature));
    }
    let json_type = header_str(&headers, header::CONTENT_TYPE.as_str())
        .is_some_and(|v| v.starts_with("application/json"));
    let parsed = serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(Value::is_object);
    let Some(body) = parsed.filter(|_| json_type) else {
        return webhooks.refuse(Refusal::NotJson);
    };
    let mut deliveries = lock(&webhooks.deliveries);
    if deliveries.len() >= DELIVERIES_MAX {
        deliveries.pop_front();
    }
    deliveries.push_back(SignedDelivery {
        name,
        timestamp,
        body,
        delivery_id: header_str(&headers, "x-triagegate-delivery").map(str::to_owned),
        received_at: now,
    });
    drop(deliveries);
    (StatusCode::OK, axum::Json(json!({"status": "accepted"}))).into_response()
}
