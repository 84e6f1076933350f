//! Signed inbound webhooks (`identity.inbound.webhooks`): a sender that cannot
//! present a bearer JWT proves itself with an HMAC-SHA256 signature and a
//! shared secret (docs/configuration.md, signed deliveries):
//!
//! - `v1=<hex>` over `"<timestamp>.<body>"`, the scheme triage-gate signs its
//!   own outbound webhooks with (docs/webhooks.md);
//! - `v2=<hex>` over `"v2\n<METHOD>\n<path>\n<timestamp>\n<body>"`, which also
//!   binds the delivery to its route. Which versions a sender may use is
//!   configured per sender (`signature_versions`).
//!
//! A delivery is accepted when its signature verifies (constant-time) over the
//! timestamp header's exact text (canonical digits only), the timestamp is
//! within the replay window of the injected clock, and the delivery was not
//! accepted before within that window. That last check is the store's
//! (`Store::accept` with a [`tg_store::ReplayKey`]): keyed on the decoded MAC
//! bytes, the timestamp and the body's digest, so neither a re-encoded
//! signature (hex case) nor a restart nor another replica accepts it twice.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tg_model::Secret;

/// `X-TriageGate-Signature: v1=<hex>` or `v2=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-triagegate-signature";
/// `X-TriageGate-Timestamp: <unix seconds>`.
pub const TIMESTAMP_HEADER: &str = "x-triagegate-timestamp";
/// Digits of a timestamp at most (Unix seconds until the year 33658).
pub const TIMESTAMP_DIGITS_MAX: usize = 12;

/// A signature scheme a sender may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SignatureVersion {
    /// MAC over `"<timestamp>.<body>"`.
    V1,
    /// MAC over `"v2\n<METHOD>\n<path>\n<timestamp>\n<body>"`.
    V2,
}

impl SignatureVersion {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "v1" => Some(SignatureVersion::V1),
            "v2" => Some(SignatureVersion::V2),
            _ => None,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            SignatureVersion::V1 => "v1=",
            SignatureVersion::V2 => "v2=",
        }
    }
}

/// Why a signed delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedError {
    #[error(
        "no X-TriageGate-Signature header (this source requires a signature or a bearer token)"
    )]
    Missing,
    #[error("malformed signature headers: {0}")]
    Malformed(&'static str),
    #[error("the timestamp is {0} s away from now, outside the replay window")]
    Stale(i64),
    #[error("the signature does not verify with any secret configured for this source")]
    Invalid,
    #[error("this delivery was already accepted (replay)")]
    Replayed,
}

impl SignedError {
    pub fn status(&self) -> u16 {
        match self {
            SignedError::Replayed => 409,
            _ => 401,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            SignedError::Missing => "signature_missing",
            SignedError::Malformed(_) => "signature_malformed",
            SignedError::Stale(_) => "signature_stale",
            SignedError::Invalid => "signature_invalid",
            SignedError::Replayed => "signature_replayed",
        }
    }
}

/// One configured sender.
struct Sender {
    name: String,
    secret: Secret,
    versions: Vec<SignatureVersion>,
}

/// The configured senders, by source.
pub struct SignedSources {
    by_source: BTreeMap<String, Vec<Sender>>,
    window_secs: i64,
}

impl std::fmt::Debug for SignedSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedSources")
            .field("sources", &self.by_source.keys().collect::<Vec<_>>())
            .field("window_secs", &self.window_secs)
            .finish_non_exhaustive()
    }
}

/// A delivery whose signature verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The sender's configured name.
    pub sender: String,
    /// What the store remembers until the window closes.
    pub replay: tg_store::ReplayKey,
}

/// The signed delivery: what the MAC covers besides the body.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub source: &'a str,
    pub method: &'a str,
    pub path: &'a str,
}

/// The MAC of one signature version over a delivery.
fn mac_of(
    version: SignatureVersion,
    secret: &Secret,
    d: Delivery<'_>,
    ts: &str,
    body: &[u8],
) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).ok()?;
    match version {
        SignatureVersion::V1 => {
            mac.update(ts.as_bytes());
            mac.update(b".");
        }
        SignatureVersion::V2 => {
            for part in ["v2", d.method, d.path, ts] {
                mac.update(part.as_bytes());
                mac.update(b"\n");
            }
        }
    }
    mac.update(body);
    Some(mac)
}

/// Whether `ts` is canonical Unix seconds: ASCII digits only, no sign, no
/// spaces, no leading zero (the MAC covers this exact text).
fn canonical_timestamp(ts: &str) -> Option<i64> {
    let digits_only = !ts.is_empty()
        && ts.len() <= TIMESTAMP_DIGITS_MAX
        && ts.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (ts.len() > 1 && ts.starts_with('0')) {
        return None;
    }
    ts.parse().ok()
}

impl SignedSources {
    /// `senders`: (name, secret, sources, signature versions allowed).
    pub fn new(
        senders: Vec<(String, Secret, Vec<String>, Vec<SignatureVersion>)>,
        window_secs: u64,
    ) -> Self {
        let mut by_source: BTreeMap<String, Vec<Sender>> = BTreeMap::new();
        for (name, secret, sources, versions) in senders {
            for s in sources {
                by_source.entry(s).or_default().push(Sender {
                    name: name.clone(),
                    secret: secret.clone(),
                    versions: versions.clone(),
                });
            }
        }
        SignedSources {
            by_source,
            window_secs: i64::try_from(window_secs).unwrap_or(i64::MAX),
        }
    }

    /// Whether deliveries to `source` must be signed (or carry a JWT).
    pub fn applies(&self, source: &str) -> bool {
        self.by_source.contains_key(source)
    }

    /// Whether the request carries a signature at all.
    pub fn signed(headers: &HeaderMap) -> bool {
        headers.contains_key(SIGNATURE_HEADER)
    }

    /// Verifies one delivery at `now` (Unix seconds). The replay check is
    /// the store's, in the transaction that accepts the delivery's events.
    pub fn verify(
        &self,
        d: Delivery<'_>,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, SignedError> {
        let sig = headers
            .get(SIGNATURE_HEADER)
            .ok_or(SignedError::Missing)?
            .to_str()
            .map_err(|_| SignedError::Malformed("signature is not ASCII"))?;
        let (version, hex_sig) = [SignatureVersion::V2, SignatureVersion::V1]
            .into_iter()
            .find_map(|v| sig.strip_prefix(v.prefix()).map(|h| (v, h)))
            .ok_or(SignedError::Malformed(
                "signature is not v1=<hex> or v2=<hex>",
            ))?;
        let mac_bytes =
            hex::decode(hex_sig).map_err(|_| SignedError::Malformed("signature is not hex"))?;
        let ts_text = headers
            .get(TIMESTAMP_HEADER)
            .ok_or(SignedError::Malformed("no X-TriageGate-Timestamp header"))?
            .to_str()
            .map_err(|_| SignedError::Malformed("timestamp is not ASCII"))?;
        let ts = canonical_timestamp(ts_text).ok_or(SignedError::Malformed(
            "timestamp is not canonical unix seconds (digits only, no sign, spaces or leading zeros)",
        ))?;
        let skew = now.saturating_sub(ts);
        if skew.saturating_abs() > self.window_secs {
            return Err(SignedError::Stale(skew));
        }
        let senders = self.by_source.get(d.source).ok_or(SignedError::Invalid)?;
        let sender = senders
            .iter()
            .filter(|s| s.versions.contains(&version))
            .find(|s| {
                // INVARIANT: constant-time comparison (`verify_slice`).
                mac_of(version, &s.secret, d, ts_text, body)
                    .is_some_and(|mac| mac.verify_slice(&mac_bytes).is_ok())
            })
            .ok_or(SignedError::Invalid)?;
        // The replay key: the decoded MAC (any hex case is the same key),
        // the timestamp and the body's digest, under the source.
        let mut key = Sha256::new();
        key.update(b"signed\0");
        key.update(d.source.as_bytes());
        key.update(b"\0");
        key.update(&mac_bytes);
        key.update(ts.to_be_bytes());
        key.update(Sha256::digest(body));
        Ok(Verified {
            sender: sender.name.clone(),
            replay: tg_store::ReplayKey {
                key: hex::encode(key.finalize()),
                until: ts.saturating_add(self.window_secs),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-inbound";
    const PATH: &str = "/v1/events/splunk";

    fn delivery() -> Delivery<'static> {
        Delivery {
            source: "splunk",
            method: "POST",
            path: PATH,
        }
    }

    fn sign(secret: &str, ts: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn sign_v2(secret: &str, method: &str, path: &str, ts: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("v2\n{method}\n{path}\n{ts}\n").as_bytes());
        mac.update(body);
        format!("v2={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn headers(sig: &str, ts: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        h.insert(TIMESTAMP_HEADER, ts.parse().unwrap());
        h
    }

    fn sources(versions: &[SignatureVersion]) -> SignedSources {
        SignedSources::new(
            vec![(
                "splunk-prod".into(),
                Secret::new(SECRET),
                vec!["splunk".into()],
                versions.to_vec(),
            )],
            300,
        )
    }

    #[test]
    fn a_good_signature_is_accepted_and_everything_else_refused() {
        let s = sources(&[SignatureVersion::V1, SignatureVersion::V2]);
        let body = br#"{"result":{}}"#;
        let now = 1_800_000_000;
        let good = sign(SECRET, now - 10, body);
        assert!(s.applies("splunk") && !s.applies("generic"));
        let v = s
            .verify(
                delivery(),
                &headers(&good, &(now - 10).to_string()),
                body,
                now,
            )
            .unwrap();
        assert_eq!(v.sender, "splunk-prod");
        assert_eq!(v.replay.until, now - 10 + 300);
        let h = |sig: &str, ts: i64| headers(sig, &ts.to_string());
        // Tampered body, wrong secret, stale or future timestamp, wrong source, missing.
        let fresh = sign(SECRET, now, body);
        assert_eq!(
            s.verify(delivery(), &h(&fresh, now), b"{}", now)
                .unwrap_err(),
            SignedError::Invalid
        );
        let wrong = sign("another-secret-another-secret-another", now, body);
        assert_eq!(
            s.verify(delivery(), &h(&wrong, now), body, now)
                .unwrap_err(),
            SignedError::Invalid
        );
        let old = sign(SECRET, now - 301, body);
        assert_eq!(
            s.verify(delivery(), &h(&old, now - 301), body, now)
                .unwrap_err(),
            SignedError::Stale(301)
        );
        let future = sign(SECRET, now + 301, body);
        assert_eq!(
            s.verify(delivery(), &h(&future, now + 301), body, now)
                .unwrap_err(),
            SignedError::Stale(-301)
        );
        let generic = Delivery {
            source: "generic",
            ..delivery()
        };
        assert_eq!(
            s.verify(generic, &h(&fresh, now), body, now).unwrap_err(),
            SignedError::Invalid
        );
        assert_eq!(
            s.verify(delivery(), &HeaderMap::new(), body, now)
                .unwrap_err(),
            SignedError::Missing
        );
        let mut bad = h(&fresh, now);
        bad.insert(SIGNATURE_HEADER, "sha256=abc".parse().unwrap());
        assert!(matches!(
            s.verify(delivery(), &bad, body, now),
            Err(SignedError::Malformed(_))
        ));
        // The timestamp is signed: moving it invalidates the signature.
        assert_eq!(
            s.verify(delivery(), &h(&fresh, now - 1), body, now)
                .unwrap_err(),
            SignedError::Invalid
        );
    }

    /// Issue 21 item 1: the hex text's case is not the delivery; the key is
    /// the decoded MAC (with the timestamp and body), so an upper-case copy
    /// is the same replay.
    #[test]
    fn the_replay_key_is_the_decoded_mac_not_its_hex_text() {
        let s = sources(&[SignatureVersion::V1]);
        let body = br#"{"result":{}}"#;
        let now = 1_800_000_000;
        let sig = sign(SECRET, now, body);
        let upper = format!("v1={}", sig.trim_start_matches("v1=").to_uppercase());
        let ts = now.to_string();
        let a = s
            .verify(delivery(), &headers(&sig, &ts), body, now)
            .unwrap();
        let b = s
            .verify(delivery(), &headers(&upper, &ts), body, now)
            .unwrap();
        assert_eq!(a.replay, b.replay);
        // Another body is another delivery.
        let other = sign(SECRET, now, b"{}");
        let c = s
            .verify(delivery(), &headers(&other, &ts), b"{}", now)
            .unwrap();
        assert_ne!(a.replay.key, c.replay.key);
    }

    /// Issue 21 item 9: the MAC covers the header's exact text, so only
    /// canonical digits are accepted.
    #[test]
    fn only_canonical_timestamps_are_accepted() {
        let s = sources(&[SignatureVersion::V1]);
        let body = b"{}";
        let now = 1_800_000_000;
        let sig = sign(SECRET, now, body);
        for ts in [
            format!("+{now}"),
            format!(" {now}"),
            format!("0{now}"),
            format!("{now}.0"),
            "-5".to_owned(),
        ] {
            let Ok(h) = std::panic::catch_unwind(|| headers(&sig, &ts)) else {
                continue; // not even a header value
            };
            assert!(
                matches!(
                    s.verify(delivery(), &h, body, now),
                    Err(SignedError::Malformed(_))
                ),
                "{ts:?} was accepted"
            );
        }
    }

    /// Issue 21 item 9: a v2 signature covers the method and path; a sender
    /// limited to v2 cannot use v1.
    #[test]
    fn v2_binds_the_route_and_versions_are_per_sender() {
        let s = sources(&[SignatureVersion::V2]);
        let body = b"{}";
        let now = 1_800_000_000;
        let ts = now.to_string();
        let good = sign_v2(SECRET, "POST", PATH, now, body);
        assert!(
            s.verify(delivery(), &headers(&good, &ts), body, now)
                .is_ok()
        );
        let other_route = sign_v2(SECRET, "POST", "/v1/events/generic", now, body);
        assert_eq!(
            s.verify(delivery(), &headers(&other_route, &ts), body, now)
                .unwrap_err(),
            SignedError::Invalid
        );
        let v1 = sign(SECRET, now, body);
        assert_eq!(
            s.verify(delivery(), &headers(&v1, &ts), body, now)
                .unwrap_err(),
            SignedError::Invalid,
            "a v2-only sender accepted a v1 signature"
        );
    }
}
