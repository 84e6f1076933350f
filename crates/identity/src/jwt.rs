//! JWT access-token verification (RFC 8725 practice, RFC 9068 profile), pure:
//! the key set and `now` are parameters, so every attack case is a plain test.
//!
//! The order is deliberate: size, shape and header first (cheap, and nothing
//! attacker-chosen is acted on), then the key by `kid` from *our* key set only
//! (`jku`, `x5u`, `jwk` and `x5c` headers are never followed), then the signature
//! with the algorithm the header names *and* the key allows, and only then the
//! claims, against an injected clock.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Serialize;
use serde_json::{Map, Value};

/// Largest bearer token accepted, in bytes (RFC 9068 tokens are usually < 2 KiB).
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Largest clock skew that may be configured, in seconds.
pub const LEEWAY_SECS_MAX: u64 = 300;
/// Default longest token lifetime accepted (`exp - iat`): a day.
pub const MAX_LIFETIME_SECS_DEFAULT: u64 = 86_400;
/// Shortest and longest `max_lifetime_secs` a policy may set (a minute, 30 days).
pub const MAX_LIFETIME_SECS_RANGE: std::ops::RangeInclusive<u64> = 60..=30 * 86_400;
/// Keys kept from one JWKS document; further keys are ignored.
pub const JWKS_KEYS_MAX: usize = 32;
/// Scopes kept from one token; a token with more is rejected.
pub const SCOPES_MAX: usize = 64;
/// Longest `sub`, `client_id` or scope accepted from a token, in bytes.
pub const CLAIM_BYTES_MAX: usize = 256;

/// The algorithms that may ever be allowed: asymmetric only. HMAC would let
/// anyone holding the public key sign tokens; `none` signs nothing.
pub const ALGORITHMS_SUPPORTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The scopes triage-gate's routes require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Scope {
    #[serde(rename = "events:write")]
    EventsWrite,
    #[serde(rename = "review:decide")]
    ReviewDecide,
    #[serde(rename = "runs:read")]
    RunsRead,
    #[serde(rename = "audit:read")]
    AuditRead,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsWrite => "events:write",
            Scope::ReviewDecide => "review:decide",
            Scope::RunsRead => "runs:read",
            Scope::AuditRead => "audit:read",
            Scope::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a valid token must look like.
#[derive(Debug, Clone)]
pub struct JwtPolicy {
    /// Exact `iss`.
    pub issuer: String,
    /// `aud` must contain at least one of these.
    pub audiences: Vec<String>,
    /// Allowed `alg` values, a subset of [`ALGORITHMS_SUPPORTED`].
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, at most [`LEEWAY_SECS_MAX`].
    pub leeway_secs: u64,
    /// Required `typ` header (RFC 9068 says `at+jwt`; not every IdP sends it).
    pub required_typ: Option<String>,
    /// Longest lifetime accepted: `exp - iat`, or `exp - now` when the
    /// token has no `iat` (a token valid until the year 9999 is refused).
    pub max_lifetime_secs: u64,
}

/// Why a [`JwtPolicy`] cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("issuer must not be empty")]
    EmptyIssuer,
    #[error("at least one audience is required")]
    NoAudience,
    #[error("at least one algorithm is required")]
    NoAlgorithm,
    #[error(
        "algorithm {0:?} is not allowed (asymmetric only: RS256/384/512, PS256/384/512, ES256/384, EdDSA)"
    )]
    Algorithm(Algorithm),
    #[error("leeway_secs {0} exceeds {LEEWAY_SECS_MAX}")]
    Leeway(u64),
    #[error("max_lifetime_secs {0} is outside 60..=2592000")]
    MaxLifetime(u64),
}

impl JwtPolicy {
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.issuer.trim().is_empty() {
            return Err(PolicyError::EmptyIssuer);
        }
        if self.audiences.iter().all(|a| a.trim().is_empty()) {
            return Err(PolicyError::NoAudience);
        }
        if self.algorithms.is_empty() {
            return Err(PolicyError::NoAlgorithm);
        }
        if let Some(a) = self
            .algorithms
            .iter()
            .find(|a| !ALGORITHMS_SUPPORTED.contains(a))
        {
            return Err(PolicyError::Algorithm(*a));
        }
        if self.leeway_secs > LEEWAY_SECS_MAX {
            return Err(PolicyError::Leeway(self.leeway_secs));
        }
        if !MAX_LIFETIME_SECS_RANGE.contains(&self.max_lifetime_secs) {
            return Err(PolicyError::MaxLifetime(self.max_lifetime_secs));
        }
        Ok(())
    }
}

/// Why a token was refused. `code()` is stable and safe to show the caller;
/// nothing here carries the token or a claim value beyond a bounded name.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("token larger than {TOKEN_BYTES_MAX} bytes")]
    TooLarge,
    #[error("token is not a well-formed JWS compact serialization: {0}")]
    Malformed(&'static str),
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("token type {0:?} is not the required type")]
    WrongType(Option<String>),
    #[error("no key in the issuer's key set matches the token's key id")]
    UnknownKey,
    #[error("the key does not allow algorithm {0}")]
    KeyMismatch(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("issuer is not the configured issuer")]
    WrongIssuer,
    #[error("audience does not include this service")]
    WrongAudience,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token lifetime exceeds the configured maximum")]
    LifetimeTooLong,
    #[error("required claim {0} is missing or invalid")]
    Claim(&'static str),
    #[error("scope {0} is required")]
    MissingScope(Scope),
    #[error("the issuer's keys cannot be fetched")]
    KeysUnavailable,
}

impl AuthError {
    /// Stable reason code (for problem+json, metrics and audit).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::TooLarge => "token_too_large",
            AuthError::Malformed(_) => "malformed_token",
            AuthError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            AuthError::WrongType(_) => "wrong_token_type",
            AuthError::UnknownKey => "unknown_key",
            AuthError::KeyMismatch(_) => "key_algorithm_mismatch",
            AuthError::BadSignature => "bad_signature",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::LifetimeTooLong => "token_lifetime_too_long",
            AuthError::Claim(_) => "invalid_claim",
            AuthError::MissingScope(_) => "insufficient_scope",
            AuthError::KeysUnavailable => "keys_unavailable",
        }
    }

    /// HTTP status: 401 for a bad or missing token, 403 for a good token
    /// without the scope, 503 when we cannot check (fail closed, retry later).
    pub fn status(&self) -> u16 {
        match self {
            AuthError::MissingScope(_) => 403,
            AuthError::KeysUnavailable => 503,
            _ => 401,
        }
    }
}

/// The verified caller: who submitted an event or decided a review item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub issuer: String,
    pub sub: String,
    /// `client_id` (RFC 9068), else `azp`, else Okta's `cid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub scopes: BTreeSet<String>,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}

impl Caller {
    /// `admin` holds every scope.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(scope.as_str()) || self.scopes.contains(Scope::Admin.as_str())
    }

    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope))
        }
    }

    /// A short, bounded label for logs and audit: `sub` (and client).
    pub fn label(&self) -> String {
        match &self.client_id {
            Some(c) if c != &self.sub => format!("{} (client {c})", self.sub),
            _ => self.sub.clone(),
        }
    }
}

/// One usable public key.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    family: Family,
    /// The JWK's own `alg`, when it names one: then only that algorithm.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Okp,
}

fn family_of(alg: Algorithm) -> Option<Family> {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some(Family::Rsa),
        Algorithm::ES256 | Algorithm::ES384 => Some(Family::Ec),
        Algorithm::EdDSA => Some(Family::Okp),
        // Symmetric algorithms are never accepted (the HS256 confusion), and
        // an algorithm a later jsonwebtoken adds is refused until named here.
        _ => None,
    }
}

/// The issuer's published signing keys (a parsed JWKS), symmetric keys excluded.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids())
            .finish()
    }
}

/// Why a JWKS document was refused as a whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("JWKS is not JSON with a `keys` array")]
    Shape,
    #[error("JWKS holds no usable signing key ({0} skipped)")]
    NoUsableKey(usize),
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot be used for signature
    /// verification (symmetric `oct`, `use: enc`, unknown types, broken
    /// parameters) are skipped, not fatal: an IdP may publish several kinds.
    pub fn from_jwks(bytes: &[u8]) -> Result<KeySet, JwksError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwksError::Shape)?;
        let raw = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::Shape)?;
        let mut keys = Vec::new();
        let mut skipped = 0usize;
        for v in raw.iter() {
            if keys.len() >= JWKS_KEYS_MAX {
                skipped += 1;
                continue;
            }
            match usable_key(v) {
                Some(k) => keys.push(k),
                None => skipped += 1,
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(skipped));
        }
        Ok(KeySet { keys })
    }

    /// Key ids, for logs and readiness.
    pub fn kids(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.kid.clone().unwrap_or_else(|| "-".to_owned()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            // No kid: only unambiguous with a single key.
            None => match self.keys.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        }
    }
}

fn usable_key(v: &Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(v.clone()).ok()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Family::Rsa,
        AlgorithmParameters::EllipticCurve(_) => Family::Ec,
        AlgorithmParameters::OctetKeyPair(_) => Family::Okp,
        // Never accept a symmetric key from a key set (the HS256 confusion),
        // nor a key type this code does not name.
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => {
            let alg = key_algorithm(a)?;
            if family_of(alg) != Some(family) {
                return None;
            }
            Some(alg)
        }
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        family,
        alg,
        key,
    })
}

fn key_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// An allowed algorithm by its JOSE name (`RS256`, `EdDSA`, ...); `None` for
/// anything else, HMAC and `none` included.
pub fn algorithm_from_name(name: &str) -> Option<Algorithm> {
    ALGORITHMS_SUPPORTED
        .iter()
        .copied()
        .find(|a| format!("{a:?}") == name)
}

/// The key id a token names, if its header parses (for JWKS refresh decisions).
pub fn token_kid(token: &str) -> Option<String> {
    header_of(token)
        .ok()?
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn header_of(token: &str) -> Result<Map<String, Value>, AuthError> {
    let mut parts = token.split('.');
    let (Some(h), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("expected three dot-separated parts"));
    };
    // Shape before cryptography: a part that is not base64url is malformed, not forged.
    let b64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !b64url(payload) || !b64url(sig) {
        return Err(AuthError::Malformed("a part is not base64url"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| AuthError::Malformed("header is not base64url"))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(AuthError::Malformed("header is not a JSON object")),
    }
}

/// Verifies `token` against `keys` and `policy` at `now_unix` (seconds).
pub fn verify(
    token: &str,
    keys: &KeySet,
    policy: &JwtPolicy,
    now_unix: i64,
) -> Result<Caller, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > TOKEN_BYTES_MAX {
        return Err(AuthError::TooLarge);
    }
    let header = header_of(token)?;
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(AuthError::Malformed("header has no alg"))?;
    let alg = algorithm_from_name(alg_name)
        .filter(|a| policy.algorithms.contains(a))
        .ok_or_else(|| AuthError::AlgorithmNotAllowed(bounded(alg_name)))?;
    // `crit` names extensions we would have to understand (RFC 7515 4.1.11): we understand none.
    if header.contains_key("crit") {
        return Err(AuthError::Malformed(
            "critical header extensions are not supported",
        ));
    }
    if let Some(required) = &policy.required_typ {
        let typ = header.get("typ").and_then(Value::as_str);
        let ok = typ.is_some_and(|t| {
            t.eq_ignore_ascii_case(required)
                || t.eq_ignore_ascii_case(&format!("application/{required}"))
        });
        if !ok {
            return Err(AuthError::WrongType(typ.map(bounded)));
        }
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(AuthError::Malformed("kid is not a string")),
    };
    let key = keys.find(kid).ok_or(AuthError::UnknownKey)?;
    if family_of(alg) != Some(key.family) || key.alg.is_some_and(|k| k != alg) {
        return Err(AuthError::KeyMismatch(bounded(alg_name)));
    }

    // Signature only: the claims are checked below against the injected clock.
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::BadSignature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    AuthError::KeyMismatch(bounded(alg_name))
                }
                jsonwebtoken::errors::ErrorKind::Base64(_) => {
                    AuthError::Malformed("a part is not base64url")
                }
                jsonwebtoken::errors::ErrorKind::Json(_)
                | jsonwebtoken::errors::ErrorKind::Utf8(_) => {
                    AuthError::Malformed("claims are not a JSON object")
                }
                _ => AuthError::BadSignature,
            }
        })?;
    check_claims(&data.claims, policy, now_unix)
}

fn check_claims(
    claims: &Map<String, Value>,
    policy: &JwtPolicy,
    now: i64,
) -> Result<Caller, AuthError> {
    let leeway = i64::try_from(policy.leeway_secs).unwrap_or(0);
    let iss = claims.get("iss").and_then(Value::as_str);
    if iss != Some(policy.issuer.as_str()) {
        return Err(AuthError::WrongIssuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => policy.audiences.iter().any(|p| p == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| policy.audiences.iter().any(|p| p == a)),
        _ => false,
    };
    if !aud_ok {
        return Err(AuthError::WrongAudience);
    }
    let exp = numeric_date(claims, "exp")?.ok_or(AuthError::Claim("exp"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(AuthError::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && now < nbf.saturating_sub(leeway)
    {
        return Err(AuthError::NotYetValid);
    }
    let iat = numeric_date(claims, "iat")?;
    if let Some(iat) = iat
        && iat > now.saturating_add(leeway)
    {
        return Err(AuthError::IssuedInFuture);
    }
    // A bounded lifetime: a leaked token with `exp` far away is not a key
    // for ever. Without `iat`, what is left of it counts.
    let lifetime = exp.saturating_sub(iat.unwrap_or(now));
    let max = i64::try_from(policy.max_lifetime_secs).unwrap_or(i64::MAX);
    if lifetime > max.saturating_add(leeway) {
        return Err(AuthError::LifetimeTooLong);
    }
    let sub = short_claim(claims, "sub")?.ok_or(AuthError::Claim("sub"))?;
    let client_id = match short_claim(claims, "client_id")? {
        Some(c) => Some(c),
        None => match short_claim(claims, "azp")? {
            Some(c) => Some(c),
            None => short_claim(claims, "cid")?,
        },
    };
    let scopes = scopes_of(claims)?;
    Ok(Caller {
        issuer: policy.issuer.clone(),
        sub,
        client_id,
        scopes,
        expires_at: exp,
    })
}

/// RFC 7519 NumericDate: a JSON number of seconds (fractions truncated).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.trunc() as i64)
            })
            .map(Some)
            .ok_or(AuthError::Claim(name)),
        Some(_) => Err(AuthError::Claim(name)),
    }
}

fn short_claim(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= CLAIM_BYTES_MAX => {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(AuthError::Claim(name)),
    }
}

/// `scope` (space-separated string, RFC 9068/8693) or `scp` (array, Okta/Azure).
fn scopes_of(claims: &Map<String, Value>) -> Result<BTreeSet<String>, AuthError> {
    let mut out = BTreeSet::new();
    let mut add = |s: &str| -> Result<(), AuthError> {
        if s.len() > CLAIM_BYTES_MAX || out.len() >= SCOPES_MAX {
            return Err(AuthError::Claim("scope"));
        }
        out.insert(s.to_owned());
        Ok(())
    };
    match claims.get("scope") {
        None => {}
        Some(Value::String(s)) => {
            for part in s.split(' ').filter(|p| !p.is_empty()) {
                add(part)?;
            }
        }
        Some(_) => return Err(AuthError::Claim("scope")),
    }
    match claims.get("scp") {
        None => {}
        Some(Value::Array(list)) => {
            for v in list {
                add(v.as_str().ok_or(AuthError::Claim("scp"))?)?;
            }
        }
        Some(Value::String(s)) => {
            for part in s.split(' ').filter(|p| !p.is_empty()) {
                add(part)?;
            }
        }
        Some(_) => return Err(AuthError::Claim("scp")),
    }
    Ok(out)
}

/// Attacker-chosen text shown back: at most 32 printable characters.
fn bounded(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect()
}
