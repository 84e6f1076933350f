//! Major-incident bridge announcement: Slack incoming webhook or Teams Workflows webhook.

use serde_json::{Value, json};
use tg_model::PlannedAction;

use crate::error::TargetError;
use crate::executor::{BridgeConfig, BridgeFormat, TARGET_BRIDGE};
use crate::http::{Reply, is_web_url, send, status_error, take_chars};
use crate::secret::Redactor;

/// Characters of the title shown in an announcement.
pub const ANNOUNCEMENT_TITLE_CHARS_MAX: usize = 300;

const T: &str = TARGET_BRIDGE;

/// What the announcement names.
#[derive(Debug, Clone)]
pub(crate) struct Announcement<'a> {
    pub action: &'a PlannedAction,
    pub incident_number: &'a str,
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

/// Posts the announcement. Slack answers `200 ok` or a plain-text error code;
/// Teams Workflows answer 202, and legacy connectors may hide a 429 in a 200 body.
pub(crate) async fn post(
    client: &reqwest::Client,
    cfg: &BridgeConfig,
    redact: &Redactor,
    body: &Value,
) -> Result<(), TargetError> {
    let req = client
        .post(cfg.webhook_url.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    let reply = send(T, req, cfg.timeout_ms, redact).await?;
    if !reply.status.is_success() {
        return Err(error_of(&reply, redact));
    }
    if cfg.format == BridgeFormat::Teams && reply.body.contains("HTTP error 429") {
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
