//! `AuditRecord`: the one tamper-evident record a run leaves.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::action::ActionResult;
use crate::classification::{Classification, ClassifierInfo, Rejection};
use crate::decision::Decision;
use crate::event::{AlertStatus, Environment, Source};
use crate::hash::{Sha256Hex, canonical_json, sha256_hex};
use crate::ids::{CorrelationId, Fingerprint, RunId};

/// Version of the audit record layout; bumped on any incompatible change.
pub const AUDIT_SCHEMA_VERSION: u32 = 1;

/// Event metadata kept in the audit trail: identity and pointers, never the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventMeta {
    pub source: Source,
    pub origin: String,
    pub status: AlertStatus,
    pub environment: Environment,
    pub service: String,
    pub alert_name: String,
    pub fingerprint: Fingerprint,
    pub occurred_at: DateTime<Utc>,
    /// Who submitted the event (JWT subject), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
}

/// When each stage of the run finished.
/// Token usage of one model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunTimestamps {
    pub received_at: DateTime<Utc>,
    pub classified_at: DateTime<Utc>,
    pub decided_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
}

/// One run's audit record. `hash` = SHA-256 of the canonical JSON of every other
/// field (including `prev_hash`), so editing, deleting, inserting or reordering a
/// record breaks the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub schema_version: u32,
    /// Position in the chain, from 1.
    pub seq: u64,
    pub run_id: RunId,
    pub correlation_id: CorrelationId,
    pub event: EventMeta,
    pub classifier: ClassifierInfo,
    /// The model's output text as received (redacted of nothing: it never saw secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_output: Option<String>,
    /// SHA-256 of `model_output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_output_sha256: Option<Sha256Hex>,
    /// The accepted classification, when the contract held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// Why the answer was rejected, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// How long the classifier took, in milliseconds (absent when it was not asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_latency_ms: Option<u64>,
    /// SHA-256 of the exact prompt sent to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_sha256: Option<Sha256Hex>,
    /// Tokens the model call used, as the provider reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_usage: Option<ModelUsage>,
    pub policy_version: String,
    pub decision: Decision,
    pub actions: Vec<ActionResult>,
    pub timestamps: RunTimestamps,
    pub prev_hash: Sha256Hex,
    pub hash: Sha256Hex,
}

impl AuditRecord {
    /// The hash this record should carry: over everything but `hash` itself.
    pub fn compute_hash(&self) -> Sha256Hex {
        let mut value = match serde_json::to_value(self) {
            Ok(v) => v,
            // A struct of plain data always serializes; hash the debug form rather than panic.
            Err(_) => return sha256_hex(format!("{self:?}").as_bytes()),
        };
        if let Some(obj) = value.as_object_mut() {
            obj.remove("hash");
        }
        sha256_hex(&canonical_json(&value))
    }

    /// Sets `seq`, `prev_hash` and `hash` so the record extends a chain.
    pub fn seal(&mut self, seq: u64, prev_hash: Sha256Hex) {
        self.seq = seq;
        self.prev_hash = prev_hash;
        self.hash = self.compute_hash();
    }
}
