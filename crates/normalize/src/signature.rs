//! Error signatures and fingerprints: what makes two alerts "the same problem".
//!
//! [`error_signature`] replaces the volatile parts of a message by
//! placeholders, in this order: e-mails `<email>`, quoted values `<q>`,
//! timestamps `<ts>`, UUIDs `<uuid>`, IPv4/IPv6 addresses with an optional
//! port `<ip>`, hex IDs (`0x..`, or 8+ hex digits with a digit and a letter)
//! `<hex>`, numbers `<n>` (a unit suffix such as `ms` is kept); then folds
//! white space, lowercases and bounds the result to `SIGNATURE_BYTES_MAX`.
//!
//! [`fingerprint`] hashes the service, the signature and the alert name, never
//! the source, so the same problem reported by two tools has one fingerprint.

use std::sync::LazyLock;

use regex::{Captures, Regex};
use sha2::{Digest, Sha256};
use tg_model::Fingerprint;
use tg_model::event::limits::SIGNATURE_BYTES_MAX;

use crate::common::{one_line, truncate};

/// Bytes of input considered: the signature is a bounded prefix of the
/// message, so the regexes never scan more than this.
pub const SIGNATURE_INPUT_BYTES_MAX: usize = 4 * SIGNATURE_BYTES_MAX;

/// Version tag hashed in front of every fingerprint; changing the encoding
/// means changing this tag (and every fingerprint).
pub const FINGERPRINT_DOMAIN: &str = "triage-gate/fingerprint/v1";

struct Patterns {
    email: Regex,
    quoted: Regex,
    timestamp: Regex,
    time: Regex,
    uuid: Regex,
    ipv4: Regex,
    ipv6: Regex,
    hex: Regex,
    number: Regex,
}

#[expect(
    clippy::expect_used,
    reason = "constant patterns; signature::tests run every one of them"
)]
static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
    let re = |s: &str| Regex::new(s).expect("signature pattern compiles");
    Patterns {
        email: re(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
        // A quote opens only after a non-word character, so "can't" is not a quote.
        quoted: re(r#"(?P<pre>^|[^\w])(?:"[^"]*"|'[^']*'|`[^`]*`)"#),
        timestamp: re(
            r"(?i)\b\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:z|[+-]\d{2}:?\d{2})?)?\b",
        ),
        time: re(r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b"),
        uuid: re(r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"),
        ipv4: re(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"),
        ipv6: re(
            r"(?i)\[?(?:\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|\b(?:[0-9a-f]{1,4}:){1,6}:(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,5})?|::1\b)\]?(?::\d{1,5}\b)?",
        ),
        hex: re(r"(?i)\b(?:0x[0-9a-f]+|[0-9a-f]{8,})\b"),
        number: re(r"(?i)\b\d+(?:[.,]\d+)*(?P<unit>ms|us|ns|s|m|h|d|k|kb|mb|gb|b)?\b"),
    }
});

/// The message with volatile parts replaced by placeholders, lowercased,
/// white space folded, at most `SIGNATURE_BYTES_MAX` bytes.
///
/// Callers redact first: this function does not look for secrets.
pub fn error_signature(text: &str) -> String {
    let p = &*PATTERNS;
    let text = truncate(text.to_owned(), SIGNATURE_INPUT_BYTES_MAX);
    let s = p.email.replace_all(&text, "<email>");
    let s = p.quoted.replace_all(&s, "${pre}<q>");
    let s = p.timestamp.replace_all(&s, "<ts>");
    let s = p.time.replace_all(&s, "<ts>");
    let s = p.uuid.replace_all(&s, "<uuid>");
    let s = p.ipv4.replace_all(&s, "<ip>");
    let s = p.ipv6.replace_all(&s, |c: &Captures<'_>| {
        let m = c.get(0).map_or("", |m| m.as_str());
        // `dead::` alone is more likely a path than an address; require a digit or `::1`.
        if m.bytes().any(|b| b.is_ascii_digit()) {
            "<ip>".to_owned()
        } else {
            m.to_owned()
        }
    });
    let s = p.hex.replace_all(&s, |c: &Captures<'_>| {
        let m = c.get(0).map_or("", |m| m.as_str());
        let digits = m.bytes().any(|b| b.is_ascii_digit());
        let letters = m.bytes().any(|b| b.is_ascii_alphabetic());
        let prefixed = m.len() > 2 && m.get(..2).is_some_and(|x| x.eq_ignore_ascii_case("0x"));
        if prefixed || (digits && letters) {
            "<hex>".to_owned()
        } else {
            // All digits: left for the number rule; all letters: a word.
            m.to_owned()
        }
    });
    let s = p.number.replace_all(&s, "<n>${unit}");
    truncate(one_line(&s).to_lowercase(), SIGNATURE_BYTES_MAX)
}

/// First 32 hex chars of SHA-256 over an unambiguous encoding of
/// (service, signature, alert name), not of the source.
///
/// Encoding (stable; changing it changes [`FINGERPRINT_DOMAIN`]):
/// the UTF-8 bytes of [`FINGERPRINT_DOMAIN`], then for each of `service`,
/// `signature`, `alert_name` in that order its byte length as a 64-bit
/// big-endian integer followed by its UTF-8 bytes.
pub fn fingerprint(
    environment: &str,
    service: &str,
    signature: &str,
    alert_name: &str,
) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(FINGERPRINT_DOMAIN.as_bytes());
    // The environment is part of the fault: staging's CheckoutErrors must never
    // suppress (or share a ticket with) production's. The source is not.
    for part in [environment, service, signature, alert_name] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    Fingerprint(digest.chars().take(32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brief_example_gives_one_signature() {
        let a = error_signature("timeout after 3012 ms on 10.0.0.7");
        let b = error_signature("timeout after 2950 ms on 10.0.0.9");
        assert_eq!(a, b);
        assert_eq!(a, "timeout after <n> ms on <ip>");
    }

    #[test]
    fn each_placeholder() {
        for (input, expected) in [
            ("Took 3012ms", "took <n>ms"),
            (
                "req 123e4567-e89b-12d3-a456-426614174000 failed",
                "req <uuid> failed",
            ),
            ("object 5f3a9c0b12 missing", "object <hex> missing"),
            ("ptr 0xDEADbeef", "ptr <hex>"),
            ("deadbeefcafe is a word", "deadbeefcafe is a word"),
            ("dial 10.2.3.4:5432 refused", "dial <ip> refused"),
            ("dial [fe80::1]:8080 refused", "dial <ip> refused"),
            ("from 2001:db8:0:0:0:0:0:1 x", "from <ip> x"),
            ("std::io error", "std::io error"),
            ("at 2026-11-24T03:12:00.123Z ok", "at <ts> ok"),
            ("at 2026-11-24 03:12:00+02:00 ok", "at <ts> ok"),
            ("at 03:12:00 ok", "at <ts> ok"),
            (r#"user "bob" not found"#, "user <q> not found"),
            ("user 'bob' can't log in", "user <q> can't log in"),
            ("notify ops@example.com", "notify <email>"),
            ("  Many\n\tSPACES  ", "many spaces"),
            ("checkout 5xx above 5%", "checkout 5xx above <n>%"),
            ("ec2 and s3 and http2", "ec2 and s3 and http2"),
        ] {
            assert_eq!(error_signature(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn signatures_are_bounded() {
        let long = "word ".repeat(10_000);
        assert!(error_signature(&long).len() <= SIGNATURE_BYTES_MAX);
        let wide = "é".repeat(5_000);
        let s = error_signature(&wide);
        assert!(s.len() <= SIGNATURE_BYTES_MAX);
    }

    #[test]
    fn fingerprint_is_pinned() {
        // Pinned (and checked by hand against the documented encoding): a
        // change here changes every stored fingerprint.
        assert_eq!(
            fingerprint(
                "production",
                "orders-db",
                "connection refused after <n> ms on <ip>",
                "PostgresDown"
            )
            .0,
            "826a3a0f1501121dd14814def703249c"
        );
    }

    #[test]
    fn fingerprint_is_unambiguous_and_source_free() {
        let a = fingerprint("production", "ab", "c", "d");
        let b = fingerprint("production", "a", "bc", "d");
        assert_ne!(a, b);
        assert_eq!(a.0.len(), 32);
        assert!(
            a.0.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(
            fingerprint("production", "s", "x", "n"),
            fingerprint("production", "s", "x", "n")
        );
        assert_ne!(
            fingerprint("production", "s", "x", "n"),
            fingerprint("staging", "s", "x", "n")
        );
    }
}
