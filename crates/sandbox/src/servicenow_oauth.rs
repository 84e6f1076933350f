//! ServiceNow's OAuth token endpoint, `POST /servicenow/oauth_token.do`
//! (reference 1.3), and the tokens the Table API then requires.
//!
//! - The body must be `application/x-www-form-urlencoded` (anything else: 400).
//! - Only `grant_type=client_credentials`, and only once it is enabled (the
//!   instance property `glide.oauth.inbound.client.credential.grant_type.enabled`,
//!   off by default, as on a real instance): 401 `unauthorized_client` before.
//! - Client authentication: `client_secret_post`, `client_secret_basic`, or
//!   `private_key_jwt` (RFC 7523: RS256 assertion, `iss` = `sub` = client id,
//!   `aud` ending in `/oauth_token.do`, a `jti` never seen before, `exp`).
//! - Success: `{"access_token","scope","token_type":"Bearer","expires_in"}`,
//!   tokens living [`TOKEN_LIFETIME_SECS`] by default (settable: short-lived
//!   tokens make expiry testable) on the sandbox's clock.
//! - Once a client is registered, OAuth is configured: the Table API accepts
//!   only unexpired issued tokens (the static sandbox token answers 401).
//!
//! Its requests are recorded as target `servicenow_oauth`, and an outage on
//! that target takes down the token endpoint alone.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde_json::json;
use std::sync::Arc;

use crate::SandboxState;
use crate::pagerduty_rest::{decode, form};
use crate::record::{Secret, lock};

/// Lifetime of an issued token, seconds (the platform's default access token lifespan).
pub const TOKEN_LIFETIME_SECS: i64 = 1_799;
/// Issued tokens remembered; beyond it the oldest is forgotten (its holder gets a 401).
pub const TOKENS_MAX: usize = 10_000;
/// Client assertion ids remembered for replay detection.
pub const JTIS_MAX: usize = 10_000;
/// Registered OAuth clients.
pub const CLIENTS_MAX: usize = 100;

/// The client assertion type of RFC 7523.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How a registered client proves itself.
#[derive(Clone)]
enum Credential {
    Secret(Secret),
    /// The public key (PEM) verifying its `private_key_jwt` assertions.
    PublicKey(Arc<jsonwebtoken::DecodingKey>),
}

#[derive(Default)]
struct Inner {
    enabled: bool,
    clients: BTreeMap<String, Credential>,
    /// Valid token -> expiry (Unix seconds on the sandbox clock).
    tokens: BTreeMap<String, i64>,
    /// Every token issued (revoked ones too), oldest first, at most [`TOKENS_MAX`].
    issued: VecDeque<String>,
    jtis: VecDeque<String>,
    lifetime_secs: Option<i64>,
    token_requests: u64,
    tokens_issued: u64,
}

#[derive(Default)]
pub(crate) struct ServiceNowOAuthState {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ServiceNowOAuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceNowOAuthState")
            .finish_non_exhaustive()
    }
}

/// Why a client could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthClientError {
    #[error("the public key is not an RSA PEM")]
    PublicKey,
    #[error("at most {CLIENTS_MAX} OAuth clients")]
    TooMany,
    #[error("client id and secret must not be empty")]
    Empty,
}

impl ServiceNowOAuthState {
    fn register(&self, client_id: &str, cred: Credential) -> Result<(), OAuthClientError> {
        if client_id.is_empty() {
            return Err(OAuthClientError::Empty);
        }
        let mut inner = lock(&self.inner);
        if inner.clients.len() >= CLIENTS_MAX && !inner.clients.contains_key(client_id) {
            return Err(OAuthClientError::TooMany);
        }
        inner.clients.insert(client_id.to_owned(), cred);
        Ok(())
    }

    pub(crate) fn register_secret(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<(), OAuthClientError> {
        if secret.is_empty() {
            return Err(OAuthClientError::Empty);
        }
        self.register(client_id, Credential::Secret(Secret::new(secret)))
    }

    pub(crate) fn register_public_key(
        &self,
        client_id: &str,
        pem: &str,
    ) -> Result<(), OAuthClientError> {
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|_| OAuthClientError::PublicKey)?;
        self.register(client_id, Credential::PublicKey(Arc::new(key)))
    }

    pub(crate) fn set_enabled(&self, enabled: bool) {
        lock(&self.inner).enabled = enabled;
    }

    pub(crate) fn set_lifetime(&self, secs: Option<i64>) {
        lock(&self.inner).lifetime_secs = secs;
    }

    pub(crate) fn token_requests(&self) -> u64 {
        lock(&self.inner).token_requests
    }

    pub(crate) fn tokens_issued(&self) -> u64 {
        lock(&self.inner).tokens_issued
    }

    pub(crate) fn issued_tokens(&self) -> Vec<Secret> {
        lock(&self.inner)
            .issued
            .iter()
            .map(|t| Secret::new(t.as_str()))
            .collect()
    }

    /// Every token stops working (the issue log stays: tests search outputs for it).
    pub(crate) fn revoke_tokens(&self) {
        lock(&self.inner).tokens.clear();
    }

    /// Whether OAuth is configured (a client is registered): the Table API
    /// then takes issued tokens only.
    pub(crate) fn required(&self) -> bool {
        !lock(&self.inner).clients.is_empty()
    }

    /// Whether `token` was issued and has not expired at `now`.
    pub(crate) fn valid(&self, token: &str, now: i64) -> bool {
        lock(&self.inner)
            .tokens
            .get(token)
            .is_some_and(|expires_at| now < *expires_at)
    }

    /// Forget tokens and counters; clients and the grant flag stay (configuration).
    pub(crate) fn reset(&self) {
        let mut inner = lock(&self.inner);
        inner.tokens.clear();
        inner.issued.clear();
        inner.jtis.clear();
        inner.token_requests = 0;
        inner.tokens_issued = 0;
        inner.lifetime_secs = None;
    }
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new().route("/oauth_token.do", post(token))
}

pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// An OAuth error answer: (status, `error`, `error_description`).
pub(crate) type OAuthRefusal = (StatusCode, &'static str, &'static str);

/// The form of a client-credentials token request (RFC 6749 section 4.4),
/// or the OAuth error to answer ([`oauth_error`]): the body must be
/// form-encoded and the grant `client_credentials`.
pub(crate) fn client_credentials_form(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<BTreeMap<String, String>, OAuthRefusal> {
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_encoded {
        // The platform's answer to JSON is unspecified; a 400 is what a client should expect.
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let f = form(body);
    if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Err((
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "the sandbox issues client_credentials tokens only",
        ));
    }
    Ok(f)
}

/// An injected fault on the token endpoint, in its error shape.
pub(crate) fn fault_response(status: StatusCode) -> Response {
    let error = if status.is_server_error() {
        "temporarily_unavailable"
    } else {
        "server_error"
    };
    oauth_error(status, error, "injected by the sandbox")
}

/// Checks a `private_key_jwt` assertion; the reason on failure.
fn check_assertion(
    inner: &mut Inner,
    key: &jsonwebtoken::DecodingKey,
    client_id: &str,
    assertion: &str,
) -> Result<(), &'static str> {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    // `aud` is the token endpoint URL, whose host the sandbox does not know: checked below.
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    v.set_issuer(&[client_id]);
    v.leeway = 5;
    let data = jsonwebtoken::decode::<serde_json::Value>(assertion, key, &v)
        .map_err(|_| "the client assertion does not verify")?;
    let claims = data.claims;
    if claims.get("sub").and_then(serde_json::Value::as_str) != Some(client_id) {
        return Err("the assertion's sub is not the client id");
    }
    let aud_ok = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a.ends_with("/oauth_token.do"),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .any(|x| x.as_str().is_some_and(|s| s.ends_with("/oauth_token.do"))),
        _ => false,
    };
    if !aud_ok {
        return Err("the assertion's aud is not this token endpoint");
    }
    let Some(jti) = claims.get("jti").and_then(serde_json::Value::as_str) else {
        return Err("the assertion has no jti");
    };
    if inner.jtis.iter().any(|j| j == jti) {
        return Err("the assertion was replayed (jti seen before)");
    }
    if inner.jtis.len() >= JTIS_MAX {
        inner.jtis.pop_front();
    }
    inner.jtis.push_back(jti.to_owned());
    Ok(())
}

async fn token(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let oauth = &state.servicenow_oauth;
    lock(&oauth.inner).token_requests += 1;
    let f = match client_credentials_form(&headers, &body) {
        Ok(f) => f,
        Err((status, error, description)) => return oauth_error(status, error, description),
    };
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(id, secret)| (decode(id), decode(secret)))
        });
    let client_id = match (&basic, f.get("client_id")) {
        (Some((id, _)), _) => id.clone(),
        (None, Some(id)) => id.clone(),
        (None, None) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication is missing",
            );
        }
    };
    let mut inner = lock(&oauth.inner);
    if !inner.enabled {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "the client_credentials grant is not enabled on this instance",
        );
    }
    let Some(cred) = inner.clients.get(&client_id).cloned() else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    };
    let authenticated = match cred {
        Credential::Secret(secret) => {
            let given = basic
                .as_ref()
                .map(|(_, s)| s.as_str())
                .or_else(|| f.get("client_secret").map(String::as_str));
            given.is_some_and(|g| g == secret.expose())
        }
        Credential::PublicKey(key) => {
            let typed = f.get("client_assertion_type").map(String::as_str) == Some(JWT_BEARER);
            match (typed, f.get("client_assertion")) {
                (true, Some(a)) => match check_assertion(&mut inner, &key, &client_id, a) {
                    Ok(()) => true,
                    Err(reason) => {
                        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", reason);
                    }
                },
                _ => false,
            }
        }
    };
    if !authenticated {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    let lifetime = inner.lifetime_secs.unwrap_or(TOKEN_LIFETIME_SECS).max(1);
    let now = state.faults.now().timestamp();
    if inner.issued.len() >= TOKENS_MAX
        && let Some(oldest) = inner.issued.pop_front()
    {
        inner.tokens.remove(&oldest);
    }
    let access_token = format!("snow_{}", uuid::Uuid::new_v4().simple());
    inner.tokens.insert(access_token.clone(), now + lifetime);
    inner.issued.push_back(access_token.clone());
    inner.tokens_issued += 1;
    drop(inner);
    let scope = f
        .get("scope")
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| "useraccount".to_owned());
    let mut resp = (
        StatusCode::OK,
        axum::Json(json!({
            "access_token": access_token,
            "scope": scope,
            "token_type": "Bearer",
            "expires_in": lifetime,
        })),
    )
        .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}
