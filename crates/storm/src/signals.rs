//! Independent signals: events from different origins (detecting systems) for the
//! same service inside a window. Multi-signal confirmation gates MIM.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The last time an origin reported a firing event for a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub origin: String,
    pub seen_at: DateTime<Utc>,
}

/// Distinct origins that saw the service within `window` before `now`,
/// including the current event's origin. Sorted, so decisions list them stably.
pub fn independent_origins(
    stored: &[Signal],
    current_origin: &str,
    now: DateTime<Utc>,
    window: chrono::Duration,
) -> BTreeSet<String> {
    let since = now - window;
    stored
        .iter()
        .filter(|s| s.seen_at >= since && s.seen_at <= now)
        .map(|s| s.origin.clone())
        .chain(std::iter::once(current_origin.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn counts_distinct_origins_inside_the_window_only() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 3, 30, 0).unwrap();
        let stored = vec![
            Signal {
                origin: "prometheus".into(),
                seen_at: now - chrono::Duration::minutes(5),
            },
            Signal {
                origin: "cloudwatch".into(),
                seen_at: now - chrono::Duration::minutes(20),
            },
        ];
        let w = chrono::Duration::minutes(15);
        let got = independent_origins(&stored, "prometheus", now, w);
        assert_eq!(got.into_iter().collect::<Vec<_>>(), ["prometheus"]);
        let got = independent_origins(&stored, "apm", now, w);
        assert_eq!(got.len(), 2);
    }
}
