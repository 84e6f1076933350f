//! The rules classifier: deterministic, offline, the default.
//!
//! Pure: an ordered list of rules from configuration, first match wins, a
//! fallback for the rest. Its answer is serialized and validated through the
//! same contract as a model's, so a misconfigured team is rejected the same way.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use tg_model::{
    Classification, ClassifierInfo, Environment, ImpactLevel, NormalizedEvent, Severity,
};

use crate::contract::{self, reason};
use crate::{Classifier, ClassifyOutcome, TeamContext};

/// Maximum rules in a configuration (the fallback not counted).
pub const RULES_MAX: usize = 256;
/// Maximum bytes of one regex pattern.
pub const REGEX_BYTES_MAX: usize = 1024;
/// Maximum bytes of a compiled regex program (bounds memory per rule).
pub const REGEX_COMPILED_BYTES_MAX: usize = 1024 * 1024;
/// Maximum bytes of a rule name.
pub const RULE_NAME_BYTES_MAX: usize = 128;
/// Maximum entries in a rule's `environments` or `services` list.
pub const MATCH_LIST_MAX: usize = 256;

/// The rules file: ordered rules, then what applies when none matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    pub fallback: Then,
}

/// One rule: all present conditions of `when` must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default)]
    pub when: When,
    pub then: Then,
}

/// Conditions of a rule; an absent condition always holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Unanchored regex over the alert name (anchor it with `^...$` if needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_name_regex: Option<String>,
    /// Unanchored regex over the summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_regex: Option<String>,
    /// The event's impact level is at least this (`unknown` is the lowest level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact_at_least: Option<ImpactLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<Vec<Environment>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
}

/// What a matching rule answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Then {
    pub classification: Severity,
    pub confidence: f64,
    pub requires_ticket: bool,
    pub requires_paging: bool,
    pub requires_mim: bool,
    /// Overrides the service owner and the default team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// One thing wrong with a rules configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleProblem {
    #[error("{count} rules, more than {RULES_MAX}")]
    TooManyRules { count: usize },
    #[error("rule #{index} has an empty name or one longer than {RULE_NAME_BYTES_MAX} bytes")]
    BadName { index: usize },
    #[error("rule {rule:?} appears more than once")]
    DuplicateName { rule: String },
    #[error("rule {rule:?}: {field} is {len} bytes, more than {REGEX_BYTES_MAX}")]
    RegexTooLong {
        rule: String,
        field: &'static str,
        len: usize,
    },
    #[error("rule {rule:?}: {field} is not a valid regex: {error}")]
    InvalidRegex {
        rule: String,
        field: &'static str,
        error: String,
    },
    #[error("rule {rule:?}: confidence {value} is not in [0, 1]")]
    ConfidenceOutOfRange { rule: String, value: f64 },
    #[error("rule {rule:?}: {field} has {len} entries, more than {MATCH_LIST_MAX}")]
    ListTooLong {
        rule: String,
        field: &'static str,
        len: usize,
    },
}

/// Why a rules configuration was refused: every problem, not just the first.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid rules: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct RulesError {
    pub problems: Vec<RuleProblem>,
}

struct CompiledRule {
    name: String,
    alert_name: Option<Regex>,
    summary: Option<Regex>,
    impact_at_least: Option<ImpactLevel>,
    environments: Option<Vec<Environment>>,
    services: Option<Vec<String>>,
    then: Then,
}

impl CompiledRule {
    fn matches(&self, event: &NormalizedEvent) -> bool {
        self.alert_name
            .as_ref()
            .is_none_or(|r| r.is_match(&event.alert_name))
            && self
                .summary
                .as_ref()
                .is_none_or(|r| r.is_match(&event.summary))
            && self
                .impact_at_least
                .is_none_or(|min| event.impact.level >= min)
            && self
                .environments
                .as_ref()
                .is_none_or(|envs| envs.contains(&event.environment))
            && self
                .services
                .as_ref()
                .is_none_or(|svcs| svcs.contains(&event.service))
    }
}

/// The deterministic classifier. Regexes are compiled once, in [`RulesClassifier::new`].
pub struct RulesClassifier {
    rules: Vec<CompiledRule>,
    fallback: Then,
}

impl std::fmt::Debug for RulesClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulesClassifier")
            .field(
                "rules",
                &self
                    .rules
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Name the fallback reports in rationales.
pub const FALLBACK_RULE_NAME: &str = "fallback";

impl RulesClassifier {
    /// Validates and compiles a configuration; returns every problem found.
    pub fn new(config: RulesConfig) -> Result<Self, RulesError> {
        let mut problems = Vec::new();
        if config.rules.len() > RULES_MAX {
            problems.push(RuleProblem::TooManyRules {
                count: config.rules.len(),
            });
        }
        check_confidence(
            FALLBACK_RULE_NAME,
            config.fallback.confidence,
            &mut problems,
        );
        let mut seen = std::collections::BTreeSet::new();
        let mut rules = Vec::with_capacity(config.rules.len());
        for (index, rule) in config.rules.into_iter().enumerate() {
            if rule.name.is_empty() || rule.name.len() > RULE_NAME_BYTES_MAX {
                problems.push(RuleProblem::BadName { index });
            }
            if !seen.insert(rule.name.clone()) {
                problems.push(RuleProblem::DuplicateName {
                    rule: rule.name.clone(),
                });
            }
            check_confidence(&rule.name, rule.then.confidence, &mut problems);
            for (field, list_len) in [
                (
                    "environments",
                    rule.when.environments.as_ref().map(Vec::len),
                ),
                ("services", rule.when.services.as_ref().map(Vec::len)),
            ] {
                if let Some(len) = list_len
                    && len > MATCH_LIST_MAX
                {
                    problems.push(RuleProblem::ListTooLong {
                        rule: rule.name.clone(),
                        field,
                        len,
                    });
                }
            }
            let alert_name = compile(
                &rule.name,
                "alert_name_regex",
                rule.when.alert_name_regex.as_deref(),
                &mut problems,
            );
            let summary = compile(
                &rule.name,
                "summary_regex",
                rule.when.summary_regex.as_deref(),
                &mut problems,
            );
            rules.push(CompiledRule {
                name: rule.name,
                alert_name,
                summary,
                impact_at_least: rule.when.impact_at_least,
                environments: rule.when.environments,
                services: rule.when.services,
                then: rule.then,
            });
        }
        if problems.is_empty() {
            Ok(RulesClassifier {
                rules,
                fallback: config.fallback,
            })
        } else {
            Err(RulesError { problems })
        }
    }

    /// The configuration [`RulesClassifier::default_rules`] compiles.
    pub fn default_config() -> RulesConfig {
        let then = |classification, confidence, ticket, page, mim| Then {
            classification,
            confidence,
            requires_ticket: ticket,
            requires_paging: page,
            requires_mim: mim,
            team: None,
        };
        let at_least = |name: &str, level, then| RuleConfig {
            name: name.to_owned(),
            when: When {
                impact_at_least: Some(level),
                ..When::default()
            },
            then,
        };
        RulesConfig {
            rules: vec![
                at_least(
                    "impact-critical",
                    ImpactLevel::Critical,
                    then(Severity::Sev1, 0.92, true, true, true),
                ),
                at_least(
                    "impact-high",
                    ImpactLevel::High,
                    then(Severity::High, 0.86, true, true, false),
                ),
                at_least(
                    "impact-medium",
                    ImpactLevel::Medium,
                    then(Severity::Medium, 0.78, true, false, false),
                ),
                // `none` and `low` (`unknown` sorts below `none`, so it falls through).
                at_least(
                    "impact-low-or-none",
                    ImpactLevel::None,
                    then(Severity::Low, 0.60, false, false, false),
                ),
            ],
            // Unknown impact: a ticket, so a human looks, at a confidence the gates will doubt.
            fallback: then(Severity::Medium, 0.55, true, false, false),
        }
    }

    /// Sensible rules out of the box, driven by the source's impact level.
    pub fn default_rules() -> Self {
        let config = Self::default_config();
        let fallback = config.fallback.clone();
        // The default configuration is valid (a test checks it); should that ever
        // break, the fallback alone still answers.
        Self::new(config).unwrap_or(RulesClassifier {
            rules: Vec::new(),
            fallback,
        })
    }

    /// The name of the rule that matches `event` (`fallback` if none does).
    pub fn matching_rule(&self, event: &NormalizedEvent) -> &str {
        self.rules
            .iter()
            .find(|r| r.matches(event))
            .map_or(FALLBACK_RULE_NAME, |r| r.name.as_str())
    }

    /// The rules' answer, before contract validation. For the sandbox's model
    /// emulator, which answers with what the rules would say.
    pub fn classify_sync(&self, event: &NormalizedEvent, teams: &TeamContext) -> Classification {
        let (name, then) = self
            .rules
            .iter()
            .find(|r| r.matches(event))
            .map_or((FALLBACK_RULE_NAME, &self.fallback), |r| {
                (r.name.as_str(), &r.then)
            });
        let team = then
            .team
            .clone()
            .or_else(|| teams.service_team.clone())
            .unwrap_or_else(|| teams.default_team.clone());
        Classification {
            classification: then.classification,
            confidence: then.confidence,
            requires_ticket: then.requires_ticket,
            requires_paging: then.requires_paging,
            requires_mim: then.requires_mim,
            recommended_team: team,
            rationale: Some(contract::truncate(&format!("rule {name} matched"), 256).to_owned()),
        }
    }
}

fn check_confidence(rule: &str, value: f64, problems: &mut Vec<RuleProblem>) {
    if !value.is_finite() || !(0.0..=1.0).contains(&value) {
        problems.push(RuleProblem::ConfidenceOutOfRange {
            rule: rule.to_owned(),
            value,
        });
    }
}

fn compile(
    rule: &str,
    field: &'static str,
    pattern: Option<&str>,
    problems: &mut Vec<RuleProblem>,
) -> Option<Regex> {
    let pattern = pattern?;
    if pattern.len() > REGEX_BYTES_MAX {
        problems.push(RuleProblem::RegexTooLong {
            rule: rule.to_owned(),
            field,
            len: pattern.len(),
        });
        return None;
    }
    match RegexBuilder::new(pattern)
        .size_limit(REGEX_COMPILED_BYTES_MAX)
        .build()
    {
        Ok(regex) => Some(regex),
        Err(e) => {
            problems.push(RuleProblem::InvalidRegex {
                rule: rule.to_owned(),
                field,
                error: e.to_string(),
            });
            None
        }
    }
}

#[async_trait::async_trait]
impl Classifier for RulesClassifier {
    fn info(&self) -> ClassifierInfo {
        ClassifierInfo {
            classifier: "rules".to_owned(),
            model: None,
        }
    }

    async fn classify(&self, event: &NormalizedEvent, teams: &TeamContext) -> ClassifyOutcome {
        let answer = self.classify_sync(event, teams);
        // The rules' answer is held to the same contract as a model's.
        let (raw_output, result) = match serde_json::to_string(&answer) {
            Ok(raw) => {
                let result = contract::validate(&raw, &teams.known_teams);
                (Some(raw), result)
            }
            Err(e) => (
                None,
                Err(contract::rejection(
                    reason::NOT_JSON,
                    format!("cannot serialize the rules' answer: {e}"),
                )),
            ),
        };
        ClassifyOutcome {
            info: self.info(),
            raw_output,
            result,
            latency_ms: 0,
            usage: None,
            prompt_sha256: None,
        }
    }
}
