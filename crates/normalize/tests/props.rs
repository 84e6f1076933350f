//! Property tests: no input makes a normalizer panic; accepted events obey
//! the model's limits; signatures ignore volatile parts.

// Test crate: helpers outside #[test] fns may unwrap and panic too (clippy.toml
// only covers #[test] fns and #[cfg(test)] modules).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use proptest::prelude::*;
use serde_json::{Map, Value};
use tg_model::NormalizedEvent;
use tg_model::event::limits as m;
use triage_gate_normalize::error_signature;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("firing"),
            Just("resolved"),
            Just("4"),
            Just("1"),
            Just("1.0"),
            Just("prod"),
            Just("critical"),
            Just("2026-11-24T03:12:00Z"),
            Just("0001-01-01T00:00:00Z"),
            Just("https://x.example/a"),
            Just("1764040320"),
            Just("")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Keys the normalizers look for, plus noise, so generated objects reach deep code.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "version", "status", "alerts", "labels", "annotations", "startsAt", "generatorURL",
            "fingerprint", "commonLabels", "commonAnnotations", "groupKey", "service", "job",
            "alertname", "severity", "summary", "description", "env", "namespace", "events",
            "alert_name", "message", "impact", "error_rate", "hosts", "affected_customers",
            "links", "url", "label", "correlation_ids", "occurred_at", "environment",
            "specversion", "id", "source", "type", "data", "time", "subject", "datacontenttype",
            "data_base64", "search_name", "result", "sid", "results_link", "_time", "values",
            "alert_transition", "title", "alert_title", "tags", "date", "priority", "link",
        ]).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

fn check_limits(events: &[NormalizedEvent]) {
    for e in events {
        assert!(e.summary.len() <= m::SUMMARY_BYTES_MAX);
        assert!(e.error_signature.len() <= m::SIGNATURE_BYTES_MAX);
        for name in [&e.service, &e.alert_name, &e.origin] {
            assert!(
                !name.is_empty() && name.len() <= m::NAME_BYTES_MAX,
                "{name:?}"
            );
        }
        assert!(e.labels.len() <= m::LABELS_MAX);
        for (k, v) in &e.labels {
            assert!(k.len() <= m::LABEL_KEY_BYTES_MAX && v.len() <= m::LABEL_VALUE_BYTES_MAX);
        }
        assert!(e.correlation_ids.len() <= m::CORRELATION_IDS_MAX);
        assert!(e.log_pointers.len() <= m::LOG_POINTERS_MAX);
        assert!(
            e.log_pointers
                .iter()
                .all(|p| p.url.len() <= m::URL_BYTES_MAX)
        );
        assert!(e.impact.evidence.len() <= m::EVIDENCE_MAX);
        assert_eq!(e.fingerprint.0.len(), 32);
        assert!(!e.summary.contains('\n'));
    }
}

fn run_all(body: &[u8]) {
    for (name, _) in common::SOURCES {
        if let Ok(events) = common::normalize_fn(name)(body, &common::ctx(), common::now()) {
            check_limits(&events);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        run_all(&body);
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        run_all(v.to_string().as_bytes());
    }

    #[test]
    fn near_valid_payloads_never_panic(
        labels in arb_json(),
        annotations in arb_json(),
        extra in arb_json(),
        text in ".{0,200}",
    ) {
        let am = serde_json::json!({"version": "4", "status": "firing", "groupKey": text,
            "alerts": [{"status": "resolved", "labels": labels, "annotations": annotations,
                        "startsAt": "2026-11-24T03:12:00Z", "extra": extra}]});
        run_all(am.to_string().as_bytes());
        let generic = serde_json::json!({"service": text, "alert_name": "a", "summary": text,
            "labels": labels, "impact": extra, "links": annotations});
        run_all(generic.to_string().as_bytes());
        let ce = serde_json::json!({"specversion": "1.0", "id": "1", "source": text, "type": "t",
            "data": {"labels": labels, "impact": extra, "summary": text}});
        run_all(ce.to_string().as_bytes());
        let sp = serde_json::json!({"search_name": text, "result": labels});
        run_all(sp.to_string().as_bytes());
    }

    #[test]
    fn signatures_ignore_numbers_and_addresses(
        a in 0u32..100_000, b in 0u32..100_000,
        ip1 in any::<[u8; 4]>(), ip2 in any::<[u8; 4]>(),
    ) {
        let fmt = |n: u32, ip: [u8; 4]| format!(
            "Timeout after {n} ms on {}.{}.{}.{}:{}", ip[0], ip[1], ip[2], ip[3], n % 65536);
        prop_assert_eq!(error_signature(&fmt(a, ip1)), error_signature(&fmt(b, ip2)));
    }

    #[test]
    fn signatures_are_bounded_lowercase_single_lines(s in ".{0,3000}") {
        let sig = error_signature(&s);
        prop_assert!(sig.len() <= m::SIGNATURE_BYTES_MAX);
        prop_assert!(!sig.contains('\n'));
        prop_assert_eq!(sig.to_lowercase(), sig.clone());
    }
}
