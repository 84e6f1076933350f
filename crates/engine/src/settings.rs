//! Storm-control settings a step reads (from configuration).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tg_model::NormalizedEvent;
use tg_storm::{BreakerConfig, BucketConfig, GroupField};

/// Storm-control settings the step needs (from configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StormSettings {
    /// Same fingerprint within this window: suppressed (unless overridden below).
    pub dedup_window: chrono::Duration,
    /// Per-service suppression windows, by the service name events carry.
    pub dedup_service_windows: BTreeMap<String, chrono::Duration>,
    /// Per-source suppression windows, by source (`alertmanager`, `splunk`, ...).
    pub dedup_source_windows: BTreeMap<String, chrono::Duration>,
    /// Window in which events from distinct senders count as independent signals.
    pub signal_window: chrono::Duration,
    /// The lowest source impact at which an event is a signal ([`Self::is_signal`]).
    pub signal_min_impact: tg_model::ImpactLevel,
    /// At most one MIM per service within this window.
    pub mim_window: chrono::Duration,
    /// Paging budget per team.
    pub team_bucket: BucketConfig,
    /// Paging budget across all teams.
    pub global_bucket: BucketConfig,
    /// Paging budget per service (unless overridden in `service_buckets`).
    pub service_bucket: BucketConfig,
    /// Per-service paging budgets, by the service name events carry.
    pub service_buckets: BTreeMap<String, BucketConfig>,
    /// Storm-mode circuit breaker, one per environment.
    pub breaker: BreakerConfig,
    /// Team of the storm's umbrella incident; `None`: the team the model
    /// recommended for the event that carries it.
    pub umbrella_team: Option<String>,
    /// Which alerts share one incident.
    pub group: GroupSettings,
    /// What a resolution closes remotely.
    pub resolve: ResolveSettings,
}

/// Grouping settings (`storm.group`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSettings {
    /// The fields whose values make the group key; the environment is always one.
    /// Empty: no grouping (each fingerprint is its own incident).
    pub by: Vec<GroupField>,
    /// A group stays open this long after its last new alert.
    pub window: chrono::Duration,
    /// Work notes one group's ticket receives at most; later alerts are suppressed.
    pub notes_max: u32,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            by: vec![GroupField::Service],
            window: chrono::Duration::minutes(30),
            notes_max: 50,
        }
    }
}

/// What a resolution closes (`actions.resolve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveSettings {
    /// Resolve the PagerDuty alert when the group's last alert resolves.
    pub page: bool,
    /// Set the ServiceNow incident Resolved too (many teams leave that to people).
    pub ticket: bool,
}

impl Default for ResolveSettings {
    fn default() -> Self {
        ResolveSettings {
            page: true,
            ticket: false,
        }
    }
}

impl StormSettings {
    /// The suppression window of an event: its service's, else its source's, else the default.
    pub fn dedup_window_for(&self, event: &NormalizedEvent) -> chrono::Duration {
        self.dedup_service_windows
            .get(&event.service)
            .or_else(|| self.dedup_source_windows.get(event.source.as_str()))
            .copied()
            .unwrap_or(self.dedup_window)
    }

    /// Whether an event of source impact `level` is a signal: at
    /// `signal_min_impact` or above, or `unknown` (a source without a
    /// severity scale, such as a CloudWatch alarm, is not filtered by it).
    pub fn is_signal(&self, level: tg_model::ImpactLevel) -> bool {
        level == tg_model::ImpactLevel::Unknown || level >= self.signal_min_impact
    }

    /// The paging budget of a service: its override, or the per-service default.
    pub fn service_bucket_for(&self, service: &str) -> BucketConfig {
        self.service_buckets
            .get(service)
            .copied()
            .unwrap_or(self.service_bucket)
    }
}

impl Default for StormSettings {
    fn default() -> Self {
        StormSettings {
            dedup_window: chrono::Duration::minutes(10),
            dedup_service_windows: BTreeMap::new(),
            dedup_source_windows: BTreeMap::new(),
            signal_window: chrono::Duration::minutes(15),
            signal_min_impact: tg_model::ImpactLevel::High,
            mim_window: chrono::Duration::hours(1),
            team_bucket: BucketConfig {
                burst: 3,
                per_hour: 6,
            },
            global_bucket: BucketConfig {
                burst: 10,
                per_hour: 30,
            },
            service_bucket: BucketConfig {
                burst: 2,
                per_hour: 6,
            },
            service_buckets: BTreeMap::new(),
            breaker: BreakerConfig::default(),
            umbrella_team: None,
            group: GroupSettings::default(),
            resolve: ResolveSettings::default(),
        }
    }
}
