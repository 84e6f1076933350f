//! Chat bridge emulators, under `/bridge`: a Slack incoming webhook
//! (`POST /bridge/slack/{token}`) and a Microsoft Teams Workflows webhook
//! (`POST /bridge/teams/{token}`).
//!
//! A webhook URL is valid only once issued (as in Slack, where a URL exists
//! only after the webhook is created): see `SandboxState::issue_webhook`.
//! Anything else answers 404 `no_service`.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::SandboxState;
use crate::record::{Secret, lock};

/// Posts kept; older ones are dropped first.
pub const BRIDGE_POSTS_MAX: usize = 10_000;
/// Webhook tokens that may be issued.
pub const WEBHOOKS_MAX: usize = 1_024;
/// Slack rejects messages with more blocks than this (`invalid_blocks`).
pub const SLACK_BLOCKS_MAX: usize = 50;
/// Slack truncates `text` beyond this many characters; the emulator refuses it
/// so that a client never relies on truncation (`msg_too_long`).
pub const SLACK_TEXT_CHARS_MAX: usize = 40_000;
/// Teams refuses messages larger than this many bytes.
pub const TEAMS_MESSAGE_BYTES_MAX: usize = 28 * 1024;
/// A webhook token issued at start, so the standalone sandbox has a working URL.
pub const DEFAULT_WEBHOOK_TOKEN: &str = "T0SANDBOX/B0SANDBOX/sandbox-webhook";

/// Which chat product a post went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Slack,
    Teams,
}

/// One accepted post.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BridgePost {
    pub channel: Channel,
    /// The webhook token it was posted to (redacted in JSON and Debug).
    pub webhook: Secret,
    /// The message text (Slack `text`; Teams: the card's TextBlocks joined by newlines).
    pub text: String,
    /// The whole body as received.
    pub body: Value,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug)]
pub(crate) struct BridgeState {
    posts: Mutex<VecDeque<BridgePost>>,
    webhooks: Mutex<BTreeSet<String>>,
}

impl Default for BridgeState {
    fn default() -> Self {
        BridgeState {
            posts: Mutex::new(VecDeque::new()),
            webhooks: Mutex::new(BTreeSet::from([DEFAULT_WEBHOOK_TOKEN.to_owned()])),
        }
    }
}

/// Why a webhook could not be issued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("webhook token is empty or has characters outside [A-Za-z0-9/_-]")]
    BadToken,
    #[error("too many webhooks issued (max {WEBHOOKS_MAX})")]
    TooMany,
}

impl BridgeState {
    pub(crate) fn posts(&self) -> Vec<BridgePost> {
        lock(&self.posts).iter().cloned().collect()
    }

    pub(crate) fn issue(&self, token: &str) -> Result<(), WebhookError> {
        let ok = !token.is_empty()
            && token.len() <= 256
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'));
        if !ok {
            return Err(WebhookError::BadToken);
        }
        let mut hooks = lock(&self.webhooks);
        if !hooks.contains(token) && hooks.len() >= WEBHOOKS_MAX {
            return Err(WebhookError::TooMany);
        }
        hooks.insert(token.to_owned());
        Ok(())
    }

    pub(crate) fn revoke(&self, token: &str) {
        lock(&self.webhooks).remove(token);
    }

    fn known(&self, token: &str) -> bool {
        lock(&self.webhooks).contains(token)
    }

    fn push(&self, post: BridgePost) {
        let mut posts = lock(&self.posts);
        if posts.len() >= BRIDGE_POSTS_MAX {
            posts.pop_front();
        }
        posts.push_back(post);
    }

    /// Forget posts; issued webhooks stay valid (they are configuration).
    pub(crate) fn reset(&self) {
        lock(&self.posts).clear();
    }
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new()
        .route("/slack/{*token}", post(slack))
        .route("/teams/{*token}", post(teams))
}

/// Slack answers in plain text, errors included.
pub(crate) fn slack_text(status: StatusCode, text: &'static str) -> Response {
    let mut resp = (status, text).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A Workflows (Logic Apps) style error.
pub(crate) fn teams_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn slack(
    State(state): State<Arc<SandboxState>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    if !state.bridge.known(&token) {
        return slack_text(StatusCode::NOT_FOUND, "no_service");
    }
    let Ok(Value::Object(msg)) = serde_json::from_slice::<Value>(&body) else {
        return slack_text(StatusCode::BAD_REQUEST, "invalid_payload");
    };
    let text = match msg.get("text") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return slack_text(StatusCode::BAD_REQUEST, "no_text");
        }
        Some(_) => return slack_text(StatusCode::BAD_REQUEST, "invalid_payload"),
    };
    if text.chars().count() > SLACK_TEXT_CHARS_MAX {
        return slack_text(StatusCode::BAD_REQUEST, "msg_too_long");
    }
    match msg.get("blocks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(blocks)) => {
            let typed = blocks
                .iter()
                .all(|b| b.get("type").is_some_and(Value::is_string));
            if !typed || blocks.len() > SLACK_BLOCKS_MAX {
                return slack_text(StatusCode::BAD_REQUEST, "invalid_blocks");
            }
        }
        Some(_) => return slack_text(StatusCode::BAD_REQUEST, "invalid_blocks"),
    }
    state.bridge.push(BridgePost {
        channel: Channel::Slack,
        webhook: Secret::new(token),
        text,
        body: Value::Object(msg),
        received_at: Utc::now(),
    });
    slack_text(StatusCode::OK, "ok")
}

/// Check the Adaptive Card envelope; the joined TextBlock texts on success.
fn check_teams(msg: &Value) -> Result<String, String> {
    if msg.get("type").and_then(Value::as_str) != Some("message") {
        return Err("'type' must be \"message\"".into());
    }
    let attachments = msg
        .get("attachments")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or("'attachments' must be a non-empty array")?;
    let mut texts = Vec::new();
    for (i, a) in attachments.iter().enumerate() {
        if a.get("contentType").and_then(Value::as_str)
            != Some("application/vnd.microsoft.card.adaptive")
        {
            return Err(format!(
                "attachments[{i}].contentType must be application/vnd.microsoft.card.adaptive"
            ));
        }
        let card = a
            .get("content")
            .ok_or(format!("attachments[{i}].content is missing"))?;
        if card.get("type").and_then(Value::as_str) != Some("AdaptiveCard") {
            return Err(format!(
                "attachments[{i}].content.type must be AdaptiveCard"
            ));
        }
        if !card.get("version").is_some_and(Value::is_string) {
            return Err(format!("attachments[{i}].content.version is missing"));
        }
        let body = card
            .get("body")
            .and_then(Value::as_array)
            .ok_or(format!("attachments[{i}].content.body must be an array"))?;
        for el in body {
            if !el.get("type").is_some_and(Value::is_string) {
                return Err(format!(
                    "attachments[{i}].content.body has an element without type"
                ));
            }
            if el.get("type").and_then(Value::as_str) == Some("TextBlock")
                && let Some(t) = el.get("text").and_then(Value::as_str)
            {
                texts.push(t.to_owned());
            }
        }
        let actions = card.get("actions").and_then(Value::as_array);
        if actions.is_some_and(|acts| {
            acts.iter()
                .any(|x| x.get("type").and_then(Value::as_str) == Some("Action.Submit"))
        }) {
            return Err("Action.Submit is not supported in webhook messages".into());
        }
    }
    Ok(texts.join("\n"))
}

async fn teams(
    State(state): State<Arc<SandboxState>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    if !state.bridge.known(&token) {
        return teams_error(
            StatusCode::NOT_FOUND,
            "WorkflowNotFound",
            "The workflow could not be found.",
        );
    }
    if body.len() > TEAMS_MESSAGE_BYTES_MAX {
        return teams_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "MessageSizeTooLarge",
            &format!(
                "message is {} bytes; maximum is {TEAMS_MESSAGE_BYTES_MAX}",
                body.len()
            ),
        );
    }
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return teams_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content is not valid JSON.",
        );
    };
    let text = match check_teams(&msg) {
        Ok(t) => t,
        Err(why) => return teams_error(StatusCode::BAD_REQUEST, "InvalidRequestContent", &why),
    };
    state.bridge.push(BridgePost {
        channel: Channel::Teams,
        webhook: Secret::new(token),
        text,
        body: msg,
        received_at: Utc::now(),
    });
    StatusCode::ACCEPTED.into_response()
}
