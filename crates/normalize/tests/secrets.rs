//! A secret put into any string of any source's payload (value or key) never
//! appears in the resulting events, nor in the error if the payload is refused.

// Test crate: helpers outside #[test] fns may unwrap and panic too (clippy.toml
// only covers #[test] fns and #[cfg(test)] modules).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use serde_json::Value;

/// (text injected, fragments that must not appear anywhere in the output)
const SECRETS: &[(&str, &[&str])] = &[
    ("AKIAIOSFODNN7EXAMPLE", &["IOSFODNN7EXAMPLE"]),
    (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        &["eyJzdWIiOiIxMjM0NTY3ODkwIn0", "dozjgNryP4J3jVmNHl0w5N"],
    ),
    (
        "Authorization: Bearer tokLive9f8e7d6c5b4aZZ",
        &["tokLive9f8e7d6c5b4aZZ"],
    ),
    (
        "postgres://admin:Hunter2Pass@db.example.com/x",
        &["Hunter2Pass"],
    ),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\nqWErTy==\n-----END RSA PRIVATE KEY-----",
        &["MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo", "qWErTy=="],
    ),
    ("password=CorrectHorse99", &["CorrectHorse99"]),
    (
        "aws_secret_access_key=wJalrXUtnFEMIK7MDENGbPxRfiCY",
        &["wJalrXUtnFEMIK7MDENGbPxRfiCY"],
    ),
];

/// JSON pointers to every string value, and to every object holding keys.
fn walk(v: &Value, ptr: String, strings: &mut Vec<String>, objects: &mut Vec<(String, String)>) {
    match v {
        Value::String(_) => strings.push(ptr),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, format!("{ptr}/{i}"), strings, objects);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                objects.push((ptr.clone(), k.clone()));
                let escaped = k.replace('~', "~0").replace('/', "~1");
                walk(item, format!("{ptr}/{escaped}"), strings, objects);
            }
        }
        _ => {}
    }
}

fn variants(template: &Value, secret: &str) -> Vec<(String, Value)> {
    let mut strings = Vec::new();
    let mut objects = Vec::new();
    walk(template, String::new(), &mut strings, &mut objects);
    let mut out = Vec::new();
    for ptr in strings {
        let mut v = template.clone();
        let slot = v.pointer_mut(&ptr).unwrap();
        let old = slot.as_str().unwrap().to_owned();
        *slot = Value::String(format!("{old} {secret} tail"));
        out.push((format!("value {ptr}"), v));
    }
    for (ptr, key) in objects {
        let mut v = template.clone();
        let map = v.pointer_mut(&ptr).unwrap().as_object_mut().unwrap();
        let item = map.remove(&key).unwrap();
        map.insert(format!("{key} {secret}"), item);
        out.push((format!("key {ptr}/{key}"), v));
    }
    // Every string at once, too.
    let mut all = template.clone();
    let mut strings = Vec::new();
    walk(template, String::new(), &mut strings, &mut Vec::new());
    for ptr in strings {
        let slot = all.pointer_mut(&ptr).unwrap();
        let old = slot.as_str().unwrap().to_owned();
        *slot = Value::String(format!("{secret} {old}"));
    }
    out.push(("every value".to_owned(), all));
    out
}

#[test]
fn secrets_never_reach_events_or_errors() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let templates = [
        ("generic", "generic/full"),
        ("alertmanager", "alertmanager/firing"),
        ("alertmanager", "alertmanager/aliases-and-namespace"),
        ("grafana", "grafana/firing"),
        ("splunk", "splunk/alert"),
        ("splunk", "splunk/multivalue-and-raw"),
        ("cloudevents", "cloudevents/apm"),
        ("cloudevents", "cloudevents/batch"),
        ("datadog", "datadog/triggered"),
        ("datadog", "datadog/many-tags-and-numbers"),
        ("cloudwatch-sns", "cloudwatch-sns/alarm"),
        ("eventbridge", "eventbridge/alarm"),
        ("eventbridge", "eventbridge/generic-health"),
    ];
    let (mut accepted, mut marked, mut refused) = (0, 0, 0);
    for (source, case) in templates {
        let text = std::fs::read_to_string(golden.join(case).join("input.json")).unwrap();
        let template: Value = serde_json::from_str(&text).unwrap();
        let normalize = common::normalize_fn(source);
        for (secret, fragments) in SECRETS {
            for (what, payload) in variants(&template, secret) {
                let body = serde_json::to_vec(&payload).unwrap();
                let rendered = match normalize(&body, &common::ctx(), common::now()) {
                    Ok(events) => {
                        accepted += 1;
                        let s = serde_json::to_string(&events).unwrap();
                        if s.contains("[REDACTED:") || s.contains("[redacted:") {
                            marked += 1;
                        } else {
                            // With a secret in every value, something kept must show it.
                            assert_ne!(what, "every value", "{source} {case}: no redaction in {s}");
                        }
                        format!("{s}\n{events:?}")
                    }
                    Err(e) => {
                        refused += 1;
                        format!("{e}\n{e:?}\n{}", serde_json::to_string(&e).unwrap())
                    }
                };
                let lower = rendered.to_lowercase();
                for fragment in *fragments {
                    assert!(
                        !lower.contains(&fragment.to_lowercase()),
                        "{source} {case}: {what}: secret {fragment:?} leaked:\n{rendered}"
                    );
                }
            }
        }
    }
    // The test is only worth something if many payloads were accepted and
    // carried the secret somewhere it had to be redacted (many others put it
    // in fields no event keeps, such as `receiver` or an ignored key).
    assert!(accepted > 1000, "accepted {accepted}, refused {refused}");
    assert!(
        marked > 600,
        "only {marked} of {accepted} outputs show a redaction"
    );
    assert!(refused > 0, "no refused payload exercised error redaction");
}
