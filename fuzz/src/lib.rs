//! Shared by the fuzz targets: one normalizer call per input, then the
//! invariants every accepted event must hold (the same as
//! `crates/normalize/tests/props.rs`). A panic or a failed assertion is a
//! finding: it becomes a regression test in `crates/normalize/tests/`.

use std::sync::LazyLock;

use chrono::{DateTime, TimeZone, Utc};
use tg_model::event::limits as m;
use tg_model::{NormalizedEvent, Source};
use triage_gate_normalize::{NormalizeContext, normalizer};

static CTX: LazyLock<NormalizeContext> = LazyLock::new(NormalizeContext::default);

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 3, 15, 0)
        .single()
        .unwrap_or_default()
}

/// Runs the normalizer for `source` on `data`; checks the limits of what it accepts.
pub fn check_source(source: Source, data: &[u8]) {
    let Some(normalize) = normalizer(source) else {
        panic!("no normalizer for {source:?}");
    };
    match normalize(data, &CTX, now()) {
        Ok(events) => {
            assert!(events.len() <= CTX.limits.alerts_per_batch_max);
            events.iter().for_each(check_event);
        }
        Err(e) => {
            assert!(e.field.len() <= triage_gate_normalize::ERROR_TEXT_BYTES_MAX);
            assert!(e.message.len() <= triage_gate_normalize::ERROR_TEXT_BYTES_MAX);
        }
    }
}

fn check_event(e: &NormalizedEvent) {
    assert!(e.summary.len() <= m::SUMMARY_BYTES_MAX);
    assert!(!e.summary.contains('\n'));
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
    for p in &e.log_pointers {
        let lower = p.url.to_ascii_lowercase();
        assert!(p.url.len() <= m::URL_BYTES_MAX);
        assert!(lower.starts_with("https://") || lower.starts_with("http://"));
    }
    assert!(e.impact.evidence.len() <= m::EVIDENCE_MAX);
    assert_eq!(e.fingerprint.0.len(), 32);
}
