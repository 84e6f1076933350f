//! Evaluation: explanations, fail-closed errors, unlisted services, aliases.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers may fail loudly"
)]

use tg_model::{ActionKind, Classification, Environment, Outcome, Severity};
use triage_gate_policy::{Catalog, Facts, GateInput, GateVerdict, Gates};

fn catalog() -> Catalog {
    serde_yaml_ng::from_str(
        r#"
teams: { payments: {} }
services:
  checkout:
    team: payments
    autonomy: paging
    aliases: [checkout-api]
    thresholds: { page: "0.90" }
"#,
    )
    .unwrap()
}

fn classification(sev: Severity, confidence: f64) -> Classification {
    Classification {
        classification: sev,
        confidence,
        requires_ticket: true,
        requires_paging: true,
        requires_mim: true,
        recommended_team: "payments".into(),
        rationale: None,
    }
}

fn run(
    gates: &Gates,
    service: &str,
    env: Environment,
    c: &Classification,
    facts: Facts,
) -> Vec<GateVerdict> {
    gates.evaluate(&GateInput {
        service,
        owner_team: gates.catalog().owner_team(service),
        environment: env,
        source_impact: tg_model::ImpactLevel::Unknown,
        classification: c,
        facts,
    })
}

const FACTS: Facts = Facts {
    page_budget_left: 1,
    independent_signals: 1,
    mim_open: false,
};

#[test]
fn every_condition_is_listed_with_the_value_seen_and_the_threshold() {
    let gates = Gates::load(Gates::default_policy_text(), &catalog()).unwrap();
    let c = classification(Severity::High, 0.74);
    let v = run(&gates, "checkout", Environment::Staging, &c, FACTS);
    let page = &v[1];
    assert_eq!(page.action, ActionKind::Page);
    assert_eq!(page.outcome, Outcome::Review);
    let shown: Vec<(&str, bool, &str, &str)> = page
        .conditions
        .iter()
        .map(|c| {
            (
                c.id.as_str(),
                c.passed,
                c.actual.as_str(),
                c.threshold.as_str(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("page.severity", true, "high", ">= high"),
            ("page.confidence", false, "0.74", ">= 0.90"),
            (
                "page.model_declined",
                true,
                "unknown",
                "below critical when the model declines"
            ),
            ("page.production", false, "staging", "== production"),
            ("page.team", true, "payments", "== owner payments"),
            ("page.rate", true, "1", "> 0"),
        ]
    );
    assert_eq!(
        page.reason,
        "model confidence is below the paging threshold; pages are only sent for production"
    );
    assert_eq!(
        page.conditions[0].description,
        "classification is high or sev1"
    );
    let mim = &v[2];
    let signals = mim
        .conditions
        .iter()
        .find(|c| c.id == "mim.signals")
        .unwrap();
    assert_eq!(
        (
            signals.passed,
            signals.actual.as_str(),
            signals.threshold.as_str()
        ),
        (false, "1", ">= 2")
    );
    let open = mim
        .conditions
        .iter()
        .find(|c| c.id == "mim.not_open")
        .unwrap();
    assert_eq!(
        (open.passed, open.actual.as_str(), open.threshold.as_str()),
        (true, "false", "== false")
    );
}

#[test]
fn aliases_resolve_to_the_service_and_unlisted_services_get_the_defaults() {
    let gates = Gates::load(Gates::default_policy_text(), &catalog()).unwrap();
    let c = classification(Severity::High, 0.85);
    let by_alias = run(&gates, "checkout-api", Environment::Production, &c, FACTS);
    assert_eq!(by_alias[1].outcome, Outcome::Review, "{:?}", by_alias[1]);
    assert_eq!(by_alias[1].conditions[1].threshold, ">= 0.90");
    let unlisted = run(&gates, "search", Environment::Production, &c, FACTS);
    assert_eq!(unlisted[1].conditions[1].threshold, ">= 0.80");
    assert!(unlisted[1].conditions[1].passed);
    // Nobody owns an unlisted service (no defaults.team): the model's team is not obeyed.
    let failed: Vec<&str> = unlisted[1]
        .conditions
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(failed, ["page.team"], "{:?}", unlisted[1]);
    assert_eq!(unlisted[1].outcome, Outcome::Review);
    // With defaults.team, that team owns it and the page executes.
    let mut owned = catalog();
    owned.defaults.team = Some("payments".into());
    let gates = Gates::load(Gates::default_policy_text(), &owned).unwrap();
    let unlisted = run(&gates, "search", Environment::Production, &c, FACTS);
    assert_eq!(unlisted[1].outcome, Outcome::Execute, "{:?}", unlisted[1]);
    assert_eq!(unlisted[1].reason, "page.requested");
}

/// A forbid whose expression overflows at run time. Cedar skips an erroring
/// policy, which without the wrapper would let the page through.
const OVERFLOWING: &str = r#"
@id("page.requested")
permit (principal, action == Action::"page", resource)
when { context.verdict.requires_paging };

@id("page.rate")
@reason("the paging budget for this team is spent")
@value("context.facts.page_budget_left")
@threshold("> 0")
forbid (principal, action == Action::"page", resource)
unless { context.facts.page_budget_left + 9223372036854775807 > 9223372036854775807 };

@id("mim.signals")
@reason("fewer than two independent signals confirm impact")
@value("context.facts.independent_signals")
@threshold(">= 2")
forbid (principal, action == Action::"mim", resource)
unless { context.facts.independent_signals >= 2 };
"#;

#[test]
fn an_evaluation_error_sends_the_action_to_review_not_execute() {
    let gates = Gates::load(OVERFLOWING, &catalog()).unwrap();
    let c = classification(Severity::Sev1, 0.99);
    // Budget 0: no overflow, the forbid holds: review for the budget.
    let v = run(
        &gates,
        "checkout",
        Environment::Production,
        &c,
        Facts {
            page_budget_left: 0,
            ..FACTS
        },
    );
    assert_eq!(v[1].outcome, Outcome::Review);
    assert!(v[1].errors.is_empty());
    // Budget 5: the forbid overflows, Cedar skips it and would Allow.
    let v = run(
        &gates,
        "checkout",
        Environment::Production,
        &c,
        Facts {
            page_budget_left: 5,
            ..FACTS
        },
    );
    let page = &v[1];
    assert_eq!(page.outcome, Outcome::Review, "{page:?}");
    assert_eq!(page.errors.len(), 1, "{page:?}");
    assert!(
        page.errors[0].contains("page.rate") && page.errors[0].contains("overflow"),
        "{:?}",
        page.errors
    );
    assert!(
        !page.conditions[0].passed,
        "an erroring condition is not reported as passed"
    );
    assert!(page.reason.contains("fail closed"));
    // The other actions have no permit: the model's ask is not enough.
    assert_eq!(v[0].outcome, Outcome::Skip);
    assert!(v[0].conditions.is_empty());
}

#[test]
fn a_custom_policy_stays_explainable() {
    // Tier-0/1 services page only on sev1: a rule written by an SRE, explained
    // with the same annotations as the shipped ones.
    let policy = format!(
        "{}\n{}",
        Gates::default_policy_text(),
        r#"
@id("page.critical_tier")
@description("tier 0 and 1 services page only on sev1")
@reason("critical-tier services page only on sev1")
@value("context.verdict.severity")
@threshold("== sev1 when tier <= 1 (tier {resource.tier})")
forbid (principal, action == Action::"page", resource)
when { resource.tier >= 0 && resource.tier <= 1 && context.verdict.severity < 3 };
"#
    );
    let mut cat = catalog();
    cat.services.get_mut("checkout").unwrap().tier = Some(1);
    cat.defaults.team = Some("payments".into());
    let gates = Gates::load(&policy, &cat).unwrap();
    let c = classification(Severity::High, 0.95);
    let v = run(&gates, "checkout", Environment::Production, &c, FACTS);
    assert_eq!(v[1].outcome, Outcome::Review);
    let last = v[1].conditions.last().unwrap();
    assert_eq!(
        (
            last.id.as_str(),
            last.passed,
            last.actual.as_str(),
            last.threshold.as_str()
        ),
        (
            "page.critical_tier",
            false,
            "high",
            "== sev1 when tier <= 1 (tier 1)"
        )
    );
    // An unlisted service has no tier (-1): the rule passes.
    let v = run(&gates, "search", Environment::Production, &c, FACTS);
    assert_eq!(v[1].outcome, Outcome::Execute, "{:?}", v[1]);
}
