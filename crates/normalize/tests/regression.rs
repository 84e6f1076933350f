//! Findings turned into tests, each named after what it found (fuzzing,
//! attack runs). A test here failed on the code of its day.

// Test crate: helpers outside #[test] fns may unwrap and panic too (clippy.toml
// only covers #[test] fns and #[cfg(test)] modules).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use serde_json::json;
use tg_model::NormalizedEvent;
use triage_gate_normalize::Redactor;

/// Every string an event keeps except the error signature (derived text
/// with placeholders, checked for the needle only).
fn kept_strings(e: &NormalizedEvent) -> Vec<&str> {
    let mut out = vec![
        e.service.as_str(),
        e.alert_name.as_str(),
        e.summary.as_str(),
        e.origin.as_str(),
    ];
    out.extend(e.component.as_deref());
    for (k, v) in e.labels.iter().chain(e.correlation_ids.iter()) {
        out.push(k);
        out.push(v);
    }
    for p in &e.log_pointers {
        out.push(&p.label);
        out.push(&p.url);
    }
    out.extend(e.impact.evidence.iter().map(String::as_str));
    out
}

/// What the fuzz target `normalizer` asserts: a kept string is a fixed point
/// of the redactor (a marker cut by bounding aside).
fn assert_redaction_stable(e: &NormalizedEvent, what: &str) {
    let red = Redactor::new();
    for s in kept_strings(e) {
        let s = match s.rfind('[') {
            Some(at) if !s[at..].contains(']') => &s[..at],
            _ => s,
        };
        assert_eq!(
            red.redact(s),
            s,
            "{what}: a cleaned string still holds a secret"
        );
    }
}

/// `text` in every string field of a generic event (and as a label key);
/// `needle` (the secret's distinctive part) must be in none of the output.
fn assert_hidden_in_generic(text: &str, needle: &str) {
    if let Err(e) = hidden_in_generic(text, needle) {
        panic!("{e}");
    }
}

fn hidden_in_generic(text: &str, needle: &str) -> Result<(), String> {
    let body = json!({
        "service": format!("checkout {text}"),
        "alert_name": format!("CheckoutErrors {text}"),
        "summary": format!("token {text} end"),
        "message": format!("upstream said {text}"),
        "source_system": format!("apm {text}"),
        "component": format!("api {text}"),
        "severity": "high",
        "correlation_ids": {"trace": format!("t-1 {text}")},
        "labels": {"note": text, format!("k {text}"): "v"},
        "links": [{"label": format!("logs {text}"), "url": format!("https://logs.example/q?{text}")}],
    });
    let bytes = serde_json::to_vec(&body).unwrap();
    let events = common::normalize_fn("generic")(&bytes, &common::ctx(), common::now())
        .unwrap_or_else(|e| panic!("{text:?}: refused: {e}"));
    assert_eq!(events.len(), 1);
    let out = serde_json::to_string(&events).unwrap();
    if out.to_lowercase().contains(&needle.to_lowercase()) {
        return Err(format!("{text:?}: {needle:?} reached the event: {out}"));
    }
    assert!(
        out.contains("[REDACTED:"),
        "{text:?}: nothing redacted: {out}"
    );
    assert_redaction_stable(&events[0], text);

    // Refused payloads: the error text is cleaned the same way.
    let refused = json!({"service": "x", "alert_name": "a", "summary": "s", "status": text});
    let bytes = serde_json::to_vec(&refused).unwrap();
    let err = common::normalize_fn("generic")(&bytes, &common::ctx(), common::now()).unwrap_err();
    let err = format!("{} {}", err.field, err.message);
    if err.to_lowercase().contains(&needle.to_lowercase()) {
        return Err(format!("{text:?}: {needle:?} reached the error: {err}"));
    }
    Ok(())
}

/// Issue 27: the fuzz target `normalizer` stopped on its fixed-point
/// invariant. A JSON `\b` (a control character) between `Bearer` and the
/// token hid the token from the bearer rule; cleaning to one line then
/// turned the control character into a space and formed `Bearer c123tok`,
/// which the store and the model received in clear text.
#[test]
fn fuzz_normalizer_bearer_token_behind_a_json_backspace_escaped_redaction() {
    // The shape of the crashing input: a summary with one secret of each
    // kind, the bearer token behind `\b`.
    let summary = "checkout AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI \
                   eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl Bearer \u{8}c123tok https://u:";
    let body = json!({"service": "checkout", "alert_name": "a", "summary": summary});
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(
        String::from_utf8_lossy(&bytes).contains(r"Bearer \bc123tok"),
        "the body carries the JSON escape"
    );
    let events = common::normalize_fn("generic")(&bytes, &common::ctx(), common::now()).unwrap();
    assert!(
        !events[0].summary.contains("c123tok"),
        "{}",
        events[0].summary
    );
    assert!(
        events[0].summary.contains("Bearer [REDACTED:bearer]"),
        "{}",
        events[0].summary
    );
    assert_redaction_stable(&events[0], summary);
    // The end-to-end form of the report, in every field.
    assert_hidden_in_generic("Bearer \u{8}SuperSecretTok123", "SuperSecretTok123");
}

/// One case per separator class between the parts of a secret: control
/// characters (what JSON escapes such as `\b`, `\f`, `\u0000` decode to),
/// Unicode format characters (zero-width space and joiners, bidi marks and
/// isolates, soft hyphen, word joiner, byte order mark, variation selector),
/// and white space variants.
#[test]
fn separators_between_the_parts_of_a_secret_do_not_hide_it() {
    let cases: &[(&str, &str)] = &[
        // control characters
        ("Bearer\u{8}tokCtlBs4471", "tokCtlBs4471"),
        ("Authorization: Bearer\u{c}tokCtlFf4471", "tokCtlFf4471"),
        ("Bearer\u{0}tokCtlNul4471", "tokCtlNul4471"),
        ("Bearer\u{1b}tokCtlEsc4471", "tokCtlEsc4471"),
        ("Bearer\u{85}tokCtlNel4471", "tokCtlNel4471"),
        ("password=\u{0}secretNul4471", "secretNul4471"),
        ("password\u{8}=\u{8}secretBs4471", "secretBs4471"),
        ("AKIAIOSF\u{8}ODNN7EXAMPLE", "ODNN7EXAMPLE"),
        // Unicode format characters
        ("Bearer\u{200b}tokZwsp4471", "tokZwsp4471"),
        ("Bearer\u{200d}tokZwj4471", "tokZwj4471"),
        ("Bearer\u{200c}tokZwnj4471", "tokZwnj4471"),
        ("Bearer\u{200e}tokLrm4471", "tokLrm4471"),
        ("Bearer\u{202e}tokRlo4471", "tokRlo4471"),
        ("Bearer\u{2066}tokLri4471", "tokLri4471"),
        ("Bearer\u{feff}tokBom4471", "tokBom4471"),
        (
            "Basic\u{200b}dXNlcjpwYXNzd29yZA4471",
            "dXNlcjpwYXNzd29yZA4471",
        ),
        ("AKIAIOSF\u{ad}ODNN7EXAMPLE", "ODNN7EXAMPLE"),
        ("AKIAIOSF\u{200b}ODNN7EXAMPLE", "ODNN7EXAMPLE"),
        ("AKIA\u{2060}IOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE"),
        ("AKIAIOSFODNN7EXAM\u{fe0f}PLE", "IOSFODNN7EXAM"),
        ("pass\u{ad}word=hunter2Shy4471", "hunter2Shy4471"),
        ("password\u{200b}=hunter2Zw4471", "hunter2Zw4471"),
        (
            "aws_secret\u{ad}_access_key=wJalrXUtnShy4471",
            "wJalrXUtnShy4471",
        ),
        (
            "eyJhbGciOiJIUzI1NiJ9.\u{200b}eyJzdWIiOiJ6d3NwNDQ3MSJ9.c2lnWnNwNDQ3MQ",
            "eyJzdWIiOiJ6d3NwNDQ3MSJ9",
        ),
        ("postgres://app:pw\u{ad}Shy4471@db.internal/x", "pwShy4471"),
        ("jane\u{200b}.doe4471@example.com", "doe4471"),
        // white space variants
        ("Bearer\u{a0}tokNbsp4471", "tokNbsp4471"),
        ("Bearer\u{2028}tokLsep4471", "tokLsep4471"),
        ("Bearer\u{3000}tokIdeo4471", "tokIdeo4471"),
        ("Bearer\r\n\ttokCrlf4471", "tokCrlf4471"),
        ("password=\u{2009}secretThin4471", "secretThin4471"),
    ];
    let leaks: Vec<String> = cases
        .iter()
        .filter_map(|(text, needle)| hidden_in_generic(text, needle).err())
        .collect();
    assert!(
        leaks.is_empty(),
        "{} of {} cases leak:\n{}",
        leaks.len(),
        cases.len(),
        leaks.join("\n")
    );
}

/// Issue 21 (5), found by the property test: a label (or a Datadog tag split
/// on its colon) whose key names the secret and whose value is the secret
/// (`password` = `hunter2`, `Authorization` = `Token abc`) leaked: the value
/// was redacted alone, without the key that makes it a secret.
#[test]
fn property_test_a_secret_split_into_label_key_and_value_leaked() {
    let body = json!({
        "service": "checkout", "alert_name": "a", "summary": "s",
        "labels": {"password": "hunter2PairQz7", "Authorization": "Token tokPairQz7", "region": "eu-west-1"},
        "correlation_ids": {"api_key": "keyPairQz7"},
    });
    let bytes = serde_json::to_vec(&body).unwrap();
    let events = common::normalize_fn("generic")(&bytes, &common::ctx(), common::now()).unwrap();
    let out = serde_json::to_string(&events).unwrap();
    for needle in ["hunter2PairQz7", "tokPairQz7", "keyPairQz7"] {
        assert!(!out.contains(needle), "{needle} leaked: {out}");
    }
    assert_eq!(events[0].labels["region"], "eu-west-1", "{out}");
    assert_redaction_stable(&events[0], "labels");
    let dd = json!({"id": "1", "title": "t", "alert_transition": "Triggered",
                    "tags": "service:checkout,Authorization:Token tokDdQz7"});
    let bytes = serde_json::to_vec(&dd).unwrap();
    let out = match common::normalize_fn("datadog")(&bytes, &common::ctx(), common::now()) {
        Ok(events) => serde_json::to_string(&events).unwrap(),
        Err(e) => e.to_string(),
    };
    assert!(!out.contains("tokDdQz7"), "{out}");
}

/// Fuzzing `redact_signature` for 600 s (issue 27's acceptance run) stopped
/// at 240 s on this input, a finding of the target's oracle, not of the
/// redactor: the text itself holds the tail of the example key
/// (`[REDACTED:AIOSFODNN7EXAMPLE`, after NULs), which the secret-key rule
/// swallows when the text stands alone and leaves standing when the planted
/// key follows. The planted key and the secret are redacted: this pins it.
#[test]
fn a_planted_key_split_by_a_word_joiner_is_redacted_beside_a_fake_marker() {
    let text = String::from_utf8_lossy(
        b"awsUsecret_access_key ='wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPL\0\0\0[REDACTED:AIOSFODNN7EXAMPLE",
    )
    .into_owned();
    let r = Redactor::new();
    let split = format!("{text} AKIAIOSF\u{2060}ODNN7EXAMPLE {text}");
    let line = r.redact_line(&split);
    eprintln!("alone: {:?}\nsplit: {line:?}", r.redact_line(&text));
    assert!(
        !line.contains("AKIAIOSF"),
        "the planted key's head survived: {line:?}"
    );
    assert!(
        !line.contains("wJalrXUtnFEMI"),
        "the secret survived: {line:?}"
    );
    assert_eq!(r.redact(&line), line);
}

/// Fuzzing (redact_signature, CI smoke on 443a979): a quoted secret value
/// with a word glued after it (`key ='ab'cd`) lost only its quoted part; the
/// glued word survived the first pass and was taken by the second, so
/// `redact_line` was not a fixed point and the word was a leaked secret.
#[test]
fn a_word_glued_after_a_quoted_secret_value_is_redacted_with_it() {
    let r = Redactor::new();
    let text = "awsQsecret_access_key ='wJcess_key ='wJalrXUtnFEMI/K4MDENG/bPxRfiCYEXTED:AIOSFODNN7EXAMPLE";
    let line = r.redact_line(text);
    assert!(
        !line.contains("wJalrXUtnFEMI"),
        "the glued word survived: {line:?}"
    );
    assert_eq!(r.redact(&line), line);
    for (text, secret) in [
        ("token='ab cd'Hunter2", "Hunter2"),
        ("password=\"ab\"'cd'Hunter2", "Hunter2"),
        ("api_key=[abc]Hunter2'x y'", "Hunter2"),
        // The aws_secret rule stops at the quote; the secret rule takes the rest.
        ("aws_secret_access_key='abc'Hunter2", "Hunter2"),
    ] {
        let once = r.redact(text);
        assert!(!once.contains(secret), "{text:?} -> {once:?}");
        assert_eq!(r.redact(&once), once, "{text:?} is not redacted at once");
    }
    // What is not glued stays: a separator ends the value.
    assert_eq!(r.redact("token='ab' next"), "token=[REDACTED:secret] next");
}

/// The property test `generated_secrets_anywhere_never_reach_events_or_errors`
/// (session of 2026-12-07) found a temporary AWS key and its secret in an
/// alarm name reaching the service field: the `<service>/<alert>` naming
/// convention split the name at the '/' inside the 40-character secret
/// before redaction, and neither half matched the secret's rule. The name is
/// now split as redacted.
#[test]
fn an_aws_secret_with_a_slash_in_an_alarm_name_is_not_split_before_redaction() {
    let secret = "ASIA0A0000A00AAA0A00 aaA+00AaaA+0+0+00Aa+0A/+aa+/a++0+Aa0+0aA";
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/eventbridge/alarm/input.json"
    );
    let mut body: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    body["detail"]["alarmName"] = json!(format!("{secret} orders-db-connections"));
    let bytes = serde_json::to_vec(&body).unwrap();
    let events =
        common::normalize_fn("eventbridge")(&bytes, &common::ctx(), common::now()).unwrap();
    let out = serde_json::to_string(&events).unwrap();
    for needle in [
        "0A0000A00AAA0A00",
        "aaA+00AaaA+0+0+00Aa+",
        "+aa+/a++0+Aa0+0aA",
    ] {
        assert!(!out.contains(needle), "{needle} leaked: {out}");
    }
    assert_redaction_stable(&events[0], "alarm name");
}
