//! AWS SNS over HTTP(S) carrying a CloudWatch alarm: the envelope, the
//! exact string to sign, the certificate-URL allow-list and the signature
//! check. Pure: the server fetches the certificate and passes its PEM in.
//!
//! Order of checks in the server (`POST /v1/events/cloudwatch-sns`), each a
//! 403 before anything is accepted: signature fields present, `Timestamp`
//! inside the replay window ([`check_timestamp`]), `SigningCertURL` allowed
//! ([`CertUrlPolicy::check_cert_url`]), certificate valid now
//! ([`SigningCert::from_pem`]), signature valid ([`verify`]). Only then is a
//! `Notification` normalized by [`normalize`], which does not verify (it is
//! also the golden-test entry point).
//!
//! Envelope fields: `Type`, `MessageId`, `TopicArn`, `Subject` (optional),
//! `Message`, `Timestamp`, `SignatureVersion` (`1` = SHA1withRSA, `2` =
//! SHA256withRSA), `Signature` (base64), `SigningCertURL`, `UnsubscribeURL`;
//! confirmations add `Token` and `SubscribeURL`. Unknown fields are ignored.
//! The `Message` of a notification must be a CloudWatch alarm (see
//! [`crate::cloudwatch`] for the mapping); `sns_message_id` and `sns_topic_arn`
//! are added to the correlation IDs.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use regex::Regex;
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey as _;
use rsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts as _;
use serde::Deserialize;
use serde_json::Value;
use tg_model::{NormalizedEvent, Source};
use x509_cert::Certificate;
use x509_cert::der::{DecodePem as _, Encode as _};

use crate::cloudwatch::{Alarm, draft};
use crate::common::{from_value, parse_body};
use crate::{NormalizeContext, NormalizeError};

/// The AWS host pattern of signing-certificate and subscribe URLs (the AWS
/// JavaScript validator's default).
pub const DEFAULT_CERT_HOST_PATTERN: &str = r"^sns\.[a-zA-Z0-9-]{3,}\.amazonaws\.com(\.cn)?$";
/// Bytes of a signing-certificate PEM accepted (AWS's are about 2 KiB).
pub const CERT_PEM_BYTES_MAX: usize = 16 * 1024;
/// Characters of a base64 `Signature` accepted (RSA-4096 needs 684).
pub const SIGNATURE_B64_MAX: usize = 1024;
/// Bytes of a `SigningCertURL` or `SubscribeURL`.
pub const URL_BYTES_MAX: usize = 2048;
/// Smallest RSA modulus accepted, in bits.
pub const RSA_BITS_MIN: usize = 2048;

/// `x-amz-sns-message-type`, and the envelope's `Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Notification => "Notification",
            MessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
            MessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }

    pub fn parse(s: &str) -> Option<MessageType> {
        [
            MessageType::Notification,
            MessageType::SubscriptionConfirmation,
            MessageType::UnsubscribeConfirmation,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// A parsed SNS envelope. `Debug` shows only the type, message ID and topic:
/// the message may hold anything and the token confirms subscriptions.
#[derive(Clone)]
pub struct Envelope {
    pub kind: MessageType,
    pub message_id: String,
    pub topic_arn: String,
    pub subject: Option<String>,
    pub message: String,
    pub timestamp: String,
    pub signature_version: Option<String>,
    pub signature: Option<String>,
    pub signing_cert_url: Option<String>,
    pub unsubscribe_url: Option<String>,
    pub token: Option<String>,
    pub subscribe_url: Option<String>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("kind", &self.kind)
            .field("message_id", &self.message_id)
            .field("topic_arn", &self.topic_arn)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "MessageId")]
    message_id: String,
    #[serde(rename = "TopicArn")]
    topic_arn: String,
    #[serde(rename = "Subject")]
    subject: Option<String>,
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "Timestamp")]
    timestamp: String,
    #[serde(rename = "SignatureVersion")]
    signature_version: Option<String>,
    #[serde(rename = "Signature")]
    signature: Option<String>,
    #[serde(rename = "SigningCertURL")]
    signing_cert_url: Option<String>,
    #[serde(rename = "UnsubscribeURL")]
    unsubscribe_url: Option<String>,
    #[serde(rename = "Token")]
    token: Option<String>,
    #[serde(rename = "SubscribeURL")]
    subscribe_url: Option<String>,
}

impl Envelope {
    /// Parses an envelope under the body, depth and string limits. Missing
    /// signature fields are kept as `None` (the signature check refuses them
    /// with 403, not 400).
    pub fn parse(body: &[u8], ctx: &NormalizeContext) -> Result<Envelope, NormalizeError> {
        Self::parse_inner(body, ctx).map_err(|e| e.redacted(&ctx.redactor))
    }

    fn parse_inner(body: &[u8], ctx: &NormalizeContext) -> Result<Envelope, NormalizeError> {
        let value = parse_body(body, &ctx.limits)?;
        if !value.is_object() {
            return Err(NormalizeError::malformed("", "body is not a json object"));
        }
        let w: Wire = from_value(value)?;
        let kind = MessageType::parse(&w.kind).ok_or_else(|| {
            NormalizeError::malformed(
                "Type",
                format!(
                    "{:?} is not Notification, SubscriptionConfirmation or UnsubscribeConfirmation",
                    w.kind
                ),
            )
        })?;
        Ok(Envelope {
            kind,
            message_id: w.message_id,
            topic_arn: w.topic_arn,
            subject: w.subject,
            message: w.message,
            timestamp: w.timestamp,
            signature_version: w.signature_version,
            signature: w.signature,
            signing_cert_url: w.signing_cert_url,
            unsubscribe_url: w.unsubscribe_url,
            token: w.token,
            subscribe_url: w.subscribe_url,
        })
    }

    /// The exact bytes SNS signed: `name\nvalue\n` for each field, in byte
    /// order of the names, with the values as parsed (unescaped).
    /// Notification: `Message`, `MessageId`, `Subject` (only if present),
    /// `Timestamp`, `TopicArn`, `Type`. Confirmations: `Message`, `MessageId`,
    /// `SubscribeURL`, `Timestamp`, `Token`, `TopicArn`, `Type`.
    pub fn string_to_sign(&self) -> Result<String, SnsError> {
        let mut fields: Vec<(&str, &str)> =
            vec![("Message", &self.message), ("MessageId", &self.message_id)];
        match self.kind {
            MessageType::Notification => {
                if let Some(s) = &self.subject {
                    fields.push(("Subject", s));
                }
                fields.push(("Timestamp", &self.timestamp));
            }
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                let url = self
                    .subscribe_url
                    .as_deref()
                    .ok_or(SnsError::MissingField("SubscribeURL"))?;
                let token = self
                    .token
                    .as_deref()
                    .ok_or(SnsError::MissingField("Token"))?;
                fields.push(("SubscribeURL", url));
                fields.push(("Timestamp", &self.timestamp));
                fields.push(("Token", token));
            }
        }
        fields.push(("TopicArn", &self.topic_arn));
        fields.push(("Type", self.kind.as_str()));
        let mut out = String::new();
        for (name, value) in fields {
            out.push_str(name);
            out.push('\n');
            out.push_str(value);
            out.push('\n');
        }
        Ok(out)
    }
}

/// Why an SNS message was refused (answered 403). Messages never echo the
/// token, the signature or the message body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnsError {
    #[error("the message is not signed: {0} is missing")]
    Unsigned(&'static str),
    #[error("the message lacks {0}")]
    MissingField(&'static str),
    /// The value as [`echo`] shows it.
    #[error("SignatureVersion {0} is not supported (expected \"1\" or \"2\")")]
    UnsupportedVersion(String),
    #[error("the signing certificate URL is not allowed: {0}")]
    CertUrl(String),
    #[error("the topic is not one of the configured topic_arns")]
    TopicNotAllowed,
    #[error("the subscribe URL is not allowed: {0}")]
    SubscribeUrl(String),
    #[error("the signing certificate is unusable: {0}")]
    Certificate(String),
    #[error("the signature is not valid base64 of a sensible length")]
    SignatureEncoding,
    #[error("the signature does not match the message")]
    SignatureMismatch,
    /// The value as [`echo`] shows it.
    #[error("Timestamp {0} is not an rfc 3339 time")]
    BadTimestamp(String),
    #[error("Timestamp is {age_secs}s away from now, outside the replay window of {window_secs}s")]
    Stale { age_secs: i64, window_secs: i64 },
}

/// Where signing certificates and subscribe URLs may live.
///
/// The host pattern is matched against the whole host (it is anchored here
/// whatever the configuration says). `https` on the default port only;
/// no user info, no fragment. `allow_insecure_loopback` additionally admits
/// `http` (any port) to a loopback IP literal, still only if the pattern
/// matches it: for tests against the sandbox, never on by default.
#[derive(Debug, Clone)]
pub struct CertUrlPolicy {
    host: Regex,
    allow_insecure_loopback: bool,
}

impl Default for CertUrlPolicy {
    fn default() -> Self {
        #[expect(clippy::expect_used, reason = "constant pattern, tested below")]
        CertUrlPolicy::new(DEFAULT_CERT_HOST_PATTERN, false).expect("default pattern compiles")
    }
}

impl CertUrlPolicy {
    pub fn new(host_pattern: &str, allow_insecure_loopback: bool) -> Result<Self, regex::Error> {
        let host = Regex::new(&format!("^(?:{host_pattern})$"))?;
        Ok(CertUrlPolicy {
            host,
            allow_insecure_loopback,
        })
    }

    fn check(&self, raw: &str) -> Result<url::Url, String> {
        if raw.len() > URL_BYTES_MAX {
            return Err(format!("longer than {URL_BYTES_MAX} bytes"));
        }
        let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("user info is not allowed".into());
        }
        if url.fragment().is_some() {
            return Err("a fragment is not allowed".into());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => {
                if url.scheme() != "https" {
                    return Err(format!("scheme {:?} is not https", url.scheme()));
                }
                if url.port().is_some() {
                    return Err("only the default https port is allowed".into());
                }
                d.to_owned()
            }
            Some(url::Host::Ipv4(ip)) if self.allow_insecure_loopback && ip.is_loopback() => {
                ip.to_string()
            }
            Some(url::Host::Ipv6(ip)) if self.allow_insecure_loopback && ip.is_loopback() => {
                format!("[{ip}]")
            }
            Some(_) => return Err("an IP address is not an allowed host".into()),
            None => return Err("no host".into()),
        };
        if !matches!(url.scheme(), "https" | "http") {
            return Err(format!("scheme {:?} is not https", url.scheme()));
        }
        if !self.host.is_match(&host) {
            return Err(format!("host {host:?} is not on the allow-list"));
        }
        Ok(url)
    }

    /// The parsed certificate URL, if allowed: also its path must end in
    /// `.pem` and it must have no query. Fetch exactly the returned URL.
    pub fn check_cert_url(&self, raw: &str) -> Result<url::Url, SnsError> {
        let url = self.check(raw).map_err(SnsError::CertUrl)?;
        if url.query().is_some() {
            return Err(SnsError::CertUrl("a query is not allowed".into()));
        }
        if !url.path().ends_with(".pem") {
            return Err(SnsError::CertUrl("the path does not end in .pem".into()));
        }
        Ok(url)
    }

    /// The parsed subscribe URL, if allowed: an allowed host, and a query
    /// `Action=ConfirmSubscription` whose `TopicArn` (if given) is `topic_arn`.
    pub fn check_subscribe_url(&self, raw: &str, topic_arn: &str) -> Result<url::Url, SnsError> {
        let url = self.check(raw).map_err(SnsError::SubscribeUrl)?;
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        if !pairs
            .iter()
            .any(|(k, v)| k == "Action" && v == "ConfirmSubscription")
        {
            return Err(SnsError::SubscribeUrl(
                "the query is not Action=ConfirmSubscription".into(),
            ));
        }
        if pairs.iter().any(|(k, v)| k == "TopicArn" && v != topic_arn) {
            return Err(SnsError::SubscribeUrl(
                "its TopicArn differs from the message's".into(),
            ));
        }
        Ok(url)
    }
}

/// Whether `url` is an allowed signing-certificate URL under `policy`.
pub fn cert_url_allowed(url: &str, policy: &CertUrlPolicy) -> bool {
    policy.check_cert_url(url).is_ok()
}

/// An RSA public key taken from a signing certificate valid at the time given.
#[derive(Debug, Clone)]
pub struct SigningCert {
    key: RsaPublicKey,
    not_after: DateTime<Utc>,
}

impl SigningCert {
    /// Parses a PEM certificate; refuses one over [`CERT_PEM_BYTES_MAX`], not
    /// valid at `now`, or without an RSA key of at least [`RSA_BITS_MIN`] bits.
    pub fn from_pem(pem: &[u8], now: DateTime<Utc>) -> Result<SigningCert, SnsError> {
        let bad = |m: String| SnsError::Certificate(m);
        if pem.len() > CERT_PEM_BYTES_MAX {
            return Err(bad(format!(
                "{} bytes exceed {CERT_PEM_BYTES_MAX}",
                pem.len()
            )));
        }
        let cert =
            Certificate::from_pem(pem).map_err(|e| bad(format!("not a PEM certificate ({e})")))?;
        let validity = &cert.tbs_certificate.validity;
        let to_time = |t: &x509_cert::time::Time| {
            let d = t.to_unix_duration();
            DateTime::<Utc>::from_timestamp(i64::try_from(d.as_secs()).unwrap_or(i64::MAX), 0)
        };
        let (Some(not_before), Some(not_after)) =
            (to_time(&validity.not_before), to_time(&validity.not_after))
        else {
            return Err(bad("validity out of range".into()));
        };
        if now < not_before || now > not_after {
            return Err(bad(format!(
                "not valid now (valid {} to {})",
                not_before.to_rfc3339(),
                not_after.to_rfc3339()
            )));
        }
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| bad(format!("unreadable public key ({e})")))?;
        let key = RsaPublicKey::from_public_key_der(&spki)
            .map_err(|e| bad(format!("not an RSA public key ({e})")))?;
        if key.size() * 8 < RSA_BITS_MIN {
            return Err(bad(format!(
                "RSA key of {} bits is under {RSA_BITS_MIN}",
                key.size() * 8
            )));
        }
        Ok(SigningCert { key, not_after })
    }

    /// When the certificate stops being valid (cache entries end there too).
    pub fn not_after(&self) -> DateTime<Utc> {
        self.not_after
    }
}

/// Verifies the envelope's signature with `cert`: RSA PKCS#1 v1.5 over SHA1
/// (`SignatureVersion` 1) or SHA256 (2) of [`Envelope::string_to_sign`].
pub fn verify(env: &Envelope, cert: &SigningCert) -> Result<(), SnsError> {
    let version = env
        .signature_version
        .as_deref()
        .ok_or(SnsError::Unsigned("SignatureVersion"))?;
    let sig_b64 = env
        .signature
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(SnsError::Unsigned("Signature"))?;
    if sig_b64.len() > SIGNATURE_B64_MAX {
        return Err(SnsError::SignatureEncoding);
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sig_b64)
        .map_err(|_| SnsError::SignatureEncoding)?;
    let sig = Signature::try_from(raw.as_slice()).map_err(|_| SnsError::SignatureEncoding)?;
    let text = env.string_to_sign()?;
    let ok = match version {
        "1" => VerifyingKey::<sha1::Sha1>::new(cert.key.clone())
            .verify(text.as_bytes(), &sig)
            .is_ok(),
        "2" => VerifyingKey::<sha2::Sha256>::new(cert.key.clone())
            .verify(text.as_bytes(), &sig)
            .is_ok(),
        other => {
            return Err(SnsError::UnsupportedVersion(echo(other, 16)));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(SnsError::SignatureMismatch)
    }
}

/// How an error shows a sender's `Timestamp` or `SignatureVersion`: quoted
/// (at most `max_chars`) only if it is made of what a time or a version is
/// made of (digits, `-:.+TZ`, space); else only its length. A secret pasted
/// into the field is never repeated, not even cut (a cut secret no longer
/// matches the redactor's patterns).
pub fn echo(value: &str, max_chars: usize) -> String {
    if value
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '-' | ':' | '.' | '+' | 'T' | 'Z' | ' '))
    {
        format!("{:?}", value.chars().take(max_chars).collect::<String>())
    } else {
        format!("of {} bytes", value.len())
    }
}

/// The envelope's `Timestamp`, if within `window_secs` of `now` (either way).
pub fn check_timestamp(
    env: &Envelope,
    now: DateTime<Utc>,
    window_secs: i64,
) -> Result<DateTime<Utc>, SnsError> {
    let t = DateTime::parse_from_rfc3339(env.timestamp.trim())
        .map_err(|_| SnsError::BadTimestamp(echo(&env.timestamp, 40)))?
        .with_timezone(&Utc);
    let age = (now - t).num_seconds();
    if age.abs() > window_secs {
        return Err(SnsError::Stale {
            age_secs: age,
            window_secs,
        });
    }
    Ok(t)
}

/// The CloudWatch alarm inside `Message`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AlarmMessage {
    alarm_name: String,
    alarm_description: Option<String>,
    #[serde(rename = "AWSAccountId")]
    aws_account_id: Option<String>,
    new_state_value: String,
    new_state_reason: Option<String>,
    state_change_time: Option<String>,
    old_state_value: Option<String>,
    alarm_arn: Option<String>,
    trigger: Option<Trigger>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Trigger {
    metric_name: Option<String>,
    namespace: Option<String>,
    dimensions: Option<Vec<Dimension>>,
    comparison_operator: Option<String>,
    threshold: Option<Value>,
    metrics: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct Dimension {
    name: String,
    value: String,
}

/// Normalizes a `Notification` whose `Message` is a CloudWatch alarm into
/// one event. Does not verify the signature (the server does, first).
pub fn normalize(
    body: &[u8],
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    normalize_inner(body, ctx, now).map_err(|e| e.redacted(&ctx.redactor))
}

fn normalize_inner(
    body: &[u8],
    ctx: &NormalizeContext,
    now: DateTime<Utc>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let env = Envelope::parse_inner(body, ctx)?;
    if env.kind != MessageType::Notification {
        return Err(NormalizeError::malformed(
            "Type",
            format!("a {} carries no alert", env.kind.as_str()),
        ));
    }
    let prefix = |e: NormalizeError| {
        let field = if e.field.is_empty() {
            "Message".to_owned()
        } else {
            format!("Message.{}", e.field)
        };
        NormalizeError::new(e.kind, field, e.message)
    };
    let inner = parse_body(env.message.as_bytes(), &ctx.limits).map_err(|e| {
        prefix(NormalizeError::malformed(
            e.field,
            format!("Message is not a CloudWatch alarm: {}", e.message),
        ))
    })?;
    if !inner.is_object() {
        return Err(NormalizeError::malformed(
            "Message",
            "Message is not a CloudWatch alarm (not a json object)",
        ));
    }
    let m: AlarmMessage = from_value(inner).map_err(prefix)?;
    let trigger = m.trigger;
    let (mut namespace, mut metric, mut dimensions, mut condition) = (None, None, Vec::new(), None);
    if let Some(t) = trigger {
        namespace = t.namespace;
        metric = t.metric_name;
        dimensions = t
            .dimensions
            .unwrap_or_default()
            .into_iter()
            .map(|d| (d.name, d.value))
            .collect();
        condition = match (t.comparison_operator, t.threshold) {
            (Some(op), Some(th)) => Some(format!("{op} {th}")),
            (Some(op), None) => Some(op),
            _ => None,
        };
        // Metric-math alarms: `Metrics[].MetricStat.Metric` instead of the fields above.
        if metric.is_none()
            && let Some(first) = t.metrics.as_ref().and_then(|ms| {
                ms.iter()
                    .find_map(|m| m.pointer("/MetricStat/Metric").and_then(Value::as_object))
            })
        {
            namespace = first
                .get("Namespace")
                .and_then(Value::as_str)
                .map(str::to_owned);
            metric = first
                .get("MetricName")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(Value::Array(ds)) = first.get("Dimensions") {
                dimensions = ds
                    .iter()
                    .filter_map(|d| {
                        let name = d.get("name").or_else(|| d.get("Name"))?.as_str()?;
                        let value = d.get("value").or_else(|| d.get("Value"))?.as_str()?;
                        Some((name.to_owned(), value.to_owned()))
                    })
                    .collect();
            }
        }
    }
    let alarm = Alarm {
        name: m.alarm_name,
        description: m.alarm_description,
        account: m.aws_account_id,
        state: m.new_state_value,
        old_state: m.old_state_value,
        reason: m.new_state_reason,
        arn: m.alarm_arn,
        // `Region` is a display name ("US East (N. Virginia)"); the code comes from the ARN.
        region: None,
        changed_at: m.state_change_time,
        namespace,
        metric,
        dimensions,
        tags: BTreeMap::new(),
        condition,
    };
    let carrier_time = DateTime::parse_from_rfc3339(env.timestamp.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc));
    let mut d = draft(alarm, Source::CloudwatchSns, ctx, carrier_time, now).map_err(prefix)?;
    d.correlation_ids
        .insert("sns_message_id".to_owned(), env.message_id.clone());
    d.correlation_ids
        .insert("sns_topic_arn".to_owned(), env.topic_arn.clone());
    Ok(vec![d.finish(ctx, now)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CertUrlPolicy {
        CertUrlPolicy::default()
    }

    #[test]
    fn aws_cert_urls_are_allowed() {
        for ok in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "https://SNS.eu-west-1.amazonaws.com/a.pem",
        ] {
            assert!(cert_url_allowed(ok, &policy()), "{ok}");
        }
    }

    #[test]
    fn tricks_are_refused() {
        for bad in [
            "http://sns.us-east-1.amazonaws.com/a.pem",
            "https://sns.us-east-1.amazonaws.com.evil.com/a.pem",
            "https://evil.com/sns.us-east-1.amazonaws.com/a.pem",
            "https://sns.us-east-1.amazonaws.com@evil.com/a.pem",
            "https://user:pw@sns.us-east-1.amazonaws.com/a.pem",
            "https://evil.com\\@sns.us-east-1.amazonaws.com/a.pem",
            "https://evil.com#@sns.us-east-1.amazonaws.com/a.pem",
            "https://sns.us-east-1.amazonaws.com/a.pem?x=1",
            "https://sns.us-east-1.amazonaws.com/a.pem#x",
            "https://sns.us-east-1.amazonaws.com:8443/a.pem",
            "https://sns.us-east-1.amazonaws.com/a.pem.txt",
            "https://sns.us-east-1.amazonaws.com/",
            "https://sns.x.amazonaws.com/a.pem",
            "https://snsxus-east-1.amazonaws.com/a.pem",
            "https://127.0.0.1/a.pem",
            "http://127.0.0.1:9/a.pem",
            "file:///etc/a.pem",
            "ftp://sns.us-east-1.amazonaws.com/a.pem",
            "",
            "not a url",
        ] {
            assert!(!cert_url_allowed(bad, &policy()), "{bad}");
        }
    }

    #[test]
    fn loopback_needs_the_flag_and_the_pattern() {
        let url = "http://127.0.0.1:4567/sns/cert.pem";
        let pattern_only = CertUrlPolicy::new(r"127\.0\.0\.1", false).unwrap();
        assert!(!cert_url_allowed(url, &pattern_only));
        let flag_only = CertUrlPolicy::new(DEFAULT_CERT_HOST_PATTERN, true).unwrap();
        assert!(!cert_url_allowed(url, &flag_only));
        let both = CertUrlPolicy::new(r"127\.0\.0\.1", true).unwrap();
        assert!(cert_url_allowed(url, &both));
        // Still no other IPs, and no names that merely resolve to loopback.
        assert!(!cert_url_allowed("http://10.0.0.1:4567/a.pem", &both));
        assert!(!cert_url_allowed("http://localhost:4567/a.pem", &both));
        // A pattern is anchored whatever it says.
        let loose = CertUrlPolicy::new(r"amazonaws\.com", false).unwrap();
        assert!(!cert_url_allowed(
            "https://x.amazonaws.com.evil.io/a.pem",
            &loose
        ));
    }

    #[test]
    fn subscribe_urls() {
        let p = policy();
        let arn = "arn:aws:sns:us-east-1:123456789012:alarms";
        let ok = format!(
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={arn}&Token=abc"
        );
        assert!(p.check_subscribe_url(&ok, arn).is_ok());
        assert!(
            p.check_subscribe_url(&ok, "arn:aws:sns:us-east-1:1:other")
                .is_err()
        );
        assert!(
            p.check_subscribe_url(
                "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
                arn
            )
            .is_err()
        );
        assert!(
            p.check_subscribe_url("https://evil.com/?Action=ConfirmSubscription", arn)
                .is_err()
        );
    }

    fn envelope(kind: MessageType, subject: Option<&str>) -> Envelope {
        Envelope {
            kind,
            message_id: "m-1".into(),
            topic_arn: "arn:aws:sns:us-east-1:1:t".into(),
            subject: subject.map(str::to_owned),
            message: "line1\nline2".into(),
            timestamp: "2026-11-24T03:12:11.000Z".into(),
            signature_version: Some("2".into()),
            signature: Some("AAAA".into()),
            signing_cert_url: None,
            unsubscribe_url: None,
            token: Some("tok".into()),
            subscribe_url: Some(
                "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription".into(),
            ),
        }
    }

    #[test]
    fn strings_to_sign() {
        assert_eq!(
            envelope(MessageType::Notification, Some("S"))
                .string_to_sign()
                .unwrap(),
            "Message\nline1\nline2\nMessageId\nm-1\nSubject\nS\nTimestamp\n2026-11-24T03:12:11.000Z\nTopicArn\narn:aws:sns:us-east-1:1:t\nType\nNotification\n"
        );
        assert_eq!(
            envelope(MessageType::Notification, None)
                .string_to_sign()
                .unwrap(),
            "Message\nline1\nline2\nMessageId\nm-1\nTimestamp\n2026-11-24T03:12:11.000Z\nTopicArn\narn:aws:sns:us-east-1:1:t\nType\nNotification\n"
        );
        assert_eq!(
            envelope(MessageType::SubscriptionConfirmation, Some("ignored"))
                .string_to_sign()
                .unwrap(),
            "Message\nline1\nline2\nMessageId\nm-1\nSubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription\nTimestamp\n2026-11-24T03:12:11.000Z\nToken\ntok\nTopicArn\narn:aws:sns:us-east-1:1:t\nType\nSubscriptionConfirmation\n"
        );
        let mut e = envelope(MessageType::UnsubscribeConfirmation, None);
        e.token = None;
        assert_eq!(e.string_to_sign(), Err(SnsError::MissingField("Token")));
    }

    #[test]
    fn errors_never_echo_a_secret_pasted_into_timestamp_or_version() {
        let mut e = envelope(MessageType::Notification, None);
        e.timestamp = "2026-11-24 leakprobe@example.com".into();
        let now = DateTime::parse_from_rfc3339("2026-11-24T03:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let text = check_timestamp(&e, now, 3600).unwrap_err().to_string();
        assert!(!text.contains("leakprobe"), "{text}");
        assert!(text.contains("of 32 bytes"), "{text}");
        e.timestamp = "2026-11-24T03:12:11".into();
        let text = check_timestamp(&e, now, 3600).unwrap_err().to_string();
        assert!(text.contains("\"2026-11-24T03:12:11\""), "{text}");
        assert_eq!(echo("2 AKIAZ7QW4XK2N3LP5RTV", 16), "of 22 bytes");
        assert_eq!(echo("3", 16), "\"3\"");
    }

    #[test]
    fn replay_window() {
        let e = envelope(MessageType::Notification, None);
        let t = DateTime::parse_from_rfc3339("2026-11-24T03:12:11Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(check_timestamp(&e, t + chrono::Duration::seconds(3600), 3600).is_ok());
        assert!(matches!(
            check_timestamp(&e, t + chrono::Duration::seconds(3601), 3600),
            Err(SnsError::Stale { age_secs: 3601, .. })
        ));
        assert!(check_timestamp(&e, t - chrono::Duration::seconds(3601), 3600).is_err());
    }

    #[test]
    fn garbage_certificates_and_signatures_are_refused() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T03:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(matches!(
            SigningCert::from_pem(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                now
            ),
            Err(SnsError::Certificate(_))
        ));
        assert!(matches!(
            SigningCert::from_pem(&vec![b'a'; CERT_PEM_BYTES_MAX + 1], now),
            Err(SnsError::Certificate(_))
        ));
    }
}
