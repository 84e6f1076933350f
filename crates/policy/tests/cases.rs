//! Policy cases as data: every `tests/cases/*.yaml` table is run against the
//! policy it names (the shipped default unless `policy:` gives a file).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers may fail loudly"
)]

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use tg_model::{ActionKind, Classification, Environment, Outcome};
use triage_gate_policy::{Catalog, Facts, GateInput, Gates};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    catalog: Catalog,
    /// A policy file next to the table; the shipped default when absent.
    #[serde(default)]
    policy: Option<String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    service: String,
    environment: Environment,
    classification: Classification,
    facts: CaseFacts,
    expect: BTreeMap<ActionKind, Expect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFacts {
    page_budget_left: i64,
    independent_signals: i64,
    mim_open: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    outcome: Outcome,
    #[serde(default)]
    requested: Option<bool>,
    /// Ids of the conditions that must fail; every other one must pass.
    #[serde(default)]
    failed: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[test]
fn policy_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut tables: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    tables.sort();
    assert!(!tables.is_empty(), "no case tables in {}", dir.display());

    let mut failures = Vec::new();
    let mut count = 0;
    for path in tables {
        let table: Table = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let policy = match &table.policy {
            Some(file) => std::fs::read_to_string(dir.join(file)).unwrap(),
            None => Gates::default_policy_text().to_owned(),
        };
        let gates = Gates::load(&policy, &table.catalog)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        for case in &table.cases {
            count += 1;
            let input = GateInput {
                service: &case.service,
                owner_team: gates.catalog().owner_team(&case.service),
                environment: case.environment,
                source_impact: tg_model::ImpactLevel::Unknown,
                classification: &case.classification,
                facts: Facts {
                    page_budget_left: case.facts.page_budget_left,
                    independent_signals: case.facts.independent_signals,
                    mim_open: case.facts.mim_open,
                },
            };
            let verdicts = gates.evaluate(&input);
            assert_eq!(
                verdicts.iter().map(|v| v.action).collect::<Vec<_>>(),
                ActionKind::ALL.to_vec()
            );
            for (action, expect) in &case.expect {
                let v = verdicts.iter().find(|v| v.action == *action).unwrap();
                let failed: Vec<&str> = v
                    .conditions
                    .iter()
                    .filter(|c| !c.passed)
                    .map(|c| c.id.as_str())
                    .collect();
                let mut problems = Vec::new();
                if v.outcome != expect.outcome {
                    problems.push(format!(
                        "outcome {:?}, expected {:?}",
                        v.outcome, expect.outcome
                    ));
                }
                if failed != expect.failed {
                    problems.push(format!("failed {failed:?}, expected {:?}", expect.failed));
                }
                let requested = expect.requested.unwrap_or(expect.outcome != Outcome::Skip);
                if v.requested != requested {
                    problems.push(format!("requested {}, expected {requested}", v.requested));
                }
                if let Some(reason) = &expect.reason
                    && &v.reason != reason
                {
                    problems.push(format!("reason {:?}, expected {reason:?}", v.reason));
                }
                if !v.errors.is_empty() {
                    problems.push(format!("errors {:?}", v.errors));
                }
                if !problems.is_empty() {
                    failures.push(format!(
                        "{} / {} / {action}: {}",
                        path.file_name().unwrap().to_string_lossy(),
                        case.name,
                        problems.join("; ")
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(count >= 10);
}
