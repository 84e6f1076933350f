//! Anthropic Messages API emulator, under `/anthropic` (`POST /v1/messages`).
//!
//! Checks what the real API checks before any model runs (`x-api-key`,
//! `anthropic-version`, required body fields, a forced tool that exists), then
//! answers with a pluggable [`ModelBrain`] or a scripted reply. A brain's answer
//! that does not fit in `max_tokens` comes back truncated with
//! `stop_reason: "max_tokens"`, as a real model's would.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::SandboxState;
use crate::record::lock;

/// Scripted replies queued at once.
pub const SCRIPTS_MAX: usize = 256;
/// Largest `max_tokens` accepted (the output limit of current Sonnet models).
pub const MAX_TOKENS_LIMIT: u64 = 64_000;
/// Longest tool name the API accepts.
pub const TOOL_NAME_CHARS_MAX: usize = 64;
/// `anthropic-version` values the API knows.
pub const ANTHROPIC_VERSIONS: &[&str] = &["2023-06-01", "2023-01-01"];
/// The team the default brain recommends.
pub const DEFAULT_BRAIN_TEAM: &str = "platform-ops";

const STOP_REASONS: &[&str] = &[
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
];

/// What the emulated model answers, given the text of the last user message.
pub trait ModelBrain: Send + Sync + 'static {
    fn answer(&self, user_text: &str) -> BrainReply;
}

/// A brain's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum BrainReply {
    /// Input of the (forced) tool: a `tool_use` block, `stop_reason: "tool_use"`.
    ToolInput(Value),
    /// A text block instead of tool use, `stop_reason: "end_turn"`.
    Text(String),
    /// A raw HTTP answer (e.g. 529 with an error body).
    Raw { status: u16, body: Value },
}

/// The brain used when none is configured: a fixed low-severity classification
/// for team [`DEFAULT_BRAIN_TEAM`], valid against the classification contract.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultBrain;

impl ModelBrain for DefaultBrain {
    fn answer(&self, _user_text: &str) -> BrainReply {
        let c = tg_model::Classification {
            classification: tg_model::Severity::Low,
            confidence: 0.9,
            requires_ticket: false,
            requires_paging: false,
            requires_mim: false,
            recommended_team: DEFAULT_BRAIN_TEAM.to_owned(),
            rationale: Some("sandbox default brain: fixed low-severity answer".to_owned()),
        };
        BrainReply::ToolInput(serde_json::to_value(&c).unwrap_or(Value::Null))
    }
}

/// A scripted reply. JSON form of `POST /_sandbox/anthropic/script`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicScript {
    /// Applies when the last user message contains this substring.
    pub when_contains: String,
    pub reply: ScriptReply,
    /// Overrides the `stop_reason` of a 200 answer (e.g. `max_tokens`, `refusal`).
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Applies this many times, then is removed; `None` means forever.
    #[serde(default)]
    pub times: Option<u32>,
}

/// What a script answers: `{"tool_input": {...}}`, `{"text": "..."}` or
/// `{"status": 529, "body": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ScriptReply {
    Raw { status: u16, body: Value },
    ToolInput { tool_input: Value },
    Text { text: String },
}

impl From<ScriptReply> for BrainReply {
    fn from(r: ScriptReply) -> Self {
        match r {
            ScriptReply::Raw { status, body } => BrainReply::Raw { status, body },
            ScriptReply::ToolInput { tool_input } => BrainReply::ToolInput(tool_input),
            ScriptReply::Text { text } => BrainReply::Text(text),
        }
    }
}

/// Why a script was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScriptError {
    #[error("script when_contains is empty")]
    EmptyMatch,
    #[error("script status {0} is outside 100..=599")]
    BadStatus(u16),
    #[error("script stop_reason {0:?} is not a stop reason the API uses")]
    BadStopReason(String),
    #[error("script times must be at least 1")]
    ZeroTimes,
    #[error("too many scripts queued (max {SCRIPTS_MAX})")]
    TooMany,
}

pub(crate) struct AnthropicState {
    brain: Arc<dyn ModelBrain>,
    scripts: Mutex<VecDeque<AnthropicScript>>,
}

impl std::fmt::Debug for AnthropicState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicState")
            .field("scripts", &lock(&self.scripts).len())
            .finish_non_exhaustive()
    }
}

impl AnthropicState {
    pub(crate) fn new(brain: Option<Arc<dyn ModelBrain>>) -> Self {
        AnthropicState {
            brain: brain.unwrap_or_else(|| Arc::new(DefaultBrain)),
            scripts: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn add_script(&self, script: AnthropicScript) -> Result<(), ScriptError> {
        if script.when_contains.is_empty() {
            return Err(ScriptError::EmptyMatch);
        }
        if let ScriptReply::Raw { status, .. } = &script.reply
            && !(100..=599).contains(status)
        {
            return Err(ScriptError::BadStatus(*status));
        }
        if let Some(s) = &script.stop_reason
            && !STOP_REASONS.contains(&s.as_str())
        {
            return Err(ScriptError::BadStopReason(s.clone()));
        }
        if script.times == Some(0) {
            return Err(ScriptError::ZeroTimes);
        }
        let mut scripts = lock(&self.scripts);
        if scripts.len() >= SCRIPTS_MAX {
            return Err(ScriptError::TooMany);
        }
        scripts.push_back(script);
        Ok(())
    }

    /// The first script matching `user_text`, consuming one of its uses.
    fn take_script(&self, user_text: &str) -> Option<(ScriptReply, Option<String>)> {
        let mut scripts = lock(&self.scripts);
        let idx = scripts
            .iter()
            .position(|s| user_text.contains(&s.when_contains))?;
        let script = scripts.get_mut(idx)?;
        let out = (script.reply.clone(), script.stop_reason.clone());
        if let Some(t) = script.times.as_mut() {
            *t = t.saturating_sub(1);
            if *t == 0 {
                scripts.remove(idx);
            }
        }
        Some(out)
    }

    pub(crate) fn reset(&self) {
        lock(&self.scripts).clear();
    }
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new().route("/v1/messages", post(messages))
}

fn new_request_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}

/// An Anthropic error answer with its `request-id`.
pub(crate) fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    let id = new_request_id();
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": id,
    });
    let mut resp = with_request_id((status, axum::Json(body)).into_response(), &id);
    let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
    resp.headers_mut().insert(
        "x-should-retry",
        HeaderValue::from_static(if retryable { "true" } else { "false" }),
    );
    resp
}

fn invalid(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

/// What the handler needs from a validated request.
#[derive(Debug)]
struct Request {
    model: String,
    max_tokens: u64,
    /// The tool to answer with, when tool use is possible.
    tool: Option<String>,
    user_text: String,
}

fn validate(body: &Map<String, Value>) -> Result<Request, String> {
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        None => return Err("model: Field required".into()),
        Some(_) => return Err("model: Input should be a valid string".into()),
    };
    let max_tokens = match body.get("max_tokens") {
        None => return Err("max_tokens: Field required".into()),
        Some(v) => match v.as_u64() {
            Some(0) => return Err("max_tokens: Input should be greater than or equal to 1".into()),
            Some(n) if n > MAX_TOKENS_LIMIT => {
                return Err(format!(
                    "max_tokens: {n} > {MAX_TOKENS_LIMIT}, which is the maximum allowed number of output tokens for {model}"
                ));
            }
            Some(n) => n,
            None => return Err("max_tokens: Input should be a valid integer".into()),
        },
    };
    let messages = match body.get("messages") {
        None => return Err("messages: Field required".into()),
        Some(Value::Array(m)) if m.is_empty() => {
            return Err("messages: at least one message is required".into());
        }
        Some(Value::Array(m)) => m,
        Some(_) => return Err("messages: Input should be a valid list".into()),
    };
    let mut user_text = String::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !matches!(role, Some("user" | "assistant")) {
            return Err(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ));
        }
        let text = match m.get("content") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Array(blocks)) if !blocks.is_empty() => blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => {
                return Err(format!(
                    "messages.{i}: all messages must have non-empty content"
                ));
            }
        };
        if role == Some("user") {
            user_text = text;
        }
    }
    let tools = match body.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(t)) => t.clone(),
        Some(_) => return Err("tools: Input should be a valid list".into()),
    };
    let mut names = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let name = t.get("name").and_then(Value::as_str).unwrap_or("");
        let valid = !name.is_empty()
            && name.len() <= TOOL_NAME_CHARS_MAX
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(format!(
                "tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,{TOOL_NAME_CHARS_MAX}}}$'"
            ));
        }
        if names.contains(&name) {
            return Err(format!("tools: Tool names must be unique ({name})"));
        }
        let schema_type = t
            .get("input_schema")
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str);
        if schema_type != Some("object") {
            return Err(format!(
                "tools.{i}.input_schema.type: Input should be 'object'"
            ));
        }
        names.push(name);
    }
    let tool = match body.get("tool_choice") {
        None | Some(Value::Null) => names.first().map(|n| (*n).to_owned()),
        Some(choice) => {
            if names.is_empty() {
                return Err("tool_choice may only be specified while providing tools".into());
            }
            match choice.get("type").and_then(Value::as_str) {
                Some("auto" | "any") => names.first().map(|n| (*n).to_owned()),
                Some("none") => None,
                Some("tool") => {
                    let Some(name) = choice.get("name").and_then(Value::as_str) else {
                        return Err("tool_choice.tool.name: Field required".into());
                    };
                    if !names.contains(&name) {
                        return Err(format!(
                            "tool_choice: Tool '{name}' not found in the provided tools"
                        ));
                    }
                    Some(name.to_owned())
                }
                _ => {
                    return Err(
                        "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'".into(),
                    );
                }
            }
        }
    };
    Ok(Request {
        model,
        max_tokens,
        tool,
        user_text,
    })
}

/// A rough token count (about four bytes per token), never zero.
fn tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4).max(1)
}

async fn messages(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    match key {
        None => {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "x-api-key header is required",
            );
        }
        Some(k) if k != state.anthropic_api_key => {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid x-api-key",
            );
        }
        Some(_) => {}
    }
    match headers
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok())
    {
        None => return invalid("anthropic-version: header is required"),
        Some(v) if !ANTHROPIC_VERSIONS.contains(&v) => {
            return invalid(&format!("anthropic-version: invalid value {v:?}"));
        }
        Some(_) => {}
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&body) else {
        return invalid("There was an error parsing the body of your request");
    };
    let req = match validate(&obj) {
        Ok(r) => r,
        Err(message) => return invalid(&message),
    };
    let (reply, stop_override) = match state.anthropic.take_script(&req.user_text) {
        Some((reply, stop)) => (reply.into(), stop),
        None => (state.anthropic.brain.answer(&req.user_text), None),
    };
    let id = new_request_id();
    let (content, mut stop_reason, output_tokens) = match reply {
        BrainReply::Raw { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return with_request_id((status, axum::Json(body)).into_response(), &id);
        }
        BrainReply::ToolInput(input) => match &req.tool {
            Some(name) => {
                let needed = tokens(input.to_string().len());
                // A real model stops mid-answer when max_tokens runs out: the tool
                // input is then incomplete, which the client must not trust.
                let (input, stop, used) = if needed > req.max_tokens {
                    (json!({}), "max_tokens", req.max_tokens)
                } else {
                    (input, "tool_use", needed)
                };
                let block = json!({
                    "type": "tool_use",
                    "id": format!("toolu_{}", uuid::Uuid::new_v4().simple()),
                    "name": name,
                    "input": input,
                });
                (block, stop, used)
            }
            None => text_block(input.to_string(), req.max_tokens),
        },
        BrainReply::Text(text) => text_block(text, req.max_tokens),
    };
    if let Some(s) = stop_override.as_deref() {
        stop_reason = STOP_REASONS
            .iter()
            .find(|r| **r == s)
            .copied()
            .unwrap_or(stop_reason);
    }
    let body = json!({
        "id": format!("msg_{}", uuid::Uuid::new_v4().simple()),
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [content],
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {"input_tokens": tokens(body.len()), "output_tokens": output_tokens},
    });
    with_request_id((StatusCode::OK, axum::Json(body)).into_response(), &id)
}

fn text_block(text: String, max_tokens: u64) -> (Value, &'static str, u64) {
    let needed = tokens(text.len());
    if needed > max_tokens {
        let keep = usize::try_from(max_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
        let cut: String = text.chars().take(keep).collect();
        (
            json!({"type": "text", "text": cut}),
            "max_tokens",
            max_tokens,
        )
    } else {
        (json!({"type": "text", "text": text}), "end_turn", needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_brain_answers_a_valid_classification() {
        let BrainReply::ToolInput(v) = DefaultBrain.answer("anything") else {
            panic!("expected tool input");
        };
        let c: tg_model::Classification = serde_json::from_value(v).unwrap();
        assert_eq!(c.recommended_team, DEFAULT_BRAIN_TEAM);
        assert_eq!(c.classification, tg_model::Severity::Low);
    }

    #[test]
    fn script_reply_parses_each_form() {
        let s: AnthropicScript = serde_json::from_value(json!({
            "when_contains": "x", "reply": {"status": 529, "body": {"a": 1}}, "times": 2
        }))
        .unwrap();
        assert!(matches!(s.reply, ScriptReply::Raw { status: 529, .. }));
        let s: AnthropicScript =
            serde_json::from_value(json!({"when_contains": "x", "reply": {"text": "hi"}})).unwrap();
        assert_eq!(s.reply, ScriptReply::Text { text: "hi".into() });
        let s: AnthropicScript = serde_json::from_value(
            json!({"when_contains": "x", "reply": {"tool_input": {"k": true}}}),
        )
        .unwrap();
        assert!(matches!(s.reply, ScriptReply::ToolInput { .. }));
    }

    #[test]
    fn scripts_are_consumed_by_times() {
        let st = AnthropicState::new(None);
        st.add_script(AnthropicScript {
            when_contains: "db".into(),
            reply: ScriptReply::Text { text: "t".into() },
            stop_reason: None,
            times: Some(1),
        })
        .unwrap();
        assert!(st.take_script("no match").is_none());
        assert!(st.take_script("the db is down").is_some());
        assert!(st.take_script("the db is down").is_none());
    }
}
