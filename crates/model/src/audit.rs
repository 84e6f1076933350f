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

/// The hash a chain record should carry: SHA-256 of the canonical JSON of
/// every field but `hash` itself.
fn chain_hash<T: Serialize + std::fmt::Debug>(record: &T) -> Sha256Hex {
    let mut value = match serde_json::to_value(record) {
        Ok(v) => v,
        // A struct of plain data always serializes; hash the debug form rather than panic.
        Err(_) => return sha256_hex(format!("{record:?}").as_bytes()),
    };
    if let Some(obj) = value.as_object_mut() {
        obj.remove("hash");
    }
    sha256_hex(&canonical_json(&value))
}

impl AuditRecord {
    /// The hash this record should carry: over everything but `hash` itself.
    pub fn compute_hash(&self) -> Sha256Hex {
        chain_hash(self)
    }

    /// Sets `seq`, `prev_hash` and `hash` so the record extends a chain.
    pub fn seal(&mut self, seq: u64, prev_hash: Sha256Hex) {
        self.seq = seq;
        self.prev_hash = prev_hash;
        self.hash = self.compute_hash();
    }
}

/// What a step record on the audit chain records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// A storm breaker opened or closed.
    BreakerTransition,
}

/// A storm breaker transition, as the audit chain keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerStep {
    pub environment: String,
    /// `open` or `closed`.
    pub to: String,
    /// Distinct services alerting in the window when it moved.
    pub services: u32,
    /// The threshold it crossed (`open_services` opening, `close_services` closing).
    pub threshold: u32,
    pub storm_id: String,
    pub reason: String,
}

/// Something recorded on the chain beside the runs' own records: one record
/// per step (now breaker transitions). Hashed and chained like [`AuditRecord`];
/// told apart from it by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    pub schema_version: u32,
    pub kind: StepKind,
    /// Position in the chain, from 1 (shared with run records).
    pub seq: u64,
    /// Unique per step (`breaker:<environment>:<storm_id>:<to>`).
    pub record_id: String,
    pub at: DateTime<Utc>,
    /// What caused it: the run whose event moved the breaker, or
    /// `none:breaker-tick` for the timer.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerStep>,
    pub prev_hash: Sha256Hex,
    pub hash: Sha256Hex,
}

impl StepRecord {
    /// The hash this record should carry: over everything but `hash` itself.
    pub fn compute_hash(&self) -> Sha256Hex {
        chain_hash(self)
    }

    /// Sets `seq`, `prev_hash` and `hash` so the record extends a chain.
    pub fn seal(&mut self, seq: u64, prev_hash: Sha256Hex) {
        self.seq = seq;
        self.prev_hash = prev_hash;
        self.hash = self.compute_hash();
    }
}

/// Any record of the audit chain: a run's, or a step's (it has a `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChainRecord {
    Step(Box<StepRecord>),
    Run(Box<AuditRecord>),
}

impl ChainRecord {
    pub fn seq(&self) -> u64 {
        match self {
            ChainRecord::Step(s) => s.seq,
            ChainRecord::Run(r) => r.seq,
        }
    }

    pub fn hash(&self) -> &Sha256Hex {
        match self {
            ChainRecord::Step(s) => &s.hash,
            ChainRecord::Run(r) => &r.hash,
        }
    }

    /// The run's record, if this is one.
    pub fn run(&self) -> Option<&AuditRecord> {
        match self {
            ChainRecord::Run(r) => Some(r),
            ChainRecord::Step(_) => None,
        }
    }
}

/// A record with a place in the audit chain.
pub trait Chained: Serialize {
    fn chain_seq(&self) -> u64;
}

impl Chained for AuditRecord {
    fn chain_seq(&self) -> u64 {
        self.seq
    }
}

impl Chained for StepRecord {
    fn chain_seq(&self) -> u64 {
        self.seq
    }
}

impl Chained for ChainRecord {
    fn chain_seq(&self) -> u64 {
        self.seq()
    }
}
