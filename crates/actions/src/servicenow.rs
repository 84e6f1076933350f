//! ServiceNow Table API: find an incident by `correlation_id`, create it if absent.

use serde_json::{Value, json};
use tg_model::{CorrelationId, PlannedAction, Severity};

use crate::error::TargetError;
use crate::executor::{ServiceNowConfig, TARGET_SERVICENOW};
use crate::http::{self, Reply, is_web_url, send, status_error};
use crate::secret::Redactor;

/// Characters of `short_description` (the column's default length).
pub const SHORT_DESCRIPTION_CHARS_MAX: usize = 160;

const T: &str = TARGET_SERVICENOW;

/// An incident that exists in ServiceNow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Incident {
    pub sys_id: String,
    pub number: String,
    /// Whether this call created it (false: found by correlation_id).
    pub created: bool,
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
        "correlation_display": "triage-gate",
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
    if let Some(found) = lookup(client, cfg, redact, key).await? {
        return Ok(found);
    }
    create(client, cfg, redact, &body).await
}

async fn lookup(
    client: &reqwest::Client,
    cfg: &ServiceNowConfig,
    redact: &Redactor,
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
        .bearer_auth(cfg.token.expose());
    let reply = send(T, req, cfg.timeout_ms, redact).await?;
    if !reply.status.is_success() {
        return Err(error_of(&reply, "lookup", redact));
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
    redact: &Redactor,
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
        .bearer_auth(cfg.token.expose())
        .body(body.to_string());
    let reply = send(T, req, cfg.timeout_ms, redact).await?;
    if !reply.status.is_success() {
        return Err(error_of(&reply, "create", redact));
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
