//! Our own generic JSON alert: part of triage-gate's public HTTP API.
//!
//! A body is either one event object or a batch `{"events": [ ... ]}` (at most
//! `alerts_per_batch_max` events; an empty batch gives no events). Unknown
//! fields are ignored. Example:
//!
//! ```json
//! {
//!   "service": "checkout",
//!   "alert_name": "CheckoutErrorRate",
//!   "summary": "checkout 5xx above 5% in eu-west-1",
//!   "source_system": "cloudwatch",
//!   "environment": "prod",
//!   "component": "payments-api",
//!   "message": "upstream timeout after 3012 ms on 10.0.0.7",
//!   "severity": "high",
//!   "status": "firing",
//!   "occurred_at": "2026-11-24T03:12:00Z",
//!   "correlation_ids": {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
//!   "labels": {"region": "eu-west-1"},
//!   "links": [{"label": "dashboard", "url": "https://grafana.example.com/d/abc"}],
//!   "impact": {"affected_customers": 120, "error_rate": 0.12, "hosts": 3}
//! }
//! ```
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `service` | string, required, non-empty | the service; mapped through the service aliases |
//! | `alert_name` | string, required, non-empty | the rule or check that fired |
//! | `summary` | string, required | one human-readable line |
//! | `source_system` | string, default `"generic"` | the detecting system (`cloudwatch`, `datadog`, `apm`); distinct values count as independent signals |
//! | `environment` | string | `prod`/`prd`/`production`/`live` -> production, `staging`/`stage`/`uat` -> staging, `dev`/`test`/`qa` -> development; missing or other -> unknown (never production) |
//! | `component` | string | part of the service |
//! | `message` | string, default `summary` | the error text the error signature is computed from |
//! | `severity` | string | `critical`; `high`/`error`; `warning`/`medium`; `info`/`low`; other -> unknown impact |
//! | `status` | `"firing"` or `"resolved"`, default firing | |
//! | `occurred_at` | RFC 3339, default the receive time | |
//! | `correlation_ids` | object of strings, at most `correlation_ids_max` | IDs tying this event to others |
//! | `labels` | object of strings, at most `labels_max` | |
//! | `links` | array of `{label, url}`, at most `links_max` | log pointers; only http(s) URLs are kept |
//! | `impact` | `{affected_customers: int, error_rate: 0..1, hosts: int}`, each optional | evidence, and raises the impact level (below) |
//!
//! Impact raising (the level is the highest of these and the severity's):
//!
//! | field | critical | high | medium | low |
//! |---|---|---|---|---|
//! | `affected_customers` | 1000 or more | 100 or more | 10 or more | 1 or more |
//! | `error_rate` | 0.5 or more | 0.1 or more | 0.01 or more | above 0 |
//! | `hosts` | | 10 or more | 3 or more | 1 or more |
//!
//! Every string is redacted before it enters the event (see [`crate::redact`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use tg_model::{ImpactLevel, NormalizedEvent, Source};

use crate::common::{
    Draft, check_labels, environment_from, from_value, join, parse_status, parse_time,
};
use crate::{NormalizeContext, NormalizeError};

#[derive(Deserialize)]
struct Batch {
    events: Vec<GenericEvent>,
}

#[derive(Deserialize)]
struct GenericEvent {
    service: String,
    alert_name: String,
    summary: String,
    source_system: Option<String>,
    environment: Option<String>,
    component: Option<String>,
    message: Option<String>,
    severity: Option<String>,
    status: Option<String>,
    occurred_at: Option<String>,
    correlation_ids: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
    links: Option<Vec<Link>>,
    impact: Option<ImpactIn>,
}

#[derive(Deserialize)]
struct Link {
    label: Option<String>,
    url: String,
}

#[derive(Deserialize)]
pub(crate) struct ImpactIn {
    pub affected_customers: Option<u64>,
    pub error_rate: Option<f64>,
    pub hosts: Option<u64>,
}

/// Normalizes a generic alert body (one event or `{"events": [...]}`).
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
    let value = crate::common::parse_body(body, limits)?;
    let Value::Object(map) = &value else {
        return Err(NormalizeError::malformed("", "body is not a json object"));
    };
    let (events, prefix): (Vec<GenericEvent>, &str) = match map.get("events") {
        Some(Value::Array(items)) => {
            if items.len() > limits.alerts_per_batch_max {
                return Err(NormalizeError::limit(
                    "events",
                    format!(
                        "{} events exceed alerts_per_batch_max ({})",
                        items.len(),
                        limits.alerts_per_batch_max
                    ),
                ));
            }
            (from_value::<Batch>(value)?.events, "events")
        }
        Some(_) => {
            return Err(NormalizeError::malformed(
                "events",
                "events is not an array",
            ));
        }
        None => (vec![from_value::<GenericEvent>(value)?], ""),
    };
    let mut drafts = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        let path = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}[{i}]")
        };
        drafts.push(draft(event, &path, ctx, now)?);
    }
    // Only now, with the whole batch valid, are events built.
    Ok(drafts.into_iter().map(|d| d.finish(ctx, now)).collect())
}

fn draft(
    e: GenericEvent,
    path: &str,
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Draft, NormalizeError> {
    let limits = &ctx.limits;
    for (name, value) in [("service", &e.service), ("alert_name", &e.alert_name)] {
        if value.trim().is_empty() {
            return Err(NormalizeError::malformed(
                join(path, name),
                format!("{name} must not be empty"),
            ));
        }
    }
    let occurred_at = match &e.occurred_at {
        Some(s) => parse_time(s, &join(path, "occurred_at"))?.unwrap_or(now),
        None => now,
    };
    let origin = e.source_system.as_deref().unwrap_or("generic");
    let mut d = Draft::new(Source::Generic, origin, occurred_at);
    if let Some(s) = &e.status {
        d.status = parse_status(s, &join(path, "status"))?;
    }
    if let Some(env) = &e.environment {
        d.environment = environment_from(env);
    }
    let labels = e.labels.unwrap_or_default();
    check_labels(&labels, &join(path, "labels"), limits)?;
    let correlation_ids = e.correlation_ids.unwrap_or_default();
    if correlation_ids.len() > limits.correlation_ids_max {
        return Err(NormalizeError::limit(
            join(path, "correlation_ids"),
            format!(
                "{} correlation ids exceed correlation_ids_max ({})",
                correlation_ids.len(),
                limits.correlation_ids_max
            ),
        ));
    }
    let links = e.links.unwrap_or_default();
    if links.len() > limits.links_max {
        return Err(NormalizeError::limit(
            join(path, "links"),
            format!(
                "{} links exceed links_max ({})",
                links.len(),
                limits.links_max
            ),
        ));
    }
    if let Some(sev) = &e.severity {
        d.severity(sev);
    }
    if let Some(impact) = &e.impact {
        apply_impact(&mut d, impact, &join(path, "impact"))?;
    }
    d.service = e.service;
    d.alert_name = e.alert_name;
    d.message = e.message.unwrap_or_else(|| e.summary.clone());
    d.summary = e.summary;
    d.component = e.component;
    d.labels = labels;
    d.correlation_ids = correlation_ids;
    d.log_pointers = links
        .into_iter()
        .map(|l| (l.label.unwrap_or_else(|| "link".to_owned()), l.url))
        .collect();
    Ok(d)
}

pub(crate) fn apply_impact(
    d: &mut Draft,
    impact: &ImpactIn,
    path: &str,
) -> Result<(), NormalizeError> {
    use ImpactLevel::{Critical, High, Low, Medium};
    if let Some(n) = impact.affected_customers {
        let level = match n {
            1000.. => Critical,
            100.. => High,
            10.. => Medium,
            1.. => Low,
            0 => ImpactLevel::None,
        };
        d.raise(level, format!("affected_customers={n}"));
    }
    if let Some(rate) = impact.error_rate {
        if !(0.0..=1.0).contains(&rate) {
            return Err(NormalizeError::malformed(
                join(path, "error_rate"),
                format!("error_rate {rate} is outside 0..1"),
            ));
        }
        let level = if rate >= 0.5 {
            Critical
        } else if rate >= 0.1 {
            High
        } else if rate >= 0.01 {
            Medium
        } else if rate > 0.0 {
            Low
        } else {
            ImpactLevel::None
        };
        let percent = (rate * 10_000.0).round() / 100.0;
        d.raise(level, format!("error_rate={percent}%"));
    }
    if let Some(n) = impact.hosts {
        let level = match n {
            10.. => High,
            3.. => Medium,
            1.. => Low,
            0 => ImpactLevel::None,
        };
        d.raise(level, format!("hosts={n}"));
    }
    Ok(())
}
