//! Shared by the integration tests: a fixed clock and context, and the
//! normalizer for each source directory.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use tg_model::Source;
use triage_gate_normalize::{NormalizeContext, NormalizeFn, normalizer};

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 3, 15, 0).unwrap()
}

pub fn ctx() -> NormalizeContext {
    NormalizeContext {
        service_aliases: BTreeMap::from([
            ("checkout-svc".to_owned(), "checkout".to_owned()),
            ("orders-database".to_owned(), "orders-db".to_owned()),
        ]),
        ..NormalizeContext::default()
    }
}

pub const SOURCES: &[(&str, Source)] = &[
    ("generic", Source::Generic),
    ("alertmanager", Source::Alertmanager),
    ("grafana", Source::Grafana),
    ("splunk", Source::Splunk),
    ("cloudevents", Source::Cloudevents),
    ("datadog", Source::Datadog),
    ("cloudwatch-sns", Source::CloudwatchSns),
    ("eventbridge", Source::Eventbridge),
];

pub fn normalize_fn(dir: &str) -> NormalizeFn {
    let source = SOURCES
        .iter()
        .find(|(name, _)| *name == dir)
        .unwrap_or_else(|| panic!("no source named {dir}"))
        .1;
    normalizer(source).unwrap()
}
