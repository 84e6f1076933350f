//! Identifiers. They are created by the shell (which owns clocks and randomness)
//! and only carried by the core.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

string_id!(
    /// One triage run: one event through the pipeline. `run_` + UUIDv7.
    RunId
);
string_id!(
    /// The ID that follows a run across systems (ServiceNow `correlation_id`,
    /// PagerDuty links, audit). Restricted to `[A-Za-z0-9._:-]`, at most 100 chars,
    /// because ServiceNow encoded queries use `^` as a separator.
    CorrelationId
);
string_id!(
    /// Stable hash of an event's source-independent identity
    /// (service, error signature, alert name): 32 lowercase hex chars.
    Fingerprint
);

/// Maximum length of a correlation ID (ServiceNow's `correlation_id` column).
pub const CORRELATION_ID_MAX: usize = 100;

impl CorrelationId {
    /// Whether `s` is a usable correlation ID: non-empty, at most
    /// [`CORRELATION_ID_MAX`] chars of `[A-Za-z0-9._:-]`.
    pub fn is_valid(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= CORRELATION_ID_MAX
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    }
}
