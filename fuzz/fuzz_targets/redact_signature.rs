//! The redactor, the error signature and the fingerprint on arbitrary text:
//! never panic; `redact_line` gives one clean line that is a fixed point of
//! `redact` (issue 27); a planted AWS access key never survives redaction,
//! also when an invisible or control character splits it; signatures are
//! bounded, lowercase, single-line.
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

    let line = REDACTOR.redact_line(&text);
    assert_eq!(REDACTOR.redact(&line), line, "redact_line left a secret");
    triage_gate_fuzz::assert_one_clean_line(&line);
    // The first byte picks a separator that splits the planted key.
    let sep = [
        '\u{ad}', '\u{200b}', '\u{200d}', '\u{8}', '\u{0}', '\u{feff}', '\u{2060}',
    ][usize::from(data.first().copied().unwrap_or(0)) % 7];
    // The text with its upper-case `K`s lowered: the planted key's `K` is
    // then the only one (markers have none), so a `K` in the result is the
    // planted key surviving, whatever the text around it swallows or not.
    // Every rule but `pem` (`KEY`) and the `AKIA`/`APKA` key IDs sees the
    // text as it was (the other rules ignore case).
    let lowered = text.replace('K', "k");
    let split = format!("{lowered} AKIAIOSF{sep}ODNN7EXAMPLE {lowered}");
    let line = REDACTOR.redact_line(&split);
    assert!(!line.contains('K'), "a split key survived: {line:?}");

    let sig = error_signature(&redacted);
    assert!(sig.len() <= SIGNATURE_BYTES_MAX);
    assert!(!sig.contains('\n'));
    assert_eq!(sig.to_lowercase(), sig);
    let fp = fingerprint("production", &redacted, &sig, &text);
    assert_eq!(fp.0.len(), 32);
});
