//! Loading: a bad policy is rejected before it can run, with line:column.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers may fail loudly"
)]

use triage_gate_policy::{Catalog, Gates, PolicyError};

fn load_err(text: &str) -> Vec<PolicyError> {
    match Gates::load(text, &Catalog::default()) {
        Ok(_) => panic!("policy loaded but should have been rejected:\n{text}"),
        Err(errors) => errors,
    }
}

/// The default policy with one line replaced.
fn default_with(from: &str, to: &str) -> String {
    let text = Gates::default_policy_text();
    assert!(text.contains(from), "default policy lacks {from:?}");
    text.replacen(from, to, 1)
}

/// 1-based line:column of the first occurrence of `needle` in `text`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap();
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = at - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[test]
fn the_default_policy_loads() {
    let gates = Gates::load(Gates::default_policy_text(), &Catalog::default()).unwrap();
    assert_eq!(
        gates.condition_ids(tg_model::ActionKind::Mim),
        [
            "mim.severity",
            "mim.confidence",
            "mim.production",
            "mim.team",
            "mim.signals",
            "mim.not_open"
        ]
    );
}

#[test]
fn a_typo_in_a_field_name_is_rejected_at_its_line_and_column() {
    let text = default_with(
        "unless { context.facts.page_budget_left > 0 };",
        "unless { context.facts.page_budget_lft > 0 };",
    );
    let errors = load_err(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (line, col) = position_of(&text, "context.facts.page_budget_lft");
    let e = &errors[0];
    assert_eq!(e.line_col().map(|(l, _)| l), Some(line), "{e}");
    let (_, got_col) = e.line_col().unwrap();
    assert!(got_col >= 10 && got_col <= col, "column {got_col} for {e}");
    let PolicyError::At {
        policy, message, ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(policy.as_deref(), Some("page.rate"));
    assert!(message.contains("page_budget_lft"), "{message}");
}

#[test]
fn a_typo_in_a_resource_attribute_is_rejected() {
    let text = default_with(">= resource.page_min_bp };", ">= resource.page_minbp };");
    let errors = load_err(&text);
    let (line, _) = position_of(&text, "resource.page_minbp");
    assert_eq!(errors[0].line_col().unwrap().0, line, "{:?}", errors);
}

#[test]
fn a_misspelt_environment_is_rejected() {
    let text = default_with(
        "unless { context.environment == Environment::\"production\" };",
        "unless { context.environment == Environment::\"prodution\" };",
    );
    let errors = load_err(&text);
    let (line, _) = position_of(&text, "prodution");
    assert_eq!(errors[0].line_col().unwrap().0, line, "{errors:?}");
}

#[test]
fn a_type_error_is_rejected_at_its_line_and_column() {
    let text = default_with(
        "unless { context.facts.independent_signals >= 2 };",
        "unless { context.facts.independent_signals >= \"2\" };",
    );
    let errors = load_err(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (line, _) = position_of(&text, ">= \"2\"");
    assert_eq!(errors[0].line_col().unwrap().0, line, "{}", errors[0]);
    assert!(
        errors[0].to_string().starts_with(&format!("{line}:")),
        "{}",
        errors[0]
    );
}

#[test]
fn a_syntax_error_is_reported_with_line_and_column() {
    let text = "@id(\"x\")\npermit (principal, action == Action::\"ticket\", resource)\nwhen { context.verdict.requires_ticket &&& true };\n";
    let errors = load_err(text);
    assert!(!errors.is_empty());
    assert_eq!(errors[0].line_col().unwrap().0, 3, "{errors:?}");
}

#[test]
fn a_forbid_without_reason_is_rejected_at_the_policy() {
    let text = default_with("@reason(\"a paging budget is spent\")\n", "");
    let errors = load_err(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].to_string().contains("has no @reason"),
        "{}",
        errors[0]
    );
    let (line, col) = position_of(&text, "@id(\"page.rate\")");
    assert_eq!(errors[0].line_col(), Some((line, col)));
}

#[test]
fn a_forbid_without_value_or_threshold_is_rejected() {
    let text = default_with(
        "@value(\"context.facts.mim_open\")\n@threshold(\"== false\")\n",
        "",
    );
    let errors = load_err(&text);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("has no @value"));
    assert!(messages[1].contains("has no @threshold"));
}

#[test]
fn unknown_value_paths_and_placeholders_are_rejected() {
    let text = default_with(
        "@value(\"context.facts.mim_open\")",
        "@value(\"context.facts.mim_opened\")",
    );
    assert!(
        load_err(&text)[0]
            .to_string()
            .contains("unknown @value path \"context.facts.mim_opened\"")
    );
    let text = default_with("{resource.page_min_bp}", "{resource.page_threshold}");
    assert!(
        load_err(&text)[0]
            .to_string()
            .contains("\"resource.page_threshold\"")
    );
}

#[test]
fn missing_and_duplicate_ids_and_unknown_annotations_are_rejected() {
    let text = default_with("@id(\"page.rate\")", "@id(\"page.confidence\")");
    let errors = load_err(&text);
    // The duplicate, and the page.rate the engine reads, now missing.
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0]
            .to_string()
            .contains("duplicate @id \"page.confidence\"")
    );
    assert!(errors[1].to_string().contains("@id(\"page.rate\")"));

    let text = default_with("@id(\"ticket.requested\")\n", "");
    assert!(load_err(&text)[0].to_string().contains("has no @id"));

    let text = default_with(
        "@reason(\"classification is below high\")",
        "@reason(\"x\")\n@reasn(\"y\")",
    );
    assert!(
        load_err(&text)[0]
            .to_string()
            .contains("unknown annotation @reasn")
    );
}

#[test]
fn templates_are_rejected() {
    let text =
        "@id(\"t\")\npermit (principal == ?principal, action == Action::\"ticket\", resource);";
    assert!(
        load_err(text)
            .iter()
            .any(|e| e.to_string().contains("templates"))
    );
}

#[test]
fn all_problems_are_reported_together_with_catalog_issues() {
    let mut catalog = Catalog::default();
    catalog.defaults.thresholds.page.0 = 1.5;
    let text = default_with("@reason(\"a paging budget is spent\")\n", "").replacen(
        "@id(\"ticket.requested\")\n",
        "",
        1,
    );
    let errors = Gates::load(&text, &catalog).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(matches!(&errors[0], PolicyError::Catalog(i) if i.path == "defaults.thresholds.page"));
}

#[test]
fn an_oversized_policy_text_is_rejected() {
    let text = " ".repeat(triage_gate_policy::gates::POLICY_TEXT_BYTES_MAX + 1);
    assert!(load_err(&text)[0].to_string().contains("bytes, at most"));
}

#[test]
fn the_version_covers_policy_text_and_catalog() {
    let catalog = Catalog::default();
    let a = Gates::load(Gates::default_policy_text(), &catalog).unwrap();
    let b = Gates::load(Gates::default_policy_text(), &catalog).unwrap();
    assert_eq!(a.version(), b.version());
    assert_eq!(a.version().len(), 64);
    let c = Gates::load(
        &format!("{}\n// edited\n", Gates::default_policy_text()),
        &catalog,
    )
    .unwrap();
    assert_ne!(a.version(), c.version());
    let mut other = catalog.clone();
    other.defaults.thresholds.ticket.0 = 0.75;
    let d = Gates::load(Gates::default_policy_text(), &other).unwrap();
    assert_ne!(a.version(), d.version());
}

#[test]
fn a_policy_without_a_condition_the_engine_reads_is_refused_with_line_and_id() {
    // Renaming page.rate would silently drop the bucket the engine names next to it.
    let text = default_with("@id(\"page.rate\")", "@id(\"page.budget\")");
    let errors = load_err(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    let message = e.to_string();
    assert!(message.contains("\"page.rate\""), "{message}");
    // At the page section's first policy (its permit).
    let (line, _) = position_of(&text, "@id(\"page.requested\")");
    assert_eq!(e.line_col().map(|(l, _)| l), Some(line), "{message}");

    let text = default_with("@id(\"mim.signals\")", "@id(\"mim.sources\")");
    let errors = load_err(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("\"mim.signals\"")),
        "{errors:?}"
    );
    for (_, id) in triage_gate_policy::ids::REQUIRED {
        assert!(
            Gates::default_policy_text().contains(&format!("@id(\"{id}\")")),
            "{id}"
        );
    }
}
