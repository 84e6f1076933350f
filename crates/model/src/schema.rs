//! JSON Schemas of the contracts, generated from the types.
//!
//! The files under `schemas/` are these, pretty-printed; a test fails when they drift.

use schemars::{JsonSchema, generate::SchemaSettings};

/// `(file name, schema)` for every published contract.
pub fn all() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "normalized-event.schema.json",
            schema::<crate::NormalizedEvent>(),
        ),
        (
            "classification.schema.json",
            schema::<crate::Classification>(),
        ),
        ("decision.schema.json", schema::<crate::Decision>()),
        ("audit-record.schema.json", schema::<crate::AuditRecord>()),
        ("audit-step.schema.json", schema::<crate::StepRecord>()),
    ]
}

/// The schema of `T` (JSON Schema draft 2020-12), as a JSON value.
pub fn schema<T: JsonSchema>() -> serde_json::Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_schema_is_closed_and_requires_the_contract_fields() {
        let s = schema::<crate::Classification>();
        assert_eq!(s["additionalProperties"], serde_json::json!(false));
        let mut required: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort_unstable();
        assert_eq!(
            required,
            [
                "classification",
                "confidence",
                "recommended_team",
                "requires_mim",
                "requires_paging",
                "requires_ticket"
            ]
        );
    }

    /// The published files under `schemas/` must be exactly what the types generate.
    /// Regenerate with `UPDATE_SCHEMAS=1 cargo test -p triage-gate-model`.
    #[test]
    fn published_schemas_match_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        #[expect(clippy::disallowed_methods, reason = "test-only regeneration switch")]
        let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
        for (name, schema) in all() {
            let path = dir.join(name);
            if update {
                // Sorted keys, so the file does not depend on serde_json's map feature.
                let sorted: serde_json::Value =
                    serde_json::from_slice(&crate::hash::canonical_json(&schema)).unwrap();
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, serde_json::to_string_pretty(&sorted).unwrap() + "\n")
                    .unwrap();
            }
            let published: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            )
            .unwrap();
            assert_eq!(
                published, schema,
                "{name} is stale: rerun with UPDATE_SCHEMAS=1"
            );
        }
    }
}
