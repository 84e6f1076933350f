//! Condition ids the engine relies on, in one place.
//!
//! The engine annotates some of the policy's conditions by id (it names the
//! bucket behind `page.rate`, the origins behind `mim.signals`), and writes
//! conditions of its own (storm control, grouping, approvals). A policy that
//! renamed a condition the engine reads would silently lose that annotation, so
//! [`crate::Gates::load`] refuses a policy that lacks one of [`REQUIRED`].

use tg_model::ActionKind;

/// The smallest paging budget: the engine names the bucket behind the value.
pub const PAGE_RATE: &str = "page.rate";
/// Independent signals confirming impact: the engine lists the signals.
pub const MIM_SIGNALS: &str = "mim.signals";

/// The policy conditions the engine reads, with the action each belongs to.
pub const REQUIRED: [(ActionKind, &str); 2] = [
    (ActionKind::Page, PAGE_RATE),
    (ActionKind::Mim, MIM_SIGNALS),
];

// Conditions the engine writes itself (never in a policy).

/// Only firing events act.
pub const EVENT_FIRING: &str = "event.firing";
/// The suppression window of a fingerprint.
pub const DEDUP_WINDOW: &str = "dedup.window";
/// The model's answer satisfied the contract.
pub const CONTRACT_VALID: &str = "contract.valid";
/// Flap damping: no page inside the window of the last page.
pub const PAGE_FLAP: &str = "page.flap";
/// A page for this fingerprint is still open.
pub const PAGE_OPEN: &str = "page.open";
/// A page for this alert's group is still open.
pub const PAGE_GROUP: &str = "page.group";
/// The storm breaker of the environment.
pub const STORM_BREAKER: &str = "storm.breaker";
/// Decided for the storm's umbrella incident.
pub const STORM_UMBRELLA: &str = "storm.umbrella";
/// A ticket for this fingerprint is still open.
pub const TICKET_OPEN: &str = "ticket.open";
/// One ticket per group: a related alert adds a work note.
pub const TICKET_GROUP: &str = "ticket.group";
/// The group's last alert resolved.
pub const GROUP_RESOLVED: &str = "group.resolved";
/// `actions.resolve.*` allows the remote resolve.
pub const RESOLVE_ENABLED: &str = "resolve.enabled";
/// Approval: no other run opened this incident since the draft.
pub const REVIEW_NOT_DUPLICATE: &str = "review.not_duplicate";
/// Approval: a human approved the draft (stands in for the model's request).
pub const REVIEW_APPROVED: &str = "review.approved";
/// Approval: the service's autonomy level (and kill switch) at approval time.
pub const REVIEW_AUTONOMY: &str = "review.autonomy";
/// Approval: no major incident is open for the service (the shipped policy's
/// condition of the same id decides it for the model's request).
pub const MIM_NOT_OPEN: &str = "mim.not_open";
/// Approval: no individual pages in storm mode.
pub const REVIEW_STORM: &str = "review.storm";
/// Approval: a paging token is available (suffixed `:<bucket key>`).
pub const REVIEW_RATE: &str = "review.rate";
