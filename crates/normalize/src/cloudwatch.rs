//! The CloudWatch alarm mapping shared by [`crate::sns`] (the alarm inside an
//! SNS `Message`) and [`crate::eventbridge`] ("CloudWatch Alarm State Change").
//!
//! | event field | from |
//! |---|---|
//! | `origin` | `cloudwatch` |
//! | `status` | `ALARM` -> firing, `OK` -> resolved, `INSUFFICIENT_DATA` -> firing with impact `unknown` and the evidence `state=INSUFFICIENT_DATA` (a human or the model decides whether missing data matters; it is never dropped silently) |
//! | `service` | alarm tag `service`; else the alarm-name convention `<service>/<alert>`; else a dimension named `service`/`Service`; else the first resource dimension of [`SERVICE_DIMENSIONS`] (`DBInstanceIdentifier=orders-db` -> `orders-db`); then the service aliases; none -> `unknown` |
//! | `alert_name` | the alarm name (with the `<service>/` prefix removed when the convention is used) |
//! | `environment` | alarm tag `env`/`environment`/`stage`; else a dimension of that name; else the account ID through `aws_account_environments`; else a token of the alarm name (`orders-prod-cpu`); else a token of the service dimension value; else unknown (never guessed as production) |
//! | `summary` | `<STATE>: <alarm name>: <description>` |
//! | `error_signature` | from the alarm description, else the alarm name. Never the state reason: it changes with every datapoint and with the state, and the `OK` of an alarm must carry the fingerprint of its `ALARM` |
//! | `correlation_ids` | `alarm_arn`, `aws_account` (plus the carrier's: `sns_message_id`, `eventbridge_event_id`) |
//! | `log_pointers` | `cloudwatch_console`: the console page of the alarm, built from the region code (of the alarm ARN or the envelope) and the alarm name |
//! | `impact` | `unknown` (CloudWatch states no severity; a `severity` alarm tag raises it), `none` for OK; evidence: state and previous state, reason, metric and threshold |
//! | `labels` | `aws_region`, `aws_namespace`, `aws_metric`, `dimension.<Name>` per dimension, `alarm_tag.<key>` per tag |
//! | `occurred_at` | the state-change time (`2026-11-24T03:12:10.000+0000`, RFC 3339 accepted too); unparseable or absent -> the carrier's time, else the receive time |
//!
//! Designed so the same fault seen by Alertmanager and CloudWatch has one
//! fingerprint: name the alarm like the Prometheus alert (optionally
//! prefixed `<service>/`), give it the alert's description, and let the
//! dimension or the prefix name the service.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tg_model::{AlertStatus, Environment, ImpactLevel, Source};

use crate::common::{Draft, check_labels, environment_from};
use crate::{NormalizeContext, NormalizeError};

/// Origin of every CloudWatch-detected event: two carriers, one detector.
pub const ORIGIN: &str = "cloudwatch";

/// Resource dimensions that name a service, in order of preference.
pub const SERVICE_DIMENSIONS: &[&str] = &[
    "ServiceName",
    "FunctionName",
    "DBInstanceIdentifier",
    "DBClusterIdentifier",
    "CacheClusterId",
    "ReplicationGroupId",
    "TableName",
    "QueueName",
    "TopicName",
    "ApiName",
    "LoadBalancerName",
    "LoadBalancer",
    "ClusterName",
    "AutoScalingGroupName",
    "DomainName",
    "StreamName",
    "BucketName",
];

const ENVIRONMENT_TAGS: &[&str] = &["env", "environment", "stage", "Environment", "Env", "Stage"];

/// An alarm, whichever carrier brought it.
#[derive(Debug, Default)]
pub(crate) struct Alarm {
    pub name: String,
    pub description: Option<String>,
    pub account: Option<String>,
    /// `ALARM`, `OK` or `INSUFFICIENT_DATA`.
    pub state: String,
    pub old_state: Option<String>,
    pub reason: Option<String>,
    pub arn: Option<String>,
    /// A region code (`us-east-1`), when the carrier names one.
    pub region: Option<String>,
    pub changed_at: Option<String>,
    pub namespace: Option<String>,
    pub metric: Option<String>,
    pub dimensions: Vec<(String, String)>,
    pub tags: BTreeMap<String, String>,
    /// `GreaterThanThreshold 90`, when known.
    pub condition: Option<String>,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `2026-11-24T03:12:10.000+0000` (CloudWatch) or RFC 3339.
pub(crate) fn parse_aws_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The region code inside an ARN (`arn:aws:cloudwatch:us-east-1:...`).
pub(crate) fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| is_region_code(r))
}

fn arn_partition(arn: &str) -> Option<&str> {
    arn.split(':').nth(1)
}

/// `us-east-1`, `cn-north-1`, `us-gov-west-1`: lowercase words and a number.
fn is_region_code(s: &str) -> bool {
    let mut parts = s.split('-');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    first.len() == 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && rest.len() >= 2
        && rest
            .last()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && rest
            .iter()
            .take(rest.len().saturating_sub(1))
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The console page of an alarm, or `None` without a valid region code.
pub fn console_url(region: &str, alarm_name: &str, partition: Option<&str>) -> Option<String> {
    if !is_region_code(region) || alarm_name.is_empty() {
        return None;
    }
    let host = match partition {
        Some("aws-cn") => "console.amazonaws.cn",
        Some("aws-us-gov") => "console.amazonaws-us-gov.com",
        _ => "console.aws.amazon.com",
    };
    Some(format!(
        "https://{host}/cloudwatch/home?region={region}#alarmsV2:alarm/{}",
        encode_component(alarm_name)
    ))
}

/// Splits `<service>/<alert>`; `None` unless both sides are non-empty.
fn name_convention(name: &str) -> Option<(&str, &str)> {
    let (service, alert) = name.split_once('/')?;
    let (service, alert) = (service.trim(), alert.trim());
    (!service.is_empty() && !alert.is_empty()).then_some((service, alert))
}

/// The draft of an alarm event. `carrier_time` is the envelope's time, used
/// when the state-change time is absent or unreadable.
pub(crate) fn draft(
    alarm: Alarm,
    source: Source,
    ctx: &NormalizeContext,
    carrier_time: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Draft, NormalizeError> {
    let occurred_at = non_empty(&alarm.changed_at)
        .and_then(parse_aws_time)
        .or(carrier_time)
        .unwrap_or(now);
    let mut d = Draft::new(source, ORIGIN, occurred_at);
    // Shown as given (redaction runs on the original text; an upper-cased
    // secret would slip past it), matched case-insensitively.
    let state = alarm.state.trim().to_owned();
    let transition = match non_empty(&alarm.old_state) {
        Some(w) => format!("state={state} (was {w})"),
        None => format!("state={state}"),
    };
    match state.to_ascii_uppercase().as_str() {
        "ALARM" => {
            d.status = AlertStatus::Firing;
            d.evidence.push(transition);
        }
        "OK" => {
            d.status = AlertStatus::Resolved;
            d.raise(ImpactLevel::None, transition);
        }
        "INSUFFICIENT_DATA" => {
            d.status = AlertStatus::Firing;
            d.evidence.push(format!(
                "{transition}: missing data, not a threshold breach"
            ));
        }
        _ => {
            return Err(NormalizeError::malformed(
                "state",
                format!("alarm state {state:?} is not ALARM, OK or INSUFFICIENT_DATA"),
            ));
        }
    }

    let tag = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| alarm.tags.get(*k).filter(|v| !v.trim().is_empty()))
            .cloned()
    };
    let dimension = |name: &str| {
        alarm
            .dimensions
            .iter()
            .find(|(n, v)| n == name && !v.trim().is_empty())
            .map(|(_, v)| v.clone())
    };
    let resource = SERVICE_DIMENSIONS.iter().find_map(|n| dimension(n));
    // The convention splits the name as redacted: split first, a secret in
    // the name would be cut in two at a '/' (a 40-character AWS secret key
    // may hold one) and neither half would match its redaction rule.
    let redacted_name = ctx.redactor.redact(&alarm.name);
    let convention = name_convention(&redacted_name);
    d.alert_name = convention
        .map(|(_, a)| a.to_owned())
        .unwrap_or_else(|| alarm.name.clone());
    d.service = tag(&["service", "Service"])
        .or_else(|| convention.map(|(s, _)| s.to_owned()))
        .or_else(|| dimension("service"))
        .or_else(|| dimension("Service"))
        .or_else(|| resource.clone())
        .unwrap_or_default();

    let account = non_empty(&alarm.account).map(str::to_owned);
    d.environment = tag(ENVIRONMENT_TAGS)
        .map(|e| environment_from(&e))
        .filter(|e| *e != Environment::Unknown)
        .or_else(|| {
            ["env", "environment", "Environment", "stage", "Stage"]
                .iter()
                .find_map(|n| dimension(n))
                .map(|e| environment_from(&e))
                .filter(|e| *e != Environment::Unknown)
        })
        .or_else(|| {
            account
                .as_ref()
                .and_then(|a| ctx.aws_account_environments.get(a).copied())
        })
        .or_else(|| Some(environment_from(&alarm.name)).filter(|e| *e != Environment::Unknown))
        .or_else(|| {
            resource
                .as_deref()
                .map(environment_from)
                .filter(|e| *e != Environment::Unknown)
        })
        .unwrap_or(Environment::Unknown);

    let description = non_empty(&alarm.description).map(str::to_owned);
    d.summary = match &description {
        Some(text) => format!("{state}: {}: {text}", alarm.name),
        None => format!("{state}: {}", alarm.name),
    };
    d.message = description.unwrap_or_else(|| d.alert_name.clone());

    if let Some(sev) = tag(&["severity", "Severity"]) {
        d.severity(&sev);
    }
    if let Some(reason) = non_empty(&alarm.reason) {
        d.evidence.push(format!("reason: {reason}"));
    }
    let metric = [non_empty(&alarm.namespace), non_empty(&alarm.metric)]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    if !metric.is_empty() {
        match non_empty(&alarm.condition) {
            Some(c) => d.evidence.push(format!("metric {metric} {c}")),
            None => d.evidence.push(format!("metric {metric}")),
        }
    }

    if let Some(arn) = non_empty(&alarm.arn) {
        d.correlation_ids
            .insert("alarm_arn".to_owned(), arn.to_owned());
    }
    if let Some(a) = &account {
        d.correlation_ids
            .insert("aws_account".to_owned(), a.clone());
    }
    let region = non_empty(&alarm.region)
        .filter(|r| is_region_code(r))
        .or_else(|| non_empty(&alarm.arn).and_then(arn_region));
    let partition = non_empty(&alarm.arn).and_then(arn_partition);
    // Redact before encoding: a percent-encoded secret would slip past the redactor.
    let link_name = ctx.redactor.redact(&alarm.name);
    if let Some(url) = region.and_then(|r| console_url(r, &link_name, partition)) {
        d.log_pointers.push(("cloudwatch_console".to_owned(), url));
    }

    let mut labels = BTreeMap::new();
    if let Some(r) = region {
        labels.insert("aws_region".to_owned(), r.to_owned());
    }
    if let Some(ns) = non_empty(&alarm.namespace) {
        labels.insert("aws_namespace".to_owned(), ns.to_owned());
    }
    if let Some(m) = non_empty(&alarm.metric) {
        labels.insert("aws_metric".to_owned(), m.to_owned());
    }
    for (name, value) in &alarm.dimensions {
        labels.insert(format!("dimension.{name}"), value.clone());
    }
    for (key, value) in &alarm.tags {
        labels.insert(format!("alarm_tag.{key}"), value.clone());
    }
    check_labels(&labels, "labels", &ctx.limits)?;
    d.labels = labels;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_codes() {
        for ok in ["us-east-1", "eu-west-3", "cn-north-1", "us-gov-west-1"] {
            assert!(is_region_code(ok), "{ok}");
        }
        for bad in [
            "",
            "US East",
            "us-east",
            "us_east_1",
            "us-east-1/x",
            "u-east-1",
        ] {
            assert!(!is_region_code(bad), "{bad}");
        }
    }

    #[test]
    fn console_links_encode_the_name_and_follow_the_partition() {
        assert_eq!(
            console_url("us-east-1", "orders db/cpu#1", None).unwrap(),
            "https://console.aws.amazon.com/cloudwatch/home?region=us-east-1#alarmsV2:alarm/orders%20db%2Fcpu%231"
        );
        assert!(
            console_url("cn-north-1", "a", Some("aws-cn"))
                .unwrap()
                .starts_with("https://console.amazonaws.cn/")
        );
        assert_eq!(console_url("evil.com/x", "a", None), None);
    }

    #[test]
    fn aws_times() {
        let t = parse_aws_time("2026-11-24T03:12:10.000+0000").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-24T03:12:10+00:00");
        assert!(parse_aws_time("2026-11-24T03:12:10Z").is_some());
        assert!(parse_aws_time("yesterday").is_none());
    }

    #[test]
    fn arn_region_is_validated() {
        assert_eq!(
            arn_region("arn:aws:cloudwatch:us-east-1:123456789012:alarm:x"),
            Some("us-east-1")
        );
        assert_eq!(arn_region("arn:aws:cloudwatch:<script>:1:alarm:x"), None);
    }
}
