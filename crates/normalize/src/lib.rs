//! Vendor payloads -> [`tg_model::NormalizedEvent`]: one module per source,
//! redaction, error signatures and fingerprints.
//!
//! This is the first rule of agent triage in code: an agent never sees a raw
//! payload or a log body, only a bounded, structured, redacted event. Every
//! string that reaches a `NormalizedEvent` passes through the
//! [`redact::Redactor`] first, then is cleaned to one line and bounded.
//!
//! This crate is pure: it must never do I/O, read the clock, the environment
//! or OS randomness (`now` is a parameter), and it must never panic on any
//! input. A batch is accepted whole or rejected whole; unknown fields are
//! ignored. Errors never echo a secret: their text is redacted too.
//!
//! Sources: [`generic`] (our own documented JSON alert), [`alertmanager`]
//! (Prometheus Alertmanager webhook v4), [`grafana`] (Grafana Alerting webhook),
//! [`splunk`] (Splunk webhook alert action), [`cloudevents`] (CloudEvents 1.0,
//! structured JSON mode), [`datadog`] (Datadog webhook, our recommended
//! template), [`sns`] (SNS carrying CloudWatch alarms; envelope and signature
//! checks too) and [`eventbridge`], both through [`cloudwatch`]. [`normalizer`]
//! picks the function for a [`Source`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tg_model::{NormalizedEvent, Source};

pub mod alertmanager;
pub mod cloudevents;
pub mod cloudwatch;
mod common;
pub mod datadog;
pub mod eventbridge;
pub mod generic;
pub mod grafana;
pub mod redact;
pub mod signature;
pub mod sns;
pub mod splunk;

pub use redact::{Redactor, RedactorError};
pub use signature::{error_signature, fingerprint};

/// Default for [`Limits::body_bytes_max`]: 1 MiB.
pub const BODY_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Default for [`Limits::alerts_per_batch_max`].
pub const ALERTS_PER_BATCH_MAX_DEFAULT: usize = 1000;
/// Default for [`Limits::depth_max`].
pub const DEPTH_MAX_DEFAULT: usize = 32;
/// Default for [`Limits::string_bytes_max`]: 64 KiB.
pub const STRING_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Bytes of an error's `message` and `field`; longer text is cut.
pub const ERROR_TEXT_BYTES_MAX: usize = 512;

/// Named maxima applied to every payload. Exceeding one rejects the whole
/// batch with an error naming the limit. Values above the model's own limits
/// (`tg_model::event::limits`) are clamped to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a request body. Over it: [`ErrorKind::TooLarge`].
    pub body_bytes_max: usize,
    /// Alerts (or events) in one payload.
    pub alerts_per_batch_max: usize,
    /// Labels on one alert (after merging common labels).
    pub labels_max: usize,
    /// Bytes of one label key.
    pub label_key_bytes_max: usize,
    /// Bytes of one label value.
    pub label_value_bytes_max: usize,
    /// Correlation IDs on one generic event.
    pub correlation_ids_max: usize,
    /// Links on one generic event.
    pub links_max: usize,
    /// Nesting depth of arrays and objects, checked by a byte scan before parsing.
    pub depth_max: usize,
    /// Bytes of any one JSON string (key or value) in the payload.
    pub string_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        use tg_model::event::limits as m;
        Limits {
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            alerts_per_batch_max: ALERTS_PER_BATCH_MAX_DEFAULT,
            labels_max: m::LABELS_MAX,
            label_key_bytes_max: m::LABEL_KEY_BYTES_MAX,
            label_value_bytes_max: m::LABEL_VALUE_BYTES_MAX,
            correlation_ids_max: m::CORRELATION_IDS_MAX,
            links_max: m::LOG_POINTERS_MAX,
            depth_max: DEPTH_MAX_DEFAULT,
            string_bytes_max: STRING_BYTES_MAX_DEFAULT,
        }
    }
}

/// What every normalizer needs besides the payload. Built once, shared.
#[derive(Debug, Clone, Default)]
pub struct NormalizeContext {
    /// Alias -> canonical service name, applied after redaction and cleaning.
    pub service_aliases: BTreeMap<String, String>,
    pub redactor: Redactor,
    pub limits: Limits,
    /// AWS account ID -> environment, for CloudWatch and EventBridge events
    /// (config `sources.aws.account_environments`).
    pub aws_account_environments: BTreeMap<String, tg_model::Environment>,
}

/// Why a payload was rejected. The server maps `Malformed`, `LimitExceeded`
/// and `DuplicateKey` to 400 and `TooLarge` to 413.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not JSON, wrong types, missing required fields, bad values or version.
    Malformed,
    /// The body is larger than `body_bytes_max`.
    TooLarge,
    /// A named limit other than the body size was exceeded.
    LimitExceeded,
    /// An object in the payload repeats a key (the message names it).
    DuplicateKey,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::Malformed => "malformed",
            ErrorKind::TooLarge => "too large",
            ErrorKind::LimitExceeded => "limit exceeded",
            ErrorKind::DuplicateKey => "duplicate key",
        })
    }
}

/// A rejected payload. `field` is a JSON path (`alerts[2].labels`, `""` for
/// the whole body); `message` is lowercase and names the offending value or
/// limit. Both are redacted and bounded to [`ERROR_TEXT_BYTES_MAX`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{kind} payload at `{field}`: {message}")]
pub struct NormalizeError {
    pub kind: ErrorKind,
    pub field: String,
    pub message: String,
}

impl NormalizeError {
    pub(crate) fn new(
        kind: ErrorKind,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        NormalizeError {
            kind,
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn malformed(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Malformed, field, message)
    }

    pub(crate) fn limit(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::LimitExceeded, field, message)
    }

    /// Redacts and bounds the text: serde messages echo offending values,
    /// which may be secrets.
    pub(crate) fn redacted(self, redactor: &Redactor) -> Self {
        let clean = |s: &str| {
            let r = redactor.redact_line(&unescape(s));
            common::truncate(r, ERROR_TEXT_BYTES_MAX)
        };
        NormalizeError {
            kind: self.kind,
            field: clean(&self.field),
            message: clean(&self.message),
        }
    }
}

/// Error text quotes offending values the way Rust and serde do (`{:?}`:
/// `"Bearer\u{200b}tok"`, `"a\tb"`). The escapes are turned back into the
/// characters they stand for, so that [`Redactor::redact_line`] sees a secret
/// split by one exactly as it sees it in a field (issue 27). `\\` stays.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('u') => {
                let mut probe = chars.clone();
                probe.next();
                let code: Option<char> = (probe.next() == Some('{'))
                    .then(|| {
                        let hex: String = probe.by_ref().take_while(|h| *h != '}').collect();
                        u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                    })
                    .flatten();
                match code {
                    Some(ch) => {
                        out.push(ch);
                        chars = probe;
                        continue;
                    }
                    None => {
                        out.push('\\');
                        continue;
                    }
                }
            }
            Some('\\') => out.push_str("\\\\"),
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars.next();
    }
    out
}

/// The signature every normalizer has.
pub type NormalizeFn =
    fn(&[u8], &NormalizeContext, DateTime<Utc>) -> Result<Vec<NormalizedEvent>, NormalizeError>;

/// The normalizer for `source`, or `None` if this crate has no adapter for it yet.
pub fn normalizer(source: Source) -> Option<NormalizeFn> {
    match source {
        Source::Generic => Some(generic::normalize),
        Source::Alertmanager => Some(alertmanager::normalize),
        Source::Grafana => Some(grafana::normalize),
        Source::Splunk => Some(splunk::normalize),
        Source::Cloudevents => Some(cloudevents::normalize),
        Source::Datadog => Some(datadog::normalize),
        Source::CloudwatchSns => Some(sns::normalize),
        Source::Eventbridge => Some(eventbridge::normalize),
    }
}
