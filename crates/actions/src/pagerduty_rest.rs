//! PagerDuty REST API v2 incidents, for accounts that open incidents through
//! it (`pagerduty.api: rest`) with a scoped OAuth app token: find by
//! `incident_key`, create, resolve.
//!
//! Fail closed: without a valid token no request is made (the attempt fails
//! retryable). Idempotent: every create looks the `incident_key` up first, and
//! PagerDuty's 400 for a second open incident with that key is answered by
//! looking it up again.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tg_identity::TokenSource;
use tg_model::{PlannedAction, Severity};

use crate::error::TargetError;
use crate::executor::TARGET_PAGERDUTY;
use crate::http::{self, Reply, send, status_error, take_chars};
use crate::secret::{Redactor, Secret};

/// `Accept` of every REST call: the API version.
pub const ACCEPT_V2: &str = "application/vnd.pagerduty+json;version=2";
/// Characters of an incident `title`.
pub const INCIDENT_TITLE_CHARS_MAX: usize = 1_024;
/// Characters of an incident body's `details`.
pub const INCIDENT_DETAILS_CHARS_MAX: usize = 8_000;
/// Bytes of an `incident_key`.
pub const INCIDENT_KEY_BYTES_MAX: usize = 255;
/// The scoped-OAuth token endpoint when none is configured.
pub const DEFAULT_TOKEN_URL: &str = "https://identity.pagerduty.com/oauth/token";

const T: &str = TARGET_PAGERDUTY;

/// REST API access (instead of Events v2 routing keys).
#[derive(Debug, Clone)]
pub struct PagerDutyRest {
    /// `https://api.pagerduty.com` (EU: `https://api.eu.pagerduty.com`), or the sandbox.
    pub base_url: String,
    /// The `From` header: the email of a user on the account.
    pub from: String,
    /// Team name -> PagerDuty service ID (`P...`).
    pub service_ids: BTreeMap<String, String>,
    /// Where bearer tokens come from (client credentials, cached, single-flight).
    pub tokens: Arc<TokenSource>,
}

/// An incident as the REST API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestIncident {
    pub id: String,
    pub number: String,
    pub status: String,
}

/// What a REST resolve did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RestResolve {
    Resolved(RestIncident),
    AlreadyResolved(RestIncident),
    NoIncident(String),
}

fn incidents_url(cfg: &PagerDutyRest) -> String {
    format!("{}/incidents", cfg.base_url.trim_end_matches('/'))
}

pub(crate) fn service_id<'a>(cfg: &'a PagerDutyRest, team: &str) -> Result<&'a str, TargetError> {
    cfg.service_ids
        .get(team)
        .map(String::as_str)
        .ok_or_else(|| TargetError::permanent(T, format!("no PagerDuty service for team {team:?}")))
}

fn checked_key(key: &str) -> Result<&str, TargetError> {
    if key.is_empty() || key.len() > INCIDENT_KEY_BYTES_MAX {
        return Err(TargetError::permanent(
            T,
            format!(
                "incident key is {} bytes; it must be 1..={INCIDENT_KEY_BYTES_MAX}",
                key.len()
            ),
        ));
    }
    Ok(key)
}

fn urgency(s: Severity) -> &'static str {
    match s {
        Severity::Sev1 | Severity::High => "high",
        Severity::Medium | Severity::Low => "low",
    }
}

/// The create body: `incident_key` = the action's idempotency key.
pub(crate) fn create_body(
    cfg: &PagerDutyRest,
    action: &PlannedAction,
) -> Result<Value, TargetError> {
    let key = checked_key(&action.idempotency_key)?;
    let service = service_id(cfg, &action.team)?;
    let mut details = take_chars(&action.details, INCIDENT_DETAILS_CHARS_MAX);
    details.push_str(&format!(
        "\n\nrun_id: {}\ncorrelation_id: {}\nenvironment: {}\nconfidence: {:.2}",
        action.run_id,
        action.correlation_id,
        action.environment.as_str(),
        action.confidence
    ));
    Ok(json!({
        "incident": {
            "type": "incident",
            "title": take_chars(&action.title, INCIDENT_TITLE_CHARS_MAX),
            "service": { "id": service, "type": "service_reference" },
            "urgency": urgency(action.severity),
            "incident_key": key,
            "body": { "type": "incident_body", "details": details },
        }
    }))
}

/// A bearer token, or a retryable error: nothing is sent without one.
async fn bearer(cfg: &PagerDutyRest) -> Result<Secret, TargetError> {
    cfg.tokens
        .token()
        .await
        .map_err(|e| TargetError::retryable(T, format!("no PagerDuty API token: {e}")))
}

fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    cfg: &PagerDutyRest,
    token: &Secret,
) -> reqwest::RequestBuilder {
    client
        .request(method, url)
        .header(reqwest::header::ACCEPT, ACCEPT_V2)
        .header("From", &cfg.from)
        .bearer_auth(token.expose())
}

/// Sends; a 401 drops the cached token (it was revoked or expired early) and
/// is retryable with a fresh one.
async fn exchange(
    cfg: &PagerDutyRest,
    req: reqwest::RequestBuilder,
    timeout_ms: u64,
    redact: &Redactor,
    op: &str,
) -> Result<Reply, TargetError> {
    let reply = send(T, req, timeout_ms, redact).await?;
    if reply.status == reqwest::StatusCode::UNAUTHORIZED {
        cfg.tokens.invalidate().await;
        return Err(TargetError::retryable(
            T,
            format!(
                "http 401: {op}: the API token was refused; a new one is fetched next attempt: {}",
                http::cut(&redact.scrub(&error_text(&reply)))
            ),
        ));
    }
    Ok(reply)
}

/// Finds the incident opened with `key` on `service` (any status).
async fn find(
    client: &reqwest::Client,
    cfg: &PagerDutyRest,
    timeout_ms: u64,
    redact: &Redactor,
    token: &Secret,
    service: &str,
    key: &str,
) -> Result<Option<RestIncident>, TargetError> {
    let req = request(client, reqwest::Method::GET, incidents_url(cfg), cfg, token).query(&[
        ("incident_key", key),
        ("service_ids[]", service),
        ("date_range", "all"),
    ]);
    let reply = exchange(cfg, req, timeout_ms, redact, "lookup").await?;
    if !reply.status.is_success() {
        return Err(error_of(&reply, "lookup", redact));
    }
    let value: Value = serde_json::from_str(&reply.body)
        .map_err(|e| TargetError::retryable(T, format!("lookup reply is not json: {e}")))?;
    let rows = value
        .get("incidents")
        .and_then(Value::as_array)
        .ok_or_else(|| TargetError::retryable(T, "lookup reply has no incidents array"))?;
    // Trust only a row that carries our key (a dropped filter would list everything).
    let mine: Vec<&Value> = rows
        .iter()
        .filter(|r| r.get("incident_key").and_then(Value::as_str) == Some(key))
        .collect();
    // The open one first: a resolved one is what a resolve is looking for only
    // when nothing is open.
    let pick = mine
        .iter()
        .find(|r| r.get("status").and_then(Value::as_str) != Some("resolved"))
        .or_else(|| mine.first());
    pick.map(|r| incident_of(r)).transpose()
}

fn incident_of(row: &Value) -> Result<RestIncident, TargetError> {
    let id = row
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| TargetError::retryable(T, "incident has no id"))?;
    let number = match row.get("incident_number") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    Ok(RestIncident {
        id: id.to_owned(),
        number,
        status: row
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

/// Finds the incident for the action's key, or creates it.
pub(crate) async fn ensure_incident(
    client: &reqwest::Client,
    cfg: &PagerDutyRest,
    timeout_ms: u64,
    redact: &Redactor,
    action: &PlannedAction,
) -> Result<RestIncident, TargetError> {
    let body = create_body(cfg, action)?;
    let service = service_id(cfg, &action.team)?;
    let key = checked_key(&action.idempotency_key)?;
    let token = bearer(cfg).await?;
    // The token joins the secrets scrubbed from any error text.
    let scrub = redact.with(&token);
    let redact = &scrub;
    if let Some(found) = find(client, cfg, timeout_ms, redact, &token, service, key).await? {
        return Ok(found);
    }
    let req = request(
        client,
        reqwest::Method::POST,
        incidents_url(cfg),
        cfg,
        &token,
    )
    .header(reqwest::header::CONTENT_TYPE, "application/json")
    .body(body.to_string());
    let reply = exchange(cfg, req, timeout_ms, redact, "create").await?;
    if reply.status == reqwest::StatusCode::BAD_REQUEST {
        // "An open incident with this key exists": it is ours, created by an
        // attempt whose reply was lost. Anything else stays a 400.
        if let Some(found) = find(client, cfg, timeout_ms, redact, &token, service, key).await? {
            return Ok(found);
        }
    }
    if !reply.status.is_success() {
        return Err(error_of(&reply, "create", redact));
    }
    let value: Value = serde_json::from_str(&reply.body)
        .map_err(|e| TargetError::retryable(T, format!("create reply is not json: {e}")))?;
    let row = value
        .get("incident")
        .ok_or_else(|| TargetError::retryable(T, "create reply has no incident"))?;
    incident_of(row)
}

/// Resolves the incident opened with `key` for `team`; one already resolved,
/// or none at all, is left alone.
pub(crate) async fn resolve(
    client: &reqwest::Client,
    cfg: &PagerDutyRest,
    timeout_ms: u64,
    redact: &Redactor,
    team: &str,
    key: &str,
) -> Result<RestResolve, TargetError> {
    let service = service_id(cfg, team)?;
    let key = checked_key(key)?;
    let token = bearer(cfg).await?;
    let scrub = redact.with(&token);
    let redact = &scrub;
    let Some(incident) = find(client, cfg, timeout_ms, redact, &token, service, key).await? else {
        return Ok(RestResolve::NoIncident(format!(
            "no PagerDuty incident has incident_key {key:?}"
        )));
    };
    if incident.status == "resolved" {
        return Ok(RestResolve::AlreadyResolved(incident));
    }
    let url = format!("{}/{}", incidents_url(cfg), incident.id);
    let req = request(client, reqwest::Method::PUT, url, cfg, &token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(
            json!({"incident": {"type": "incident_reference", "status": "resolved"}}).to_string(),
        );
    let reply = exchange(cfg, req, timeout_ms, redact, "resolve").await?;
    if !reply.status.is_success() {
        return Err(error_of(&reply, "resolve", redact));
    }
    Ok(RestResolve::Resolved(RestIncident {
        status: "resolved".into(),
        ..incident
    }))
}

fn error_text(reply: &Reply) -> String {
    let parsed: Option<Value> = serde_json::from_str(&reply.body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    match err {
        Some(e) => {
            let message = e.get("message").and_then(Value::as_str).unwrap_or("error");
            let code = e.get("code").map(Value::to_string).unwrap_or_default();
            let errors: Vec<&str> = e
                .get("errors")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut text = format!("{message} (code {code})");
            if !errors.is_empty() {
                text.push_str(": ");
                text.push_str(&errors.join("; "));
            }
            text
        }
        None if reply.body.trim().is_empty() => "no error text".to_owned(),
        None => reply.body.clone(),
    }
}

/// REST errors read `{"error":{"message","code","errors":[..]}}`.
fn error_of(reply: &Reply, op: &str, redact: &Redactor) -> TargetError {
    status_error(
        T,
        reply,
        &format!("{op} failed: {}", error_text(reply)),
        redact,
    )
}
