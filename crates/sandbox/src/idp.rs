//! An OAuth 2.0 authorization server issuing the gate's inbound access
//! tokens, so that `demo` (and tests) run with `identity.inbound.mode: jwt`
//! as a deployment should: `POST /idp/token` (client credentials, RFC 6749
//! section 4.4) answers an RFC 9068 JWT access token signed with Ed25519
//! (`EdDSA`), and `GET /idp/jwks` publishes the public key.
//!
//! - The body must be `application/x-www-form-urlencoded`, with
//!   `grant_type=client_credentials`, `client_id`, `client_secret`, and
//!   optionally `scope` (a subset of the client's scopes; default: all).
//! - Claims: `iss` = [`Sandbox::idp_issuer`](crate::Sandbox::idp_issuer),
//!   `aud` = [`AUDIENCE`], `sub` = `client_id` = the client, `scope`, `iat`,
//!   `exp` (+[`TOKEN_LIFETIME_SECS`]), `jti`; header `typ: at+jwt`, `kid`.
//! - The key is made when the sandbox starts and lives in memory only.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::sync::Arc;

use crate::SandboxState;
use crate::record::{Secret, lock};
use crate::servicenow_oauth::{client_credentials_form, oauth_error};

/// The audience of every issued token (the gate's default `identity.inbound.audiences`).
pub const AUDIENCE: &str = "triage-gate";
/// Lifetime of an issued token, seconds.
pub const TOKEN_LIFETIME_SECS: i64 = 600;
/// Registered clients at most.
pub const CLIENTS_MAX: usize = 100;
/// The key id published in the JWKS and set in every token header.
const KID: &str = "sandbox-idp-1";

struct Client {
    secret: Secret,
    scopes: Vec<String>,
}

/// The authorization server's key and clients.
pub struct IdpState {
    encoding: EncodingKey,
    /// The raw public key (32 bytes), published as an OKP JWK.
    public: [u8; 32],
    clients: Mutex<BTreeMap<String, Client>>,
}

impl std::fmt::Debug for IdpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpState").field("kid", &KID).finish()
    }
}

impl IdpState {
    /// A fresh Ed25519 key from the OS randomness.
    pub(crate) fn new() -> Result<IdpState, String> {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        let der = key.to_pkcs8_der().map_err(|e| format!("idp key: {e}"))?;
        Ok(IdpState {
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            public: key.verifying_key().to_bytes(),
            clients: Mutex::new(BTreeMap::new()),
        })
    }

    /// Registers (or replaces) a client allowed the client-credentials grant.
    pub(crate) fn register(
        &self,
        client_id: &str,
        secret: &str,
        scopes: &[&str],
    ) -> Result<(), String> {
        let mut clients = lock(&self.clients);
        if clients.len() >= CLIENTS_MAX && !clients.contains_key(client_id) {
            return Err(format!("at most {CLIENTS_MAX} clients"));
        }
        clients.insert(
            client_id.to_owned(),
            Client {
                secret: Secret::new(secret),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            },
        );
        Ok(())
    }

    fn jwks(&self) -> serde_json::Value {
        json!({ "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.public),
            "kid": KID,
            "alg": "EdDSA",
            "use": "sig",
        }]})
    }
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new()
        .route("/token", post(token))
        .route("/jwks", get(jwks))
}

async fn jwks(State(state): State<Arc<SandboxState>>) -> Response {
    match &state.idp {
        Ok(idp) => Json(idp.jwks()).into_response(),
        Err(e) => oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            e,
        ),
    }
}

async fn token(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let idp = match &state.idp {
        Ok(idp) => idp,
        Err(e) => {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                e,
            );
        }
    };
    let f = match client_credentials_form(&headers, &body) {
        Ok(f) => f,
        Err((status, error, description)) => return oauth_error(status, error, description),
    };
    let (Some(id), Some(secret)) = (f.get("client_id"), f.get("client_secret")) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id and client_secret are required",
        );
    };
    let granted = {
        let clients = lock(&idp.clients);
        match clients.get(id) {
            Some(c) if c.secret.expose() == secret => {
                let asked: Vec<String> = f
                    .get("scope")
                    .map(|s| s.split_whitespace().map(str::to_owned).collect())
                    .unwrap_or_else(|| c.scopes.clone());
                if asked.iter().any(|s| !c.scopes.contains(s)) {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        "a scope the client is not allowed",
                    );
                }
                asked
            }
            _ => {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "unknown client or wrong secret",
                );
            }
        }
    };
    let now = state.faults.now().timestamp();
    let scope = granted.join(" ");
    let claims = json!({
        "iss": state.idp_issuer(),
        "aud": AUDIENCE,
        "sub": id,
        "client_id": id,
        "scope": scope,
        "iat": now,
        "exp": now + TOKEN_LIFETIME_SECS,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".to_owned());
    header.kid = Some(KID.to_owned());
    match jsonwebtoken::encode(&header, &claims, &idp.encoding) {
        Ok(token) => Json(json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECS,
            "scope": scope,
        }))
        .into_response(),
        Err(e) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &format!("signing failed: {e}"),
        ),
    }
}
