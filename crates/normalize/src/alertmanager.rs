//! Prometheus Alertmanager webhook (`webhook_configs`), payload version "4".
//!
//! One event per alert, each with its own status. Labels are `commonLabels`
//! overlaid by the alert's labels. Mapping:
//!
//! | event field | from |
//! |---|---|
//! | `service` | label `service`, else `job`, else `app` (then the service aliases); none -> `unknown` |
//! | `environment` | label `env`, `environment`, `deployment_environment`, `namespace` or `kubernetes_namespace` (`payments-prod` -> production) |
//! | `component` | label `component`, else `container` |
//! | `alert_name` | label `alertname` |
//! | `summary` | annotation `summary`, else `description` (alert's, then common) |
//! | `error_signature` | from annotation `description`, else `summary` |
//! | `origin` | `prometheus` |
//! | `correlation_ids` | `alertmanager_fingerprint` (alert `fingerprint`), `group_key` (`groupKey`) |
//! | `log_pointers` | `generatorURL` (`generator`), annotation `runbook_url` (`runbook`) |
//! | `impact` | label `severity` |
//! | `occurred_at` | `startsAt`; unset (zero time) -> the receive time |
//!
//! A version other than "4" is rejected; unknown fields (`notification_reason`,
//! `routeLabels`, `truncatedAlerts`, ...) are ignored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use tg_model::{NormalizedEvent, Source};

use crate::common::{
    Draft, check_labels, environment_from, from_value, join, parse_body, parse_status, parse_time,
};
use crate::{NormalizeContext, NormalizeError};

/// How an Alertmanager-shaped payload is read: Alertmanager itself or Grafana.
pub(crate) struct Flavor {
    pub source: Source,
    pub origin: &'static str,
    pub version: &'static str,
    pub product: &'static str,
}

const ALERTMANAGER: Flavor = Flavor {
    source: Source::Alertmanager,
    origin: "prometheus",
    version: "4",
    product: "alertmanager",
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    group_key: Option<String>,
    status: Option<String>,
    common_labels: Option<BTreeMap<String, String>>,
    common_annotations: Option<BTreeMap<String, String>>,
    alerts: Vec<Alert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    status: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    starts_at: Option<String>,
    #[serde(rename = "generatorURL")]
    generator_url: Option<String>,
    fingerprint: Option<String>,
    // Grafana only.
    #[serde(rename = "dashboardURL")]
    dashboard_url: Option<String>,
    #[serde(rename = "panelURL")]
    panel_url: Option<String>,
    values: Option<BTreeMap<String, Value>>,
}

/// Normalizes an Alertmanager v4 webhook body: one event per alert.
pub fn normalize(
    body: &[u8],
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    normalize_flavor(&ALERTMANAGER, body, ctx, now).map_err(|e| e.redacted(&ctx.redactor))
}

const SERVICE_LABELS: &[&str] = &["service", "job", "app"];
const ENVIRONMENT_LABELS: &[&str] = &[
    "env",
    "environment",
    "deployment_environment",
    "namespace",
    "kubernetes_namespace",
];

fn first<'a>(maps: &[&'a BTreeMap<String, String>], keys: &[&str]) -> Option<&'a String> {
    keys.iter().find_map(|k| {
        maps.iter()
            .find_map(|m| m.get(*k).filter(|v| !v.trim().is_empty()))
    })
}

pub(crate) fn normalize_flavor(
    flavor: &Flavor,
    body: &[u8],
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let limits = &ctx.limits;
    let value = parse_body(body, limits)?;
    let Value::Object(map) = &value else {
        return Err(NormalizeError::malformed("", "body is not a json object"));
    };
    match map.get("version") {
        Some(Value::String(v)) if v == flavor.version => {}
        Some(Value::String(v)) => {
            return Err(NormalizeError::malformed(
                "version",
                format!(
                    "unsupported {} webhook version {v:?} (expected {:?})",
                    flavor.product, flavor.version
                ),
            ));
        }
        Some(_) => {
            return Err(NormalizeError::malformed(
                "version",
                format!("version is not a string (expected {:?})", flavor.version),
            ));
        }
        None => {
            return Err(NormalizeError::malformed(
                "version",
                format!("missing version (expected {:?})", flavor.version),
            ));
        }
    }
    if let Some(Value::Array(alerts)) = map.get("alerts")
        && alerts.len() > limits.alerts_per_batch_max
    {
        return Err(NormalizeError::limit(
            "alerts",
            format!(
                "{} alerts exceed alerts_per_batch_max ({})",
                alerts.len(),
                limits.alerts_per_batch_max
            ),
        ));
    }
    let payload: Payload = from_value(value)?;
    let common_labels = payload.common_labels.unwrap_or_default();
    let common_annotations = payload.common_annotations.unwrap_or_default();
    let empty = BTreeMap::new();

    let mut drafts = Vec::with_capacity(payload.alerts.len());
    for (i, alert) in payload.alerts.into_iter().enumerate() {
        let path = format!("alerts[{i}]");
        let mut labels = common_labels.clone();
        labels.extend(alert.labels.unwrap_or_default());
        check_labels(&labels, &join(&path, "labels"), limits)?;
        let annotations = alert.annotations.as_ref().unwrap_or(&empty);
        let notes = [annotations, &common_annotations];

        let occurred_at = match &alert.starts_at {
            Some(s) => parse_time(s, &join(&path, "startsAt"))?.unwrap_or(now),
            None => now,
        };
        let mut d = Draft::new(flavor.source, flavor.origin, occurred_at);
        d.status = match alert.status.as_deref().or(payload.status.as_deref()) {
            Some(s) => parse_status(s, &join(&path, "status"))?,
            None => {
                return Err(NormalizeError::malformed(
                    join(&path, "status"),
                    "missing status (expected \"firing\" or \"resolved\")",
                ));
            }
        };
        let l = [&labels];
        d.service = first(&l, SERVICE_LABELS).cloned().unwrap_or_default();
        d.environment = first(&l, ENVIRONMENT_LABELS)
            .map(|e| environment_from(e))
            .unwrap_or(tg_model::Environment::Unknown);
        d.component = first(&l, &["component", "container"]).cloned();
        d.alert_name = first(&l, &["alertname"]).cloned().unwrap_or_default();
        d.summary = first(&notes, &["summary", "description"])
            .cloned()
            .unwrap_or_default();
        d.message = first(&notes, &["description", "summary"])
            .cloned()
            .unwrap_or_default();
        if let Some(sev) = first(&l, &["severity"]) {
            d.severity(sev);
        }
        if let Some(values) = &alert.values {
            // Grafana's query values: numbers only, as evidence.
            for (name, v) in values {
                if let Value::Number(n) = v {
                    d.evidence.push(format!("value {name}={n}"));
                }
            }
        }
        if let Some(fp) = alert.fingerprint.filter(|f| !f.is_empty()) {
            d.correlation_ids
                .insert(format!("{}_fingerprint", flavor.product), fp);
        }
        if let Some(key) = payload.group_key.as_ref().filter(|k| !k.is_empty()) {
            d.correlation_ids
                .insert("group_key".to_owned(), key.clone());
        }
        for (label, url) in [
            ("generator", alert.generator_url),
            ("dashboard", alert.dashboard_url),
            ("panel", alert.panel_url),
            (
                "runbook",
                first(&notes, &["runbook_url", "runbook"]).cloned(),
            ),
        ] {
            if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
                d.log_pointers.push((label.to_owned(), url));
            }
        }
        d.labels = labels;
        drafts.push(d);
    }
    Ok(drafts.into_iter().map(|d| d.finish(ctx, now)).collect())
}
