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
    /// Confidence in whole basis points (0..=10000), the form the policy engine
    /// compares, rounded toward refusal: the largest `bp` with
    /// `bp / 10000 <= confidence`. So `confidence_bp() >= t` holds exactly when
    /// the value received is at least `t / 10000` (0.69996 is 6999, below a
    /// 0.70 threshold). Rounding to two decimals is for display only.
    pub fn confidence_bp(&self) -> i64 {
        floor_bp(self.confidence)
    }
}

/// The largest whole basis-point value `bp` in `0..=10000` with
/// `bp / 10000 <= x` (`0` for NaN): rounds toward refusal when `x` is compared
/// with a threshold `>= t`. Exact against `f64` division, so a confidence
/// written as `0.7` is 7000, never 6999.
pub fn floor_bp(x: f64) -> i64 {
    if x.is_nan() {
        return 0;
    }
    let x = x.clamp(0.0, 1.0);
    // In 0..=10000 after the clamp, so the cast cannot truncate.
    let mut bp = (x * 10_000.0).floor() as i64;
    // `x * 10000` may land one ulp off the decimal value: settle against the division.
    if bp < 10_000 && ((bp + 1) as f64) / 10_000.0 <= x {
        bp += 1;
    }
    if bp > 0 && (bp as f64) / 10_000.0 > x {
        bp -= 1;
    }
    bp
}

/// The smallest whole basis-point value `bp` in `0..=10000` with
/// `bp / 10000 >= x` (`10001`, nothing passes, for NaN): a threshold rounds
/// toward refusal, so `0.70004` needs 7001.
pub fn ceil_bp(x: f64) -> i64 {
    if x.is_nan() {
        return 10_001;
    }
    let x = x.clamp(0.0, 1.0);
    // In 0..=10000 after the clamp, so the cast cannot truncate.
    let mut bp = (x * 10_000.0).ceil() as i64;
    if bp > 0 && ((bp - 1) as f64) / 10_000.0 >= x {
        bp -= 1;
    }
    if bp < 10_000 && (bp as f64) / 10_000.0 < x {
        bp += 1;
    }
    bp
}

#[cfg(test)]
mod bp_tests {
    use super::{ceil_bp, floor_bp};

    #[test]
    fn confidence_rounds_toward_refusal_and_decimals_are_exact() {
        assert_eq!(floor_bp(0.69996), 6999);
        assert_eq!(floor_bp(0.79996), 7999);
        assert_eq!(floor_bp(0.7), 7000);
        assert_eq!(floor_bp(0.8), 8000);
        assert_eq!(floor_bp(0.29), 2900);
        assert_eq!(floor_bp(0.57), 5700);
        assert_eq!(floor_bp(1.0), 10_000);
        assert_eq!(floor_bp(0.0), 0);
        assert_eq!(floor_bp(f64::NAN), 0);
        for bp in 0..=10_000_i64 {
            let x = bp as f64 / 10_000.0;
            assert_eq!(floor_bp(x), bp, "{x}");
            assert_eq!(ceil_bp(x), bp, "{x}");
        }
    }

    #[test]
    fn thresholds_round_toward_refusal() {
        assert_eq!(ceil_bp(0.70004), 7001);
        assert_eq!(ceil_bp(0.745), 7450);
        assert_eq!(ceil_bp(f64::NAN), 10_001);
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

/// What the classifier stage produced for one run, as stored on the run and
/// copied into its audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationRecord {
    pub info: ClassifierInfo,
    /// Why no model was asked (a duplicate, a resolution), if none was.
    #[serde(default)]
    pub skipped: Option<String>,
    #[serde(default)]
    pub raw_output: Option<String>,
    #[serde(default)]
    pub output_sha256: Option<crate::Sha256Hex>,
    #[serde(default)]
    pub classification: Option<Classification>,
    #[serde(default)]
    pub rejection: Option<Rejection>,
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub prompt_sha256: Option<crate::Sha256Hex>,
    #[serde(default)]
    pub usage: Option<serde_json::Value>,
}
