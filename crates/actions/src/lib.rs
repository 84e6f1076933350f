//! Action targets: the ServiceNow, PagerDuty Events v2 and chat-bridge clients
//! that carry out a [`tg_model::PlannedAction`] and report a
//! [`tg_model::ActionResult`].
//!
//! Every call is bounded: a timeout per request, a cap on response bytes read,
//! and a bounded number of attempts with exponential backoff and jitter.
//! Failures are classified retryable, throttled or permanent
//! ([`TargetError`]), and only retryable and throttled ones are retried.
//!
//! This crate must never decide *whether* to act (the gates did that), never
//! create a second incident for the same idempotency key (ServiceNow is looked
//! up by `correlation_id` before any create), and never put a credential (the
//! ServiceNow token, a PagerDuty routing key, a chat webhook URL) into a log
//! line, an error message or `Debug` output.

mod bridge;
mod error;
mod executor;
mod http;
mod pagerduty;
mod retry;
mod secret;
mod servicenow;

pub use bridge::ANNOUNCEMENT_TITLE_CHARS_MAX;
pub use error::{ConfigError, TargetError};
pub use executor::{
    Attempt, BridgeConfig, BridgeFormat, Executor, PagerDutyConfig, ServiceNowConfig,
    TARGET_BRIDGE, TARGET_PAGERDUTY, TARGET_SERVICENOW, TARGET_SERVICENOW_BRIDGE, TIMEOUT_MS_MAX,
};
pub use pagerduty::{DEDUP_KEY_BYTES_MAX, SUMMARY_CHARS_MAX};
pub use retry::{
    ATTEMPTS_MAX_LIMIT, BACKOFF_MS_MAX_LIMIT, RETRY_AFTER_SECS_MAX_LIMIT, RetryPolicy,
};
pub use secret::Secret;
pub use servicenow::SHORT_DESCRIPTION_CHARS_MAX;

/// Response bytes read from any target; the rest is ignored (bodies we need are small).
pub const RESPONSE_BODY_BYTES_MAX: usize = 64 * 1024;
/// Characters of a target's error text kept in an error message.
pub const ERROR_DETAIL_CHARS_MAX: usize = 300;
/// Links carried into a ticket, page or announcement.
pub const LINKS_MAX: usize = tg_model::event::limits::LOG_POINTERS_MAX;
