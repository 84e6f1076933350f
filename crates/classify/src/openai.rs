//! The OpenAI-compatible chat-completions classifier (`POST {base_url}/v1/chat/completions`
//! with `response_format: json_schema`, `strict: true`), for vLLM, Ollama,
//! llama.cpp's server and OpenAI itself.
//!
//! `finish_reason: "length"` is a truncated answer and `message.refusal` (or
//! `finish_reason: "content_filter"`) a refusal: both are rejected. The message
//! `content` is the answer text and goes through [`contract::validate`] as is;
//! strict mode guarantees shape at best, never meaning. The optional API key
//! is held in a [`Secret`] and sent only as `Authorization: Bearer`.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use serde::Deserialize;
use serde_json::{Value, json};
use tg_model::{Classification, ClassifierInfo, NormalizedEvent, Rejection};

use crate::anthropic::tool_input_schema;
use crate::contract::{self, reason, rejection};
use crate::prompt::{self, AnswerMode};
use crate::transport::{self, Answer, Ask, BuildError, Failure, RetryPolicy};
use crate::{Classifier, ClassifyOutcome, Secret, TeamContext, Usage};

/// `response_format.json_schema.name`.
pub const SCHEMA_NAME: &str = "alert_classification";

/// Configuration of the OpenAI-compatible classifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    /// Scheme, host, port and path prefix; `/v1/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    /// `None` for self-hosted servers that check no key.
    pub api_key: Option<Secret>,
    pub max_tokens: u32,
    pub retry: RetryPolicy,
    /// Ask once more after a schema failure.
    pub reask: bool,
    /// The certificate authorities the endpoint may chain to.
    pub tls: tg_identity::TrustRoots,
}

impl OpenAiConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            max_tokens: 512,
            retry: RetryPolicy::default(),
            reask: false,
            tls: tg_identity::TrustRoots::bundled(),
        }
    }
}

/// Classifies through an OpenAI-compatible `/v1/chat/completions`.
#[derive(Debug)]
pub struct OpenAiClassifier {
    config: OpenAiConfig,
    url: String,
    client: reqwest::Client,
}

static STRICT_SCHEMA: LazyLock<Value> = LazyLock::new(|| strict(tool_input_schema()));

/// The Classification schema in the form strict mode requires: every property
/// listed in `required` (optional ones are nullable), `additionalProperties: false`.
pub fn response_schema() -> Value {
    STRICT_SCHEMA.clone()
}

fn strict(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        let names: Vec<Value> = map
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().map(Value::String).collect())
            .unwrap_or_default();
        map.insert("required".to_owned(), Value::Array(names));
        map.insert("additionalProperties".to_owned(), Value::Bool(false));
    }
    schema
}

impl OpenAiClassifier {
    pub fn new(config: OpenAiConfig) -> Result<Self, BuildError> {
        let base = transport::base_url(&config.base_url)?;
        if config.model.trim().is_empty() {
            return Err(BuildError::EmptyModel);
        }
        if config
            .api_key
            .as_ref()
            .is_some_and(|k| k.expose().is_empty())
        {
            return Err(BuildError::EmptySecret("api_key"));
        }
        transport::check_max_tokens(config.max_tokens)?;
        config.retry.check()?;
        let client = config.retry.client(&config.tls)?;
        let url = format!("{base}/v1/chat/completions");
        Ok(OpenAiClassifier {
            config,
            url,
            client,
        })
    }

    /// The request body for one prompt.
    pub fn request_body(&self, prompt: &prompt::Prompt) -> Value {
        json!({
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
            "temperature": 0,
            "max_tokens": self.config.max_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": SCHEMA_NAME,
                    "strict": true,
                    "schema": response_schema(),
                },
            },
        })
    }

    async fn attempt(&self, body: &[u8]) -> Result<Vec<u8>, Failure> {
        let mut request = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(key) = &self.config.api_key {
            request = request.header(AUTHORIZATION, format!("Bearer {}", key.expose()));
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.config.retry.transport_failure(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = transport::read_limited(&self.config.retry, response).await?;
        if status == StatusCode::OK {
            return Ok(bytes);
        }
        Err(self.status_failure(status, &headers, &bytes))
    }

    fn status_failure(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Failure {
        // Newer servers: {"error": {"message", "type", ...}}; older vLLM: flat.
        let error = serde_json::from_slice::<Value>(body).ok().map(|v| {
            let e = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
            let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            (text("type"), text("message"))
        });
        let code = match status.as_u16() {
            429 => reason::PROVIDER_RATE_LIMITED.to_owned(),
            503 | 529 => reason::PROVIDER_OVERLOADED.to_owned(),
            408 | 504 => reason::PROVIDER_TIMEOUT.to_owned(),
            other => format!("{}{other}", reason::PROVIDER_HTTP_PREFIX),
        };
        let retryable = matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error();
        let detail = match error {
            Some((kind, message)) => format!("http {}: {kind}: {message}", status.as_u16()),
            None => format!("http {} without an error body", status.as_u16()),
        };
        Failure {
            retryable,
            retry_after: self.config.retry.retry_after(headers),
            rejection: rejection(code, detail),
        }
    }

    fn answer(&self, bytes: &[u8], known_teams: &BTreeSet<String>) -> Answer {
        let response: Completion = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                return Answer::failed(rejection(
                    reason::PROVIDER_INVALID_RESPONSE,
                    format!("200 body is not a chat completion: {e}"),
                ));
            }
        };
        let usage = response.usage.map(|u| Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
        });
        let choice = match response.choices.as_slice() {
            [one] => one,
            other => {
                return Answer {
                    raw_output: None,
                    result: Err(rejection(
                        reason::PROVIDER_INVALID_RESPONSE,
                        format!("{} choices, expected exactly one", other.len()),
                    )),
                    usage,
                };
            }
        };
        let content = choice.message.content.clone();
        let finish = choice.finish_reason.as_deref().unwrap_or("");
        let refusal = choice
            .message
            .refusal
            .as_deref()
            .filter(|r| !r.trim().is_empty());
        let (raw_output, result): (Option<String>, Result<Classification, Rejection>) =
            if let Some(r) = refusal {
                (
                    Some(r.to_owned()),
                    Err(rejection(reason::REFUSAL, "the model refused to classify")),
                )
            } else if finish == "content_filter" {
                (
                    content,
                    Err(rejection(
                        reason::REFUSAL,
                        "finish_reason content_filter: the answer was filtered",
                    )),
                )
            } else if finish == "length" {
                (
                    content,
                    Err(rejection(
                        reason::TRUNCATED,
                        format!(
                            "finish_reason length (max_tokens {})",
                            self.config.max_tokens
                        ),
                    )),
                )
            } else if !choice.message.tool_calls.is_empty() {
                (
                    content,
                    Err(rejection(
                        reason::NO_TOOL_CALL,
                        "answered with tool_calls instead of the JSON content",
                    )),
                )
            } else {
                match content {
                    None => (
                        None,
                        Err(rejection(reason::EMPTY, "message content is null")),
                    ),
                    Some(text) => {
                        let result = contract::validate(&text, known_teams);
                        (Some(text), result)
                    }
                }
            };
        Answer {
            raw_output,
            result,
            usage,
        }
    }
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<Value>,
}

#[derive(Deserialize)]
struct TokenUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[async_trait::async_trait]
impl Ask for OpenAiClassifier {
    fn info(&self) -> ClassifierInfo {
        ClassifierInfo {
            classifier: "openai".to_owned(),
            model: Some(self.config.model.clone()),
        }
    }

    fn mode(&self) -> AnswerMode {
        AnswerMode::Json
    }

    fn reask(&self) -> bool {
        self.config.reask
    }

    fn secrets(&self) -> Vec<String> {
        self.config
            .api_key
            .iter()
            .map(|k| k.expose().to_owned())
            .collect()
    }

    async fn ask(&self, prompt: &prompt::Prompt, known_teams: &BTreeSet<String>) -> Answer {
        let body = match transport::encode_request(&self.request_body(prompt)) {
            Ok(b) => b,
            Err(failed) => return failed,
        };
        match self
            .config
            .retry
            .run("openai", || self.attempt(&body))
            .await
        {
            Ok(bytes) => self.answer(&bytes, known_teams),
            Err(r) => Answer::failed(r),
        }
    }
}

#[async_trait::async_trait]
impl Classifier for OpenAiClassifier {
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
    fn strict_schema_requires_every_property_and_closes_objects() {
        let s = response_schema();
        let props: BTreeSet<&String> = s["properties"].as_object().unwrap().keys().collect();
        let required: BTreeSet<String> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(props.len(), required.len());
        assert!(required.contains("rationale"));
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(
            s["properties"]["rationale"]["type"],
            json!(["string", "null"])
        );
    }
}
