//! The rules classifier: defaults, ordering, team choice, configuration errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns; a failed unwrap is a failed test"
)]

extern crate triage_gate_classify as tg_classify;

mod common;

use tg_classify::rules::{RuleProblem, RulesClassifier, RulesConfig};
use tg_classify::{Classifier, Severity};
use tg_model::{Environment, ImpactLevel};

#[tokio::test]
async fn default_rules_follow_the_impact_level() {
    let rules = RulesClassifier::default_rules();
    let teams = common::teams();
    // (impact, severity, confidence, ticket, page, mim)
    let expected = [
        (
            ImpactLevel::Critical,
            Severity::Sev1,
            0.92,
            true,
            true,
            true,
        ),
        (ImpactLevel::High, Severity::High, 0.86, true, true, false),
        (
            ImpactLevel::Medium,
            Severity::Medium,
            0.78,
            true,
            false,
            false,
        ),
        (ImpactLevel::Low, Severity::Low, 0.60, false, false, false),
        (ImpactLevel::None, Severity::Low, 0.60, false, false, false),
        (
            ImpactLevel::Unknown,
            Severity::Medium,
            0.55,
            true,
            false,
            false,
        ),
    ];
    for (level, severity, confidence, ticket, page, mim) in expected {
        let outcome = rules.classify(&common::event(level), &teams).await;
        let c = outcome
            .result
            .unwrap_or_else(|r| panic!("{level:?}: {r:?}"));
        assert_eq!(c.classification, severity, "{level:?}");
        assert_eq!(c.confidence, confidence, "{level:?}");
        assert_eq!(
            (c.requires_ticket, c.requires_paging, c.requires_mim),
            (ticket, page, mim),
            "{level:?}"
        );
        // Service owner from the catalog.
        assert_eq!(c.recommended_team, "payments");
        assert_eq!(outcome.info.classifier, "rules");
        // raw_output is what was validated, and parses back to the same answer.
        let raw = outcome.raw_output.unwrap();
        assert_eq!(
            serde_json::from_str::<tg_model::Classification>(&raw).unwrap(),
            c
        );
        assert_eq!(rules.classify_sync(&common::event(level), &teams), c);
    }
}

#[test]
fn default_config_compiles() {
    assert!(RulesClassifier::new(RulesClassifier::default_config()).is_ok());
}

const YAML: &str = r#"
rules:
  - name: db-down
    when:
      alert_name_regex: "^Postgres(Down|Unreachable)$"
      environments: [production]
    then:
      classification: sev1
      confidence: 0.95
      requires_ticket: true
      requires_paging: true
      requires_mim: true
      team: platform
  - name: checkout-errors
    when:
      summary_regex: "(?i)error rate"
      services: [checkout]
      impact_at_least: medium
    then:
      classification: high
      confidence: 0.8
      requires_ticket: true
      requires_paging: true
      requires_mim: false
  - name: anything-high
    when:
      impact_at_least: high
    then:
      classification: medium
      confidence: 0.7
      requires_ticket: true
      requires_paging: false
      requires_mim: false
fallback:
  classification: low
  confidence: 0.5
  requires_ticket: false
  requires_paging: false
  requires_mim: false
"#;

fn yaml_rules() -> RulesClassifier {
    let config: RulesConfig = serde_yaml_ng::from_str(YAML).unwrap();
    RulesClassifier::new(config).unwrap()
}

#[test]
fn first_matching_rule_wins_and_every_condition_must_hold() {
    let rules = yaml_rules();
    let teams = common::teams();

    let mut db = common::event(ImpactLevel::Low);
    db.alert_name = "PostgresDown".to_owned();
    assert_eq!(rules.matching_rule(&db), "db-down");
    let c = rules.classify_sync(&db, &teams);
    assert_eq!(c.classification, Severity::Sev1);
    // The rule's team beats the service owner.
    assert_eq!(c.recommended_team, "platform");
    assert_eq!(c.rationale.as_deref(), Some("rule db-down matched"));

    // Same alert outside production: the environment condition fails.
    db.environment = Environment::Staging;
    assert_eq!(rules.matching_rule(&db), "fallback");
    // Regex is anchored by the author: a longer name does not match.
    db.environment = Environment::Production;
    db.alert_name = "PostgresDownReplica".to_owned();
    assert_eq!(rules.matching_rule(&db), "fallback");

    // checkout-errors comes before anything-high even for a critical event.
    let checkout = common::event(ImpactLevel::Critical);
    assert_eq!(rules.matching_rule(&checkout), "checkout-errors");
    // Below the impact threshold it does not match.
    assert_eq!(
        rules.matching_rule(&common::event(ImpactLevel::Low)),
        "fallback"
    );
    // Another service falls through to anything-high.
    let mut other = common::event(ImpactLevel::High);
    other.service = "search".to_owned();
    assert_eq!(rules.matching_rule(&other), "anything-high");
    assert_eq!(
        rules.classify_sync(&other, &teams).classification,
        Severity::Medium
    );
}

#[test]
fn team_falls_back_from_service_owner_to_default() {
    let rules = yaml_rules();
    let mut teams = common::teams();
    let event = common::event(ImpactLevel::Critical);
    assert_eq!(
        rules.classify_sync(&event, &teams).recommended_team,
        "payments"
    );
    teams.service_team = None;
    assert_eq!(rules.classify_sync(&event, &teams).recommended_team, "sre");
}

#[tokio::test]
async fn a_rule_naming_an_unknown_team_is_rejected_by_the_contract() {
    let yaml = YAML.replace("team: platform", "team: nobody");
    let rules = RulesClassifier::new(serde_yaml_ng::from_str(&yaml).unwrap()).unwrap();
    let mut event = common::event(ImpactLevel::Critical);
    event.alert_name = "PostgresUnreachable".to_owned();
    let outcome = rules.classify(&event, &common::teams()).await;
    assert_eq!(outcome.result.unwrap_err().reason, "unknown_team");
    assert!(outcome.raw_output.unwrap().contains("nobody"));
}

#[test]
fn invalid_configurations_report_every_problem() {
    let yaml = YAML
        .replace("^Postgres(Down|Unreachable)$", "^Postgres(Down")
        .replace("confidence: 0.8", "confidence: 1.8")
        .replace("name: anything-high", "name: db-down");
    let err = RulesClassifier::new(serde_yaml_ng::from_str(&yaml).unwrap()).unwrap_err();
    assert_eq!(err.problems.len(), 3, "{err}");
    assert!(err.problems.iter().any(|p| matches!(p, RuleProblem::InvalidRegex { rule, field: "alert_name_regex", .. } if rule == "db-down")));
    assert!(err.problems.iter().any(
        |p| matches!(p, RuleProblem::ConfidenceOutOfRange { rule, .. } if rule == "checkout-errors")
    ));
    assert!(
        err.problems
            .iter()
            .any(|p| matches!(p, RuleProblem::DuplicateName { rule } if rule == "db-down"))
    );
    assert!(err.to_string().contains("checkout-errors"), "{err}");
}

#[test]
fn unknown_fields_in_the_configuration_are_refused() {
    let yaml = YAML.replace(
        "impact_at_least: high",
        "impact_at_least: high\n      severity: high",
    );
    assert!(serde_yaml_ng::from_str::<RulesConfig>(&yaml).is_err());
    let yaml = YAML.replace(
        "requires_mim: true",
        "requires_mim: true\n      page_now: true",
    );
    assert!(serde_yaml_ng::from_str::<RulesConfig>(&yaml).is_err());
}

#[test]
fn over_long_regex_is_refused() {
    let long = "a".repeat(tg_classify::rules::REGEX_BYTES_MAX + 1);
    let yaml = YAML.replace("(?i)error rate", &long);
    let err = RulesClassifier::new(serde_yaml_ng::from_str(&yaml).unwrap()).unwrap_err();
    assert!(
        matches!(err.problems.as_slice(), [RuleProblem::RegexTooLong { .. }]),
        "{err}"
    );
}
