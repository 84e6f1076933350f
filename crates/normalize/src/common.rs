//! What every source shares: body checks, typed deserialization with JSON
//! paths, label checks, and the one place a draft becomes a redacted, bounded
//! `NormalizedEvent`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tg_model::event::limits as m;
use tg_model::json::StrictJsonError;
use tg_model::{
    AlertStatus, Environment, Fingerprint, Impact, ImpactLevel, LogPointer, NormalizedEvent, Source,
};

use crate::signature::{error_signature, fingerprint};
use crate::{Limits, NormalizeContext, NormalizeError};

/// Bytes of one evidence line.
pub(crate) const EVIDENCE_BYTES_MAX: usize = 256;

/// Control characters become spaces, runs of white space one space, ends trimmed.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Cuts `s` to at most `max` bytes on a char boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while end > 0 && !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Size check, depth scan, strict parse (no repeated key), and a walk
/// bounding every string.
pub(crate) fn parse_body(body: &[u8], limits: &Limits) -> Result<Value, NormalizeError> {
    if body.len() > limits.body_bytes_max {
        return Err(NormalizeError::new(
            crate::ErrorKind::TooLarge,
            "",
            format!(
                "body of {} bytes exceeds body_bytes_max ({})",
                body.len(),
                limits.body_bytes_max
            ),
        ));
    }
    check_depth(body, limits.depth_max)?;
    // Strict: an object repeating a key is refused, naming it (serde_json
    // would keep the last value; another parser of the same payload may keep
    // the first).
    let value = tg_model::json::from_slice_strict(body).map_err(|e| match e {
        StrictJsonError::DuplicateKey { .. } => {
            NormalizeError::new(crate::ErrorKind::DuplicateKey, "", e.to_string())
        }
        StrictJsonError::Syntax(e) => {
            NormalizeError::malformed("", format!("body is not valid json: {e}"))
        }
    })?;
    let mut path = String::new();
    check_strings(&value, &mut path, limits.string_bytes_max)?;
    Ok(value)
}

/// Rejects nesting deeper than `depth_max` before the parser recurses into it.
/// Brackets inside strings do not count; malformed input is left to the parser.
pub(crate) fn check_depth(body: &[u8], depth_max: usize) -> Result<(), NormalizeError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > depth_max {
                    return Err(NormalizeError::limit(
                        "",
                        format!("json nesting deeper than depth_max ({depth_max})"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn check_strings(value: &Value, path: &mut String, max: usize) -> Result<(), NormalizeError> {
    let too_long = |what: &str, len: usize, path: &str| {
        NormalizeError::limit(
            path.to_owned(),
            format!("{what} of {len} bytes exceeds string_bytes_max ({max})"),
        )
    };
    match value {
        Value::String(s) if s.len() > max => Err(too_long("string", s.len(), path)),
        Value::Array(items) => {
            let base = path.len();
            for (i, item) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                check_strings(item, path, max)?;
                path.truncate(base);
            }
            Ok(())
        }
        Value::Object(map) => {
            let base = path.len();
            for (key, item) in map {
                if key.len() > max {
                    return Err(too_long("object key", key.len(), path));
                }
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                check_strings(item, path, max)?;
                path.truncate(base);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Typed deserialization whose errors name the JSON path (`alerts[2].labels`).
pub(crate) fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, NormalizeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut field = e.path().to_string();
        if field == "." {
            field.clear();
        }
        let message = e.inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(name);
        }
        NormalizeError::malformed(field, message)
    })
}

/// Joins a JSON path and a child name.
pub(crate) fn join(path: &str, child: &str) -> String {
    if path.is_empty() {
        child.to_owned()
    } else {
        format!("{path}.{child}")
    }
}

/// Rejects a label set over the count or byte limits. `field` names the map.
pub(crate) fn check_labels(
    labels: &BTreeMap<String, String>,
    field: &str,
    limits: &Limits,
) -> Result<(), NormalizeError> {
    let labels_max = limits.labels_max.min(m::LABELS_MAX);
    if labels.len() > labels_max {
        return Err(NormalizeError::limit(
            field,
            format!("{} labels exceed labels_max ({labels_max})", labels.len()),
        ));
    }
    let key_max = limits.label_key_bytes_max.min(m::LABEL_KEY_BYTES_MAX);
    let value_max = limits.label_value_bytes_max.min(m::LABEL_VALUE_BYTES_MAX);
    for (key, value) in labels {
        if key.len() > key_max {
            return Err(NormalizeError::limit(
                field,
                format!(
                    "label key of {} bytes exceeds label_key_bytes_max ({key_max})",
                    key.len()
                ),
            ));
        }
        if value.len() > value_max {
            return Err(NormalizeError::limit(
                join(field, key),
                format!(
                    "label value of {} bytes exceeds label_value_bytes_max ({value_max})",
                    value.len()
                ),
            ));
        }
    }
    Ok(())
}

/// `firing` or `resolved`, any case.
pub(crate) fn parse_status(s: &str, field: &str) -> Result<AlertStatus, NormalizeError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "firing" => Ok(AlertStatus::Firing),
        "resolved" => Ok(AlertStatus::Resolved),
        _ => Err(NormalizeError::malformed(
            field,
            format!("status {s:?} is neither \"firing\" nor \"resolved\""),
        )),
    }
}

/// An RFC 3339 timestamp. Alertmanager's zero time (`0001-01-01T00:00:00Z`)
/// means "not set" and gives `None`.
pub(crate) fn parse_time(s: &str, field: &str) -> Result<Option<DateTime<Utc>>, NormalizeError> {
    let t = DateTime::parse_from_rfc3339(s.trim()).map_err(|_| {
        NormalizeError::malformed(field, format!("{s:?} is not an rfc 3339 timestamp"))
    })?;
    let t = t.with_timezone(&Utc);
    if t.timestamp() <= -62_135_596_800 {
        return Ok(None);
    }
    Ok(Some(t))
}

/// Maps a severity word to an impact level; unknown words give `Unknown`.
pub(crate) fn severity_level(s: &str) -> ImpactLevel {
    match s.trim().to_ascii_lowercase().as_str() {
        "critical" | "crit" | "fatal" | "emergency" | "alert" | "p1" | "sev1" => {
            ImpactLevel::Critical
        }
        "high" | "error" | "err" | "major" | "page" | "p2" | "sev2" => ImpactLevel::High,
        "warning" | "warn" | "medium" | "moderate" | "p3" | "sev3" => ImpactLevel::Medium,
        "info" | "informational" | "low" | "minor" | "notice" | "ticket" | "p4" | "p5" | "sev4" => {
            ImpactLevel::Low
        }
        "none" | "ok" => ImpactLevel::None,
        _ => ImpactLevel::Unknown,
    }
}

/// Environment from a label value: the whole value (`prod`), else the first
/// dash/underscore/dot/slash-separated token that names one (`payments-prod`).
/// Anything else is `Unknown`, never guessed as production.
pub(crate) fn environment_from(value: &str) -> Environment {
    let whole = Environment::from_label(value);
    if whole != Environment::Unknown {
        return whole;
    }
    value
        .split(|c: char| !c.is_ascii_alphanumeric())
        .map(Environment::from_label)
        .find(|e| *e != Environment::Unknown)
        .unwrap_or(Environment::Unknown)
}

/// A label's (or correlation ID's) value, redacted with its key as context:
/// `password` = `hunter2`, or a Datadog tag `Authorization:Token abc` split
/// into key and value, is a secret only the pair shows. The value alone is
/// redacted too; if the pair `key=value` redacts more, the value is taken
/// from it (or is one marker when the key's own redaction moved the `=`).
fn redact_pair(red: &crate::Redactor, key: &str, value: &str) -> String {
    let alone = red.redact_line(value);
    let key = red.redact_line(key);
    let pair = red.redact_line(&format!("{key}={alone}"));
    match pair.strip_prefix(&format!("{key}=")) {
        Some(rest) if rest == alone => alone,
        Some(rest) => rest.to_owned(),
        None if pair == format!("{key}={alone}") => alone,
        None => "[REDACTED:secret]".to_owned(),
    }
}

/// An event before redaction, cleaning and bounding.
pub(crate) struct Draft {
    pub source: Source,
    pub origin: String,
    pub status: AlertStatus,
    pub environment: Environment,
    pub service: String,
    pub component: Option<String>,
    pub alert_name: String,
    pub summary: String,
    /// Text the error signature is computed from.
    pub message: String,
    pub correlation_ids: BTreeMap<String, String>,
    pub impact_level: ImpactLevel,
    pub evidence: Vec<String>,
    /// (label, url)
    pub log_pointers: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub occurred_at: DateTime<Utc>,
}

impl Draft {
    /// A firing draft with everything else empty or unknown.
    pub(crate) fn new(source: Source, origin: &str, occurred_at: DateTime<Utc>) -> Draft {
        Draft {
            source,
            origin: origin.to_owned(),
            status: AlertStatus::Firing,
            environment: Environment::Unknown,
            service: String::new(),
            component: None,
            alert_name: String::new(),
            summary: String::new(),
            message: String::new(),
            correlation_ids: BTreeMap::new(),
            impact_level: ImpactLevel::Unknown,
            evidence: Vec::new(),
            log_pointers: Vec::new(),
            labels: BTreeMap::new(),
            occurred_at,
        }
    }

    /// Raises the impact level and records why.
    pub(crate) fn raise(&mut self, level: ImpactLevel, evidence: String) {
        self.impact_level = self.impact_level.max(level);
        self.evidence.push(evidence);
    }

    /// Records the severity word as evidence and raises the level it maps to.
    pub(crate) fn severity(&mut self, severity: &str) {
        let level = severity_level(severity);
        self.raise(level, format!("severity={}", severity.trim()));
    }

    /// Redacts, cleans and bounds every string; maps aliases; computes the
    /// signature and fingerprint.
    pub(crate) fn finish(
        self,
        ctx: &NormalizeContext,
        received_at: DateTime<Utc>,
    ) -> NormalizedEvent {
        let red = &ctx.redactor;
        // INVARIANT: every string from the payload goes through `clean` (the
        // message through `redact_line` before `error_signature`) before it
        // enters the event. Redaction is the last transformation: made one
        // line first, then redacted, then only cut (issue 27).
        let clean = |s: &str, max: usize| truncate(red.redact_line(s), max);
        let or = |s: String, fallback: &str| if s.is_empty() { fallback.to_owned() } else { s };

        let mut service = or(clean(&self.service, m::NAME_BYTES_MAX), "unknown");
        if let Some(canonical) = ctx.service_aliases.get(&service) {
            service = truncate(canonical.clone(), m::NAME_BYTES_MAX);
        }
        let alert_name = or(clean(&self.alert_name, m::NAME_BYTES_MAX), "unknown");
        let summary = or(clean(&self.summary, m::SUMMARY_BYTES_MAX), &alert_name);
        let message = if self.message.trim().is_empty() {
            summary.clone()
        } else {
            red.redact_line(&self.message)
        };
        let error_signature = error_signature(&message);
        let fingerprint: Fingerprint = fingerprint(
            self.environment.as_str(),
            &service,
            &error_signature,
            &alert_name,
        );

        let correlation_ids = self
            .correlation_ids
            .iter()
            .map(|(k, v)| {
                (
                    clean(k, m::NAME_BYTES_MAX),
                    truncate(redact_pair(red, k, v), m::LABEL_VALUE_BYTES_MAX),
                )
            })
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .take(m::CORRELATION_IDS_MAX)
            .collect();
        let labels = self
            .labels
            .iter()
            .map(|(k, v)| {
                (
                    clean(k, m::LABEL_KEY_BYTES_MAX),
                    truncate(redact_pair(red, k, v), m::LABEL_VALUE_BYTES_MAX),
                )
            })
            .filter(|(k, _)| !k.is_empty())
            .take(m::LABELS_MAX)
            .collect();
        // A cut URL is a wrong link: over-long ones are dropped, not truncated.
        // Only http(s) links are kept, so a pointer is never a script or file URL.
        let log_pointers = self
            .log_pointers
            .iter()
            .filter_map(|(label, url)| {
                let url = red.redact_line(url);
                let lower = url.to_ascii_lowercase();
                let web = lower.starts_with("https://") || lower.starts_with("http://");
                (web && url.len() <= m::URL_BYTES_MAX).then(|| LogPointer {
                    label: or(clean(label, m::NAME_BYTES_MAX), "link"),
                    url,
                })
            })
            .take(m::LOG_POINTERS_MAX)
            .collect();
        let evidence = self
            .evidence
            .iter()
            .map(|e| clean(e, EVIDENCE_BYTES_MAX))
            .filter(|e| !e.is_empty())
            .take(m::EVIDENCE_MAX)
            .collect();

        NormalizedEvent {
            source: self.source,
            origin: or(clean(&self.origin, m::NAME_BYTES_MAX), "unknown"),
            status: self.status,
            environment: self.environment,
            service,
            component: self
                .component
                .map(|c| clean(&c, m::NAME_BYTES_MAX))
                .filter(|c| !c.is_empty()),
            alert_name,
            summary,
            error_signature,
            fingerprint,
            correlation_ids,
            impact: Impact {
                level: self.impact_level,
                evidence,
            },
            log_pointers,
            labels,
            occurred_at: self.occurred_at,
            received_at,
            sender: None,
        }
    }
}
