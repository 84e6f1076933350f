//! The fingerprint's suppression window: a duplicate inside it is suppressed;
//! the first run opens it (and an escalation or a re-fire after a resolution
//! re-opens it), carrying the window's ticket and last page forward.

use chrono::{DateTime, Utc};
use tg_model::{Condition, Decision, NormalizedEvent, Outcome, RunId};
use tg_policy::{Gates, ids};
use tg_storm::DedupEntry;

use crate::{AutonomyLevel, StepInput, StepState, StormSettings, review};

/// A duplicate inside its fingerprint's window: the decision that suppresses
/// it in favour of the run that opened the window, if the event is one.
pub(crate) fn duplicate(
    gates: &Gates,
    autonomy: AutonomyLevel,
    state: &StepState,
    event: &NormalizedEvent,
    dedup_window: chrono::Duration,
    now: DateTime<Utc>,
) -> Option<Decision> {
    let d = state
        .dedup
        .as_ref()
        .filter(|d| d.duplicate(event.impact.level, &event.origin, now))?;
    let window_secs = dedup_window.num_seconds();
    let cond = Condition {
        id: ids::DEDUP_WINDOW.into(),
        description: "no earlier run with this fingerprint inside the suppression window".into(),
        passed: false,
        actual: format!(
            "duplicate of {} (window opened {})",
            d.first_run_id,
            d.opened_at.to_rfc3339()
        ),
        threshold: format!("none within {window_secs}s"),
    };
    let reason = format!("duplicate of run {} within {window_secs}s", d.first_run_id);
    Some(review::uniform(
        gates,
        autonomy,
        Outcome::Suppressed,
        &reason,
        &cond,
        Some(d.first_run_id.clone()),
    ))
}

/// The window this run opens, and what it carries over from the one before.
pub(crate) struct Opened {
    pub entry: DedupEntry,
    /// The run whose ticket is still open for the fingerprint.
    pub open_ticket: Option<RunId>,
    /// When the page still open for the fingerprint was sent.
    pub page_open: Option<DateTime<Utc>>,
    /// When the fingerprint was paged before it resolved (flap damping).
    pub flap_hold: Option<DateTime<Utc>>,
}

/// The first run of a fingerprint opens the window, whatever its outcome, so a
/// storm of one bad answer becomes one review item rather than thousands. An
/// escalation (higher impact inside the window) or a re-fire after a
/// resolution re-opens it; the last page time carries over (flap damping).
pub(crate) fn open(
    settings: &StormSettings,
    state: &StepState,
    input: StepInput<'_>,
    dedup_window: chrono::Duration,
    now: DateTime<Utc>,
) -> Opened {
    let event = input.event;
    let previous = state.dedup.as_ref();
    let mut entry = DedupEntry::open(
        event.fingerprint.clone(),
        input.run_id.clone(),
        now,
        dedup_window,
    )
    .with_impact(event.impact.level);
    entry.paged_at = previous.and_then(|d| d.paged_at);
    // An escalation, or a re-fire after a resolution, inside the window keeps the
    // window's ticket: no second incident for one flapping fault. With
    // `actions.resolve.ticket`, a group whose last alert resolved had its
    // ticket resolved remotely: a re-fire opens a new one.
    let open_ticket = open_ticket(settings, state, now);
    entry.ticket_run = open_ticket.clone();
    // The origins that reported the fingerprint in this window, this one included.
    let mut seen: Vec<String> = previous
        .filter(|d| now >= d.opened_at && now < d.expires_at)
        .map(|d| d.origins.clone())
        .unwrap_or_default();
    if !seen.contains(&event.origin) {
        seen.push(event.origin.clone());
        seen.sort();
    }
    entry.origins = seen;
    Opened {
        entry,
        open_ticket,
        // A confirmation or an escalation inside an open window does not page
        // again: the window's page is still open.
        page_open: open_page(previous, now, dedup_window),
        // A re-fire after a resolution must not page again inside the window of the last page.
        flap_hold: flapped_page(previous, now, dedup_window),
    }
}

/// The run whose ticket is still open for the fingerprint of `state.dedup`:
/// inside the window, and not resolved remotely (with `actions.resolve.ticket`
/// a group whose last alert resolved had its ticket resolved at the target).
pub(crate) fn open_ticket(
    settings: &StormSettings,
    state: &StepState,
    now: DateTime<Utc>,
) -> Option<RunId> {
    let ticket_resolved = |d: &DedupEntry| {
        settings.resolve.ticket
            && d.resolved
            && state
                .group
                .as_ref()
                .is_some_and(|g| g.resolved && g.ticket_run == d.ticket_run)
    };
    state
        .dedup
        .as_ref()
        .filter(|d| now >= d.opened_at && now < d.expires_at && !ticket_resolved(d))
        .and_then(|d| d.ticket_run.clone())
}

/// When the page still open for the fingerprint was sent: the window suppresses
/// and a page was executed within it.
pub(crate) fn open_page(
    dedup: Option<&DedupEntry>,
    now: DateTime<Utc>,
    window: chrono::Duration,
) -> Option<DateTime<Utc>> {
    dedup
        .filter(|d| d.suppresses(now) && d.paged_within(now, window))
        .and_then(|d| d.paged_at)
}

/// When the fingerprint was paged before its alert resolved, if that is within
/// `window` (flap damping: a re-fire does not page again).
pub(crate) fn flapped_page(
    dedup: Option<&DedupEntry>,
    now: DateTime<Utc>,
    window: chrono::Duration,
) -> Option<DateTime<Utc>> {
    dedup
        .filter(|d| d.resolved && d.paged_within(now, window))
        .and_then(|d| d.paged_at)
}

pub(crate) fn page_flap_condition(paged_at: DateTime<Utc>, window: chrono::Duration) -> Condition {
    Condition {
        id: ids::PAGE_FLAP.into(),
        description: "no page for this fingerprint within the suppression window".into(),
        passed: false,
        actual: format!(
            "paged at {} before the alert resolved",
            paged_at.to_rfc3339()
        ),
        threshold: format!("none within {}s", window.num_seconds()),
    }
}

pub(crate) fn page_open_condition(paged_at: DateTime<Utc>, window: chrono::Duration) -> Condition {
    Condition {
        id: ids::PAGE_OPEN.into(),
        description: "no page for this fingerprint is open in the suppression window".into(),
        passed: false,
        actual: format!("paged at {}", paged_at.to_rfc3339()),
        threshold: format!("none within {}s", window.num_seconds()),
    }
}

pub(crate) fn ticket_open_condition(first: &RunId) -> Condition {
    Condition {
        id: ids::TICKET_OPEN.into(),
        description: "no ticket is open for this fingerprint".into(),
        passed: false,
        actual: format!("ticket of run {first} is open"),
        threshold: "none open".into(),
    }
}
