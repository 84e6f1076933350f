//! Datadog webhook integration, with our recommended payload template.
//!
//! Datadog's webhook body is whatever template the user writes, with
//! `$VARIABLES` substituted as strings. We parse the template below
//! ([`RECOMMENDED_TEMPLATE`], also in docs/api.md); fields it does not name
//! are ignored, and a field may be a JSON string or a number (a template that
//! forgot the quotes around `$DATE` still works). A value that is still a
//! bare `$VARIABLE` (Datadog left it unexpanded) counts as absent.
//!
//! One event per payload. Mapping:
//!
//! | event field | from |
//! |---|---|
//! | `status` | `alert_transition` (`$ALERT_TRANSITION`, required): `Triggered`, `Re-Triggered`, `Warn`, `Re-Warn`, `No Data`, `Re-No Data`, `Renotify` -> firing; `Recovered` -> resolved; anything else is rejected |
//! | `alert_name` | `alert_title` (`$ALERT_TITLE`) if present, else `title` without its leading `[...]` groups (`[Triggered on {host:a}] `, `[P1] `), so a trigger and its recovery share one fingerprint |
//! | `summary` | the alert name, then `: ` and the first text line of `body` (`$EVENT_MSG`, `%%%` markdown fences and `@`-mentions dropped) |
//! | `error_signature` | from the alert name, not the body: a monitor's message differs between trigger and recovery (`{{#is_alert}}`), the fingerprint must not |
//! | `service` | tag `service`, else `app`; none -> `unknown` (then the service aliases) |
//! | `environment` | tag `env`, else `environment` (`prod` -> production; unknown stays unknown) |
//! | `component` | tag `component` |
//! | `impact` | `priority` (`$ALERT_PRIORITY`, `P1` critical .. `P4`/`P5` low) and `alert_type` (`$ALERT_TYPE`: `error` high, `warning` medium, `info` low, `success` none); the higher wins, both are evidence |
//! | `origin` | `datadog` |
//! | `correlation_ids` | `datadog_event_id` (`id`), `datadog_monitor_id` (`alert_id`), `datadog_aggreg_key` (`aggreg_key`), `datadog_alert_cycle_key` (`alert_cycle_key`, ties a trigger to its recovery) |
//! | `log_pointers` | `link` (`$LINK`, label `datadog`) |
//! | `labels` | the tags (`$TAGS`, comma-separated `key:value`; a bare tag gets an empty value; repeated keys are joined with `,`) plus `host` (`$HOSTNAME`); tags over the label limits are skipped, not fatal, because Datadog sends every host tag and does not retry a 4xx |
//! | `occurred_at` | `date` (`$DATE`): epoch milliseconds (seconds if below 10^11); absent or empty -> the receive time |
//!
//! `alert_status`, `org` and other fields are ignored. "Encode as form" is not
//! supported: the body must be JSON.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tg_model::event::limits as m;
use tg_model::{AlertStatus, ImpactLevel, NormalizedEvent, Source};

use crate::common::{Draft, environment_from, parse_body, severity_level};
use crate::{NormalizeContext, NormalizeError};

/// The payload template to paste into Datadog's webhook integration. Every
/// value is a quoted `$VARIABLE`, so the body is valid JSON whatever Datadog
/// substitutes.
pub const RECOMMENDED_TEMPLATE: &str = r#"{
  "id": "$ID",
  "title": "$EVENT_TITLE",
  "body": "$EVENT_MSG",
  "alert_id": "$ALERT_ID",
  "alert_title": "$ALERT_TITLE",
  "alert_status": "$ALERT_STATUS",
  "alert_transition": "$ALERT_TRANSITION",
  "alert_type": "$ALERT_TYPE",
  "alert_cycle_key": "$ALERT_CYCLE_KEY",
  "priority": "$ALERT_PRIORITY",
  "hostname": "$HOSTNAME",
  "tags": "$TAGS",
  "link": "$LINK",
  "date": "$DATE",
  "aggreg_key": "$AGGREG_KEY",
  "org": {"id": "$ORG_ID", "name": "$ORG_NAME"}
}"#;

/// Tags read from one `$TAGS` string; the rest are ignored.
pub const TAGS_MAX: usize = 1024;

/// Epoch values at or above this are milliseconds, below it seconds
/// (10^11 s is the year 5138; 10^11 ms is 1973).
const EPOCH_MS_THRESHOLD: i64 = 100_000_000_000;

/// Normalizes a Datadog webhook body (the recommended template) into one event.
pub fn normalize(
    body: &[u8],
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    normalize_inner(body, ctx, now).map_err(|e| e.redacted(&ctx.redactor))
}

/// A field as text: strings trimmed, numbers printed; empty strings,
/// unexpanded `$VARIABLES`, nulls, booleans, arrays and objects give `None`.
fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    let s = match map.get(key)? {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let unexpanded = s.len() > 1
        && s.starts_with('$')
        && s.bytes()
            .skip(1)
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    (!s.is_empty() && !unexpanded).then_some(s)
}

/// `Recovered` -> resolved; the firing transitions -> firing (with or
/// without the `Re-` prefix, any case).
fn parse_transition(t: &str) -> Result<AlertStatus, NormalizeError> {
    let lower = t.trim().to_ascii_lowercase();
    let base = lower.strip_prefix("re-").unwrap_or(&lower);
    match base {
        "triggered" | "warn" | "no data" | "renotify" => Ok(AlertStatus::Firing),
        "recovered" if lower == "recovered" => Ok(AlertStatus::Resolved),
        _ => Err(NormalizeError::malformed(
            "alert_transition",
            format!(
                "alert_transition {t:?} is not one of \"Triggered\", \"Re-Triggered\", \
                 \"Warn\", \"Re-Warn\", \"No Data\", \"Re-No Data\", \"Renotify\", \"Recovered\""
            ),
        )),
    }
}

/// The title without its leading `[...]` groups (`[Triggered on {host:a}] `).
fn strip_title_prefix(title: &str) -> &str {
    let mut rest = title.trim_start();
    while let Some(after) = rest.strip_prefix('[') {
        match after.find(']') {
            Some(end) => rest = after.get(end + 1..).unwrap_or("").trim_start(),
            None => break,
        }
    }
    if rest.is_empty() { title.trim() } else { rest }
}

/// The first line of a monitor message worth reading: `%%%` fences, blank
/// lines and lines of only `@`-mentions are skipped.
fn first_body_line(body: &str) -> Option<&str> {
    body.lines().map(str::trim).find(|line| {
        !line.is_empty() && *line != "%%%" && !line.split_whitespace().all(|w| w.starts_with('@'))
    })
}

/// `env:prod,service:checkout,critical` -> {env: prod, service: checkout, critical: ""}.
fn parse_tags(tags: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for tag in tags
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .take(TAGS_MAX)
    {
        let (key, value) = tag.split_once(':').unwrap_or((tag, ""));
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            continue;
        }
        match out.get_mut(key) {
            Some(existing) if !value.is_empty() && existing.split(',').all(|v| v != value) => {
                if !existing.is_empty() {
                    existing.push(',');
                }
                existing.push_str(value);
            }
            Some(_) => {}
            None => {
                out.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    out
}

fn parse_date(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, NormalizeError> {
    let bad = || {
        NormalizeError::malformed(
            "date",
            format!("date {s:?} is not an epoch time in milliseconds"),
        )
    };
    let n: i64 = s.trim().parse().map_err(|_| bad())?;
    let t = if n.abs() >= EPOCH_MS_THRESHOLD {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    };
    match t {
        Some(t) if n > 0 => Ok(t),
        Some(_) => Ok(now),
        None => Err(bad()),
    }
}

fn alert_type_level(t: &str) -> ImpactLevel {
    match t.trim().to_ascii_lowercase().as_str() {
        "error" => ImpactLevel::High,
        "warning" => ImpactLevel::Medium,
        "info" => ImpactLevel::Low,
        "success" => ImpactLevel::None,
        _ => ImpactLevel::Unknown,
    }
}

fn normalize_inner(
    body: &[u8],
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let limits = &ctx.limits;
    let value = parse_body(body, limits)?;
    let Value::Object(map) = &value else {
        return Err(NormalizeError::malformed("", "body is not a json object"));
    };
    let transition = text(map, "alert_transition").ok_or_else(|| {
        NormalizeError::malformed(
            "alert_transition",
            "missing alert_transition ($ALERT_TRANSITION; see the recommended template)",
        )
    })?;
    let status = parse_transition(&transition)?;
    let title = text(map, "title");
    let alert_name = text(map, "alert_title")
        .or_else(|| title.as_deref().map(|t| strip_title_prefix(t).to_owned()))
        .ok_or_else(|| {
            NormalizeError::malformed("title", "missing title ($EVENT_TITLE) and alert_title")
        })?;
    let occurred_at = match text(map, "date") {
        Some(d) => parse_date(&d, now)?,
        None => now,
    };

    let mut d = Draft::new(Source::Datadog, "datadog", occurred_at);
    d.status = status;
    let tags = text(map, "tags")
        .map(|t| parse_tags(&t))
        .unwrap_or_default();
    let tag = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| tags.get(*k).filter(|v| !v.is_empty()))
            .cloned()
    };
    d.service = tag(&["service", "app"]).unwrap_or_default();
    if let Some(env) = tag(&["env", "environment"]) {
        d.environment = environment_from(&env);
    }
    d.component = tag(&["component"]);
    d.summary = match text(map, "body").as_deref().and_then(first_body_line) {
        Some(line) => format!("{alert_name}: {line}"),
        None => alert_name.clone(),
    };
    d.message = alert_name.clone();
    d.alert_name = alert_name;
    if let Some(p) = text(map, "priority") {
        d.raise(severity_level(&p), format!("priority={p}"));
    }
    if let Some(t) = text(map, "alert_type") {
        d.raise(alert_type_level(&t), format!("alert_type={t}"));
    }
    d.evidence.push(format!("transition={transition}"));
    for (kind, key) in [
        ("datadog_event_id", "id"),
        ("datadog_monitor_id", "alert_id"),
        ("datadog_aggreg_key", "aggreg_key"),
        ("datadog_alert_cycle_key", "alert_cycle_key"),
    ] {
        if let Some(v) = text(map, key) {
            d.correlation_ids.insert(kind.to_owned(), v);
        }
    }
    if let Some(link) = text(map, "link") {
        d.log_pointers.push(("datadog".to_owned(), link));
    }
    let key_max = limits.label_key_bytes_max.min(m::LABEL_KEY_BYTES_MAX);
    let value_max = limits.label_value_bytes_max.min(m::LABEL_VALUE_BYTES_MAX);
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    if let Some(host) = text(map, "hostname") {
        labels.insert("host".to_owned(), host);
    }
    let labels_max = limits.labels_max.min(m::LABELS_MAX);
    for (k, v) in tags {
        if labels.len() >= labels_max {
            break;
        }
        if k.len() <= key_max && v.len() <= value_max {
            labels.entry(k).or_insert(v);
        }
    }
    labels.retain(|k, v| k.len() <= key_max && v.len() <= value_max);
    d.labels = labels;
    Ok(vec![d.finish(ctx, now)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_map_to_status() {
        for t in [
            "Triggered",
            "Re-Triggered",
            "Warn",
            "re-warn",
            "No Data",
            "Renotify",
        ] {
            assert_eq!(parse_transition(t).unwrap(), AlertStatus::Firing, "{t}");
        }
        assert_eq!(
            parse_transition("Recovered").unwrap(),
            AlertStatus::Resolved
        );
        for t in ["Re-Recovered", "OK", "", "resolved"] {
            assert!(parse_transition(t).is_err(), "{t}");
        }
    }

    #[test]
    fn title_prefixes_are_stripped() {
        assert_eq!(
            strip_title_prefix("[Triggered on {host:a}] [P1] CPU high"),
            "CPU high"
        );
        assert_eq!(strip_title_prefix("[Recovered] CPU high"), "CPU high");
        assert_eq!(strip_title_prefix("CPU [high]"), "CPU [high]");
        assert_eq!(strip_title_prefix("[only]"), "[only]");
        assert_eq!(strip_title_prefix("[unclosed CPU"), "[unclosed CPU");
    }

    #[test]
    fn tags_parse_with_repeats_and_bare_tags() {
        let t = parse_tags("env:prod, team:a,team:b,team:a,critical,:x,,url:https://a/b");
        assert_eq!(t.get("env").unwrap(), "prod");
        assert_eq!(t.get("team").unwrap(), "a,b");
        assert_eq!(t.get("critical").unwrap(), "");
        assert_eq!(t.get("url").unwrap(), "https://a/b");
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn dates_are_millis_or_seconds() {
        let now = DateTime::from_timestamp(0, 0).unwrap();
        let ms = parse_date("1764040330000", now).unwrap();
        let s = parse_date("1764040330", now).unwrap();
        assert_eq!(ms, s);
        assert!(parse_date("yesterday", now).is_err());
        assert!(parse_date("9223372036854775807", now).is_err());
        assert_eq!(parse_date("0", now).unwrap(), now);
    }

    #[test]
    fn unexpanded_variables_are_absent() {
        let map: Map<String, Value> =
            serde_json::from_str(r#"{"a": "$ALERT_PRIORITY", "b": " P1 ", "c": 5, "d": "$"}"#)
                .unwrap();
        assert_eq!(text(&map, "a"), None);
        assert_eq!(text(&map, "b").as_deref(), Some("P1"));
        assert_eq!(text(&map, "c").as_deref(), Some("5"));
        assert_eq!(text(&map, "d").as_deref(), Some("$"));
    }

    #[test]
    fn the_recommended_template_is_valid_json() {
        let v: Value = serde_json::from_str(RECOMMENDED_TEMPLATE).unwrap();
        assert!(v.get("alert_transition").is_some());
    }

    #[test]
    fn docs_show_the_recommended_template() {
        let api = include_str!("../../../docs/api.md");
        let section = api.split("### Datadog (`datadog`)").nth(1).unwrap();
        let block = section.split("```json\n").nth(1).unwrap();
        let block = block.split("```").next().unwrap();
        let documented: Value = serde_json::from_str(block).unwrap();
        let shipped: Value = serde_json::from_str(RECOMMENDED_TEMPLATE).unwrap();
        assert_eq!(
            documented, shipped,
            "docs/api.md and RECOMMENDED_TEMPLATE differ"
        );
    }

    #[test]
    fn the_template_filled_like_datadog_normalizes() {
        let filled = RECOMMENDED_TEMPLATE
            .replace("$EVENT_TITLE", "[Triggered on {host:web-1}] CPU high")
            .replace("$ALERT_TRANSITION", "Triggered")
            .replace("$TAGS", "env:prod,service:web")
            .replace("$DATE", "1764040330000");
        // Variables Datadog had no value for stay as they are: absent.
        let events = normalize(
            filled.as_bytes(),
            &NormalizeContext::default(),
            DateTime::from_timestamp(0, 0).unwrap(),
        )
        .unwrap();
        let [e] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(e.alert_name, "CPU high");
        assert_eq!(e.service, "web");
        assert_eq!(e.environment, tg_model::Environment::Production);
        assert_eq!(e.status, AlertStatus::Firing);
        assert!(e.correlation_ids.is_empty(), "{:?}", e.correlation_ids);
        assert!(e.log_pointers.is_empty());
        assert_eq!(e.occurred_at.timestamp_millis(), 1_764_040_330_000);
    }
}
