//! Amazon Bedrock Runtime Converse emulator, under `/bedrock`
//! (`POST /model/{modelId}/converse`).
//!
//! Like the real service it authenticates first: the AWS Signature Version 4
//! on the request is recomputed with the AWS SDK's own signer (`aws-sigv4`)
//! from the sandbox's known credentials and compared; a missing, stale or
//! wrong signature is refused with Bedrock's error shape (`x-amzn-ErrorType`
//! header, `{"message"}` body). Then it validates the Converse request (messages,
//! system, inferenceConfig, a forced tool that exists) and answers with the
//! configured [`ModelBrain`] or a scripted reply ([`ModelScript`], shared with
//! the OpenAI-compatible emulator). An answer that does not fit `maxTokens`
//! comes back truncated with `stopReason: "max_tokens"`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::SandboxState;
use crate::anthropic::{BrainReply, ScriptReply};
use crate::record::lock;

/// Scripted replies queued at once (per emulator).
pub const SCRIPTS_MAX: usize = 256;
/// Largest `inferenceConfig.maxTokens` accepted.
pub const MAX_TOKENS_LIMIT: u64 = 64_000;
/// Longest tool name Converse accepts.
pub const TOOL_NAME_CHARS_MAX: usize = 64;
/// How far `x-amz-date` may be from the emulator's clock (as AWS: 5 minutes).
pub const CLOCK_SKEW_SECS_MAX: i64 = crate::sigv4::CLOCK_SKEW_SECS_MAX;
/// The SigV4 signing name of Bedrock Runtime.
pub const SIGNING_NAME: &str = "bedrock";
/// The `maxTokens` used when the request sets none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// `stopReason` values Converse uses.
pub const STOP_REASONS: &[&str] = &[
    "end_turn",
    "tool_use",
    "max_tokens",
    "stop_sequence",
    "guardrail_intervened",
    "content_filtered",
    "malformed_model_output",
    "malformed_tool_use",
    "model_context_window_exceeded",
];

/// A scripted model reply for the Bedrock or OpenAI-compatible emulator.
/// JSON form of `POST /_sandbox/bedrock/script` and `/_sandbox/openai/script`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelScript {
    /// Applies when the last user message contains this substring.
    pub when_contains: String,
    pub reply: ScriptReply,
    /// Overrides Bedrock's `stopReason` or OpenAI's `finish_reason` of a 200 answer.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// OpenAI-compatible only: answer `message.refusal` with this text and a null content.
    #[serde(default)]
    pub refusal: Option<String>,
    /// Answer 200 with exactly this body text instead of `reply` (for answers a
    /// JSON value cannot hold: duplicate keys, broken JSON).
    #[serde(default)]
    pub body_text: Option<String>,
    /// Applies this many times, then is removed; `None` means forever.
    #[serde(default)]
    pub times: Option<u32>,
}

impl ModelScript {
    /// A script answering `reply` whenever the user message contains `marker`.
    pub fn new(marker: impl Into<String>, reply: ScriptReply) -> Self {
        ModelScript {
            when_contains: marker.into(),
            reply,
            stop_reason: None,
            refusal: None,
            body_text: None,
            times: None,
        }
    }
}

/// A 200 answer with a verbatim JSON body text.
pub(crate) fn raw_json(text: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

/// Why a [`ModelScript`] was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelScriptError {
    #[error("script when_contains is empty")]
    EmptyMatch,
    #[error("script status {0} is outside 100..=599")]
    BadStatus(u16),
    #[error("script stop_reason {0:?} is not one this API uses")]
    BadStopReason(String),
    #[error("script times must be at least 1")]
    ZeroTimes,
    #[error("too many scripts queued (max {SCRIPTS_MAX})")]
    TooMany,
}

/// A bounded queue of scripts; the first matching one answers.
#[derive(Debug, Default)]
pub(crate) struct ScriptQueue(Mutex<VecDeque<ModelScript>>);

impl ScriptQueue {
    pub(crate) fn add(
        &self,
        script: ModelScript,
        stop_reasons: &[&str],
    ) -> Result<(), ModelScriptError> {
        if script.when_contains.is_empty() {
            return Err(ModelScriptError::EmptyMatch);
        }
        if let ScriptReply::Raw { status, .. } = &script.reply
            && !(100..=599).contains(status)
        {
            return Err(ModelScriptError::BadStatus(*status));
        }
        if let Some(s) = &script.stop_reason
            && !stop_reasons.contains(&s.as_str())
        {
            return Err(ModelScriptError::BadStopReason(s.clone()));
        }
        if script.times == Some(0) {
            return Err(ModelScriptError::ZeroTimes);
        }
        let mut q = lock(&self.0);
        if q.len() >= SCRIPTS_MAX {
            return Err(ModelScriptError::TooMany);
        }
        q.push_back(script);
        Ok(())
    }

    /// The first script matching `user_text`, consuming one of its uses.
    pub(crate) fn take(&self, user_text: &str) -> Option<ModelScript> {
        let mut q = lock(&self.0);
        let idx = q
            .iter()
            .position(|s| user_text.contains(&s.when_contains))?;
        let script = q.get_mut(idx)?;
        let out = script.clone();
        if let Some(t) = script.times.as_mut() {
            *t = t.saturating_sub(1);
            if *t == 0 {
                q.remove(idx);
            }
        }
        Some(out)
    }

    pub(crate) fn clear(&self) {
        lock(&self.0).clear();
    }
}

/// The credentials the emulator accepts. `Debug` hides the secret parts.
#[derive(Clone, PartialEq, Eq)]
pub struct BedrockCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Required (as `x-amz-security-token`) when set.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for BedrockCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BedrockCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &crate::record::REDACTED)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| crate::record::REDACTED),
            )
            .finish()
    }
}

pub(crate) struct BedrockState {
    pub(crate) credentials: BedrockCredentials,
    pub(crate) scripts: ScriptQueue,
}

impl std::fmt::Debug for BedrockState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BedrockState")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new().route("/model/{model_id}/converse", post(converse))
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A Bedrock error: `x-amzn-ErrorType` names the exception, the body is `{"message"}`.
pub(crate) fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut resp = (status, axum::Json(json!({ "message": message }))).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(kind) {
        h.insert("x-amzn-errortype", v);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

/// The exception Bedrock answers with for a status (for injected faults).
pub(crate) fn fault_response(status: StatusCode) -> Response {
    let (kind, message) = match status.as_u16() {
        400 => (
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
        ),
        403 => (
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        ),
        404 => (
            "ResourceNotFoundException",
            "The requested resource could not be found.",
        ),
        408 => (
            "ModelTimeoutException",
            "Model has timed out in processing the request. Try your request again.",
        ),
        413 => (
            "ValidationException",
            "Input is too long for requested model.",
        ),
        424 => (
            "ModelErrorException",
            "The request failed due to an error while processing the model.",
        ),
        429 => (
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ),
        503 => (
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
        _ => (
            "InternalServerException",
            "The server encountered an internal error while processing the request.",
        ),
    };
    error_response(status, kind, message)
}

fn validation(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, "ValidationException", message)
}

fn forbidden(kind: &str, message: &str) -> Response {
    error_response(StatusCode::FORBIDDEN, kind, message)
}

/// Recomputes the request's SigV4 signature (service `bedrock`) with the known credentials.
fn verify_signature(
    state: &SandboxState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Box<Response>> {
    crate::sigv4::verify(state, uri, headers, body, SIGNING_NAME)
        .map_err(|e| Box::new(forbidden(e.kind, &e.message)))
}

/// What the handler needs from a validated request.
struct Converse {
    max_tokens: u64,
    tool: Option<String>,
    user_text: String,
}

fn validate(body: &Map<String, Value>) -> Result<Converse, String> {
    let messages = match body.get("messages") {
        None => return Err("1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null".into()),
        Some(Value::Array(m)) if m.is_empty() => {
            return Err("A conversation must start with a user message. Try again with a conversation that starts with a user message.".into());
        }
        Some(Value::Array(m)) => m,
        Some(_) => return Err("messages: expected a list".into()),
    };
    let mut user_text = String::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !matches!(role, Some("user" | "assistant")) {
            return Err(format!(
                "1 validation error detected: Value at 'messages.{}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
                i + 1
            ));
        }
        let Some(Value::Array(blocks)) = m.get("content") else {
            return Err(format!(
                "messages.{i}.content: expected a list of content blocks"
            ));
        };
        if blocks.is_empty() {
            return Err(format!(
                "messages.{i}.content: at least one content block is required"
            ));
        }
        for (j, b) in blocks.iter().enumerate() {
            let members = b.as_object().map_or(0, Map::len);
            if members != 1 {
                return Err(format!(
                    "messages.{i}.content.{j}: a content block must set exactly one member"
                ));
            }
        }
        if role == Some("user") {
            user_text = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n");
        }
    }
    if let Some(system) = body.get("system") {
        let ok = system.as_array().is_some_and(|s| {
            s.iter().all(|b| {
                b.get("text").is_some_and(Value::is_string) || b.get("cachePoint").is_some()
            })
        });
        if !ok {
            return Err("system: expected a list of {\"text\": ...} blocks".into());
        }
    }
    let max_tokens = match body.get("inferenceConfig").and_then(|c| c.get("maxTokens")) {
        None => DEFAULT_MAX_TOKENS,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_TOKENS_LIMIT).contains(&n) => n,
            _ => {
                return Err(format!(
                    "1 validation error detected: Value at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must be in 1..={MAX_TOKENS_LIMIT}"
                ));
            }
        },
    };
    let mut names: Vec<String> = Vec::new();
    let tool_config = body.get("toolConfig");
    if let Some(tc) = tool_config {
        let Some(Value::Array(tools)) = tc.get("tools") else {
            return Err("toolConfig.tools: expected a non-empty list".into());
        };
        if tools.is_empty() {
            return Err("1 validation error detected: Value '[]' at 'toolConfig.tools' failed to satisfy constraint: Member must have length greater than or equal to 1".into());
        }
        for (i, t) in tools.iter().enumerate() {
            let spec = t.get("toolSpec");
            let name = spec
                .and_then(|s| s.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let valid = !name.is_empty()
                && name.len() <= TOOL_NAME_CHARS_MAX
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(format!(
                    "1 validation error detected: Value at 'toolConfig.tools.{}.member.toolSpec.name' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+",
                    i + 1
                ));
            }
            let schema_type = spec
                .and_then(|s| s.get("inputSchema"))
                .and_then(|s| s.get("json"))
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str);
            if schema_type != Some("object") {
                return Err(format!(
                    "The json schema definition at toolConfig.tools.{i}.toolSpec.inputSchema is invalid: type must be object"
                ));
            }
            if names.iter().any(|n| n == name) {
                return Err(format!("The tool name {name} is duplicated."));
            }
            names.push(name.to_owned());
        }
    }
    let tool = match tool_config.and_then(|tc| tc.get("toolChoice")) {
        None => names.first().cloned(),
        Some(choice) => {
            if let Some(t) = choice.get("tool") {
                let Some(name) = t.get("name").and_then(Value::as_str) else {
                    return Err("toolConfig.toolChoice.tool.name: Member must not be null".into());
                };
                if !names.iter().any(|n| n == name) {
                    return Err(format!(
                        "The tool {name} specified in toolChoice is not defined in toolConfig.tools."
                    ));
                }
                Some(name.to_owned())
            } else if choice.get("auto").is_some() || choice.get("any").is_some() {
                names.first().cloned()
            } else {
                return Err(
                    "toolConfig.toolChoice: exactly one of auto, any or tool must be set".into(),
                );
            }
        }
    };
    Ok(Converse {
        max_tokens,
        tool,
        user_text,
    })
}

/// A rough token count (about four bytes per token), never zero.
fn tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4).max(1)
}

async fn converse(
    State(state): State<Arc<SandboxState>>,
    OriginalUri(uri): OriginalUri,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    if let Err(resp) = verify_signature(&state, &uri, &headers, &body) {
        return *resp;
    }
    if model_id.is_empty() {
        return validation("The provided model identifier is invalid.");
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&body) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "Malformed request body",
        );
    };
    let req = match validate(&obj) {
        Ok(r) => r,
        Err(message) => return validation(&message),
    };
    let script = state.bedrock.scripts.take(&req.user_text);
    if let Some(text) = script.as_ref().and_then(|s| s.body_text.clone()) {
        return raw_json(text);
    }
    let (reply, stop_override) = match script {
        Some(s) => (BrainReply::from(s.reply), s.stop_reason),
        None => (state.brain().answer(&req.user_text), None),
    };
    let (content, mut stop, output_tokens) = match reply {
        BrainReply::Raw { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, axum::Json(body)).into_response();
        }
        BrainReply::ToolInput(input) => match &req.tool {
            Some(name) => {
                let needed = tokens(input.to_string().len());
                let (input, stop, used) = if needed > req.max_tokens {
                    (json!({}), "max_tokens", req.max_tokens)
                } else {
                    (input, "tool_use", needed)
                };
                let block = json!({"toolUse": {
                    "toolUseId": format!("tooluse_{}", uuid::Uuid::new_v4().simple()),
                    "name": name,
                    "input": input,
                }});
                (block, stop, used)
            }
            None => text_block(input.to_string(), req.max_tokens),
        },
        BrainReply::Text(text) => text_block(text, req.max_tokens),
    };
    if let Some(s) = stop_override.as_deref()
        && let Some(known) = STOP_REASONS.iter().find(|r| **r == s)
    {
        stop = known;
    }
    let input_tokens = tokens(body.len());
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let answer = json!({
        "output": {"message": {"role": "assistant", "content": [content]}},
        "stopReason": stop,
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        },
        "metrics": {"latencyMs": latency_ms},
    });
    let mut resp = (StatusCode::OK, axum::Json(answer)).into_response();
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

fn text_block(text: String, max_tokens: u64) -> (Value, &'static str, u64) {
    let needed = tokens(text.len());
    if needed > max_tokens {
        let keep = usize::try_from(max_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
        let cut: String = text.chars().take(keep).collect();
        (json!({"text": cut}), "max_tokens", max_tokens)
    } else {
        (json!({"text": text}), "end_turn", needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_validate_stop_reasons_and_are_consumed() {
        let q = ScriptQueue::default();
        let s = |stop: Option<&str>, times| ModelScript {
            when_contains: "db".into(),
            reply: ScriptReply::Text { text: "t".into() },
            stop_reason: stop.map(str::to_owned),
            refusal: None,
            body_text: None,
            times,
        };
        assert_eq!(
            q.add(s(Some("nope"), None), STOP_REASONS),
            Err(ModelScriptError::BadStopReason("nope".into()))
        );
        q.add(s(Some("max_tokens"), Some(1)), STOP_REASONS).unwrap();
        assert!(q.take("x").is_none());
        assert!(q.take("the db").is_some());
        assert!(q.take("the db").is_none());
    }
}
