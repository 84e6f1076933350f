//! The contract as a table: malformed answers and the reason code each must get.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns; a failed unwrap is a failed test"
)]

extern crate triage_gate_classify as tg_classify;

mod common;

use serde_json::{Value, json};
use tg_classify::contract::{DETAIL_BYTES_MAX, RAW_BYTES_MAX, validate};
use tg_classify::{REASON_CODES, Severity};

fn good() -> Value {
    json!({
        "classification": "high",
        "confidence": 0.86,
        "requires_ticket": true,
        "requires_paging": true,
        "requires_mim": false,
        "recommended_team": "payments",
        "rationale": "error rate above 5% in production"
    })
}

/// `good()` with one field replaced (or removed, with `Value::Null` and `remove`).
fn with(field: &str, value: Value) -> String {
    let mut v = good();
    v[field] = value;
    v.to_string()
}

fn without(field: &str) -> String {
    let mut v = good();
    v.as_object_mut().unwrap().remove(field);
    v.to_string()
}

#[test]
fn malformed_answers_get_their_reason_codes() {
    let good_text = good().to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty string", String::new(), "empty"),
        ("white space only", " \n\t ".to_owned(), "empty"),
        (
            "over the size limit",
            format!("{good_text}{}", " ".repeat(RAW_BYTES_MAX)),
            "too_large",
        ),
        (
            "markdown fence",
            format!("```json\n{good_text}\n```"),
            "not_json",
        ),
        (
            "prose before the json",
            format!("Here is the answer: {good_text}"),
            "not_json",
        ),
        ("trailing text", format!("{good_text} thanks"), "not_json"),
        (
            "two documents",
            format!("{good_text}{good_text}"),
            "not_json",
        ),
        (
            "truncated",
            good_text[..good_text.len() / 2].to_owned(),
            "not_json",
        ),
        ("single quotes", good_text.replace('"', "'"), "not_json"),
        ("comment", format!("// answer\n{good_text}"), "not_json"),
        (
            "byte order mark",
            format!("\u{feff}{good_text}"),
            "not_json",
        ),
        (
            "NaN confidence",
            good_text.replace("0.86", "NaN"),
            "not_json",
        ),
        (
            "overflowing number",
            good_text.replace("0.86", "1e400"),
            "not_json",
        ),
        ("array", format!("[{good_text}]"), "not_object"),
        ("string", "\"high\"".to_owned(), "not_object"),
        ("null", "null".to_owned(), "not_object"),
        ("number", "0.9".to_owned(), "not_object"),
        (
            "duplicate top-level key",
            good_text.replacen("{", "{\"classification\":\"low\",", 1),
            "duplicate_key",
        ),
        (
            "duplicate key in a nested object",
            with("rationale", json!(null)).replace("null", "{\"a\":1,\"a\":2}"),
            "duplicate_key",
        ),
        (
            "missing confidence",
            without("confidence"),
            "schema_violation:missing_field",
        ),
        (
            "missing team",
            without("recommended_team"),
            "schema_violation:missing_field",
        ),
        (
            "empty object",
            "{}".to_owned(),
            "schema_violation:missing_field",
        ),
        (
            "extra field",
            good_text.replacen("{", "{\"severity\":\"sev1\",", 1),
            "schema_violation:extra_field",
        ),
        (
            "confidence as a string",
            with("confidence", json!("0.9")),
            "schema_violation:wrong_type",
        ),
        (
            "confidence null",
            with("confidence", json!(null)),
            "schema_violation:wrong_type",
        ),
        (
            "boolean as a string",
            with("requires_ticket", json!("true")),
            "schema_violation:wrong_type",
        ),
        (
            "boolean as a number",
            with("requires_paging", json!(1)),
            "schema_violation:wrong_type",
        ),
        (
            "rationale as a number",
            with("rationale", json!(5)),
            "schema_violation:wrong_type",
        ),
        (
            "classification not on the scale",
            with("classification", json!("critical")),
            "schema_violation:classification_invalid",
        ),
        (
            "classification in capitals",
            with("classification", json!("HIGH")),
            "schema_violation:classification_invalid",
        ),
        (
            "confidence above one",
            with("confidence", json!(1.5)),
            "schema_violation:confidence_out_of_range",
        ),
        (
            "confidence as a percentage",
            with("confidence", json!(86)),
            "schema_violation:confidence_out_of_range",
        ),
        (
            "negative confidence",
            with("confidence", json!(-0.1)),
            "schema_violation:confidence_out_of_range",
        ),
        (
            "empty team",
            with("recommended_team", json!("")),
            "schema_violation:recommended_team_empty",
        ),
        (
            "team over 128 characters",
            with("recommended_team", json!("p".repeat(129))),
            "schema_violation:recommended_team_too_long",
        ),
        (
            "unknown team",
            with("recommended_team", json!("hackers")),
            "unknown_team",
        ),
        (
            "team in the wrong case",
            with("recommended_team", json!("Payments")),
            "unknown_team",
        ),
        (
            "rationale over 2048 characters",
            with("rationale", json!("x".repeat(2049))),
            "rationale_too_long",
        ),
        (
            // 1500 characters pass the schema's maxLength but are 3000 bytes.
            "rationale over 2048 bytes",
            with("rationale", json!("é".repeat(1500))),
            "rationale_too_long",
        ),
    ];
    assert!(cases.len() >= 20);
    let known = common::known();
    let mut failures = Vec::new();
    for (name, raw, expected) in &cases {
        match validate(raw, &known) {
            Ok(c) => failures.push(format!("{name}: accepted as {c:?}, expected {expected}")),
            Err(r) => {
                if r.reason != *expected {
                    failures.push(format!(
                        "{name}: got {} ({}), expected {expected}",
                        r.reason, r.detail
                    ));
                }
                assert!(
                    r.detail.len() <= DETAIL_BYTES_MAX,
                    "{name}: detail unbounded"
                );
                assert!(!r.detail.is_empty(), "{name}: detail empty");
                assert!(
                    REASON_CODES.contains(&r.reason.as_str()),
                    "{name}: {} not documented",
                    r.reason
                );
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn valid_answers_are_accepted_exactly() {
    let known = common::known();
    let c = validate(&good().to_string(), &known).unwrap();
    assert_eq!(c.classification, Severity::High);
    assert_eq!(c.confidence, 0.86);
    assert!(c.requires_ticket && c.requires_paging && !c.requires_mim);
    assert_eq!(c.recommended_team, "payments");
    assert_eq!(
        c.rationale.as_deref(),
        Some("error rate above 5% in production")
    );

    // Optional rationale: absent or null; integer confidences at the bounds;
    // surrounding white space is not "repair", it is JSON.
    for raw in [
        without("rationale"),
        with("rationale", json!(null)),
        with("confidence", json!(0)),
        with("confidence", json!(1)),
        format!("\n  {}  \n", good()),
        with("rationale", json!("é".repeat(1024))),
    ] {
        let c = validate(&raw, &known).unwrap_or_else(|r| panic!("{raw}: {r:?}"));
        assert!((0.0..=1.0).contains(&c.confidence));
    }
}

#[test]
fn detail_names_the_offending_field() {
    let r = validate(&without("requires_mim"), &common::known()).unwrap_err();
    assert!(r.detail.contains("requires_mim"), "{}", r.detail);
    let r = validate(
        &with("recommended_team", json!("hackers")),
        &common::known(),
    )
    .unwrap_err();
    assert!(r.detail.contains("hackers"), "{}", r.detail);
    let r = validate(
        &good().to_string().replacen("{", "{\"x\":1,", 1),
        &common::known(),
    )
    .unwrap_err();
    assert!(r.detail.contains("\"x\""), "{}", r.detail);
}

#[test]
fn exactly_at_the_size_limit_is_still_parsed() {
    let text = good().to_string();
    let padded = format!("{text}{}", " ".repeat(RAW_BYTES_MAX - text.len()));
    assert_eq!(padded.len(), RAW_BYTES_MAX);
    assert!(validate(&padded, &common::known()).is_ok());
}

#[test]
fn reason_codes_are_unique() {
    let set: std::collections::BTreeSet<_> = REASON_CODES.iter().collect();
    assert_eq!(set.len(), REASON_CODES.len());
}
