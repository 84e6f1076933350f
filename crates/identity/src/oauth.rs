//! OAuth 2.0 client-credentials token source (RFC 6749 section 4.4) with
//! `client_secret_basic`, `client_secret_post` or `private_key_jwt` (RFC 7523).
//!
//! One source per target and scope set: tokens are short-lived and narrow.
//! A token is cached until `refresh_margin_secs` before it expires; concurrent
//! callers wait on one fetch (single-flight). Errors never carry the secret,
//! the assertion or the token; an IdP's error description is bounded. Client
//! secrets and tokens are [`Secret`]s (wiped on drop), and so are the Basic
//! credentials and the token answer built here; a private key is held as
//! `jsonwebtoken`'s parsed `EncodingKey`, which does not wipe itself.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use tg_model::Secret;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

/// Largest token response read, in bytes.
pub const TOKEN_RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// Largest access token accepted, in bytes.
pub const ACCESS_TOKEN_BYTES_MAX: usize = 16 * 1024;
/// Longest `timeout_ms` of one token request.
pub const TOKEN_TIMEOUT_MS_MAX: u64 = 60_000;
/// Lifetime of a `private_key_jwt` client assertion, in seconds.
pub const ASSERTION_LIFETIME_SECS: i64 = 60;
/// Used when a token response has no `expires_in`: assume a short life.
pub const EXPIRES_IN_DEFAULT_SECS: i64 = 300;
/// Longest lifetime believed from `expires_in` (a day): a token is refreshed at least this often.
pub const EXPIRES_IN_MAX_SECS: i64 = 86_400;
/// Longest error description kept from an IdP answer.
pub const ERROR_TEXT_BYTES_MAX: usize = 200;

/// How the client proves who it is to the token endpoint.
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 2.3.1).
    SecretBasic { secret: Secret },
    /// `client_id` and `client_secret` in the form body.
    SecretPost { secret: Secret },
    /// A JWT signed with the client's private key (RFC 7523 section 2.2).
    PrivateKeyJwt {
        key: EncodingKey,
        alg: Algorithm,
        kid: Option<String>,
    },
}

impl ClientAuth {
    /// `private_key_jwt` with a PEM private key: RSA for `RS256`, EC P-256 for
    /// `ES256`. The error names neither the key nor its parse failure (which
    /// could quote it).
    pub fn private_key_jwt(
        pem: &Secret,
        alg: Algorithm,
        kid: Option<String>,
    ) -> Result<ClientAuth, String> {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.expose().as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.expose().as_bytes()),
            other => return Err(format!("{other:?} is not RS256 or ES256")),
        }
        .map_err(|_| format!("not a PEM private key for {alg:?}"))?;
        Ok(ClientAuth::PrivateKeyJwt { key, alg, kid })
    }
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientAuth::SecretBasic { .. } => "client_secret_basic",
            ClientAuth::SecretPost { .. } => "client_secret_post",
            ClientAuth::PrivateKeyJwt { .. } => "private_key_jwt",
        })
    }
}

/// One client-credentials grant.
#[derive(Debug)]
pub struct ClientCredentials {
    pub token_url: String,
    pub client_id: String,
    pub auth: ClientAuth,
    /// Requested scopes (narrow: only what this target's actions need).
    pub scopes: Vec<String>,
    /// Extra form parameters some servers need (e.g. `audience`, `resource`).
    pub extra: Vec<(String, String)>,
    pub timeout_ms: u64,
    /// Refresh this long before `expires_in` runs out.
    pub refresh_margin_secs: i64,
}

/// Why no token could be obtained. Retryable unless [`OAuthError::is_permanent`].
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OAuthError {
    #[error("token endpoint unreachable: {0}")]
    Transport(&'static str),
    #[error("token endpoint answered {status}: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rejected {
        status: u16,
        error: String,
        description: Option<String>,
    },
    #[error("token endpoint answered {0}")]
    Status(u16),
    #[error("token response is invalid: {0}")]
    Response(&'static str),
    #[error("cannot sign the client assertion")]
    Assertion,
}

impl OAuthError {
    /// A refused client or scope will not fix itself: do not retry quickly.
    pub fn is_permanent(&self) -> bool {
        matches!(self, OAuthError::Rejected { .. } | OAuthError::Assertion)
    }
}

struct Cached {
    token: Secret,
    refresh_at: i64,
}

/// A cached, single-flight client-credentials token source.
pub struct TokenSource {
    cfg: ClientCredentials,
    http: reqwest::Client,
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.cfg.token_url)
            .field("client_id", &self.cfg.client_id)
            .field("auth", &self.cfg.auth)
            .field("scopes", &self.cfg.scopes)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl TokenSource {
    pub fn new(cfg: ClientCredentials) -> Result<Self, String> {
        if cfg.timeout_ms == 0 || cfg.timeout_ms > TOKEN_TIMEOUT_MS_MAX {
            return Err(format!("timeout_ms must be 1..={TOKEN_TIMEOUT_MS_MAX}"));
        }
        if !(cfg.token_url.starts_with("https://") || cfg.token_url.starts_with("http://")) {
            return Err("token_url must be an http(s) URL".to_owned());
        }
        if cfg.client_id.is_empty() {
            return Err("client_id must not be empty".to_owned());
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(TokenSource {
            cfg,
            http,
            cached: Mutex::new(None),
        })
    }

    pub fn client_id(&self) -> &str {
        &self.cfg.client_id
    }

    pub fn scopes(&self) -> &[String] {
        &self.cfg.scopes
    }

    /// A valid access token at `now` (Unix seconds), fetched if needed.
    pub async fn token(&self, now: i64) -> Result<Secret, OAuthError> {
        // Held across the fetch: concurrent callers wait for one request.
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && now < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let (token, expires_in) = self.fetch(now).await?;
        let lifetime = expires_in.clamp(1, EXPIRES_IN_MAX_SECS);
        // A margin larger than half the life would refetch on every call.
        let margin = self.cfg.refresh_margin_secs.clamp(0, lifetime / 2);
        *cached = Some(Cached {
            token: token.clone(),
            refresh_at: now.saturating_add(lifetime - margin),
        });
        Ok(token)
    }

    /// Forgets the cached token (after the target answered 401 with it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self, now: i64) -> Result<(Secret, i64), OAuthError> {
        let mut form: Vec<(String, String)> =
            vec![("grant_type".to_owned(), "client_credentials".to_owned())];
        if !self.cfg.scopes.is_empty() {
            form.push(("scope".to_owned(), self.cfg.scopes.join(" ")));
        }
        form.extend(self.cfg.extra.iter().cloned());
        let mut req = self.http.post(&self.cfg.token_url);
        match &self.cfg.auth {
            ClientAuth::SecretBasic { secret } => {
                let enc =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = Zeroizing::new(format!(
                    "{}:{}",
                    enc(&self.cfg.client_id),
                    enc(secret.expose())
                ));
                let header = Zeroizing::new(format!("Basic {}", STANDARD.encode(pair.as_bytes())));
                req = req.header(reqwest::header::AUTHORIZATION, header.as_str());
            }
            ClientAuth::SecretPost { secret } => {
                form.push(("client_id".to_owned(), self.cfg.client_id.clone()));
                form.push(("client_secret".to_owned(), secret.expose().to_owned()));
            }
            ClientAuth::PrivateKeyJwt { key, alg, kid } => {
                let assertion = self.assertion(key, *alg, kid.clone(), now)?;
                form.push(("client_id".to_owned(), self.cfg.client_id.clone()));
                form.push((
                    "client_assertion_type".to_owned(),
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ));
                form.push(("client_assertion".to_owned(), assertion));
            }
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        let mut resp = req
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                OAuthError::Transport(if e.is_timeout() { "timeout" } else { "connect" })
            })?;
        let status = resp.status().as_u16();
        // The answer holds the access token: wiped when dropped.
        let mut bytes = Zeroizing::new(Vec::new());
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|_| OAuthError::Transport("body"))?
        {
            if bytes.len() + chunk.len() > TOKEN_RESPONSE_BYTES_MAX {
                return Err(OAuthError::Response("response too large"));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !(200..300).contains(&status) {
            return Err(match serde_json::from_slice::<ErrorResponse>(&bytes) {
                Ok(e) if (400..500).contains(&status) => OAuthError::Rejected {
                    status,
                    error: printable(&e.error),
                    description: e.error_description.as_deref().map(printable),
                },
                _ => OAuthError::Status(status),
            });
        }
        let t: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|_| OAuthError::Response("not a token response"))?;
        if !t.token_type.eq_ignore_ascii_case("bearer") {
            return Err(OAuthError::Response("token_type is not Bearer"));
        }
        if t.access_token.is_empty() || t.access_token.len() > ACCESS_TOKEN_BYTES_MAX {
            return Err(OAuthError::Response("access_token is empty or too long"));
        }
        // RFC 6749 says a number; some servers send a string.
        let expires_in = match t.expires_in {
            None => EXPIRES_IN_DEFAULT_SECS,
            Some(serde_json::Value::Number(n)) => {
                n.as_i64().ok_or(OAuthError::Response("expires_in"))?
            }
            Some(serde_json::Value::String(s)) => s
                .trim()
                .parse()
                .map_err(|_| OAuthError::Response("expires_in"))?,
            Some(_) => return Err(OAuthError::Response("expires_in")),
        };
        Ok((Secret::new(t.access_token), expires_in))
    }

    fn assertion(
        &self,
        key: &EncodingKey,
        alg: Algorithm,
        kid: Option<String>,
        now: i64,
    ) -> Result<String, OAuthError> {
        let mut header = Header::new(alg);
        header.kid = kid;
        let claims = serde_json::json!({
            "iss": self.cfg.client_id,
            "sub": self.cfg.client_id,
            "aud": self.cfg.token_url,
            // Unique per assertion so the IdP can refuse a replay.
            "jti": uuid::Uuid::new_v4().to_string(),
            "iat": now,
            "exp": now.saturating_add(ASSERTION_LIFETIME_SECS),
        });
        jsonwebtoken::encode(&header, &claims, key).map_err(|_| OAuthError::Assertion)
    }
}

fn printable(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).collect();
    if out.len() > ERROR_TEXT_BYTES_MAX {
        let mut end = ERROR_TEXT_BYTES_MAX;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}
