//! The Anthropic Messages API classifier (`POST {base_url}/v1/messages`, forced
//! tool use). Does I/O; everything it gets back goes through
//! [`contract::validate`].
//!
//! The API key is held in a [`Secret`]: it is sent in the `x-api-key` header
//! and nowhere else, and it is scrubbed from every detail this module records.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tg_model::{Classification, ClassifierInfo, NormalizedEvent, Rejection};

use crate::contract::{self, reason, rejection};
use crate::prompt::{self, AnswerMode, TOOL_NAME};
use crate::transport::{self, Answer, Ask, Failure, RetryPolicy};
use crate::{Classifier, ClassifyOutcome, Secret, TeamContext, Usage};

pub use crate::transport::{
    BuildError as AnthropicBuildError, MAX_TOKENS_LIMIT, RAW_OUTPUT_BYTES_MAX, RESPONSE_BYTES_MAX,
    RETRIES_MAX_LIMIT, RETRY_AFTER_SECS_LIMIT, TIMEOUT_MS_LIMIT,
};

/// The API version header value this client speaks.
pub const API_VERSION: &str = "2023-06-01";
/// Maximum depth of the schema when inlining `$ref`s for the tool definition.
const SCHEMA_DEPTH_MAX: usize = 32;

/// Description of the `classify_alert` tool.
pub const TOOL_DESCRIPTION: &str = "Record the classification of the alert. Call exactly once.";

fn default_base_url() -> String {
    "https://api.anthropic.com".to_owned()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_tokens() -> u32 {
    512
}
fn default_retries_max() -> u32 {
    2
}
fn default_retry_after_max_secs() -> u64 {
    30
}
fn default_backoff_base_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    8_000
}

/// Configuration of the Anthropic classifier. `Debug` shows the key as `[redacted]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicConfig {
    /// Scheme, host, optional port and path prefix (for gateways); `/v1/messages` is appended.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    pub model: String,
    pub api_key: Secret,
    /// Timeout of one HTTP attempt, body included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Retries after the first attempt (at most [`RETRIES_MAX_LIMIT`]).
    #[serde(default = "default_retries_max")]
    pub retries_max: u32,
    /// A `retry-after` longer than this is waited only this long.
    #[serde(default = "default_retry_after_max_secs")]
    pub retry_after_max_secs: u64,
    /// First backoff delay when the API gives no `retry-after`; doubles per retry.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Largest backoff delay.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Ask once more after a schema failure (telling the model only the reason code).
    #[serde(default)]
    pub reask: bool,
    /// The certificate authorities the API may chain to (built, never parsed).
    #[serde(skip)]
    pub tls: tg_identity::TrustRoots,
}

impl AnthropicConfig {
    /// A configuration with every default.
    pub fn new(model: impl Into<String>, api_key: Secret) -> Self {
        AnthropicConfig {
            base_url: default_base_url(),
            model: model.into(),
            api_key,
            timeout_ms: default_timeout_ms(),
            max_tokens: default_max_tokens(),
            retries_max: default_retries_max(),
            retry_after_max_secs: default_retry_after_max_secs(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            reask: false,
            tls: tg_identity::TrustRoots::bundled(),
        }
    }

    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            timeout_ms: self.timeout_ms,
            retries_max: self.retries_max,
            retry_after_max_secs: self.retry_after_max_secs,
            backoff_base_ms: self.backoff_base_ms,
            backoff_max_ms: self.backoff_max_ms,
        }
    }
}

/// Classifies through the Anthropic Messages API with a forced `classify_alert` tool.
#[derive(Debug)]
pub struct AnthropicClassifier {
    config: AnthropicConfig,
    policy: RetryPolicy,
    url: String,
    client: reqwest::Client,
}

impl AnthropicClassifier {
    pub fn new(config: AnthropicConfig) -> Result<Self, AnthropicBuildError> {
        let base = transport::base_url(&config.base_url)?;
        if config.model.trim().is_empty() {
            return Err(AnthropicBuildError::EmptyModel);
        }
        if config.api_key.expose().is_empty() {
            return Err(AnthropicBuildError::EmptySecret("api_key"));
        }
        transport::check_max_tokens(config.max_tokens)?;
        let policy = config.policy();
        policy.check()?;
        let client = policy.client(&config.tls)?;
        let url = format!("{base}/v1/messages");
        Ok(AnthropicClassifier {
            config,
            policy,
            url,
            client,
        })
    }

    /// The request body for one event (also used by tests and the sandbox).
    pub fn request_body(&self, prompt: &prompt::Prompt) -> Value {
        json!({
            "model": self.config.model,
            "max_tokens": self.config.max_tokens,
            "temperature": 0,
            "system": prompt.system,
            "messages": [{"role": "user", "content": prompt.user}],
            "tools": [{
                "name": TOOL_NAME,
                "description": TOOL_DESCRIPTION,
                "input_schema": tool_input_schema(),
            }],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
        })
    }

    /// One HTTP attempt: `Ok` with a 200 body, or a classified failure.
    async fn attempt(&self, body: &[u8]) -> Result<Vec<u8>, Failure> {
        let response = self
            .client
            .post(&self.url)
            .header("x-api-key", self.config.api_key.expose())
            .header("anthropic-version", API_VERSION)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| self.policy.transport_failure(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = transport::read_limited(&self.policy, response).await?;
        if status == StatusCode::OK {
            return Ok(bytes);
        }
        Err(self.status_failure(status, &headers, &bytes))
    }

    fn status_failure(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Failure {
        let error = serde_json::from_slice::<ErrorEnvelope>(body)
            .ok()
            .map(|e| e.error);
        let error_type = error.as_ref().map_or("", |e| e.kind.as_str());
        let code = match status.as_u16() {
            429 => reason::PROVIDER_RATE_LIMITED.to_owned(),
            529 => reason::PROVIDER_OVERLOADED.to_owned(),
            _ if error_type == "overloaded_error" => reason::PROVIDER_OVERLOADED.to_owned(),
            408 | 504 => reason::PROVIDER_TIMEOUT.to_owned(),
            other => format!("{}{other}", reason::PROVIDER_HTTP_PREFIX),
        };
        let should_retry = headers
            .get("x-should-retry")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| match v {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            });
        let retryable = should_retry.unwrap_or_else(|| {
            matches!(status.as_u16(), 408 | 409 | 429)
                || status.is_server_error()
                || status.as_u16() == 529
        });
        let detail = match &error {
            Some(e) => format!("http {}: {}: {}", status.as_u16(), e.kind, e.message),
            None => format!("http {} without an error body", status.as_u16()),
        };
        Failure {
            retryable,
            retry_after: self.policy.retry_after(headers),
            rejection: rejection(code, detail),
        }
    }

    /// Interprets a 200 body.
    fn answer(&self, bytes: &[u8], known_teams: &BTreeSet<String>) -> Answer {
        let message: MessageResponse = match serde_json::from_slice(bytes) {
            Ok(m) => m,
            Err(e) => {
                return Answer::failed(rejection(
                    reason::PROVIDER_INVALID_RESPONSE,
                    format!("200 body is not a messages response: {e}"),
                ));
            }
        };
        let usage = message.usage.map(|u| Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
        });
        let text: String = message
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect::<Vec<_>>()
            .join("\n");
        let tools: Vec<&ContentBlock> = message
            .content
            .iter()
            .filter(|b| b.kind == "tool_use")
            .collect();
        let tool_inputs = || -> String {
            match tools.as_slice() {
                [one] => one
                    .input
                    .as_ref()
                    .map_or_else(String::new, |i| i.get().to_owned()),
                many => format!(
                    "[{}]",
                    many.iter()
                        .map(|b| b.input.as_ref().map_or("null", |i| i.get()))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            }
        };
        let stop = message.stop_reason.as_deref().unwrap_or("");
        let text_or_none = |t: &str| (!t.is_empty()).then(|| t.to_owned());
        let (raw_output, result): (Option<String>, Result<Classification, Rejection>) = match stop {
            "max_tokens" => (
                if tools.is_empty() {
                    text_or_none(&text)
                } else {
                    Some(tool_inputs())
                },
                Err(rejection(
                    reason::TRUNCATED,
                    format!("stopped at max_tokens {}", self.config.max_tokens),
                )),
            ),
            "refusal" => (
                text_or_none(&text),
                Err(rejection(reason::REFUSAL, "the model refused to classify")),
            ),
            _ => match tools.as_slice() {
                [] => (
                    text_or_none(&text),
                    Err(rejection(
                        reason::NO_TOOL_CALL,
                        format!("no tool_use block (stop_reason {stop:?})"),
                    )),
                ),
                [_, _, ..] => (
                    Some(tool_inputs()),
                    Err(rejection(
                        reason::MULTIPLE_TOOL_CALLS,
                        format!("{} tool_use blocks", tools.len()),
                    )),
                ),
                [one] if one.name.as_deref() != Some(TOOL_NAME) => (
                    Some(tool_inputs()),
                    Err(rejection(
                        reason::WRONG_TOOL,
                        format!(
                            "called tool {:?}, not {TOOL_NAME:?}",
                            one.name.as_deref().unwrap_or("")
                        ),
                    )),
                ),
                [one] => match (&one.input, stop) {
                    (None, _) => (
                        None,
                        Err(rejection(
                            reason::NO_TOOL_CALL,
                            "tool_use block without input",
                        )),
                    ),
                    (Some(input), "tool_use") => (
                        Some(input.get().to_owned()),
                        contract::validate(input.get(), known_teams),
                    ),
                    (Some(input), other) => (
                        Some(input.get().to_owned()),
                        // A forced tool call ends with stop_reason tool_use; anything
                        // else is an incomplete protocol exchange, not an answer.
                        Err(rejection(
                            reason::NO_TOOL_CALL,
                            format!("tool_use block with stop_reason {other:?}"),
                        )),
                    ),
                },
            },
        };
        Answer {
            raw_output,
            result,
            usage,
        }
    }
}

#[derive(Deserialize)]
struct MessageResponse {
    content: Vec<ContentBlock>,
    stop_reason: Option<String>,
    usage: Option<UsageWire>,
}

/// One content block. A struct rather than a tagged enum so `input` can stay a
/// `RawValue`: the exact text the model produced, duplicate keys included.
#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    name: Option<String>,
    input: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct UsageWire {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: String,
}

static TOOL_INPUT_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    let mut schema = tg_model::schema::schema::<Classification>();
    let defs = match &mut schema {
        Value::Object(map) => {
            map.remove("$schema");
            map.remove("title");
            map.remove("description");
            map.remove("$defs").unwrap_or(Value::Null)
        }
        _ => Value::Null,
    };
    inline_refs(&mut schema, &defs, 0);
    schema
});

/// The Classification schema as the API's `input_schema`: a self-contained
/// object schema (no `$schema`, `$defs` or `$ref`; no non-standard `format`s).
pub fn tool_input_schema() -> Value {
    TOOL_INPUT_SCHEMA.clone()
}

fn inline_refs(value: &mut Value, defs: &Value, depth: usize) {
    if depth > SCHEMA_DEPTH_MAX {
        return;
    }
    match value {
        Value::Object(map) => {
            // `format: double` is a schemars annotation, not a JSON Schema format.
            map.remove("format");
            if let Some(Value::String(target)) = map.get("$ref")
                && let Some(name) = target.strip_prefix("#/$defs/")
                && let Some(Value::Object(def)) = defs.get(name)
            {
                let def = def.clone();
                map.remove("$ref");
                for (k, v) in def {
                    map.entry(k).or_insert(v);
                }
            }
            for v in map.values_mut() {
                inline_refs(v, defs, depth + 1);
            }
        }
        Value::Array(items) => {
            for v in items {
                inline_refs(v, defs, depth + 1);
            }
        }
        _ => {}
    }
}

#[async_trait::async_trait]
impl Ask for AnthropicClassifier {
    fn info(&self) -> ClassifierInfo {
        ClassifierInfo {
            classifier: "anthropic".to_owned(),
            model: Some(self.config.model.clone()),
        }
    }

    fn mode(&self) -> AnswerMode {
        AnswerMode::Tool
    }

    fn reask(&self) -> bool {
        self.config.reask
    }

    fn secrets(&self) -> Vec<String> {
        vec![self.config.api_key.expose().to_owned()]
    }

    async fn ask(&self, prompt: &prompt::Prompt, known_teams: &BTreeSet<String>) -> Answer {
        let body = match transport::encode_request(&self.request_body(prompt)) {
            Ok(b) => b,
            Err(failed) => return failed,
        };
        match self.policy.run("anthropic", || self.attempt(&body)).await {
            Ok(bytes) => self.answer(&bytes, known_teams),
            Err(r) => Answer::failed(r),
        }
    }
}

#[async_trait::async_trait]
impl Classifier for AnthropicClassifier {
    fn info(&self) -> ClassifierInfo {
        Ask::info(self)
    }

    async fn classify(&self, event: &NormalizedEvent, teams: &TeamContext) -> ClassifyOutcome {
        transport::exchange(self, event, teams).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_schema_is_self_contained_and_closed() {
        let s = tool_input_schema();
        let text = s.to_string();
        assert!(
            !text.contains("$ref") && !text.contains("$defs") && !text.contains("$schema"),
            "{text}"
        );
        assert!(!text.contains("\"format\""), "{text}");
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(
            s["properties"]["classification"]["enum"],
            json!(["low", "medium", "high", "sev1"])
        );
        assert_eq!(s["properties"]["classification"]["type"], "string");
        assert_eq!(s["required"].as_array().unwrap().len(), 6);
    }
}
