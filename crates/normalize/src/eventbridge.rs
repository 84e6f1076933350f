//! Amazon EventBridge events, as an API destination delivers them: one event
//! per request, the envelope `version` ("0"), `id`, `detail-type`, `source`,
//! `account`, `time`, `region`, `resources[]`, `detail`. Unknown fields are
//! ignored.
//!
//! `source: aws.cloudwatch` with `detail-type: CloudWatch Alarm State Change`
//! goes through the CloudWatch alarm mapping ([`crate::cloudwatch`]): `detail`
//! `alarmName`, `state{value, reason, timestamp}`, `previousState{value}`,
//! `configuration{description, metrics[].metricStat.metric{namespace, name,
//! dimensions{Name: Value}}}`, optional `alarmTags`; the alarm ARN is
//! `resources[0]`.
//!
//! Any other detail type (generic fallback):
//!
//! | event field | from |
//! |---|---|
//! | `origin` | `source` without its `aws.` prefix (`aws.health` -> `health`); `cloudwatch` for `aws.cloudwatch*`; empty -> `eventbridge` |
//! | `alert_name` | `detail-type` |
//! | `service` | `detail.service`, `detail.serviceName`, `detail.app`; else `source` |
//! | `environment` | `detail.environment`/`detail.env`; else the account through `aws_account_environments`; else unknown |
//! | `status` | `detail.status`, `detail.state` or `detail.state.value`: `resolved`, `ok`, `closed`, `recovered` (any case) -> resolved; anything else firing |
//! | `summary` | `detail.summary`, `detail.title`, `detail.message`, `detail.eventDescription[0].latestDescription`; else `detail-type` |
//! | `error_signature` | from `detail.message`, else the summary |
//! | `impact` | `detail.severity` |
//! | `correlation_ids` | `eventbridge_event_id` (`id`), `aws_account`, `resource_arn` (`resources[0]`) |
//! | `labels` | `eventbridge_source`, `aws_region` |
//! | `occurred_at` | `time`; absent -> the receive time |

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use tg_model::{AlertStatus, Environment, NormalizedEvent, Source};

use crate::cloudwatch::{Alarm, ORIGIN as CLOUDWATCH, draft};
use crate::common::{Draft, check_labels, environment_from, from_value, parse_body, parse_time};
use crate::{NormalizeContext, NormalizeError};

/// The detail type of a CloudWatch alarm state change.
pub const ALARM_DETAIL_TYPE: &str = "CloudWatch Alarm State Change";

#[derive(Deserialize)]
struct Envelope {
    version: Option<String>,
    id: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
    source: String,
    account: Option<String>,
    time: Option<String>,
    region: Option<String>,
    resources: Option<Vec<String>>,
    detail: Map<String, Value>,
}

/// Normalizes one EventBridge event into one event.
pub fn normalize(
    body: &[u8],
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    normalize_inner(body, ctx, now).map_err(|e| e.redacted(&ctx.redactor))
}

fn str_at<'a>(detail: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| {
        detail
            .get(*k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    })
}

fn normalize_inner(
    body: &[u8],
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let value = parse_body(body, &ctx.limits)?;
    if !value.is_object() {
        return Err(NormalizeError::malformed("", "body is not a json object"));
    }
    let env: Envelope = from_value(value)?;
    if let Some(v) = env.version.as_deref().filter(|v| *v != "0") {
        return Err(NormalizeError::malformed(
            "version",
            format!("unsupported EventBridge envelope version {v:?} (expected \"0\")"),
        ));
    }
    let time = match &env.time {
        Some(t) => parse_time(t, "time")?,
        None => None,
    };
    let resources = env.resources.clone().unwrap_or_default();
    let mut d = if env.source == "aws.cloudwatch" && env.detail_type == ALARM_DETAIL_TYPE {
        alarm_draft(&env, &resources, ctx, time, now)?
    } else {
        generic_draft(&env, ctx, time, now)?
    };
    d.correlation_ids
        .insert("eventbridge_event_id".to_owned(), env.id.clone());
    Ok(vec![d.finish(ctx, now)])
}

fn alarm_draft(
    env: &Envelope,
    resources: &[String],
    ctx: &NormalizeContext,
    time: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Draft, NormalizeError> {
    let detail = &env.detail;
    let name = str_at(detail, &["alarmName"])
        .ok_or_else(|| NormalizeError::malformed("detail.alarmName", "missing alarmName"))?;
    let state = detail.get("state").and_then(Value::as_object);
    let state_value = state
        .and_then(|s| str_at(s, &["value"]))
        .ok_or_else(|| NormalizeError::malformed("detail.state.value", "missing state value"))?;
    let config = detail.get("configuration").and_then(Value::as_object);
    // The first metric that has a metricStat (metric-math alarms list several).
    let metric = config
        .and_then(|c| c.get("metrics"))
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter()
                .find_map(|m| m.pointer("/metricStat/metric").and_then(Value::as_object))
        });
    let dimensions = metric
        .and_then(|m| m.get("dimensions"))
        .and_then(Value::as_object)
        .map(|ds| {
            ds.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let tags: BTreeMap<String, String> = detail
        .get("alarmTags")
        .and_then(Value::as_object)
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let alarm = Alarm {
        name: name.to_owned(),
        description: config
            .and_then(|c| str_at(c, &["description"]))
            .map(str::to_owned),
        account: env.account.clone(),
        state: state_value.to_owned(),
        old_state: detail
            .get("previousState")
            .and_then(Value::as_object)
            .and_then(|s| str_at(s, &["value"]))
            .map(str::to_owned),
        reason: state
            .and_then(|s| str_at(s, &["reason"]))
            .map(str::to_owned),
        arn: resources.first().cloned(),
        region: env.region.clone(),
        changed_at: state
            .and_then(|s| str_at(s, &["timestamp"]))
            .map(str::to_owned),
        namespace: metric
            .and_then(|m| str_at(m, &["namespace"]))
            .map(str::to_owned),
        metric: metric.and_then(|m| str_at(m, &["name"])).map(str::to_owned),
        dimensions,
        tags,
        condition: None,
    };
    draft(alarm, Source::Eventbridge, ctx, time, now).map_err(|e| {
        let field = if e.field.is_empty() {
            "detail".to_owned()
        } else {
            format!("detail.{}", e.field)
        };
        NormalizeError::new(e.kind, field, e.message)
    })
}

fn generic_draft(
    env: &Envelope,
    ctx: &NormalizeContext,
    time: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Draft, NormalizeError> {
    let detail = &env.detail;
    let source = env.source.trim();
    let origin = if source.starts_with("aws.cloudwatch") {
        CLOUDWATCH.to_owned()
    } else {
        let o = source.strip_prefix("aws.").unwrap_or(source);
        if o.is_empty() {
            "eventbridge".to_owned()
        } else {
            o.to_owned()
        }
    };
    let mut d = Draft::new(Source::Eventbridge, &origin, time.unwrap_or(now));
    d.alert_name = env.detail_type.clone();
    d.service = str_at(detail, &["service", "serviceName", "app"])
        .unwrap_or(source)
        .to_owned();
    d.environment = str_at(detail, &["environment", "env"])
        .map(environment_from)
        .filter(|e| *e != Environment::Unknown)
        .or_else(|| {
            env.account
                .as_ref()
                .and_then(|a| ctx.aws_account_environments.get(a.trim()).copied())
        })
        .unwrap_or(Environment::Unknown);
    let status = str_at(detail, &["status", "state"]).or_else(|| {
        detail
            .get("state")
            .and_then(Value::as_object)
            .and_then(|s| str_at(s, &["value"]))
    });
    if let Some(s) = status
        && matches!(
            s.to_ascii_lowercase().as_str(),
            "resolved" | "ok" | "closed" | "recovered"
        )
    {
        d.status = AlertStatus::Resolved;
    }
    let health = detail
        .get("eventDescription")
        .and_then(|v| v.pointer("/0/latestDescription"))
        .and_then(Value::as_str);
    d.summary = str_at(detail, &["summary", "title", "message"])
        .or(health)
        .unwrap_or(&env.detail_type)
        .to_owned();
    d.message = str_at(detail, &["message"])
        .map(str::to_owned)
        .unwrap_or_default();
    if let Some(sev) = str_at(detail, &["severity"]) {
        d.severity(sev);
    }
    if let Some(a) = env.account.as_ref().filter(|a| !a.trim().is_empty()) {
        d.correlation_ids
            .insert("aws_account".to_owned(), a.clone());
    }
    if let Some(r) = env.resources.as_ref().and_then(|r| r.first()) {
        d.correlation_ids
            .insert("resource_arn".to_owned(), r.clone());
    }
    let mut labels = BTreeMap::new();
    labels.insert("eventbridge_source".to_owned(), source.to_owned());
    if let Some(r) = env.region.as_ref().filter(|r| !r.trim().is_empty()) {
        labels.insert("aws_region".to_owned(), r.clone());
    }
    check_labels(&labels, "", &ctx.limits)?;
    d.labels = labels;
    Ok(d)
}
