//! Inbound identity at the HTTP edge: every route but health, readiness and
//! metrics needs a bearer JWT with the route's scope (SNS deliveries prove
//! themselves by signature instead). The verified [`Caller`] rides in the
//! request's extensions; ingest writes it onto the run (`submitted_by`), and
//! from there it reaches the audit record.
//!
//! Refusals are RFC 9457 problem+json with RFC 6750's `WWW-Authenticate`:
//! 401 for a missing or bad token, 403 for a missing scope, 503 + Retry-After
//! when the issuer's keys cannot be fetched (fail closed; the sender retries,
//! nothing is accepted that could not be attributed).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tg_identity::{AuthError, Authenticator, Caller, Scope};

use crate::AppState;
use crate::problem::Problem;

/// Seconds a sender is asked to wait when the issuer's keys are unavailable.
pub const KEYS_UNAVAILABLE_RETRY_AFTER_SECS: u64 = 30;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health, readiness, metrics: probes and scrapers carry no token.
    Public,
    /// SNS signs its messages; it cannot send a bearer token.
    SnsSignature,
    /// The web console signs its users in itself (`ui::session`, same identity).
    Console,
    Scope(Scope),
}

/// The access rule of a route. Unknown routes need `admin` so that a 404
/// never tells an anonymous caller which paths exist.
pub fn access(method: &Method, path: &str) -> Access {
    match (method, path) {
        (_, "/healthz" | "/readyz" | "/metrics") => Access::Public,
        (_, p) if p == "/ui" || p.starts_with("/ui/") => Access::Console,
        (&Method::POST, "/v1/events/cloudwatch-sns") => Access::SnsSignature,
        (&Method::POST, p) if p.starts_with("/v1/events/") => Access::Scope(Scope::EventsWrite),
        (&Method::POST, p) if p.starts_with("/v1/review/") => Access::Scope(Scope::ReviewDecide),
        // Reporting an incident opened elsewhere is a human verdict too.
        (&Method::POST, "/v1/evidence/incidents") => Access::Scope(Scope::ReviewDecide),
        (&Method::POST, p) if p.starts_with("/v1/actions/") => Access::Scope(Scope::Admin),
        (&Method::GET, p) if p.starts_with("/v1/audit") => Access::Scope(Scope::AuditRead),
        (&Method::GET, p)
            if p.starts_with("/v1/runs")
                || p.starts_with("/v1/review")
                || p.starts_with("/v1/actions")
                || p.starts_with("/v1/storm")
                || p == "/v1/autonomy"
                || p.starts_with("/v1/reports") =>
        {
            Access::Scope(Scope::RunsRead)
        }
        _ => Access::Scope(Scope::Admin),
    }
}

/// The inbound identity mode the server runs with.
#[derive(Clone)]
pub enum Inbound {
    /// No authentication (local drills and tests only; logged loudly at start).
    Disabled,
    Jwt(Arc<Authenticator>),
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inbound::Disabled => f.write_str("Disabled"),
            Inbound::Jwt(a) => write!(f, "Jwt({a:?})"),
        }
    }
}

/// The middleware: authenticate, authorise, attach the caller.
pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // INVARIANT: the path authorized is the path routed. A percent-encoded
    // segment would be decoded by the router after being read raw here
    // (`/v1/events/gen%65ric` reached the signed `generic` source unsigned),
    // and no route of ours needs one: refused outright.
    if req.uri().path().contains('%') {
        crate::metrics::auth_refused("encoded_path");
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "encoded-path",
            "Encoded path refused",
            "percent-encoded characters are not allowed in request paths",
        )
        .into_response();
    }
    let rule = access(req.method(), req.uri().path());
    // A source with signed senders: a signature (or, in jwt mode, a bearer
    // token) is required, whatever the mode.
    let signed_source = (rule == Access::Scope(Scope::EventsWrite))
        .then(|| {
            req.uri()
                .path()
                .trim_start_matches("/v1/events/")
                .to_owned()
        })
        .filter(|s| state.pipeline.signed.applies(s));
    if let Some(source) = signed_source {
        let jwt_mode = matches!(state.pipeline.inbound, Inbound::Jwt(_));
        if crate::signed::SignedSources::signed(req.headers()) || !jwt_mode {
            return signed(state, req, next, &source).await;
        }
    }
    let Inbound::Jwt(auth) = &state.pipeline.inbound else {
        return next.run(req).await;
    };
    let scope = match rule {
        Access::Public | Access::SnsSignature | Access::Console => return next.run(req).await,
        Access::Scope(s) => s,
    };
    let token = match bearer(&req) {
        Ok(t) => t,
        Err(e) => return refuse(&e, scope),
    };
    let now = state.clock.now().timestamp();
    let caller = match auth.authenticate(&token, now).await {
        Ok(c) => c,
        Err(e) => return refuse(&e, scope),
    };
    if let Err(e) = caller.require(scope) {
        tracing::info!(caller = %caller.label(), scope = %scope, "refused: missing scope");
        return refuse(&e, scope);
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Verifies a signed delivery: the body is read (bounded by the body limit),
/// checked, and handed on unchanged with the sender as the caller.
async fn signed(state: AppState, req: Request, next: Next, source: &str) -> Response {
    let (parts, body) = req.into_parts();
    let limit = state.limits.body_bytes_max;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Body too large",
            format!("the body exceeds {limit} bytes"),
        )
        .limit("server.body_bytes_max")
        .into_response();
    };
    let now = state.clock.now().timestamp();
    let delivery = crate::signed::Delivery {
        source,
        method: parts.method.as_str(),
        path: parts.uri.path(),
    };
    match state
        .pipeline
        .signed
        .verify(delivery, &parts.headers, &bytes, now)
    {
        Ok(verified) => {
            let name = verified.sender;
            let mut req = Request::from_parts(parts, axum::body::Body::from(bytes));
            // Checked and remembered by the store with the events it accepts.
            req.extensions_mut().insert(verified.replay);
            req.extensions_mut().insert(Caller {
                issuer: SIGNED_ISSUER.to_owned(),
                sub: format!("webhook:{name}"),
                client_id: None,
                scopes: [Scope::EventsWrite.as_str().to_owned()].into(),
                expires_at: now,
            });
            next.run(req).await
        }
        Err(e) => {
            crate::metrics::auth_refused(e.code());
            tracing::info!(source, reason = e.code(), "signed delivery refused");
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let p = Problem::new(
                status,
                "signature-refused",
                "Signed delivery refused",
                e.to_string(),
            )
            .field(e.code());
            p.into_response()
        }
    }
}

/// The token of `Authorization: Bearer <token>` (exactly one header).
fn bearer(req: &Request) -> Result<String, AuthError> {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return Err(AuthError::Missing);
    };
    let v = v
        .to_str()
        .map_err(|_| AuthError::Malformed("authorization header is not ASCII"))?;
    let (scheme, token) = v.split_once(' ').ok_or(AuthError::Malformed(
        "authorization is not `Bearer <token>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("authorization scheme is not Bearer"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token.to_owned())
}

fn refuse(e: &AuthError, scope: Scope) -> Response {
    crate::metrics::auth_refused(e.code());
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let (slug, title) = match status {
        StatusCode::FORBIDDEN => ("insufficient-scope", "Insufficient scope"),
        StatusCode::SERVICE_UNAVAILABLE => ("identity-unavailable", "Identity cannot be checked"),
        _ => ("unauthorized", "Unauthorized"),
    };
    let mut problem = Problem::new(status, slug, title, e.to_string()).field(e.code());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        problem = problem.retry_after(KEYS_UNAVAILABLE_RETRY_AFTER_SECS);
    }
    let mut resp = problem.into_response();
    // RFC 6750 section 3: tell the client what kind of credential is wanted.
    let challenge = match e {
        AuthError::Missing => "Bearer".to_owned(),
        AuthError::MissingScope(_) => {
            format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"")
        }
        AuthError::KeysUnavailable => "Bearer".to_owned(),
        _ => "Bearer error=\"invalid_token\"".to_owned(),
    };
    if status != StatusCode::SERVICE_UNAVAILABLE
        && let Ok(v) = HeaderValue::from_str(&challenge)
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// The sender identity of a verified caller, the unit of independence for
/// multi-signal confirmation (docs/policy.md): `webhook:<name>` for a signed
/// sender, `jwt:<client_id, else sub>` for a bearer token. `None`: nobody
/// was verified (`mode: none`).
pub fn sender_identity(caller: Option<&Caller>) -> Option<String> {
    caller.map(|c| {
        if c.issuer == SIGNED_ISSUER && c.sub.starts_with("webhook:") {
            c.sub.clone()
        } else {
            format!("jwt:{}", c.client_id.as_deref().unwrap_or(&c.sub))
        }
    })
}

/// The issuer recorded on the caller of a signed delivery.
const SIGNED_ISSUER: &str = "hmac";

/// The caller label stored on a run (`submitted_by`), if a caller was verified.
pub fn submitted_by(caller: Option<&Caller>) -> Option<String> {
    caller.map(Caller::label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_the_scope_it_should() {
        let p = Method::POST;
        let g = Method::GET;
        assert_eq!(access(&g, "/healthz"), Access::Public);
        assert_eq!(access(&g, "/metrics"), Access::Public);
        assert_eq!(access(&g, "/ui/now"), Access::Console);
        assert_eq!(access(&p, "/ui/review/3"), Access::Console);
        assert_eq!(access(&g, "/uix"), Access::Scope(Scope::Admin));
        assert_eq!(
            access(&p, "/v1/events/cloudwatch-sns"),
            Access::SnsSignature
        );
        assert_eq!(
            access(&p, "/v1/events/alertmanager"),
            Access::Scope(Scope::EventsWrite)
        );
        assert_eq!(access(&g, "/v1/runs/run_1"), Access::Scope(Scope::RunsRead));
        assert_eq!(access(&g, "/v1/review"), Access::Scope(Scope::RunsRead));
        assert_eq!(
            access(&p, "/v1/review/x/approve"),
            Access::Scope(Scope::ReviewDecide)
        );
        assert_eq!(
            access(&p, "/v1/evidence/incidents"),
            Access::Scope(Scope::ReviewDecide)
        );
        assert_eq!(
            access(&p, "/v1/actions/7/retry"),
            Access::Scope(Scope::Admin)
        );
        assert_eq!(
            access(&g, "/v1/audit/records"),
            Access::Scope(Scope::AuditRead)
        );
        assert_eq!(
            access(&g, "/v1/secret-admin-thing"),
            Access::Scope(Scope::Admin)
        );
        // A GET on an events route is not a write and not public.
        assert_eq!(
            access(&g, "/v1/events/generic"),
            Access::Scope(Scope::Admin)
        );
    }
}
