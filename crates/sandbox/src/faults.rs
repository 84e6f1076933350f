//! Fault injection: make the next N requests to a target fail (or stall) the
//! way that service fails, with its own status codes, headers and error body.

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::record::{Target, lock};

/// Requests one fault may affect.
pub const FAULT_COUNT_MAX: u32 = 10_000;
/// Faults queued per target at once.
pub const FAULTS_QUEUED_PER_TARGET_MAX: usize = 64;
/// Longest injected delay before answering, in milliseconds.
pub const FAULT_DELAY_MS_MAX: u64 = 120_000;
/// Largest `Retry-After` an injected fault may announce, in seconds.
pub const FAULT_RETRY_AFTER_SECS_MAX: u64 = 86_400;

/// What to inject. JSON form of `POST /_sandbox/faults`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// `servicenow`, `pagerduty`, `bridge`, `anthropic`, `bedrock` or `openai`.
    pub target: String,
    /// HTTP status to answer (400..=599), e.g. 500, 429, 503, 529. `None` with
    /// `delay_ms` set delays the request and then serves it normally.
    #[serde(default)]
    pub status: Option<u16>,
    /// How many of the next requests to that target are affected (1..=[`FAULT_COUNT_MAX`]).
    pub count: u32,
    /// `Retry-After` to announce on 429/503 (ignored by PagerDuty, which sends none).
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    /// Wait this long before answering (to exercise client timeouts).
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

/// Why a [`FaultSpec`] was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultError {
    #[error(
        "unknown fault target {0:?} (expected servicenow, pagerduty, bridge, anthropic, bedrock or openai)"
    )]
    UnknownTarget(String),
    #[error("fault status {0} is not an error status (expected 400..=599)")]
    BadStatus(u16),
    #[error("fault count {0} is outside 1..={FAULT_COUNT_MAX}")]
    BadCount(u32),
    #[error("fault delay_ms {0} exceeds {FAULT_DELAY_MS_MAX}")]
    DelayTooLong(u64),
    #[error("fault retry_after_secs {0} exceeds {FAULT_RETRY_AFTER_SECS_MAX}")]
    RetryAfterTooLong(u64),
    #[error("fault needs a status, a delay_ms, or both")]
    Empty,
    #[error("too many faults queued for {0} (max {FAULTS_QUEUED_PER_TARGET_MAX})")]
    QueueFull(Target),
}

/// One fault, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault {
    pub status: Option<StatusCode>,
    pub retry_after_secs: Option<u64>,
    pub delay_ms: Option<u64>,
}

/// The queued faults, per target.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    queues: Mutex<[VecDeque<(Fault, u32)>; 6]>,
}

fn slot(target: Target) -> usize {
    match target {
        Target::Servicenow => 0,
        Target::Pagerduty => 1,
        Target::Bridge => 2,
        Target::Anthropic => 3,
        Target::Bedrock => 4,
        Target::Openai => 5,
    }
}

impl Faults {
    pub(crate) fn inject(&self, spec: &FaultSpec) -> Result<(), FaultError> {
        let target = Target::parse(&spec.target)
            .ok_or_else(|| FaultError::UnknownTarget(spec.target.clone()))?;
        let status = match spec.status {
            Some(s) if (400..=599).contains(&s) => {
                Some(StatusCode::from_u16(s).map_err(|_| FaultError::BadStatus(s))?)
            }
            Some(s) => return Err(FaultError::BadStatus(s)),
            None => None,
        };
        if spec.count == 0 || spec.count > FAULT_COUNT_MAX {
            return Err(FaultError::BadCount(spec.count));
        }
        if let Some(d) = spec.delay_ms.filter(|d| *d > FAULT_DELAY_MS_MAX) {
            return Err(FaultError::DelayTooLong(d));
        }
        if let Some(r) = spec
            .retry_after_secs
            .filter(|r| *r > FAULT_RETRY_AFTER_SECS_MAX)
        {
            return Err(FaultError::RetryAfterTooLong(r));
        }
        if status.is_none() && spec.delay_ms.is_none() {
            return Err(FaultError::Empty);
        }
        let fault = Fault {
            status,
            retry_after_secs: spec.retry_after_secs,
            delay_ms: spec.delay_ms,
        };
        let mut queues = lock(&self.queues);
        let queue = queues
            .get_mut(slot(target))
            .ok_or(FaultError::QueueFull(target))?;
        if queue.len() >= FAULTS_QUEUED_PER_TARGET_MAX {
            return Err(FaultError::QueueFull(target));
        }
        queue.push_back((fault, spec.count));
        Ok(())
    }

    /// Take the fault that applies to the next request to `target`, if any.
    pub(crate) fn take(&self, target: Target) -> Option<Fault> {
        let mut queues = lock(&self.queues);
        let queue = queues.get_mut(slot(target))?;
        let (fault, remaining) = queue.front_mut()?;
        let fault = *fault;
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            queue.pop_front();
        }
        Some(fault)
    }

    pub(crate) fn clear(&self) {
        let mut queues = lock(&self.queues);
        for q in queues.iter_mut() {
            q.clear();
        }
    }
}

/// An error answer in the target's own shape, used for injected faults and
/// for limits the sandbox enforces at its edge (body too large).
pub(crate) fn target_error(
    target: Target,
    path: &str,
    status: StatusCode,
    retry_after_secs: Option<u64>,
) -> Response {
    let retry = retry_after_secs.map(|s| s.to_string());
    let mut resp = match target {
        Target::Servicenow => servicenow_error(status, retry_after_secs),
        Target::Pagerduty => pagerduty_error(status),
        Target::Bridge if path.starts_with("/bridge/teams") => teams_error(status),
        Target::Bridge => slack_error(status),
        Target::Anthropic => crate::anthropic::error_response(
            status,
            anthropic_error_type(status),
            anthropic_error_message(status),
        ),
        Target::Bedrock => crate::bedrock::fault_response(status),
        Target::Openai => crate::openai::fault_response(status),
    };
    let announces_retry = target != Target::Pagerduty
        && (status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE);
    if announces_retry && let Some(v) = retry.and_then(|r| HeaderValue::from_str(&r).ok()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn servicenow_error(status: StatusCode, retry_after_secs: Option<u64>) -> Response {
    if status == StatusCode::TOO_MANY_REQUESTS {
        let limit = 100;
        let reset = chrono::Utc::now().timestamp() + retry_after_secs.unwrap_or(60) as i64;
        let mut resp = crate::servicenow::error(
            status,
            "Rate limit exceeded",
            &format!("Rate limit of {limit} requests per hour for Table API exceeded"),
        );
        let h = resp.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(limit));
        h.insert("x-ratelimit-reset", HeaderValue::from(reset));
        h.insert(
            "x-ratelimit-rule",
            HeaderValue::from_static("0ef47232db801300864adfea5e961912"),
        );
        // ServiceNow always announces Retry-After on a rate-limit denial.
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs.unwrap_or(60)),
        );
        return resp;
    }
    let message = match status.as_u16() {
        401 => "User Not Authenticated",
        403 => "Operation Failed",
        404 => "No Record found",
        413 => "Request entity too large",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    crate::servicenow::error(status, message, "injected by the sandbox")
}

fn pagerduty_error(status: StatusCode) -> Response {
    let body = if status == StatusCode::TOO_MANY_REQUESTS {
        serde_json::json!({
            "status": "throttle event",
            "message": "Requests for this service are arriving too quickly.  Please retry later.",
            "errors": ["Enhance Your Calm."]
        })
    } else if status.is_client_error() {
        serde_json::json!({
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": [status.canonical_reason().unwrap_or("Bad Request")]
        })
    } else {
        serde_json::json!({
            "status": "error",
            "message": "An error occurred on a request.",
            "errors": [status.canonical_reason().unwrap_or("Server Error")]
        })
    };
    (status, axum::Json(body)).into_response()
}

fn slack_error(status: StatusCode) -> Response {
    let text = match status.as_u16() {
        400 => "invalid_payload",
        403 => "action_prohibited",
        404 => "channel_not_found",
        410 => "channel_is_archived",
        413 => "request_too_large",
        429 => "rate_limited",
        500 => "rollup_error",
        _ => "service_unavailable",
    };
    crate::bridge::slack_text(status, text)
}

fn teams_error(status: StatusCode) -> Response {
    let code = match status.as_u16() {
        429 => "TooManyRequests",
        s if s < 500 => "InvalidRequestContent",
        _ => "ServiceUnavailable",
    };
    crate::bridge::teams_error(status, code, "injected by the sandbox")
}

fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

fn anthropic_error_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        413 => "Request exceeds the maximum allowed number of bytes.",
        429 => "Number of requests has exceeded your rate limit.",
        529 => "Overloaded",
        _ => "Internal server error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: &str, status: Option<u16>, count: u32) -> FaultSpec {
        FaultSpec {
            target: target.into(),
            status,
            count,
            retry_after_secs: None,
            delay_ms: None,
        }
    }

    #[test]
    fn counts_down_then_clears() {
        let f = Faults::default();
        f.inject(&spec("pagerduty", Some(500), 2)).unwrap();
        assert!(f.take(Target::Servicenow).is_none());
        assert!(f.take(Target::Pagerduty).is_some());
        assert!(f.take(Target::Pagerduty).is_some());
        assert!(f.take(Target::Pagerduty).is_none());
    }

    #[test]
    fn rejects_bad_specs() {
        let f = Faults::default();
        assert_eq!(
            f.inject(&spec("jira", Some(500), 1)),
            Err(FaultError::UnknownTarget("jira".into()))
        );
        assert_eq!(
            f.inject(&spec("bridge", Some(200), 1)),
            Err(FaultError::BadStatus(200))
        );
        assert_eq!(
            f.inject(&spec("bridge", Some(500), 0)),
            Err(FaultError::BadCount(0))
        );
        assert_eq!(f.inject(&spec("bridge", None, 1)), Err(FaultError::Empty));
    }
}
