//! A human's approval of a drafted action, decided at approval time by the
//! rules a decision applies ([`crate::rules`], each written once).
//!
//! The approval stands in for the model's request and for the policy's verdict
//! on it (confidence, severity, team, signals: what a human was asked to judge).
//! Everything the system guards against is evaluated again, on the state as it
//! is now, because a draft may be hours old:
//!
//! - the service's autonomy level and kill switch (`review.autonomy`);
//! - no other run opened this incident (`review.not_duplicate`, `ticket.open`;
//!   in storm mode an approved ticket is still the service's own: a human
//!   chose it, the umbrella carries only what the gates create alone);
//! - one ticket per group: the approved ticket becomes a work note on the
//!   group's ticket (`ticket.group`), or is refused when the group has its
//!   notes;
//! - a page: not while a page for the fingerprint or its group is open
//!   (`page.open`, `page.flap`, `page.group`), not in storm mode
//!   (`review.storm`), and only with a token in each paging budget
//!   (`review.rate:<bucket>`);
//! - a major incident: not while one is open for the service (`mim.not_open`)
//!   or, in storm mode, for the environment's umbrella (`storm.umbrella`).

use chrono::{DateTime, Utc};
use tg_model::{ActionKind, ActionOp, Condition, Outcome, PlannedAction, RunId};
use tg_policy::catalog::Catalog;
use tg_policy::ids;
use tg_storm::GroupPage;

use crate::group::work_note_plan;
use crate::{Effect, StepState, StormSettings, budgets, group, storm, umbrella_service, window};

/// The draft a human approved, with what only the store knows about it.
#[derive(Debug, Clone, Copy)]
pub struct Approval<'a> {
    /// The draft as stored (the reviewer's edits are applied after the check).
    pub planned: &'a PlannedAction,
    /// The group the decision put the run's alert in, if any.
    pub group: Option<&'a str>,
    /// Another run's executed create of the same kind for the same
    /// fingerprint inside the dedup window, if any.
    pub open_create: Option<&'a RunId>,
}

/// What the approval may do, and why, condition by condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Approved {
    /// Every condition passed: the action goes to the outbox.
    pub allowed: bool,
    pub conditions: Vec<Condition>,
    /// The action to send: the draft, or a work note on the group's ticket.
    pub action: PlannedAction,
    /// State to persist with the approval (tokens taken, the page or ticket
    /// recorded on the window and the group, the MIM opened). Empty when refused.
    pub effects: Vec<Effect>,
}

/// Decides a human's approval of `approval.planned` against `state` (loaded
/// for the draft's fingerprint, service, routing team and group, now). Pure.
pub fn approve(
    catalog: &Catalog,
    settings: &StormSettings,
    state: &StepState,
    approval: Approval<'_>,
    now: DateTime<Utc>,
) -> Approved {
    let p = approval.planned;
    let mut conditions = vec![Condition {
        id: ids::REVIEW_APPROVED.into(),
        description: "a human approved the draft, standing in for the model's request".into(),
        passed: true,
        actual: "approved".into(),
        threshold: "a reviewer's approval".into(),
    }];

    // The autonomy table decides what an approval may do, at approval time.
    let level = catalog.autonomy_for(&p.service);
    let level = state.autonomy_cap.map_or(level, |cap| level.min(cap));
    let paused = catalog.service(&p.service).is_some_and(|s| s.paused);
    let (capped, why) = tg_policy::cap(level, paused, p.kind, p.severity, Outcome::Execute);
    conditions.push(Condition {
        id: ids::REVIEW_AUTONOMY.into(),
        description: "the service's autonomy level lets an approved action be sent".into(),
        passed: matches!(capped, Outcome::Execute | Outcome::Review),
        actual: why.map_or_else(
            || level.as_str().to_owned(),
            |w| format!("{level}: {w}", level = level.as_str()),
        ),
        threshold: "above shadow and not paused".into(),
    });
    conditions.push(Condition {
        id: ids::REVIEW_NOT_DUPLICATE.into(),
        description: "no other run opened this incident since the draft".into(),
        passed: approval.open_create.is_none(),
        actual: approval
            .open_create
            .map_or_else(|| "none".to_owned(), |r| format!("opened by {r}")),
        threshold: "none".into(),
    });

    // The fingerprint's own window, as long as the event's (service or source override).
    let window = state
        .dedup
        .as_ref()
        .map_or(settings.dedup_window, |d| d.expires_at - d.opened_at);
    let breaker = state.breaker.as_ref().filter(|b| b.open);
    let mut action = p.clone();
    let mut effects = Vec::new();
    let mut dedup = state
        .dedup
        .clone()
        .filter(|d| d.fingerprint == p.fingerprint);
    let mut group = group::open_group(state.group.as_ref(), approval.group, now).cloned();
    match p.kind {
        ActionKind::Ticket => {
            let other = |r: &&RunId| **r != p.run_id;
            let open = window::open_ticket(settings, state, now);
            // The group's ticket, when another run carries it.
            let carried = group
                .as_mut()
                .and_then(|g| g.ticket_run.clone().map(|c| (g, c)))
                .filter(|(_, c)| *c != p.run_id);
            if p.op == ActionOp::Create
                && let Some(first) = open.as_ref().filter(other)
            {
                conditions.push(window::ticket_open_condition(first));
            } else if matches!(p.op, ActionOp::Create | ActionOp::Update)
                && let Some((g, carrier)) = carried
            {
                // One ticket per group: an approved ticket becomes a work
                // note on the group's (a drafted note already is one).
                let (fits, c) = group::group_note_condition(
                    &g.key,
                    &carrier,
                    g.notes,
                    settings.group.notes_max,
                );
                conditions.push(c);
                if fits {
                    if p.op == ActionOp::Create {
                        action = work_note_plan(action, &carrier, &g.key);
                    }
                    g.notes = g.notes.saturating_add(1);
                }
            } else if p.op == ActionOp::Create {
                // In storm mode the umbrella ticket carries what the gates
                // would create alone; a human approving this service's own
                // ticket chose it deliberately, so it is not folded in.
                if let Some(d) = dedup.as_mut() {
                    d.ticket_run = Some(p.run_id.clone());
                }
                if let Some(g) = group.as_mut().filter(|g| g.ticket_run.is_none()) {
                    g.ticket_run = Some(p.run_id.clone());
                }
            }
        }
        ActionKind::Page => {
            if let Some(at) = window::open_page(state.dedup.as_ref(), now, window) {
                conditions.push(window::page_open_condition(at, window));
            }
            if let Some(at) = window::flapped_page(state.dedup.as_ref(), now, window) {
                conditions.push(window::page_flap_condition(at, window));
            }
            if let Some(page) = group::group_page(state.group.as_ref(), approval.group, now, window)
            {
                conditions.push(group::page_group_condition(
                    page,
                    approval.group.unwrap_or_default(),
                    window,
                ));
            }
            conditions.push(Condition {
                id: ids::REVIEW_STORM.into(),
                description: "no individual pages while the environment is in storm mode".into(),
                passed: breaker.is_none(),
                actual: breaker.map_or_else(
                    || "closed".to_owned(),
                    |b| format!("open ({})", b.storm_id.as_deref().unwrap_or_default()),
                ),
                threshold: "closed".into(),
            });
            let budgets = budgets::page_budgets(settings, state, &p.service, &p.team, now);
            for b in &budgets {
                conditions.push(Condition {
                    id: format!("{}:{}", ids::REVIEW_RATE, b.key),
                    description: "a paging token is available".into(),
                    passed: b.state.take(b.cfg, now).is_some(),
                    actual: format!("{} tokens", b.state.available(b.cfg, now)),
                    threshold: ">= 1 token".into(),
                });
            }
            if let Some(taken) = budgets::take_page_tokens(&budgets, now) {
                effects.extend(
                    taken
                        .into_iter()
                        .map(|(key, state)| Effect::PutBucket { key, state }),
                );
            }
            if let Some(d) = dedup.as_mut() {
                d.paged_at = Some(now);
            }
            if let Some(g) = group.as_mut() {
                g.page = Some(GroupPage {
                    run_id: p.run_id.clone(),
                    team: p.team.clone(),
                    dedup_key: p.dedup_key.clone(),
                    at: now,
                });
            }
        }
        ActionKind::Mim => {
            if let Some(run) = storm::open_mim(state.open_mim.as_ref(), now) {
                conditions.push(storm::mim_open_condition(&p.service, run));
            }
            if breaker.is_some()
                && let Some(run) = storm::open_mim(state.umbrella_mim.as_ref(), now)
            {
                let umbrella = umbrella_service(p.environment);
                let mut c = storm::mim_open_condition(&umbrella, run);
                c.id = ids::STORM_UMBRELLA.into();
                c.description =
                    "in storm mode the environment's umbrella major incident carries every service"
                        .into();
                conditions.push(c);
            }
            effects.push(Effect::OpenMim {
                service: p.service.clone(),
                run_id: p.run_id.clone(),
                expires_at: now + settings.mim_window,
            });
        }
    }
    let allowed = conditions.iter().all(|c| c.passed);
    if allowed {
        if let Some(d) = dedup.filter(|d| Some(d) != state.dedup.as_ref()) {
            effects.push(Effect::OpenDedup(d));
        }
        if let Some(g) = group.filter(|g| Some(g) != state.group.as_ref()) {
            effects.push(Effect::PutGroup(g));
        }
    } else {
        effects.clear();
        action = p.clone();
    }
    Approved {
        allowed,
        conditions,
        action,
        effects,
    }
}
