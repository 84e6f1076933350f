//! Grouping: related alerts share one incident (one ticket with work notes,
//! one page), and the group's last resolution resolves what the gate opened.

use chrono::{DateTime, Utc};
use tg_model::action::{DETAILS_BYTES_MAX, TITLE_BYTES_MAX};
use tg_model::{
    ActionKind, ActionOp, AutonomyLevel, Condition, Decision, NormalizedEvent, Outcome,
    PlannedAction, RunId,
};
use tg_policy::{Gates, ids};
use tg_storm::{GroupEntry, GroupPage};

use crate::{
    Effect, Planned, StepInput, StepOutput, StepState, StormSettings, group_key, idempotency_key,
    review, truncate,
};

/// A resolution: nothing acts on it; the window stops suppressing, and the
/// group it leaves may be resolved ([`resolve_group`]).
pub(crate) fn resolved(
    gates: &Gates,
    settings: &StormSettings,
    state: &StepState,
    input: StepInput<'_>,
    autonomy: AutonomyLevel,
    paused: bool,
    mut effects: Vec<Effect>,
) -> StepOutput {
    let event = input.event;
    effects.push(Effect::CloseDedup(event.fingerprint.clone()));
    let cond = Condition {
        id: ids::EVENT_FIRING.into(),
        description: "only firing events can act".into(),
        passed: false,
        actual: "resolved".into(),
        threshold: "== firing".into(),
    };
    // The resolution is recorded against the run that opened the window, if any.
    let resolves = state
        .dedup
        .as_ref()
        .filter(|d| !d.resolved)
        .map(|d| d.first_run_id.clone());
    let reason = match &resolves {
        Some(r) => format!("the source resolved the alert first seen in run {r}"),
        None => "the source resolved the alert".to_owned(),
    };
    let mut decision = review::uniform(gates, autonomy, Outcome::Skip, &reason, &cond, None);
    decision.resolves = resolves;
    let planned = resolve_group(
        settings,
        state,
        input,
        autonomy,
        paused,
        &mut decision,
        &mut effects,
    );
    StepOutput {
        decision,
        planned,
        effects,
    }
}

/// The group a firing event joins, and what the group already carries.
pub(crate) struct Grouping {
    /// The group after this event (`None` when grouping is off).
    pub entry: Option<GroupEntry>,
    /// The run whose ticket the open group already has.
    pub ticket: Option<RunId>,
    /// The page that already covers the open group.
    pub page: Option<GroupPage>,
}

/// Grouping: a new alert of an open group attaches to the group's incident; a
/// new group starts with the fingerprint's open ticket, if any.
pub(crate) fn join(
    settings: &StormSettings,
    state: &StepState,
    event: &NormalizedEvent,
    open_ticket: Option<&RunId>,
    dedup_window: chrono::Duration,
    now: DateTime<Utc>,
) -> Grouping {
    let before = state.group.as_ref().filter(|g| g.is_open(now));
    let entry: Option<GroupEntry> =
        group_key(&settings.group, event).map(|key| match before.filter(|g| g.key == key) {
            Some(g) => {
                let mut g = g.clone();
                g.attach(&event.fingerprint, now, settings.group.window);
                g
            }
            None => {
                let mut g =
                    GroupEntry::open(key, event.fingerprint.clone(), now, settings.group.window);
                // A ticket still open for this fingerprint carries the new group too.
                g.ticket_run = open_ticket.cloned();
                g
            }
        });
    let key = entry.as_ref().map(|g| g.key.as_str());
    let ticket = before
        .filter(|g| Some(g.key.as_str()) == key)
        .and_then(|g| g.ticket_run.clone());
    let page = group_page(state.group.as_ref(), key, now, dedup_window).cloned();
    Grouping {
        entry,
        ticket,
        page,
    }
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

/// A resolution detaches the alert from its group; when it was the group's last
/// firing alert, the group's page (and, if configured, its ticket) is resolved,
/// once. Resolving only closes what the gate itself opened, so it needs no gate,
/// but shadow mode and a paused service still execute nothing.
fn resolve_group(
    settings: &StormSettings,
    state: &StepState,
    input: StepInput<'_>,
    autonomy: AutonomyLevel,
    paused: bool,
    decision: &mut Decision,
    effects: &mut Vec<Effect>,
) -> Vec<Planned> {
    let event = input.event;
    let Some(mut group) = state.group.clone() else {
        return Vec::new();
    };
    decision.group = Some(group.key.clone());
    let last = group.detach(&event.fingerprint);
    let firing = group.members.len();
    if !last {
        effects.push(Effect::PutGroup(group));
        return Vec::new();
    }
    group.resolved = true;
    let held = if paused {
        Some("service paused (kill switch)")
    } else if autonomy == AutonomyLevel::Shadow {
        Some("shadow mode: recorded only")
    } else {
        None
    };
    let resolved_cond = Condition {
        id: ids::GROUP_RESOLVED.into(),
        description: "the group's last firing alert resolved".into(),
        passed: true,
        actual: format!("{} ({firing} firing)", group.key),
        threshold: "0 firing".into(),
    };
    let mut planned = Vec::new();
    let targets = [
        (
            ActionKind::Ticket,
            settings.resolve.ticket,
            "actions.resolve.ticket",
            group.ticket_run.as_ref().map(|r| {
                (
                    idempotency_key(r, ActionKind::Ticket),
                    format!("tg:{}", event.fingerprint),
                    String::new(),
                    r.clone(),
                )
            }),
        ),
        (
            ActionKind::Page,
            settings.resolve.page,
            "actions.resolve.page",
            group.page.as_ref().map(|p| {
                (
                    idempotency_key(&p.run_id, ActionKind::Page),
                    p.dedup_key.clone(),
                    p.team.clone(),
                    p.run_id.clone(),
                )
            }),
        ),
    ];
    for (kind, enabled, key, parent) in targets {
        let Some((parent_key, dedup_key, team, parent_run)) = parent else {
            continue;
        };
        let Some(a) = decision.actions.iter_mut().find(|a| a.action == kind) else {
            continue;
        };
        a.conditions.push(resolved_cond.clone());
        a.conditions.push(Condition {
            id: ids::RESOLVE_ENABLED.into(),
            description: format!("{key} is on"),
            passed: enabled,
            actual: enabled.to_string(),
            threshold: "true".into(),
        });
        a.op = ActionOp::Resolve;
        if !enabled {
            a.reason = format!(
                "the group's last alert resolved; the {kind} of run {parent_run} is left open ({key} is off)"
            );
            continue;
        }
        a.gate_outcome = Outcome::Execute;
        if let Some(why) = held {
            a.capped_by = Some(why.to_owned());
            a.reason = format!(
                "the group's last alert resolved; not resolving the {kind} of run {parent_run}: {why}"
            );
            continue;
        }
        a.outcome = Outcome::Execute;
        a.reason =
            format!("the group's last alert resolved: resolving the {kind} of run {parent_run}");
        let mut action = resolution_plan(kind, input, &group.key, &parent_run);
        action.parent_key = Some(parent_key);
        action.dedup_key = dedup_key;
        if !team.is_empty() {
            action.team = team;
        }
        planned.push(Planned {
            outcome: Outcome::Execute,
            action,
        });
    }
    effects.push(Effect::PutGroup(group));
    planned
}

/// The resolve action for a group's incident, carried by the resolving run.
fn resolution_plan(
    kind: ActionKind,
    input: StepInput<'_>,
    group: &str,
    parent_run: &RunId,
) -> PlannedAction {
    let e = input.event;
    let details = format!(
        "Resolved by the source: {summary}\n\n{about}group: {group} (no alert firing)\n\
         opened by run: {parent_run}\nresolved by run: {run}\ncorrelation: {corr}\n",
        summary = e.summary,
        about = crate::plan::about(e),
        run = input.run_id,
        corr = input.correlation_id,
    );
    PlannedAction {
        kind,
        op: ActionOp::Resolve,
        parent_key: None,
        run_id: input.run_id.clone(),
        correlation_id: input.correlation_id.clone(),
        idempotency_key: idempotency_key(input.run_id, kind),
        dedup_key: format!("tg:{}", e.fingerprint),
        team: String::new(),
        service: e.service.clone(),
        environment: e.environment,
        severity: tg_model::Severity::Low,
        confidence: 1.0,
        fingerprint: e.fingerprint.clone(),
        title: truncate(
            &format!("Resolved: {}: {}", e.service, e.summary),
            TITLE_BYTES_MAX,
        ),
        details: truncate(&details, DETAILS_BYTES_MAX),
        links: e.log_pointers.clone(),
    }
}

/// Turns a ticket planned for a grouped alert into a work note on the group's ticket.
pub(crate) fn work_note_plan(
    mut action: PlannedAction,
    carrier: &RunId,
    group: &str,
) -> PlannedAction {
    action.op = ActionOp::Update;
    action.parent_key = Some(idempotency_key(carrier, ActionKind::Ticket));
    action.title = truncate(&format!("Grouped: {}", action.title), TITLE_BYTES_MAX);
    action.details = truncate(
        &format!(
            "New alert in {group} (ticket opened by run {carrier}):\n{}",
            action.details
        ),
        DETAILS_BYTES_MAX,
    );
    action
}
