//! `AuditRecord`: the one tamper-evident record a run leaves.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::action::ActionResult;
use crate::classification::{Classification, ClassificationRecord, ClassifierInfo, Rejection};
use crate::decision::Decision;
use crate::event::{AlertStatus, Environment, NormalizedEvent, Source};
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
    /// The source's own correlation IDs (alarm ARN, Alertmanager fingerprint,
    /// Datadog event id, ...), as normalized: they find the run from the source.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub correlation_ids: std::collections::BTreeMap<String, String>,
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

/// The run an audit record is about: what was accepted, and by whom.
#[derive(Debug, Clone, Copy)]
pub struct RunRef<'a> {
    pub run_id: &'a RunId,
    pub correlation_id: &'a CorrelationId,
    pub event: &'a NormalizedEvent,
    pub submitted_by: Option<&'a str>,
}

impl AuditRecord {
    /// A run's one audit record, unsealed (`seq` 0, zero hashes): what was
    /// accepted, what the classifier answered, what the gates decided and
    /// what the actions did. Pure: the same inputs give the same record, so
    /// the worker, the outbox and a replay build it alike.
    pub fn unsealed(
        run: RunRef<'_>,
        record: &ClassificationRecord,
        decision: Decision,
        actions: Vec<ActionResult>,
        timestamps: RunTimestamps,
    ) -> AuditRecord {
        let event = run.event;
        AuditRecord {
            schema_version: AUDIT_SCHEMA_VERSION,
            seq: 0,
            run_id: run.run_id.clone(),
            correlation_id: run.correlation_id.clone(),
            event: EventMeta {
                source: event.source,
                origin: event.origin.clone(),
                status: event.status,
                environment: event.environment,
                service: event.service.clone(),
                alert_name: event.alert_name.clone(),
                fingerprint: event.fingerprint.clone(),
                occurred_at: event.occurred_at,
                submitted_by: run.submitted_by.map(str::to_owned),
                correlation_ids: event.correlation_ids.clone(),
            },
            classifier: record.info.clone(),
            model_output: record.raw_output.clone(),
            model_output_sha256: record.output_sha256.clone(),
            classification: record.classification.clone(),
            rejection: record.rejection.clone(),
            // A skipped run (duplicate, resolved) asked no model: nothing to record.
            model_latency_ms: record.skipped.is_none().then_some(record.latency_ms),
            prompt_sha256: record.prompt_sha256.clone(),
            model_usage: record
                .usage
                .clone()
                .and_then(|u| serde_json::from_value::<ModelUsage>(u).ok()),
            policy_version: decision.policy_version.clone(),
            decision,
            actions,
            timestamps,
            prev_hash: Sha256Hex::zero(),
            hash: Sha256Hex::zero(),
        }
    }

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
    /// One delivery attempt of an action ended (delivered, retry, dead, interrupted).
    ActionAttempt,
    /// An operator sent a dead-lettered action back to the outbox.
    ActionReplay,
    /// A signed checkpoint over the chain up to a record (Ed25519).
    Checkpoint,
    /// The gate started with a configuration or policy version other than the last one recorded.
    ConfigLoaded,
    /// A human approved or rejected a drafted action (or an approval the re-check refused).
    ReviewDecision,
    /// An operator capped (or uncapped) the autonomy of a service, a team or everything.
    AutonomyChange,
    /// An incident opened outside the gate (by a human, another tool) was
    /// reported, and compared with what the gate decided for that service.
    ExternalIncident,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::BreakerTransition => "breaker_transition",
            StepKind::ActionAttempt => "action_attempt",
            StepKind::ActionReplay => "action_replay",
            StepKind::Checkpoint => "checkpoint",
            StepKind::ConfigLoaded => "config_loaded",
            StepKind::ReviewDecision => "review_decision",
            StepKind::AutonomyChange => "autonomy_change",
            StepKind::ExternalIncident => "external_incident",
        }
    }
}

/// One delivery attempt of an action, as the audit chain keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptStep {
    /// The action's idempotency key (`tg:<run>:<kind>` and the like).
    pub action_key: String,
    /// `ticket`, `page` or `mim`.
    pub action: String,
    /// `create`, `update` or `resolve`.
    pub op: String,
    /// `servicenow`, `pagerduty`, `bridge`.
    pub target: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `delivered`, `failed` (will retry), `dead`, `interrupted`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// External IDs once delivered (`servicenow_number`, `pagerduty_dedup_key`, ...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub external_ids: std::collections::BTreeMap<String, String>,
    /// Bounded, secret-free error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the next attempt is due (a retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The outbound identity the attempt used: the OAuth client id and
    /// scopes, or which static credential (by configuration key). Never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// An operator's replay of a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayStep {
    pub action_key: String,
    /// The outbox row id the operator named.
    pub action_id: i64,
    /// Attempts made before the replay.
    pub attempts_before: u32,
}

/// A signed checkpoint: `signature` is Ed25519 over
/// [`checkpoint_message`]`(upto_seq, upto_hash, at)`, verifiable with the public key alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointStep {
    /// The last record the checkpoint covers; its hash covers every record before it.
    pub upto_seq: u64,
    pub upto_hash: Sha256Hex,
    /// First 16 hex digits of SHA-256 over the raw 32-byte public key.
    pub key_id: String,
    /// Always `ed25519`.
    pub alg: String,
    /// Hex of the 64-byte signature.
    pub signature: String,
}

/// The exact bytes a checkpoint signs.
pub fn checkpoint_message(upto_seq: u64, upto_hash: &Sha256Hex, at: &DateTime<Utc>) -> String {
    format!(
        "triage-gate-audit-checkpoint/v1\n{upto_seq}\n{}\n{}\n",
        upto_hash.as_str(),
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

/// A human's decision on a review item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewStep {
    pub action_key: String,
    /// The outbox row id of the draft.
    pub action_id: i64,
    /// `ticket`, `page` or `mim`.
    pub action: String,
    /// `approved` (the action goes to the outbox), `rejected`, `refused`
    /// (approved, but the re-check at approval time failed; the item stays
    /// open), or `expired` (nobody decided within `review.expire_after_secs`).
    pub verdict: String,
    /// The reviewer's reason (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The re-check at approval time, condition by condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<crate::decision::Condition>,
    /// Fields the reviewer changed before approving (`title`, `details`,
    /// `severity`), with their new values.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub edits: std::collections::BTreeMap<String, String>,
}

/// An incident that reached an incident tool by another path (a human opened
/// it, another integration did), matched to the gate's decision for the same
/// service: shadow evidence for moving the service up a level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalStep {
    /// The system that holds it (`servicenow`, `pagerduty`, ...).
    pub system: String,
    /// Its identifier there (`INC0012345`, a PagerDuty incident id).
    pub external_id: String,
    /// `ticket`, `page` or `mim`.
    pub action: String,
    /// Who opened it, as the reporter said (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_by: Option<String>,
    pub opened_at: DateTime<Utc>,
    /// How the run was found: `correlation_id` or `service_window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<String>,
    /// The gates' own outcome for this action on the matched run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_outcome: Option<crate::decision::Outcome>,
    /// `agreed` (the gate would have done it too), `disagreed` (the gate
    /// would not have: a miss), `own` (the gate did it itself: not evidence)
    /// or `unmatched` (no decided run of the service in the window).
    pub verdict: String,
}

/// A runtime autonomy cap set or lifted (the kill switch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AutonomyStep {
    /// `all`, `team:<team>` or `service:<service>`.
    pub scope: String,
    /// The cap before (`None`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<crate::AutonomyLevel>,
    /// The cap after (`None`: lifted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<crate::AutonomyLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a start-up loaded: recorded when it differs from the last record of this kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigStep {
    pub policy_version: String,
    /// SHA-256 of the effective configuration's canonical JSON (secret values are never in it: only references).
    pub config_sha256: Sha256Hex,
    /// The previous values, when there was a previous record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_policy_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_config_sha256: Option<Sha256Hex>,
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
/// per later step (breaker transitions, action attempts, replays, checkpoints,
/// configuration loads). Hashed and chained like [`AuditRecord`];
/// told apart from it by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    pub schema_version: u32,
    pub kind: StepKind,
    /// Position in the chain, from 1 (shared with run records).
    pub seq: u64,
    /// Unique per step (`breaker:<environment>:<storm_id>:<to>`,
    /// `attempt:<action key>:<n>`, `replay:<action id>:<n>`, `checkpoint:<upto seq>`,
    /// `config:<sha256>`).
    pub record_id: String,
    pub at: DateTime<Utc>,
    /// Who or what caused it: the run whose event moved the breaker,
    /// `none:breaker-tick` for the timer, `outbox` for an attempt, the
    /// operator's identity for a replay, `gate` for checkpoints and start-up.
    pub actor: String,
    /// The run the step belongs to (attempts, replays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<CorrelationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<AttemptStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autonomy: Option<AutonomyStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalStep>,
    pub prev_hash: Sha256Hex,
    pub hash: Sha256Hex,
}

impl StepRecord {
    /// An unsealed step record with no detail yet: set the field that matches `kind`.
    pub fn new(
        kind: StepKind,
        record_id: impl Into<String>,
        at: DateTime<Utc>,
        actor: impl Into<String>,
    ) -> StepRecord {
        StepRecord {
            schema_version: AUDIT_SCHEMA_VERSION,
            kind,
            seq: 0,
            record_id: record_id.into(),
            at,
            actor: actor.into(),
            run_id: None,
            correlation_id: None,
            breaker: None,
            attempt: None,
            replay: None,
            checkpoint: None,
            config: None,
            review: None,
            autonomy: None,
            external: None,
            prev_hash: Sha256Hex::zero(),
            hash: Sha256Hex::zero(),
        }
    }

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;

    use super::*;
    use crate::event::{Impact, ImpactLevel};
    use crate::{ActionKind, AutonomyLevel};

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .unwrap_or_default()
    }

    fn event() -> NormalizedEvent {
        NormalizedEvent {
            source: Source::Alertmanager,
            origin: "prometheus".into(),
            status: AlertStatus::Firing,
            environment: Environment::Production,
            service: "checkout".into(),
            component: None,
            alert_name: "ErrorRate".into(),
            summary: "checkout errors".into(),
            error_signature: "errors".into(),
            fingerprint: Fingerprint("fp-1".into()),
            correlation_ids: BTreeMap::from([("trace".to_owned(), "t-1".to_owned())]),
            impact: Impact {
                level: ImpactLevel::High,
                evidence: Vec::new(),
            },
            log_pointers: Vec::new(),
            labels: BTreeMap::new(),
            occurred_at: at(0),
            received_at: at(1),
            sender: None,
        }
    }

    fn record(skipped: Option<&str>) -> ClassificationRecord {
        ClassificationRecord {
            info: ClassifierInfo {
                classifier: "rules".into(),
                model: None,
            },
            skipped: skipped.map(str::to_owned),
            raw_output: Some("{}".into()),
            output_sha256: None,
            classification: None,
            rejection: None,
            latency_ms: 7,
            prompt_sha256: None,
            usage: Some(serde_json::json!({"input_tokens": 10, "output_tokens": 3})),
        }
    }

    fn decision() -> Decision {
        Decision {
            policy_version: "v-1".into(),
            autonomy: AutonomyLevel::Shadow,
            actions: Vec::new(),
            duplicate_of: None,
            resolves: None,
            group: None,
            errors: Vec::new(),
        }
    }

    fn build(record: &ClassificationRecord) -> AuditRecord {
        let (run_id, correlation_id, event) = (
            RunId("run-1".into()),
            CorrelationId("corr-1".into()),
            event(),
        );
        let run = RunRef {
            run_id: &run_id,
            correlation_id: &correlation_id,
            event: &event,
            submitted_by: Some("jwt:alertmanager"),
        };
        let times = RunTimestamps {
            received_at: at(1),
            classified_at: at(2),
            decided_at: at(3),
            completed_at: at(4),
        };
        AuditRecord::unsealed(
            run,
            record,
            decision(),
            ActionResult::none_executed(),
            times,
        )
    }

    #[test]
    fn an_unsealed_record_carries_the_run_the_answer_and_the_decision() {
        let r = build(&record(None));
        assert_eq!(r.seq, 0);
        assert_eq!(r.hash, Sha256Hex::zero());
        assert_eq!(r.run_id.0, "run-1");
        assert_eq!(r.event.submitted_by.as_deref(), Some("jwt:alertmanager"));
        assert_eq!(
            r.event.correlation_ids.get("trace").map(String::as_str),
            Some("t-1")
        );
        assert_eq!(r.policy_version, "v-1");
        assert_eq!(r.model_latency_ms, Some(7));
        assert_eq!(r.model_usage.map(|u| u.input_tokens), Some(10));
        let kinds: Vec<ActionKind> = r.actions.iter().map(|a| a.action).collect();
        assert_eq!(kinds, ActionKind::ALL.to_vec());
        assert!(
            r.actions
                .iter()
                .all(|a| a.status == crate::ActionStatus::NotExecuted)
        );
        // Pure: the same inputs, the same record (and so the same hash once sealed).
        assert_eq!(build(&record(None)).compute_hash(), r.compute_hash());
    }

    #[test]
    fn a_run_that_asked_no_model_records_no_model_latency() {
        assert_eq!(build(&record(Some("duplicate"))).model_latency_ms, None);
    }
}
