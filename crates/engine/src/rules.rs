//! The storm-control rules a decision and an approval both apply, each written
//! once: [`crate::step`] applies them to the model's request, [`crate::approve`]
//! to a human's approval of a draft. Pure, like the rest of the crate.

use chrono::{DateTime, Utc};
use tg_model::{Condition, RunId};
use tg_policy::ids;
use tg_storm::{BucketConfig, BucketState, DedupEntry, GroupEntry, GroupPage};

use crate::{GLOBAL_BUCKET, StepState, StormSettings, service_bucket_key, team_bucket_key};

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

/// The page that covers the open group `key`, if one was sent within `window`.
pub(crate) fn group_page<'a>(
    group: Option<&'a GroupEntry>,
    key: Option<&str>,
    now: DateTime<Utc>,
    window: chrono::Duration,
) -> Option<&'a GroupPage> {
    open_group(group, key, now)
        .and_then(|g| g.page.as_ref())
        .filter(|p| now >= p.at && now - p.at < window)
}

/// The stored group, when it is `key` and still open at `now`.
pub(crate) fn open_group<'a>(
    group: Option<&'a GroupEntry>,
    key: Option<&str>,
    now: DateTime<Utc>,
) -> Option<&'a GroupEntry> {
    group.filter(|g| g.is_open(now) && key.is_some_and(|k| k == g.key))
}

/// The open major incident of `mim` at `now`: the run that opened it.
pub(crate) fn open_mim(mim: Option<&(RunId, DateTime<Utc>)>, now: DateTime<Utc>) -> Option<&RunId> {
    mim.filter(|(_, until)| *until > now).map(|(run, _)| run)
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

pub(crate) fn page_group_condition(
    page: &GroupPage,
    key: &str,
    window: chrono::Duration,
) -> Condition {
    Condition {
        id: ids::PAGE_GROUP.into(),
        description: "no page for this alert's group is open in the suppression window".into(),
        passed: false,
        actual: format!(
            "run {} paged {key} at {}",
            page.run_id,
            page.at.to_rfc3339()
        ),
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

/// One ticket per group: whether a related alert may add a work note to the
/// group's ticket (carried by run `carrier`), and the condition that says so.
/// `notes` counts the notes already added, this one excluded.
pub(crate) fn group_note_condition(
    key: &str,
    carrier: &RunId,
    notes: u32,
    max: u32,
) -> (bool, Condition) {
    let fits = notes < max;
    let condition = if fits {
        Condition {
            id: ids::TICKET_GROUP.into(),
            description: "one ticket per group: a related alert adds a work note".into(),
            passed: true,
            actual: format!("ticket of run {carrier} is open for {key}"),
            threshold: format!("work note {} of at most {max}", notes.saturating_add(1)),
        }
    } else {
        Condition {
            id: ids::TICKET_GROUP.into(),
            description: "one ticket per group: a related alert adds a work note".into(),
            passed: false,
            actual: format!("{notes} work notes on the ticket of run {carrier}"),
            threshold: format!("at most {max} per group (storm.group.notes_max)"),
        }
    };
    (fits, condition)
}

pub(crate) fn mim_open_condition(service: &str, run: &RunId) -> Condition {
    Condition {
        id: ids::MIM_NOT_OPEN.into(),
        description: "no major incident is already open for this service".into(),
        passed: false,
        actual: format!("the major incident of run {run} is open for {service}"),
        threshold: "none open".into(),
    }
}

/// One paging budget a page draws from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Budget {
    pub key: String,
    pub cfg: BucketConfig,
    /// The stored state, or full when the bucket was never used.
    pub state: BucketState,
}

/// The three budgets a page for `service` routed to `team` draws from, in
/// order: the service's, the team's, the global one.
pub(crate) fn page_budgets(
    settings: &StormSettings,
    state: &StepState,
    service: &str,
    team: &str,
    now: DateTime<Utc>,
) -> [Budget; 3] {
    let service_cfg = settings.service_bucket_for(service);
    let full = |cfg| BucketState::full(cfg, now);
    [
        Budget {
            key: service_bucket_key(service),
            cfg: service_cfg,
            state: state.service_bucket.unwrap_or_else(|| full(service_cfg)),
        },
        Budget {
            key: team_bucket_key(team),
            cfg: settings.team_bucket,
            state: state
                .team_bucket
                .unwrap_or_else(|| full(settings.team_bucket)),
        },
        Budget {
            key: GLOBAL_BUCKET.to_owned(),
            cfg: settings.global_bucket,
            state: state
                .global_bucket
                .unwrap_or_else(|| full(settings.global_bucket)),
        },
    ]
}

/// Takes one token from each budget: all three, or none (`None` when any is spent).
/// INVARIANT: an executed page spends one token of its service's, its team's
/// and the global budget.
pub(crate) fn take_page_tokens(
    budgets: &[Budget; 3],
    now: DateTime<Utc>,
) -> Option<Vec<(String, BucketState)>> {
    budgets
        .iter()
        .map(|b| b.state.take(b.cfg, now).map(|s| (b.key.clone(), s)))
        .collect()
}
