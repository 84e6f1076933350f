//! Actions: what the engine plans, and what delivering them produced.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::classification::Severity;
use crate::event::{Environment, LogPointer};
use crate::ids::{CorrelationId, Fingerprint, RunId};

/// Bytes of a planned action's title (ServiceNow `short_description` default length).
pub const TITLE_BYTES_MAX: usize = 160;
/// Bytes of a planned action's details.
pub const DETAILS_BYTES_MAX: usize = 4000;

/// The actions a gate can allow.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// A ServiceNow incident.
    Ticket,
    /// A PagerDuty page.
    Page,
    /// A major-incident bridge: an incident proposed as major plus a chat announcement.
    Mim,
}

/// ServiceNow (tickets, work notes, resolves).
pub const TARGET_SERVICENOW: &str = "servicenow";
/// PagerDuty Events API v2 (pages, resolves).
pub const TARGET_PAGERDUTY: &str = "pagerduty";
/// The major-incident chat bridge alone.
pub const TARGET_BRIDGE: &str = "bridge";
/// A major incident: the ServiceNow major-incident proposal, then the chat bridge.
pub const TARGET_SERVICENOW_BRIDGE: &str = "servicenow+bridge";

impl ActionKind {
    pub const ALL: [ActionKind; 3] = [ActionKind::Ticket, ActionKind::Page, ActionKind::Mim];

    /// The system an action of this kind is carried out on, as recorded in
    /// action results and attempt records. The one kind -> target map: the
    /// executor and the outbox both read it.
    pub fn target(self) -> &'static str {
        match self {
            ActionKind::Ticket => TARGET_SERVICENOW,
            ActionKind::Page => TARGET_PAGERDUTY,
            ActionKind::Mim => TARGET_SERVICENOW_BRIDGE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Ticket => "ticket",
            ActionKind::Page => "page",
            ActionKind::Mim => "mim",
        }
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action does to its target's incident.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionOp {
    /// Open the incident (ServiceNow create, PagerDuty trigger, MIM bridge).
    #[default]
    Create,
    /// Add evidence to an open incident (a ServiceNow work note for a grouped alert).
    Update,
    /// Close the incident because the source resolved it (PagerDuty resolve,
    /// ServiceNow state Resolved when configured).
    Resolve,
}

impl ActionOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionOp::Create => "create",
            ActionOp::Update => "update",
            ActionOp::Resolve => "resolve",
        }
    }

    /// Serde helper: `create` is the default and is left out of the JSON.
    pub fn is_create(&self) -> bool {
        *self == ActionOp::Create
    }
}

/// An action the engine decided to carry out (or to draft for review), with
/// everything a target adapter needs except credentials and base URLs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlannedAction {
    pub kind: ActionKind,
    /// Create (the default), or update/resolve the incident another run opened.
    #[serde(default, skip_serializing_if = "ActionOp::is_create")]
    pub op: ActionOp,
    /// For `update` and `resolve`: the idempotency key of the create action whose
    /// incident this acts on (the ServiceNow `correlation_id` it was opened with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_key: Option<String>,
    pub run_id: RunId,
    pub correlation_id: CorrelationId,
    /// Unique per run and action; the outbox and the targets dedupe on it.
    pub idempotency_key: String,
    /// The dedup key sent to PagerDuty (derived from the fingerprint, so repeats merge).
    pub dedup_key: String,
    pub team: String,
    pub service: String,
    pub environment: Environment,
    pub severity: Severity,
    pub confidence: f64,
    pub fingerprint: Fingerprint,
    /// At most [`TITLE_BYTES_MAX`] bytes.
    pub title: String,
    /// At most [`DETAILS_BYTES_MAX`] bytes.
    pub details: String,
    pub links: Vec<LogPointer>,
}

/// What became of one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Not carried out (review, skip, suppressed, or shadow mode).
    NotExecuted,
    /// Waiting in the outbox.
    Pending,
    /// The target accepted it.
    Delivered,
    /// Gave up after the bounded retries (or a permanent error).
    Failed,
}

/// The result of carrying out (or not) one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionResult {
    pub action: ActionKind,
    pub status: ActionStatus,
    /// The system acted on (`servicenow`, `pagerduty`, `servicenow+bridge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// External IDs by kind (`servicenow_number`, `servicenow_sys_id`, `pagerduty_dedup_key`).
    #[serde(default)]
    pub external_ids: BTreeMap<String, String>,
    pub attempts: u32,
    /// The last error, if any (never contains secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ActionResult {
    /// The result of an action that was not executed (a draft, a skip, shadow mode).
    pub fn not_executed(action: ActionKind) -> Self {
        ActionResult {
            action,
            status: ActionStatus::NotExecuted,
            target: None,
            external_ids: BTreeMap::new(),
            attempts: 0,
            error: None,
        }
    }

    /// One not-executed result per action kind, in [`ActionKind::ALL`]'s order.
    pub fn none_executed() -> Vec<Self> {
        ActionKind::ALL
            .into_iter()
            .map(Self::not_executed)
            .collect()
    }
}
