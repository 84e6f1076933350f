//! The classification contract: model text in, a validated [`Classification`]
//! or a [`Rejection`] with a stable reason code out.
//!
//! Pure: no I/O, no clock, no environment. The model's answer is untrusted
//! input and is never repaired (a Markdown fence, a trailing comment, a
//! duplicated key: each is a rejection, never a guess).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde_json::Value;
use tg_model::classification::RATIONALE_BYTES_MAX;
use tg_model::json::StrictJsonError;
use tg_model::{Classification, Rejection};

/// Maximum bytes of a model answer. A classification is a few hundred bytes;
/// anything far larger is not a classification.
pub const RAW_BYTES_MAX: usize = 16 * 1024;

/// Maximum bytes of a rejection's `detail` (it may quote model output).
pub const DETAIL_BYTES_MAX: usize = 512;

/// Stable reason codes, as `Rejection::reason` carries them.
pub mod reason {
    /// The answer was empty or white space.
    pub const EMPTY: &str = "empty";
    /// The answer exceeded [`super::RAW_BYTES_MAX`].
    pub const TOO_LARGE: &str = "too_large";
    /// The answer was not one JSON document (fenced, truncated, trailing text, NaN...).
    pub const NOT_JSON: &str = "not_json";
    /// The answer was JSON but not an object.
    pub const NOT_OBJECT: &str = "not_object";
    /// An object in the answer repeated a key.
    pub const DUPLICATE_KEY: &str = "duplicate_key";
    /// A required field was missing.
    pub const MISSING_FIELD: &str = "schema_violation:missing_field";
    /// A field outside the contract was present.
    pub const EXTRA_FIELD: &str = "schema_violation:extra_field";
    /// A field had the wrong JSON type (e.g. confidence as a string).
    pub const WRONG_TYPE: &str = "schema_violation:wrong_type";
    /// `classification` was not one of `low`, `medium`, `high`, `sev1`.
    pub const CLASSIFICATION_INVALID: &str = "schema_violation:classification_invalid";
    /// `confidence` was outside `[0, 1]` or not finite.
    pub const CONFIDENCE_OUT_OF_RANGE: &str = "schema_violation:confidence_out_of_range";
    /// `recommended_team` was empty.
    pub const TEAM_EMPTY: &str = "schema_violation:recommended_team_empty";
    /// `recommended_team` was longer than the schema allows.
    pub const TEAM_TOO_LONG: &str = "schema_violation:recommended_team_too_long";
    /// Any other schema violation (kept so the code set stays closed).
    pub const SCHEMA_OTHER: &str = "schema_violation:other";
    /// `recommended_team` is not a team the configuration knows.
    pub const UNKNOWN_TEAM: &str = "unknown_team";
    /// `rationale` exceeded `RATIONALE_BYTES_MAX` bytes (or the schema's length).
    pub const RATIONALE_TOO_LONG: &str = "rationale_too_long";
    /// The provider stopped at its token limit.
    pub const TRUNCATED: &str = "truncated";
    /// The provider answered without calling the classification tool.
    pub const NO_TOOL_CALL: &str = "no_tool_call";
    /// The provider called tools more than once.
    pub const MULTIPLE_TOOL_CALLS: &str = "multiple_tool_calls";
    /// The provider called a tool other than the classification tool.
    pub const WRONG_TOOL: &str = "wrong_tool";
    /// The provider refused to answer.
    pub const REFUSAL: &str = "refusal";
    /// HTTP 429 after the retries.
    pub const PROVIDER_RATE_LIMITED: &str = "provider_error:rate_limited";
    /// HTTP 529 (or an `overloaded_error`) after the retries.
    pub const PROVIDER_OVERLOADED: &str = "provider_error:overloaded";
    /// No answer within the timeout (client-side, 408 or 504) after the retries.
    pub const PROVIDER_TIMEOUT: &str = "provider_error:timeout";
    /// Connection failure after the retries.
    pub const PROVIDER_TRANSPORT: &str = "provider_error:transport";
    /// A 200 whose body is not the documented message shape (or is too large).
    pub const PROVIDER_INVALID_RESPONSE: &str = "provider_error:invalid_response";
    /// The provider's credentials could not be obtained (STS web identity:
    /// token file unreadable, STS refused or unreachable).
    pub const PROVIDER_CREDENTIALS: &str = "provider_error:credentials";
    /// Prefix of `provider_error:http_<status>` for any other HTTP status.
    pub const PROVIDER_HTTP_PREFIX: &str = "provider_error:http_";
    /// Prefix of every provider error (the provider was reached, or tried, and failed).
    pub const PROVIDER_ERROR_PREFIX: &str = "provider_error:";
    /// Prefix of every code the guard (`classify::guard`) gives without asking the provider.
    pub const PROVIDER_UNAVAILABLE_PREFIX: &str = "provider_unavailable:";
    /// The provider call did not finish within the guard's `call_timeout_ms`.
    pub const UNAVAILABLE_TIMEOUT: &str = "provider_unavailable:timeout";
    /// The calls-per-minute budget is spent.
    pub const UNAVAILABLE_OVER_BUDGET: &str = "provider_unavailable:over_budget";
    /// The circuit breaker is open (or half-open with its probe in flight).
    pub const UNAVAILABLE_CIRCUIT_OPEN: &str = "provider_unavailable:circuit_open";
    /// No concurrency slot became free within `permit_wait_ms`.
    pub const UNAVAILABLE_SATURATED: &str = "provider_unavailable:saturated";
}

/// Whether `code` says the answer broke the schema (and one re-ask may fix it):
/// empty, not JSON, not an object, duplicate key, any `schema_violation:*`,
/// unknown team, rationale too long. Protocol failures (no or wrong tool call,
/// truncation, refusal) and provider errors are not.
pub fn is_schema_failure(code: &str) -> bool {
    matches!(
        code,
        reason::EMPTY
            | reason::NOT_JSON
            | reason::NOT_OBJECT
            | reason::DUPLICATE_KEY
            | reason::UNKNOWN_TEAM
            | reason::RATIONALE_TOO_LONG
    ) || code.starts_with("schema_violation:")
}

/// Whether `code` says the provider failed or was not asked (so a circuit
/// breaker counts it and a fallback may answer instead).
pub fn is_provider_failure(code: &str) -> bool {
    code.starts_with(reason::PROVIDER_ERROR_PREFIX)
        || code.starts_with(reason::PROVIDER_UNAVAILABLE_PREFIX)
}

/// Every reason code a rejection may carry. `provider_error:http_<status>`
/// stands for one code per HTTP status (`provider_error:http_401`, ...).
pub const REASON_CODES: &[&str] = &[
    reason::EMPTY,
    reason::TOO_LARGE,
    reason::NOT_JSON,
    reason::NOT_OBJECT,
    reason::DUPLICATE_KEY,
    reason::MISSING_FIELD,
    reason::EXTRA_FIELD,
    reason::WRONG_TYPE,
    reason::CLASSIFICATION_INVALID,
    reason::CONFIDENCE_OUT_OF_RANGE,
    reason::TEAM_EMPTY,
    reason::TEAM_TOO_LONG,
    reason::SCHEMA_OTHER,
    reason::UNKNOWN_TEAM,
    reason::RATIONALE_TOO_LONG,
    reason::TRUNCATED,
    reason::NO_TOOL_CALL,
    reason::MULTIPLE_TOOL_CALLS,
    reason::WRONG_TOOL,
    reason::REFUSAL,
    reason::PROVIDER_RATE_LIMITED,
    reason::PROVIDER_OVERLOADED,
    reason::PROVIDER_TIMEOUT,
    reason::PROVIDER_TRANSPORT,
    reason::PROVIDER_INVALID_RESPONSE,
    reason::PROVIDER_CREDENTIALS,
    "provider_error:http_<status>",
    reason::UNAVAILABLE_TIMEOUT,
    reason::UNAVAILABLE_OVER_BUDGET,
    reason::UNAVAILABLE_CIRCUIT_OPEN,
    reason::UNAVAILABLE_SATURATED,
];

/// Builds a rejection, bounding the detail.
pub fn rejection(reason: impl Into<String>, detail: impl AsRef<str>) -> Rejection {
    Rejection {
        reason: reason.into(),
        detail: truncate(detail.as_ref(), DETAIL_BYTES_MAX).to_owned(),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// The Classification schema, compiled once. `None` only if the model crate
/// published a schema `jsonschema` cannot compile, which a test rules out;
/// validation then rejects everything rather than accepting anything.
static VALIDATOR: LazyLock<Option<jsonschema::Validator>> =
    LazyLock::new(|| jsonschema::validator_for(&tg_model::schema::schema::<Classification>()).ok());

/// Validates a model answer against the contract.
///
/// Order: size, JSON syntax (with duplicate-key detection), object, JSON Schema,
/// then the semantic checks the schema cannot express (finite confidence,
/// known team, rationale bytes).
pub fn validate(raw: &str, known_teams: &BTreeSet<String>) -> Result<Classification, Rejection> {
    if raw.trim().is_empty() {
        return Err(rejection(reason::EMPTY, "the answer is empty"));
    }
    if raw.len() > RAW_BYTES_MAX {
        return Err(rejection(
            reason::TOO_LARGE,
            format!(
                "the answer is {} bytes, more than {RAW_BYTES_MAX}",
                raw.len()
            ),
        ));
    }
    let value = parse_strict(raw)?;
    if !value.is_object() {
        return Err(rejection(
            reason::NOT_OBJECT,
            format!("the answer is a json {}, not an object", json_kind(&value)),
        ));
    }
    check_schema(&value)?;

    let classification: Classification = serde_json::from_value(value).map_err(|e| {
        // The schema was satisfied, so this means the schema and the type disagree.
        rejection(
            reason::SCHEMA_OTHER,
            format!("does not match the contract type: {e}"),
        )
    })?;

    if !classification.confidence.is_finite() || !(0.0..=1.0).contains(&classification.confidence) {
        return Err(rejection(
            reason::CONFIDENCE_OUT_OF_RANGE,
            format!("confidence {} is not in [0, 1]", classification.confidence),
        ));
    }
    if !known_teams.contains(&classification.recommended_team) {
        return Err(rejection(
            reason::UNKNOWN_TEAM,
            format!(
                "recommended_team {:?} is not a known team",
                classification.recommended_team
            ),
        ));
    }
    if let Some(rationale) = &classification.rationale
        && rationale.len() > RATIONALE_BYTES_MAX
    {
        return Err(rejection(
            reason::RATIONALE_TOO_LONG,
            format!(
                "rationale is {} bytes, more than {RATIONALE_BYTES_MAX}",
                rationale.len()
            ),
        ));
    }
    Ok(classification)
}

/// Parses one JSON document, rejecting duplicate keys at any depth.
fn parse_strict(raw: &str) -> Result<Value, Rejection> {
    tg_model::json::from_str_strict(raw).map_err(|e| match e {
        StrictJsonError::DuplicateKey { .. } => rejection(reason::DUPLICATE_KEY, e.to_string()),
        StrictJsonError::Syntax(e) => {
            rejection(reason::NOT_JSON, format!("not one json document: {e}"))
        }
    })
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Runs the JSON Schema; the first violation (in a fixed priority order, so the
/// code does not depend on the validator's iteration order) becomes the reason.
fn check_schema(value: &Value) -> Result<(), Rejection> {
    let Some(validator) = VALIDATOR.as_ref() else {
        return Err(rejection(
            reason::SCHEMA_OTHER,
            "the contract schema did not compile",
        ));
    };
    let mut violations: Vec<(usize, &'static str, String)> = validator
        .iter_errors(value)
        .map(|error| {
            let path = error.instance_path.as_str();
            let field = path.trim_start_matches('/').to_owned();
            let (rank, code, detail) = map_violation(&field, &error.kind);
            let at = if path.is_empty() { "the answer" } else { path };
            (rank, code, format!("{detail} (at {at}: {error})"))
        })
        .collect();
    violations.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
    match violations.into_iter().next() {
        None => Ok(()),
        Some((_, code, detail)) => Err(rejection(code, detail)),
    }
}

fn map_violation(
    field: &str,
    kind: &jsonschema::error::ValidationErrorKind,
) -> (usize, &'static str, String) {
    use jsonschema::error::ValidationErrorKind as K;
    match kind {
        K::Required { property } => (
            0,
            reason::MISSING_FIELD,
            format!("missing field {property}"),
        ),
        K::AdditionalProperties { unexpected } => (
            1,
            reason::EXTRA_FIELD,
            format!(
                "field(s) outside the contract: {}",
                unexpected
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        K::Type { .. } => (
            2,
            reason::WRONG_TYPE,
            format!("field {field:?} has the wrong type"),
        ),
        K::Enum { .. } if field == "classification" => (
            3,
            reason::CLASSIFICATION_INVALID,
            "classification is not low, medium, high or sev1".to_owned(),
        ),
        K::Minimum { .. } | K::Maximum { .. } if field == "confidence" => (
            4,
            reason::CONFIDENCE_OUT_OF_RANGE,
            "confidence is not in [0, 1]".to_owned(),
        ),
        K::MinLength { .. } if field == "recommended_team" => (
            5,
            reason::TEAM_EMPTY,
            "recommended_team is empty".to_owned(),
        ),
        K::MaxLength { .. } if field == "recommended_team" => (
            6,
            reason::TEAM_TOO_LONG,
            "recommended_team is too long".to_owned(),
        ),
        K::MaxLength { .. } if field == "rationale" => (
            7,
            reason::RATIONALE_TOO_LONG,
            "rationale is too long".to_owned(),
        ),
        _ => (
            8,
            reason::SCHEMA_OTHER,
            format!("field {field:?} violates the schema"),
        ),
    }
}
