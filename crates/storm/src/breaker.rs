//! Storm-mode circuit breaker, one per environment: when more than a threshold
//! of distinct services alert within a window, individual pages stop and one
//! umbrella incident carries the storm; the breaker closes again with
//! hysteresis (the count stays at or below a lower threshold for a cool-down).
//!
//! Pure: [`observe`] takes the stored state, the stored sightings and `now`,
//! and returns the next state plus the transition, if any. The store keeps
//! both, so a restart neither opens nor closes a breaker by itself.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tg_model::RunId;

/// Most distinct origins remembered for one storm (the umbrella's MIM signals).
pub const STORM_ORIGINS_MAX: usize = 64;
/// Most sightings (distinct services per environment) the store hands to [`observe`].
pub const SIGHTINGS_MAX: usize = 10_000;

/// When the breaker opens and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerConfig {
    /// Opens when more than this many distinct services alert within `window`.
    pub open_services: u32,
    /// Or when more than this percentage of the catalog's services do (`None`: not used).
    pub open_catalog_percent: Option<u32>,
    /// Closes once at most this many services alert within `window` ...
    pub close_services: u32,
    /// ... for this long without interruption.
    pub cooldown: chrono::Duration,
    /// The sliding window in which distinct services are counted.
    pub window: chrono::Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            open_services: 10,
            open_catalog_percent: None,
            close_services: 5,
            cooldown: chrono::Duration::minutes(10),
            window: chrono::Duration::minutes(5),
        }
    }
}

impl BreakerConfig {
    /// The opening threshold: the lower of `open_services` and the catalog
    /// percentage (rounded up), so whichever is reached first opens it.
    pub fn open_threshold(&self, catalog_services: usize) -> u32 {
        let by_count = self.open_services;
        match self.open_catalog_percent {
            Some(p) => {
                let n = u64::try_from(catalog_services).unwrap_or(u64::MAX);
                let pct = (n.saturating_mul(u64::from(p))).div_ceil(100);
                by_count.min(u32::try_from(pct).unwrap_or(u32::MAX))
            }
            None => by_count,
        }
    }
}

/// The last time a service alerted in an environment (what the store keeps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    pub service: String,
    pub seen_at: DateTime<Utc>,
}

/// One environment's breaker, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerState {
    pub open: bool,
    /// When the breaker last changed state.
    pub since: DateTime<Utc>,
    /// Identifies the storm (`storm:<environment>:<opened at, epoch ms>`); kept after closing.
    #[serde(default)]
    pub storm_id: Option<String>,
    /// The run whose event opened the breaker.
    #[serde(default)]
    pub opened_by: Option<RunId>,
    /// While open: since when the count has stayed at or below the closing threshold.
    #[serde(default)]
    pub quiet_since: Option<DateTime<Utc>>,
    /// The last event the breaker observed (the sightings were exact since then).
    pub observed_at: DateTime<Utc>,
    /// Distinct services counted at the last observation, and the storm's peak.
    #[serde(default)]
    pub services: u32,
    #[serde(default)]
    pub peak_services: u32,
    /// Distinct origins seen during the storm (bounded by [`STORM_ORIGINS_MAX`]).
    #[serde(default)]
    pub origins: BTreeSet<String>,
    /// The run whose ticket is the storm's umbrella incident (planned once per storm).
    #[serde(default)]
    pub umbrella_run: Option<RunId>,
    /// The run that declared the umbrella's major incident, if any.
    #[serde(default)]
    pub umbrella_mim_run: Option<RunId>,
    /// The last major incident executed in this environment, for any service:
    /// the umbrella does not declare a second one while it is open.
    #[serde(default)]
    pub last_mim_at: Option<DateTime<Utc>>,
}

impl BreakerState {
    /// A closed breaker that has never seen anything.
    pub fn closed(now: DateTime<Utc>) -> Self {
        BreakerState {
            open: false,
            since: now,
            storm_id: None,
            opened_by: None,
            quiet_since: None,
            observed_at: now,
            services: 0,
            peak_services: 0,
            origins: BTreeSet::new(),
            umbrella_run: None,
            umbrella_mim_run: None,
            last_mim_at: None,
        }
    }
}

/// Which way the breaker moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerPosition {
    Open,
    Closed,
}

impl BreakerPosition {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerPosition::Open => "open",
            BreakerPosition::Closed => "closed",
        }
    }
}

/// A change of state, recorded (table, metric, log) by the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub to: BreakerPosition,
    pub at: DateTime<Utc>,
    /// Distinct services alerting within the window at the transition.
    pub services: u32,
    /// The threshold crossed (opening or closing).
    pub threshold: u32,
    pub storm_id: String,
    /// Why, in words.
    pub reason: String,
}

/// What one observation produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub state: BreakerState,
    pub transition: Option<Transition>,
    /// Distinct services alerting within the window, this event included.
    pub services: u32,
    /// The opening threshold in force.
    pub open_threshold: u32,
}

/// Distinct services with a sighting in `(at - window, at]`.
fn count_at(
    sightings: &BTreeMap<&str, DateTime<Utc>>,
    at: DateTime<Utc>,
    w: chrono::Duration,
) -> usize {
    sightings
        .values()
        .filter(|t| **t > at - w && **t <= at)
        .count()
}

/// The event the breaker observes.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    pub service: &'a str,
    pub origin: &'a str,
    pub run_id: &'a RunId,
}

/// Observes one event (`current`; `None` for a pure time check) at `now`,
/// given the stored sightings of the environment (last sighting per service,
/// the current event not yet included). `open_threshold` is
/// [`BreakerConfig::open_threshold`] for the catalog in force.
pub fn observe(
    cfg: &BreakerConfig,
    open_threshold: u32,
    environment: &str,
    stored: Option<&BreakerState>,
    sightings: &[Sighting],
    current: Option<Current<'_>>,
    now: DateTime<Utc>,
) -> Observation {
    let mut state = stored.cloned().unwrap_or_else(|| BreakerState::closed(now));
    let before: BTreeMap<&str, DateTime<Utc>> = sightings
        .iter()
        .take(SIGHTINGS_MAX)
        .map(|s| (s.service.as_str(), s.seen_at))
        .collect();
    let mut with_current = before.clone();
    if let Some(c) = current {
        with_current.insert(c.service, now);
    }
    let services = u32::try_from(count_at(&with_current, now, cfg.window)).unwrap_or(u32::MAX);
    let mut transition = None;

    if !state.open {
        if services > open_threshold {
            let storm_id = format!("storm:{environment}:{}", now.timestamp_millis());
            transition = Some(Transition {
                to: BreakerPosition::Open,
                at: now,
                services,
                threshold: open_threshold,
                storm_id: storm_id.clone(),
                reason: format!(
                    "{services} services alerting in {environment} within {}s, more than {open_threshold}",
                    cfg.window.num_seconds()
                ),
            });
            state = BreakerState {
                open: true,
                since: now,
                storm_id: Some(storm_id),
                opened_by: current.map(|c| c.run_id.clone()),
                quiet_since: None,
                observed_at: now,
                services,
                peak_services: services,
                origins: BTreeSet::new(),
                umbrella_run: None,
                umbrella_mim_run: None,
                last_mim_at: state.last_mim_at,
            };
        }
        // A closed breaker that stays closed is not rewritten: no write per event.
    } else {
        // No event arrived between the last observation and now, so the stored
        // sightings describe that interval exactly: the count fell to the
        // closing threshold when the (close+1)-th most recent of them expired.
        let quiet_since = if services <= cfg.close_services {
            let mut times: Vec<DateTime<Utc>> = before.values().copied().collect();
            times.sort_unstable_by(|a, b| b.cmp(a));
            let close = usize::try_from(cfg.close_services).unwrap_or(usize::MAX);
            let dropped_at = times
                .get(close)
                .map_or(state.since, |t| *t + cfg.window)
                .max(state.observed_at.min(now));
            Some(state.quiet_since.unwrap_or(dropped_at).min(now))
        } else {
            None
        };
        state.services = services;
        state.peak_services = state.peak_services.max(services);
        state.observed_at = state.observed_at.max(now);
        state.quiet_since = quiet_since;
        if let Some(q) = quiet_since
            && now - q >= cfg.cooldown
        {
            let storm_id = state.storm_id.clone().unwrap_or_default();
            transition = Some(Transition {
                to: BreakerPosition::Closed,
                at: now,
                services,
                threshold: cfg.close_services,
                storm_id,
                reason: format!(
                    "at most {} services alerting in {environment} for {}s (now {services})",
                    cfg.close_services,
                    cfg.cooldown.num_seconds()
                ),
            });
            state.open = false;
            state.since = now;
            state.quiet_since = None;
        }
    }
    if state.open
        && let Some(c) = current
        && state.origins.len() < STORM_ORIGINS_MAX
    {
        state.origins.insert(c.origin.to_owned());
    }
    Observation {
        state,
        transition,
        services,
        open_threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            open_services: 3,
            open_catalog_percent: None,
            close_services: 1,
            cooldown: chrono::Duration::seconds(100),
            window: chrono::Duration::seconds(60),
        }
    }

    /// Feeds events (time, service) through the breaker, keeping sightings as the store does.
    fn feed(events: &[(i64, &str)]) -> (BreakerState, Vec<Transition>) {
        let mut state: Option<BreakerState> = None;
        let mut sightings: Vec<Sighting> = Vec::new();
        let mut transitions = Vec::new();
        for (i, (at, svc)) in events.iter().enumerate() {
            let run_id = RunId(format!("run_{i}"));
            let o = observe(
                &cfg(),
                cfg().open_threshold(0),
                "production",
                state.as_ref(),
                &sightings,
                Some(Current {
                    service: svc,
                    origin: "prometheus",
                    run_id: &run_id,
                }),
                t(*at),
            );
            sightings.retain(|s| s.service != *svc);
            sightings.push(Sighting {
                service: (*svc).to_owned(),
                seen_at: t(*at),
            });
            transitions.extend(o.transition);
            state = Some(o.state);
        }
        (state.unwrap(), transitions)
    }

    #[test]
    fn opens_above_the_threshold_within_the_window_only() {
        let (s, tr) = feed(&[(0, "a"), (10, "b"), (20, "c")]);
        assert!(!s.open && tr.is_empty(), "3 is not more than 3");
        let (s, tr) = feed(&[(0, "a"), (10, "b"), (20, "c"), (30, "d")]);
        assert!(s.open);
        assert_eq!(tr.len(), 1);
        assert_eq!((tr[0].services, tr[0].threshold), (4, 3));
        assert_eq!(s.opened_by, Some(RunId("run_3".into())));
        // "a" left the window (60 s) before "d" arrived.
        let (s, _) = feed(&[(0, "a"), (10, "b"), (20, "c"), (61, "d")]);
        assert!(!s.open);
    }

    #[test]
    fn closes_only_after_the_cooldown_below_the_lower_threshold() {
        let storm = [(0, "a"), (1, "b"), (2, "c"), (3, "d")];
        // One service keeps alerting (1 <= close threshold): quiet since the
        // others expired (2 + 60 = 62), closes at 162 or later.
        let mut ev: Vec<(i64, &str)> = storm.to_vec();
        ev.extend([(100, "a"), (150, "a")]);
        let (s, tr) = feed(&ev);
        assert!(s.open, "cool-down not over");
        assert_eq!(s.quiet_since, Some(t(62)));
        ev.push((170, "a"));
        let (s, tr2) = feed(&ev);
        assert!(!s.open);
        assert_eq!(tr.len(), 1);
        assert_eq!(tr2.len(), 2);
        assert_eq!(tr2[1].to, BreakerPosition::Closed);
    }

    #[test]
    fn a_new_burst_during_the_cooldown_restarts_it() {
        let (s, _) = feed(&[
            (0, "a"),
            (1, "b"),
            (2, "c"),
            (3, "d"),
            (100, "a"),
            (120, "b"), // two services: above the closing threshold
            (200, "a"),
        ]);
        // Quiet again once "a"@100 expired (160): only "b"@120 was left.
        assert!(s.open, "quiet only since 160");
        assert_eq!(s.quiet_since, Some(t(160)));
    }

    #[test]
    fn catalog_percentage_lowers_the_threshold() {
        let c = BreakerConfig {
            open_catalog_percent: Some(25),
            ..cfg()
        };
        assert_eq!(c.open_threshold(4), 1);
        assert_eq!(c.open_threshold(100), 3, "the count is lower");
        assert_eq!(cfg().open_threshold(4), 3);
    }

    #[test]
    fn origins_are_collected_while_open_and_bounded() {
        let mut state = None;
        let mut sightings = Vec::new();
        for i in 0..(STORM_ORIGINS_MAX + 10) {
            let svc = format!("s{i}");
            let run_id = RunId(format!("run_{i}"));
            let origin = format!("origin-{i}");
            let o = observe(
                &cfg(),
                3,
                "production",
                state.as_ref(),
                &sightings,
                Some(Current {
                    service: &svc,
                    origin: &origin,
                    run_id: &run_id,
                }),
                t(i64::try_from(i).unwrap()),
            );
            sightings.push(Sighting {
                service: svc,
                seen_at: t(i64::try_from(i).unwrap()),
            });
            state = Some(o.state);
        }
        let s = state.unwrap();
        assert!(s.open);
        assert_eq!(s.origins.len(), STORM_ORIGINS_MAX);
    }
}
