//! PagerDuty REST API v2 (incidents) and the scoped-OAuth token endpoint,
//! under `/pagerduty` beside the Events API:
//!
//! - `POST /pagerduty/oauth/token`: form-encoded `grant_type=client_credentials`
//!   with `client_id`/`client_secret` (form fields or HTTP Basic) of a client
//!   registered with [`crate::SandboxState::pagerduty_oauth_client`], and a
//!   `scope` that must name `as_account-{us|eu}.{subdomain}`. Issues
//!   `pdus+_...` tokens (RFC 6749 errors otherwise).
//! - `GET /pagerduty/rest/incidents?incident_key=..&service_ids[]=..`,
//!   `POST /pagerduty/rest/incidents`, `PUT /pagerduty/rest/incidents/{id}`:
//!   `Authorization: Bearer <issued token>` (or `Token token=<api key>` when one
//!   is registered) in exactly that form, `Accept:
//!   application/vnd.pagerduty+json;version=2`, and `From: <email>` on writes.
//!   A token without `incidents.write` (writes) or `incidents.read`/`write`
//!   (reads) gets 403. A second create for an open `incident_key` on the same
//!   service is refused with 400, as PagerDuty does.
//!
//! Errors read `{"error":{"message","code","errors":[..]}}`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::SandboxState;
use crate::record::{Secret, lock};

/// The `Accept` header the REST API requires.
pub const ACCEPT_V2: &str = "application/vnd.pagerduty+json;version=2";
/// Incidents kept; creates beyond this fail with a 500.
pub const REST_INCIDENTS_MAX: usize = 10_000;
/// Tokens issued and remembered.
pub const TOKENS_MAX: usize = 10_000;
/// Lifetime of an issued token, seconds (PagerDuty's scoped tokens live 30 days).
pub const TOKEN_LIFETIME_SECS: i64 = 2_592_000;
/// Longest `title` accepted.
pub const TITLE_CHARS_MAX: usize = 1_024;

/// One incident as the REST API holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestIncident {
    pub id: String,
    pub incident_number: u64,
    pub title: String,
    /// `triggered`, `acknowledged` or `resolved`.
    pub status: String,
    pub incident_key: Option<String>,
    pub service_id: String,
    pub urgency: String,
    pub details: Option<String>,
    /// The `From` header of the create.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl RestIncident {
    fn render(&self, host: &str) -> Value {
        json!({
            "id": self.id,
            "type": "incident",
            "summary": format!("[#{}] {}", self.incident_number, self.title),
            "title": self.title,
            "incident_number": self.incident_number,
            "status": self.status,
            "incident_key": self.incident_key,
            "urgency": self.urgency,
            "html_url": format!("http://{host}/pagerduty/incidents/{}", self.id),
            "self": format!("http://{host}/pagerduty/rest/incidents/{}", self.id),
            "created_at": self.created_at.to_rfc3339(),
            "service": {"id": self.service_id, "type": "service_reference"},
        })
    }
}

/// A registered OAuth client (what PagerDuty's app registration holds).
#[derive(Debug, Clone)]
struct Client {
    secret: Secret,
    subdomain: String,
}

#[derive(Debug, Clone)]
struct Issued {
    scopes: BTreeSet<String>,
    expires_at: i64,
}

#[derive(Debug, Default)]
struct Inner {
    incidents: Vec<RestIncident>,
    clients: BTreeMap<String, Client>,
    tokens: BTreeMap<String, Issued>,
    api_keys: BTreeSet<String>,
    token_requests: u64,
    fail_token_requests: u32,
    /// The next this many incident lists answer empty (PagerDuty's lists are
    /// eventually consistent: a fresh incident may not be listed yet).
    stale_lists: u32,
}

#[derive(Debug, Default)]
pub(crate) struct PagerDutyRestState {
    inner: Mutex<Inner>,
}

impl PagerDutyRestState {
    pub(crate) fn incidents(&self) -> Vec<RestIncident> {
        lock(&self.inner).incidents.clone()
    }

    pub(crate) fn register_client(&self, client_id: &str, secret: &str, subdomain: &str) {
        lock(&self.inner).clients.insert(
            client_id.to_owned(),
            Client {
                secret: Secret::new(secret),
                subdomain: subdomain.to_owned(),
            },
        );
    }

    pub(crate) fn register_api_key(&self, key: &str) {
        lock(&self.inner).api_keys.insert(key.to_owned());
    }

    pub(crate) fn token_requests(&self) -> u64 {
        lock(&self.inner).token_requests
    }

    pub(crate) fn fail_token_requests(&self, n: u32) {
        lock(&self.inner).fail_token_requests = n;
    }

    pub(crate) fn stale_lists(&self, n: u32) {
        lock(&self.inner).stale_lists = n;
    }

    pub(crate) fn revoke_tokens(&self) {
        lock(&self.inner).tokens.clear();
    }

    /// Forget incidents and tokens; registered clients and keys stay (configuration).
    pub(crate) fn reset(&self) {
        let mut inner = lock(&self.inner);
        inner.incidents.clear();
        inner.tokens.clear();
        inner.token_requests = 0;
        inner.fail_token_requests = 0;
        inner.stale_lists = 0;
    }
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/rest/incidents", get(list).post(create))
        .route("/rest/incidents/{id}", put(update))
}

static NULL: Value = Value::Null;

/// `v[path[0]][path[1]]..`, `Null` where absent (serde's indexing without the lint).
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().try_fold(v, |v, k| v.get(*k)).unwrap_or(&NULL)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// A REST API error answer.
fn rest_error(status: StatusCode, message: &str, code: u32, errors: &[String]) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "code": code, "errors": errors}})),
    )
        .into_response()
}

pub(crate) fn form(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// application/x-www-form-urlencoded decoding (`+` is a space).
pub(crate) fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn token(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rest = &state.pagerduty_rest;
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    {
        let mut inner = lock(&rest.inner);
        inner.token_requests += 1;
        if inner.fail_token_requests > 0 {
            inner.fail_token_requests -= 1;
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the identity service is unavailable",
            );
        }
    }
    if !form_encoded {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    let f = form(&body);
    if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported",
        );
    }
    // Client authentication: form fields, or HTTP Basic.
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
    let (client_id, client_secret) = match (basic, f.get("client_id"), f.get("client_secret")) {
        (Some(pair), _, _) => pair,
        (None, Some(id), Some(secret)) => (id.clone(), secret.clone()),
        _ => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication is missing",
            );
        }
    };
    let mut inner = lock(&rest.inner);
    let Some(client) = inner.clients.get(&client_id).cloned() else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    };
    if client.secret.expose() != client_secret {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    let scopes: BTreeSet<String> = f
        .get("scope")
        .map(|s| {
            s.split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let account_ok = ["us", "eu"]
        .iter()
        .any(|region| scopes.contains(&format!("as_account-{region}.{}", client.subdomain)));
    if !account_ok {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope must include as_account-{region}.{subdomain}",
        );
    }
    if inner.tokens.len() >= TOKENS_MAX {
        inner.tokens.clear();
    }
    let access_token = format!("pdus+_{}", uuid::Uuid::new_v4().simple());
    let now = state.faults.now().timestamp();
    inner.tokens.insert(
        access_token.clone(),
        Issued {
            scopes: scopes.clone(),
            expires_at: now + TOKEN_LIFETIME_SECS,
        },
    );
    drop(inner);
    let mut resp = (
        StatusCode::OK,
        axum::Json(json!({
            "access_token": access_token,
            "scope": scopes.into_iter().collect::<Vec<_>>().join(" "),
            "token_type": "bearer",
            "expires_in": TOKEN_LIFETIME_SECS,
        })),
    )
        .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// What the caller is allowed: `Some(scopes)` for an OAuth token, `None` for an
/// API key (all access).
type Grant = Option<BTreeSet<String>>;

/// The checks every REST call gets, in PagerDuty's order: auth, then Accept,
/// then scope, then (writes) `From`. The `From` value on success.
fn check(
    state: &SandboxState,
    headers: &HeaderMap,
    write: bool,
) -> Result<Option<String>, Box<Response>> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let unauthorized = || rest_error(StatusCode::UNAUTHORIZED, "Authentication failed", 2006, &[]);
    let grant: Grant = {
        let inner = lock(&state.pagerduty_rest.inner);
        if let Some(token) = auth.strip_prefix("Bearer ") {
            match inner.tokens.get(token) {
                Some(t) if t.expires_at > state.faults.now().timestamp() => Some(t.scopes.clone()),
                _ => return Err(Box::new(unauthorized())),
            }
        } else if let Some(key) = auth.strip_prefix("Token token=") {
            if !inner.api_keys.contains(key) {
                return Err(Box::new(unauthorized()));
            }
            None
        } else {
            return Err(Box::new(unauthorized()));
        }
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.replace(' ', "") != ACCEPT_V2 {
        return Err(Box::new(rest_error(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable",
            2001,
            &[format!("the Accept header must be {ACCEPT_V2}")],
        )));
    }
    if let Some(scopes) = &grant {
        let allowed =
            scopes.contains("incidents.write") || (!write && scopes.contains("incidents.read"));
        if !allowed {
            return Err(Box::new(rest_error(
                StatusCode::FORBIDDEN,
                "Access Denied",
                2010,
                &["the token lacks the scope this endpoint needs".to_owned()],
            )));
        }
    }
    if !write {
        return Ok(None);
    }
    let from = headers
        .get("from")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.contains('@'))
        .ok_or_else(|| {
            Box::new(rest_error(
                StatusCode::BAD_REQUEST,
                "Invalid Input Provided",
                2001,
                &["The From header is required and must be a valid user's email".to_owned()],
            ))
        })?;
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body {
        return Err(Box::new(rest_error(
            StatusCode::BAD_REQUEST,
            "Invalid Input Provided",
            2001,
            &["Content-Type must be application/json".to_owned()],
        )));
    }
    Ok(Some(from.to_owned()))
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

async fn list(
    State(state): State<Arc<SandboxState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&state, &headers, false) {
        return *r;
    }
    let q = form(query.unwrap_or_default().as_bytes());
    // `service_ids[]` may repeat; the sandbox honours the last one given.
    let key = q.get("incident_key");
    let service = q.get("service_ids[]");
    let host = host(&headers);
    let mut inner = lock(&state.pagerduty_rest.inner);
    let stale = inner.stale_lists > 0;
    inner.stale_lists = inner.stale_lists.saturating_sub(1);
    let rows: Vec<Value> = inner
        .incidents
        .iter()
        .filter(|_| !stale)
        .filter(|i| key.is_none_or(|k| i.incident_key.as_ref() == Some(k)))
        .filter(|i| service.is_none_or(|s| &i.service_id == s))
        .map(|i| i.render(&host))
        .collect();
    (
        StatusCode::OK,
        axum::Json(
            json!({"incidents": rows, "limit": 25, "offset": 0, "more": false, "total": null}),
        ),
    )
        .into_response()
}

async fn create(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let from = match check(&state, &headers, true) {
        Ok(f) => f.unwrap_or_default(),
        Err(r) => return *r,
    };
    let invalid = |errors: Vec<String>| {
        rest_error(
            StatusCode::BAD_REQUEST,
            "Invalid Input Provided",
            2001,
            &errors,
        )
    };
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return invalid(vec!["the body is not valid JSON".into()]);
    };
    let inc = at(&value, &["incident"]);
    let mut errors = Vec::new();
    if at(inc, &["type"]) != "incident" {
        errors.push("incident.type must be \"incident\"".to_owned());
    }
    let title = at(inc, &["title"]).as_str().unwrap_or_default();
    if title.trim().is_empty() || title.chars().count() > TITLE_CHARS_MAX {
        errors.push(format!(
            "incident.title must be 1..={TITLE_CHARS_MAX} characters"
        ));
    }
    let service_id = at(inc, &["service", "id"]).as_str().unwrap_or_default();
    if service_id.is_empty() || at(inc, &["service", "type"]) != "service_reference" {
        errors.push("incident.service must be a service_reference with an id".to_owned());
    }
    let urgency = at(inc, &["urgency"]).as_str().unwrap_or("high");
    if !matches!(urgency, "high" | "low") {
        errors.push("incident.urgency must be high or low".to_owned());
    }
    if !at(inc, &["body"]).is_null()
        && (at(inc, &["body", "type"]) != "incident_body"
            || !at(inc, &["body", "details"]).is_string())
    {
        errors.push("incident.body must be {type: incident_body, details: string}".to_owned());
    }
    if !errors.is_empty() {
        return invalid(errors);
    }
    let key = at(inc, &["incident_key"]).as_str().map(str::to_owned);
    let mut inner = lock(&state.pagerduty_rest.inner);
    if let Some(k) = &key
        && inner.incidents.iter().any(|i| {
            i.service_id == service_id
                && i.incident_key.as_ref() == Some(k)
                && i.status != "resolved"
        })
    {
        return rest_error(
            StatusCode::BAD_REQUEST,
            "Incident Already Exists",
            2001,
            &[format!(
                "Open incident with key '{k}' already exists for this service"
            )],
        );
    }
    if inner.incidents.len() >= REST_INCIDENTS_MAX {
        return rest_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            5000,
            &[format!(
                "sandbox incident store is full ({REST_INCIDENTS_MAX})"
            )],
        );
    }
    let number = inner.incidents.len() as u64 + 1;
    let incident = RestIncident {
        id: format!("Q{:013}", number),
        incident_number: number,
        title: title.to_owned(),
        status: "triggered".into(),
        incident_key: key,
        service_id: service_id.to_owned(),
        urgency: urgency.to_owned(),
        details: at(inc, &["body", "details"]).as_str().map(str::to_owned),
        created_by: from,
        created_at: Utc::now(),
    };
    let rendered = incident.render(&host(&headers));
    inner.incidents.push(incident);
    drop(inner);
    (
        StatusCode::CREATED,
        axum::Json(json!({"incident": rendered})),
    )
        .into_response()
}

async fn update(
    State(state): State<Arc<SandboxState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check(&state, &headers, true) {
        return *r;
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return rest_error(
            StatusCode::BAD_REQUEST,
            "Invalid Input Provided",
            2001,
            &["the body is not valid JSON".into()],
        );
    };
    let inc = at(&value, &["incident"]);
    let status = at(inc, &["status"]).as_str().unwrap_or_default();
    if at(inc, &["type"]) != "incident_reference" && at(inc, &["type"]) != "incident"
        || !matches!(status, "acknowledged" | "resolved")
    {
        return rest_error(
            StatusCode::BAD_REQUEST,
            "Invalid Input Provided",
            2001,
            &["incident must be {type: incident_reference, status: acknowledged|resolved}".into()],
        );
    }
    let host = host(&headers);
    let mut inner = lock(&state.pagerduty_rest.inner);
    let Some(incident) = inner.incidents.iter_mut().find(|i| i.id == id) else {
        return rest_error(StatusCode::NOT_FOUND, "Not Found", 2100, &[]);
    };
    // A resolved incident stays resolved (PagerDuty refuses to reopen by PUT).
    if incident.status != "resolved" {
        incident.status = status.to_owned();
    }
    let rendered = incident.render(&host);
    drop(inner);
    (StatusCode::OK, axum::Json(json!({"incident": rendered}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_handles_plus_and_percent() {
        let f = form(b"scope=as_account-us.acme+incidents.write&client_id=a%2Bb&x");
        assert_eq!(f["scope"], "as_account-us.acme incidents.write");
        assert_eq!(f["client_id"], "a+b");
        assert_eq!(f["x"], "");
        assert_eq!(decode("100%"), "100%");
    }
}
