//! The redactor, the error signature and the fingerprint on arbitrary text:
//! never panic; a planted AWS access key never survives redaction; signatures
//! are bounded, lowercase, single-line.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tg_model::event::limits::SIGNATURE_BYTES_MAX;
use triage_gate_normalize::{Redactor, error_signature, fingerprint};

static REDACTOR: LazyLock<Redactor> = LazyLock::new(Redactor::new);

/// AWS's documented example key: its 20 characters are what the rule matches.
const PLANTED: &str = "AKIAIOSFODNN7EXAMPLE";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let redacted = REDACTOR.redact(&text);
    let planted = REDACTOR.redact(&format!("{text} {PLANTED} {text}"));
    assert!(
        !planted.contains(PLANTED),
        "planted key survived: {planted:?}"
    );
    let sig = error_signature(&redacted);
    assert!(sig.len() <= SIGNATURE_BYTES_MAX);
    assert!(!sig.contains('\n'));
    assert_eq!(sig.to_lowercase(), sig);
    let fp = fingerprint("production", &redacted, &sig, &text);
    assert_eq!(fp.0.len(), 32);
});
