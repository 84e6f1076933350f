//! Recording of every request an emulator receives, with secrets redacted.
//!
//! Each target keeps a bounded ring: when it is full the oldest entry goes, so a
//! long demo cannot grow memory without bound.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Requests kept per target; older ones are dropped first.
pub const REQUESTS_PER_TARGET_MAX: usize = 10_000;

/// What replaces a secret in recordings, control answers and `Debug` output.
pub const REDACTED: &str = "[redacted]";

/// Header names whose values are secrets (compared lowercase).
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-sn-apikey",
    "cookie",
    "x-amz-security-token",
];

/// Top-level JSON body fields whose values are secrets.
const SECRET_BODY_FIELDS: &[&str] = &["routing_key", "client_secret", "client_assertion"];

pub use tg_model::Secret;

/// The emulated services, one per path prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Servicenow,
    Pagerduty,
    Bridge,
    Anthropic,
    Bedrock,
    Openai,
    /// ServiceNow's `/oauth_token.do` (its own target, so it can be down
    /// while the Table API is up).
    ServicenowOauth,
    /// Splunk HTTP Event Collector (audit sink).
    Splunk,
    /// CloudWatch Logs (audit sink).
    Cloudwatch,
    /// OTLP/HTTP logs receiver (audit sink).
    Otlp,
}

impl Target {
    /// How many targets there are.
    pub const COUNT: usize = 10;

    pub const ALL: [Target; Target::COUNT] = [
        Target::Servicenow,
        Target::Pagerduty,
        Target::Bridge,
        Target::Anthropic,
        Target::Bedrock,
        Target::Openai,
        Target::ServicenowOauth,
        Target::Splunk,
        Target::Cloudwatch,
        Target::Otlp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Servicenow => "servicenow",
            Target::Pagerduty => "pagerduty",
            Target::Bridge => "bridge",
            Target::Anthropic => "anthropic",
            Target::Bedrock => "bedrock",
            Target::Openai => "openai",
            Target::ServicenowOauth => "servicenow_oauth",
            Target::Splunk => "splunk",
            Target::Cloudwatch => "cloudwatch",
            Target::Otlp => "otlp",
        }
    }

    pub fn parse(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.as_str() == name)
    }

    fn index(self) -> usize {
        match self {
            Target::Servicenow => 0,
            Target::Pagerduty => 1,
            Target::Bridge => 2,
            Target::Anthropic => 3,
            Target::Bedrock => 4,
            Target::Openai => 5,
            Target::ServicenowOauth => 6,
            Target::Splunk => 7,
            Target::Cloudwatch => 8,
            Target::Otlp => 9,
        }
    }

    /// Largest request body the target reads: audit sinks take bigger batches.
    pub fn body_bytes_max(self) -> usize {
        match self {
            Target::Splunk | Target::Cloudwatch | Target::Otlp => crate::AUDIT_BODY_BYTES_MAX,
            _ => crate::BODY_BYTES_MAX,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request as an emulator saw it, secrets already redacted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedRequest {
    /// Order of arrival across all targets, from 1.
    pub seq: u64,
    pub received_at: DateTime<Utc>,
    pub target: Target,
    pub method: String,
    /// The full path, prefix included (`/servicenow/api/now/table/incident`).
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Lowercase header names; secret values replaced by [`REDACTED`].
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON; a non-JSON body is kept as a JSON string; `None` when empty.
    pub body: Option<serde_json::Value>,
    /// The status the emulator (or an injected fault) answered.
    pub status: u16,
    /// True when an injected fault produced the answer.
    pub faulted: bool,
}

/// Lock a mutex, recovering the data if a panicking holder poisoned it: the
/// sandbox state stays usable, which is what a test harness wants.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Bounded per-target rings of [`RecordedRequest`].
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    inner: Mutex<RecorderInner>,
}

#[derive(Debug, Default)]
struct RecorderInner {
    next_seq: u64,
    rings: [VecDeque<RecordedRequest>; Target::COUNT],
}

impl Recorder {
    pub(crate) fn push(&self, mut req: RecordedRequest) {
        let mut inner = lock(&self.inner);
        inner.next_seq += 1;
        req.seq = inner.next_seq;
        if let Some(ring) = inner.rings.get_mut(req.target.index()) {
            if ring.len() >= REQUESTS_PER_TARGET_MAX {
                ring.pop_front();
            }
            ring.push_back(req);
        }
    }

    pub(crate) fn list(&self, target: Target) -> Vec<RecordedRequest> {
        let inner = lock(&self.inner);
        inner
            .rings
            .get(target.index())
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn clear(&self) {
        let mut inner = lock(&self.inner);
        *inner = RecorderInner::default();
    }
}

/// Headers as a sorted map, secret values redacted.
pub(crate) fn redact_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str().to_ascii_lowercase();
        let value = if SECRET_HEADERS.contains(&name.as_str()) {
            REDACTED.to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        out.insert(name, value);
    }
    out
}

/// The body as JSON with secret fields redacted (non-JSON kept as a string).
pub(crate) fn redact_body(bytes: &[u8]) -> Option<serde_json::Value> {
    if bytes.is_empty() {
        return None;
    }
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(mut v) => {
            if let Some(obj) = v.as_object_mut() {
                for field in SECRET_BODY_FIELDS {
                    if let Some(val) = obj.get_mut(*field) {
                        *val = serde_json::Value::String(REDACTED.to_owned());
                    }
                }
            }
            Some(v)
        }
        Err(_) => Some(serde_json::Value::String(redact_form(
            &String::from_utf8_lossy(bytes),
        ))),
    }
}

/// Form fields whose values are secrets (an OAuth token request).
const SECRET_FORM_FIELDS: &[&str] = &["client_secret", "client_assertion", "assertion"];

/// A form-encoded body with secret fields' values redacted (other text unchanged).
fn redact_form(text: &str) -> String {
    if !text.contains('=') {
        return text.to_owned();
    }
    text.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if SECRET_FORM_FIELDS.contains(&k) => format!("{k}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The path with webhook tokens (secrets embedded in bridge URLs) redacted.
pub(crate) fn redact_path(target: Target, path: &str) -> String {
    if target == Target::Bridge {
        for kind in ["/bridge/slack/", "/bridge/teams/"] {
            if path.starts_with(kind) && path.len() > kind.len() {
                return format!("{kind}{REDACTED}");
            }
        }
    }
    path.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_drops_oldest_when_full() {
        let rec = Recorder::default();
        let sample = RecordedRequest {
            seq: 0,
            received_at: DateTime::<Utc>::UNIX_EPOCH,
            target: Target::Bridge,
            method: "POST".into(),
            path: "/bridge".into(),
            query: None,
            headers: BTreeMap::new(),
            body: None,
            status: 200,
            faulted: false,
        };
        for _ in 0..REQUESTS_PER_TARGET_MAX + 5 {
            rec.push(sample.clone());
        }
        let list = rec.list(Target::Bridge);
        assert_eq!(list.len(), REQUESTS_PER_TARGET_MAX);
        assert_eq!(list[0].seq, 6);
        assert!(rec.list(Target::Anthropic).is_empty());
    }

    #[test]
    fn secrets_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert("Authorization", "Bearer s3cret".parse().unwrap());
        h.insert("x-api-key", "k3y".parse().unwrap());
        h.insert("accept", "application/json".parse().unwrap());
        let r = redact_headers(&h);
        assert_eq!(r["authorization"], REDACTED);
        assert_eq!(r["x-api-key"], REDACTED);
        assert_eq!(r["accept"], "application/json");
        let b = redact_body(br#"{"routing_key":"abc","x":1}"#).unwrap();
        assert_eq!(b["routing_key"], REDACTED);
        assert_eq!(b["x"], 1);
        assert_eq!(
            redact_path(Target::Bridge, "/bridge/slack/T1/B2/xyz"),
            "/bridge/slack/[redacted]"
        );
        assert_eq!(format!("{:?}", Secret::new("abc")), REDACTED);
    }
}
