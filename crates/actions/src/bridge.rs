//! Major-incident bridge announcement: Slack incoming webhook or Teams
//! Workflows webhook, and generic webhooks signed with HMAC-SHA256
//! (docs/webhooks.md says how a receiver verifies them).

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tg_model::PlannedAction;

use crate::error::TargetError;
use crate::executor::{BridgeFormat, SignedWebhook, TARGET_BRIDGE};
use crate::http::{Reply, is_web_url, send, status_error, take_chars};
use crate::secret::{Redactor, Secret};

/// Characters of the title shown in an announcement.
pub const ANNOUNCEMENT_TITLE_CHARS_MAX: usize = 300;
/// Characters of the evidence `details` carried in a signed webhook body.
pub const WEBHOOK_DETAILS_CHARS_MAX: usize = 8_000;
/// Header carrying the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-TriageGate-Timestamp";
/// Header carrying `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "X-TriageGate-Signature";
/// Header carrying the delivery ID (the same on every retry of one delivery).
pub const DELIVERY_HEADER: &str = "X-TriageGate-Delivery";
/// `type` of the signed webhook body for a proposed major incident.
pub const EVENT_MAJOR_INCIDENT_PROPOSED: &str = "major_incident.proposed";

const T: &str = TARGET_BRIDGE;

/// What the announcement names.
#[derive(Debug, Clone)]
pub(crate) struct Announcement<'a> {
    pub action: &'a PlannedAction,
    pub incident_number: &'a str,
    pub incident_sys_id: &'a str,
    pub incident_url: &'a str,
    pub conference_url: Option<&'a str>,
}

/// Slack mrkdwn control characters: alert text must not become links or mentions.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(crate) fn payload(format: BridgeFormat, a: &Announcement<'_>) -> Value {
    match format {
        BridgeFormat::Slack => slack(a),
        BridgeFormat::Teams => teams(a),
    }
}

fn web_links<'a>(a: &'a Announcement<'_>) -> impl Iterator<Item = &'a tg_model::LogPointer> {
    a.action
        .links
        .iter()
        .filter(|l| is_web_url(&l.url))
        .take(crate::LINKS_MAX)
}

fn slack(a: &Announcement<'_>) -> Value {
    let act = a.action;
    let title = take_chars(&act.title, ANNOUNCEMENT_TITLE_CHARS_MAX);
    let text = format!(
        "MAJOR INCIDENT {} (proposed): {}: {}",
        a.incident_number, act.service, title
    );
    let mut main = format!(
        "*MAJOR INCIDENT (proposed)* <{}|{}> — {}\n*Service:* {} ({}) · *Severity:* {} · *Team:* {}",
        slack_escape(a.incident_url),
        slack_escape(a.incident_number),
        slack_escape(&title),
        slack_escape(&act.service),
        act.environment.as_str(),
        act.severity,
        slack_escape(&act.team),
    );
    if let Some(conf) = a.conference_url {
        main.push_str(&format!("\n*Bridge:* <{}|join>", slack_escape(conf)));
    }
    let mut blocks = vec![json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": main },
    })];
    let links: Vec<String> = web_links(a)
        .map(|l| format!("<{}|{}>", slack_escape(&l.url), slack_escape(&l.label)))
        .collect();
    if !links.is_empty() {
        blocks.push(json!({
            "type": "context",
            "elements": [{ "type": "mrkdwn", "text": links.join(" · ") }],
        }));
    }
    json!({ "text": text, "blocks": blocks })
}

fn teams(a: &Announcement<'_>) -> Value {
    let act = a.action;
    let title = take_chars(&act.title, ANNOUNCEMENT_TITLE_CHARS_MAX);
    let mut actions = Vec::new();
    if let Some(conf) = a.conference_url {
        actions.push(json!({ "type": "Action.OpenUrl", "title": "Join bridge", "url": conf }));
    }
    actions.push(json!({
        "type": "Action.OpenUrl",
        "title": format!("Open {}", a.incident_number),
        "url": a.incident_url,
    }));
    for l in web_links(a) {
        actions.push(json!({ "type": "Action.OpenUrl", "title": l.label, "url": l.url }));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {
                        "type": "TextBlock",
                        "text": format!("MAJOR INCIDENT {} (proposed)", a.incident_number),
                        "weight": "Bolder",
                        "size": "Medium",
                        "color": "Attention",
                        "wrap": true,
                    },
                    { "type": "TextBlock", "text": title, "wrap": true },
                    {
                        "type": "FactSet",
                        "facts": [
                            { "title": "Incident", "value": a.incident_number },
                            { "title": "Service", "value": act.service },
                            { "title": "Environment", "value": act.environment.as_str() },
                            { "title": "Severity", "value": act.severity.as_str() },
                            { "title": "Team", "value": act.team },
                        ],
                    },
                ],
                "actions": actions,
            },
        }],
    })
}

/// The body of a signed webhook: the incident, the evidence, where to meet,
/// and the IDs that follow the run. `delivery_id` lets a receiver drop a repeat.
pub(crate) fn signed_payload(a: &Announcement<'_>, delivery_id: &str) -> Value {
    let act = a.action;
    let links: Vec<Value> = web_links(a)
        .map(|l| json!({ "label": l.label, "url": l.url }))
        .collect();
    json!({
        "type": EVENT_MAJOR_INCIDENT_PROPOSED,
        "delivery_id": delivery_id,
        "run_id": act.run_id,
        "correlation_id": act.correlation_id,
        "idempotency_key": act.idempotency_key,
        "incident": {
            "system": "servicenow",
            "number": a.incident_number,
            "sys_id": a.incident_sys_id,
            "url": a.incident_url,
            "major_incident_state": "proposed",
        },
        "evidence": {
            "title": take_chars(&act.title, ANNOUNCEMENT_TITLE_CHARS_MAX),
            "details": take_chars(&act.details, WEBHOOK_DETAILS_CHARS_MAX),
            "service": act.service,
            "team": act.team,
            "environment": act.environment.as_str(),
            "severity": act.severity.as_str(),
            "confidence": act.confidence,
            "fingerprint": act.fingerprint,
            "links": links,
        },
        "conference_url": a.conference_url,
    })
}

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: the value of
/// [`SIGNATURE_HEADER`]. Public so receivers written in Rust (and tests) sign
/// exactly as the sender does.
pub fn webhook_signature(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail; an empty MAC would
    // simply not verify.
    let hex = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mut mac) => {
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    format!("v1={hex}")
}

/// Posts one signed webhook, signed at `now` (Unix seconds). Any 2xx is
/// success; the rest is classified like every target (429 throttled, 5xx and
/// 408 retryable, other 4xx permanent).
pub(crate) async fn post_signed(
    client: &reqwest::Client,
    hook: &SignedWebhook,
    timeout_ms: u64,
    redact: &Redactor,
    body: &str,
    delivery_id: &str,
    now: i64,
) -> Result<(), TargetError> {
    let req = client
        .post(&hook.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, now.to_string())
        .header(
            SIGNATURE_HEADER,
            webhook_signature(&hook.secret, now, body.as_bytes()),
        )
        .header(DELIVERY_HEADER, delivery_id)
        .body(body.to_owned());
    let reply = send(T, req, timeout_ms, redact).await?;
    if reply.status.is_success() {
        return Ok(());
    }
    let what = if reply.body.trim().is_empty() {
        format!("webhook {:?}: no error text", hook.name)
    } else {
        format!("webhook {:?}: {}", hook.name, reply.body)
    };
    Err(status_error(T, &reply, &what, redact))
}

/// Posts the announcement. Slack answers `200 ok` or a plain-text error code;
/// Teams Workflows answer 202, and legacy connectors may hide a 429 in a 200 body.
pub(crate) async fn post(
    client: &reqwest::Client,
    webhook_url: &Secret,
    format: BridgeFormat,
    timeout_ms: u64,
    redact: &Redactor,
    body: &Value,
) -> Result<(), TargetError> {
    let req = client
        .post(webhook_url.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    let reply = send(T, req, timeout_ms, redact).await?;
    if !reply.status.is_success() {
        return Err(error_of(&reply, redact));
    }
    if format == BridgeFormat::Teams && reply.body.contains("HTTP error 429") {
        return Err(TargetError::Throttled {
            target: T,
            retry_after: reply.retry_after,
            detail: format!("http {} with a throttling body", reply.status.as_u16()),
        });
    }
    Ok(())
}

/// Slack errors are plain-text codes (`invalid_payload`, `channel_not_found`).
fn error_of(reply: &Reply, redact: &Redactor) -> TargetError {
    let what = if reply.body.trim().is_empty() {
        "no error text".to_owned()
    } else {
        reply.body.clone()
    };
    status_error(T, reply, &what, redact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently of this code:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'key'
        let sig = webhook_signature(&Secret::new("key"), 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            sig,
            "v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
        let other = webhook_signature(&Secret::new("key"), 1_700_000_001, br#"{"a":1}"#);
        assert_ne!(sig, other, "the timestamp is signed");
    }
}
