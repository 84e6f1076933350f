//! The service catalog: which teams exist, which services they own, how far each
//! service may be automated, and the confidence thresholds of its gates.
//!
//! It is one section of the YAML configuration file, parsed by the config crate;
//! this module only holds the types and their pure validation. SREs tune these
//! values; the gate logic itself lives in the Cedar policy.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize};
use tg_model::{ActionKind, AutonomyLevel};

/// Most services a catalog may list.
pub const SERVICES_MAX: usize = 10_000;
/// Most teams a catalog may list.
pub const TEAMS_MAX: usize = 1_000;
/// Most aliases one service may have.
pub const ALIASES_MAX: usize = 32;
/// Longest team, service or alias name, in bytes.
pub const NAME_BYTES_MAX: usize = 128;
/// Longest team description, in bytes.
pub const DESCRIPTION_BYTES_MAX: usize = 512;
/// Highest service tier accepted (tiers run 0..=TIER_MAX, 0 or 1 being most critical).
pub const TIER_MAX: u8 = 5;

/// A confidence threshold in `[0, 1]`. Written in YAML as a number (`0.8`) or a
/// decimal string (`"0.80"`); validation rejects anything outside `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Threshold(pub f64);

impl Threshold {
    /// The threshold in basis points (0..=10000), the integer form Cedar
    /// compares, rounded toward refusal (up: `0.70004` needs 7001). Only
    /// meaningful once validated; out-of-range values are clamped.
    pub fn bp(self) -> i64 {
        if !self.0.is_finite() {
            // Fail closed: an unvalidated NaN threshold lets nothing through.
            return 10_001;
        }
        tg_model::classification::ceil_bp(self.0)
    }

    fn is_valid(self) -> bool {
        self.0.is_finite() && (0.0..=1.0).contains(&self.0)
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Threshold(n)),
            Raw::Text(s) => s.trim().parse::<f64>().map(Threshold).map_err(|_| {
                serde::de::Error::custom(format!(
                    "threshold {s:?} is not a number (expected e.g. 0.80)"
                ))
            }),
        }
    }
}

/// From which impact the source reports a model's "no" (to a ticket or a
/// page) goes to review instead of being skipped. `off`: the model may always
/// decline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineFloor {
    Low,
    Medium,
    High,
    #[default]
    Critical,
    Off,
}

impl DeclineFloor {
    /// The rank compared with `context.source.impact` (low 1 .. critical 4; off 5: never).
    pub fn rank(self) -> i64 {
        match self {
            DeclineFloor::Low => 1,
            DeclineFloor::Medium => 2,
            DeclineFloor::High => 3,
            DeclineFloor::Critical => 4,
            DeclineFloor::Off => 5,
        }
    }

    fn is_default(&self) -> bool {
        *self == DeclineFloor::default()
    }
}

/// The three confidence thresholds, and the floor of a model's "no".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    #[serde(default = "Thresholds::default_ticket")]
    pub ticket: Threshold,
    #[serde(default = "Thresholds::default_page")]
    pub page: Threshold,
    #[serde(default = "Thresholds::default_mim")]
    pub mim: Threshold,
    /// A source impact at or above this (in production) sends a declined
    /// ticket or page to review (`ticket.model_declined`, `page.model_declined`).
    #[serde(default, skip_serializing_if = "DeclineFloor::is_default")]
    pub declined: DeclineFloor,
}

impl Thresholds {
    fn default_ticket() -> Threshold {
        Threshold(0.70)
    }
    fn default_page() -> Threshold {
        Threshold(0.80)
    }
    fn default_mim() -> Threshold {
        Threshold(0.85)
    }

    pub fn get(&self, action: ActionKind) -> Threshold {
        match action {
            ActionKind::Ticket => self.ticket,
            ActionKind::Page => self.page,
            ActionKind::Mim => self.mim,
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            ticket: Self::default_ticket(),
            page: Self::default_page(),
            mim: Self::default_mim(),
            declined: DeclineFloor::default(),
        }
    }
}

/// Per-service threshold overrides; an absent field falls back to the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<Threshold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Threshold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mim: Option<Threshold>,
    /// Lowers or raises the floor of a model's "no" for this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declined: Option<DeclineFloor>,
}

impl ThresholdOverrides {
    /// The effective thresholds: each override, or the default.
    pub fn over(&self, defaults: &Thresholds) -> Thresholds {
        Thresholds {
            ticket: self.ticket.unwrap_or(defaults.ticket),
            page: self.page.unwrap_or(defaults.page),
            mim: self.mim.unwrap_or(defaults.mim),
            declined: self.declined.unwrap_or(defaults.declined),
        }
    }
}

/// What applies to services the catalog does not list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Autonomy of unlisted services; `shadow` unless said otherwise.
    #[serde(default = "Defaults::default_autonomy")]
    pub autonomy: AutonomyLevel,
    /// The team that owns unlisted services: their actions are routed to it,
    /// assigned to it and charged to its paging budget. Absent: an unlisted
    /// service has no owner, and each of its actions goes to review (a model
    /// never picks who is woken). Must be a key of `teams`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

impl Defaults {
    fn default_autonomy() -> AutonomyLevel {
        AutonomyLevel::Shadow
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            thresholds: Thresholds::default(),
            autonomy: Self::default_autonomy(),
            team: None,
        }
    }
}

/// A known team. The key in `teams` is its name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamEntry {
    /// At most [`DESCRIPTION_BYTES_MAX`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A listed service. The key in `services` is its canonical name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// Must be a key of `teams`.
    pub team: String,
    pub autonomy: AutonomyLevel,
    /// 0..=[`TIER_MAX`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<u8>,
    /// Per-service kill switch: nothing is executed or queued for it.
    #[serde(default)]
    pub paused: bool,
    /// Other names sources use for this service; unique across the catalog.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub thresholds: ThresholdOverrides,
}

/// The service catalog section of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub teams: BTreeMap<String, TeamEntry>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceEntry>,
}

impl Default for Catalog {
    /// A catalog that executes nothing: one `platform-ops` team, no services,
    /// unlisted services in shadow mode, thresholds 0.70 / 0.80 / 0.85.
    fn default() -> Self {
        Catalog {
            defaults: Defaults::default(),
            teams: BTreeMap::from([("platform-ops".to_owned(), TeamEntry::default())]),
            services: BTreeMap::new(),
        }
    }
}

/// One problem found by [`Catalog::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CatalogIssue {
    /// Where, as keys joined by `.` with sequence indexes as `[n]`:
    /// `services.checkout.team`, `services.checkout.aliases[1]`.
    pub path: String,
    /// What is wrong, naming the offending value.
    pub message: String,
}

impl CatalogIssue {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        CatalogIssue {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl Catalog {
    /// Every problem in the catalog, in a stable order (empty when valid).
    pub fn validate(&self) -> Vec<CatalogIssue> {
        let mut issues = Vec::new();

        check_thresholds(
            "defaults.thresholds",
            &self.defaults.thresholds,
            &mut issues,
        );

        if self.teams.len() > TEAMS_MAX {
            issues.push(CatalogIssue::new(
                "teams",
                format!(
                    "{} teams listed, at most {TEAMS_MAX} allowed",
                    self.teams.len()
                ),
            ));
        }
        for (name, team) in &self.teams {
            let path = format!("teams.{name}");
            check_name(&path, "team name", name, &mut issues);
            if let Some(d) = &team.description
                && d.len() > DESCRIPTION_BYTES_MAX
            {
                issues.push(CatalogIssue::new(
                    format!("{path}.description"),
                    format!(
                        "description is {} bytes, at most {DESCRIPTION_BYTES_MAX} allowed",
                        d.len()
                    ),
                ));
            }
        }

        if let Some(team) = &self.defaults.team
            && !self.teams.contains_key(team)
        {
            issues.push(CatalogIssue::new(
                "defaults.team",
                format!(
                    "unknown team {team:?} (known teams: {})",
                    self.teams.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }

        if self.services.len() > SERVICES_MAX {
            issues.push(CatalogIssue::new(
                "services",
                format!(
                    "{} services listed, at most {SERVICES_MAX} allowed",
                    self.services.len()
                ),
            ));
        }
        // Every name a service can be looked up by, with the path that claims it.
        let mut claimed: BTreeMap<&str, String> = self
            .services
            .keys()
            .map(|name| (name.as_str(), format!("services.{name}")))
            .collect();
        for (name, svc) in &self.services {
            let path = format!("services.{name}");
            check_name(&path, "service name", name, &mut issues);
            if !self.teams.contains_key(&svc.team) {
                issues.push(CatalogIssue::new(
                    format!("{path}.team"),
                    format!(
                        "unknown team {:?} (known teams: {})",
                        svc.team,
                        self.teams.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            if let Some(tier) = svc.tier
                && tier > TIER_MAX
            {
                issues.push(CatalogIssue::new(
                    format!("{path}.tier"),
                    format!("tier {tier} is out of range 0..={TIER_MAX}"),
                ));
            }
            if svc.aliases.len() > ALIASES_MAX {
                issues.push(CatalogIssue::new(
                    format!("{path}.aliases"),
                    format!(
                        "{} aliases listed, at most {ALIASES_MAX} allowed",
                        svc.aliases.len()
                    ),
                ));
            }
            for (i, alias) in svc.aliases.iter().enumerate() {
                let alias_path = format!("{path}.aliases[{i}]");
                check_name(&alias_path, "alias", alias, &mut issues);
                match claimed.get(alias.as_str()) {
                    Some(owner) => issues.push(CatalogIssue::new(
                        alias_path,
                        format!("alias {alias:?} is already used by {owner}"),
                    )),
                    None => {
                        claimed.insert(alias.as_str(), alias_path);
                    }
                }
            }
            let t = &svc.thresholds;
            for (field, value) in [("ticket", t.ticket), ("page", t.page), ("mim", t.mim)] {
                if let Some(v) = value {
                    check_threshold(&format!("{path}.thresholds.{field}"), v, &mut issues);
                }
            }
        }
        issues
    }

    /// The set of known team names.
    pub fn known_teams(&self) -> BTreeSet<String> {
        self.teams.keys().cloned().collect()
    }

    /// The canonical name of a service given its name or one of its aliases.
    pub fn canonical_service(&self, name: &str) -> Option<&str> {
        if let Some((key, _)) = self.services.get_key_value(name) {
            return Some(key.as_str());
        }
        self.services
            .iter()
            .find(|(_, svc)| svc.aliases.iter().any(|a| a == name))
            .map(|(key, _)| key.as_str())
    }

    /// The entry of a service, by name or alias.
    pub fn service(&self, name: &str) -> Option<&ServiceEntry> {
        self.canonical_service(name)
            .and_then(|key| self.services.get(key))
    }

    /// The autonomy level of a service; the default for unlisted services.
    pub fn autonomy_for(&self, service: &str) -> AutonomyLevel {
        self.service(service)
            .map_or(self.defaults.autonomy, |svc| svc.autonomy)
    }

    /// The owning team of a listed service.
    pub fn team_for(&self, service: &str) -> Option<&str> {
        self.service(service).map(|svc| svc.team.as_str())
    }

    /// The team that owns a service: its catalog team, or `defaults.team` for
    /// an unlisted service; `None` when neither exists. This team, never the
    /// model's recommendation, is paged, assigned and charged.
    pub fn owner_team(&self, service: &str) -> Option<&str> {
        self.team_for(service).or(self.defaults.team.as_deref())
    }

    /// Whether the service's kill switch is on (unlisted services are not paused).
    pub fn is_paused(&self, service: &str) -> bool {
        self.service(service).is_some_and(|svc| svc.paused)
    }

    /// The effective thresholds of a service; the defaults for unlisted services.
    pub fn thresholds_for(&self, service: &str) -> Thresholds {
        self.service(service)
            .map_or(self.defaults.thresholds, |svc| {
                svc.thresholds.over(&self.defaults.thresholds)
            })
    }
}

fn check_thresholds(path: &str, t: &Thresholds, issues: &mut Vec<CatalogIssue>) {
    check_threshold(&format!("{path}.ticket"), t.ticket, issues);
    check_threshold(&format!("{path}.page"), t.page, issues);
    check_threshold(&format!("{path}.mim"), t.mim, issues);
}

fn check_threshold(path: &str, value: Threshold, issues: &mut Vec<CatalogIssue>) {
    if !value.is_valid() {
        issues.push(CatalogIssue::new(
            path,
            format!("threshold {} is outside [0, 1]", value.0),
        ));
    }
}

fn check_name(path: &str, what: &str, name: &str, issues: &mut Vec<CatalogIssue>) {
    if name.trim().is_empty() {
        issues.push(CatalogIssue::new(path, format!("{what} {name:?} is empty")));
    } else if name.len() > NAME_BYTES_MAX {
        issues.push(CatalogIssue::new(
            path,
            format!(
                "{what} {:?}... is {} bytes, at most {NAME_BYTES_MAX} allowed",
                name.chars().take(32).collect::<String>(),
                name.len()
            ),
        ));
    } else if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        issues.push(CatalogIssue::new(
            path,
            format!("{what} {name:?} contains white space or control characters"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_bp_rounds_and_fails_closed_on_nan() {
        assert_eq!(Threshold(0.8).bp(), 8000);
        assert_eq!(Threshold(0.745).bp(), 7450);
        assert_eq!(Threshold(f64::NAN).bp(), 10_001);
    }

    #[test]
    fn default_catalog_is_valid_and_executes_nothing() {
        let c = Catalog::default();
        assert!(c.validate().is_empty());
        assert_eq!(c.known_teams(), BTreeSet::from(["platform-ops".to_owned()]));
        assert_eq!(c.autonomy_for("anything"), AutonomyLevel::Shadow);
    }
}
