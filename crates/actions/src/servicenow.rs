//! ServiceNow Table API: find an incident by `correlation_id`, create it if
//! absent; add a work note to it (exactly once, by a marker line); resolve it.
//! Authenticated with a static bearer token or with OAuth 2.0 client
//! credentials (`/oauth_token.do`, see [`ServiceNowAuth`]).

use std::future::Future;

use serde_json::{Value, json};
use tg_model::{CorrelationId, PlannedAction, Severity};

use crate::error::TargetError;
use crate::executor::{ServiceNowAuth, ServiceNowConfig, TARGET_SERVICENOW};
use crate::http::{self, Reply, is_web_url, send, send_capped, status_error};
use crate::secret::{Redactor, Secret};

/// Characters of `short_description` (the column's default length).
pub const SHORT_DESCRIPTION_CHARS_MAX: usize = 160;
/// Dictionary length of `correlation_display`.
pub const CORRELATION_DISPLAY_CHARS_MAX: usize = 100;
/// Characters of a work note's text (before its marker line); longer evidence is cut.
pub const WORK_NOTE_CHARS_MAX: usize = 4_000;
/// Characters of `close_notes` on a resolve.
pub const CLOSE_NOTES_CHARS_MAX: usize = 4_000;
/// Bytes of an incident's work-note display text read to look for a note's
/// marker. Beyond it the check cannot be made, and the update fails
/// permanently rather than risk a second copy of the note.
pub const WORK_NOTES_READ_BYTES_MAX: usize = 1024 * 1024;
/// The close code of a resolve when none is configured.
pub const DEFAULT_CLOSE_CODE: &str = "Solved (Permanently)";

const T: &str = TARGET_SERVICENOW;

/// An incident that exists in ServiceNow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Incident {
    pub sys_id: String,
    pub number: String,
    /// Whether this call created it (false: found by correlation_id).
    pub created: bool,
    /// `state` as read ("" when the reply had none).
    pub state: String,
}

/// What a work-note update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoteOutcome {
    /// The note was added.
    Added(Incident),
    /// An earlier attempt added it (its marker is in the work notes).
    AlreadyPresent(Incident),
    /// No active incident has the parent's correlation_id (people closed it):
    /// nothing to do, and retrying cannot change that.
    NoParent(String),
}

/// What a resolve did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResolveOutcome {
    Resolved(Incident),
    /// Already Resolved (6) or Closed (7).
    AlreadyResolved(Incident),
    NoParent(String),
}

/// The credential of one try: the bearer token, and the redactor that also
/// scrubs it (an OAuth token is a secret the executor did not know at start).
pub(crate) struct Bearer {
    token: Secret,
    redact: Redactor,
}

/// The bearer for the next request. With OAuth, no token means no request:
/// the attempt fails retryable (fail closed; the outbox tries again later).
async fn bearer(cfg: &ServiceNowConfig, redact: &Redactor) -> Result<Bearer, TargetError> {
    match &cfg.auth {
        ServiceNowAuth::Token(token) => Ok(Bearer {
            token: token.clone(),
            redact: redact.clone(),
        }),
        ServiceNowAuth::OAuth(source) => {
            let token = source.token().await.map_err(|e| {
                TargetError::retryable(T, format!("no ServiceNow OAuth token: {e}"))
            })?;
            Ok(Bearer {
                redact: redact.with(&token),
                token,
            })
        }
    }
}

/// Runs `op` with a bearer. With OAuth, a 401 from the Table API drops the
/// cached token, a new one is fetched and `op` runs once more (every op looks
/// up before it writes, so running it again is safe); a second 401 is
/// retryable, never permanent: the instance may not know the new token yet.
async fn authed<R, F, Fut>(
    cfg: &ServiceNowConfig,
    redact: &Redactor,
    op: F,
) -> Result<R, TargetError>
where
    F: Fn(Bearer) -> Fut,
    Fut: Future<Output = Result<R, TargetError>>,
{
    let first = bearer(cfg, redact).await?;
    let ServiceNowAuth::OAuth(source) = &cfg.auth else {
        return op(first).await;
    };
    match op(first).await {
        Err(e) if e.http_status() == Some(401) => {
            tracing::info!(
                target_system = T,
                "the Table API refused the OAuth token; fetching a new one"
            );
            source.invalidate().await;
            let second = bearer(cfg, redact).await?;
            match op(second).await {
                Err(TargetError::Permanent { target, detail })
                    if detail.starts_with("http 401") =>
                {
                    source.invalidate().await;
                    Err(TargetError::Retryable {
                        target,
                        detail: format!("{detail} (a freshly fetched OAuth token was refused too)"),
                    })
                }
                other => other,
            }
        }
        other => other,
    }
}

fn table_url(cfg: &ServiceNowConfig) -> String {
    format!(
        "{}/api/now/table/incident",
        cfg.base_url.trim_end_matches('/')
    )
}

/// A link people can open to the incident.
pub(crate) fn incident_link(cfg: &ServiceNowConfig, sys_id: &str) -> String {
    format!(
        "{}/nav_to.do?uri=incident.do?sys_id={sys_id}",
        cfg.base_url.trim_end_matches('/')
    )
}

/// Urgency and impact ("1" high .. "3" low) for a severity; a major incident is 1/1.
pub(crate) fn urgency_impact(severity: Severity, major: bool) -> (&'static str, &'static str) {
    if major {
        return ("1", "1");
    }
    match severity {
        Severity::Sev1 => ("1", "1"),
        Severity::High => ("1", "2"),
        Severity::Medium => ("2", "2"),
        Severity::Low => ("3", "3"),
    }
}

/// The create body: every value a string, as the Table API expects.
pub(crate) fn incident_body(
    cfg: &ServiceNowConfig,
    action: &PlannedAction,
    major: bool,
) -> Result<Value, TargetError> {
    let key = checked_key(action)?;
    let group = cfg.assignment_groups.get(&action.team).ok_or_else(|| {
        TargetError::permanent(T, format!("no assignment group for team {:?}", action.team))
    })?;
    let (urgency, impact) = urgency_impact(action.severity, major);
    let mut notes = format!(
        "Opened by triage-gate.\nrun_id: {}\ncorrelation_id: {}\nfingerprint: {}\nseverity: {}, confidence: {:.2}, environment: {}",
        action.run_id,
        action.correlation_id,
        action.fingerprint,
        action.severity,
        action.confidence,
        action.environment.as_str()
    );
    let links: Vec<_> = action
        .links
        .iter()
        .filter(|l| is_web_url(&l.url))
        .take(crate::LINKS_MAX)
        .collect();
    if !links.is_empty() {
        notes.push_str("\nLinks:");
        for l in links {
            notes.push_str(&format!("\n- {}: {}", l.label, l.url));
        }
    }
    let mut body = json!({
        "short_description": http::take_chars(&action.title, SHORT_DESCRIPTION_CHARS_MAX),
        "description": action.details,
        "urgency": urgency,
        "impact": impact,
        "assignment_group": group,
        "category": "software",
        "correlation_id": key,
        // The run's correlation ID: it follows the run across systems
        // (ARCHITECTURE.md, Terms; docs/configuration.md, Actions).
        "correlation_display": http::take_chars(action.correlation_id.as_str(), CORRELATION_DISPLAY_CHARS_MAX),
        "work_notes": notes,
    });
    if let Some(obj) = body.as_object_mut() {
        if let Some(caller) = &cfg.caller_id {
            obj.insert("caller_id".into(), Value::String(caller.clone()));
        }
        if major {
            obj.insert(
                "major_incident_state".into(),
                Value::String("proposed".into()),
            );
        }
    }
    Ok(body)
}

/// The idempotency key, checked usable as a `correlation_id` (`^` would split the query).
fn checked_key(action: &PlannedAction) -> Result<&str, TargetError> {
    let key = action.idempotency_key.as_str();
    if CorrelationId::is_valid(key) {
        Ok(key)
    } else {
        Err(TargetError::permanent(
            T,
            format!(
                "idempotency key {:?} is not a valid correlation_id (1..={} chars of [A-Za-z0-9._:-])",
                http::take_chars(key, 120),
                tg_model::ids::CORRELATION_ID_MAX
            ),
        ))
    }
}

/// Finds the active incident for the action's key, or creates it. The lookup
/// runs first on every attempt, so a retry after a lost create reply (or a
/// crash) finds the incident instead of opening a second one.
pub(crate) async fn ensure_incident(
    client: &reqwest::Client,
    cfg: &ServiceNowConfig,
    redact: &Redactor,
    action: &PlannedAction,
    major: bool,
) -> Result<Incident, TargetError> {
    let body = incident_body(cfg, action, major)?;
    let key = checked_key(action)?;
    authed(cfg, redact, |auth| {
        let body = &body;
        async move {
            if let Some(found) = lookup(client, cfg, &auth, key).await? {
                return Ok(found);
            }
            create(client, cfg, &auth, body).await
        }
    })
    .await
}

async fn lookup(
    client: &reqwest::Client,
    cfg: &ServiceNowConfig,
    auth: &Bearer,
    key: &str,
) -> Result<Option<Incident>, TargetError> {
    let req = client
        .get(table_url(cfg))
        .query(&[
            ("sysparm_query", format!("correlation_id={key}^active=true")),
            (
                "sysparm_fields",
                "sys_id,number,state,correlation_id".into(),
            ),
            ("sysparm_limit", "1".into()),
        ])
        .header(reqwest::header::ACCEPT, "application/json")
        .bearer_auth(auth.token.expose());
    let reply = send(T, req, cfg.timeout_ms, &auth.redact).await?;
    if !reply.status.is_success() {
        return Err(error_of(&reply, "lookup", &auth.redact));
    }
    let value: Value = serde_json::from_str(&reply.body)
        .map_err(|e| TargetError::retryable(T, format!("lookup reply is not json: {e}")))?;
    let Some(rows) = value.get("result").and_then(Value::as_array) else {
        return Err(TargetError::retryable(
            T,
            "lookup reply has no result array",
        ));
    };
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    // An unknown field in an encoded query is silently dropped, so a row may
    // be any incident: trust it only if its correlation_id is ours.
    let got = row.get("correlation_id").and_then(Value::as_str);
    if got != Some(key) {
        return Err(TargetError::permanent(
            T,
            format!(
                "lookup for correlation_id {key:?} returned an incident with correlation_id {:?}; the instance may be ignoring the query",
                got.map(|g| http::take_chars(g, 120))
            ),
        ));
    }
    incident_of(row, false).map(Some)
}

async fn create(
    client: &reqwest::Client,
    cfg: &ServiceNowConfig,
    auth: &Bearer,
    body: &Value,
) -> Result<Incident, TargetError> {
    let req = client
        .post(table_url(cfg))
        .query(&[
            ("sysparm_fields", "sys_id,number,state,correlation_id"),
            ("sysparm_exclude_reference_link", "true"),
        ])
        .header(reqwest::header::ACCEPT, "application/json")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .bearer_auth(auth.token.expose())
        .body(body.to_string());
    let reply = send(T, req, cfg.timeout_ms, &auth.redact).await?;
    if !reply.status.is_success() {
        return Err(error_of(&reply, "create", &auth.redact));
    }
    // A success we cannot read may still have created the incident: retrying is
    // safe because the next attempt looks it up first.
    let value: Value = serde_json::from_str(&reply.body)
        .map_err(|e| TargetError::retryable(T, format!("create reply is not json: {e}")))?;
    let row = value
        .get("result")
        .ok_or_else(|| TargetError::retryable(T, "create reply has no result"))?;
    incident_of(row, true)
}

/// The parent's key (the create's idempotency key = its `correlation_id`),
/// checked usable in a query. Missing is a planning error: permanent.
pub(crate) fn checked_parent(action: &PlannedAction) -> Result<&str, TargetError> {
    let Some(key) = action.parent_key.as_deref() else {
        return Err(TargetError::permanent(
            T,
            format!(
                "{} {} has no parent_key: there is no incident to act on",
                action.kind,
                action.op.as_str()
            ),
        ));
    };
    if CorrelationId::is_valid(key) {
        Ok(key)
    } else {
        Err(TargetError::permanent(
            T,
            format!(
                "parent_key {:?} is not a valid correlation_id",
                http::take_chars(key, 120)
            ),
        ))
    }
}

/// The line that marks a note as this action's, so a repeat can see it is there.
/// The key is a checked correlation_id: no `]` or newline can end it early.
pub(crate) fn note_marker(idempotency_key: &str) -> String {
    format!("[triage-gate {idempotency_key}]")
}

/// The work note: the evidence (cut), then the marker line.
pub(crate) fn note_text(action: &PlannedAction) -> Result<String, TargetError> {
    let key = checked_key(action)?;
    let evidence = http::take_chars(action.details.trim(), WORK_NOTE_CHARS_MAX);
    let evidence = if evidence.is_empty() {
        format!("triage-gate: new evidence for run {}", action.run_id)
    } else {
        evidence
    };
    Ok(format!("{evidence}\n{}", note_marker(key)))
}

fn no_parent(key: &str) -> String {
    format!("no active incident has correlation_id {key:?}; it was closed or never created")
}

/// Adds the action's work note to the parent incident, exactly once: the
/// incident's work notes are read first and the note is skipped when its
/// marker is already there (an earlier attempt's PATCH landed but its reply
/// was lost, or the process died before recording it).
pub(crate) async fn add_note(
    client: &reqwest::Client,
    cfg: &ServiceNowConfig,
    redact: &Redactor,
    action: &PlannedAction,
) -> Result<NoteOutcome, TargetError> {
    let parent = checked_parent(action)?;
    let text = note_text(action)?;
    let marker = note_marker(checked_key(action)?);
    authed(cfg, redact, |auth| {
        let (text, marker) = (&text, &marker);
        async move {
            let Some(incident) = lookup(client, cfg, &auth, parent).await? else {
                return Ok(NoteOutcome::NoParent(no_parent(parent)));
            };
            let notes = read_work_notes(client, cfg, &auth, &incident).await?;
            if notes.contains(marker.as_str()) {
                return Ok(NoteOutcome::AlreadyPresent(incident));
            }
            patch(
                client,
                cfg,
                &auth,
                &incident.sys_id,
                &json!({ "work_notes": text }),
                "work note",
            )
            .await?;
            Ok(NoteOutcome::Added(incident))
        }
    })
    .await
}

/// Sets the parent incident Resolved (6) with the configured close code; an
/// incident already Resolved or Closed is left alone.
pub(crate) async fn resolve(
    client: &reqwest::Client,
    cfg: &ServiceNowConfig,
    redact: &Redactor,
    action: &PlannedAction,
) -> Result<ResolveOutcome, TargetError> {
    let parent = checked_parent(action)?;
    let notes = http::take_chars(action.details.trim(), CLOSE_NOTES_CHARS_MAX);
    let notes = if notes.is_empty() {
        format!(
            "Resolved by triage-gate: the alert source reported it resolved (run {}).",
            action.run_id
        )
    } else {
        notes
    };
    authed(cfg, redact, |auth| {
        let notes = &notes;
        async move {
            let Some(incident) = lookup(client, cfg, &auth, parent).await? else {
                return Ok(ResolveOutcome::NoParent(no_parent(parent)));
            };
            if matches!(incident.state.as_str(), "6" | "7") {
                return Ok(ResolveOutcome::AlreadyResolved(incident));
            }
            let mut resolved = incident;
            let state = patch(
                client,
                cfg,
                &auth,
                &resolved.sys_id,
                &json!({ "state": "6", "close_code": cfg.close_code, "close_notes": notes }),
                "resolve",
            )
            .await?;
            resolved.state = if state.is_empty() {
                "6".to_owned()
            } else {
                state
            };
            Ok(ResolveOutcome::Resolved(resolved))
        }
    })
    .await
}

fn record_url(cfg: &ServiceNowConfig, sys_id: &str) -> String {
    format!("{}/{sys_id}", table_url(cfg))
}

/// The incident's work notes as display text (every entry; journal fields
/// read back empty without `sysparm_display_value`).
async fn read_work_notes(
    client: &reqwest::Client,
    cfg: &ServiceNowConfig,
    auth: &Bearer,
    incident: &Incident,
) -> Result<String, TargetError> {
    let req = client
        .get(record_url(cfg, &incident.sys_id))
        .query(&[
            ("sysparm_fields", "work_notes"),
            ("sysparm_display_value", "true"),
        ])
        .header(reqwest::header::ACCEPT, "application/json")
        .bearer_auth(auth.token.expose());
    let reply = send_capped(
        T,
        req,
        cfg.timeout_ms,
        &auth.redact,
        WORK_NOTES_READ_BYTES_MAX,
    )
    .await?;
    if !reply.status.is_success() {
        return Err(error_of(&reply, "work notes read", &auth.redact));
    }
    if reply.truncated {
        return Err(TargetError::permanent(
            T,
            format!(
                "work notes of {} exceed {WORK_NOTES_READ_BYTES_MAX} bytes: cannot check whether this note was already added",
                incident.number
            ),
        ));
    }
    let value: Value = serde_json::from_str(&reply.body)
        .map_err(|e| TargetError::retryable(T, format!("work notes reply is not json: {e}")))?;
    match value.get("result").and_then(|r| r.get("work_notes")) {
        Some(Value::String(s)) => Ok(s.clone()),
        // A reference-style rendering: {display_value, value}.
        Some(v) => Ok(v
            .get("display_value")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()),
        None => Err(TargetError::permanent(
            T,
            format!(
                "the record of {} has no work_notes field: the integration user may not read journal fields",
                incident.number
            ),
        )),
    }
}

/// One PATCH of a record; the state it reports back.
async fn patch(
    client: &reqwest::Client,
    cfg: &ServiceNowConfig,
    auth: &Bearer,
    sys_id: &str,
    body: &Value,
    op: &str,
) -> Result<String, TargetError> {
    let req = client
        .patch(record_url(cfg, sys_id))
        .query(&[
            ("sysparm_fields", "sys_id,number,state"),
            ("sysparm_exclude_reference_link", "true"),
        ])
        .header(reqwest::header::ACCEPT, "application/json")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .bearer_auth(auth.token.expose())
        .body(body.to_string());
    let reply = send(T, req, cfg.timeout_ms, &auth.redact).await?;
    if !reply.status.is_success() {
        return Err(error_of(&reply, op, &auth.redact));
    }
    // The update is applied; an unreadable reply is not worth a retry (a note
    // would be found by its marker, a resolve by its state, but why ask).
    Ok(serde_json::from_str::<Value>(&reply.body)
        .ok()
        .and_then(|v| {
            v.get("result")
                .and_then(|r| r.get("state"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default())
}

fn incident_of(row: &Value, created: bool) -> Result<Incident, TargetError> {
    let field = |name: &str| {
        row.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| TargetError::retryable(T, format!("incident record has no {name}")))
    };
    Ok(Incident {
        sys_id: field("sys_id")?,
        number: field("number")?,
        created,
        state: row
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

/// ServiceNow errors read `{"error":{"message","detail"},"status":"failure"}`.
fn error_of(reply: &Reply, op: &str, redact: &Redactor) -> TargetError {
    let parsed: Option<Value> = serde_json::from_str(&reply.body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let message = err.and_then(|e| e.get("message")).and_then(Value::as_str);
    let detail = err.and_then(|e| e.get("detail")).and_then(Value::as_str);
    let what = match (message, detail) {
        (Some(m), Some(d)) if !d.is_empty() => format!("{op} failed: {m} ({d})"),
        (Some(m), _) => format!("{op} failed: {m}"),
        _ => format!("{op} failed: {}", reply.body),
    };
    status_error(T, reply, &what, redact)
}
