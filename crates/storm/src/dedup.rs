//! Duplicate suppression: the first run with a fingerprint opens a window; later
//! runs with the same fingerprint inside it are suppressed and linked to the first.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tg_model::{Fingerprint, RunId};

/// An open suppression window for one fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    pub fingerprint: Fingerprint,
    /// The run that opened the window; duplicates link to it.
    pub first_run_id: RunId,
    pub opened_at: DateTime<Utc>,
    /// The window closes here (exclusive). Fixed at opening: repeats do not extend
    /// it, so a flapping alert acts at most once per window.
    pub expires_at: DateTime<Utc>,
}

impl DedupEntry {
    pub fn open(
        fingerprint: Fingerprint,
        first_run_id: RunId,
        now: DateTime<Utc>,
        window: chrono::Duration,
    ) -> Self {
        DedupEntry {
            fingerprint,
            first_run_id,
            opened_at: now,
            expires_at: now + window,
        }
    }

    /// Whether an event seen at `now` falls inside this window.
    pub fn suppresses(&self, now: DateTime<Utc>) -> bool {
        now >= self.opened_at && now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn window_is_half_open_and_fixed_at_opening() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap();
        let e = DedupEntry::open(
            "f".into(),
            "run_1".into(),
            t0,
            chrono::Duration::minutes(10),
        );
        assert!(e.suppresses(t0));
        assert!(e.suppresses(t0 + chrono::Duration::seconds(599)));
        assert!(!e.suppresses(t0 + chrono::Duration::seconds(600)));
        assert!(!e.suppresses(t0 - chrono::Duration::seconds(1)));
    }
}
