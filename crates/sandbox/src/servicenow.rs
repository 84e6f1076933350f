//! ServiceNow Table API emulator (`incident` table only), under `/servicenow`.
//!
//! Strict where the real platform is strict: `Accept`/`Content-Type` must be
//! JSON, the bearer token must match (an issued OAuth token once OAuth is
//! configured, see [`crate::servicenow_oauth`]), field values must be strings, error
//! bodies are `{"error":{"message","detail"},"status":"failure"}`. Lenient
//! where the real platform is lenient, because clients must cope with it:
//! unknown columns are dropped silently, over-long strings are truncated, and an
//! encoded query with an unknown column ignores that term (switchable).
//!
//! Journal columns (`work_notes`, `comments`) append an entry on every write
//! and read back as `""`, except with `sysparm_display_value=true|all`, where
//! they read back as the platform's display text: every entry, newest first,
//! `"<yyyy-mm-dd hh:mm:ss> - <user> (Work notes)\n<text>\n\n"`. Every
//! accepted update (`PATCH`/`PUT`) is also kept in a log
//! ([`crate::SandboxState::servicenow_updates`]) so tests can count notes and resolves.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::SandboxState;
use crate::record::lock;

/// Incidents the emulator holds; creates beyond this fail with a 500.
pub const INCIDENTS_MAX: usize = 10_000;
/// Largest `sysparm_limit` honoured (also the platform default).
pub const SYSPARM_LIMIT_MAX: usize = 10_000;
/// Dictionary length of `short_description`; longer values are truncated, as the platform does.
pub const SHORT_DESCRIPTION_CHARS_MAX: usize = 160;
/// Dictionary length of `correlation_id` and `correlation_display`.
pub const CORRELATION_ID_CHARS_MAX: usize = 100;
/// Work notes kept per incident.
pub const WORK_NOTES_PER_INCIDENT_MAX: usize = 1_000;
/// The first incident number handed out (`INC0010001`).
pub const FIRST_INCIDENT_NUMBER: u64 = 10_001;
/// Accepted updates kept in the update log; older ones are dropped first.
pub const UPDATES_MAX: usize = 10_000;

/// Columns of `incident` the emulator knows; other names in a body are dropped
/// (custom `u_*` columns are kept).
const COLUMNS: &[&str] = &[
    "active",
    "assigned_to",
    "assignment_group",
    "business_impact",
    "business_service",
    "caller_id",
    "category",
    "caused_by",
    "close_code",
    "close_notes",
    "closed_at",
    "cmdb_ci",
    "comments",
    "contact_type",
    "correlation_display",
    "correlation_id",
    "description",
    "impact",
    "incident_state",
    "major_incident_state",
    "number",
    "opened_at",
    "opened_by",
    "parent_incident",
    "priority",
    "probable_cause",
    "problem_id",
    "promoted_by",
    "promoted_on",
    "proposed_by",
    "proposed_on",
    "resolved_at",
    "severity",
    "short_description",
    "state",
    "subcategory",
    "sys_created_by",
    "sys_created_on",
    "sys_id",
    "sys_mod_count",
    "sys_updated_by",
    "sys_updated_on",
    "urgency",
    "work_notes",
];

/// Reference columns and the table they point at (rendered as `{link, value}`).
const REFERENCES: &[(&str, &str)] = &[
    ("assigned_to", "sys_user"),
    ("assignment_group", "sys_user_group"),
    ("business_service", "cmdb_ci_service"),
    ("caller_id", "sys_user"),
    ("caused_by", "change_request"),
    ("cmdb_ci", "cmdb_ci"),
    ("opened_by", "sys_user"),
    ("parent_incident", "incident"),
    ("problem_id", "problem"),
    ("promoted_by", "sys_user"),
    ("proposed_by", "sys_user"),
];

/// Journal columns: writes append an entry; reads return "".
const JOURNALS: &[&str] = &["work_notes", "comments"];

/// The user the sandbox acts as in `sys_created_by` / `sys_updated_by`.
const API_USER: &str = "triage.gate.integration";
/// How that user is displayed in journal display text.
const API_USER_DISPLAY: &str = "Triage Gate Integration";

/// Instance behaviour that differs between ServiceNow instances; switch it per test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceNowRules {
    /// A business rule aborting a create when an active incident already has
    /// the same `correlation_id` (403). Catches clients that do not look up first.
    pub unique_active_correlation_id: bool,
    /// A data policy making `close_code` and `close_notes` mandatory when
    /// `state` becomes 6 (Resolved) or 7 (Closed) (403).
    pub require_close_info: bool,
    /// `glide.invalid_query.returns_no_rows`: an unknown column in
    /// `sysparm_query` returns no rows instead of being ignored.
    pub invalid_query_returns_no_rows: bool,
}

impl Default for ServiceNowRules {
    fn default() -> Self {
        ServiceNowRules {
            unique_active_correlation_id: true,
            require_close_info: true,
            invalid_query_returns_no_rows: false,
        }
    }
}

/// One incident record as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    pub sys_id: String,
    pub number: String,
    /// Every column, as strings (journal columns excluded).
    pub fields: BTreeMap<String, String>,
    /// Work notes in the order they were written.
    pub work_notes: Vec<String>,
    /// Additional comments in the order they were written.
    pub comments: Vec<String>,
    /// Every journal entry (work notes and comments), oldest first.
    pub journal: Vec<JournalEntry>,
}

/// One journal entry, as the platform's `sys_journal_field` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    /// `work_notes` or `comments`.
    pub column: String,
    /// `yyyy-mm-dd hh:mm:ss` (UTC).
    pub created_on: String,
    pub value: String,
}

/// One accepted `PATCH`/`PUT` of an incident: what the request wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncidentUpdate {
    pub sys_id: String,
    pub number: String,
    /// The columns written (after dropping unknown ones), journal entries included.
    pub written: BTreeMap<String, String>,
    pub at: String,
}

impl IncidentUpdate {
    /// Whether this update added a work note.
    pub fn adds_work_note(&self) -> bool {
        self.written
            .get("work_notes")
            .is_some_and(|n| !n.is_empty())
    }

    /// Whether this update set the state to Resolved (6).
    pub fn resolves(&self) -> bool {
        self.written.get("state").map(String::as_str) == Some("6")
    }
}

impl Incident {
    /// A column's value ("" for a known column never set).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    pub fn is_active(&self) -> bool {
        self.field("active") == Some("true")
    }
}

#[derive(Debug)]
pub(crate) struct ServiceNowState {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    incidents: Vec<Incident>,
    updates: std::collections::VecDeque<IncidentUpdate>,
    next_number: u64,
    rules: ServiceNowRules,
}

impl Default for ServiceNowState {
    fn default() -> Self {
        ServiceNowState {
            inner: Mutex::new(Inner {
                incidents: Vec::new(),
                updates: std::collections::VecDeque::new(),
                next_number: FIRST_INCIDENT_NUMBER,
                rules: ServiceNowRules::default(),
            }),
        }
    }
}

impl ServiceNowState {
    pub(crate) fn incidents(&self) -> Vec<Incident> {
        lock(&self.inner).incidents.clone()
    }

    pub(crate) fn updates(&self) -> Vec<IncidentUpdate> {
        lock(&self.inner).updates.iter().cloned().collect()
    }

    pub(crate) fn rules(&self) -> ServiceNowRules {
        lock(&self.inner).rules
    }

    pub(crate) fn set_rules(&self, rules: ServiceNowRules) {
        lock(&self.inner).rules = rules;
    }

    pub(crate) fn reset(&self) {
        let mut inner = lock(&self.inner);
        inner.incidents.clear();
        inner.updates.clear();
        inner.next_number = FIRST_INCIDENT_NUMBER;
        inner.rules = ServiceNowRules::default();
    }
}

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new()
        .route("/api/now/table/{table}", post(create).get(list))
        .route(
            "/api/now/table/{table}/{sys_id}",
            get(read).patch(update).put(update),
        )
}

/// A ServiceNow error answer.
pub(crate) fn error(status: StatusCode, message: &str, detail: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "detail": detail}, "status": "failure"})),
    )
        .into_response()
}

/// A refused request, answered in the ServiceNow error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SnError {
    status: StatusCode,
    message: String,
    detail: String,
}

impl SnError {
    fn new(status: StatusCode, message: impl Into<String>, detail: impl Into<String>) -> Self {
        SnError {
            status,
            message: message.into(),
            detail: detail.into(),
        }
    }
}

impl IntoResponse for SnError {
    fn into_response(self) -> Response {
        error(self.status, &self.message, &self.detail)
    }
}

type Params = Query<Vec<(String, String)>>;

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn is_true(params: &[(String, String)], name: &str) -> bool {
    param(params, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn has_json_media(headers: &HeaderMap, name: header::HeaderName) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let media = item.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("application/json")
        })
}

/// Authentication, then the data-format headers, then the table name: the
/// order the platform checks them in.
fn check_request(
    state: &SandboxState,
    headers: &HeaderMap,
    table: &str,
    has_body: bool,
) -> Result<(), SnError> {
    let authed = state.servicenow_authorized(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    if !authed {
        return Err(SnError::new(
            StatusCode::UNAUTHORIZED,
            "User Not Authenticated",
            "Required to provide Auth information",
        ));
    }
    if !has_json_media(headers, header::ACCEPT) {
        return Err(SnError::new(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "Accept header must be application/json",
        ));
    }
    if has_body && !has_json_media(headers, header::CONTENT_TYPE) {
        return Err(SnError::new(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "Content-Type header must be application/json",
        ));
    }
    if table != "incident" {
        return Err(SnError::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid table {table}"),
            "the sandbox emulates only the incident table",
        ));
    }
    Ok(())
}

/// Parse a body into column values: every value must be a string; unknown and
/// system columns are dropped; over-long strings are truncated.
fn parse_body(body: &[u8]) -> Result<BTreeMap<String, String>, SnError> {
    let bad_json = || {
        SnError::new(
            StatusCode::BAD_REQUEST,
            "Exception while reading request",
            "The payload is not valid JSON.",
        )
    };
    let value: Value = serde_json::from_slice(body).map_err(|_| bad_json())?;
    // The platform processes only the first record of an array.
    let object = match value {
        Value::Object(o) => o,
        Value::Array(items) => match items.into_iter().next() {
            Some(Value::Object(o)) => o,
            _ => return Err(bad_json()),
        },
        _ => return Err(bad_json()),
    };
    let mut fields = BTreeMap::new();
    for (name, value) in object {
        let Value::String(s) = value else {
            return Err(SnError::new(
                StatusCode::BAD_REQUEST,
                format!("Invalid value for field {name}"),
                format!("field values must be strings, got {}", json_type(&value)),
            ));
        };
        let known = COLUMNS.contains(&name.as_str()) || name.starts_with("u_");
        if !known || name.starts_with("sys_") || name == "number" {
            continue;
        }
        let max = match name.as_str() {
            "short_description" => Some(SHORT_DESCRIPTION_CHARS_MAX),
            "correlation_id" | "correlation_display" => Some(CORRELATION_ID_CHARS_MAX),
            _ => None,
        };
        let s = match max {
            Some(m) => s.chars().take(m).collect(),
            None => s,
        };
        fields.insert(name, s);
    }
    Ok(fields)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The platform's default priority lookup from impact and urgency.
fn priority(impact: &str, urgency: &str) -> &'static str {
    match (impact, urgency) {
        ("1", "1") => "1",
        ("1", "2") | ("2", "1") => "2",
        ("1", "3") | ("2", "2") | ("3", "1") => "3",
        ("2", "3") | ("3", "2") => "4",
        _ => "5",
    }
}

fn timestamp() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Apply written values to a record: journals append, derived columns follow.
fn apply(incident: &mut Incident, mut written: BTreeMap<String, String>, now: &str) {
    for journal in JOURNALS {
        if let Some(entry) = written.remove(*journal)
            && !entry.is_empty()
        {
            let list = if *journal == "work_notes" {
                &mut incident.work_notes
            } else {
                &mut incident.comments
            };
            if list.len() < WORK_NOTES_PER_INCIDENT_MAX {
                list.push(entry.clone());
                incident.journal.push(JournalEntry {
                    column: (*journal).to_owned(),
                    created_on: now.to_owned(),
                    value: entry,
                });
            }
        }
    }
    let state_written = written.contains_key("state");
    incident.fields.extend(written);
    let f = &mut incident.fields;
    let state = f.get("state").cloned().unwrap_or_default();
    f.insert("incident_state".into(), state.clone());
    let active = !matches!(state.as_str(), "6" | "7" | "8");
    f.insert("active".into(), active.to_string());
    if state_written {
        match state.as_str() {
            "6" => {
                f.insert("resolved_at".into(), now.to_owned());
            }
            "7" => {
                f.insert("closed_at".into(), now.to_owned());
            }
            "8" => {
                // Cancelling a candidate or accepted major incident cancels its MI state.
                let mis = f.get("major_incident_state").map(String::as_str);
                if matches!(mis, Some("proposed" | "accepted")) {
                    f.insert("major_incident_state".into(), "canceled".into());
                }
            }
            _ => {}
        }
    }
    let impact = f.get("impact").cloned().unwrap_or_default();
    let urgency = f.get("urgency").cloned().unwrap_or_default();
    f.insert("priority".into(), priority(&impact, &urgency).to_owned());
    f.insert("sys_updated_on".into(), now.to_owned());
    f.insert("sys_updated_by".into(), API_USER.to_owned());
}

/// Render a record the way the Table API returns it.
fn render(incident: &Incident, params: &[(String, String)], host: &str) -> Value {
    let wanted: Option<Vec<&str>> = param(params, "sysparm_fields").map(|f| {
        f.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    });
    let exclude_links = is_true(params, "sysparm_exclude_reference_link");
    let display = param(params, "sysparm_display_value")
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("all"));
    let mut out = Map::new();
    let mut put = |name: &str, value: &str| {
        if wanted.as_ref().is_some_and(|w| !w.contains(&name)) {
            return;
        }
        let reference = REFERENCES.iter().find(|(col, _)| *col == name);
        let rendered = match reference {
            Some((_, table)) if !exclude_links && !value.is_empty() => json!({
                "link": format!("http://{host}/servicenow/api/now/table/{table}/{value}"),
                "value": value,
            }),
            _ => Value::String(value.to_owned()),
        };
        out.insert(name.to_owned(), rendered);
    };
    for (name, value) in &incident.fields {
        put(name, value);
    }
    for journal in JOURNALS {
        let text = if display {
            journal_display(incident, journal)
        } else {
            String::new()
        };
        put(journal, &text);
    }
    Value::Object(out)
}

/// A journal column's display text: every entry, newest first, as the platform
/// renders it with `sysparm_display_value=true`.
fn journal_display(incident: &Incident, column: &str) -> String {
    let label = if column == "work_notes" {
        "Work notes"
    } else {
        "Additional comments"
    };
    incident
        .journal
        .iter()
        .rev()
        .filter(|e| e.column == column)
        .map(|e| {
            format!(
                "{} - {API_USER_DISPLAY} ({label})\n{}\n\n",
                e.created_on, e.value
            )
        })
        .collect()
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

fn with_body(status: StatusCode, headers: &HeaderMap, body: Value) -> Response {
    let suppress = headers
        .get("x-no-response-body")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if suppress {
        status.into_response()
    } else {
        (status, axum::Json(body)).into_response()
    }
}

async fn create(
    State(state): State<Arc<SandboxState>>,
    Path(table): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = check_request(&state, &headers, &table, true) {
        return e.into_response();
    }
    let written = match parse_body(&body) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let now = timestamp();
    let mut inner = lock(&state.servicenow.inner);
    let correlation = written.get("correlation_id").cloned().unwrap_or_default();
    if inner.rules.unique_active_correlation_id
        && !correlation.is_empty()
        && let Some(existing) = inner
            .incidents
            .iter()
            .find(|i| i.is_active() && i.field("correlation_id") == Some(correlation.as_str()))
    {
        return error(
            StatusCode::FORBIDDEN,
            "Operation Failed",
            &format!(
                "Error during insert of incident: active incident {} already has correlation_id {correlation}",
                existing.number
            ),
        );
    }
    if inner.incidents.len() >= INCIDENTS_MAX {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Operation Failed",
            &format!("sandbox incident store is full ({INCIDENTS_MAX} incidents)"),
        );
    }
    let sys_id = uuid::Uuid::new_v4().simple().to_string();
    let number = format!("INC{:07}", inner.next_number);
    inner.next_number += 1;
    let mut fields: BTreeMap<String, String> = COLUMNS
        .iter()
        .filter(|c| !JOURNALS.contains(c))
        .map(|c| ((*c).to_owned(), String::new()))
        .collect();
    for (k, v) in [
        ("sys_id", sys_id.as_str()),
        ("number", number.as_str()),
        ("state", "1"),
        ("urgency", "3"),
        ("impact", "3"),
        ("opened_at", now.as_str()),
        ("sys_created_on", now.as_str()),
        ("sys_created_by", API_USER),
        ("sys_mod_count", "0"),
        ("contact_type", "integration"),
    ] {
        fields.insert(k.to_owned(), v.to_owned());
    }
    let mut incident = Incident {
        sys_id: sys_id.clone(),
        number,
        fields,
        work_notes: Vec::new(),
        comments: Vec::new(),
        journal: Vec::new(),
    };
    apply(&mut incident, written, &now);
    let host = host(&headers);
    let result = render(&incident, &params, &host);
    inner.incidents.push(incident);
    drop(inner);
    let mut resp = with_body(StatusCode::CREATED, &headers, json!({"result": result}));
    let location = format!("http://{host}/servicenow/api/now/table/incident/{sys_id}");
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "No Record found",
        "Record doesn't exist or ACL restricts the record retrieval",
    )
}

async fn read(
    State(state): State<Arc<SandboxState>>,
    Path((table, sys_id)): Path<(String, String)>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = check_request(&state, &headers, &table, false) {
        return e.into_response();
    }
    let inner = lock(&state.servicenow.inner);
    match inner.incidents.iter().find(|i| i.sys_id == sys_id) {
        Some(i) => {
            let result = render(i, &params, &host(&headers));
            (StatusCode::OK, axum::Json(json!({"result": result}))).into_response()
        }
        None => not_found(),
    }
}

async fn update(
    State(state): State<Arc<SandboxState>>,
    Path((table, sys_id)): Path<(String, String)>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = check_request(&state, &headers, &table, true) {
        return e.into_response();
    }
    let written = match parse_body(&body) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let now = timestamp();
    let mut inner = lock(&state.servicenow.inner);
    let rules = inner.rules;
    let Some(incident) = inner.incidents.iter_mut().find(|i| i.sys_id == sys_id) else {
        return not_found();
    };
    let after = |name: &str| -> String {
        written
            .get(name)
            .or_else(|| incident.fields.get(name))
            .cloned()
            .unwrap_or_default()
    };
    if rules.require_close_info
        && matches!(after("state").as_str(), "6" | "7")
        && (after("close_code").is_empty() || after("close_notes").is_empty())
    {
        return error(
            StatusCode::FORBIDDEN,
            "Operation Failed",
            "Data Policy Exception: the following fields are mandatory: close_code, close_notes",
        );
    }
    let mods: u64 = incident
        .field("sys_mod_count")
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    incident
        .fields
        .insert("sys_mod_count".into(), (mods + 1).to_string());
    let update = IncidentUpdate {
        sys_id: incident.sys_id.clone(),
        number: incident.number.clone(),
        written: written.clone(),
        at: now.clone(),
    };
    apply(incident, written, &now);
    let result = render(incident, &params, &host(&headers));
    if inner.updates.len() >= UPDATES_MAX {
        inner.updates.pop_front();
    }
    inner.updates.push_back(update);
    drop(inner);
    with_body(StatusCode::OK, &headers, json!({"result": result}))
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    Ne(String),
    Like(String),
    StartsWith(String),
    EndsWith(String),
    IsEmpty,
    IsNotEmpty,
}

#[derive(Debug, Clone, PartialEq)]
struct Cond {
    field: String,
    op: Op,
}

impl Cond {
    fn holds(&self, incident: &Incident) -> bool {
        let v = incident.field(&self.field).unwrap_or("");
        match &self.op {
            Op::Eq(x) => v == x,
            Op::Ne(x) => v != x,
            Op::Like(x) => v.contains(x.as_str()),
            Op::StartsWith(x) => v.starts_with(x.as_str()),
            Op::EndsWith(x) => v.ends_with(x.as_str()),
            Op::IsEmpty => v.is_empty(),
            Op::IsNotEmpty => !v.is_empty(),
        }
    }
}

/// A parsed encoded query: an AND of OR-groups, an optional order, and
/// whether any term named an unknown column.
#[derive(Debug, Default)]
struct EncodedQuery {
    groups: Vec<Vec<Cond>>,
    order: Option<(String, bool)>,
    had_invalid: bool,
}

fn is_column(name: &str) -> bool {
    COLUMNS.contains(&name) || name.starts_with("u_")
}

fn parse_term(term: &str) -> Option<Cond> {
    let end = term
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(term.len());
    let (field, rest) = term.split_at(end);
    let op = if let Some(v) = rest.strip_prefix("!=") {
        Op::Ne(v.to_owned())
    } else if let Some(v) = rest.strip_prefix('=') {
        Op::Eq(v.to_owned())
    } else if let Some(v) = rest.strip_prefix("LIKE") {
        Op::Like(v.to_owned())
    } else if let Some(v) = rest.strip_prefix("STARTSWITH") {
        Op::StartsWith(v.to_owned())
    } else if let Some(v) = rest.strip_prefix("ENDSWITH") {
        Op::EndsWith(v.to_owned())
    } else if rest == "ISEMPTY" {
        Op::IsEmpty
    } else if rest == "ISNOTEMPTY" {
        Op::IsNotEmpty
    } else {
        return None;
    };
    if field.is_empty() || !is_column(field) {
        return None;
    }
    Some(Cond {
        field: field.to_owned(),
        op,
    })
}

fn parse_query(q: &str) -> EncodedQuery {
    let mut out = EncodedQuery::default();
    for term in q.split('^').filter(|t| !t.is_empty()) {
        if let Some(f) = term.strip_prefix("ORDERBYDESC") {
            out.order = Some((f.to_owned(), true));
        } else if let Some(f) = term.strip_prefix("ORDERBY") {
            out.order = Some((f.to_owned(), false));
        } else if let Some(rest) = term.strip_prefix("OR")
            && let Some(last) = out.groups.last_mut()
        {
            match parse_term(rest) {
                Some(c) => last.push(c),
                None => out.had_invalid = true,
            }
        } else {
            match parse_term(term) {
                Some(c) => out.groups.push(vec![c]),
                None => out.had_invalid = true,
            }
        }
    }
    out
}

async fn list(
    State(state): State<Arc<SandboxState>>,
    Path(table): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = check_request(&state, &headers, &table, false) {
        return e.into_response();
    }
    let query = match param(&params, "sysparm_query") {
        Some(q) => parse_query(q),
        // Without sysparm_query, plain name=value parameters filter by equality.
        None => {
            let mut q = EncodedQuery::default();
            for (k, v) in params.iter().filter(|(k, _)| !k.starts_with("sysparm_")) {
                match parse_term(&format!("{k}={v}")) {
                    Some(c) => q.groups.push(vec![c]),
                    None => q.had_invalid = true,
                }
            }
            q
        }
    };
    let limit = param(&params, "sysparm_limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(SYSPARM_LIMIT_MAX)
        .min(SYSPARM_LIMIT_MAX);
    let offset = param(&params, "sysparm_offset")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(0);
    let inner = lock(&state.servicenow.inner);
    let rules = inner.rules;
    let mut matched: Vec<&Incident> = if query.had_invalid && rules.invalid_query_returns_no_rows {
        Vec::new()
    } else {
        inner
            .incidents
            .iter()
            .filter(|i| query.groups.iter().all(|g| g.iter().any(|c| c.holds(i))))
            .collect()
    };
    if let Some((field, desc)) = &query.order {
        matched.sort_by(|a, b| {
            let (x, y) = (a.field(field), b.field(field));
            if *desc { y.cmp(&x) } else { x.cmp(&y) }
        });
    }
    let total = matched.len();
    let host = host(&headers);
    let result: Vec<Value> = matched
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|i| render(i, &params, &host))
        .collect();
    drop(inner);
    let mut resp = (StatusCode::OK, axum::Json(json!({"result": result}))).into_response();
    if !is_true(&params, "sysparm_no_count") {
        resp.headers_mut()
            .insert("x-total-count", HeaderValue::from(total));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_query_parses_and_flags_unknown_columns() {
        let q = parse_query("correlation_id=am:1^active=true^ORDERBYDESCsys_created_on");
        assert_eq!(q.groups.len(), 2);
        assert_eq!(q.order, Some(("sys_created_on".into(), true)));
        assert!(!q.had_invalid);
        let q = parse_query("corelation_id=x^active=true");
        assert!(q.had_invalid);
        assert_eq!(q.groups.len(), 1);
        let q = parse_query("state=1^ORstate=2");
        assert_eq!(q.groups.len(), 1);
        assert_eq!(q.groups[0].len(), 2);
    }

    #[test]
    fn priority_follows_default_matrix() {
        assert_eq!(priority("1", "1"), "1");
        assert_eq!(priority("2", "2"), "3");
        assert_eq!(priority("3", "3"), "5");
    }
}
