//! Throughput of the normalizer alone: events/s per source on its vendor's
//! documented example payload (the golden inputs built from them), a
//! 100-alert Alertmanager group, and the error signature and fingerprint
//! alone. Each source's group also measures `serde_json::from_slice::<Value>`
//! of the same bytes: the baseline every normalizer pays, so a report can
//! state each adapter as a multiple of plain JSON parsing measured in the
//! same run, and `tg_model::json::from_slice_strict` (duplicate keys
//! refused), which the normalizers use.
//!
//! ```sh
//! cargo bench -p triage-gate-normalize --bench normalize -- --quick
//! ```
//!
//! Criterion reports `thrpt` in elem/s = events/s (one element per event).

// A benchmark harness: a failed setup should stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use tg_model::Source;
use triage_gate_normalize::{NormalizeContext, error_signature, fingerprint, normalizer};

/// (source, golden case whose input is the vendor's documented example)
const CASES: &[(Source, &str, &[u8])] = &[
    (
        Source::Generic,
        "generic/full",
        include_bytes!("../tests/golden/generic/full/input.json"),
    ),
    (
        Source::Alertmanager,
        "alertmanager/firing",
        include_bytes!("../tests/golden/alertmanager/firing/input.json"),
    ),
    (
        Source::Cloudevents,
        "cloudevents/apm",
        include_bytes!("../tests/golden/cloudevents/apm/input.json"),
    ),
    (
        Source::Splunk,
        "splunk/alert",
        include_bytes!("../tests/golden/splunk/alert/input.json"),
    ),
    (
        Source::Grafana,
        "grafana/firing",
        include_bytes!("../tests/golden/grafana/firing/input.json"),
    ),
    (
        Source::Datadog,
        "datadog/triggered",
        include_bytes!("../tests/golden/datadog/triggered/input.json"),
    ),
];

/// Alerts in the large Alertmanager group.
const GROUP_ALERTS: usize = 100;

fn ctx() -> NormalizeContext {
    NormalizeContext {
        service_aliases: BTreeMap::from([("checkout-svc".to_owned(), "checkout".to_owned())]),
        ..NormalizeContext::default()
    }
}

/// An Alertmanager v4 group of `n` firing alerts, distinct labels and messages.
fn alertmanager_group(n: usize) -> Vec<u8> {
    let alerts: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "status": "firing",
                "labels": {"alertname": "HighLatency", "service": "checkout", "env": "prod",
                           "instance": format!("10.0.{}.{}:9100", i / 250, i % 250),
                           "severity": if i % 3 == 0 { "critical" } else { "warning" }},
                "annotations": {"summary": format!("p99 latency {i}ms above 500ms"),
                                "description": format!("upstream timeout after {} ms on 10.0.0.{}", 3000 + i, i % 250),
                                "runbook_url": "https://runbooks.example.com/latency"},
                "startsAt": "2026-11-24T03:12:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": format!("http://prometheus:9090/graph?g0.expr=latency&i={i}"),
                "fingerprint": format!("{i:016x}")
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "version": "4", "groupKey": "{}:{alertname=\"HighLatency\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "triage-gate",
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": {"alertname": "HighLatency", "service": "checkout", "env": "prod"},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": alerts
    }))
    .unwrap_or_default()
}

fn bench_sources(c: &mut Criterion) {
    let ctx = ctx();
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 3, 15, 0).unwrap();
    let group = alertmanager_group(GROUP_ALERTS);
    let mut cases: Vec<(Source, String, &[u8])> = CASES
        .iter()
        .map(|(s, name, body)| (*s, (*name).to_owned(), *body))
        .collect();
    cases.push((
        Source::Alertmanager,
        format!("alertmanager/group-{GROUP_ALERTS}"),
        &group,
    ));
    for (source, name, body) in cases {
        let normalize = normalizer(source).unwrap();
        let events = normalize(body, &ctx, now).unwrap().len() as u64;
        assert!(events > 0, "{name} gave no events");
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(events));
        g.bench_function("normalize", |b| {
            b.iter(|| normalize(black_box(body), &ctx, now).unwrap())
        });
        g.bench_function("json_parse_baseline", |b| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(body)).unwrap())
        });
        // What the normalizers parse with since issue 21 (10): duplicate keys refused.
        g.bench_function("json_parse_strict", |b| {
            b.iter(|| tg_model::json::from_slice_strict(black_box(body)).unwrap())
        });
        g.finish();
    }
}

fn bench_signature(c: &mut Criterion) {
    let message = "upstream timeout after 3012 ms on 10.0.0.7:5432 \
                   (request 123e4567-e89b-12d3-a456-426614174000 at 2026-11-24T03:12:00Z)";
    let mut g = c.benchmark_group("signature");
    g.throughput(Throughput::Elements(1));
    g.bench_function("error_signature", |b| {
        b.iter(|| error_signature(black_box(message)))
    });
    let sig = error_signature(message);
    g.bench_function("fingerprint", |b| {
        b.iter(|| {
            fingerprint(
                black_box("production"),
                black_box("checkout"),
                black_box(&sig),
                black_box("Timeout"),
            )
        })
    });
    g.bench_function("error_signature_and_fingerprint", |b| {
        b.iter(|| {
            let s = error_signature(black_box(message));
            fingerprint("production", "checkout", &s, "Timeout")
        })
    });
    g.finish();
}

criterion_group!(benches, bench_sources, bench_signature);
criterion_main!(benches);
