//! An SNS publisher emulator: a self-signed signing certificate served at
//! `GET /sns/cert.pem`, envelopes signed like SNS signs them (SignatureVersion
//! 1 = SHA1withRSA, 2 = SHA256withRSA) through [`crate::SandboxState::sns_sign`],
//! and `GET /sns/confirm` recording subscription confirmations (answering
//! SNS's `ConfirmSubscriptionResponse` XML).
//!
//! The RSA-2048 key and certificate are made once per process, on first use
//! (key generation costs about a second in a debug build; every sandbox of a
//! test binary shares them). The certificate is valid 2000-01-01 to
//! 2099-12-31 so tests with a fixed clock accept it. The string to sign is
//! built here independently of the gate's verifier, from the SNS
//! documentation, so a test checks one against the other.

use std::sync::{Arc, LazyLock, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use serde_json::Value;
use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
use x509_cert::der::EncodePem as _;
use x509_cert::der::asn1::GeneralizedTime;
use x509_cert::der::pem::LineEnding;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

use crate::SandboxState;

/// Bits of the emulator's RSA key (as AWS's signing certificates).
pub const RSA_BITS: usize = 2048;
/// Confirmations kept in memory; older ones are dropped.
pub const CONFIRMATIONS_MAX: usize = 1000;

struct Keys {
    key: RsaPrivateKey,
    pem: String,
}

static KEYS: LazyLock<Result<Keys, String>> = LazyLock::new(make_keys);

fn make_keys() -> Result<Keys, String> {
    let mut rng = rand::thread_rng();
    let key = RsaPrivateKey::new(&mut rng, RSA_BITS).map_err(|e| format!("rsa keygen: {e}"))?;
    let signer = SigningKey::<sha2::Sha256>::new(key.clone());
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key())
        .map_err(|e| format!("spki: {e}"))?;
    let time = |secs: u64| {
        GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
            .map(Time::GeneralTime)
            .map_err(|e| format!("time: {e}"))
    };
    let validity = Validity {
        not_before: time(946_684_800)?,  // 2000-01-01
        not_after: time(4_102_358_400)?, // 2099-12-31
    };
    let subject: Name = "CN=sns.sandbox.triage-gate.test"
        .parse()
        .map_err(|e| format!("name: {e}"))?;
    let builder = CertificateBuilder::new(
        Profile::Root,
        SerialNumber::from(1u32),
        validity,
        subject,
        spki,
        &signer,
    )
    .map_err(|e| format!("certificate builder: {e}"))?;
    let cert = builder
        .build::<rsa::pkcs1v15::Signature>()
        .map_err(|e| format!("certificate: {e}"))?;
    let pem = cert
        .to_pem(LineEnding::LF)
        .map_err(|e| format!("pem: {e}"))?;
    Ok(Keys { key, pem })
}

fn keys() -> Result<&'static Keys, SnsSignError> {
    KEYS.as_ref().map_err(|e| SnsSignError::Key(e.clone()))
}

/// Why an envelope could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnsSignError {
    #[error("the envelope is not a json object")]
    NotAnObject,
    #[error("field {0} is missing or not a string")]
    Field(&'static str),
    #[error("Type {0:?} is not an SNS message type")]
    Type(String),
    #[error("SignatureVersion must be 1 or 2, not {0}")]
    Version(u8),
    #[error("the sandbox signing key is unavailable: {0}")]
    Key(String),
}

/// A confirmation the emulator received (`GET /sns/confirm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub topic_arn: String,
    /// Whether a non-empty `Token` came with it (the token itself is not kept).
    pub had_token: bool,
}

/// What the SNS emulator holds.
#[derive(Debug, Default)]
pub struct SnsState {
    confirmations: Mutex<Vec<Confirmation>>,
}

impl SnsState {
    pub fn confirmations(&self) -> Vec<Confirmation> {
        self.confirmations
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    pub fn reset(&self) {
        if let Ok(mut c) = self.confirmations.lock() {
            c.clear();
        }
    }

    fn push(&self, c: Confirmation) {
        if let Ok(mut all) = self.confirmations.lock() {
            if all.len() >= CONFIRMATIONS_MAX {
                all.remove(0);
            }
            all.push(c);
        }
    }
}

/// The PEM of the emulator's signing certificate.
pub fn cert_pem() -> Result<String, SnsSignError> {
    keys().map(|k| k.pem.clone())
}

fn string_field<'a>(
    obj: &'a serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, SnsSignError> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or(SnsSignError::Field(name))
}

/// The string SNS signs (per the SNS developer guide, "Verifying the
/// signatures of Amazon SNS messages").
pub fn string_to_sign(envelope: &Value) -> Result<String, SnsSignError> {
    let obj = envelope.as_object().ok_or(SnsSignError::NotAnObject)?;
    let kind = string_field(obj, "Type")?;
    let names: &[&'static str] = match kind {
        "Notification" => &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ],
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ],
        other => return Err(SnsSignError::Type(other.to_owned())),
    };
    let mut out = String::new();
    for name in names {
        if *name == "Subject" && obj.get("Subject").is_none_or(Value::is_null) {
            continue;
        }
        out.push_str(name);
        out.push('\n');
        out.push_str(string_field(obj, name)?);
        out.push('\n');
    }
    Ok(out)
}

/// `envelope` with `SignatureVersion` set to `version` and `Signature` the
/// base64 RSA PKCS#1 v1.5 signature of its string to sign.
pub fn sign(envelope: &Value, version: u8) -> Result<Value, SnsSignError> {
    let text = string_to_sign(envelope)?;
    let key = &keys()?.key;
    let sig = match version {
        1 => SigningKey::<sha1::Sha1>::new(key.clone())
            .sign(text.as_bytes())
            .to_vec(),
        2 => SigningKey::<sha2::Sha256>::new(key.clone())
            .sign(text.as_bytes())
            .to_vec(),
        v => return Err(SnsSignError::Version(v)),
    };
    let mut out = envelope.clone();
    if let Some(obj) = out.as_object_mut() {
        obj.insert(
            "SignatureVersion".into(),
            Value::String(version.to_string()),
        );
        obj.insert(
            "Signature".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(sig)),
        );
    }
    Ok(out)
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new()
        .route("/cert.pem", get(cert))
        .route("/confirm", get(confirm))
}

async fn cert() -> Response {
    match cert_pem() {
        Ok(pem) => ([(header::CONTENT_TYPE, "application/x-x509-ca-cert")], pem).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ConfirmQuery {
    #[serde(rename = "Action")]
    action: Option<String>,
    #[serde(rename = "TopicArn")]
    topic_arn: Option<String>,
    #[serde(rename = "Token")]
    token: Option<String>,
}

async fn confirm(
    State(state): State<Arc<SandboxState>>,
    Query(q): Query<ConfirmQuery>,
) -> Response {
    let (Some("ConfirmSubscription"), Some(topic_arn)) = (q.action.as_deref(), q.topic_arn) else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/xml")],
            "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidParameter</Code></Error></ErrorResponse>",
        )
            .into_response();
    };
    let had_token = q.token.is_some_and(|t| !t.is_empty());
    state.sns.push(Confirmation {
        topic_arn: topic_arn.clone(),
        had_token,
    });
    let body = format!(
        "<ConfirmSubscriptionResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><ConfirmSubscriptionResult><SubscriptionArn>{}:sandbox</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>",
        xml_escape(&topic_arn)
    );
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
