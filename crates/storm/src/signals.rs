//! Independent signals: events from different verified senders for the same
//! service inside a window. Multi-signal confirmation gates MIM.
//!
//! A signal is the pair (sender, origin): the sender is who delivered the
//! event as the gate verified it (a JWT client, a signed-webhook sender, an
//! SNS topic), the origin what it says detected the problem. Independence is
//! counted by sender: one sender claiming two origins is one signal.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The prefix of a sender the gate could not verify (`identity.inbound.mode:
/// none`): its origin claim stands in for it, unvouched.
pub const UNVERIFIED_PREFIX: &str = "unverified:";

/// The last time a sender reported a firing event for a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// The verified sender, or `unverified:<origin>`.
    pub sender: String,
    /// The origin it claimed last.
    pub origin: String,
    pub seen_at: DateTime<Utc>,
}

impl Signal {
    /// The sender identity of an event: verified, or its origin marked unverified.
    pub fn sender_of(sender: Option<&str>, origin: &str) -> String {
        sender.map_or_else(|| format!("{UNVERIFIED_PREFIX}{origin}"), str::to_owned)
    }

    /// Whether the gate could vouch for this signal's sender.
    pub fn verified(sender: &str) -> bool {
        !sender.starts_with(UNVERIFIED_PREFIX)
    }
}

/// Distinct senders that saw the service within `window` before `now`,
/// including the current event's (when it counts), each with the origin it
/// claimed last. Sorted, so decisions list them stably.
pub fn independent_signals(
    stored: &[Signal],
    current: Option<&Signal>,
    now: DateTime<Utc>,
    window: chrono::Duration,
) -> BTreeMap<String, String> {
    let since = now - window;
    let mut out = BTreeMap::new();
    for s in stored
        .iter()
        .filter(|s| s.seen_at >= since && s.seen_at <= now)
        .chain(current)
    {
        out.insert(s.sender.clone(), s.origin.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn signal(sender: &str, origin: &str, seen_at: DateTime<Utc>) -> Signal {
        Signal {
            sender: sender.into(),
            origin: origin.into(),
            seen_at,
        }
    }

    #[test]
    fn counts_distinct_senders_inside_the_window_only() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 3, 30, 0).unwrap();
        let stored = vec![
            signal("jwt:prom", "prometheus", now - chrono::Duration::minutes(5)),
            signal("jwt:cw", "cloudwatch", now - chrono::Duration::minutes(20)),
        ];
        let w = chrono::Duration::minutes(15);
        let same = signal("jwt:prom", "apm", now);
        let got = independent_signals(&stored, Some(&same), now, w);
        assert_eq!(
            got.len(),
            1,
            "one sender claiming two origins is one signal"
        );
        assert_eq!(got["jwt:prom"], "apm");
        let other = signal("jwt:apm", "apm", now);
        assert_eq!(independent_signals(&stored, Some(&other), now, w).len(), 2);
        assert_eq!(independent_signals(&stored, None, now, w).len(), 1);
    }

    #[test]
    fn an_unverified_sender_is_its_origin_marked_as_such() {
        let s = Signal::sender_of(None, "prometheus");
        assert_eq!(s, "unverified:prometheus");
        assert!(!Signal::verified(&s));
        assert!(Signal::verified(&Signal::sender_of(
            Some("jwt:a"),
            "prometheus"
        )));
    }
}
