//! PagerDuty Events API v2: trigger and resolve alerts by dedup key.

use serde_json::{Value, json};
use tg_model::{PlannedAction, Severity};

use crate::error::TargetError;
use crate::executor::{PagerDutyConfig, TARGET_PAGERDUTY};
use crate::http::{Reply, is_web_url, send, status_error, take_chars};
use crate::secret::{Redactor, Secret};

/// Characters of `payload.summary`.
pub const SUMMARY_CHARS_MAX: usize = 1024;
/// Bytes of a `dedup_key`.
pub const DEDUP_KEY_BYTES_MAX: usize = 255;

const T: &str = TARGET_PAGERDUTY;

/// The PagerDuty service region of an account: it picks the API hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PagerDutyRegion {
    /// `events.pagerduty.com`, `api.pagerduty.com`.
    #[default]
    Us,
    /// `events.eu.pagerduty.com`, `api.eu.pagerduty.com`.
    Eu,
}

impl PagerDutyRegion {
    pub fn as_str(self) -> &'static str {
        match self {
            PagerDutyRegion::Us => "us",
            PagerDutyRegion::Eu => "eu",
        }
    }

    /// The Events API v2 base URL of the region.
    pub fn events_base_url(self) -> &'static str {
        match self {
            PagerDutyRegion::Us => "https://events.pagerduty.com",
            PagerDutyRegion::Eu => "https://events.eu.pagerduty.com",
        }
    }

    /// The REST API v2 base URL of the region.
    pub fn api_base_url(self) -> &'static str {
        match self {
            PagerDutyRegion::Us => "https://api.pagerduty.com",
            PagerDutyRegion::Eu => "https://api.eu.pagerduty.com",
        }
    }

    /// The Events API base URL to use: an explicit one (a proxy, the sandbox)
    /// wins over the region's.
    pub fn events_url(self, explicit: Option<&str>) -> String {
        explicit.map_or_else(|| self.events_base_url().to_owned(), str::to_owned)
    }

    /// The REST API base URL to use: an explicit one wins over the region's.
    pub fn api_url(self, explicit: Option<&str>) -> String {
        explicit.map_or_else(|| self.api_base_url().to_owned(), str::to_owned)
    }
}

/// Events v2 severity for ours.
pub(crate) fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Sev1 | Severity::High => "critical",
        Severity::Medium => "error",
        Severity::Low => "warning",
    }
}

pub(crate) fn routing_key<'a>(
    cfg: &'a PagerDutyConfig,
    team: &str,
) -> Result<&'a Secret, TargetError> {
    cfg.routing_keys
        .get(team)
        .ok_or_else(|| TargetError::permanent(T, format!("no routing key for team {team:?}")))
}

fn checked_dedup_key(key: &str) -> Result<(), TargetError> {
    if key.is_empty() || key.len() > DEDUP_KEY_BYTES_MAX {
        return Err(TargetError::permanent(
            T,
            format!(
                "dedup key is {} bytes; it must be 1..={DEDUP_KEY_BYTES_MAX}",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// The trigger event for a page. `timestamp` is when it was sent (RFC 3339).
pub(crate) fn trigger_body(
    action: &PlannedAction,
    routing_key: &Secret,
    timestamp: &str,
) -> Result<Value, TargetError> {
    checked_dedup_key(&action.dedup_key)?;
    let links: Vec<Value> = action
        .links
        .iter()
        .filter(|l| is_web_url(&l.url))
        .take(crate::LINKS_MAX)
        .map(|l| json!({ "href": l.url, "text": l.label }))
        .collect();
    Ok(json!({
        "routing_key": routing_key.expose(),
        "event_action": "trigger",
        "dedup_key": action.dedup_key,
        "payload": {
            "summary": take_chars(&action.title, SUMMARY_CHARS_MAX),
            "source": action.service,
            "severity": severity(action.severity),
            "timestamp": timestamp,
            "component": action.service,
            "group": action.team,
            "class": "alert",
            "custom_details": {
                "run_id": action.run_id,
                "correlation_id": action.correlation_id,
                "confidence": action.confidence,
                "environment": action.environment.as_str(),
            },
        },
        "links": links,
        "client": "triage-gate",
    }))
}

/// The resolve event for an alert opened with `dedup_key`.
pub(crate) fn resolve_body(routing_key: &Secret, dedup_key: &str) -> Result<Value, TargetError> {
    checked_dedup_key(dedup_key)?;
    Ok(json!({
        "routing_key": routing_key.expose(),
        "event_action": "resolve",
        "dedup_key": dedup_key,
    }))
}

/// Sends one event; returns the dedup key PagerDuty reports (or ours, if it says none).
pub(crate) async fn enqueue(
    client: &reqwest::Client,
    cfg: &PagerDutyConfig,
    redact: &Redactor,
    body: &Value,
) -> Result<String, TargetError> {
    let url = format!("{}/v2/enqueue", cfg.base_url.trim_end_matches('/'));
    let req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::ACCEPT, "application/json")
        .body(body.to_string());
    let reply = send(T, req, cfg.timeout_ms, redact).await?;
    if !reply.status.is_success() {
        return Err(error_of(&reply, redact));
    }
    let sent = body
        .get("dedup_key")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // 202 means accepted; the reply only confirms the key.
    let key = serde_json::from_str::<Value>(&reply.body)
        .ok()
        .and_then(|v| {
            v.get("dedup_key")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| sent.to_owned());
    Ok(key)
}

/// Events v2 errors read `{"status","message","errors":[..]}`.
fn error_of(reply: &Reply, redact: &Redactor) -> TargetError {
    let parsed: Option<Value> = serde_json::from_str(&reply.body).ok();
    let what = match &parsed {
        Some(v) if v.get("message").is_some() => {
            let status = v.get("status").and_then(Value::as_str).unwrap_or("error");
            let message = v.get("message").and_then(Value::as_str).unwrap_or_default();
            let errors: Vec<&str> = v
                .get("errors")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if errors.is_empty() {
                format!("{status}: {message}")
            } else {
                format!("{status}: {message}: {}", errors.join("; "))
            }
        }
        _ => reply.body.clone(),
    };
    status_error(T, reply, &what, redact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_picks_the_hosts_and_an_explicit_url_wins() {
        assert_eq!(PagerDutyRegion::default(), PagerDutyRegion::Us);
        assert_eq!(
            PagerDutyRegion::Us.events_url(None),
            "https://events.pagerduty.com"
        );
        assert_eq!(
            PagerDutyRegion::Eu.events_url(None),
            "https://events.eu.pagerduty.com"
        );
        assert_eq!(
            PagerDutyRegion::Us.api_url(None),
            "https://api.pagerduty.com"
        );
        assert_eq!(
            PagerDutyRegion::Eu.api_url(None),
            "https://api.eu.pagerduty.com"
        );
        assert_eq!(
            PagerDutyRegion::Eu.events_url(Some("http://127.0.0.1:9/pagerduty")),
            "http://127.0.0.1:9/pagerduty"
        );
        assert_eq!(
            PagerDutyRegion::Eu.api_url(Some("http://127.0.0.1:9/pd-api")),
            "http://127.0.0.1:9/pd-api"
        );
        assert_eq!(PagerDutyRegion::Eu.as_str(), "eu");
    }
}
