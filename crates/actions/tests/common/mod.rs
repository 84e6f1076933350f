//! A small emulator of ServiceNow, PagerDuty Events v2 and chat webhooks,
//! served over real HTTP on 127.0.0.1:0, recording every request it sees.

// Test support, not shipped: it may panic on a broken test setup, which is what a test wants.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tg_model::{
    ActionKind, ActionOp, CorrelationId, Environment, Fingerprint, LogPointer, PlannedAction,
    RunId, Severity,
};
use triage_gate_actions::{
    BridgeConfig, BridgeFormat, Executor, PagerDutyConfig, RetryPolicy, Secret, ServiceNowAuth,
    ServiceNowConfig,
};

pub const SNOW_TOKEN: &str = "snow-token-7f3a9c1e-SECRET";
pub const PD_KEY_PAYMENTS: &str = "0123456789abcdef0123456789abcdef";
pub const PD_KEY_SEARCH: &str = "fedcba9876543210fedcba9876543210";
pub const WEBHOOK_PATH: &str = "/services/T000/B000/XXXXwebhooksecretXXXX";

/// One request as the emulator saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: HeaderMap,
    pub body: String,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("request body is json")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A scripted answer for the next request to a route.
#[derive(Debug, Clone)]
pub struct Fault {
    /// `None`: handle normally (then apply `delay_ms`).
    pub status: Option<u16>,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay_ms: u64,
}

impl Fault {
    pub fn status(status: u16, body: impl Into<String>) -> Self {
        Fault {
            status: Some(status),
            headers: vec![],
            body: body.into(),
            delay_ms: 0,
        }
    }
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    /// Handle the request for real, but answer only after `ms`.
    pub fn slow(ms: u64) -> Self {
        Fault {
            status: None,
            headers: vec![],
            body: String::new(),
            delay_ms: ms,
        }
    }
}

#[derive(Default)]
pub struct EmuState {
    pub seen: Vec<Seen>,
    pub faults: HashMap<&'static str, VecDeque<Fault>>,
    pub incidents: Vec<Value>,
    /// Emulates an instance that drops the unknown query field: every lookup returns all rows.
    pub ignore_query: bool,
}

#[derive(Clone, Default)]
pub struct Emu(pub Arc<Mutex<EmuState>>);

impl Emu {
    pub fn fault(&self, route: &'static str, fault: Fault) {
        self.0
            .lock()
            .unwrap()
            .faults
            .entry(route)
            .or_default()
            .push_back(fault);
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().seen.clone()
    }
    pub fn seen_on(&self, method: Method, path_prefix: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method && s.path.starts_with(path_prefix))
            .collect()
    }
    pub fn seed_incident(&self, correlation_id: &str, sys_id: &str, number: &str) {
        self.0.lock().unwrap().incidents.push(json!({
            "sys_id": sys_id, "number": number, "state": "1", "correlation_id": correlation_id, "active": "true",
        }));
    }
    pub fn incidents(&self) -> Vec<Value> {
        self.0.lock().unwrap().incidents.clone()
    }
}

fn route_of(method: &Method, path: &str) -> &'static str {
    match (method.as_str(), path) {
        ("GET", "/api/now/table/incident") => "snow_get",
        ("POST", "/api/now/table/incident") => "snow_post",
        ("POST", "/v2/enqueue") => "pd",
        ("POST", p) if p.starts_with("/services/") || p.starts_with("/workflows/") => "bridge",
        _ => "other",
    }
}

fn snow_error(status: StatusCode, message: &str, detail: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"error": {"message": message, "detail": detail}, "status": "failure"}).to_string(),
    )
        .into_response()
}

async fn handle(
    State(emu): State<Emu>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        headers: headers.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let route = route_of(&method, &path);
    let fault = {
        let mut st = emu.0.lock().unwrap();
        st.seen.push(seen.clone());
        st.faults.get_mut(route).and_then(|q| q.pop_front())
    };
    if let Some(f) = &fault
        && let Some(status) = f.status
    {
        let mut resp = (StatusCode::from_u16(status).unwrap(), f.body.clone()).into_response();
        for (k, v) in &f.headers {
            resp.headers_mut().insert(*k, v.parse().unwrap());
        }
        return resp;
    }
    let resp = match route {
        "snow_get" => snow_get(&emu, &seen),
        "snow_post" => snow_post(&emu, &seen),
        "pd" => pd_enqueue(&seen),
        "bridge" => bridge(&seen),
        _ => (StatusCode::NOT_FOUND, "no such route").into_response(),
    };
    if let Some(f) = fault {
        tokio::time::sleep(Duration::from_millis(f.delay_ms)).await;
    }
    resp
}

fn snow_auth(seen: &Seen) -> Option<Response> {
    if seen.header("authorization") != Some(&format!("Bearer {SNOW_TOKEN}")) {
        return Some(snow_error(
            StatusCode::UNAUTHORIZED,
            "User Not Authenticated",
            "Required to provide Auth information",
        ));
    }
    None
}

fn snow_get(emu: &Emu, seen: &Seen) -> Response {
    if let Some(r) = snow_auth(seen) {
        return r;
    }
    let st = emu.0.lock().unwrap();
    let q = seen.query.get("sysparm_query").cloned().unwrap_or_default();
    let wanted = q
        .strip_prefix("correlation_id=")
        .and_then(|rest| rest.strip_suffix("^active=true"))
        .map(str::to_owned);
    let limit: usize = seen
        .query
        .get("sysparm_limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10000);
    let fields: Vec<String> = seen
        .query
        .get("sysparm_fields")
        .map(|f| f.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let rows: Vec<Value> = st
        .incidents
        .iter()
        .filter(|i| {
            st.ignore_query || Some(i["correlation_id"].as_str().unwrap().to_owned()) == wanted
        })
        .take(limit)
        .map(|i| {
            let mut row = serde_json::Map::new();
            for f in &fields {
                if let Some(v) = i.get(f) {
                    row.insert(f.clone(), v.clone());
                }
            }
            Value::Object(row)
        })
        .collect();
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        json!({"result": rows}).to_string(),
    )
        .into_response()
}

fn snow_post(emu: &Emu, seen: &Seen) -> Response {
    if seen.header("accept") != Some("application/json")
        || seen.header("content-type") != Some("application/json")
    {
        return snow_error(
            StatusCode::BAD_REQUEST,
            "Invalid content type",
            "Accept and Content-Type must be application/json",
        );
    }
    if let Some(r) = snow_auth(seen) {
        return r;
    }
    let Ok(Value::Object(body)) = serde_json::from_str::<Value>(&seen.body) else {
        return snow_error(
            StatusCode::BAD_REQUEST,
            "Exception while reading request",
            "body is not a json object",
        );
    };
    if let Some((k, _)) = body.iter().find(|(_, v)| !v.is_string()) {
        return snow_error(
            StatusCode::BAD_REQUEST,
            "Invalid field value",
            &format!("{k} must be a string"),
        );
    }
    let mut st = emu.0.lock().unwrap();
    let n = st.incidents.len() + 1;
    let sys_id = format!("{:032x}", 0x5f1c_0000_u64 + n as u64);
    let number = format!("INC{:07}", 10000 + n);
    let mut record = body.clone();
    record.insert("sys_id".into(), sys_id.clone().into());
    record.insert("number".into(), number.clone().into());
    record.insert("state".into(), "1".into());
    record.insert("active".into(), "true".into());
    st.incidents.push(Value::Object(record.clone()));
    let mut resp = (
        StatusCode::CREATED,
        [("content-type", "application/json")],
        json!({"result": record}).to_string(),
    )
        .into_response();
    resp.headers_mut().insert(
        "location",
        format!("http://snow/api/now/table/incident/{sys_id}")
            .parse()
            .unwrap(),
    );
    resp
}

fn pd_invalid(errors: Vec<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/json")],
        json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors})
            .to_string(),
    )
        .into_response()
}

fn pd_enqueue(seen: &Seen) -> Response {
    let Ok(body) = serde_json::from_str::<Value>(&seen.body) else {
        return pd_invalid(vec!["body is not json".into()]);
    };
    let mut errors = vec![];
    let key = body["routing_key"].as_str().unwrap_or_default();
    if key.len() != 32 {
        errors.push(format!("routing_key {key} must be 32 characters"));
    }
    let action = body["event_action"].as_str().unwrap_or_default();
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        errors.push("event_action is invalid".into());
    }
    let dedup = body["dedup_key"].as_str().map(str::to_owned);
    if dedup.as_ref().is_some_and(|d| d.len() > 255) {
        errors.push("dedup_key is longer than 255".into());
    }
    if action == "trigger" {
        let p = &body["payload"];
        if p["summary"]
            .as_str()
            .is_none_or(|s| s.chars().count() > 1024)
        {
            errors.push("payload.summary is missing or too long".into());
        }
        if p["source"].as_str().is_none() {
            errors.push("payload.source is missing".into());
        }
        if !["critical", "error", "warning", "info"]
            .contains(&p["severity"].as_str().unwrap_or_default())
        {
            errors.push("payload.severity is invalid".into());
        }
    } else if dedup.is_none() {
        errors.push("dedup_key is required".into());
    }
    if !errors.is_empty() {
        return pd_invalid(errors);
    }
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        json!({"status": "success", "message": "Event processed", "dedup_key": dedup.unwrap_or_else(|| "generated".into())}).to_string(),
    )
        .into_response()
}

fn bridge(seen: &Seen) -> Response {
    if seen.header("content-type") != Some("application/json")
        || serde_json::from_str::<Value>(&seen.body).is_err()
    {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    }
    if seen.path.starts_with("/workflows/") {
        StatusCode::ACCEPTED.into_response()
    } else {
        (StatusCode::OK, [("content-type", "text/plain")], "ok").into_response()
    }
}

/// Starts the emulator on 127.0.0.1:0.
pub async fn start() -> (Emu, SocketAddr) {
    let emu = Emu::default();
    let app = Router::new().fallback(handle).with_state(emu.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (emu, addr)
}

pub fn fast_retry(attempts_max: u32) -> RetryPolicy {
    RetryPolicy {
        attempts_max,
        backoff_base_ms: 2,
        backoff_max_ms: 10,
        retry_after_max_secs: 5,
        jitter_seed: 42,
    }
}

pub fn snow_config(addr: SocketAddr) -> ServiceNowConfig {
    ServiceNowConfig {
        tls: Default::default(),
        base_url: format!("http://{addr}"),
        auth: ServiceNowAuth::Token(Secret::new(SNOW_TOKEN)),
        assignment_groups: [
            (
                "payments".to_owned(),
                "a715cd759f2002002920bde8132e7018".to_owned(),
            ),
            ("search".to_owned(), "Search SRE".to_owned()),
        ]
        .into(),
        caller_id: Some("6816f79cc0a8016401c5a33be04be441".into()),
        close_code: triage_gate_actions::DEFAULT_CLOSE_CODE.into(),
        timeout_ms: 2000,
    }
}

pub fn pd_config(addr: SocketAddr) -> PagerDutyConfig {
    PagerDutyConfig {
        tls: Default::default(),
        base_url: format!("http://{addr}"),
        routing_keys: [
            ("payments".to_owned(), Secret::new(PD_KEY_PAYMENTS)),
            ("search".to_owned(), Secret::new(PD_KEY_SEARCH)),
        ]
        .into(),
        timeout_ms: 2000,
        rest: None,
    }
}

pub fn bridge_config(addr: SocketAddr, format: BridgeFormat) -> BridgeConfig {
    let path = match format {
        BridgeFormat::Slack => WEBHOOK_PATH.to_owned(),
        BridgeFormat::Teams => format!("/workflows{WEBHOOK_PATH}"),
    };
    BridgeConfig {
        tls: Default::default(),
        webhook_url: Some(Secret::new(format!("http://{addr}{path}"))),
        format,
        conference_url: Some("https://meet.example.com/mi-bridge".into()),
        timeout_ms: 2000,
        webhooks: vec![],
    }
}

pub fn executor(addr: SocketAddr, format: BridgeFormat, retry: RetryPolicy) -> Executor {
    Executor::new(
        Some(snow_config(addr)),
        Some(pd_config(addr)),
        Some(bridge_config(addr, format)),
        retry,
    )
    .unwrap()
}

pub fn action(kind: ActionKind) -> PlannedAction {
    PlannedAction {
        kind,
        op: ActionOp::Create,
        parent_key: None,
        run_id: RunId::from("run_0190f0c2-7a3b-7c1d-9e2f-000000000001"),
        correlation_id: CorrelationId::from("am:prod:9f3c1e2a"),
        idempotency_key: format!("tg:run_0190f0c2:{kind}"),
        dedup_key: "tg:checkout:0123456789abcdef0123456789abcdef".into(),
        team: "payments".into(),
        service: "checkout".into(),
        environment: Environment::Production,
        severity: Severity::High,
        confidence: 0.91,
        fingerprint: Fingerprint::from("0123456789abcdef0123456789abcdef"),
        title: "Checkout latency SLO burn".into(),
        details: "p99 latency above 2s for 10 minutes".into(),
        links: vec![
            LogPointer {
                label: "generator".into(),
                url: "https://prometheus.example.com/graph?g0.expr=x".into(),
            },
            LogPointer {
                label: "evil".into(),
                url: "javascript:alert(1)".into(),
            },
        ],
    }
}
