//! Console sign-in and sessions (`identity.console`, docs/console.md).
//!
//! - `inbound` with `identity.inbound.mode: jwt`: the login form takes a bearer
//!   token, verified by the API's own authenticator (issuer, audience, keys,
//!   expiry); the token needs `runs:read`. The session keeps the token's
//!   subject, client and scopes (never the token) and ends at the token's `exp`
//!   or after `session_ttl_secs`, whichever is first.
//! - `inbound` with `mode: none` (acknowledged as anonymous): like the API, no
//!   sign-in; a session is still set, for the CSRF token.
//! - `proxy`: a reverse proxy signs the user in and names them in
//!   `proxy.user_header`; the header is believed only from a peer address in
//!   `proxy.trusted_proxies`. Scopes come from `roles`.
//!
//! The session is an AES-256-GCM encrypted and authenticated cookie
//! (`axum-extra`'s private jar), `HttpOnly`, `SameSite=Strict`, `Secure`
//! unless `cookie_secure: false`, path `/ui`. Every form carries the session's
//! CSRF token (compared in constant time), and a POST that the browser marks
//! as cross-site (`Sec-Fetch-Site`) is refused before any handler runs.
//!
//! The sign-in form is protected too (login CSRF): `GET /ui/login` sets a
//! short-lived `tg_login` cookie whose random token the form carries back,
//! and a POST whose `Origin` (or, without one, `Referer`) names another host
//! is refused. Each session has an id; signing out records it in the store
//! (`console_revoked`, until the session would have expired), so a copied
//! cookie stops working at sign-out on every replica.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use axum::Extension;
use axum::extract::{ConnectInfo, Form, Query, Request, State};
use axum::http::{HeaderName, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::PrivateCookieJar;
use axum_extra::extract::cookie::{Cookie, Key, SameSite};
use rand_core::RngCore as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use tg_config::{ConsoleConfig, ConsoleMode, SecretSource};
use tg_identity::{Caller, Scope};

use super::UiError;
use super::layout;
use crate::AppState;
use crate::auth::Inbound;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "tg_console";
/// Name of the one-shot message cookie (the result of the last action).
pub const FLASH_COOKIE: &str = "tg_flash";
/// Name of the sign-in form's token cookie (login CSRF).
pub const LOGIN_COOKIE: &str = "tg_login";
/// How long a sign-in form stays usable, in seconds.
pub const LOGIN_FORM_TTL_SECS: i64 = 600;
/// Longest bearer token the login form accepts, in bytes.
pub const TOKEN_BYTES_MAX: usize = 16_384;
/// Longest flash message kept, in characters.
pub const FLASH_CHARS_MAX: usize = 600;
/// Random bytes in a CSRF token.
const CSRF_BYTES: usize = 32;
/// The issuer recorded for a proxy-named user.
pub const PROXY_ISSUER: &str = "proxy";

/// The console's identity settings, built once (`identity.console`).
#[derive(Clone)]
pub struct ConsoleSettings {
    pub mode: ConsoleMode,
    pub(crate) config: ConsoleConfig,
    pub(crate) user_header: HeaderName,
    pub(crate) key: Key,
    /// ServiceNow instance, for links to incidents (`actions.servicenow.base_url`).
    pub(crate) servicenow_url: Option<String>,
}

impl std::fmt::Debug for ConsoleSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSettings")
            .field("mode", &self.mode)
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl ConsoleSettings {
    pub fn is_off(&self) -> bool {
        self.mode == ConsoleMode::Off
    }
}

/// Builds the settings: the session key from `session_key` (at least 64
/// bytes) or a fresh random key.
pub fn settings(
    config: &tg_config::Config,
    secrets: &dyn SecretSource,
) -> anyhow::Result<ConsoleSettings> {
    let c = &config.identity.console;
    let key = match &c.session_key {
        Some(r) => {
            let s = secrets
                .read(r)
                .map_err(|e| anyhow::anyhow!("identity.console.session_key: {e}"))?;
            Key::try_from(s.expose().as_bytes()).map_err(|_| {
                anyhow::anyhow!(
                    "identity.console.session_key: shorter than {} bytes",
                    tg_config::console::SESSION_KEY_BYTES_MIN
                )
            })?
        }
        None => Key::generate(),
    };
    let user_header = HeaderName::try_from(c.proxy.user_header.as_str())
        .map_err(|e| anyhow::anyhow!("identity.console.proxy.user_header: {e}"))?;
    Ok(ConsoleSettings {
        mode: c.mode,
        config: c.clone(),
        user_header,
        key,
        servicenow_url: config
            .actions
            .servicenow
            .as_ref()
            .map(|s| s.base_url.trim_end_matches('/').to_owned()),
    })
}

/// What the session cookie holds (encrypted): who, what they may do, the
/// CSRF token and the end. Never a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    iss: String,
    sub: String,
    #[serde(default)]
    client_id: Option<String>,
    scopes: BTreeSet<String>,
    csrf: String,
    /// The session's id: signing out revokes it in the store. A cookie
    /// without one (made before ids existed) is no session.
    #[serde(default)]
    sid: String,
    /// Unix seconds (the server's clock).
    exp: i64,
    /// Identity disabled (`identity.inbound.mode: none`).
    anonymous: bool,
}

/// The signed-in user of a console request.
#[derive(Debug, Clone)]
pub(crate) struct User {
    /// `None`: identity disabled (the API's anonymous mode).
    pub caller: Option<Caller>,
    csrf: String,
    /// The session's id and end (signing out revokes it until then).
    sid: String,
    expires_at: i64,
    /// Whether signing out means anything (token sessions).
    pub can_sign_out: bool,
}

impl User {
    /// The label the audit trail records, exactly as for an API caller.
    pub fn label(&self) -> String {
        crate::auth::submitted_by(self.caller.as_ref())
            .unwrap_or_else(|| "anonymous (identity disabled)".to_owned())
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.caller.as_ref().is_none_or(|c| c.has(scope))
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether a form's token is this session's (constant time).
    pub fn csrf_ok(&self, token: &str) -> bool {
        !token.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(token.as_bytes()))
    }

    /// The caller as the API handlers take it.
    pub fn extension(&self) -> Option<Extension<Caller>> {
        self.caller.clone().map(Extension)
    }

    /// Refuses unless the user holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), UiError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(UiError::forbidden(scope))
        }
    }

    /// Refuses a form whose CSRF token is not this session's.
    pub fn require_csrf(&self, token: &str) -> Result<(), UiError> {
        if self.csrf_ok(token) {
            Ok(())
        } else {
            Err(csrf_refused())
        }
    }
}

fn csrf_refused() -> UiError {
    UiError::new(
        StatusCode::FORBIDDEN,
        "Form expired",
        "the form's security token does not match your session; reload the page and try again",
    )
}

fn random_hex() -> String {
    let mut b = [0u8; CSRF_BYTES];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

impl Session {
    fn user(&self) -> User {
        User {
            caller: (!self.anonymous).then(|| Caller {
                issuer: self.iss.clone(),
                sub: self.sub.clone(),
                client_id: self.client_id.clone(),
                scopes: self.scopes.clone(),
                expires_at: self.exp,
            }),
            csrf: self.csrf.clone(),
            sid: self.sid.clone(),
            expires_at: self.exp,
            can_sign_out: !self.anonymous && self.iss != PROXY_ISSUER,
        }
    }

    fn cookie(&self, secure: bool) -> Option<Cookie<'static>> {
        let value = serde_json::to_string(self).ok()?;
        Some(
            Cookie::build((SESSION_COOKIE, value))
                .path("/ui")
                .http_only(true)
                .secure(secure)
                .same_site(SameSite::Strict)
                .build(),
        )
    }
}

fn read_session(jar: &PrivateCookieJar, now: i64) -> Option<Session> {
    jar.get(SESSION_COOKIE)
        .and_then(|c| serde_json::from_str::<Session>(c.value()).ok())
        .filter(|s| s.exp > now && !s.sid.is_empty())
}

/// The user a trusted proxy names, if the peer is one and the header is sane.
fn proxy_user(state: &AppState, req: &Request) -> Option<String> {
    let cs = &state.pipeline.console;
    let peer: IpAddr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()?
        .0
        .ip()
        .to_canonical();
    if !cs
        .config
        .proxy
        .trusted_proxies
        .iter()
        .any(|t| t.to_canonical() == peer)
    {
        return None;
    }
    let mut values = req.headers().get_all(&cs.user_header).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return None;
    };
    let name = v.to_str().ok()?.trim();
    (!name.is_empty()
        && name.len() <= tg_config::console::PROXY_USER_BYTES_MAX
        && !name.chars().any(char::is_control))
    .then(|| name.to_owned())
}

/// The middleware of every signed-in page: finds (or, where no sign-in is
/// needed, starts) the session, refuses cross-site posts, requires `runs:read`.
pub(crate) async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let cs = &state.pipeline.console;
    let jar = PrivateCookieJar::from_headers(req.headers(), cs.key.clone());
    let now = state.clock.now().timestamp();
    let ttl = i64::try_from(cs.config.session_ttl_secs).unwrap_or(i64::MAX / 2);
    let is_post = req.method() == Method::POST;
    if is_post && cross_site(&req) {
        return csrf_refused().into_response();
    }
    let mut session = read_session(&jar, now);
    if let Some(s) = &session {
        match state.store.console_session_revoked(&s.sid).await {
            Ok(false) => {}
            Ok(true) => session = None,
            // Fail closed: a session whose revocation cannot be checked is not used.
            Err(e) => {
                tracing::warn!(error = %e, "cannot check console session revocation");
                return UiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    "the session cannot be checked now; retry in a moment",
                )
                .into_response();
            }
        }
    }
    let (session, fresh) = match (cs.mode, &state.pipeline.inbound) {
        (ConsoleMode::Off, _) => return UiError::not_found("page").into_response(),
        (ConsoleMode::Inbound, Inbound::Disabled) => match session {
            Some(s) if s.anonymous => (s, false),
            _ => (
                Session {
                    iss: String::new(),
                    sub: String::new(),
                    client_id: None,
                    scopes: BTreeSet::new(),
                    csrf: random_hex(),
                    sid: random_hex(),
                    exp: now.saturating_add(ttl),
                    anonymous: true,
                },
                true,
            ),
        },
        (ConsoleMode::Inbound, Inbound::Jwt(_)) => match session {
            Some(s) if !s.anonymous && s.iss != PROXY_ISSUER => (s, false),
            _ if is_post => {
                return UiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Signed out",
                    "your session ended; sign in again (nothing was changed)",
                )
                .into_response();
            }
            _ => {
                let next = req
                    .uri()
                    .path_and_query()
                    .map_or("/ui/now", |p| p.as_str())
                    .to_owned();
                let to = format!(
                    "/ui/login?next={}",
                    url_encode(if safe_next(&next) { &next } else { "/ui/now" })
                );
                return Redirect::to(&to).into_response();
            }
        },
        (ConsoleMode::Proxy, _) => {
            let Some(name) = proxy_user(&state, &req) else {
                return UiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Sign in through the proxy",
                    "this console is behind a signing-in proxy; open it through the proxy's address",
                )
                .into_response();
            };
            let scopes: BTreeSet<String> = cs.config.scopes_of(&name).iter().cloned().collect();
            match session {
                // Scopes are read from the configuration on every request.
                Some(s) if s.iss == PROXY_ISSUER && s.sub == name => (
                    Session {
                        scopes,
                        exp: now.saturating_add(ttl),
                        ..s
                    },
                    false,
                ),
                _ => (
                    Session {
                        iss: PROXY_ISSUER.to_owned(),
                        sub: name,
                        client_id: None,
                        scopes,
                        csrf: random_hex(),
                        sid: random_hex(),
                        exp: now.saturating_add(ttl),
                        anonymous: false,
                    },
                    true,
                ),
            }
        }
    };
    let user = session.user();
    if !user.has(Scope::RunsRead) {
        return UiError::forbidden(Scope::RunsRead).into_response();
    }
    if fresh && is_post {
        // A post needs the token of a session the browser already had.
        return csrf_refused().into_response();
    }
    req.extensions_mut().insert(user);
    let resp = next.run(req).await;
    match fresh
        .then(|| session.cookie(cs.config.cookie_secure))
        .flatten()
    {
        Some(c) => (jar.add(c), resp).into_response(),
        None => resp,
    }
}

/// A request the browser says came from another site (`Sec-Fetch-Site`).
fn cross_site(req: &Request) -> bool {
    req.headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "same-origin" && v != "none")
}

/// A redirect target after sign-in: a console path, never another site, and
/// nothing a `Location` header cannot carry (visible ASCII only: a CR/LF or
/// a non-ASCII character is ignored, never a 500).
fn safe_next(next: &str) -> bool {
    next.bytes().all(|b| b.is_ascii_graphic())
        && next.starts_with("/ui/")
        && !next.starts_with("/ui/login")
        && !next.contains("//")
        && !next.contains('\\')
        && next.len() <= 512
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// `GET /ui/login`: the token form (token sign-in only), with a fresh
/// sign-in token in a cookie and in the form.
pub(crate) async fn login_page(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Query(q): Query<LoginQuery>,
) -> Response {
    if !token_login(&state) {
        return Redirect::to("/ui/now").into_response();
    }
    let token = random_hex();
    // The cookie also carries when the form was issued (it is encrypted and
    // authenticated like the session's): a form is usable for a while only.
    let issued = state.clock.now().timestamp();
    let cookie = Cookie::build((LOGIN_COOKIE, format!("{token}.{issued}")))
        .path("/ui/login")
        .http_only(true)
        .secure(state.pipeline.console.config.cookie_secure)
        .same_site(SameSite::Strict)
        .build();
    (
        jar.add(cookie),
        login_form(q.next.as_deref(), &token, None, StatusCode::OK),
    )
        .into_response()
}

/// Whether the request's `Origin` (or, without one, `Referer`) names this
/// host; a request with neither (or `Origin: null`) is left to the form token.
fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok());
    // `Origin: null` is what a browser sends under our own
    // `Referrer-Policy: no-referrer` (and from sandboxed frames): it names
    // no host, so it is treated as absent; the form token still decides.
    let origin = headers
        .get(axum::http::header::ORIGIN)
        .filter(|v| v.as_bytes() != b"null");
    let claimed = origin
        .or_else(|| headers.get(axum::http::header::REFERER))
        .and_then(|v| v.to_str().ok());
    match (claimed, host) {
        (None, _) => true,
        (Some(c), Some(host)) => reqwest::Url::parse(c).is_ok_and(|u| {
            let authority = match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_owned(),
                _ => return false,
            };
            authority.eq_ignore_ascii_case(host)
        }),
        (Some(_), None) => false,
    }
}

fn token_login(state: &AppState) -> bool {
    state.pipeline.console.mode == ConsoleMode::Inbound
        && matches!(state.pipeline.inbound, Inbound::Jwt(_))
}

fn login_form(
    next: Option<&str>,
    login_token: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let next = next.filter(|n| safe_next(n)).unwrap_or("/ui/now");
    let body = layout::bare(
        "Sign in",
        maud::html! {
            h1 { "Sign in to triage-gate" }
            @if let Some(e) = error {
                p.flash.flash-error role="alert" { (e) }
            }
            form method="post" action="/ui/login" .login {
                input type="hidden" name="next" value=(next);
                input type="hidden" name="login_csrf" value=(login_token);
                label for="token" { "Access token" }
                p.hint id="token-hint" {
                    "A bearer token from your identity provider for this gate (the same token the API takes; it needs the "
                    code { "runs:read" } " scope). It is checked and then forgotten: the session keeps only who you are and your scopes."
                }
                textarea id="token" name="token" rows="6" required autocomplete="off" spellcheck="false" aria-describedby="token-hint" {}
                button type="submit" { "Sign in" }
            }
        },
    );
    (status, axum::response::Html(body.into_string())).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    login_csrf: String,
}

/// `POST /ui/login`: verify the token as the API would, then start a session.
pub(crate) async fn login(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    req_headers: axum::http::HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let Inbound::Jwt(auth) = &state.pipeline.inbound else {
        return Redirect::to("/ui/now").into_response();
    };
    if state.pipeline.console.mode != ConsoleMode::Inbound {
        return Redirect::to("/ui/now").into_response();
    }
    if req_headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "same-origin" && v != "none")
        || !same_origin(&req_headers)
    {
        return csrf_refused().into_response();
    }
    // Login CSRF: the form must come back with the token of the cookie
    // this browser was given with it.
    let now = state.clock.now().timestamp();
    let cookie = jar
        .get(LOGIN_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    let (login_token, issued) = cookie.split_once('.').unwrap_or(("", ""));
    let fresh = issued
        .parse::<i64>()
        .is_ok_and(|t| now.saturating_sub(t) <= LOGIN_FORM_TTL_SECS);
    if login_token.is_empty()
        || !fresh
        || !bool::from(login_token.as_bytes().ct_eq(f.login_csrf.as_bytes()))
    {
        return csrf_refused().into_response();
    }
    let next = f.next.as_deref();
    let token = f.token.trim();
    if token.is_empty() || token.len() > TOKEN_BYTES_MAX {
        return login_form(
            next,
            login_token,
            Some(&format!("paste a token (at most {TOKEN_BYTES_MAX} bytes)")),
            StatusCode::BAD_REQUEST,
        );
    }
    let caller = match auth.authenticate(token, now).await {
        Ok(c) => c,
        Err(e) => {
            crate::metrics::auth_refused(e.code());
            tracing::info!(reason = e.code(), "console sign-in refused");
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            return login_form(
                next,
                login_token,
                Some(&format!("sign-in refused: {e}")),
                status,
            );
        }
    };
    if !caller.has(Scope::RunsRead) {
        return login_form(
            next,
            login_token,
            Some("sign-in refused: the token does not hold the runs:read scope"),
            StatusCode::FORBIDDEN,
        );
    }
    let cs = &state.pipeline.console;
    let ttl = i64::try_from(cs.config.session_ttl_secs).unwrap_or(i64::MAX / 2);
    let session = Session {
        iss: caller.issuer.clone(),
        sub: caller.sub.clone(),
        client_id: caller.client_id.clone(),
        scopes: caller.scopes.clone(),
        csrf: random_hex(),
        sid: random_hex(),
        exp: caller.expires_at.min(now.saturating_add(ttl)),
        anonymous: false,
    };
    tracing::info!(caller = %caller.label(), "console sign-in");
    let to = next
        .filter(|n| safe_next(n))
        .unwrap_or("/ui/now")
        .to_owned();
    match session.cookie(cs.config.cookie_secure) {
        Some(c) => {
            let jar = jar
                .remove(Cookie::build(LOGIN_COOKIE).path("/ui/login").build())
                .add(c);
            (jar, Redirect::to(&to)).into_response()
        }
        None => UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in failed",
            "try again",
        )
        .into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/logout`: ends the session for good (its id is revoked in the
/// store, so a copy of the cookie is refused too); a proxy's own sign-in is
/// the proxy's.
pub(crate) async fn logout(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    jar: PrivateCookieJar,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(e) = user.require_csrf(&f.csrf) {
        return e.into_response();
    }
    if let Err(e) = state
        .store
        .revoke_console_session(&user.sid, user.expires_at)
        .await
    {
        tracing::warn!(error = %e, "cannot revoke a console session");
        return UiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-out failed",
            "the session could not be ended in the store; try again",
        )
        .into_response();
    }
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/ui").build());
    (jar, Redirect::to("/ui/login")).into_response()
}

/// The result of the last action, shown once on the next page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Flash {
    pub ok: bool,
    pub text: String,
}

/// Sets the one-shot message.
pub(crate) fn set_flash(
    jar: PrivateCookieJar,
    secure: bool,
    ok: bool,
    text: &str,
) -> PrivateCookieJar {
    let f = Flash {
        ok,
        text: tg_engine::truncate(text, FLASH_CHARS_MAX),
    };
    match serde_json::to_string(&f) {
        Ok(v) => jar.add(
            Cookie::build((FLASH_COOKIE, v))
                .path("/ui")
                .http_only(true)
                .secure(secure)
                .same_site(SameSite::Strict)
                .build(),
        ),
        Err(_) => jar,
    }
}

/// Takes the one-shot message (removing it).
pub(crate) fn take_flash(jar: PrivateCookieJar) -> (PrivateCookieJar, Option<Flash>) {
    let flash = jar
        .get(FLASH_COOKIE)
        .and_then(|c| serde_json::from_str::<Flash>(c.value()).ok());
    if flash.is_some() {
        (
            jar.remove(Cookie::build(FLASH_COOKIE).path("/ui").build()),
            flash,
        )
    } else {
        (jar, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    #[test]
    fn only_console_paths_are_redirect_targets() {
        assert!(safe_next("/ui/review?team=dba"));
        assert!(!safe_next("https://evil.example/"));
        assert!(!safe_next("//evil.example/ui/"));
        assert!(!safe_next("/ui//evil.example"));
        assert!(!safe_next("/ui/\\evil"));
        assert!(!safe_next("/ui/login?next=/ui/now"));
        assert!(!safe_next("/v1/autonomy"));
    }

    #[test]
    fn csrf_tokens_are_random_and_compared_whole() {
        let a = random_hex();
        assert_eq!(a.len(), CSRF_BYTES * 2);
        assert_ne!(a, random_hex());
        let u = User {
            caller: None,
            csrf: a.clone(),
            sid: random_hex(),
            expires_at: 0,
            can_sign_out: false,
        };
        assert!(u.csrf_ok(&a));
        assert!(!u.csrf_ok(&a[..a.len() - 1]));
        assert!(!u.csrf_ok(""));
    }

    #[test]
    fn a_session_cookie_round_trips_only_with_its_key() {
        let key = Key::generate();
        let s = Session {
            iss: "https://idp".into(),
            sub: "alice".into(),
            client_id: None,
            scopes: ["runs:read".to_owned()].into(),
            csrf: random_hex(),
            sid: random_hex(),
            exp: 100,
            anonymous: false,
        };
        let jar = PrivateCookieJar::new(key.clone()).add(s.cookie(true).unwrap());
        let set_cookie = jar
            .into_response()
            .headers()
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/ui"] {
            assert!(set_cookie.contains(attr), "{attr} missing: {set_cookie}");
        }
        let raw = set_cookie.split(';').next().unwrap().to_owned();
        let mut headers = axum::http::HeaderMap::new();
        assert!(!raw.contains("alice"), "the cookie is encrypted: {raw}");
        headers.insert(header::COOKIE, raw.parse().unwrap());
        let back =
            read_session(&PrivateCookieJar::from_headers(&headers, key.clone()), 99).unwrap();
        assert_eq!(back.sub, "alice");
        assert!(
            read_session(
                &PrivateCookieJar::from_headers(&headers, Key::generate()),
                99
            )
            .is_none(),
            "another key cannot read it"
        );
        assert!(
            read_session(&PrivateCookieJar::from_headers(&headers, key), 100).is_none(),
            "an expired session is no session"
        );
    }
}
