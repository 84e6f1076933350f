//! Shared by the fuzz targets: one normalizer call per input, then the
//! invariants every accepted event must hold (the same as
//! `crates/normalize/tests/props.rs`). A panic or a failed assertion is a
//! finding: it becomes a regression test in `crates/normalize/tests/`.
//!
//! Selector bytes: the `normalizer` target takes its source from the first
//! byte ([`SOURCES`]); `sns` and `eventbridge` treat an input starting with
//! [`WRAP`] as the inner document (SNS `Message`, EventBridge alarm `detail`)
//! wrapped in a fixed valid envelope, so the fuzzer reaches the CloudWatch
//! mapping without first having to build an envelope. Anything else is the
//! request body as sent.

use std::sync::LazyLock;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use tg_model::event::limits as m;
use tg_model::{NormalizedEvent, Source};
use triage_gate_normalize::sns::{CertUrlPolicy, Envelope, MessageType, SigningCert};
use triage_gate_normalize::{NormalizeContext, normalizer};

static CTX: LazyLock<NormalizeContext> = LazyLock::new(NormalizeContext::default);

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 3, 15, 0)
        .single()
        .unwrap_or_default()
}

/// Every source, indexed by the `normalizer` target's first byte (modulo).
pub const SOURCES: [Source; 8] = [
    Source::Generic,
    Source::Alertmanager,
    Source::CloudwatchSns,
    Source::Eventbridge,
    Source::Splunk,
    Source::Datadog,
    Source::Grafana,
    Source::Cloudevents,
];

/// First byte that makes `sns`/`eventbridge` wrap the rest in an envelope.
pub const WRAP: u8 = 0x01;
/// First byte that makes `sns` parse the rest as a signing-certificate PEM.
pub const CERT: u8 = 0x02;

/// Replay window used by the `sns` target (the server's default).
const REPLAY_WINDOW_SECS: i64 = 3600;

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

/// The `normalizer` target: the first byte picks the source, the rest is the
/// body. Besides the limits: the result is deterministic (same input, same
/// `now` -> same events or same error), every event has the source that was
/// asked for, and every cleaned string (of an event, or of the error when the
/// body is refused) is a fixed point of the redactor: no transformation after
/// redaction re-formed a secret (issue 27: cleaning to one line turned
/// `Bearer \bc123tok` into `Bearer c123tok` after the bearer rule had run).
pub fn check_normalizer(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let source = SOURCES[usize::from(selector) % SOURCES.len()];
    check_source(source, body);
    let Some(normalize) = normalizer(source) else {
        panic!("no normalizer for {source:?}");
    };
    let first = normalize(body, &CTX, now());
    let second = normalize(body, &CTX, now());
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "nondeterministic events"),
        (Err(a), Err(b)) => assert_eq!(a, b, "nondeterministic error"),
        _ => panic!("accepted once, rejected once"),
    }
    match first {
        Ok(events) => {
            for e in &events {
                assert_eq!(e.source, source);
                check_redaction_stable(e);
            }
        }
        // The error text is cleaned like a field: it is answered and logged.
        Err(e) => {
            stable(&e.field);
            stable(&e.message);
        }
    }
}

/// Invisible format characters (default-ignorable code points).
static INVISIBLE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"\p{Default_Ignorable_Code_Point}").unwrap_or_else(|e| panic!("{e}"))
});

/// `s` is one clean line: no control character, no white space but single
/// spaces, no invisible character (what `Redactor::redact_line` makes; an
/// invisible character left in a string can hide a secret from the redactor,
/// issue 27).
pub fn assert_one_clean_line(s: &str) {
    let mut buf = [0u8; 4];
    for (at, c) in s.char_indices() {
        let unclean = c.is_control()
            || (c.is_whitespace() && c != ' ')
            || INVISIBLE.is_match(c.encode_utf8(&mut buf));
        assert!(
            !unclean,
            "U+{:04X} at byte {at} of {s:?}: not one clean line",
            u32::from(c)
        );
    }
    assert!(!s.contains("  "), "two spaces in {s:?}: not one clean line");
}

/// `s` is a fixed point of the redactor: no secret is left in it.
fn stable(s: &str) {
    assert_one_clean_line(s);
    // Bounding may cut a marker (`key=[REDACTED:aws_sec`); its stub is
    // not a secret, but a rule may match it again, so it is left out.
    let s = match s.rfind('[') {
        Some(at) if !s[at..].contains(']') => &s[..at],
        _ => s,
    };
    let again = CTX.redactor.redact(s);
    assert_eq!(again, s, "a cleaned string still holds a secret");
}

fn check_redaction_stable(e: &NormalizedEvent) {
    for s in [&e.service, &e.alert_name, &e.summary, &e.origin] {
        stable(s);
    }
    e.component.iter().for_each(|c| stable(c));
    e.impact.evidence.iter().for_each(|s| stable(s));
    for (k, v) in e.labels.iter().chain(e.correlation_ids.iter()) {
        stable(k);
        stable(v);
    }
    for p in &e.log_pointers {
        stable(&p.label);
        stable(&p.url);
    }
}

/// The `sns` target: envelope parse, string to sign, replay-window check,
/// certificate- and subscribe-URL allow-list, then the whole normalizer
/// (envelope + CloudWatch alarm mapping). No RSA verification: that needs a
/// real certificate and is covered by the server's tests.
pub fn check_sns(data: &[u8]) {
    match data.split_first() {
        Some((&WRAP, message)) => {
            let body = sns_wrap(&String::from_utf8_lossy(message));
            check_sns_body(&body);
        }
        Some((&CERT, pem)) => {
            // A parser of attacker-chosen bytes too (the URL is allow-listed,
            // the content is not): refusal is fine, a panic is not.
            let _ = SigningCert::from_pem(pem, now());
        }
        _ => check_sns_body(data),
    }
}

fn sns_wrap(message: &str) -> Vec<u8> {
    json!({
        "Type": "Notification",
        "MessageId": "6f1c3a52-0000-4000-8000-000000000001",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:alarms",
        "Subject": "ALARM: fuzz",
        "Message": message,
        "Timestamp": "2026-11-24T03:12:11.000Z",
        "SignatureVersion": "2",
        "Signature": "AAAA",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    })
    .to_string()
    .into_bytes()
}

fn check_sns_body(body: &[u8]) {
    if let Ok(env) = Envelope::parse(body, &CTX) {
        match env.string_to_sign() {
            Ok(text) => {
                assert!(text.starts_with("Message\n"));
                assert!(text.ends_with(&format!("\nType\n{}\n", env.kind.as_str())));
            }
            Err(_) => assert_ne!(env.kind, MessageType::Notification),
        }
        let _ = triage_gate_normalize::sns::check_timestamp(&env, now(), REPLAY_WINDOW_SECS);
        let policy = CertUrlPolicy::default();
        if let Some(raw) = &env.signing_cert_url
            && let Ok(url) = policy.check_cert_url(raw)
        {
            assert_allowed_aws_url(&url);
            assert!(url.path().ends_with(".pem") && url.query().is_none());
        }
        if let Some(raw) = &env.subscribe_url
            && let Ok(url) = policy.check_subscribe_url(raw, &env.topic_arn)
        {
            assert_allowed_aws_url(&url);
        }
    }
    check_source(Source::CloudwatchSns, body);
}

/// What the default policy may let through: https, an `sns.<region>.amazonaws.com(.cn)`
/// host, the default port, no user info.
fn assert_allowed_aws_url(url: &url::Url) {
    assert_eq!(url.scheme(), "https");
    assert!(url.port().is_none() && url.username().is_empty() && url.password().is_none());
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    assert!(host.starts_with("sns."), "{host}");
    assert!(
        host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"),
        "{host}"
    );
}

/// The `eventbridge` target: the body as sent, or (after [`WRAP`]) the rest
/// as the `detail` of a "CloudWatch Alarm State Change".
pub fn check_eventbridge(data: &[u8]) {
    match data.split_first() {
        Some((&WRAP, detail)) => {
            let Ok(detail) = serde_json::from_slice::<Value>(detail) else {
                return;
            };
            let body = json!({
                "version": "0",
                "id": "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92",
                "detail-type": "CloudWatch Alarm State Change",
                "source": "aws.cloudwatch",
                "account": "123456789012",
                "time": "2026-11-24T03:12:10Z",
                "region": "us-east-1",
                "resources": ["arn:aws:cloudwatch:us-east-1:123456789012:alarm:fuzz"],
                "detail": detail,
            });
            check_source(Source::Eventbridge, body.to_string().as_bytes());
        }
        _ => check_source(Source::Eventbridge, data),
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
