//! Fault injection: make the next N requests to a target fail (or stall) the
//! way that service fails, with its own status codes, headers and error body;
//! take a target down for a period (measured with the sandbox's clock); or
//! fail a seeded fraction of its calls in a mix of ways (chaos).
//!
//! Every injected failure happens *before* the emulator processes the request:
//! a faulted call has no effect on the emulated service (a timeout is a slow
//! answer that never does the work; a reset drops the connection unanswered).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

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
/// Longest outage (`down_for_ms`), in milliseconds (a day).
pub const OUTAGE_MS_MAX: u64 = 86_400_000;

/// The sandbox's notion of now (wall time unless a test injects its own clock,
/// e.g. the gate's `ManualClock`, so an outage lasts *simulated* time).
pub type SandboxClock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Take a target down for a period. JSON form of `POST /_sandbox/faults/outage`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutageSpec {
    pub target: String,
    /// From now (the sandbox's clock), for this long (1..=[`OUTAGE_MS_MAX`]).
    pub down_for_ms: u64,
    /// The status answered while down (default 503); ignored when `reset`.
    #[serde(default)]
    pub status: Option<u16>,
    /// Drop every connection unanswered instead (a host that is gone).
    #[serde(default)]
    pub reset: bool,
    /// `Retry-After` announced with 429/503.
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
}

/// One way a chaos fault fails a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ChaosKind {
    /// 500 in the target's error shape.
    #[serde(rename = "500")]
    ServerError,
    /// 429 with `Retry-After`.
    #[serde(rename = "429")]
    Throttled,
    /// Answer (504, unprocessed) only after `timeout_ms`: longer than the client waits.
    #[serde(rename = "timeout")]
    Timeout,
    /// Drop the connection without an answer.
    #[serde(rename = "reset")]
    Reset,
}

/// Fail a seeded fraction of a target's calls. JSON form of `POST /_sandbox/faults/chaos`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosSpec {
    pub target: String,
    /// Share of calls that fail, `0.0..=1.0`.
    pub fraction: f64,
    /// With the call's number, decides whether and how each call fails.
    pub seed: u64,
    /// The ways calls fail, chosen evenly (default: all four).
    #[serde(default = "all_kinds")]
    pub kinds: Vec<ChaosKind>,
    /// How long a `timeout` call stalls before answering (default 1000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// `Retry-After` of a `429` (default 1).
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
    /// Calls subject to chaos; `None`: until cleared.
    #[serde(default)]
    pub count: Option<u32>,
}

fn all_kinds() -> Vec<ChaosKind> {
    vec![
        ChaosKind::ServerError,
        ChaosKind::Throttled,
        ChaosKind::Timeout,
        ChaosKind::Reset,
    ]
}
fn default_timeout_ms() -> u64 {
    1_000
}
fn default_retry_after() -> u64 {
    1
}

/// What to inject. JSON form of `POST /_sandbox/faults`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// `servicenow`, `servicenow_oauth`, `pagerduty`, `bridge`, `anthropic`,
    /// `bedrock`, `openai`, `splunk`, `cloudwatch` or `otlp`.
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
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    #[error(
        "unknown fault target {0:?} (expected servicenow, servicenow_oauth, pagerduty, bridge, anthropic, bedrock, openai, splunk, cloudwatch or otlp)"
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
    #[error("down_for_ms {0} is outside 1..={OUTAGE_MS_MAX}")]
    BadOutage(u64),
    #[error("chaos fraction {0} is outside 0.0..=1.0")]
    BadFraction(f64),
    #[error("chaos kinds must not be empty")]
    NoKinds,
}

/// One fault, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault {
    pub status: Option<StatusCode>,
    pub retry_after_secs: Option<u64>,
    pub delay_ms: Option<u64>,
    /// Drop the connection (after `delay_ms`) without answering.
    pub reset: bool,
}

#[derive(Debug, Clone, Copy)]
struct Outage {
    until: DateTime<Utc>,
    fault: Fault,
}

#[derive(Debug, Clone)]
struct Chaos {
    spec: ChaosSpec,
    calls: u64,
}

/// The injected faults, per target.
#[derive(Default)]
pub(crate) struct Faults {
    queues: Mutex<[VecDeque<(Fault, u32)>; Target::COUNT]>,
    outages: Mutex<[Option<Outage>; Target::COUNT]>,
    chaos: Mutex<[Option<Chaos>; Target::COUNT]>,
    clock: Mutex<Option<SandboxClock>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

/// splitmix64: a fixed, seedable mix (test traffic only, not cryptographic).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn slot(target: Target) -> usize {
    match target {
        Target::Servicenow => 0,
        Target::Pagerduty => 1,
        Target::Bridge => 2,
        Target::Anthropic => 3,
        Target::Bedrock => 4,
        Target::Openai => 5,
        Target::ServicenowOauth => 6,
        Target::Splunk => 7,
        Target::Cloudwatch => 8,
        Target::Otlp => 9,
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
            reset: false,
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

    pub(crate) fn set_clock(&self, clock: SandboxClock) {
        *lock(&self.clock) = Some(clock);
    }

    /// The sandbox's clock (the injected one, else wall time).
    pub(crate) fn now(&self) -> DateTime<Utc> {
        match lock(&self.clock).as_ref() {
            Some(c) => c(),
            None => Utc::now(),
        }
    }

    pub(crate) fn inject_outage(&self, spec: &OutageSpec) -> Result<(), FaultError> {
        let target = Target::parse(&spec.target)
            .ok_or_else(|| FaultError::UnknownTarget(spec.target.clone()))?;
        if spec.down_for_ms == 0 || spec.down_for_ms > OUTAGE_MS_MAX {
            return Err(FaultError::BadOutage(spec.down_for_ms));
        }
        let code = spec.status.unwrap_or(503);
        if !(400..=599).contains(&code) {
            return Err(FaultError::BadStatus(code));
        }
        let status = StatusCode::from_u16(code).map_err(|_| FaultError::BadStatus(code))?;
        if let Some(r) = spec
            .retry_after_secs
            .filter(|r| *r > FAULT_RETRY_AFTER_SECS_MAX)
        {
            return Err(FaultError::RetryAfterTooLong(r));
        }
        let until = self.now()
            + chrono::Duration::milliseconds(i64::try_from(spec.down_for_ms).unwrap_or(i64::MAX));
        let outage = Outage {
            until,
            fault: Fault {
                status: Some(status),
                retry_after_secs: spec.retry_after_secs,
                delay_ms: None,
                reset: spec.reset,
            },
        };
        if let Some(slot) = lock(&self.outages).get_mut(slot(target)) {
            *slot = Some(outage);
        }
        Ok(())
    }

    pub(crate) fn inject_chaos(&self, spec: &ChaosSpec) -> Result<(), FaultError> {
        let target = Target::parse(&spec.target)
            .ok_or_else(|| FaultError::UnknownTarget(spec.target.clone()))?;
        if !(0.0..=1.0).contains(&spec.fraction) {
            return Err(FaultError::BadFraction(spec.fraction));
        }
        if spec.kinds.is_empty() {
            return Err(FaultError::NoKinds);
        }
        if spec.timeout_ms > FAULT_DELAY_MS_MAX {
            return Err(FaultError::DelayTooLong(spec.timeout_ms));
        }
        if spec.retry_after_secs > FAULT_RETRY_AFTER_SECS_MAX {
            return Err(FaultError::RetryAfterTooLong(spec.retry_after_secs));
        }
        if let Some(c) = spec.count.filter(|c| *c == 0 || *c > FAULT_COUNT_MAX) {
            return Err(FaultError::BadCount(c));
        }
        if let Some(slot) = lock(&self.chaos).get_mut(slot(target)) {
            *slot = Some(Chaos {
                spec: spec.clone(),
                calls: 0,
            });
        }
        Ok(())
    }

    /// The fault for the next request to `target`: an outage in force, else a
    /// queued fault, else the chaos draw for this call.
    pub(crate) fn next(&self, target: Target) -> Option<Fault> {
        let now = self.now();
        {
            let mut outages = lock(&self.outages);
            if let Some(slot) = outages.get_mut(slot(target)) {
                match slot {
                    Some(o) if now < o.until => return Some(o.fault),
                    Some(_) => *slot = None,
                    None => {}
                }
            }
        }
        if let Some(f) = self.take(target) {
            return Some(f);
        }
        let mut chaos = lock(&self.chaos);
        let slot = chaos.get_mut(slot(target))?;
        let c = slot.as_mut()?;
        c.calls = c.calls.saturating_add(1);
        let n = c.calls;
        let spec = c.spec.clone();
        if spec.count.is_some_and(|max| n >= u64::from(max)) {
            *slot = None;
        }
        let draw = mix(spec.seed ^ mix(n));
        #[expect(
            clippy::cast_precision_loss,
            reason = "53 bits make an exact unit fraction"
        )]
        let unit = (draw >> 11) as f64 / (1u64 << 53) as f64;
        if unit >= spec.fraction {
            return None;
        }
        let len = u64::try_from(spec.kinds.len()).unwrap_or(1).max(1);
        let pick = usize::try_from(mix(draw) % len).unwrap_or(0);
        let kind = spec.kinds.get(pick).copied()?;
        Some(match kind {
            ChaosKind::ServerError => Fault {
                status: Some(StatusCode::INTERNAL_SERVER_ERROR),
                retry_after_secs: None,
                delay_ms: None,
                reset: false,
            },
            ChaosKind::Throttled => Fault {
                status: Some(StatusCode::TOO_MANY_REQUESTS),
                retry_after_secs: Some(spec.retry_after_secs),
                delay_ms: None,
                reset: false,
            },
            ChaosKind::Timeout => Fault {
                status: Some(StatusCode::GATEWAY_TIMEOUT),
                retry_after_secs: None,
                delay_ms: Some(spec.timeout_ms),
                reset: false,
            },
            ChaosKind::Reset => Fault {
                status: None,
                retry_after_secs: None,
                delay_ms: None,
                reset: true,
            },
        })
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
        *lock(&self.outages) = Default::default();
        *lock(&self.chaos) = Default::default();
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
        Target::ServicenowOauth => crate::servicenow_oauth::fault_response(status),
        Target::Splunk => crate::splunk::fault_response(status),
        Target::Cloudwatch => crate::cloudwatch::fault_response(status),
        Target::Otlp => crate::otlp::fault_response(status),
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

    fn chaos(fraction: f64, kinds: Vec<ChaosKind>) -> ChaosSpec {
        ChaosSpec {
            target: "servicenow".into(),
            fraction,
            seed: 42,
            kinds,
            timeout_ms: 300,
            retry_after_secs: 1,
            count: None,
        }
    }

    #[test]
    fn chaos_fails_about_the_fraction_in_every_way_and_replays_by_seed() {
        let draws = |spec: &ChaosSpec| {
            let f = Faults::default();
            f.inject_chaos(spec).unwrap();
            (0..2000)
                .map(|_| f.next(Target::Servicenow))
                .collect::<Vec<_>>()
        };
        let spec = chaos(0.3, all_kinds());
        let a = draws(&spec);
        assert_eq!(a, draws(&spec), "same seed, same faults");
        let failed = a.iter().filter(|f| f.is_some()).count();
        assert!((480..=720).contains(&failed), "{failed} of 2000 failed");
        let some = a.iter().flatten();
        assert!(some.clone().any(|f| f.reset));
        assert!(some.clone().any(|f| f.delay_ms == Some(300)));
        assert!(
            some.clone()
                .any(|f| f.status == Some(StatusCode::TOO_MANY_REQUESTS)
                    && f.retry_after_secs == Some(1))
        );
        assert!(
            some.clone()
                .any(|f| f.status == Some(StatusCode::INTERNAL_SERVER_ERROR))
        );
        let other = ChaosSpec { seed: 43, ..spec };
        assert_ne!(a, draws(&other));
        assert!(draws(&chaos(0.0, all_kinds())).iter().all(Option::is_none));
    }

    #[test]
    fn an_outage_lasts_its_period_on_the_sandbox_clock() {
        let f = Faults::default();
        let now = Arc::new(Mutex::new(DateTime::<Utc>::UNIX_EPOCH));
        let c = now.clone();
        f.set_clock(Arc::new(move || *lock(&c)));
        f.inject_outage(&OutageSpec {
            target: "pagerduty".into(),
            down_for_ms: 300_000,
            status: None,
            reset: false,
            retry_after_secs: None,
        })
        .unwrap();
        let down = f.next(Target::Pagerduty).unwrap();
        assert_eq!(down.status, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert!(f.next(Target::Servicenow).is_none());
        *lock(&now) += chrono::Duration::milliseconds(299_999);
        assert!(f.next(Target::Pagerduty).is_some());
        *lock(&now) += chrono::Duration::milliseconds(1);
        assert!(
            f.next(Target::Pagerduty).is_none(),
            "back up after 5 minutes"
        );
        assert_eq!(
            f.inject_outage(&OutageSpec {
                target: "pagerduty".into(),
                down_for_ms: 0,
                status: None,
                reset: true,
                retry_after_secs: None,
            }),
            Err(FaultError::BadOutage(0))
        );
        assert_eq!(
            f.inject_chaos(&chaos(1.5, all_kinds())),
            Err(FaultError::BadFraction(1.5))
        );
        assert_eq!(
            f.inject_chaos(&chaos(0.5, vec![])),
            Err(FaultError::NoKinds)
        );
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
