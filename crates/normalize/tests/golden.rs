//! Golden files: `tests/golden/<source>/<case>/{input.json, expected.json}`.
//! `expected.json` is `{"events": [...]}` or `{"error": {kind, field, message}}`.
//! Run with `UPDATE_GOLDEN=1` to rewrite the expected files; otherwise any
//! byte of difference fails.

// Test crate: helpers outside #[test] fns may unwrap and panic too (clippy.toml
// only covers #[test] fns and #[cfg(test)] modules).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};

use serde_json::json;

fn cases() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out = Vec::new();
    for source in std::fs::read_dir(&root).unwrap() {
        let source = source.unwrap().path();
        let name = source.file_name().unwrap().to_str().unwrap().to_owned();
        for case in std::fs::read_dir(&source).unwrap() {
            out.push((name.clone(), case.unwrap().path()));
        }
    }
    out.sort();
    out
}

fn render(source: &str, input: &[u8]) -> String {
    let result = common::normalize_fn(source)(input, &common::ctx(), common::now());
    let value = match result {
        Ok(events) => json!({ "events": events }),
        Err(e) => json!({ "error": e }),
    };
    // Keys sorted, so the text does not depend on whether a workspace build
    // turned on serde_json's `preserve_order`.
    let sorted: serde_json::Value =
        serde_json::from_slice(&tg_model::hash::canonical_json(&value)).unwrap();
    serde_json::to_string_pretty(&sorted).unwrap() + "\n"
}

#[test]
fn every_golden_case_matches() {
    #[expect(
        clippy::disallowed_methods,
        reason = "the test harness, not the pure library, reads UPDATE_GOLDEN"
    )]
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let cases = cases();
    assert!(
        cases.len() >= 15,
        "golden cases went missing: {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for (source, dir) in &cases {
        let input = std::fs::read(dir.join("input.json")).unwrap();
        let actual = render(source, &input);
        let expected_path = dir.join("expected.json");
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}:\n--- expected\n{expected}\n+++ actual\n{actual}",
                dir.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) differ (UPDATE_GOLDEN=1 rewrites them):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_source_has_golden_cases() {
    let cases = cases();
    for (name, _) in common::SOURCES {
        assert!(
            cases.iter().any(|(s, _)| s == name),
            "no golden case for {name}"
        );
    }
}
