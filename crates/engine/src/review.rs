//! What goes to a human before any gate is asked: an answer that broke the
//! classification contract, or no answer at all. And the uniform decision
//! those (and duplicates and resolutions) share.

use tg_model::{
    ActionDecision, ActionKind, ActionOp, AutonomyLevel, Classification, Condition, Decision,
    Outcome, Rejection, RunId,
};
use tg_policy::{Gates, ids};

/// The validated classification, or the decision that sends the run to review.
pub(crate) fn classification<'a>(
    gates: &Gates,
    autonomy: AutonomyLevel,
    answer: Option<Result<&'a Classification, &'a Rejection>>,
) -> Result<&'a Classification, Box<Decision>> {
    let (cond, reason) = match answer {
        Some(Ok(c)) => return Ok(c),
        Some(Err(rejection)) => (
            Condition {
                id: ids::CONTRACT_VALID.into(),
                description: "the model's answer satisfies the classification contract".into(),
                passed: false,
                actual: rejection.reason.clone(),
                threshold: "a valid classification".into(),
            },
            format!(
                "model answer rejected ({}): a human decides",
                rejection.reason
            ),
        ),
        None => (
            Condition {
                id: ids::CONTRACT_VALID.into(),
                description: "a classification is available".into(),
                passed: false,
                actual: "none".into(),
                threshold: "a valid classification".into(),
            },
            "no classification: a human decides".to_owned(),
        ),
    };
    Err(Box::new(uniform(
        gates,
        autonomy,
        Outcome::Review,
        &reason,
        &cond,
        None,
    )))
}

/// A decision with the same outcome for every action, for reasons that precede the gates.
pub(crate) fn uniform(
    gates: &Gates,
    autonomy: AutonomyLevel,
    outcome: Outcome,
    reason: &str,
    condition: &Condition,
    duplicate_of: Option<RunId>,
) -> Decision {
    Decision {
        policy_version: gates.version().to_owned(),
        autonomy,
        actions: ActionKind::ALL
            .into_iter()
            .map(|action| ActionDecision {
                action,
                op: ActionOp::Create,
                outcome,
                requested: false,
                gate_outcome: outcome,
                reason: reason.to_owned(),
                conditions: vec![condition.clone()],
                capped_by: None,
            })
            .collect(),
        duplicate_of,
        resolves: None,
        group: None,
        errors: Vec::new(),
    }
}
