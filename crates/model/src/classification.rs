//! The model's output contract, and what is recorded when it is broken.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Maximum bytes of the optional `rationale`.
pub const RATIONALE_BYTES_MAX: usize = 2048;

/// How severe the model judges the event. Ordered: `low < medium < high < sev1`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Sev1,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Sev1 => "sev1",
        }
    }

    /// Rank used by the policy engine (`low` = 0 ... `sev1` = 3).
    pub fn rank(self) -> i64 {
        match self {
            Severity::Low => 0,
            Severity::Medium => 1,
            Severity::High => 2,
            Severity::Sev1 => 3,
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated classification: exactly the contract's fields, every one checked.
///
/// Only `classify::contract` builds these from model output; a gate never sees
/// anything else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Classification {
    pub classification: Severity,
    /// Finite, in `[0, 1]`.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: f64,
    pub requires_ticket: bool,
    pub requires_paging: bool,
    pub requires_mim: bool,
    /// A team the configuration knows.
    #[schemars(length(min = 1, max = 128))]
    pub recommended_team: String,
    /// Optional, at most [`RATIONALE_BYTES_MAX`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub rationale: Option<String>,
}

impl Classification {
    /// Confidence in basis points (0..=10000), the form the policy engine compares.
    pub fn confidence_bp(&self) -> i64 {
        // Validated finite in [0, 1] at the contract boundary, so this cannot overflow.
        (self.confidence * 10_000.0).round() as i64
    }
}

/// Which classifier answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifierInfo {
    /// `rules`, `anthropic`, ...
    pub classifier: String,
    /// The model name, for LLM classifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Why an answer was not accepted as a `Classification`. The run goes to review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// Stable reason code: `not_json`, `schema_violation:<what>`, `unknown_team`,
    /// `truncated`, `provider_error:<kind>`, ...
    pub reason: String,
    /// Human-readable detail (bounded; never contains secrets).
    pub detail: String,
}
