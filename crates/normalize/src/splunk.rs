//! Splunk alert action: webhook (`sid`, `search_name`, `results_link`, `result`).
//!
//! One event per payload (Splunk sends the first result row). Mapping:
//!
//! | event field | from |
//! |---|---|
//! | `alert_name`, `summary` | `search_name` (required) |
//! | `service` | result field `service`, else `app`, else `application`; none -> `unknown` |
//! | `environment` | result field `env`, else `environment` |
//! | `component` | result field `component` |
//! | `error_signature` | result field `message`, else `error`, else `msg`, else `search_name` |
//! | `impact` | result field `severity`, else `urgency`; `count` as evidence |
//! | `origin` | `splunk` |
//! | `status` | always firing (the result's `status` is a field of the data, e.g. an HTTP status) |
//! | `correlation_ids` | `splunk_sid` (`sid`) |
//! | `log_pointers` | `results_link` (`splunk_results`) |
//! | `labels` | result fields whose names do not start with `_` (so never `_raw`, the log line), scalars only; fields over the label limits are skipped, not fatal, because a result row is data, not a label set |
//! | `occurred_at` | result `_time` (epoch seconds or RFC 3339), else the receive time |

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use tg_model::event::limits as m;
use tg_model::{NormalizedEvent, Source};

use crate::common::{Draft, environment_from, from_value, parse_body};
use crate::{NormalizeContext, NormalizeError};

#[derive(Deserialize)]
struct Payload {
    sid: Option<String>,
    search_name: String,
    results_link: Option<String>,
    result: Option<BTreeMap<String, Value>>,
}

/// Normalizes a Splunk webhook alert body into one event.
pub fn normalize(
    body: &[u8],
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    normalize_inner(body, ctx, now).map_err(|e| e.redacted(&ctx.redactor))
}

/// A result field as text: strings as they are, numbers and booleans printed,
/// multivalue fields joined with `,`; objects and nulls give `None`.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .filter(|i| !i.is_array())
                .filter_map(scalar)
                .collect();
            (!parts.is_empty()).then(|| parts.join(","))
        }
        Value::Null | Value::Object(_) => None,
    }
}

fn parse_splunk_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let secs: f64 = s.parse().ok()?;
    if !secs.is_finite() || secs.abs() > 1e11 {
        return None;
    }
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9) as u32;
    DateTime::from_timestamp(whole as i64, nanos)
}

fn normalize_inner(
    body: &[u8],
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let limits = &ctx.limits;
    let value = parse_body(body, limits)?;
    if !value.is_object() {
        return Err(NormalizeError::malformed("", "body is not a json object"));
    }
    let p: Payload = from_value(value)?;
    if p.search_name.trim().is_empty() {
        return Err(NormalizeError::malformed(
            "search_name",
            "search_name must not be empty",
        ));
    }
    let fields: BTreeMap<String, String> = p
        .result
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), scalar(v)?)))
        .collect();
    let get = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| fields.get(*k).filter(|v| !v.trim().is_empty()))
            .cloned()
    };
    let occurred_at = get(&["_time"])
        .and_then(|t| parse_splunk_time(&t))
        .unwrap_or(now);
    let mut d = Draft::new(Source::Splunk, "splunk", occurred_at);
    d.service = get(&["service", "app", "application"]).unwrap_or_default();
    if let Some(env) = get(&["env", "environment"]) {
        d.environment = environment_from(&env);
    }
    d.component = get(&["component"]);
    d.message = get(&["message", "error", "msg"]).unwrap_or_else(|| p.search_name.clone());
    if let Some(sev) = get(&["severity", "urgency"]) {
        d.severity(&sev);
    }
    if let Some(count) = get(&["count"]) {
        d.evidence.push(format!("count={count}"));
    }
    d.alert_name = p.search_name.clone();
    d.summary = p.search_name;
    if let Some(sid) = p.sid {
        d.correlation_ids.insert("splunk_sid".to_owned(), sid);
    }
    if let Some(link) = p.results_link {
        d.log_pointers.push(("splunk_results".to_owned(), link));
    }
    let key_max = limits.label_key_bytes_max.min(m::LABEL_KEY_BYTES_MAX);
    let value_max = limits.label_value_bytes_max.min(m::LABEL_VALUE_BYTES_MAX);
    d.labels = fields
        .into_iter()
        .filter(|(k, v)| !k.starts_with('_') && k.len() <= key_max && v.len() <= value_max)
        .take(limits.labels_max.min(m::LABELS_MAX))
        .collect();
    Ok(vec![d.finish(ctx, now)])
}
