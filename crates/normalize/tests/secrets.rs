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

use proptest::prelude::*;
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

// ------------------------------------------------------------ property test

/// A secret of one documented shape (crate::redact's table): the text and
/// the parts that must never reach an event or an error.
fn arb_secret() -> impl Strategy<Value = (String, Vec<String>)> {
    let word = || "[A-Za-z0-9]{12,20}";
    let b64 = "[A-Za-z0-9/+]{40}";
    prop_oneof![
        "[A-Z0-9]{16}".prop_map(|k| (format!("AKIA{k}"), vec![k])),
        (
            "[A-Z0-9]{16}",
            b64,
            // Not `,`: Datadog splits its tags on commas before anything is
            // redacted, and the secret key alone is not recognisable (a
            // documented limit, docs/api.md).
            prop::sample::select(vec![" ", ":", " = "])
        )
            .prop_map(|(k, s, sep)| (format!("ASIA{k}{sep}{s}"), vec![k, s[..20].to_owned()])),
        b64.prop_map(|s| (
            format!("aws_secret_access_key = {s}"),
            vec![s[..20].to_owned()]
        )),
        (word(), word(), word())
            .prop_map(|(a, b, c)| (format!("eyJ{a}.eyJ{b}.{c}"), vec![format!("eyJ{b}"), c])),
        word().prop_map(|t| (format!("Authorization: Bearer {t}"), vec![t])),
        word().prop_map(|t| (format!("Basic {t}=="), vec![t])),
        (
            prop::sample::select(vec![
                "Token", "token", "Digest", "Splunk", "SSWS", "ApiKey", ""
            ]),
            word()
        )
            .prop_map(|(scheme, t)| (format!("Authorization: {scheme} {t}"), vec![t])),
        word().prop_map(|p| (format!("postgres://app:{p}@db.example.com/x"), vec![p])),
        word().prop_map(|b| (
            format!("-----BEGIN RSA PRIVATE KEY-----\n{b}\n-----END RSA PRIVATE KEY-----"),
            vec![b]
        )),
        (
            prop::sample::select(vec![
                "password",
                "passwd",
                "pwd",
                "secret",
                "token",
                "api_key",
                "access_key",
                "client_secret",
                "X-Api-Key",
                "DB_PASSWORD",
            ]),
            prop::sample::select(vec!["=", ": ", " = ", ":"]),
            prop::collection::vec(word(), 1..4),
            0..4usize,
        )
            .prop_map(|(key, sep, words, style)| {
                let value = match style {
                    0 => words[0].clone(),
                    1 => format!("\"{}\"", words.join(" ")),
                    2 => format!("'{}'", words.join(" ")),
                    _ => format!("[{}]", words.join(" ")),
                };
                let needles = if style == 0 {
                    vec![words[0].clone()]
                } else {
                    words
                };
                (format!("{key}{sep}{value}"), needles)
            }),
        (
            prop::sample::select(vec!['a', 'b', 'p', 'r', 's', 'e']),
            "[0-9]{10}",
            word()
        )
            .prop_map(|(k, n, t)| (format!("xox{k}-{n}-{t}"), vec![t])),
        (
            prop::sample::select(vec!["ghp", "gho", "ghu", "ghs", "ghr"]),
            "[A-Za-z0-9]{36}"
        )
            .prop_map(|(p, t)| (format!("{p}_{t}"), vec![t])),
        ("[A-Za-z0-9]{22}", "[A-Za-z0-9]{59}")
            .prop_map(|(a, b)| (format!("github_pat_{a}_{b}"), vec![a, b])),
        "[a-z]{10,14}".prop_map(|l| (format!("{l}@payments-corp.example"), vec![l])),
    ]
}

/// Every golden input of every source whose expected result is events.
fn templates() -> Vec<(String, Value)> {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out = Vec::new();
    for (source, _) in common::SOURCES {
        let mut cases: Vec<_> = std::fs::read_dir(golden.join(source))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        cases.sort();
        for case in cases {
            let expected = std::fs::read_to_string(case.join("expected.json")).unwrap();
            if !expected.contains("\"events\"") {
                continue;
            }
            let input = std::fs::read_to_string(case.join("input.json")).unwrap();
            out.push(((*source).to_owned(), serde_json::from_str(&input).unwrap()));
        }
    }
    out
}

static TEMPLATES: std::sync::LazyLock<Vec<(String, Value)>> = std::sync::LazyLock::new(templates);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Issue 21 (5): a generated secret of every documented shape, put at a
    /// random place of a random string field of a golden payload of
    /// every source, never reaches the events, nor the error if refused.
    #[test]
    fn generated_secrets_anywhere_never_reach_events_or_errors(
        (secret, needles) in arb_secret(),
        template in any::<prop::sample::Index>(),
        slot in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
    ) {
        let (source, template) = &TEMPLATES[template.index(TEMPLATES.len())];
        let mut strings = Vec::new();
        walk(template, String::new(), &mut strings, &mut Vec::new());
        let mut payload = template.clone();
        let ptr = &strings[slot.index(strings.len())];
        let leaf = payload.pointer_mut(ptr).unwrap();
        let old = leaf.as_str().unwrap().to_owned();
        let cuts: Vec<usize> = (0..=old.len()).filter(|i| old.is_char_boundary(*i)).collect();
        let cut = cuts[at.index(cuts.len())];
        *leaf = Value::String(format!("{} {secret} {}", &old[..cut], &old[cut..]));

        let body = serde_json::to_vec(&payload).unwrap();
        let rendered = match common::normalize_fn(source)(&body, &common::ctx(), common::now()) {
            Ok(events) => serde_json::to_string(&events).unwrap(),
            Err(e) => format!("{} {}", e.field, e.message),
        };
        let lower = rendered.to_lowercase();
        for needle in &needles {
            prop_assert!(
                !lower.contains(&needle.to_lowercase()),
                "{source} {ptr}: {needle:?} of {secret:?} leaked: {rendered}"
            );
        }
    }
}
