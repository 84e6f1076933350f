//! CloudEvents 1.0, structured JSON mode (`application/cloudevents+json`), and
//! batch mode (`application/cloudevents-batch+json`: a JSON array of events).
//!
//! Required: `specversion` ("1.0"), `id`, `source`, `type`. `data` must be a
//! JSON object when present (`data_base64` is refused: binary data is not an
//! alert). Mapping:
//!
//! | event field | from |
//! |---|---|
//! | `service` | `data.service`, else `subject` (then aliases); none -> `unknown` |
//! | `alert_name` | `data.alert_name`, else `type` |
//! | `summary` | `data.summary`, else `data.message`, else the alert name |
//! | `error_signature` | `data.message`, else the summary |
//! | `origin` | `data.source_system`, else the host of an absolute `source` URI, else its first path segment (`/apm/synthetics/checkout` -> `apm`) |
//! | `environment`, `component`, `severity`, `status`, `labels`, `impact` | `data.*`, as in the [`crate::generic`] format |
//! | `correlation_ids` | `cloudevents_id` (`id`), `trace_id`, `span_id` (from `data`) |
//! | `occurred_at` | `time`, else the receive time |

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use tg_model::{NormalizedEvent, Source};

use crate::common::{
    Draft, check_labels, environment_from, from_value, join, parse_body, parse_status, parse_time,
};
use crate::generic::{ImpactIn, apply_impact};
use crate::{NormalizeContext, NormalizeError};

#[derive(Deserialize)]
struct Envelope {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    event_type: String,
    subject: Option<String>,
    time: Option<String>,
    datacontenttype: Option<String>,
    data: Option<Data>,
    data_base64: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Data {
    service: Option<String>,
    alert_name: Option<String>,
    summary: Option<String>,
    message: Option<String>,
    source_system: Option<String>,
    environment: Option<String>,
    component: Option<String>,
    severity: Option<String>,
    status: Option<String>,
    trace_id: Option<String>,
    span_id: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    impact: Option<ImpactIn>,
}

/// Normalizes one structured-mode CloudEvent, or a batch (JSON array) of them.
pub fn normalize(
    body: &[u8],
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    normalize_inner(body, ctx, now).map_err(|e| e.redacted(&ctx.redactor))
}

fn normalize_inner(
    body: &[u8],
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let limits = &ctx.limits;
    let value = parse_body(body, limits)?;
    let envelopes: Vec<(String, Envelope)> = match value {
        Value::Array(items) => {
            if items.len() > limits.alerts_per_batch_max {
                return Err(NormalizeError::limit(
                    "",
                    format!(
                        "{} events exceed alerts_per_batch_max ({})",
                        items.len(),
                        limits.alerts_per_batch_max
                    ),
                ));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let path = format!("[{i}]");
                let env = from_value::<Envelope>(item).map_err(|e| prefix(e, &path))?;
                out.push((path, env));
            }
            out
        }
        Value::Object(_) => vec![(String::new(), from_value(value)?)],
        _ => {
            return Err(NormalizeError::malformed(
                "",
                "body is neither a json object nor an array of them",
            ));
        }
    };
    let mut drafts = Vec::with_capacity(envelopes.len());
    for (path, envelope) in envelopes {
        drafts.push(draft(envelope, &path, ctx, now)?);
    }
    Ok(drafts.into_iter().map(|d| d.finish(ctx, now)).collect())
}

fn prefix(mut e: NormalizeError, path: &str) -> NormalizeError {
    e.field = if e.field.is_empty() {
        path.to_owned()
    } else {
        format!("{path}.{}", e.field)
    };
    e
}

/// The detecting system named by a `source` URI-reference.
fn origin_of(source: &str) -> String {
    let rest = match source.split_once("://") {
        Some((_, rest)) => rest,
        None => source.strip_prefix("urn:").unwrap_or(source),
    };
    let host_or_segment = rest
        .split(['/', ':'])
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    // A host: strip any user info; keep it as it is otherwise.
    host_or_segment
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn draft(
    e: Envelope,
    path: &str,
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Draft, NormalizeError> {
    if e.specversion != "1.0" {
        return Err(NormalizeError::malformed(
            join(path, "specversion"),
            format!(
                "unsupported cloudevents specversion {:?} (expected \"1.0\")",
                e.specversion
            ),
        ));
    }
    for (name, value) in [
        ("id", &e.id),
        ("source", &e.source),
        ("type", &e.event_type),
    ] {
        if value.trim().is_empty() {
            return Err(NormalizeError::malformed(
                join(path, name),
                format!("{name} must not be empty"),
            ));
        }
    }
    if let Some(ct) = &e.datacontenttype
        && !ct.to_ascii_lowercase().contains("json")
    {
        return Err(NormalizeError::malformed(
            join(path, "datacontenttype"),
            format!("datacontenttype {ct:?} is not json"),
        ));
    }
    if e.data.is_none() && e.data_base64.is_some() {
        return Err(NormalizeError::malformed(
            join(path, "data_base64"),
            "data_base64 is not supported; send data as a json object",
        ));
    }
    let data = e.data.unwrap_or_default();
    let occurred_at = match &e.time {
        Some(t) => parse_time(t, &join(path, "time"))?.unwrap_or(now),
        None => now,
    };
    let origin = data
        .source_system
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| origin_of(&e.source));
    let mut d = Draft::new(Source::Cloudevents, &origin, occurred_at);
    let data_path = join(path, "data");
    if let Some(s) = &data.status {
        d.status = parse_status(s, &join(&data_path, "status"))?;
    }
    if let Some(env) = &data.environment {
        d.environment = environment_from(env);
    }
    let labels = data.labels.unwrap_or_default();
    check_labels(&labels, &join(&data_path, "labels"), &ctx.limits)?;
    if let Some(sev) = &data.severity {
        d.severity(sev);
    }
    if let Some(impact) = &data.impact {
        apply_impact(&mut d, impact, &join(&data_path, "impact"))?;
    }
    d.service = data.service.or(e.subject).unwrap_or_default();
    d.alert_name = data.alert_name.unwrap_or(e.event_type);
    d.summary = data
        .summary
        .clone()
        .or_else(|| data.message.clone())
        .unwrap_or_default();
    d.message = data.message.or(data.summary).unwrap_or_default();
    d.component = data.component;
    d.labels = labels;
    d.correlation_ids.insert("cloudevents_id".to_owned(), e.id);
    for (k, v) in [("trace_id", data.trace_id), ("span_id", data.span_id)] {
        if let Some(v) = v {
            d.correlation_ids.insert(k.to_owned(), v);
        }
    }
    Ok(d)
}
