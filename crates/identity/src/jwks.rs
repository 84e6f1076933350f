//! The issuer's key set, fetched from the configured URL only (never from a
//! URL inside a token), cached, refreshed on an unknown `kid` at most once per
//! `refresh_min_interval_secs`, and kept for `stale_max_secs` when the IdP is
//! unreachable. Time comes from the caller (`now`, Unix seconds).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::jwt::{self, AuthError, Caller, JwtPolicy, KeySet};

/// While no key set is held, the issuer is asked at most once per this many
/// seconds (or `refresh_min_interval_secs`, if shorter), whatever the traffic.
pub const NO_KEYS_RETRY_SECS: i64 = 5;

/// Largest JWKS document read, in bytes.
pub const JWKS_BODY_BYTES_MAX: usize = 256 * 1024;
/// Longest `timeout_ms` for one JWKS fetch.
pub const JWKS_TIMEOUT_MS_MAX: u64 = 60_000;
/// Longest time a fetched key set is used before it is fetched again.
pub const JWKS_MAX_AGE_SECS_MAX: u64 = 86_400;

/// How the key set is fetched and kept.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    /// `https://idp/.../keys`; `http://` is allowed for loopback tests only by the caller's config check.
    pub url: String,
    /// One fetch, connect to last byte.
    pub timeout_ms: u64,
    /// Refetch after this long even without an unknown `kid` (upper bound on
    /// how long a removed key stays trusted). `Cache-Control: max-age` may shorten it.
    pub max_age_secs: u64,
    /// Least time between two fetches caused by unknown `kid`s (an attacker
    /// sending random kids must not turn us into a load generator for the IdP).
    pub refresh_min_interval_secs: u64,
    /// While the IdP is unreachable, keep using the last good set this long
    /// after it was fetched; then fail closed.
    pub stale_max_secs: u64,
    /// The certificate authorities the key set's server may chain to.
    pub tls: crate::TrustRoots,
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            url: String::new(),
            timeout_ms: 5_000,
            max_age_secs: 3_600,
            refresh_min_interval_secs: 30,
            stale_max_secs: 86_400,
            tls: crate::TrustRoots::bundled(),
        }
    }
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    fetched_at: i64,
    /// When the set should be fetched again (fetched_at + max-age).
    fresh_until: i64,
    /// Last fetch attempt, successful or not (rate limit).
    attempted_at: Option<i64>,
}

/// Validates bearer tokens for one issuer.
pub struct Authenticator {
    policy: JwtPolicy,
    cfg: JwksConfig,
    http: reqwest::Client,
    state: Mutex<State>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.policy.issuer)
            .field("jwks_url", &self.cfg.url)
            .finish()
    }
}

/// Why an [`Authenticator`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("policy: {0}")]
    Policy(#[from] jwt::PolicyError),
    #[error("jwks.timeout_ms must be 1..={JWKS_TIMEOUT_MS_MAX}")]
    Timeout,
    #[error("jwks.max_age_secs must be 1..={JWKS_MAX_AGE_SECS_MAX}")]
    MaxAge,
    #[error("jwks.url must be an http(s) URL without user info")]
    Url,
    #[error("http client: {0}")]
    Http(String),
}

impl Authenticator {
    pub fn new(policy: JwtPolicy, cfg: JwksConfig) -> Result<Self, BuildError> {
        policy.validate()?;
        if cfg.timeout_ms == 0 || cfg.timeout_ms > JWKS_TIMEOUT_MS_MAX {
            return Err(BuildError::Timeout);
        }
        if cfg.max_age_secs == 0 || cfg.max_age_secs > JWKS_MAX_AGE_SECS_MAX {
            return Err(BuildError::MaxAge);
        }
        if !crate::http_url_without_userinfo(&cfg.url) {
            return Err(BuildError::Url);
        }
        let http = cfg
            .tls
            .client_builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            // The key set URL is ours; a redirect elsewhere is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BuildError::Http(e.to_string()))?;
        Ok(Authenticator {
            policy,
            cfg,
            http,
            state: Mutex::new(State::default()),
        })
    }

    pub fn policy(&self) -> &JwtPolicy {
        &self.policy
    }

    /// Whether a usable key set is held at `now` (readiness).
    pub async fn ready(&self, now: i64) -> bool {
        let st = self.state.lock().await;
        st.keys.is_some() && now < st.fetched_at.saturating_add(stale_secs(&self.cfg))
    }

    /// Fetches the key set if a fetch is due (never more often than the
    /// minimum interval, held keys or not): the background warm-up that
    /// keeps readiness current without a request having to fetch.
    pub async fn warm(&self, now: i64) {
        let mut st = self.state.lock().await;
        if st.keys.is_some() && now < st.fresh_until {
            return;
        }
        if self.may_fetch(&st, now)
            && let Err(e) = self.fetch_into(&mut st, now).await
        {
            tracing::warn!(jwks_url = %self.cfg.url, error = %e, "cannot fetch the issuer's key set");
        }
    }

    /// Whether a fetch may start at `now`: at most one per
    /// `refresh_min_interval_secs` while a key set is held, and at most one
    /// per [`NO_KEYS_RETRY_SECS`] (or the interval, if shorter) while none
    /// is: a dead issuer is not asked once per request. The state's mutex
    /// makes it single-flight: a request that waited for a fetch finds it
    /// attempted and does not start another.
    fn may_fetch(&self, st: &State, now: i64) -> bool {
        let mut interval = i64::try_from(self.cfg.refresh_min_interval_secs).unwrap_or(i64::MAX);
        if st.keys.is_none() {
            interval = interval.min(NO_KEYS_RETRY_SECS);
        }
        st.attempted_at
            .is_none_or(|t| now >= t.saturating_add(interval))
    }

    /// Fetches the key set now (start-up warm-up; readiness).
    pub async fn refresh(&self, now: i64) -> Result<usize, AuthError> {
        let mut st = self.state.lock().await;
        self.fetch_into(&mut st, now).await?;
        Ok(st.keys.as_ref().map_or(0, |k| k.len()))
    }

    /// Verifies a bearer token: the key set is (re)fetched when it is stale,
    /// and once more (rate-limited) when the token names an unknown `kid`.
    pub async fn authenticate(&self, token: &str, now: i64) -> Result<Caller, AuthError> {
        // Cheap refusals first, before any key set work.
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > jwt::TOKEN_BYTES_MAX {
            return Err(AuthError::TooLarge);
        }
        // A string that is not even a JWS (`Bearer x`) costs no key set work.
        if token.split('.').count() != 3 {
            return Err(AuthError::Malformed("expected three dot-separated parts"));
        }
        let keys = self.current(now).await?;
        match jwt::verify(token, &keys, &self.policy, now) {
            Err(AuthError::UnknownKey) => {
                let Some(keys) = self.refresh_for_unknown_kid(now).await? else {
                    return Err(AuthError::UnknownKey);
                };
                jwt::verify(token, &keys, &self.policy, now)
            }
            other => other,
        }
    }

    async fn current(&self, now: i64) -> Result<Arc<KeySet>, AuthError> {
        let mut st = self.state.lock().await;
        if let Some(keys) = &st.keys
            && now < st.fresh_until
        {
            return Ok(keys.clone());
        }
        // Stale or never fetched: try, rate-limited in either case.
        if self.may_fetch(&st, now)
            && let Err(e) = self.fetch_into(&mut st, now).await
        {
            tracing::warn!(jwks_url = %self.cfg.url, error = %e, "cannot refresh the issuer's key set");
        }
        match &st.keys {
            Some(keys) if now < st.fetched_at.saturating_add(stale_secs(&self.cfg)) => {
                Ok(keys.clone())
            }
            _ => Err(AuthError::KeysUnavailable),
        }
    }

    /// `Some(new set)` if a fetch was allowed and succeeded.
    async fn refresh_for_unknown_kid(&self, now: i64) -> Result<Option<Arc<KeySet>>, AuthError> {
        let mut st = self.state.lock().await;
        let interval = i64::try_from(self.cfg.refresh_min_interval_secs).unwrap_or(i64::MAX);
        if st
            .attempted_at
            .is_some_and(|t| now < t.saturating_add(interval))
        {
            return Ok(None);
        }
        match self.fetch_into(&mut st, now).await {
            Ok(()) => Ok(st.keys.clone()),
            Err(e) => {
                tracing::warn!(jwks_url = %self.cfg.url, error = %e, "cannot refresh the issuer's key set");
                Ok(None)
            }
        }
    }

    async fn fetch_into(&self, st: &mut State, now: i64) -> Result<(), FetchError> {
        st.attempted_at = Some(now);
        let (keys, max_age) = self.fetch().await?;
        let age = max_age
            .unwrap_or(self.cfg.max_age_secs)
            .clamp(1, self.cfg.max_age_secs);
        tracing::info!(jwks_url = %self.cfg.url, kids = ?keys.kids(), "fetched the issuer's key set");
        st.keys = Some(Arc::new(keys));
        st.fetched_at = now;
        st.fresh_until = now.saturating_add(i64::try_from(age).unwrap_or(i64::MAX));
        Ok(())
    }

    async fn fetch(&self) -> Result<(KeySet, Option<u64>), FetchError> {
        let mut resp = self
            .http
            .get(&self.cfg.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| FetchError::Transport(without_url(&e)))?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let max_age = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age_of);
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| FetchError::Transport(without_url(&e)))?
        {
            if body.len() + chunk.len() > JWKS_BODY_BYTES_MAX {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let keys = KeySet::from_jwks(&body).map_err(FetchError::Jwks)?;
        Ok((keys, max_age))
    }
}

fn stale_secs(cfg: &JwksConfig) -> i64 {
    i64::try_from(cfg.stale_max_secs.max(cfg.max_age_secs)).unwrap_or(i64::MAX)
}

/// `Cache-Control: max-age=N` (the only directive we use; `no-store` means 0 -> 1 s floor).
fn max_age_of(v: &str) -> Option<u64> {
    v.split(',').find_map(|d| {
        let d = d.trim();
        if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
            return Some(0);
        }
        d.strip_prefix("max-age=")
            .and_then(|n| n.trim().parse::<u64>().ok())
    })
}

fn without_url(e: &reqwest::Error) -> String {
    if let Some(why) = crate::trust::certificate_failure(e) {
        return why.to_owned();
    }
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    kind.to_owned()
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("jwks fetch failed: {0}")]
    Transport(String),
    #[error("jwks endpoint answered {0}")]
    Status(u16),
    #[error("jwks larger than {JWKS_BODY_BYTES_MAX} bytes")]
    TooLarge,
    #[error("jwks: {0}")]
    Jwks(jwt::JwksError),
}

impl From<FetchError> for AuthError {
    fn from(_: FetchError) -> Self {
        AuthError::KeysUnavailable
    }
}

#[cfg(test)]
mod tests {
    use super::max_age_of;

    #[test]
    fn cache_control_max_age_is_read_and_no_store_means_refetch() {
        assert_eq!(max_age_of("public, max-age=600"), Some(600));
        assert_eq!(max_age_of("no-store"), Some(0));
        assert_eq!(max_age_of("private"), None);
    }
}
