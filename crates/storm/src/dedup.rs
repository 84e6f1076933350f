//! Duplicate suppression: the first run with a fingerprint opens a window; later
//! runs with the same fingerprint inside it are suppressed and linked to the first.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tg_model::{Fingerprint, ImpactLevel, RunId};

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
    /// The source's impact level when the window opened: a higher level inside
    /// the window is an escalation, not a duplicate.
    #[serde(default = "unknown_impact")]
    pub impact: ImpactLevel,
    /// The source resolved the alert: the window no longer suppresses, but the
    /// entry is kept so a re-fire remembers `paged_at` (flap damping).
    #[serde(default)]
    pub resolved: bool,
    /// When a page was last executed for this fingerprint, carried across
    /// re-opened windows so a flapping alert pages at most once per window.
    #[serde(default)]
    pub paged_at: Option<DateTime<Utc>>,
    /// The run whose ticket is open for this fingerprint, carried across an
    /// escalation (not a resolution) so an escalation does not open a second one.
    #[serde(default)]
    pub ticket_run: Option<RunId>,
    /// Origins (detecting systems) that reported the fingerprint inside the
    /// window. A report from a new origin is a confirmation, not a duplicate.
    #[serde(default)]
    pub origins: Vec<String>,
}

fn unknown_impact() -> ImpactLevel {
    ImpactLevel::Unknown
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
            impact: ImpactLevel::Unknown,
            resolved: false,
            paged_at: None,
            ticket_run: None,
            origins: Vec::new(),
        }
    }

    /// The same window, recording the impact level it opened at.
    pub fn with_impact(mut self, impact: ImpactLevel) -> Self {
        self.impact = impact;
        self
    }

    /// Whether an event seen at `now` falls inside this (unresolved) window.
    pub fn suppresses(&self, now: DateTime<Utc>) -> bool {
        !self.resolved && now >= self.opened_at && now < self.expires_at
    }

    /// Whether an event at `impact` from `origin` seen at `now` is a duplicate:
    /// inside the window, not an escalation (a strictly higher impact level),
    /// and from an origin that already reported it (a new origin is an
    /// independent signal that may confirm a major incident).
    pub fn duplicate(&self, impact: ImpactLevel, origin: &str, now: DateTime<Utc>) -> bool {
        self.suppresses(now)
            && impact <= self.impact
            && (self.origins.is_empty() || self.origins.iter().any(|o| o == origin))
    }

    /// Whether a page for this fingerprint was executed within `window` before `now`.
    pub fn paged_within(&self, now: DateTime<Utc>, window: chrono::Duration) -> bool {
        self.paged_at.is_some_and(|t| now >= t && now < t + window)
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

    #[test]
    fn escalation_and_resolution_end_suppression() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap();
        let e = DedupEntry::open(
            "f".into(),
            "run_1".into(),
            t0,
            chrono::Duration::minutes(10),
        )
        .with_impact(ImpactLevel::Medium);
        let e = DedupEntry {
            origins: vec!["prometheus".into()],
            ..e
        };
        assert!(e.duplicate(ImpactLevel::Medium, "prometheus", t0));
        assert!(e.duplicate(ImpactLevel::Low, "prometheus", t0));
        assert!(
            !e.duplicate(ImpactLevel::High, "prometheus", t0),
            "escalation"
        );
        assert!(
            !e.duplicate(ImpactLevel::Low, "cloudwatch", t0),
            "a new origin is a confirmation"
        );
        let r = DedupEntry {
            resolved: true,
            ..e
        };
        assert!(!r.duplicate(ImpactLevel::Low, "prometheus", t0), "resolved");
    }
}
