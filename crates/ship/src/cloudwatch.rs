//! CloudWatch Logs `PutLogEvents` (awsJson 1.1, SigV4 service `logs`).
//!
//! One event per record: `timestamp` = the record's time in milliseconds,
//! `message` = the record JSON. The API's batch rules are kept on this side so
//! that an over-limit batch is never sent: at most 10,000 events and
//! 1,048,576 bytes counted as message bytes + 26 per event ([`Sink::limits`]
//! already subtracts the 26 bytes per event), chronological order (a record's
//! timestamp is raised to its predecessor's if the clock stepped back; the
//! message keeps the true time), and at most 24 h per call (a longer batch is
//! sent as consecutive calls, in order; a failure after the first may resend
//! what was delivered, as with any in-doubt failure: dedupe on `seq`).
//!
//! Credentials are those Bedrock uses (`tg_classify::AwsCredentialSource`):
//! static keys from secret references, or STS web identity, refreshed before
//! expiry and once more when the service calls them expired.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tg_classify::{AwsCredentialSource, AwsCredentials, WebIdentityCredentials};
use tg_config::audit::{CLOUDWATCH_BATCH_BYTES_MAX, CLOUDWATCH_EVENT_OVERHEAD_BYTES};
use tg_config::{CloudWatchSinkConfig, SecretError, SecretRef, SecretSource};
use tg_model::Secret;

use crate::http::{self, Answer};
use crate::{BatchLimits, SendFuture, ShipError, ShipRecord, Sink, check_batch};

/// The SigV4 signing name of CloudWatch Logs.
pub const SIGNING_NAME: &str = "logs";
/// `X-Amz-Target` prefix of the Logs API version used.
const TARGET_PREFIX: &str = "Logs_20140328";
/// The longest time span of one `PutLogEvents` call, in milliseconds.
pub const SPAN_MS_MAX: i64 = 24 * 3600 * 1000;
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Error types worth retrying (throttling, service trouble).
const RETRY_TYPES: &[&str] = &[
    "ThrottlingException",
    "ServiceUnavailableException",
    "ServiceUnavailable",
    "InternalFailure",
    "RequestTimeout",
    "RequestTimeoutException",
    "LimitExceededException",
];

/// The size `PutLogEvents` counts for `batch`: UTF-8 message bytes + 26 per event.
pub fn cloudwatch_batch_bytes(batch: &[ShipRecord]) -> usize {
    batch
        .iter()
        .map(|r| r.json.len() + CLOUDWATCH_EVENT_OVERHEAD_BYTES)
        .sum()
}

enum Creds {
    Static(AwsCredentials),
    WebIdentity(Box<WebIdentityCredentials>),
}

pub struct CloudWatchSink {
    name: String,
    url: String,
    config: CloudWatchSinkConfig,
    creds: Creds,
    http: reqwest::Client,
}

impl std::fmt::Debug for CloudWatchSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudWatchSink")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("log_group_name", &self.config.log_group_name)
            .field("log_stream_name", &self.config.log_stream_name)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct InputLogEvent<'a> {
    timestamp: i64,
    message: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PutLogEvents<'a> {
    log_group_name: &'a str,
    log_stream_name: &'a str,
    log_events: Vec<InputLogEvent<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateLogStream<'a> {
    log_group_name: &'a str,
    log_stream_name: &'a str,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PutAnswer {
    #[serde(default)]
    rejected_log_events_info: Option<Rejected>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Rejected {
    #[serde(default)]
    too_new_log_event_start_index: Option<usize>,
    #[serde(default)]
    too_old_log_event_end_index: Option<usize>,
    #[serde(default)]
    expired_log_event_end_index: Option<usize>,
}

#[derive(Deserialize, Default)]
struct AwsError {
    #[serde(default, rename = "__type")]
    kind: Option<String>,
    #[serde(default, alias = "Message")]
    message: Option<String>,
}

/// What an error answer says, reduced to what the sink acts on.
enum Outcome {
    NotFound(ShipError),
    Expired(ShipError),
    Other(ShipError),
}

impl CloudWatchSink {
    pub fn new(
        config: &CloudWatchSinkConfig,
        credentials: AwsCredentialSource,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        let creds = match credentials {
            AwsCredentialSource::Static(c) => {
                if c.access_key_id.expose().is_empty() || c.secret_access_key.expose().is_empty() {
                    return Err("credentials: empty access key".into());
                }
                Creds::Static(c)
            }
            AwsCredentialSource::WebIdentity(w) => Creds::WebIdentity(Box::new(
                WebIdentityCredentials::new(w).map_err(|e| format!("credentials: {e}"))?,
            )),
        };
        let default = format!("https://logs.{}.amazonaws.com", config.region);
        let base = config
            .endpoint
            .as_deref()
            .unwrap_or(&default)
            .trim_end_matches('/');
        if reqwest::Url::parse(base).is_err() {
            return Err(format!("endpoint: {base:?} is not a URL"));
        }
        Ok(CloudWatchSink {
            name: config.name.clone(),
            url: format!("{base}/"),
            config: config.clone(),
            creds,
            http,
        })
    }

    /// Timestamps in ms, raised where needed so they never decrease.
    fn timestamps(batch: &[ShipRecord]) -> Vec<i64> {
        let mut last = i64::MIN;
        batch
            .iter()
            .map(|r| {
                let t = r.time.timestamp_millis().max(0).max(last);
                last = t;
                t
            })
            .collect()
    }

    /// Consecutive slices of at most [`SPAN_MS_MAX`] each.
    fn spans(stamps: &[i64]) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0usize;
        let mut first = stamps.first().copied().unwrap_or(0);
        for (i, t) in stamps.iter().enumerate() {
            if t.saturating_sub(first) > SPAN_MS_MAX {
                out.push(start..i);
                start = i;
                first = *t;
            }
        }
        if start < stamps.len() {
            out.push(start..stamps.len());
        }
        out
    }

    async fn current(&self, force: bool) -> Result<AwsCredentials, ShipError> {
        match &self.creds {
            Creds::Static(c) => Ok(c.clone()),
            Creds::WebIdentity(w) => w.get(force).await.map_err(|r| {
                ShipError::retry(format!("aws credentials: {}: {}", r.reason, r.detail))
            }),
        }
    }

    fn secrets(creds: &AwsCredentials) -> Vec<&Secret> {
        let mut v = vec![&creds.access_key_id, &creds.secret_access_key];
        if let Some(t) = &creds.session_token {
            v.push(t);
        }
        v
    }

    fn sign(
        &self,
        creds: &AwsCredentials,
        target: &str,
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(String, String)>, ShipError> {
        tg_classify::sigv4_headers(
            creds,
            &self.config.region,
            SIGNING_NAME,
            self.url.as_str(),
            &[("content-type", CONTENT_TYPE), ("x-amz-target", target)],
            body,
            time,
        )
        .map_err(|e| ShipError::refused(e, None))
    }

    /// One signed call of `operation`.
    async fn call(
        &self,
        operation: &str,
        body: Vec<u8>,
        creds: &AwsCredentials,
    ) -> Result<Answer, ShipError> {
        let target = format!("{TARGET_PREFIX}.{operation}");
        // Signed per call: a retry gets a fresh x-amz-date.
        let signed = self.sign(creds, &target, &body, SystemTime::now())?;
        let mut req = self
            .http
            .post(&self.url)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header("x-amz-target", &target)
            .body(body);
        for (k, v) in &signed {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.map_err(|e| http::transport(&e))?;
        http::read(resp).await
    }

    fn error(&self, operation: &str, answer: &Answer, creds: &AwsCredentials) -> Outcome {
        let parsed: AwsError = serde_json::from_slice(&answer.body).unwrap_or_default();
        let header_kind = answer
            .headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let raw = parsed.kind.or(header_kind).unwrap_or_default();
        // `com.amazonaws.logs#ThrottlingException` or `Type:http://...`.
        let kind = raw
            .rsplit('#')
            .next()
            .unwrap_or_default()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        let message = parsed.message.as_deref().map(http::truncate);
        let reason = http::scrub(
            &format!(
                "cloudwatch {operation} answered {} {}{}",
                answer.status,
                if kind.is_empty() {
                    "(no error type)"
                } else {
                    &kind
                },
                message.map(|m| format!(": {m}")).unwrap_or_default()
            ),
            &Self::secrets(creds),
        );
        if kind == "ResourceNotFoundException" {
            return Outcome::NotFound(ShipError::refused(reason, None));
        }
        if kind == "ExpiredTokenException" {
            return Outcome::Expired(ShipError::retry(reason));
        }
        if RETRY_TYPES.contains(&kind.as_str()) || answer.status >= 500 || answer.status == 429 {
            return Outcome::Other(ShipError::Retryable {
                reason,
                retry_after: http::retry_after(&answer.headers),
            });
        }
        Outcome::Other(ShipError::refused(reason, None))
    }

    /// `CreateLogStream`; an existing stream is fine (a concurrent creator won).
    async fn create_stream(&self, creds: &AwsCredentials) -> Result<(), ShipError> {
        let body = serde_json::to_vec(&CreateLogStream {
            log_group_name: &self.config.log_group_name,
            log_stream_name: &self.config.log_stream_name,
        })
        .map_err(|e| ShipError::refused(format!("encoding: {e}"), None))?;
        let answer = self.call("CreateLogStream", body, creds).await?;
        if answer.status == 200 {
            tracing::info!(sink = %self.name, stream = %self.config.log_stream_name, "created the cloudwatch log stream");
            return Ok(());
        }
        let already = serde_json::from_slice::<AwsError>(&answer.body)
            .ok()
            .and_then(|e| e.kind)
            .is_some_and(|k| k.ends_with("ResourceAlreadyExistsException"));
        if already {
            return Ok(());
        }
        match self.error("CreateLogStream", &answer, creds) {
            Outcome::NotFound(e) | Outcome::Expired(e) | Outcome::Other(e) => Err(e),
        }
    }

    /// One `PutLogEvents` of `chunk` (within every limit).
    async fn put(&self, chunk: &[ShipRecord], stamps: &[i64]) -> Result<(), ShipError> {
        let request = PutLogEvents {
            log_group_name: &self.config.log_group_name,
            log_stream_name: &self.config.log_stream_name,
            log_events: chunk
                .iter()
                .zip(stamps)
                .map(|(r, t)| InputLogEvent {
                    timestamp: *t,
                    message: &r.json,
                })
                .collect(),
        };
        let body = serde_json::to_vec(&request)
            .map_err(|e| ShipError::refused(format!("encoding: {e}"), None))?;
        let mut creds = self.current(false).await?;
        let mut refreshed = false;
        let mut created = false;
        loop {
            let answer = self.call("PutLogEvents", body.clone(), &creds).await?;
            if answer.status == 200 {
                return Self::accepted(&answer, chunk);
            }
            match self.error("PutLogEvents", &answer, &creds) {
                Outcome::Expired(e) => {
                    if refreshed || matches!(self.creds, Creds::Static(_)) {
                        return Err(e);
                    }
                    refreshed = true;
                    creds = self.current(true).await?;
                }
                Outcome::NotFound(e) => {
                    if !self.config.create_stream || created {
                        return Err(e);
                    }
                    created = true;
                    self.create_stream(&creds).await?;
                }
                Outcome::Other(e) => return Err(e),
            }
        }
    }

    /// A 200 may still reject events (too new, too old, expired): a refusal
    /// naming the first rejected record.
    fn accepted(answer: &Answer, chunk: &[ShipRecord]) -> Result<(), ShipError> {
        let parsed: PutAnswer = serde_json::from_slice(&answer.body).unwrap_or_default();
        let Some(r) = parsed.rejected_log_events_info else {
            return Ok(());
        };
        let mut first: Option<(usize, &str)> = None;
        let mut note = |i: usize, why: &'static str| {
            if first.is_none_or(|(f, _)| i < f) {
                first = Some((i, why));
            }
        };
        if r.too_old_log_event_end_index.is_some_and(|e| e > 0) {
            note(0, "older than 14 days or the retention period");
        }
        if r.expired_log_event_end_index.is_some_and(|e| e > 0) {
            note(0, "expired (older than the retention period)");
        }
        if let Some(s) = r.too_new_log_event_start_index {
            note(s, "more than 2 hours in the future");
        }
        match first {
            None => Ok(()),
            Some((i, why)) => Err(ShipError::refused(
                format!("cloudwatch rejected log events: {why}"),
                chunk.get(i).map(|c| c.seq),
            )),
        }
    }

    async fn deliver(&self, batch: &[ShipRecord]) -> Result<(), ShipError> {
        check_batch(&self.limits(), batch)?;
        if let Some(r) = batch.iter().find(|r| r.json.is_empty()) {
            return Err(ShipError::refused("empty record", Some(r.seq)));
        }
        let stamps = Self::timestamps(batch);
        for range in Self::spans(&stamps) {
            let (Some(chunk), Some(ts)) = (batch.get(range.clone()), stamps.get(range)) else {
                continue;
            };
            self.put(chunk, ts).await?;
        }
        Ok(())
    }
}

impl Sink for CloudWatchSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// `bytes_max` is 1,048,576 less 26 bytes for each of `records_max`
    /// events, so any batch within both limits fits `PutLogEvents`.
    fn limits(&self) -> BatchLimits {
        let records = self.config.batch_records_max.clamp(1, 10_000);
        BatchLimits {
            records_max: records,
            bytes_max: CLOUDWATCH_BATCH_BYTES_MAX
                .saturating_sub(records.saturating_mul(CLOUDWATCH_EVENT_OVERHEAD_BYTES)),
        }
    }

    fn send<'a>(&'a self, batch: &'a [ShipRecord]) -> SendFuture<'a> {
        Box::pin(self.deliver(batch))
    }
}

/// Names of the standard AWS web-identity variables (read through the secret source).
const AWS_WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
const AWS_ROLE_ARN: &str = "AWS_ROLE_ARN";
const AWS_ROLE_SESSION_NAME: &str = "AWS_ROLE_SESSION_NAME";

/// The sink's credentials, in the order the server resolves Bedrock's: an
/// explicit `web_identity` block; else the static keys; else, when the access
/// key is unset, `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`.
pub(crate) fn credentials(
    path: &str,
    c: &CloudWatchSinkConfig,
    secrets: &dyn SecretSource,
    tls: &tg_identity::TrustRoots,
) -> Result<AwsCredentialSource, String> {
    let r = &c.credentials;
    let cpath = format!("{path}.credentials");
    if let Some(w) = &r.web_identity {
        let mut wc = tg_classify::WebIdentityConfig::new(
            w.token_file.clone(),
            w.role_arn.clone(),
            &c.region,
        );
        wc.session_name = w.session_name.clone();
        if let Some(u) = &w.sts_base_url {
            wc.sts_base_url = u.clone();
        }
        wc.duration_secs = w.duration_secs;
        wc.timeout_ms = w.timeout_ms;
        wc.tls = tls.clone();
        return Ok(wc.into());
    }
    let optional = |name: &str| -> Result<Option<String>, String> {
        match secrets.read(&SecretRef::Env(name.into())) {
            Ok(v) => Ok(Some(v.expose().to_owned())),
            Err(SecretError::Missing(_)) => Ok(None),
            Err(e) => Err(format!("{cpath}: {name}: {e}")),
        }
    };
    let access_key_id = match secrets.read(&r.access_key_id) {
        Ok(v) => v,
        Err(SecretError::Missing(missing)) => {
            let (Some(file), Some(role)) = (
                optional(AWS_WEB_IDENTITY_TOKEN_FILE)?,
                optional(AWS_ROLE_ARN)?,
            ) else {
                return Err(format!(
                    "{cpath}.access_key_id: {missing} is not set, and neither are {AWS_WEB_IDENTITY_TOKEN_FILE} and {AWS_ROLE_ARN} (web identity)"
                ));
            };
            let mut wc = tg_classify::WebIdentityConfig::new(file.into(), role, &c.region);
            wc.tls = tls.clone();
            if let Some(name) = optional(AWS_ROLE_SESSION_NAME)? {
                wc.session_name = name;
            }
            return Ok(wc.into());
        }
        Err(e) => return Err(format!("{cpath}.access_key_id: {e}")),
    };
    let secret_access_key = secrets
        .read(&r.secret_access_key)
        .map_err(|e| format!("{cpath}.secret_access_key: {e}"))?;
    let session_token = match &r.session_token {
        Some(t) => match secrets.read(t) {
            Ok(v) => Some(v),
            Err(SecretError::Missing(_)) => None,
            Err(e) => return Err(format!("{cpath}.session_token: {e}")),
        },
        None => None,
    };
    Ok(AwsCredentials {
        access_key_id,
        secret_access_key,
        session_token,
    }
    .into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn rec(seq: u64, ms: i64) -> ShipRecord {
        ShipRecord {
            seq,
            time: chrono::DateTime::from_timestamp_millis(ms).unwrap(),
            json: "{}".into(),
            fields: Default::default(),
        }
    }

    #[test]
    fn timestamps_never_decrease_and_spans_stay_within_a_day() {
        let day = SPAN_MS_MAX;
        let batch = [
            rec(1, 1_000),
            rec(2, 900),
            rec(3, 1_000 + day),
            rec(4, 1_001 + day),
            rec(5, 5 * day),
        ];
        let ts = CloudWatchSink::timestamps(&batch);
        assert_eq!(ts[..3], [1_000, 1_000, 1_000 + day]);
        assert_eq!(CloudWatchSink::spans(&ts), vec![0..3, 3..4, 4..5]);
        assert!(CloudWatchSink::spans(&[]).is_empty());
        assert_eq!(cloudwatch_batch_bytes(&batch), 5 * (2 + 26));
    }
}
