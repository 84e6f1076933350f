//! What every HTTP provider shares: bounded retries with `retry-after`, a
//! bounded body read, secret scrubbing, and the one-re-ask exchange around
//! [`contract::validate`].

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use tg_model::{Classification, ClassifierInfo, NormalizedEvent, Rejection};

use crate::contract::{self, reason, rejection};
use crate::prompt::{self, AnswerMode, Prompt};
use crate::{ClassifyOutcome, TeamContext, Usage};

/// Maximum bytes of a response body read from any provider.
pub const RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// Maximum bytes of `raw_output` kept from a response (text answers can be long).
pub const RAW_OUTPUT_BYTES_MAX: usize = 64 * 1024;
/// Upper bound on `retries_max` a configuration may ask for.
pub const RETRIES_MAX_LIMIT: u32 = 10;
/// Upper bound on `timeout_ms` of one attempt (10 minutes).
pub const TIMEOUT_MS_LIMIT: u64 = 600_000;
/// Upper bound on `max_tokens` (a classification needs a few hundred).
pub const MAX_TOKENS_LIMIT: u32 = 8192;
/// Upper bound on `retry_after_max_secs` (the official SDKs honour at most 60 s).
pub const RETRY_AFTER_SECS_LIMIT: u64 = 60;
/// Prefix of the detail of a rejection that survived the re-ask.
pub const AFTER_REASK: &str = "after one re-ask: ";

/// Retry and timeout settings of one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Timeout of one HTTP attempt, body included.
    pub timeout_ms: u64,
    /// Retries after the first attempt.
    pub retries_max: u32,
    /// A `retry-after` longer than this is waited only this long.
    pub retry_after_max_secs: u64,
    /// First backoff delay without `retry-after`; doubles per retry.
    pub backoff_base_ms: u64,
    /// Largest backoff delay.
    pub backoff_max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            timeout_ms: 10_000,
            retries_max: 2,
            retry_after_max_secs: 30,
            backoff_base_ms: 500,
            backoff_max_ms: 8_000,
        }
    }
}

/// Why a provider could not be built (shared by every HTTP provider).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("base_url {url:?} is not an http(s) url without a query or fragment")]
    BadBaseUrl { url: String },
    #[error("model name is empty")]
    EmptyModel,
    #[error("{0} is empty")]
    EmptySecret(&'static str),
    #[error("{field} {value:?} is invalid: {why}")]
    Invalid {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("timeout_ms {value} is not in 1..={TIMEOUT_MS_LIMIT}")]
    BadTimeout { value: u64 },
    #[error("max_tokens {value} is not in 1..={MAX_TOKENS_LIMIT}")]
    BadMaxTokens { value: u32 },
    #[error("retries_max {value} is more than {RETRIES_MAX_LIMIT}")]
    TooManyRetries { value: u32 },
    #[error("retry_after_max_secs {value} is more than {RETRY_AFTER_SECS_LIMIT}")]
    BadRetryAfterMax { value: u64 },
    #[error("backoff_base_ms {base} is more than backoff_max_ms {max} or {max} is more than {limit}", limit = TIMEOUT_MS_LIMIT)]
    BadBackoff { base: u64, max: u64 },
    #[error("cannot build the http client: {0}")]
    Client(String),
}

impl RetryPolicy {
    pub(crate) fn check(&self) -> Result<(), BuildError> {
        if self.timeout_ms == 0 || self.timeout_ms > TIMEOUT_MS_LIMIT {
            return Err(BuildError::BadTimeout {
                value: self.timeout_ms,
            });
        }
        if self.retries_max > RETRIES_MAX_LIMIT {
            return Err(BuildError::TooManyRetries {
                value: self.retries_max,
            });
        }
        if self.retry_after_max_secs > RETRY_AFTER_SECS_LIMIT {
            return Err(BuildError::BadRetryAfterMax {
                value: self.retry_after_max_secs,
            });
        }
        if self.backoff_base_ms > self.backoff_max_ms || self.backoff_max_ms > TIMEOUT_MS_LIMIT {
            return Err(BuildError::BadBackoff {
                base: self.backoff_base_ms,
                max: self.backoff_max_ms,
            });
        }
        Ok(())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64.checked_shl(attempt.min(20)).unwrap_or(u64::MAX);
        let ms = self
            .backoff_base_ms
            .saturating_mul(factor)
            .min(self.backoff_max_ms);
        Duration::from_millis(ms)
    }

    /// `retry-after-ms`, else `retry-after` in seconds, capped at `retry_after_max_secs`.
    /// An HTTP-date `retry-after` is ignored (exponential backoff applies).
    pub(crate) fn retry_after(&self, headers: &HeaderMap) -> Option<Duration> {
        let cap = Duration::from_secs(self.retry_after_max_secs);
        let parse = |name: &str| -> Option<f64> {
            let value: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
            (value.is_finite() && value >= 0.0).then_some(value)
        };
        let delay = parse("retry-after-ms")
            .map(|ms| Duration::from_secs_f64((ms / 1000.0).min(cap.as_secs_f64())))
            .or_else(|| {
                parse("retry-after").map(|s| Duration::from_secs_f64(s.min(cap.as_secs_f64())))
            })?;
        Some(delay.min(cap))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries run out.
    pub(crate) async fn run<F, Fut>(
        &self,
        provider: &str,
        mut attempt: F,
    ) -> Result<Vec<u8>, Rejection>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, Failure>>,
    {
        let mut n: u32 = 0;
        loop {
            let failure = match attempt().await {
                Ok(bytes) => return Ok(bytes),
                Err(failure) => failure,
            };
            if !failure.retryable || n >= self.retries_max {
                return Err(failure.rejection);
            }
            let delay = failure.retry_after.unwrap_or_else(|| self.backoff(n));
            tracing::warn!(
                provider,
                reason = %failure.rejection.reason,
                attempt = n,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "model call failed; retrying"
            );
            tokio::time::sleep(delay).await;
            n += 1;
        }
    }

    /// A reqwest client with this policy's timeout and no redirects (a redirect
    /// would carry credentials to another origin).
    pub(crate) fn client(
        &self,
        tls: &tg_identity::TrustRoots,
    ) -> Result<reqwest::Client, BuildError> {
        tls.client_builder()
            .timeout(Duration::from_millis(self.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BuildError::Client(e.without_url().to_string()))
    }

    /// The failure for a transport error (timeout or connection).
    pub(crate) fn transport_failure(&self, e: &reqwest::Error) -> Failure {
        let rejection = if e.is_timeout() {
            rejection(
                reason::PROVIDER_TIMEOUT,
                format!("no complete response within {} ms", self.timeout_ms),
            )
        } else {
            let kind = if e.is_connect() { "connect" } else { "request" };
            let detail = match tg_identity::trust::certificate_failure(e) {
                Some(why) => why.to_owned(),
                None => error_chain(e),
            };
            rejection(
                reason::PROVIDER_TRANSPORT,
                format!("{kind} failed: {detail}"),
            )
        };
        Failure {
            retryable: true,
            retry_after: None,
            rejection,
        }
    }
}

/// Checks a base URL: http(s), no query, no fragment. Returns it without a trailing `/`.
pub(crate) fn base_url(url: &str) -> Result<String, BuildError> {
    let base = url.trim_end_matches('/');
    let bad = || BuildError::BadBaseUrl {
        url: url.to_owned(),
    };
    let parsed = reqwest::Url::parse(base).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || parsed.host_str().is_none()
    {
        return Err(bad());
    }
    Ok(base.to_owned())
}

pub(crate) fn check_max_tokens(value: u32) -> Result<(), BuildError> {
    if value == 0 || value > MAX_TOKENS_LIMIT {
        return Err(BuildError::BadMaxTokens { value });
    }
    Ok(())
}

/// One failed attempt.
#[derive(Debug)]
pub(crate) struct Failure {
    pub retryable: bool,
    pub retry_after: Option<Duration>,
    pub rejection: Rejection,
}

impl Failure {
    pub(crate) fn invalid_response(detail: impl AsRef<str>) -> Failure {
        Failure {
            retryable: false,
            retry_after: None,
            rejection: rejection(reason::PROVIDER_INVALID_RESPONSE, detail),
        }
    }
}

/// What one exchange with a provider produced.
#[derive(Debug)]
pub(crate) struct Answer {
    pub raw_output: Option<String>,
    pub result: Result<Classification, Rejection>,
    pub usage: Option<Usage>,
}

/// The request body as bytes; an encoding failure is a failed answer (review).
pub(crate) fn encode_request(body: &serde_json::Value) -> Result<Vec<u8>, Answer> {
    serde_json::to_vec(body).map_err(|e| {
        Answer::failed(rejection(
            reason::PROVIDER_INVALID_RESPONSE,
            format!("cannot encode the request: {e}"),
        ))
    })
}

impl Answer {
    pub(crate) fn failed(rejection: Rejection) -> Answer {
        Answer {
            raw_output: None,
            result: Err(rejection),
            usage: None,
        }
    }
}

/// Reads a response body up to [`RESPONSE_BYTES_MAX`].
pub(crate) async fn read_limited(
    policy: &RetryPolicy,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, Failure> {
    let too_large = || {
        Failure::invalid_response(format!(
            "response body larger than {RESPONSE_BYTES_MAX} bytes"
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > RESPONSE_BYTES_MAX as u64)
    {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| policy.transport_failure(&e))?
    {
        if out.len() + chunk.len() > RESPONSE_BYTES_MAX {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `s` with every occurrence of each non-empty secret replaced by `[redacted]`.
pub(crate) fn scrub(s: &str, secrets: &[&str]) -> String {
    let mut out = s.to_owned();
    for secret in secrets {
        if !secret.is_empty() && out.contains(secret) {
            out = out.replace(secret, "[redacted]");
        }
    }
    out
}

pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    // Bounded: the chain of a reqwest error is a handful of links.
    for _ in 0..8 {
        let Some(s) = source else { break };
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The HTTP providers, seen by the shared exchange.
#[async_trait::async_trait]
pub(crate) trait Ask: Send + Sync {
    fn info(&self) -> ClassifierInfo;
    /// How the prompt asks for the answer (forced tool or JSON output).
    fn mode(&self) -> AnswerMode;
    /// Whether one re-ask follows a schema failure.
    fn reask(&self) -> bool;
    /// Secret values scrubbed from everything recorded.
    fn secrets(&self) -> Vec<String>;
    /// One exchange (retries included) for `prompt`; the answer is validated.
    async fn ask(&self, prompt: &Prompt, known_teams: &BTreeSet<String>) -> Answer;
}

/// Classifies `event` through `provider`: build the prompt, ask, and on a schema
/// failure ask once more (telling the model only the reason code and a fixed
/// hint, never its own text or any detail), then record everything.
pub(crate) async fn exchange(
    provider: &dyn Ask,
    event: &NormalizedEvent,
    teams: &TeamContext,
) -> ClassifyOutcome {
    let first = prompt::build_for(event, teams, provider.mode());
    let started = Instant::now();
    let mut answer = provider.ask(&first, &teams.known_teams).await;
    let mut prompt_sha256 = first.sha256();
    let reask_code = match &answer.result {
        Err(r) if provider.reask() && contract::is_schema_failure(&r.reason) => {
            Some(r.reason.clone())
        }
        _ => None,
    };
    if let Some(code) = reask_code {
        let second = prompt::reask(&first, &code, provider.mode());
        tracing::info!(reason = %code, "answer broke the contract; asking once more");
        let again = provider.ask(&second, &teams.known_teams).await;
        prompt_sha256 = second.sha256();
        let usage = match (answer.usage, again.usage) {
            (Some(a), Some(b)) => Some(Usage {
                input_tokens: a.input_tokens.saturating_add(b.input_tokens),
                output_tokens: a.output_tokens.saturating_add(b.output_tokens),
            }),
            (a, b) => a.or(b),
        };
        answer = Answer {
            raw_output: again.raw_output,
            result: again.result.map_err(|mut r| {
                r.detail = contract::truncate(
                    &format!("{AFTER_REASK}{}", r.detail),
                    contract::DETAIL_BYTES_MAX,
                )
                .to_owned();
                r
            }),
            usage,
        };
    }
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let owned = provider.secrets();
    let secrets: Vec<&str> = owned.iter().map(String::as_str).collect();
    ClassifyOutcome {
        info: provider.info(),
        raw_output: answer
            .raw_output
            .map(|r| scrub(contract::truncate(&r, RAW_OUTPUT_BYTES_MAX), &secrets)),
        result: answer.result.map_err(|mut r| {
            r.detail = scrub(&r.detail, &secrets);
            r
        }),
        latency_ms,
        usage: answer.usage,
        prompt_sha256: Some(prompt_sha256),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_replaces_every_occurrence_of_every_secret() {
        assert_eq!(
            scrub("a KEY b KEY c TOK", &["KEY", "TOK", ""]),
            "a [redacted] b [redacted] c [redacted]"
        );
        assert_eq!(scrub("abc", &[""]), "abc");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            backoff_base_ms: 100,
            backoff_max_ms: 350,
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff(0), Duration::from_millis(100));
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(2), Duration::from_millis(350));
        assert_eq!(p.backoff(40), Duration::from_millis(350));
    }

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(base_url("http://h:1/x/").unwrap(), "http://h:1/x");
        assert!(base_url("ftp://h").is_err());
        assert!(base_url("http://h/?q=1").is_err());
        assert!(base_url("not a url").is_err());
    }
}
