//! The contracts of triage-gate: the types every stage agrees on.
//!
//! `NormalizedEvent` (what a source said, cleaned), `Classification` (what the
//! model may answer), `Decision` (what the gates decided, condition by
//! condition), `PlannedAction` (what will be done) and `AuditRecord` (what
//! happened). The JSON Schemas under `schemas/` are generated from these types.
//!
//! This crate must never do I/O, read the clock or the environment, or hold
//! vendor payload types: those live with their adapters.

pub mod action;
pub mod audit;
pub mod classification;
pub mod decision;
pub mod event;
pub mod hash;
pub mod ids;
pub mod json;
pub mod schema;
pub mod secret;

pub use action::{ActionKind, ActionOp, ActionResult, ActionStatus, PlannedAction};
pub use audit::{
    AttemptStep, AuditRecord, AutonomyStep, BreakerStep, ChainRecord, Chained, CheckpointStep,
    ConfigStep, EventMeta, ExternalStep, ReplayStep, ReviewStep, RunRef, RunTimestamps, StepKind,
    StepRecord, checkpoint_message,
};
pub use classification::{
    Classification, ClassificationRecord, ClassifierInfo, Rejection, Severity,
};
pub use decision::{ActionDecision, Condition, Decision, Outcome};
pub use event::{
    AlertStatus, Environment, Impact, ImpactLevel, LogPointer, NormalizedEvent, Source,
};
pub use hash::{Sha256Hex, sha256_hex};
pub use ids::{CorrelationId, Fingerprint, RunId};
pub use secret::Secret;

/// The autonomy level of a service: how far the gates' decisions may be carried out.
///
/// Ordered from least to most autonomous; a level permits everything the levels
/// below it permit.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AutonomyLevel {
    /// Decide and record; execute nothing.
    Shadow,
    /// Tickets become drafts in the review queue; no pages.
    Assist,
    /// Low and medium tickets are created; everything else goes to review.
    Limited,
    /// Tickets and pages.
    Paging,
    /// Everything, MIM behind its multi-signal gate.
    Mim,
}

impl AutonomyLevel {
    pub const ALL: [AutonomyLevel; 5] = [
        AutonomyLevel::Shadow,
        AutonomyLevel::Assist,
        AutonomyLevel::Limited,
        AutonomyLevel::Paging,
        AutonomyLevel::Mim,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AutonomyLevel::Shadow => "shadow",
            AutonomyLevel::Assist => "assist",
            AutonomyLevel::Limited => "limited",
            AutonomyLevel::Paging => "paging",
            AutonomyLevel::Mim => "mim",
        }
    }
}

impl std::fmt::Display for AutonomyLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AutonomyLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AutonomyLevel::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown autonomy level {s:?} (expected shadow, assist, limited, paging or mim)"
                )
            })
    }
}
