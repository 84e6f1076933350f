//! OpenAI-compatible chat-completions emulator, under `/openai`
//! (`POST /v1/chat/completions`), standing in for vLLM, Ollama, llama.cpp's
//! server or OpenAI.
//!
//! Checks the bearer key (when the sandbox has one), the request (model,
//! messages, token limits) and `response_format`; a `json_schema` format with
//! `strict: true` must satisfy strict mode's rules (every object closed with
//! `additionalProperties: false` and every property listed in `required`), as
//! OpenAI enforces. Answers with the configured [`ModelBrain`] or a scripted
//! reply ([`ModelScript`]): a tool input becomes the JSON `content`, text is
//! returned verbatim, a `refusal` script sets `message.refusal`. An answer that
//! does not fit `max_tokens` is cut with `finish_reason: "length"`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

use crate::SandboxState;
use crate::anthropic::BrainReply;
use crate::bedrock::ScriptQueue;

/// Largest `max_tokens` accepted.
pub const MAX_TOKENS_LIMIT: u64 = 64_000;
/// The `max_tokens` used when the request sets none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// Longest `response_format.json_schema.name`.
pub const SCHEMA_NAME_CHARS_MAX: usize = 64;
/// Deepest schema nesting checked for strict mode.
pub const SCHEMA_DEPTH_MAX: usize = 32;

/// `finish_reason` values chat completions use.
pub const FINISH_REASONS: &[&str] = &["stop", "length", "content_filter", "tool_calls"];

pub(crate) struct OpenAiState {
    /// `None`: no key is checked (like a self-hosted server without `--api-key`).
    pub(crate) api_key: Option<String>,
    pub(crate) scripts: ScriptQueue,
}

impl std::fmt::Debug for OpenAiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiState")
            .field(
                "api_key",
                &self.api_key.as_ref().map(|_| crate::record::REDACTED),
            )
            .finish_non_exhaustive()
    }
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new().route("/v1/chat/completions", post(completions))
}

/// An error in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}`.
pub(crate) fn error_response(
    status: StatusCode,
    kind: &str,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    (
        status,
        axum::Json(json!({"error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": code,
        }})),
    )
        .into_response()
}

/// The error OpenAI answers with for a status (for injected faults).
pub(crate) fn fault_response(status: StatusCode) -> Response {
    match status.as_u16() {
        400 => invalid("Invalid request.", None),
        401 => error_response(
            status,
            "invalid_request_error",
            "Incorrect API key provided.",
            None,
            Some("invalid_api_key"),
        ),
        404 => error_response(
            status,
            "invalid_request_error",
            "The model does not exist or you do not have access to it.",
            Some("model"),
            Some("model_not_found"),
        ),
        429 => error_response(
            status,
            "requests",
            "Rate limit reached for requests. Please try again later.",
            None,
            Some("rate_limit_exceeded"),
        ),
        503 => error_response(
            status,
            "server_error",
            "The server is overloaded or not ready yet.",
            None,
            None,
        ),
        _ => error_response(
            status,
            "server_error",
            "The server had an error while processing your request.",
            None,
            None,
        ),
    }
}

fn invalid(message: &str, param: Option<&str>) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        param,
        None,
    )
}

struct Completion {
    model: String,
    max_tokens: u64,
    user_text: String,
}

fn validate(body: &Map<String, Value>) -> Result<Completion, (String, Option<&'static str>)> {
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(("you must provide a model parameter".into(), Some("model"))),
    };
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return Err(("[] is too short - 'messages'".into(), Some("messages")));
        }
        _ => {
            return Err((
                "Missing required parameter: 'messages'.".into(),
                Some("messages"),
            ));
        }
    };
    let mut user_text = String::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !matches!(
            role,
            Some("system" | "developer" | "user" | "assistant" | "tool")
        ) {
            return Err((
                format!("Invalid value for 'messages[{i}].role'."),
                Some("messages"),
            ));
        }
        let text = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            Some(Value::Null) | None if role == Some("assistant") => String::new(),
            _ => {
                return Err((
                    format!("Invalid type for 'messages[{i}].content'."),
                    Some("messages"),
                ));
            }
        };
        if role == Some("user") {
            user_text = text;
        }
    }
    let limit = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"));
    let max_tokens = match limit {
        None | Some(Value::Null) => DEFAULT_MAX_TOKENS,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_TOKENS_LIMIT).contains(&n) => n,
            _ => {
                return Err((
                    format!("Invalid 'max_tokens': expected an integer in 1..={MAX_TOKENS_LIMIT}."),
                    Some("max_tokens"),
                ));
            }
        },
    };
    if let Some(format) = body.get("response_format") {
        check_response_format(format)?;
    }
    Ok(Completion {
        model,
        max_tokens,
        user_text,
    })
}

fn check_response_format(format: &Value) -> Result<(), (String, Option<&'static str>)> {
    let param = Some("response_format");
    match format.get("type").and_then(Value::as_str) {
        Some("text" | "json_object") => Ok(()),
        Some("json_schema") => {
            let Some(js) = format.get("json_schema") else {
                return Err((
                    "Missing required parameter: 'response_format.json_schema'.".into(),
                    param,
                ));
            };
            let name = js.get("name").and_then(Value::as_str).unwrap_or("");
            let name_ok = !name.is_empty()
                && name.len() <= SCHEMA_NAME_CHARS_MAX
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !name_ok {
                return Err((
                    "Invalid 'response_format.json_schema.name': string does not match pattern '^[a-zA-Z0-9_-]+$' (1 to 64 characters).".into(),
                    param,
                ));
            }
            let Some(schema) = js.get("schema").filter(|s| s.is_object()) else {
                return Err((
                    "Invalid 'response_format.json_schema.schema': expected an object.".into(),
                    param,
                ));
            };
            if js.get("strict").and_then(Value::as_bool) == Some(true) {
                strict_problem(schema, "()", 0).map_or(Ok(()), |p| {
                    Err((
                        format!("Invalid schema for response_format '{name}': {p}"),
                        param,
                    ))
                })
            } else {
                Ok(())
            }
        }
        _ => Err((
            "Invalid value for 'response_format.type': expected one of 'text', 'json_object' or 'json_schema'.".into(),
            param,
        )),
    }
}

/// The first strict-mode violation in `schema`, OpenAI-style.
fn strict_problem(schema: &Value, context: &str, depth: usize) -> Option<String> {
    if depth > SCHEMA_DEPTH_MAX {
        return Some(format!(
            "In context={context}, the schema is nested too deeply."
        ));
    }
    let obj = schema.as_object()?;
    let is_object = match obj.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => obj.contains_key("properties"),
    };
    if is_object {
        if obj.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Some(format!(
                "In context={context}, 'additionalProperties' is required to be supplied and to be false."
            ));
        }
        let props = obj.get("properties").and_then(Value::as_object);
        let required: Vec<&str> = obj
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = props {
            for (key, sub) in props {
                if !required.contains(&key.as_str()) {
                    return Some(format!(
                        "In context={context}, 'required' is required to be supplied and to be an array including every key in properties. Missing '{key}'."
                    ));
                }
                if let Some(p) = strict_problem(sub, &format!("('properties', '{key}')"), depth + 1)
                {
                    return Some(p);
                }
            }
        }
    }
    if let Some(items) = obj.get("items") {
        return strict_problem(items, &format!("{context}, 'items'"), depth + 1);
    }
    None
}

fn tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4).max(1)
}

async fn completions(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(expected) = &state.openai.api_key {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            None => {
                return error_response(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    None,
                    None,
                );
            }
            Some(k) if k != expected => {
                // Never echo the presented key.
                return error_response(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    "Incorrect API key provided.",
                    None,
                    Some("invalid_api_key"),
                );
            }
            Some(_) => {}
        }
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&body) else {
        return invalid("We could not parse the JSON body of your request.", None);
    };
    let req = match validate(&obj) {
        Ok(r) => r,
        Err((message, param)) => return invalid(&message, param),
    };
    let script = state.openai.scripts.take(&req.user_text);
    if let Some(text) = script.as_ref().and_then(|s| s.body_text.clone()) {
        return crate::bedrock::raw_json(text);
    }
    let (reply, finish_override, refusal) = match script {
        Some(s) => (BrainReply::from(s.reply), s.stop_reason, s.refusal),
        None => (state.brain().answer(&req.user_text), None, None),
    };
    let text = match reply {
        BrainReply::Raw { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, axum::Json(body)).into_response();
        }
        BrainReply::ToolInput(v) => v.to_string(),
        BrainReply::Text(t) => t,
    };
    let (content, mut finish, completion_tokens) = if let Some(r) = &refusal {
        (Value::Null, "stop", tokens(r.len()))
    } else {
        let needed = tokens(text.len());
        if needed > req.max_tokens {
            let keep = usize::try_from(req.max_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
            let cut: String = text.chars().take(keep).collect();
            (Value::String(cut), "length", req.max_tokens)
        } else {
            (Value::String(text), "stop", needed)
        }
    };
    if let Some(f) = finish_override.as_deref()
        && let Some(known) = FINISH_REASONS.iter().find(|r| **r == f)
    {
        finish = known;
    }
    let prompt_tokens = tokens(body.len());
    let answer = json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": req.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": refusal},
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    });
    (StatusCode::OK, axum::Json(answer)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_mode_requires_closed_objects_listing_every_property() {
        let ok = json!({"type": "object", "additionalProperties": false,
            "properties": {"a": {"type": "string"}, "b": {"type": ["string", "null"]}},
            "required": ["a", "b"]});
        assert_eq!(strict_problem(&ok, "()", 0), None);
        let open = json!({"type": "object", "properties": {}, "required": []});
        assert!(
            strict_problem(&open, "()", 0)
                .unwrap()
                .contains("additionalProperties")
        );
        let optional = json!({"type": "object", "additionalProperties": false,
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a"]});
        assert!(
            strict_problem(&optional, "()", 0)
                .unwrap()
                .contains("Missing 'b'")
        );
    }
}
