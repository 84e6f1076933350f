//! Temporary AWS credentials from STS `AssumeRoleWithWebIdentity` (the query
//! API: an unsigned form POST of `Action=AssumeRoleWithWebIdentity&Version=2011-06-15`
//! with `RoleArn`, `RoleSessionName`, `WebIdentityToken` and `DurationSeconds`;
//! XML answer `AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult/Credentials`,
//! XML error `ErrorResponse/Error/{Code,Message}`).
//!
//! The credentials are cached and refreshed [`REFRESH_MARGIN_SECS`] before
//! they expire; the token file is re-read at every refresh (Kubernetes and CI
//! systems rotate it). The web-identity token and the credentials never reach
//! a log line, an error detail or a `Debug` string.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tg_model::Rejection;
use tokio::io::AsyncReadExt as _;

use crate::Secret;
use crate::bedrock::AwsCredentials;
use crate::contract::{reason, rejection};
use crate::transport::{self, BuildError, RetryPolicy};

/// Credentials are refreshed when they expire within this margin (5 minutes,
/// as the AWS SDKs do), so a signed request never carries a credential that
/// expires in flight.
pub const REFRESH_MARGIN_SECS: u64 = 300;
/// Largest web-identity token file read (OIDC tokens are a few KiB).
pub const TOKEN_FILE_BYTES_MAX: u64 = 16 * 1024;
/// Largest STS response body read.
pub const STS_RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// The STS query API version.
pub const STS_VERSION: &str = "2011-06-15";

/// Where and how to assume the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentityConfig {
    /// The OIDC token file (`AWS_WEB_IDENTITY_TOKEN_FILE`).
    pub token_file: PathBuf,
    /// `AWS_ROLE_ARN`.
    pub role_arn: String,
    /// `AWS_ROLE_SESSION_NAME`.
    pub session_name: String,
    /// `https://sts.{region}.amazonaws.com` unless overridden.
    pub sts_base_url: String,
    /// `DurationSeconds` asked of STS.
    pub duration_secs: u32,
    /// Timeout of one STS call.
    pub timeout_ms: u64,
    /// The certificate authorities the STS endpoint may chain to.
    pub tls: tg_identity::TrustRoots,
}

impl WebIdentityConfig {
    /// The regional STS endpoint and the usual defaults.
    pub fn new(token_file: PathBuf, role_arn: String, region: &str) -> Self {
        WebIdentityConfig {
            token_file,
            role_arn,
            session_name: "triage-gate".into(),
            sts_base_url: format!("https://sts.{region}.amazonaws.com"),
            duration_secs: 3600,
            timeout_ms: 10_000,
            tls: tg_identity::TrustRoots::bundled(),
        }
    }
}

#[derive(Clone)]
struct Cached {
    credentials: AwsCredentials,
    expires: SystemTime,
}

/// Fetches, caches and refreshes web-identity credentials.
pub struct WebIdentityCredentials {
    config: WebIdentityConfig,
    url: String,
    client: reqwest::Client,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl std::fmt::Debug for WebIdentityCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebIdentityCredentials")
            .field("role_arn", &self.config.role_arn)
            .field("token_file", &self.config.token_file)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

// The XML shapes, as quick-xml's serde maps them (the root element is the struct).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeResponse {
    assume_role_with_web_identity_result: AssumeResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeResult {
    credentials: XmlCredentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct XmlCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorResponse {
    error: XmlError,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct XmlError {
    code: String,
    #[serde(default)]
    message: Option<String>,
}

fn failure(detail: impl AsRef<str>) -> Rejection {
    rejection(reason::PROVIDER_CREDENTIALS, detail)
}

impl WebIdentityCredentials {
    pub fn new(config: WebIdentityConfig) -> Result<Self, BuildError> {
        if config.role_arn.trim().is_empty() {
            return Err(BuildError::EmptySecret("role_arn"));
        }
        if config.token_file.as_os_str().is_empty() {
            return Err(BuildError::EmptySecret("token_file"));
        }
        let base = transport::base_url(&config.sts_base_url)?;
        let client = RetryPolicy {
            timeout_ms: config.timeout_ms,
            ..RetryPolicy::default()
        }
        .client(&config.tls)?;
        Ok(WebIdentityCredentials {
            url: format!("{base}/"),
            config,
            client,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// Valid credentials: the cached ones unless they expire within the
    /// margin (or `force` says the service refused them), else fresh ones.
    pub async fn get(&self, force: bool) -> Result<AwsCredentials, Rejection> {
        // One refresh at a time: concurrent callers wait and reuse it.
        let mut cached = self.cached.lock().await;
        let margin = Duration::from_secs(REFRESH_MARGIN_SECS);
        if !force
            && let Some(c) = cached.as_ref()
            && SystemTime::now() + margin < c.expires
        {
            return Ok(c.credentials.clone());
        }
        let fresh = self.assume().await?;
        let out = fresh.credentials.clone();
        *cached = Some(fresh);
        Ok(out)
    }

    /// Forget the cached credentials (the next call fetches new ones).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    /// The cached credentials, if any and not being refreshed right now (for scrubbing).
    pub fn cached_now(&self) -> Option<AwsCredentials> {
        self.cached
            .try_lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.credentials.clone()))
    }

    /// Reads the token file (bounded), without ever quoting it.
    async fn token(&self) -> Result<Secret, Rejection> {
        let path = &self.config.token_file;
        let file = tokio::fs::File::open(path).await.map_err(|e| {
            failure(format!(
                "cannot open the web identity token file {}: {}",
                path.display(),
                e.kind()
            ))
        })?;
        let mut text = String::new();
        file.take(TOKEN_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .await
            .map_err(|e| {
                failure(format!(
                    "cannot read the web identity token file {}: {}",
                    path.display(),
                    e.kind()
                ))
            })?;
        if text.len() as u64 > TOKEN_FILE_BYTES_MAX {
            return Err(failure(format!(
                "the web identity token file {} is larger than {TOKEN_FILE_BYTES_MAX} bytes",
                path.display()
            )));
        }
        let token = text.trim();
        if token.is_empty() {
            return Err(failure(format!(
                "the web identity token file {} is empty",
                path.display()
            )));
        }
        Ok(Secret::new(token))
    }

    async fn assume(&self) -> Result<Cached, Rejection> {
        let token = self.token().await?;
        let duration = self.config.duration_secs.to_string();
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", STS_VERSION),
            ("RoleArn", self.config.role_arn.as_str()),
            ("RoleSessionName", self.config.session_name.as_str()),
            ("WebIdentityToken", token.expose()),
            ("DurationSeconds", duration.as_str()),
        ];
        let scrub = |s: &str| transport::scrub(s, &[token.expose()]);
        let response = self
            .client
            .post(&self.url)
            .header("accept", "application/xml")
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                let kind = if e.is_timeout() {
                    "timed out"
                } else {
                    "failed"
                };
                failure(scrub(&format!(
                    "sts call {kind}: {}",
                    transport::error_chain(&e.without_url())
                )))
            })?;
        let status = response.status();
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failure(scrub(&format!("sts body: {}", e.without_url()))))?
        {
            if body.len() + chunk.len() > STS_RESPONSE_BYTES_MAX {
                return Err(failure(format!(
                    "sts response larger than {STS_RESPONSE_BYTES_MAX} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            let why = match quick_xml::de::from_str::<ErrorResponse>(&text) {
                Ok(e) => format!("{}: {}", e.error.code, e.error.message.unwrap_or_default()),
                Err(_) => "no ErrorResponse in the body".into(),
            };
            return Err(failure(scrub(&format!(
                "sts AssumeRoleWithWebIdentity answered http {}: {}",
                status.as_u16(),
                contract_truncate(&why)
            ))));
        }
        let parsed: AssumeResponse = quick_xml::de::from_str(&text).map_err(|e| {
            failure(format!(
                "sts answer is not an AssumeRoleWithWebIdentityResponse: {e}"
            ))
        })?;
        let c = parsed.assume_role_with_web_identity_result.credentials;
        let expires = chrono::DateTime::parse_from_rfc3339(c.expiration.trim())
            .map_err(|e| failure(format!("sts Expiration is not a timestamp: {e}")))?;
        let expires: SystemTime = expires.with_timezone(&chrono::Utc).into();
        if c.access_key_id.is_empty()
            || c.secret_access_key.is_empty()
            || c.session_token.is_empty()
        {
            return Err(failure("sts answered empty credentials"));
        }
        tracing::info!(
            role_arn = %self.config.role_arn,
            access_key_id = %c.access_key_id,
            expires = %chrono::DateTime::<chrono::Utc>::from(expires).to_rfc3339(),
            "assumed role with web identity"
        );
        Ok(Cached {
            credentials: AwsCredentials {
                access_key_id: Secret::new(c.access_key_id.trim()),
                secret_access_key: Secret::new(c.secret_access_key.trim()),
                session_token: Some(Secret::new(c.session_token.trim())),
            },
            expires,
        })
    }
}

fn contract_truncate(s: &str) -> &str {
    crate::contract::truncate(s, 300)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_response_and_error_shapes_parse() {
        let ok = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ops:triage</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/triage/triage-gate</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:triage-gate</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2026-11-25T21:00:00Z</Expiration>
      <AccessKeyId>ASgeIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <Provider>www.amazon.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;
        let r: AssumeResponse = quick_xml::de::from_str(ok).unwrap();
        let c = r.assume_role_with_web_identity_result.credentials;
        assert_eq!(c.access_key_id, "ASgeIAIOSFODNN7EXAMPLE");
        assert_eq!(c.expiration, "2026-11-25T21:00:00Z");
        let err = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Couldn't retrieve verification key from your identity provider</Message></Error>
  <RequestId>4bc4aa1e-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>"#;
        let e: ErrorResponse = quick_xml::de::from_str(err).unwrap();
        assert_eq!(e.error.code, "InvalidIdentityToken");
        assert!(quick_xml::de::from_str::<AssumeResponse>(err).is_err());
    }
}
