//! Shared helpers: records, sink configs from YAML, a sandbox.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;

use tg_config::{AuditSinkConfig, Config, MapSecrets, SecretRef};
use tg_ship::{ShipError, ShipRecord, Sink};

/// A chain-like record: `seq`, `kind`, `hash` in the JSON, indexed fields.
pub fn rec(seq: u64, time: chrono::DateTime<chrono::Utc>) -> ShipRecord {
    ShipRecord {
        seq,
        time,
        json: format!(
            r#"{{"seq":{seq},"kind":"run","run_id":"run_{seq}","hash":"{:064x}"}}"#,
            seq
        ),
        fields: BTreeMap::from([
            ("kind".to_owned(), "run".to_owned()),
            ("run_id".to_owned(), format!("run_{seq}")),
        ]),
    }
}

pub fn recs(seqs: std::ops::RangeInclusive<u64>) -> Vec<ShipRecord> {
    let now = chrono::Utc::now();
    seqs.map(|s| rec(s, now)).collect()
}

/// The sinks of an `audit:` YAML section, built with `secrets`.
pub fn build(yaml: &str, secrets: &MapSecrets) -> Vec<Box<dyn Sink>> {
    let config = Config::from_yaml(yaml, "test.yaml").unwrap();
    tg_ship::build(
        &config.audit.sinks,
        secrets,
        &tg_identity::TrustLoader::new(None),
    )
    .unwrap()
}

pub fn one(yaml: &str, secrets: &MapSecrets) -> Box<dyn Sink> {
    let mut v = build(yaml, secrets);
    assert_eq!(v.len(), 1);
    v.remove(0)
}

pub fn env(name: &str) -> SecretRef {
    SecretRef::Env(name.into())
}

pub fn sinks(yaml: &str) -> Vec<AuditSinkConfig> {
    Config::from_yaml(yaml, "test.yaml").unwrap().audit.sinks
}

/// Fails when `secret` appears in the error's text or `Debug`.
pub fn assert_no_secret(err: &ShipError, secret: &str) {
    let text = format!("{err} {err:?}");
    assert!(!text.contains(secret), "secret leaked into: {text}");
}
