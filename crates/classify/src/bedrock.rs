//! The Amazon Bedrock Converse classifier
//! (`POST {base_url}/model/{modelId}/converse`, forced tool through
//! `toolConfig.toolChoice.tool`), signed with AWS Signature Version 4 by the
//! AWS SDK's own signer (`aws-sigv4`, service name `bedrock`).
//!
//! Credentials are the standard AWS access key, secret key and optional session
//! token, held in [`Secret`]s: they reach the signer and the
//! `x-amz-security-token` header and nowhere else, and are scrubbed from every
//! detail this module records. Everything the model returns goes through
//! [`contract::validate`].

use std::collections::BTreeSet;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tg_model::{Classification, ClassifierInfo, NormalizedEvent, Rejection};

use crate::anthropic::{TOOL_DESCRIPTION, tool_input_schema};
use crate::contract::{self, reason, rejection};
use crate::prompt::{self, AnswerMode, TOOL_NAME};
use crate::sts::{WebIdentityConfig, WebIdentityCredentials};
use crate::transport::{self, Answer, Ask, BuildError, Failure, RetryPolicy};
use crate::{Classifier, ClassifyOutcome, Secret, TeamContext, Usage};

/// The SigV4 signing name of Bedrock Runtime.
pub const SIGNING_NAME: &str = "bedrock";

/// The SigV4 headers (`authorization`, `x-amz-date`, ...) of a `POST` to `url`
/// with `headers` and `body`, for AWS `service` in `region` (the SDK's signer).
/// Shared by Bedrock and the CloudWatch Logs audit sink. Errors never quote a key.
pub fn sigv4_headers(
    c: &AwsCredentials,
    region: &str,
    service: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity: Identity = Credentials::new(
        c.access_key_id.expose(),
        c.secret_access_key.expose(),
        c.session_token.as_ref().map(|t| t.expose().to_owned()),
        None,
        "triage-gate-config",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let request = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("signable request: {e}"))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}
/// Longest model id (a model id, inference-profile id or ARN) accepted.
pub const MODEL_ID_CHARS_MAX: usize = 2048;
/// Longest region name accepted.
pub const REGION_CHARS_MAX: usize = 32;

/// What a path label may keep unencoded (RFC 3986 unreserved), as the AWS SDKs encode `{modelId}`.
const LABEL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Static AWS credentials. `Debug` shows every value as `[redacted]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    /// Present for temporary credentials (STS, SSO, web identity).
    pub session_token: Option<Secret>,
}

/// Where the signing credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsCredentialSource {
    /// Fixed keys (and session token), from the environment or files.
    Static(AwsCredentials),
    /// STS `AssumeRoleWithWebIdentity`, cached and refreshed before expiry.
    WebIdentity(WebIdentityConfig),
}

impl From<AwsCredentials> for AwsCredentialSource {
    fn from(c: AwsCredentials) -> Self {
        AwsCredentialSource::Static(c)
    }
}

impl From<WebIdentityConfig> for AwsCredentialSource {
    fn from(c: WebIdentityConfig) -> Self {
        AwsCredentialSource::WebIdentity(c)
    }
}

/// The live form of [`AwsCredentialSource`].
#[derive(Debug)]
enum Creds {
    Static(AwsCredentials),
    WebIdentity(Box<WebIdentityCredentials>),
}

/// What Bedrock calls a credential that expired (the client then refreshes once).
const EXPIRED_TOKEN: &str = "ExpiredTokenException";

/// Configuration of the Bedrock classifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedrockConfig {
    /// e.g. `us-east-1`; part of the signature's credential scope.
    pub region: String,
    /// Model id, inference-profile id or ARN (e.g. `anthropic.claude-3-5-sonnet-20240620-v1:0`).
    pub model_id: String,
    /// Default `https://bedrock-runtime.{region}.amazonaws.com`; a path prefix is kept.
    pub base_url: Option<String>,
    pub credentials: AwsCredentialSource,
    pub max_tokens: u32,
    pub retry: RetryPolicy,
    /// Ask once more after a schema failure.
    pub reask: bool,
    /// The certificate authorities the endpoint may chain to.
    pub tls: tg_identity::TrustRoots,
}

impl BedrockConfig {
    /// A configuration with every default.
    pub fn new(
        region: impl Into<String>,
        model_id: impl Into<String>,
        credentials: impl Into<AwsCredentialSource>,
    ) -> Self {
        BedrockConfig {
            region: region.into(),
            model_id: model_id.into(),
            base_url: None,
            credentials: credentials.into(),
            max_tokens: 512,
            retry: RetryPolicy::default(),
            reask: false,
            tls: tg_identity::TrustRoots::bundled(),
        }
    }
}

/// Classifies through Bedrock Converse with a forced `classify_alert` tool.
#[derive(Debug)]
pub struct BedrockClassifier {
    config: BedrockConfig,
    creds: Creds,
    url: String,
    client: reqwest::Client,
}

impl BedrockClassifier {
    pub fn new(config: BedrockConfig) -> Result<Self, BuildError> {
        let region_ok = !config.region.is_empty()
            && config.region.len() <= REGION_CHARS_MAX
            && config
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region_ok {
            return Err(BuildError::Invalid {
                field: "region",
                value: config.region.clone(),
                why: "expected an AWS region such as us-east-1",
            });
        }
        if config.model_id.trim().is_empty() {
            return Err(BuildError::EmptyModel);
        }
        if config.model_id.len() > MODEL_ID_CHARS_MAX {
            return Err(BuildError::Invalid {
                field: "model_id",
                value: transport_truncate(&config.model_id),
                why: "longer than 2048 characters",
            });
        }
        let creds = match &config.credentials {
            AwsCredentialSource::Static(c) => {
                if c.access_key_id.expose().is_empty() {
                    return Err(BuildError::EmptySecret("access_key_id"));
                }
                if c.secret_access_key.expose().is_empty() {
                    return Err(BuildError::EmptySecret("secret_access_key"));
                }
                Creds::Static(c.clone())
            }
            AwsCredentialSource::WebIdentity(w) => {
                Creds::WebIdentity(Box::new(WebIdentityCredentials::new(w.clone())?))
            }
        };
        transport::check_max_tokens(config.max_tokens)?;
        config.retry.check()?;
        let default_base = format!("https://bedrock-runtime.{}.amazonaws.com", config.region);
        let base = transport::base_url(config.base_url.as_deref().unwrap_or(&default_base))?;
        let client = config.retry.client(&config.tls)?;
        let url = format!(
            "{base}/model/{}/converse",
            utf8_percent_encode(&config.model_id, LABEL)
        );
        Ok(BedrockClassifier {
            config,
            creds,
            url,
            client,
        })
    }

    /// The endpoint, model id percent-encoded as a path label.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The Converse request body for one prompt.
    pub fn request_body(&self, prompt: &prompt::Prompt) -> Value {
        json!({
            "messages": [{"role": "user", "content": [{"text": prompt.user}]}],
            "system": [{"text": prompt.system}],
            "inferenceConfig": {"maxTokens": self.config.max_tokens, "temperature": 0},
            "toolConfig": {
                "tools": [{"toolSpec": {
                    "name": TOOL_NAME,
                    "description": TOOL_DESCRIPTION,
                    "inputSchema": {"json": tool_input_schema()},
                }}],
                "toolChoice": {"tool": {"name": TOOL_NAME}},
            },
        })
    }

    /// The SigV4 headers (`authorization`, `x-amz-date`, and
    /// `x-amz-security-token` for temporary credentials) for `body` at `time`,
    /// with static credentials (web-identity credentials are fetched per call).
    pub fn sign_headers(
        &self,
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(String, String)>, String> {
        match &self.creds {
            Creds::Static(c) => self.sign_with(c, body, time),
            Creds::WebIdentity(_) => Err("web-identity credentials are fetched per call".into()),
        }
    }

    fn sign_with(
        &self,
        c: &AwsCredentials,
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(String, String)>, String> {
        sigv4_headers(
            c,
            &self.config.region,
            SIGNING_NAME,
            self.url.as_str(),
            &[("content-type", "application/json")],
            body,
            time,
        )
    }

    /// The credentials to sign with now (fetched or refreshed for web identity).
    async fn current(&self) -> Result<AwsCredentials, Failure> {
        match &self.creds {
            Creds::Static(c) => Ok(c.clone()),
            Creds::WebIdentity(w) => w.get(false).await.map_err(|rejection| Failure {
                retryable: false,
                retry_after: None,
                rejection,
            }),
        }
    }

    async fn attempt(&self, body: &[u8]) -> Result<Vec<u8>, Failure> {
        let creds = self.current().await?;
        // Signed per attempt: a retry gets a fresh x-amz-date.
        let signed = self
            .sign_with(&creds, body, SystemTime::now())
            .map_err(|e| Failure {
                retryable: false,
                retry_after: None,
                rejection: rejection(reason::PROVIDER_TRANSPORT, e),
            })?;
        let mut request = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header("accept", "application/json")
            .body(body.to_vec());
        for (name, value) in &signed {
            request = request.header(name.as_str(), value.as_str());
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
        // `x-amzn-ErrorType: ThrottlingException:http://internal.amazon.com/...`
        let error_type = headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_owned())
            .or_else(|| {
                serde_json::from_slice::<Value>(body).ok().and_then(|v| {
                    v.get("__type")
                        .and_then(Value::as_str)
                        .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned())
                })
            })
            .unwrap_or_default();
        let message = serde_json::from_slice::<AwsError>(body)
            .ok()
            .and_then(|e| e.message.or(e.message_upper))
            .unwrap_or_default();
        let (code, retryable) = match (status.as_u16(), error_type.as_str()) {
            (_, "ThrottlingException") | (429, "") => {
                (reason::PROVIDER_RATE_LIMITED.to_owned(), true)
            }
            (_, "ModelNotReadyException") | (_, "ServiceUnavailableException") | (503, _) => {
                (reason::PROVIDER_OVERLOADED.to_owned(), true)
            }
            (_, "ModelTimeoutException") | (408 | 504, _) => {
                (reason::PROVIDER_TIMEOUT.to_owned(), true)
            }
            (s, _) => (
                format!("{}{s}", reason::PROVIDER_HTTP_PREFIX),
                status.is_server_error(),
            ),
        };
        let detail = if error_type.is_empty() {
            format!("http {}: {message}", status.as_u16())
        } else {
            format!("http {}: {error_type}: {message}", status.as_u16())
        };
        Failure {
            retryable,
            retry_after: self.config.retry.retry_after(headers),
            rejection: rejection(code, detail),
        }
    }

    /// Interprets a 200 body.
    fn answer(&self, bytes: &[u8], known_teams: &BTreeSet<String>) -> Answer {
        let response: ConverseResponse = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                return Answer::failed(rejection(
                    reason::PROVIDER_INVALID_RESPONSE,
                    format!("200 body is not a Converse response: {e}"),
                ));
            }
        };
        let usage = response.usage.map(|u| Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
        });
        let blocks = response.output.message.content;
        let text = blocks
            .iter()
            .filter_map(|b| b.text.as_deref())
            .collect::<Vec<_>>()
            .join("\n");
        let tools: Vec<&ToolUse> = blocks.iter().filter_map(|b| b.tool_use.as_ref()).collect();
        let tool_inputs = || -> String {
            match tools.as_slice() {
                [one] => one.input.get().to_owned(),
                many => format!(
                    "[{}]",
                    many.iter()
                        .map(|t| t.input.get())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            }
        };
        let text_or_none = |t: &str| (!t.is_empty()).then(|| t.to_owned());
        let some_output = || {
            if tools.is_empty() {
                text_or_none(&text)
            } else {
                Some(tool_inputs())
            }
        };
        let stop = response.stop_reason.as_str();
        let (raw_output, result): (Option<String>, Result<Classification, Rejection>) = match stop {
            "max_tokens" | "model_context_window_exceeded" => (
                some_output(),
                Err(rejection(
                    reason::TRUNCATED,
                    format!("stopReason {stop} (maxTokens {})", self.config.max_tokens),
                )),
            ),
            "guardrail_intervened" | "content_filtered" => (
                some_output(),
                Err(rejection(
                    reason::REFUSAL,
                    format!("stopReason {stop}: the answer was filtered"),
                )),
            ),
            "malformed_model_output" | "malformed_tool_use" => (
                some_output(),
                Err(rejection(
                    reason::NOT_JSON,
                    format!("stopReason {stop}: the model produced no well-formed tool input"),
                )),
            ),
            _ => match tools.as_slice() {
                [] => (
                    text_or_none(&text),
                    Err(rejection(
                        reason::NO_TOOL_CALL,
                        format!("no toolUse block (stopReason {stop:?})"),
                    )),
                ),
                [_, _, ..] => (
                    Some(tool_inputs()),
                    Err(rejection(
                        reason::MULTIPLE_TOOL_CALLS,
                        format!("{} toolUse blocks", tools.len()),
                    )),
                ),
                [one] if one.name != TOOL_NAME => (
                    Some(tool_inputs()),
                    Err(rejection(
                        reason::WRONG_TOOL,
                        format!("called tool {:?}, not {TOOL_NAME:?}", one.name),
                    )),
                ),
                [one] if stop == "tool_use" => (
                    Some(one.input.get().to_owned()),
                    contract::validate(one.input.get(), known_teams),
                ),
                [one] => (
                    Some(one.input.get().to_owned()),
                    Err(rejection(
                        reason::NO_TOOL_CALL,
                        format!("toolUse block with stopReason {stop:?}"),
                    )),
                ),
            },
        };
        Answer {
            raw_output,
            result,
            usage,
        }
    }
}

fn transport_truncate(s: &str) -> String {
    contract::truncate(s, 64).to_owned()
}

#[derive(Deserialize)]
struct AwsError {
    message: Option<String>,
    #[serde(rename = "Message")]
    message_upper: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    output: ConverseOutput,
    stop_reason: String,
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct ConverseOutput {
    message: OutputMessage,
}

#[derive(Deserialize)]
struct OutputMessage {
    content: Vec<ContentBlock>,
}

/// A content block is a union: one of `text`, `toolUse`, `reasoningContent`, ...
/// Members this client does not use are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContentBlock {
    text: Option<String>,
    tool_use: Option<ToolUse>,
}

/// `input` stays a `RawValue`: the exact text, duplicate keys included.
#[derive(Deserialize)]
struct ToolUse {
    #[serde(default)]
    name: String,
    input: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

#[async_trait::async_trait]
impl Ask for BedrockClassifier {
    fn info(&self) -> ClassifierInfo {
        ClassifierInfo {
            classifier: "bedrock".to_owned(),
            model: Some(self.config.model_id.clone()),
        }
    }

    fn mode(&self) -> AnswerMode {
        AnswerMode::Tool
    }

    fn reask(&self) -> bool {
        self.config.reask
    }

    fn secrets(&self) -> Vec<String> {
        let c = match &self.creds {
            Creds::Static(c) => Some(c.clone()),
            Creds::WebIdentity(w) => w.cached_now(),
        };
        let Some(c) = c else { return Vec::new() };
        let mut out = vec![
            c.secret_access_key.expose().to_owned(),
            c.access_key_id.expose().to_owned(),
        ];
        if let Some(t) = &c.session_token {
            out.push(t.expose().to_owned());
        }
        out
    }

    async fn ask(&self, prompt: &prompt::Prompt, known_teams: &BTreeSet<String>) -> Answer {
        let body = match transport::encode_request(&self.request_body(prompt)) {
            Ok(b) => b,
            Err(failed) => return failed,
        };
        let mut result = self
            .config
            .retry
            .run("bedrock", || self.attempt(&body))
            .await;
        // A temporary credential that expired early (revoked, clock skew):
        // drop it, fetch a fresh one and try once more.
        if let Creds::WebIdentity(w) = &self.creds
            && matches!(&result, Err(r) if r.detail.contains(EXPIRED_TOKEN))
        {
            tracing::info!("bedrock refused an expired credential; refreshing it once");
            w.invalidate().await;
            result = self
                .config
                .retry
                .run("bedrock", || self.attempt(&body))
                .await;
        }
        match result {
            Ok(bytes) => self.answer(&bytes, known_teams),
            Err(r) => Answer::failed(r),
        }
    }
}

#[async_trait::async_trait]
impl Classifier for BedrockClassifier {
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

    fn creds() -> AwsCredentials {
        AwsCredentials {
            access_key_id: Secret::new("AKIDEXAMPLE"),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: None,
        }
    }

    #[test]
    fn model_id_is_encoded_as_a_path_label() {
        let c = BedrockClassifier::new(BedrockConfig::new(
            "us-east-1",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            creds(),
        ))
        .unwrap();
        assert_eq!(
            c.url(),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        );
    }

    #[test]
    fn signature_headers_are_sigv4_for_bedrock() {
        let c = BedrockClassifier::new(BedrockConfig::new("eu-west-1", "m", creds())).unwrap();
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let h = c.sign_headers(b"{}", t).unwrap();
        let auth = &h.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/eu-west-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="
            ),
            "{auth}"
        );
        assert!(!auth.contains("wJalr"));
        // Deterministic for the same input and time.
        assert_eq!(h, c.sign_headers(b"{}", t).unwrap());
        assert_ne!(h, c.sign_headers(b"{ }", t).unwrap());
    }

    #[test]
    fn bad_region_and_empty_credentials_are_refused() {
        assert!(matches!(
            BedrockClassifier::new(BedrockConfig::new("US EAST", "m", creds())),
            Err(BuildError::Invalid {
                field: "region",
                ..
            })
        ));
        let mut c = creds();
        c.secret_access_key = Secret::new("");
        assert_eq!(
            BedrockClassifier::new(BedrockConfig::new("us-east-1", "m", c)).unwrap_err(),
            BuildError::EmptySecret("secret_access_key")
        );
    }
}
