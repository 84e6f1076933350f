//! The control API under `/_sandbox`: read recordings and emulator state,
//! script the model, inject faults, switch ServiceNow rules, reset.
//! Errors are RFC 9457 problem+json.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{
    AnthropicScript, ChaosSpec, FaultSpec, ModelScript, OutageSpec, SandboxState, ServiceNowRules,
    Target,
};

/// Largest control request body, in bytes.
pub const CONTROL_BODY_BYTES_MAX: usize = 256 * 1024;

pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new()
        .route("/requests/{target}", get(requests))
        .route("/servicenow/incidents", get(incidents))
        .route("/servicenow/rules", get(get_rules).post(set_rules))
        .route("/pagerduty/alerts", get(alerts))
        .route("/bridge/posts", get(posts))
        .route("/bridge/webhooks", post(issue_webhook))
        .route("/anthropic/script", post(script))
        .route("/bedrock/script", post(bedrock_script))
        .route("/openai/script", post(openai_script))
        .route("/splunk/events", get(splunk_events))
        .route("/splunk/settings", post(splunk_settings))
        .route("/cloudwatch/events", get(cloudwatch_events))
        .route("/cloudwatch/streams", post(cloudwatch_stream))
        .route("/otlp/logs", get(otlp_logs))
        .route("/otlp/settings", post(otlp_settings))
        .route("/faults", post(fault).delete(clear_faults))
        .route("/faults/outage", post(outage))
        .route("/faults/chaos", post(chaos))
        .route("/reset", post(reset))
        .layer(DefaultBodyLimit::max(CONTROL_BODY_BYTES_MAX))
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let mut resp = (
        status,
        axum::Json(json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        })),
    )
        .into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(problem(
            StatusCode::BAD_REQUEST,
            &format!("invalid body: {e}"),
        ))
    })
}

fn ok_json<T: serde::Serialize>(value: &T) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

async fn requests(State(state): State<Arc<SandboxState>>, Path(target): Path<String>) -> Response {
    match Target::parse(&target) {
        Some(t) => ok_json(&state.requests(t)),
        None => problem(
            StatusCode::NOT_FOUND,
            &format!(
                "unknown target {target:?} (expected servicenow, servicenow_oauth, pagerduty, bridge, anthropic, bedrock, openai, splunk, cloudwatch or otlp)"
            ),
        ),
    }
}

async fn incidents(State(state): State<Arc<SandboxState>>) -> Response {
    ok_json(&state.incidents())
}

async fn get_rules(State(state): State<Arc<SandboxState>>) -> Response {
    ok_json(&state.servicenow_rules())
}

async fn set_rules(State(state): State<Arc<SandboxState>>, body: Bytes) -> Response {
    match parse::<ServiceNowRules>(&body) {
        Ok(rules) => {
            state.set_servicenow_rules(rules);
            ok_json(&rules)
        }
        Err(r) => *r,
    }
}

async fn alerts(State(state): State<Arc<SandboxState>>) -> Response {
    ok_json(&state.pagerduty_alerts())
}

async fn posts(State(state): State<Arc<SandboxState>>) -> Response {
    ok_json(&state.bridge_posts())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    token: String,
}

async fn issue_webhook(State(state): State<Arc<SandboxState>>, body: Bytes) -> Response {
    let hook = match parse::<WebhookBody>(&body) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    match state.issue_webhook(&hook.token) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => problem(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn script(State(state): State<Arc<SandboxState>>, body: Bytes) -> Response {
    let script = match parse::<AnthropicScript>(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match state.script_anthropic(script) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => problem(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn bedrock_script(State(state): State<Arc<SandboxState>>, body: Bytes) -> Response {
    match parse::<ModelScript>(&body) {
        Ok(s) => match state.script_bedrock(s) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => problem(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        Err(r) => *r,
    }
}

async fn openai_script(State(state): State<Arc<SandboxState>>, body: Bytes) -> Response {
    match parse::<ModelScript>(&body) {
        Ok(s) => match state.script_openai(s) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => problem(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        Err(r) => *r,
    }
}

async fn fault(State(state): State<Arc<SandboxState>>, body: Bytes) -> Response {
    let spec = match parse::<FaultSpec>(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match state.inject_fault(spec) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => problem(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn outage(State(state): State<Arc<SandboxState>>, body: Bytes) -> Response {
    match parse::<OutageSpec>(&body) {
        Ok(spec) => match state.inject_outage(spec) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => problem(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        Err(r) => *r,
    }
}

async fn chaos(State(state): State<Arc<SandboxState>>, body: Bytes) -> Response {
    match parse::<ChaosSpec>(&body) {
        Ok(spec) => match state.inject_chaos(spec) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => problem(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        Err(r) => *r,
    }
}

async fn clear_faults(State(state): State<Arc<SandboxState>>) -> Response {
    state.clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(State(state): State<Arc<SandboxState>>) -> Response {
    state.reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn splunk_events(State(state): State<Arc<SandboxState>>) -> Response {
    ok_json(&state.splunk_events())
}

/// `POST /_sandbox/splunk/settings`: each present key changes that setting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SplunkSettings {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    ack: Option<bool>,
    #[serde(default)]
    hold_acks: Option<bool>,
    /// `[]` or a list restricts the indexes; `null` is "unchanged".
    #[serde(default)]
    indexes: Option<Vec<String>>,
    #[serde(default)]
    any_index: Option<bool>,
    #[serde(default)]
    drop_after_index: Option<u32>,
}

async fn splunk_settings(State(state): State<Arc<SandboxState>>, body: Bytes) -> Response {
    let s = match parse::<SplunkSettings>(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Some(t) = &s.token {
        if t.trim().is_empty() {
            return problem(StatusCode::BAD_REQUEST, "token must not be empty");
        }
        state.splunk_set_token(t);
    }
    if let Some(a) = s.ack {
        state.splunk_set_ack(a);
    }
    if let Some(h) = s.hold_acks {
        state.splunk_hold_acks(h);
    }
    if let Some(ix) = s.indexes {
        state.splunk_allow_indexes(Some(ix));
    }
    if s.any_index == Some(true) {
        state.splunk_allow_indexes(None);
    }
    if let Some(n) = s.drop_after_index {
        state.splunk_drop_after_index(n.min(crate::faults::FAULT_COUNT_MAX));
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn cloudwatch_events(State(state): State<Arc<SandboxState>>) -> Response {
    ok_json(&state.cloudwatch_events())
}

/// `POST /_sandbox/cloudwatch/streams`: create a group, and a stream in it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamBody {
    log_group_name: String,
    #[serde(default)]
    log_stream_name: Option<String>,
}

async fn cloudwatch_stream(State(state): State<Arc<SandboxState>>, body: Bytes) -> Response {
    let b = match parse::<StreamBody>(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if b.log_group_name.is_empty() || b.log_stream_name.as_deref() == Some("") {
        return problem(StatusCode::BAD_REQUEST, "names must not be empty");
    }
    match &b.log_stream_name {
        Some(stream) => state.cloudwatch_create_log_stream(&b.log_group_name, stream),
        None => state.cloudwatch_create_log_group(&b.log_group_name),
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn otlp_logs(State(state): State<Arc<SandboxState>>) -> Response {
    ok_json(&state.otlp_records())
}

/// `POST /_sandbox/otlp/settings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OtlpSettings {
    /// Required bearer token; `""` removes the requirement.
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    reject_next: Option<u64>,
}

async fn otlp_settings(State(state): State<Arc<SandboxState>>, body: Bytes) -> Response {
    let s = match parse::<OtlpSettings>(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Some(t) = &s.token {
        state.otlp_require_token((!t.is_empty()).then_some(t.as_str()));
    }
    if let Some(n) = s.reject_next {
        state.otlp_reject_next(n);
    }
    StatusCode::NO_CONTENT.into_response()
}
