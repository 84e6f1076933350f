//! Malformed and over-limit payloads: each gives the right kind and field,
//! and the whole batch is rejected.

// Test crate: helpers outside #[test] fns may unwrap and panic too (clippy.toml
// only covers #[test] fns and #[cfg(test)] modules).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use serde_json::{Value, json};
use triage_gate_normalize::{
    ErrorKind, Limits, NormalizeContext, NormalizeError, alertmanager, cloudevents, generic,
    grafana, splunk,
};

fn gen_err(body: &Value) -> NormalizeError {
    generic::normalize(body.to_string().as_bytes(), &common::ctx(), common::now()).unwrap_err()
}

fn am_err(body: &Value) -> NormalizeError {
    alertmanager::normalize(body.to_string().as_bytes(), &common::ctx(), common::now()).unwrap_err()
}

fn assert_err(e: &NormalizeError, kind: ErrorKind, field: &str, needle: &str) {
    assert_eq!(e.kind, kind, "{e:?}");
    assert_eq!(e.field, field, "{e:?}");
    assert!(
        e.message.contains(needle),
        "{e:?} should mention {needle:?}"
    );
}

fn am_alert(labels: Value) -> Value {
    json!({"status": "firing", "labels": labels, "annotations": {"summary": "s"},
           "startsAt": "2026-11-24T03:12:00Z"})
}

fn am_body(alerts: Vec<Value>) -> Value {
    json!({"version": "4", "status": "firing", "groupKey": "g", "alerts": alerts})
}

fn ok_event() -> Value {
    json!({"service": "a", "alert_name": "b", "summary": "c"})
}

/// Issue 21 (10): a repeated key anywhere in any source's payload refuses it,
/// naming the key (every golden input, its first key written twice).
#[test]
fn a_repeated_key_is_refused_in_every_source() {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut refused = 0;
    for (source, _) in common::SOURCES {
        let mut cases: Vec<_> = std::fs::read_dir(golden.join(source))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        cases.sort();
        for case in cases {
            let input = std::fs::read_to_string(case.join("input.json")).unwrap();
            let Value::Object(map) = serde_json::from_str::<Value>(&input).unwrap() else {
                continue;
            };
            let (key, value) = map.iter().next().unwrap();
            let dup = format!("{{{}: {value}, {}", json!(key), &input.trim_start()[1..]);
            let e = common::normalize_fn(source)(dup.as_bytes(), &common::ctx(), common::now())
                .unwrap_err();
            assert_err(
                &e,
                ErrorKind::DuplicateKey,
                "",
                &format!("duplicate key {}", json!(key)),
            );
            refused += 1;
        }
    }
    assert!(refused > 20, "{refused}");
    // Nested, and the key is redacted like any echoed text.
    let e = gen_err_raw(
        r#"{"service": "a", "alert_name": "b", "summary": "c", "labels": {"x": "1", "x": "2"}}"#,
    );
    assert_err(&e, ErrorKind::DuplicateKey, "", "duplicate key \"x\"");
    let e = gen_err_raw(r#"{"password=hunter2Dup": 1, "password=hunter2Dup": 2}"#);
    assert_eq!(e.kind, ErrorKind::DuplicateKey, "{e:?}");
    assert!(!e.message.contains("hunter2Dup"), "{e:?}");
}

fn gen_err_raw(body: &str) -> NormalizeError {
    generic::normalize(body.as_bytes(), &common::ctx(), common::now()).unwrap_err()
}

#[test]
fn not_json_is_malformed_at_the_root() {
    let e = generic::normalize(b"{nope", &common::ctx(), common::now()).unwrap_err();
    assert_err(&e, ErrorKind::Malformed, "", "not valid json");
    let e = generic::normalize(b"[1,2]", &common::ctx(), common::now()).unwrap_err();
    assert_err(&e, ErrorKind::Malformed, "", "not a json object");
    let e = alertmanager::normalize(b"", &common::ctx(), common::now()).unwrap_err();
    assert_err(&e, ErrorKind::Malformed, "", "not valid json");
}

#[test]
fn wrong_types_name_their_path() {
    let mut ev = ok_event();
    ev["labels"] = json!({"region": 5});
    assert_err(
        &gen_err(&ev),
        ErrorKind::Malformed,
        "labels.region",
        "invalid type",
    );

    let e = gen_err(
        &json!({"events": [ok_event(), ok_event(), {"service": 1, "alert_name": "b", "summary": "c"}]}),
    );
    assert_err(
        &e,
        ErrorKind::Malformed,
        "events[2].service",
        "invalid type",
    );

    let e = gen_err(&json!({"events": {"service": "a"}}));
    assert_err(&e, ErrorKind::Malformed, "events", "not an array");

    let mut body = am_body(vec![
        am_alert(json!({"alertname": "A"})),
        am_alert(json!(["x"])),
    ]);
    let e = am_err(&body);
    assert_err(&e, ErrorKind::Malformed, "alerts[1].labels", "invalid type");

    body["alerts"] = json!("nope");
    assert_err(
        &am_err(&body),
        ErrorKind::Malformed,
        "alerts",
        "invalid type",
    );
}

#[test]
fn missing_required_fields_are_named() {
    let e = gen_err(&json!({"service": "a", "summary": "c"}));
    assert_err(&e, ErrorKind::Malformed, "alert_name", "missing field");
    let e = gen_err(&json!({"service": " ", "alert_name": "b", "summary": "c"}));
    assert_err(&e, ErrorKind::Malformed, "service", "must not be empty");
    let e = am_err(&json!({"version": "4", "status": "firing"}));
    assert_err(&e, ErrorKind::Malformed, "alerts", "missing field");
    let e = splunk::normalize(
        br#"{"sid": "1", "result": {}}"#,
        &common::ctx(),
        common::now(),
    )
    .unwrap_err();
    assert_err(&e, ErrorKind::Malformed, "search_name", "missing field");
    let e = cloudevents::normalize(
        br#"{"specversion": "1.0", "source": "/x", "type": "t"}"#,
        &common::ctx(),
        common::now(),
    )
    .unwrap_err();
    assert_err(&e, ErrorKind::Malformed, "id", "missing field");
    let e = cloudevents::normalize(
        br#"[{"specversion": "1.0", "id": "1", "source": "/x", "type": "t"}, {"specversion": "1.0", "id": "2", "source": "/x"}]"#,
        &common::ctx(),
        common::now(),
    )
    .unwrap_err();
    assert_err(&e, ErrorKind::Malformed, "[1].type", "missing field");
}

#[test]
fn bad_values_are_named() {
    let mut ev = ok_event();
    ev["status"] = json!("exploded");
    assert_err(&gen_err(&ev), ErrorKind::Malformed, "status", "exploded");
    let mut ev = ok_event();
    ev["occurred_at"] = json!("yesterday");
    assert_err(
        &gen_err(&ev),
        ErrorKind::Malformed,
        "occurred_at",
        "rfc 3339",
    );
    let mut ev = ok_event();
    ev["impact"] = json!({"error_rate": 1.5});
    assert_err(
        &gen_err(&ev),
        ErrorKind::Malformed,
        "impact.error_rate",
        "1.5",
    );
    let mut ev = ok_event();
    ev["impact"] = json!({"hosts": -1});
    assert_err(
        &gen_err(&ev),
        ErrorKind::Malformed,
        "impact.hosts",
        "invalid value",
    );

    let mut alert = am_alert(json!({"alertname": "A"}));
    alert["startsAt"] = json!("2026-13-45");
    let e = am_err(&am_body(vec![am_alert(json!({})), alert]));
    assert_err(&e, ErrorKind::Malformed, "alerts[1].startsAt", "rfc 3339");
    let mut alert = am_alert(json!({"alertname": "A"}));
    alert["status"] = json!("pending");
    let e = am_err(&am_body(vec![alert]));
    assert_err(&e, ErrorKind::Malformed, "alerts[0].status", "pending");
}

#[test]
fn versions_are_checked() {
    let mut body = am_body(vec![]);
    body["version"] = json!("3");
    assert_err(&am_err(&body), ErrorKind::Malformed, "version", "\"3\"");
    body["version"] = json!(4);
    assert_err(
        &am_err(&body),
        ErrorKind::Malformed,
        "version",
        "not a string",
    );
    body.as_object_mut().unwrap().remove("version");
    assert_err(
        &am_err(&body),
        ErrorKind::Malformed,
        "version",
        "missing version",
    );

    // Grafana speaks version "1" and refuses Alertmanager's "4".
    let body = am_body(vec![]);
    let e =
        grafana::normalize(body.to_string().as_bytes(), &common::ctx(), common::now()).unwrap_err();
    assert_err(&e, ErrorKind::Malformed, "version", "expected \"1\"");

    let e = cloudevents::normalize(
        br#"{"specversion": "0.3", "id": "1", "source": "/x", "type": "t"}"#,
        &common::ctx(),
        common::now(),
    )
    .unwrap_err();
    assert_err(&e, ErrorKind::Malformed, "specversion", "0.3");
}

#[test]
fn too_deep_is_rejected_before_parsing() {
    let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
    let body = format!(r#"{{"service": "a", "alert_name": "b", "summary": "c", "x": {deep}}}"#);
    let e = generic::normalize(body.as_bytes(), &common::ctx(), common::now()).unwrap_err();
    assert_err(&e, ErrorKind::LimitExceeded, "", "depth_max (32)");
    // Far deeper than serde_json's own recursion limit: still our error, no stack overflow.
    let deeper = "[".repeat(100_000);
    let e = alertmanager::normalize(deeper.as_bytes(), &common::ctx(), common::now()).unwrap_err();
    assert_err(&e, ErrorKind::LimitExceeded, "", "depth_max");
    // Brackets inside strings are not nesting.
    let ok = format!(
        r#"{{"service": "a", "alert_name": "b", "summary": "{}\"{}"}}"#,
        "[".repeat(100),
        "{".repeat(100)
    );
    assert!(generic::normalize(ok.as_bytes(), &common::ctx(), common::now()).is_ok());
}

#[test]
fn too_many_alerts_is_a_named_limit() {
    let max = Limits::default().alerts_per_batch_max;
    let alerts = vec![am_alert(json!({"alertname": "A"})); max + 1];
    let e = am_err(&am_body(alerts));
    assert_err(
        &e,
        ErrorKind::LimitExceeded,
        "alerts",
        "alerts_per_batch_max (1000)",
    );
    let events = vec![ok_event(); max + 1];
    let e = gen_err(&json!({ "events": events }));
    assert_err(
        &e,
        ErrorKind::LimitExceeded,
        "events",
        "alerts_per_batch_max",
    );
    // Exactly at the limit is fine.
    let alerts = vec![am_alert(json!({"alertname": "A"})); max];
    let body = am_body(alerts).to_string();
    let out = alertmanager::normalize(body.as_bytes(), &common::ctx(), common::now()).unwrap();
    assert_eq!(out.len(), max);
}

#[test]
fn oversized_body_is_too_large() {
    let ctx = NormalizeContext {
        limits: Limits {
            body_bytes_max: 64,
            ..Limits::default()
        },
        ..NormalizeContext::default()
    };
    let body = json!({"service": "a", "alert_name": "b", "summary": "c".repeat(100)}).to_string();
    let e = generic::normalize(body.as_bytes(), &ctx, common::now()).unwrap_err();
    assert_err(&e, ErrorKind::TooLarge, "", "body_bytes_max (64)");
    // The default is 1 MiB.
    let big = vec![b' '; 1024 * 1024 + 1];
    let e = splunk::normalize(&big, &common::ctx(), common::now()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooLarge);
}

#[test]
fn long_strings_and_labels_are_named_limits() {
    let mut ev = ok_event();
    ev["summary"] = json!("x".repeat(64 * 1024 + 1));
    assert_err(
        &gen_err(&ev),
        ErrorKind::LimitExceeded,
        "summary",
        "string_bytes_max (65536)",
    );

    let body = am_body(vec![json!({"status": "firing", "labels": {},
        "annotations": {"description": "y".repeat(70_000)}})]);
    let e = am_err(&body);
    assert_err(
        &e,
        ErrorKind::LimitExceeded,
        "alerts[0].annotations.description",
        "string_bytes_max",
    );

    let labels: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let e = am_err(&am_body(vec![am_alert(Value::Object(labels))]));
    assert_err(
        &e,
        ErrorKind::LimitExceeded,
        "alerts[0].labels",
        "labels_max (64)",
    );

    // Common labels count towards the alert's labels.
    let mut body = am_body(vec![am_alert(json!({"a": "1"}))]);
    body["commonLabels"] = Value::Object((0..64).map(|i| (format!("c{i}"), json!("v"))).collect());
    assert_err(
        &am_err(&body),
        ErrorKind::LimitExceeded,
        "alerts[0].labels",
        "labels_max",
    );

    let mut ev = ok_event();
    ev["labels"] = json!({ "k".repeat(129): "v" });
    assert_err(
        &gen_err(&ev),
        ErrorKind::LimitExceeded,
        "labels",
        "label_key_bytes_max (128)",
    );
    let mut ev = ok_event();
    ev["labels"] = json!({"k": "v".repeat(1025)});
    assert_err(
        &gen_err(&ev),
        ErrorKind::LimitExceeded,
        "labels.k",
        "label_value_bytes_max (1024)",
    );

    let mut ev = ok_event();
    ev["correlation_ids"] = Value::Object((0..17).map(|i| (format!("c{i}"), json!("v"))).collect());
    assert_err(
        &gen_err(&ev),
        ErrorKind::LimitExceeded,
        "correlation_ids",
        "correlation_ids_max (16)",
    );
    let mut ev = ok_event();
    ev["links"] = json!(vec![json!({"url": "https://x"}); 9]);
    assert_err(
        &gen_err(&ev),
        ErrorKind::LimitExceeded,
        "links",
        "links_max (8)",
    );
}

#[test]
fn a_batch_with_one_bad_event_is_rejected_whole() {
    let mut bad = ok_event();
    bad["status"] = json!("nope");
    let e = gen_err(&json!({"events": [ok_event(), ok_event(), bad]}));
    assert_err(&e, ErrorKind::Malformed, "events[2].status", "nope");
    let good = am_alert(json!({"alertname": "A"}));
    let mut broken = good.clone();
    broken["startsAt"] = json!("never");
    assert_eq!(
        am_err(&am_body(vec![good, broken])).field,
        "alerts[1].startsAt"
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let mut ev = ok_event();
    ev["something_new"] = json!({"deep": [1, 2, 3]});
    assert_eq!(
        generic::normalize(ev.to_string().as_bytes(), &common::ctx(), common::now())
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn errors_display_kind_field_and_message() {
    let e = gen_err(&json!({"service": "a", "alert_name": "b", "summary": "c", "status": "x"}));
    assert_eq!(
        e.to_string(),
        r#"malformed payload at `status`: status "x" is neither "firing" nor "resolved""#
    );
}
