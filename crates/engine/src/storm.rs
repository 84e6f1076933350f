//! Storm mode: signals and sightings, the environment's breaker, and the
//! umbrella incident that carries a storm while individual pages are held.

use chrono::{DateTime, Utc};
use tg_model::action::{DETAILS_BYTES_MAX, TITLE_BYTES_MAX};
use tg_model::{
    ActionKind, AutonomyLevel, Classification, Condition, NormalizedEvent, Outcome, PlannedAction,
    RunId,
};
use tg_policy::catalog::Catalog;
use tg_policy::{Facts, GateInput, GateVerdict, Gates, ids};
use tg_storm::{BreakerState, Observation, Sighting, Signal};

use crate::{Effect, StepInput, StepState, StormSettings, rules, signal_key, truncate};

/// A severe enough event is a signal, keyed by service and environment; the
/// unit of independence is the verified sender (docs/policy.md).
pub(crate) fn signal(
    settings: &StormSettings,
    event: &NormalizedEvent,
    now: DateTime<Utc>,
    effects: &mut Vec<Effect>,
) -> Option<Signal> {
    let signal = settings.is_signal(event.impact.level).then(|| Signal {
        sender: Signal::sender_of(event.sender.as_deref(), &event.origin),
        origin: event.origin.clone(),
        seen_at: now,
    })?;
    effects.push(Effect::RecordSignal {
        key: signal_key(event),
        signal: signal.clone(),
    });
    Some(signal)
}

/// The breaker sees every firing event, duplicates included: a storm is mostly
/// repeats. Records the sighting and any transition.
pub(crate) fn observe(
    settings: &StormSettings,
    catalog: &Catalog,
    state: &StepState,
    input: StepInput<'_>,
    now: DateTime<Utc>,
    effects: &mut Vec<Effect>,
) -> Observation {
    let event = input.event;
    // The storm's confirming signals are counted by sender too.
    let sender = Signal::sender_of(event.sender.as_deref(), &event.origin);
    let obs = tg_storm::observe(
        &settings.breaker,
        settings.breaker.open_threshold(catalog.services.len()),
        event.environment.as_str(),
        state.breaker.as_ref(),
        &state.sightings,
        Some(tg_storm::Current {
            service: &event.service,
            origin: &sender,
            run_id: input.run_id,
        }),
        now,
    );
    effects.push(Effect::RecordSighting {
        environment: event.environment.as_str().to_owned(),
        sighting: Sighting {
            service: event.service.clone(),
            seen_at: now,
        },
        prune_before: now - settings.breaker.window,
    });
    if let Some(t) = &obs.transition {
        effects.push(Effect::BreakerTransition {
            environment: event.environment.as_str().to_owned(),
            run_id: input.run_id.clone(),
            transition: t.clone(),
        });
    }
    obs
}

/// Storm mode: while the breaker is open the gates are also evaluated for the
/// environment's umbrella, with the origins of the whole storm as its signals.
#[allow(clippy::too_many_arguments)]
pub(crate) fn umbrella_verdicts(
    gates: &Gates,
    settings: &StormSettings,
    state: &StepState,
    breaker: &BreakerState,
    umbrella: &str,
    owner_team: Option<&str>,
    event: &NormalizedEvent,
    classification: &Classification,
    facts: Facts,
    now: DateTime<Utc>,
) -> Option<Vec<GateVerdict>> {
    breaker.open.then(|| {
        let mim_open = open_mim(state.umbrella_mim.as_ref(), now).is_some()
            || breaker
                .last_mim_at
                .is_some_and(|t| now >= t && now < t + settings.mim_window);
        gates.evaluate(&GateInput {
            service: umbrella,
            // The model's team is judged against the owner of the service it classified.
            owner_team,
            environment: event.environment,
            source_impact: event.impact.level,
            classification,
            facts: Facts {
                page_budget_left: facts.page_budget_left,
                independent_signals: i64::try_from(breaker.origins.len()).unwrap_or(i64::MAX),
                mim_open,
            },
        })
    })
}

/// The umbrella's verdict for `action`, when the action is decided for the
/// umbrella: a MIM always; a ticket once per storm, by the first run that may
/// open it (and not for a fingerprint whose own ticket is open); a page never.
pub(crate) fn umbrella_verdict(
    verdicts: Option<&[GateVerdict]>,
    action: ActionKind,
    ctx: &rules::Ctx<'_>,
    autonomy: AutonomyLevel,
    paused: bool,
    classification: &Classification,
) -> Option<GateVerdict> {
    verdicts?
        .iter()
        .find(|u| u.action == action)
        .filter(|u| match u.action {
            ActionKind::Mim => true,
            ActionKind::Ticket => {
                ctx.umbrella_before.is_none()
                    && ctx.open_ticket.is_none()
                    && tg_policy::cap(
                        autonomy,
                        paused,
                        u.action,
                        classification.classification,
                        u.outcome,
                    )
                    .0 == Outcome::Execute
            }
            ActionKind::Page => false,
        })
        .cloned()
}

/// The `run_id` a breaker transition records when a time check, not an event, moved it.
pub const TICK_RUN: &str = "none:breaker-tick";

/// A time check of one environment's open breaker, without an event: once the
/// cool-down below the closing threshold is over it closes, even if no further
/// alert arrives. Returns the effects to persist (none while it stays open).
pub fn tick_breaker(
    settings: &StormSettings,
    catalog: &Catalog,
    environment: &str,
    stored: &BreakerState,
    sightings: &[Sighting],
    now: DateTime<Utc>,
) -> Vec<Effect> {
    if !stored.open {
        return Vec::new();
    }
    let obs = tg_storm::observe(
        &settings.breaker,
        settings.breaker.open_threshold(catalog.services.len()),
        environment,
        Some(stored),
        sightings,
        None,
        now,
    );
    match obs.transition {
        Some(transition) => vec![
            Effect::BreakerTransition {
                environment: environment.to_owned(),
                run_id: RunId(TICK_RUN.to_owned()),
                transition,
            },
            Effect::PutBreaker {
                environment: environment.to_owned(),
                state: obs.state,
            },
        ],
        None => Vec::new(),
    }
}

/// Persists the breaker only when it changed (a closed, idle breaker costs no write).
pub(crate) fn put_breaker(
    effects: &mut Vec<Effect>,
    event: &NormalizedEvent,
    stored: Option<&BreakerState>,
    next: BreakerState,
) {
    if stored != Some(&next) {
        effects.push(Effect::PutBreaker {
            environment: event.environment.as_str().to_owned(),
            state: next,
        });
    }
}

/// The breaker as a condition: passed while closed.
pub(crate) fn breaker_condition(
    settings: &StormSettings,
    breaker: &BreakerState,
    obs: &tg_storm::Observation,
) -> Condition {
    let b = &settings.breaker;
    let window_secs = b.window.num_seconds();
    Condition {
        id: ids::STORM_BREAKER.into(),
        description: "the storm breaker of this environment is closed".into(),
        passed: !breaker.open,
        actual: if breaker.open {
            format!(
                "open since {} ({}): {} services alerting within {window_secs}s",
                breaker.since.to_rfc3339(),
                breaker.storm_id.as_deref().unwrap_or_default(),
                obs.services
            )
        } else {
            format!(
                "closed: {} services alerting within {window_secs}s",
                obs.services
            )
        },
        threshold: format!(
            "<= {} services (once open, closes at <= {} for {}s)",
            obs.open_threshold,
            b.close_services,
            b.cooldown.num_seconds()
        ),
    }
}

/// Turns an action planned for the event into the storm's umbrella action.
pub(crate) fn umbrella_plan(
    mut action: PlannedAction,
    umbrella: &str,
    breaker: &BreakerState,
    obs: &tg_storm::Observation,
    settings: &StormSettings,
) -> PlannedAction {
    let storm = breaker
        .storm_id
        .clone()
        .unwrap_or_else(|| umbrella.to_owned());
    let origins = breaker
        .origins
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let prefix = if action.kind == ActionKind::Mim {
        "MAJOR: "
    } else {
        ""
    };
    action.title = truncate(
        &format!(
            "{prefix}[{}] {umbrella}: storm, {} services alerting in {}",
            action.severity,
            obs.services,
            action.environment.as_str()
        ),
        TITLE_BYTES_MAX,
    );
    action.details = truncate(
        &format!(
            "Storm {storm}: {} services alerting within {}s (peak {}), origins: {origins}.\n\
             Individual pages are held while the breaker is open; this incident carries the storm.\n\
             Carried by the event below.\n\n{}",
            obs.services,
            settings.breaker.window.num_seconds(),
            breaker.peak_services,
            action.details
        ),
        DETAILS_BYTES_MAX,
    );
    action.service = umbrella.to_owned();
    action.dedup_key = format!("tg:{storm}");
    if let Some(team) = &settings.umbrella_team {
        action.team = team.clone();
    }
    action
}

/// The open major incident of `mim` at `now`: the run that opened it.
pub(crate) fn open_mim(mim: Option<&(RunId, DateTime<Utc>)>, now: DateTime<Utc>) -> Option<&RunId> {
    mim.filter(|(_, until)| *until > now).map(|(run, _)| run)
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
