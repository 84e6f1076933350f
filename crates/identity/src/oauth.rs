//! OAuth 2.0 client-credentials token source (RFC 6749 section 4.4) with
//! `client_secret_basic`, `client_secret_post` or `private_key_jwt` (RFC 7523).
//!
//! One source per target and scope set: tokens are short-lived and narrow.
//! A token is cached until `refresh_margin_secs` before it expires; concurrent
//! callers wait on one fetch (single-flight). Time comes from an injected
//! [`IdentityClock`], so expiry and the refresh margin are testable without
//! waiting (a client assertion's `iat`/`exp` alone are wall time: the IdP
//! checks them against its own clock). Errors never carry the secret, the assertion or the token; an
//! IdP's error description is bounded.
//!
//! [`TokenSource::health`] is a secret-free view of the last fetch (when, the
//! outcome, whether a usable token is cached): readiness reads it, and
//! [`crate::probe`] keeps it current before any action needs a token.
//!
//! Key material: client secrets and tokens are [`Secret`]s (wiped on drop),
//! and so are the Basic credentials and the token answer built here. A
//! `private_key_jwt` key is kept as its PEM text in a [`Secret`];
//! `jsonwebtoken`'s `EncodingKey` (and `ring`'s key pair under it) do not wipe
//! themselves, so one is built for each assertion and dropped right after
//! signing. Assertions are rare (one per token fetch), so the parse costs
//! nothing that matters, and an unwiped copy of the key lives in freed memory
//! only briefly instead of for the life of the process.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tg_model::Secret;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::clock::{IdentityClock, SystemIdentityClock};

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
/// Longest OAuth `error` code quoted in a readiness reason.
pub const ERROR_CODE_BYTES_MAX: usize = 40;

/// How the client proves who it is to the token endpoint.
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 2.3.1).
    SecretBasic { secret: Secret },
    /// `client_id` and `client_secret` in the form body.
    SecretPost { secret: Secret },
    /// A JWT signed with the client's private key (RFC 7523 section 2.2).
    /// Built by [`ClientAuth::private_key_jwt`], which checks the key.
    PrivateKeyJwt {
        /// The PEM text; parsed anew for each assertion (see the module comment).
        pem: Secret,
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
        if !matches!(alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(format!("{alg:?} is not RS256 or ES256"));
        }
        // Parsed once here so a bad key fails at start-up; the parsed key is dropped.
        signing_key(pem, alg).map_err(|_| format!("not a PEM private key for {alg:?}"))?;
        Ok(ClientAuth::PrivateKeyJwt {
            pem: pem.clone(),
            alg,
            kid,
        })
    }
}

/// The parsed key, for one signature only (it does not wipe itself).
fn signing_key(pem: &Secret, alg: Algorithm) -> Result<EncodingKey, OAuthError> {
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.expose().as_bytes()),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.expose().as_bytes()),
        _ => return Err(OAuthError::Assertion),
    }
    .map_err(|_| OAuthError::Assertion)
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
    /// The certificate authorities the token endpoint may chain to.
    pub tls: crate::TrustRoots,
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

    /// A short reason fit for an unauthenticated readiness answer: no IdP
    /// free text (an `error_description` could echo anything), only an OAuth
    /// `error` code that looks like one.
    pub fn reason(&self) -> String {
        match self {
            OAuthError::Transport(kind) => format!("token endpoint unreachable ({kind})"),
            OAuthError::Rejected { status, error, .. } => {
                let code = if !error.is_empty()
                    && error.len() <= ERROR_CODE_BYTES_MAX
                    && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                {
                    error.as_str()
                } else {
                    "error"
                };
                format!("token endpoint refused the client ({status} {code})")
            }
            OAuthError::Status(status) => format!("token endpoint answered {status}"),
            OAuthError::Response(what) => format!("invalid token response ({what})"),
            OAuthError::Assertion => "cannot sign the client assertion".to_owned(),
        }
    }
}

struct Cached {
    token: Secret,
    refresh_at: i64,
}

/// The last fetch, kept apart from the token so that reading it never waits
/// for a fetch in flight.
#[derive(Default)]
struct Outcome {
    attempted_at: Option<i64>,
    result: Option<Result<(), OAuthError>>,
    failures: u32,
    /// Expiry of the cached token (none after `invalidate`).
    expires_at: Option<i64>,
}

/// What readiness may know about a token source: times, outcome, reason. No
/// token, secret or IdP free text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenHealth {
    /// A token can be had now: one is cached and unexpired, or the last fetch worked.
    pub ready: bool,
    /// A cached token is unexpired at the clock's now.
    pub token_valid: bool,
    /// When the cached token expires (Unix seconds).
    pub valid_until: Option<i64>,
    /// The last fetch attempt (Unix seconds), by an action or the probe.
    pub last_fetch_at: Option<i64>,
    pub last_fetch_ok: Option<bool>,
    /// Failed fetches in a row.
    pub consecutive_failures: u32,
    /// Why not ready, or why the last fetch failed.
    pub reason: Option<String>,
}

/// A cached, single-flight client-credentials token source.
pub struct TokenSource {
    cfg: ClientCredentials,
    http: reqwest::Client,
    clock: Arc<dyn IdentityClock>,
    cached: Mutex<Option<Cached>>,
    outcome: std::sync::Mutex<Outcome>,
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
        if !crate::http_url_without_userinfo(&cfg.token_url) {
            return Err("token_url must be an http(s) URL without user info".to_owned());
        }
        if cfg.client_id.is_empty() {
            return Err("client_id must not be empty".to_owned());
        }
        let http = cfg
            .tls
            .client_builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(TokenSource {
            cfg,
            http,
            clock: Arc::new(SystemIdentityClock),
            cached: Mutex::new(None),
            outcome: std::sync::Mutex::new(Outcome::default()),
        })
    }

    /// Reads time from `clock` instead of the wall clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn IdentityClock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn client_id(&self) -> &str {
        &self.cfg.client_id
    }

    pub fn scopes(&self) -> &[String] {
        &self.cfg.scopes
    }

    /// A valid access token, fetched if none is cached or the cached one is
    /// inside its refresh margin.
    pub async fn token(&self) -> Result<Secret, OAuthError> {
        // Held across the fetch: concurrent callers (and the probe) wait for one request.
        let mut cached = self.cached.lock().await;
        // Read after the lock: a caller that waited on a fetch sees its result as fresh.
        let now = self.clock.now_secs();
        if let Some(c) = cached.as_ref()
            && now < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let fetched = self.fetch().await;
        let mut outcome = self.outcome();
        outcome.attempted_at = Some(now);
        match fetched {
            Ok((token, expires_in)) => {
                let lifetime = expires_in.clamp(1, EXPIRES_IN_MAX_SECS);
                // A margin larger than half the life would refetch on every call.
                let margin = self.cfg.refresh_margin_secs.clamp(0, lifetime / 2);
                let expires_at = now.saturating_add(lifetime);
                *cached = Some(Cached {
                    token: token.clone(),
                    refresh_at: now.saturating_add(lifetime - margin),
                });
                outcome.result = Some(Ok(()));
                outcome.failures = 0;
                outcome.expires_at = Some(expires_at);
                Ok(token)
            }
            Err(e) => {
                outcome.result = Some(Err(e.clone()));
                outcome.failures = outcome.failures.saturating_add(1);
                // A token inside its margin is still good until it expires: the
                // next caller tries again, this one fails so the outbox retries.
                Err(e)
            }
        }
    }

    /// Obtains a token if none is cached (or it is due for refresh) without
    /// returning it: the background probe. Shares the fetch lock with
    /// [`TokenSource::token`], so it never duplicates a fetch.
    pub async fn probe(&self) -> Result<(), OAuthError> {
        self.token().await.map(drop)
    }

    /// Forgets the cached token (after the target answered 401 with it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
        self.outcome().expires_at = None;
    }

    /// The secret-free state of this source at the clock's now.
    pub fn health(&self) -> TokenHealth {
        let now = self.clock.now_secs();
        let o = self.outcome();
        let token_valid = o.expires_at.is_some_and(|t| now < t);
        let last_ok = o.result.as_ref().map(Result::is_ok);
        let ready = token_valid || last_ok == Some(true);
        let reason = match &o.result {
            Some(Err(e)) => Some(e.reason()),
            None if !token_valid => Some("no token obtained yet".to_owned()),
            _ => None,
        };
        TokenHealth {
            ready,
            token_valid,
            valid_until: o.expires_at,
            last_fetch_at: o.attempted_at,
            last_fetch_ok: last_ok,
            consecutive_failures: o.failures,
            reason,
        }
    }

    fn outcome(&self) -> std::sync::MutexGuard<'_, Outcome> {
        // A panic while holding it cannot leave it half-written (plain fields).
        self.outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn fetch(&self) -> Result<(Secret, i64), OAuthError> {
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
            ClientAuth::PrivateKeyJwt { pem, alg, kid } => {
                // `iat`/`exp` are read by the IdP against its own clock: wall
                // time, not the injected one (which may be simulated).
                let wall = SystemIdentityClock.now_secs();
                let assertion = self.assertion(pem, *alg, kid.clone(), wall)?;
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
                OAuthError::Transport(match crate::trust::certificate_failure(&e) {
                    Some(why) => why,
                    None if e.is_timeout() => "timeout",
                    None => "connect",
                })
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
        pem: &Secret,
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
        // Parsed for this signature only and dropped on return (module comment).
        let key = signing_key(pem, alg)?;
        jsonwebtoken::encode(&header, &claims, &key).map_err(|_| OAuthError::Assertion)
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
