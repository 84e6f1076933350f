//! Signed inbound webhooks (`identity.inbound.webhooks`): a sender that cannot
//! present a bearer JWT proves itself with an HMAC-SHA256 signature over
//! `"<timestamp>.<body>"` and a shared secret, the same scheme triage-gate
//! signs its own outbound webhooks with (docs/webhooks.md).
//!
//! A delivery is accepted when its signature verifies (constant-time), its
//! timestamp is within the replay window of the injected clock, and the same
//! signature was not accepted before within that window.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tg_model::Secret;

/// `X-TriageGate-Signature: v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-triagegate-signature";
/// `X-TriageGate-Timestamp: <unix seconds>`.
pub const TIMESTAMP_HEADER: &str = "x-triagegate-timestamp";
/// Signatures remembered for replay protection; past this, expired ones are
/// dropped first, then the delivery is refused (503) rather than risk a replay.
pub const REPLAY_CACHE_MAX: usize = 100_000;

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
    #[error("this signature was already accepted (replay)")]
    Replayed,
    #[error("the replay cache is full; retry later")]
    Busy,
}

impl SignedError {
    pub fn status(&self) -> u16 {
        match self {
            SignedError::Replayed => 409,
            SignedError::Busy => 503,
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
            SignedError::Busy => "replay_cache_full",
        }
    }
}

/// The configured senders, by source.
pub struct SignedSources {
    by_source: BTreeMap<String, Vec<(String, Secret)>>,
    window_secs: i64,
    /// Accepted signature -> when it leaves the window.
    seen: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for SignedSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedSources")
            .field("sources", &self.by_source.keys().collect::<Vec<_>>())
            .field("window_secs", &self.window_secs)
            .finish_non_exhaustive()
    }
}

impl SignedSources {
    /// `senders`: (name, secret, sources).
    pub fn new(senders: Vec<(String, Secret, Vec<String>)>, window_secs: u64) -> Self {
        let mut by_source: BTreeMap<String, Vec<(String, Secret)>> = BTreeMap::new();
        for (name, secret, sources) in senders {
            for s in sources {
                by_source
                    .entry(s)
                    .or_default()
                    .push((name.clone(), secret.clone()));
            }
        }
        SignedSources {
            by_source,
            window_secs: i64::try_from(window_secs).unwrap_or(i64::MAX),
            seen: Mutex::new(HashMap::new()),
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

    /// Verifies one delivery at `now` (Unix seconds); returns the sender's name.
    pub fn verify(
        &self,
        source: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<String, SignedError> {
        let sig = headers
            .get(SIGNATURE_HEADER)
            .ok_or(SignedError::Missing)?
            .to_str()
            .map_err(|_| SignedError::Malformed("signature is not ASCII"))?;
        let hex_sig = sig
            .strip_prefix("v1=")
            .ok_or(SignedError::Malformed("signature is not v1=<hex>"))?;
        let mac_bytes =
            hex::decode(hex_sig).map_err(|_| SignedError::Malformed("signature is not hex"))?;
        let ts: i64 = headers
            .get(TIMESTAMP_HEADER)
            .ok_or(SignedError::Malformed("no X-TriageGate-Timestamp header"))?
            .to_str()
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or(SignedError::Malformed("timestamp is not unix seconds"))?;
        let skew = now.saturating_sub(ts);
        if skew.saturating_abs() > self.window_secs {
            return Err(SignedError::Stale(skew));
        }
        let senders = self.by_source.get(source).ok_or(SignedError::Invalid)?;
        let name = senders
            .iter()
            .find(|(_, secret)| {
                Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).is_ok_and(|mut mac| {
                    mac.update(ts.to_string().as_bytes());
                    mac.update(b".");
                    mac.update(body);
                    mac.verify_slice(&mac_bytes).is_ok()
                })
            })
            .map(|(name, _)| name.clone())
            .ok_or(SignedError::Invalid)?;
        // Replay: each signature once while its timestamp is inside the window.
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.get(hex_sig).is_some_and(|until| *until >= now) {
            return Err(SignedError::Replayed);
        }
        if seen.len() >= REPLAY_CACHE_MAX {
            seen.retain(|_, until| *until >= now);
            if seen.len() >= REPLAY_CACHE_MAX {
                return Err(SignedError::Busy);
            }
        }
        seen.insert(hex_sig.to_owned(), ts.saturating_add(self.window_secs));
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-inbound";

    fn sign(secret: &str, ts: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn headers(sig: &str, ts: i64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        h.insert(TIMESTAMP_HEADER, ts.to_string().parse().unwrap());
        h
    }

    fn sources() -> SignedSources {
        SignedSources::new(
            vec![(
                "splunk-prod".into(),
                Secret::new(SECRET),
                vec!["splunk".into()],
            )],
            300,
        )
    }

    #[test]
    fn a_good_signature_is_accepted_once_and_everything_else_refused() {
        let s = sources();
        let body = br#"{"result":{}}"#;
        let now = 1_800_000_000;
        let good = sign(SECRET, now - 10, body);
        assert!(s.applies("splunk") && !s.applies("generic"));
        assert_eq!(
            s.verify("splunk", &headers(&good, now - 10), body, now)
                .unwrap(),
            "splunk-prod"
        );
        assert_eq!(
            s.verify("splunk", &headers(&good, now - 10), body, now),
            Err(SignedError::Replayed)
        );
        // Tampered body, wrong secret, stale or future timestamp, wrong source, missing.
        let fresh = sign(SECRET, now, body);
        assert_eq!(
            s.verify("splunk", &headers(&fresh, now), b"{}", now),
            Err(SignedError::Invalid)
        );
        let wrong = sign("another-secret-another-secret-another", now, body);
        assert_eq!(
            s.verify("splunk", &headers(&wrong, now), body, now),
            Err(SignedError::Invalid)
        );
        let old = sign(SECRET, now - 301, body);
        assert_eq!(
            s.verify("splunk", &headers(&old, now - 301), body, now),
            Err(SignedError::Stale(301))
        );
        let future = sign(SECRET, now + 301, body);
        assert_eq!(
            s.verify("splunk", &headers(&future, now + 301), body, now),
            Err(SignedError::Stale(-301))
        );
        assert_eq!(
            s.verify("generic", &headers(&fresh, now), body, now),
            Err(SignedError::Invalid)
        );
        assert_eq!(
            s.verify("splunk", &HeaderMap::new(), body, now),
            Err(SignedError::Missing)
        );
        let mut bad = headers(&fresh, now);
        bad.insert(SIGNATURE_HEADER, "sha256=abc".parse().unwrap());
        assert!(matches!(
            s.verify("splunk", &bad, body, now),
            Err(SignedError::Malformed(_))
        ));
        // The timestamp is signed: moving it invalidates the signature.
        assert_eq!(
            s.verify("splunk", &headers(&fresh, now - 1), body, now),
            Err(SignedError::Invalid)
        );
    }
}
