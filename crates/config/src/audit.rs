//! `audit`: signed checkpoints over the audit chain.

use serde::{Deserialize, Serialize};

use crate::SecretRef;

/// Largest `checkpoint.every_records`: the verifier looks at most
/// `tg_audit::CHECKPOINT_REACH_MAX` (100 000) records back.
pub const CHECKPOINT_EVERY_RECORDS_MAX: u64 = 50_000;
/// Largest `checkpoint.every_secs` (a day).
pub const CHECKPOINT_EVERY_SECS_MAX: u64 = 86_400;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Signed checkpoints; off unless a key is configured.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
}

/// Ed25519 checkpoints: the gate signs the chain's head when `every_records`
/// new records have been sealed since the last checkpoint, or `every_secs`
/// after it if any have, and when it stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// The Ed25519 private key, PKCS#8 PEM (`openssl genpkey -algorithm ed25519`
    /// or `triage-gate audit keygen`). No key, no checkpoints.
    pub key: Option<SecretRef>,
    pub every_records: u64,
    pub every_secs: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            key: None,
            every_records: 1_000,
            every_secs: 300,
        }
    }
}

impl AuditConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let c = &self.checkpoint;
        if c.every_records == 0 || c.every_records > CHECKPOINT_EVERY_RECORDS_MAX {
            out.push((
                "audit.checkpoint.every_records".into(),
                format!(
                    "{} is outside 1..={CHECKPOINT_EVERY_RECORDS_MAX}",
                    c.every_records
                ),
            ));
        }
        if c.every_secs == 0 || c.every_secs > CHECKPOINT_EVERY_SECS_MAX {
            out.push((
                "audit.checkpoint.every_secs".into(),
                format!(
                    "{} is outside 1..={CHECKPOINT_EVERY_SECS_MAX}",
                    c.every_secs
                ),
            ));
        }
        out
    }
}
