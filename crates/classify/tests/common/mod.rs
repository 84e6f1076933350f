//! Fixtures shared by the integration tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Utc};
use tg_classify::TeamContext;
use tg_model::{
    AlertStatus, Environment, Fingerprint, Impact, ImpactLevel, LogPointer, NormalizedEvent, Source,
};

pub fn event(level: ImpactLevel) -> NormalizedEvent {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    NormalizedEvent {
        source: Source::Alertmanager,
        origin: "prometheus".to_owned(),
        status: AlertStatus::Firing,
        environment: Environment::Production,
        service: "checkout".to_owned(),
        component: Some("api".to_owned()),
        alert_name: "HighErrorRate".to_owned(),
        summary: "error rate above 5% on checkout api".to_owned(),
        error_signature: "error rate above <n>% on checkout api".to_owned(),
        fingerprint: Fingerprint::from("0123456789abcdef0123456789abcdef"),
        correlation_ids: BTreeMap::from([("alertmanager".to_owned(), "abc123".to_owned())]),
        impact: Impact {
            level,
            evidence: vec!["severity=critical".to_owned()],
        },
        log_pointers: vec![LogPointer {
            label: "generator".to_owned(),
            url: "https://prometheus.example/graph?g0.expr=rate".to_owned(),
        }],
        labels: BTreeMap::from([("team".to_owned(), "payments".to_owned())]),
        occurred_at: at,
        received_at: at,
        sender: None,
    }
}

pub fn teams() -> TeamContext {
    TeamContext {
        known_teams: BTreeSet::from([
            "payments".to_owned(),
            "sre".to_owned(),
            "platform".to_owned(),
        ]),
        service_team: Some("payments".to_owned()),
        default_team: "sre".to_owned(),
    }
}

pub fn known() -> BTreeSet<String> {
    teams().known_teams
}
