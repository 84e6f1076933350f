//! `Decision`: what the gates decided for each action, and why, condition by condition.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::action::{ActionKind, ActionOp};
use crate::{AutonomyLevel, RunId};

/// What happens to one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Carried out now.
    Execute,
    /// Sent to a human: a gate refused, the contract was broken, or autonomy caps it.
    Review,
    /// Nothing asked for it (or the event is a resolution).
    Skip,
    /// A duplicate of an earlier run inside the suppression window.
    Suppressed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Execute => "execute",
            Outcome::Review => "review",
            Outcome::Skip => "skip",
            Outcome::Suppressed => "suppressed",
        }
    }

    /// The outcome named by [`Outcome::as_str`].
    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Execute,
            Outcome::Review,
            Outcome::Skip,
            Outcome::Suppressed,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// One evaluated condition, with the value it saw and the threshold it needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Stable id (`page.confidence`), the `@id` of the policy that states it.
    pub id: String,
    /// What the condition requires, in words.
    pub description: String,
    pub passed: bool,
    /// The value seen (`0.74`, `staging`, `1`).
    pub actual: String,
    /// What was required (`>= 0.80`, `== production`, `>= 2`).
    pub threshold: String,
}

/// The decision for one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionDecision {
    pub action: ActionKind,
    /// What an `execute` does: open an incident (the default, left out), add a
    /// work note to the group's open one, or resolve one.
    #[serde(default, skip_serializing_if = "ActionOp::is_create")]
    pub op: ActionOp,
    pub outcome: Outcome,
    /// Whether the model asked for this action.
    pub requested: bool,
    /// The gates' verdict before the autonomy level was applied.
    pub gate_outcome: Outcome,
    /// The condition that settled the outcome, in words.
    pub reason: String,
    /// Every condition evaluated, passed or not, in policy order.
    pub conditions: Vec<Condition>,
    /// Set when a hard stop (autonomy, kill switch) overrode the gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capped_by: Option<String>,
}

/// What the gates decided for one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// SHA-256 of the loaded policy and catalog.
    pub policy_version: String,
    pub autonomy: AutonomyLevel,
    /// One entry per action, in the order ticket, page, mim.
    pub actions: Vec<ActionDecision>,
    /// Set when the run is a duplicate: the run it is suppressed in favour of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<RunId>,
    /// Set when the run is a resolution: the run that opened the fingerprint's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolves: Option<RunId>,
    /// The group the event belongs to (`storm.group.by`), when grouping applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Policy evaluation errors (any error means review, never execute).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Decision {
    pub fn get(&self, kind: ActionKind) -> Option<&ActionDecision> {
        self.actions.iter().find(|a| a.action == kind)
    }

    pub fn outcome(&self, kind: ActionKind) -> Option<Outcome> {
        self.get(kind).map(|a| a.outcome)
    }

    /// Whether this run opens a new incident of `kind` (an executed create,
    /// not a work note or a resolution).
    pub fn creates(&self, kind: ActionKind) -> bool {
        self.get(kind)
            .is_some_and(|a| a.outcome == Outcome::Execute && a.op == ActionOp::Create)
    }
}
