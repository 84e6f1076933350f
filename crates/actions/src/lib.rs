//! Action targets: the ServiceNow, PagerDuty (Events v2, or REST incidents with
//! a scoped OAuth token) and bridge (chat and
//! signed webhook) clients that carry out a [`tg_model::PlannedAction`] and
//! report a [`tg_model::ActionResult`]. The action's `op` picks what is done:
//! `create` opens (ticket, page, major incident), `update` adds a ServiceNow
//! work note to the parent incident (exactly once, found again by a marker
//! line), `resolve` resolves the parent incident or the PagerDuty alert.
//!
//! Every call is bounded: a timeout per request, a cap on response bytes read,
//! and a bounded number of attempts with exponential backoff and jitter.
//! Failures are classified retryable, throttled or permanent
//! ([`TargetError`]), and only retryable and throttled ones are retried.
//!
//! This crate must never decide *whether* to act (the gates did that), never
//! create a second incident for the same idempotency key (ServiceNow is looked
//! up by `correlation_id` before any create, a note's marker is looked for
//! before it is added), and never put a credential (the ServiceNow token, a
//! PagerDuty routing key, a chat webhook URL, a webhook signing secret) into a
//! log line, an error message or `Debug` output.

mod bridge;
mod error;
mod executor;
mod http;
mod pagerduty;
mod pagerduty_rest;
mod retry;
mod secret;
mod servicenow;

pub use bridge::{
    ANNOUNCEMENT_TITLE_CHARS_MAX, DELIVERY_HEADER, EVENT_MAJOR_INCIDENT_PROPOSED, SIGNATURE_HEADER,
    TIMESTAMP_HEADER, WEBHOOK_DETAILS_CHARS_MAX, webhook_signature,
};
pub use error::{ConfigError, TargetError};
pub use executor::{
    Attempt, BRIDGE_WEBHOOKS_MAX, BridgeConfig, BridgeFormat, Executor, PagerDutyConfig,
    ServiceNowAuth, ServiceNowConfig, SignedWebhook, TARGET_BRIDGE, TARGET_PAGERDUTY,
    TARGET_SERVICENOW, TARGET_SERVICENOW_BRIDGE, TIMEOUT_MS_MAX, WEBHOOK_NAME_CHARS_MAX,
    WEBHOOK_SECRET_CHARS_MIN,
};
pub use pagerduty::{DEDUP_KEY_BYTES_MAX, PagerDutyRegion, SUMMARY_CHARS_MAX};
pub use pagerduty_rest::{
    ACCEPT_V2 as PAGERDUTY_ACCEPT_V2, DEFAULT_TOKEN_URL as PAGERDUTY_DEFAULT_TOKEN_URL,
    INCIDENT_DETAILS_CHARS_MAX, INCIDENT_KEY_BYTES_MAX, INCIDENT_TITLE_CHARS_MAX, PagerDutyRest,
};
pub use retry::{
    ATTEMPTS_MAX_LIMIT, BACKOFF_MS_MAX_LIMIT, RETRY_AFTER_SECS_MAX_LIMIT, RetryPolicy,
};
pub use secret::Secret;
pub use servicenow::{
    CLOSE_NOTES_CHARS_MAX, DEFAULT_CLOSE_CODE, SHORT_DESCRIPTION_CHARS_MAX, WORK_NOTE_CHARS_MAX,
    WORK_NOTES_READ_BYTES_MAX,
};

/// Response bytes read from any target; the rest is ignored (bodies we need are small).
pub const RESPONSE_BODY_BYTES_MAX: usize = 64 * 1024;
/// Characters of a target's error text kept in an error message.
pub const ERROR_DETAIL_CHARS_MAX: usize = 300;
/// Links carried into a ticket, page or announcement.
pub const LINKS_MAX: usize = tg_model::event::limits::LOG_POINTERS_MAX;
