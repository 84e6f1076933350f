//! Errors: building an executor, and calling a target.

use std::time::Duration;

/// Why a target call failed; the class drives retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Worth retrying: 5xx, 408, timeouts, connection errors, unreadable success replies.
    #[error("{target}: {detail}")]
    Retryable {
        target: &'static str,
        detail: String,
    },
    /// 429 (or Teams' throttling in a 200 body): retry after `retry_after` when given.
    #[error("{target}: throttled: {detail}")]
    Throttled {
        target: &'static str,
        retry_after: Option<Duration>,
        detail: String,
    },
    /// Retrying cannot help: other 4xx, missing configuration, invalid input.
    #[error("{target}: {detail}")]
    Permanent {
        target: &'static str,
        detail: String,
    },
}

impl TargetError {
    pub(crate) fn permanent(target: &'static str, detail: impl Into<String>) -> Self {
        TargetError::Permanent {
            target,
            detail: detail.into(),
        }
    }

    pub(crate) fn retryable(target: &'static str, detail: impl Into<String>) -> Self {
        TargetError::Retryable {
            target,
            detail: detail.into(),
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, TargetError::Permanent { .. })
    }

    /// The target's HTTP status, when the failure was an HTTP answer (the
    /// detail of such errors starts `http NNN:`, see `http::status_error`).
    pub fn http_status(&self) -> Option<u16> {
        let detail = match self {
            TargetError::Retryable { detail, .. }
            | TargetError::Throttled { detail, .. }
            | TargetError::Permanent { detail, .. } => detail,
        };
        detail
            .strip_prefix("http ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
    }
}

/// Why an [`crate::Executor`] could not be built. Never names a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{which} base url {url:?} is invalid: {reason}")]
    BaseUrl {
        which: &'static str,
        url: String,
        reason: String,
    },
    #[error("bridge webhook url is invalid: {reason}")]
    WebhookUrl { reason: String },
    #[error("pagerduty rest `from` must be the email of a user on the account")]
    PagerDutyFrom,
    #[error("bridge has neither a chat webhook_url nor signed webhooks")]
    NoBridgeDestination,
    #[error("bridge has {count} signed webhooks; at most {max}")]
    TooManyWebhooks { count: usize, max: usize },
    #[error("bridge signed webhook {name:?}: {reason}")]
    SignedWebhook { name: String, reason: String },
    #[error("{which} timeout_ms {value} is outside 1..={max}")]
    Timeout {
        which: &'static str,
        value: u64,
        max: u64,
    },
    #[error("{which} is outside {min}..={max} (got {value})")]
    RetryLimit {
        which: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("{which} secret for {name:?} is shorter than {min} characters")]
    ShortSecret {
        which: &'static str,
        name: String,
        min: usize,
    },
    #[error("could not build the http client: {0}")]
    Client(String),
}
