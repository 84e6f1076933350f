//! AWS STS emulator for `AssumeRoleWithWebIdentity`, under `/sts`
//! (`POST /sts/`, the query API: a form body with `Action`, `Version`,
//! `RoleArn`, `RoleSessionName`, `WebIdentityToken`, optional `DurationSeconds`).
//!
//! Strict like STS: a wrong action or version, a missing or malformed
//! parameter, an empty or unknown token, or a role it does not allow is refused
//! with STS's XML error shape (`ErrorResponse/Error/{Type,Code,Message}`).
//! Success answers `AssumeRoleWithWebIdentityResponse` with fresh temporary
//! credentials, which the Bedrock emulator then accepts (with their
//! `x-amz-security-token`) until they expire.
//!
//! Web-identity tokens and issued secrets never reach a recording: calls are
//! kept as [`StsCall`] (the token's label, never the token).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::SandboxState;
use crate::bedrock::BedrockCredentials;
use crate::record::lock;

/// The role the emulator lets anyone with a valid token assume.
pub const DEFAULT_STS_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/triage-gate-sandbox";
/// The web-identity token the emulator accepts from the start (label `default`).
pub const DEFAULT_WEB_IDENTITY_TOKEN: &str =
    "eyJhbGciOiJSUzI1NiJ9.sandbox-web-identity.c2lnbmF0dXJl";
/// `DurationSeconds` bounds, as STS.
pub const DURATION_SECS_MIN: i64 = 900;
pub const DURATION_SECS_MAX: i64 = 43_200;
/// Issued credentials kept at most (oldest dropped).
pub const ISSUED_MAX: usize = 1024;
/// Calls recorded at most (oldest dropped).
pub const CALLS_MAX: usize = 1024;
/// Queued injected failures at most.
pub const FAILURES_MAX: usize = 64;

/// One `AssumeRoleWithWebIdentity` the emulator received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StsCall {
    pub at: DateTime<Utc>,
    pub role_arn: Option<String>,
    pub session_name: Option<String>,
    pub duration_secs: Option<String>,
    /// The label of the token presented, when it was a known one.
    pub token_label: Option<String>,
    pub status: u16,
    /// The error code answered, if any.
    pub error: Option<String>,
}

#[derive(Clone)]
struct Issued {
    credentials: BedrockCredentials,
    expires_at: DateTime<Utc>,
}

#[derive(Default)]
struct Inner {
    /// token -> label.
    tokens: BTreeMap<String, String>,
    roles: BTreeSet<String>,
    issued: VecDeque<Issued>,
    calls: VecDeque<StsCall>,
    /// Overrides the lifetime of issued credentials (else `DurationSeconds`).
    lifetime_secs: Option<i64>,
    failures: VecDeque<(u16, String)>,
}

/// The emulator's state.
pub struct StsState(Mutex<Inner>);

impl std::fmt::Debug for StsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsState").finish_non_exhaustive()
    }
}

impl Default for StsState {
    fn default() -> Self {
        let mut inner = Inner::default();
        inner
            .tokens
            .insert(DEFAULT_WEB_IDENTITY_TOKEN.into(), "default".into());
        inner.roles.insert(DEFAULT_STS_ROLE_ARN.into());
        StsState(Mutex::new(inner))
    }
}

/// Why an STS control call was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StsControlError {
    #[error("the token is empty")]
    EmptyToken,
    #[error("status {0} is not a 4xx or 5xx")]
    BadStatus(u16),
    #[error("more than {FAILURES_MAX} failures queued")]
    TooManyFailures,
}

impl StsState {
    pub(crate) fn issue_token(&self, label: &str, token: &str) -> Result<(), StsControlError> {
        if token.trim().is_empty() {
            return Err(StsControlError::EmptyToken);
        }
        lock(&self.0).tokens.insert(token.into(), label.into());
        Ok(())
    }

    pub(crate) fn revoke_token(&self, token: &str) {
        lock(&self.0).tokens.remove(token);
    }

    pub(crate) fn allow_role(&self, arn: &str) {
        lock(&self.0).roles.insert(arn.into());
    }

    pub(crate) fn set_lifetime(&self, secs: Option<i64>) {
        lock(&self.0).lifetime_secs = secs;
    }

    pub(crate) fn expire_all(&self) {
        let now = Utc::now();
        for i in &mut lock(&self.0).issued {
            i.expires_at = now - chrono::Duration::seconds(1);
        }
    }

    pub(crate) fn fail_next(&self, status: u16, code: &str) -> Result<(), StsControlError> {
        if !(400..=599).contains(&status) {
            return Err(StsControlError::BadStatus(status));
        }
        let mut inner = lock(&self.0);
        if inner.failures.len() >= FAILURES_MAX {
            return Err(StsControlError::TooManyFailures);
        }
        inner.failures.push_back((status, code.into()));
        Ok(())
    }

    pub(crate) fn calls(&self) -> Vec<StsCall> {
        lock(&self.0).calls.iter().cloned().collect()
    }

    /// The issued credentials with this access key id: `Ok` while valid,
    /// `Err(())` once expired, `None` if never issued.
    pub(crate) fn credentials_for(
        &self,
        access_key_id: &str,
    ) -> Option<Result<BedrockCredentials, ()>> {
        let inner = lock(&self.0);
        let issued = inner
            .issued
            .iter()
            .find(|i| i.credentials.access_key_id == access_key_id)?;
        if issued.expires_at <= Utc::now() {
            return Some(Err(()));
        }
        Some(Ok(issued.credentials.clone()))
    }

    pub(crate) fn reset(&self) {
        let mut inner = lock(&self.0);
        inner.calls.clear();
        inner.failures.clear();
        inner.lifetime_secs = None;
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn xml(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    resp
}

/// STS's error shape.
pub(crate) fn error_xml(status: StatusCode, code: &str, message: &str) -> Response {
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    xml(
        status,
        format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{}</RequestId>\n</ErrorResponse>\n",
            escape(code),
            escape(message),
            uuid::Uuid::new_v4()
        ),
    )
}

fn random_upper(n: usize) -> String {
    let mut out = String::new();
    while out.len() < n {
        out.push_str(
            &uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .to_ascii_uppercase(),
        );
    }
    out.truncate(n);
    out
}

fn session_name_ok(s: &str) -> bool {
    (2..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

pub(crate) async fn assume(
    State(state): State<Arc<SandboxState>>,
    form: Result<axum::Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let sts = &state.sts;
    let mut call = StsCall {
        at: Utc::now(),
        role_arn: None,
        session_name: None,
        duration_secs: None,
        token_label: None,
        status: 200,
        error: None,
    };
    let resp = answer(sts, form, &mut call);
    call.status = resp.status().as_u16();
    let mut inner = lock(&sts.0);
    if inner.calls.len() >= CALLS_MAX {
        inner.calls.pop_front();
    }
    inner.calls.push_back(call);
    resp
}

fn refuse(call: &mut StsCall, status: StatusCode, code: &str, message: &str) -> Response {
    call.error = Some(code.to_owned());
    error_xml(status, code, message)
}

fn answer(
    sts: &StsState,
    form: Result<axum::Form<Vec<(String, String)>>, FormRejection>,
    call: &mut StsCall,
) -> Response {
    let Ok(axum::Form(pairs)) = form else {
        return refuse(
            call,
            StatusCode::BAD_REQUEST,
            "InvalidQueryParameter",
            "The request must be a form (application/x-www-form-urlencoded).",
        );
    };
    let mut params: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in &pairs {
        if params.insert(k.as_str(), v.as_str()).is_some() {
            return refuse(
                call,
                StatusCode::BAD_REQUEST,
                "InvalidQueryParameter",
                &format!("Parameter {k} is given more than once."),
            );
        }
    }
    let injected = lock(&sts.0).failures.pop_front();
    if let Some((status, code)) = injected {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return refuse(call, status, &code, "Injected failure.");
    }
    call.role_arn = params.get("RoleArn").map(|s| (*s).to_owned());
    call.session_name = params.get("RoleSessionName").map(|s| (*s).to_owned());
    call.duration_secs = params.get("DurationSeconds").map(|s| (*s).to_owned());
    match params.get("Action").copied() {
        Some("AssumeRoleWithWebIdentity") => {}
        Some(other) => {
            return refuse(
                call,
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                &format!("Could not find operation {other} for version 2011-06-15"),
            );
        }
        None => {
            return refuse(
                call,
                StatusCode::BAD_REQUEST,
                "MissingAction",
                "Missing Action",
            );
        }
    }
    if params.get("Version").copied() != Some("2011-06-15") {
        return refuse(
            call,
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            "Could not find operation AssumeRoleWithWebIdentity for the given version",
        );
    }
    let mut missing = Vec::new();
    for (name, member) in [
        ("RoleArn", "roleArn"),
        ("RoleSessionName", "roleSessionName"),
        ("WebIdentityToken", "webIdentityToken"),
    ] {
        if !params.contains_key(name) {
            missing.push(format!(
                "Value null at '{member}' failed to satisfy constraint: Member must not be null"
            ));
        }
    }
    if !missing.is_empty() {
        return refuse(
            call,
            StatusCode::BAD_REQUEST,
            "ValidationError",
            &format!(
                "{} validation error{} detected: {}",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                missing.join("; ")
            ),
        );
    }
    let role = params.get("RoleArn").copied().unwrap_or_default();
    let session = params.get("RoleSessionName").copied().unwrap_or_default();
    let token = params.get("WebIdentityToken").copied().unwrap_or_default();
    if role.len() < 20 || !role.starts_with("arn:") {
        return refuse(
            call,
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "1 validation error detected: Value at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20",
        );
    }
    if !session_name_ok(session) {
        return refuse(
            call,
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "1 validation error detected: Value at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*",
        );
    }
    let duration = match params.get("DurationSeconds") {
        None => 3600,
        Some(d) => match d.parse::<i64>() {
            Ok(n) if (DURATION_SECS_MIN..=DURATION_SECS_MAX).contains(&n) => n,
            _ => {
                return refuse(
                    call,
                    StatusCode::BAD_REQUEST,
                    "ValidationError",
                    "1 validation error detected: Value at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200",
                );
            }
        },
    };
    if token.len() < 4 {
        return refuse(
            call,
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: Member must have length greater than or equal to 4",
        );
    }
    let mut inner = lock(&sts.0);
    let Some(label) = inner.tokens.get(token).cloned() else {
        drop(inner);
        return refuse(
            call,
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            "Couldn't retrieve verification key from your identity provider, please reference AssumeRoleWithWebIdentity documentation for requirements",
        );
    };
    call.token_label = Some(label.clone());
    if !inner.roles.contains(role) {
        drop(inner);
        return refuse(
            call,
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        );
    }
    let lifetime = inner.lifetime_secs.unwrap_or(duration);
    let expires_at = Utc::now() + chrono::Duration::seconds(lifetime);
    let credentials = BedrockCredentials {
        access_key_id: format!("ASIA{}", random_upper(16)),
        secret_access_key: format!("sandbox/sts/{}", random_upper(28)),
        session_token: Some(format!("IQoJb3JpZ2luX2VjE-sandbox-{}", random_upper(64))),
    };
    if inner.issued.len() >= ISSUED_MAX {
        inner.issued.pop_front();
    }
    inner.issued.push_back(Issued {
        credentials: credentials.clone(),
        expires_at,
    });
    drop(inner);
    let role_name = role.rsplit('/').next().unwrap_or(role);
    let account = role.split(':').nth(4).unwrap_or("123456789012");
    xml(
        StatusCode::OK,
        format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>{label}</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::{account}:assumed-role/{role_name}/{session}</Arn>
      <AssumedRoleId>AROA{rid}:{session}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{token}</SessionToken>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <Expiration>{expires}</Expiration>
      <AccessKeyId>{akid}</AccessKeyId>
    </Credentials>
    <Provider>sandbox-oidc</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>{request}</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
",
            label = escape(&label),
            account = escape(account),
            role_name = escape(role_name),
            session = escape(session),
            rid = random_upper(17),
            token = escape(credentials.session_token.as_deref().unwrap_or_default()),
            secret = escape(&credentials.secret_access_key),
            expires = expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            akid = credentials.access_key_id,
            request = uuid::Uuid::new_v4(),
        ),
    )
}
