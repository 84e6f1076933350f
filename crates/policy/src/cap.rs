//! Autonomy caps: how far a gate's `Execute` may be carried out for a service.
//!
//! Applied after the gates. The gates say whether an action is justified; the
//! autonomy level (and the kill switch) say whether the system may do it alone.

use tg_model::{ActionKind, AutonomyLevel, Outcome, Severity};

/// Caps a gate outcome by the service's autonomy level and kill switch.
///
/// Returns the final outcome and, when it differs from `gate`, why, in words
/// (recorded as `capped_by`).
///
/// Only an `Execute` is capped by the autonomy level. The kill switch is a hard
/// stop: a paused service's `Review` becomes `Skip` as well, because a human
/// approval must not carry out an action for a paused service.
pub fn cap(
    level: AutonomyLevel,
    paused: bool,
    action: ActionKind,
    severity: Severity,
    gate: Outcome,
) -> (Outcome, Option<String>) {
    if paused && matches!(gate, Outcome::Execute | Outcome::Review) {
        return (
            Outcome::Skip,
            Some("service paused (kill switch)".to_owned()),
        );
    }
    if gate != Outcome::Execute {
        return (gate, None);
    }
    let review = |why: &str| (Outcome::Review, Some(why.to_owned()));
    match (level, action) {
        (AutonomyLevel::Shadow, _) => {
            (Outcome::Skip, Some("shadow mode: recorded only".to_owned()))
        }
        (AutonomyLevel::Assist, _) => review("assist mode: drafted for approval"),
        (AutonomyLevel::Limited, ActionKind::Ticket) => match severity {
            Severity::Low | Severity::Medium => (Outcome::Execute, None),
            Severity::High | Severity::Sev1 => {
                review("limited autonomy: only low and medium tickets are created alone")
            }
        },
        (AutonomyLevel::Limited, ActionKind::Page) => {
            review("limited autonomy: pages need approval")
        }
        (AutonomyLevel::Limited, ActionKind::Mim) => {
            review("limited autonomy: major incidents need approval")
        }
        (AutonomyLevel::Paging, ActionKind::Ticket | ActionKind::Page) => (Outcome::Execute, None),
        (AutonomyLevel::Paging, ActionKind::Mim) => {
            review("paging autonomy: major incidents need approval")
        }
        (AutonomyLevel::Mim, _) => (Outcome::Execute, None),
    }
}
