//! Catalog parsing and validation: every problem at once, each with its path.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers may fail loudly"
)]

use tg_model::AutonomyLevel;
use triage_gate_policy::Catalog;

const GOOD: &str = r#"
defaults:
  thresholds: { ticket: 0.70, page: 0.80, mim: 0.85 }
  autonomy: shadow
teams:
  payments: { description: "Payments SRE" }
  platform-ops: {}
services:
  checkout:
    team: payments
    autonomy: paging
    tier: 1
    paused: false
    aliases: [checkout-api]
    thresholds: { page: 0.9 }
  search:
    team: platform-ops
    autonomy: limited
    paused: true
"#;

fn parse(yaml: &str) -> Catalog {
    serde_yaml_ng::from_str(yaml).unwrap()
}

#[test]
fn a_good_catalog_validates_and_answers_lookups() {
    let c = parse(GOOD);
    assert_eq!(c.validate(), vec![]);
    assert_eq!(c.canonical_service("checkout-api"), Some("checkout"));
    assert_eq!(c.canonical_service("checkout"), Some("checkout"));
    assert_eq!(c.canonical_service("nope"), None);
    assert_eq!(c.service("checkout-api").unwrap().tier, Some(1));
    assert_eq!(c.team_for("checkout-api"), Some("payments"));
    assert_eq!(c.team_for("nope"), None);
    assert_eq!(c.autonomy_for("checkout"), AutonomyLevel::Paging);
    assert_eq!(c.autonomy_for("nope"), AutonomyLevel::Shadow);
    assert!(c.is_paused("search"));
    assert!(!c.is_paused("checkout"));
    let t = c.thresholds_for("checkout");
    assert_eq!((t.ticket.bp(), t.page.bp(), t.mim.bp()), (7000, 9000, 8500));
    assert_eq!(
        c.known_teams().into_iter().collect::<Vec<_>>(),
        ["payments", "platform-ops"]
    );
}

#[test]
fn thresholds_may_be_written_as_strings_and_defaults_fill_in() {
    let c = parse("defaults: { thresholds: { page: \"0.75\" } }");
    assert_eq!(c.defaults.thresholds.page.bp(), 7500);
    assert_eq!(c.defaults.thresholds.ticket.bp(), 7000);
    assert_eq!(c.defaults.autonomy, AutonomyLevel::Shadow);
    assert!(
        serde_yaml_ng::from_str::<Catalog>("defaults: { thresholds: { page: \"high\" } }").is_err()
    );
}

#[test]
fn unknown_fields_are_rejected() {
    let err = serde_yaml_ng::from_str::<Catalog>(
        "services: { checkout: { team: payments, autonomy: paging, pasued: true } }",
    )
    .unwrap_err();
    assert!(err.to_string().contains("pasued"), "{err}");
    assert!(
        serde_yaml_ng::from_str::<Catalog>("services: { checkout: { team: p, autonomy: full } }")
            .is_err()
    );
}

#[test]
fn validation_returns_every_issue_with_its_path() {
    let c = parse(
        r#"
defaults:
  thresholds: { ticket: 1.2, page: 0.80, mim: -0.1 }
teams:
  payments: {}
services:
  checkout:
    team: paymnts
    autonomy: paging
    tier: 9
    aliases: [checkout-api, search]
    thresholds: { page: 7 }
  search:
    team: payments
    autonomy: shadow
    aliases: [checkout-api, "has space"]
"#,
    );
    let issues: Vec<(String, String)> = c
        .validate()
        .into_iter()
        .map(|i| (i.path, i.message))
        .collect();
    let paths: Vec<&str> = issues.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "defaults.thresholds.ticket",
            "defaults.thresholds.mim",
            "services.checkout.team",
            "services.checkout.tier",
            "services.checkout.aliases[1]",
            "services.checkout.thresholds.page",
            "services.search.aliases[0]",
            "services.search.aliases[1]",
        ],
        "{issues:#?}"
    );
    let msg = |path: &str| issues.iter().find(|(p, _)| p == path).unwrap().1.clone();
    assert!(msg("defaults.thresholds.ticket").contains("1.2"));
    assert_eq!(
        msg("services.checkout.team"),
        "unknown team \"paymnts\" (known teams: payments)"
    );
    assert!(
        msg("services.checkout.aliases[1]")
            .contains("\"search\" is already used by services.search")
    );
    assert!(msg("services.search.aliases[0]").contains("services.checkout.aliases[0]"));
    assert!(msg("services.search.aliases[1]").contains("\"has space\""));
    assert!(msg("services.checkout.tier").contains('9'));
}

#[test]
fn nan_thresholds_are_invalid() {
    let mut c = Catalog::default();
    c.defaults.thresholds.mim.0 = f64::NAN;
    assert_eq!(c.validate()[0].path, "defaults.thresholds.mim");
}
