//! One run's decision: [`step`], and the types it reads and returns.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tg_model::{
    ActionDecision, ActionKind, ActionOp, AlertStatus, AutonomyLevel, Classification,
    CorrelationId, Decision, Fingerprint, NormalizedEvent, Outcome, PlannedAction, Rejection,
    RunId,
};
use tg_policy::catalog::Catalog;
use tg_policy::{Facts, GateInput, Gates};
use tg_storm::{
    BreakerState, BucketState, DedupEntry, GroupEntry, GroupPage, Sighting, Signal, Transition,
    independent_signals,
};

use crate::plan::plan;
use crate::{
    StormSettings, budgets, group, review, routing_team, rules, storm, umbrella_service, window,
};

/// The state a decision reads, prefetched by the runtime for one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepState {
    /// The lowest runtime autonomy cap over `all`, the owning team and the service.
    pub autonomy_cap: Option<AutonomyLevel>,
    /// The suppression window for the event's fingerprint, if one was stored.
    pub dedup: Option<DedupEntry>,
    /// Stored paging bucket of the recommended team, if any.
    pub team_bucket: Option<BucketState>,
    /// Stored global paging bucket, if any.
    pub global_bucket: Option<BucketState>,
    /// Last sighting per origin for the event's service.
    pub signals: Vec<Signal>,
    /// An open MIM for the service: (run that opened it, when it lapses).
    pub open_mim: Option<(RunId, DateTime<Utc>)>,
    /// Stored paging bucket of the event's service, if any.
    pub service_bucket: Option<BucketState>,
    /// The storm breaker of the event's environment, if one was stored.
    pub breaker: Option<BreakerState>,
    /// Last sighting per service in the event's environment (breaker input).
    pub sightings: Vec<Sighting>,
    /// An open MIM for the environment's umbrella (`umbrella_service`).
    pub umbrella_mim: Option<(RunId, DateTime<Utc>)>,
    /// The stored group of the event's [`group_key`], if any.
    pub group: Option<GroupEntry>,
}

/// One run's input to the step.
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    pub run_id: &'a RunId,
    pub correlation_id: &'a CorrelationId,
    pub event: &'a NormalizedEvent,
    /// The validated classification, or why the model's answer was rejected.
    /// `None` when classification was skipped because the event is a duplicate or a resolution.
    pub classification: Option<Result<&'a Classification, &'a Rejection>>,
}

/// A state change the runtime must persist in the same transaction as the decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Opens (or re-opens, on escalation or after a resolution) the fingerprint's window.
    OpenDedup(DedupEntry),
    /// The source resolved the alert: the window stops suppressing; the entry is
    /// kept (marked resolved) so its last page time damps a flapping alert.
    CloseDedup(Fingerprint),
    PutBucket {
        key: String,
        state: BucketState,
    },
    /// `key` is [`signal_key`]: signals from staging never confirm a production MIM.
    RecordSignal {
        key: String,
        signal: Signal,
    },
    OpenMim {
        service: String,
        run_id: RunId,
        expires_at: DateTime<Utc>,
    },
    /// The service alerted in the environment (breaker input); sightings older
    /// than `prune_before` no longer count and may be deleted.
    RecordSighting {
        environment: String,
        sighting: Sighting,
        prune_before: DateTime<Utc>,
    },
    /// The environment's breaker state after this event.
    PutBreaker {
        environment: String,
        state: BreakerState,
    },
    /// The breaker opened or closed: recorded (table, metric, log) with the run that moved it.
    BreakerTransition {
        environment: String,
        run_id: RunId,
        transition: Transition,
    },
    /// A page the rate limit or the breaker held back (for the held-back summary).
    HoldPage(HeldPage),
    /// The group's state after this event.
    PutGroup(GroupEntry),
}

/// Why a page was held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// A paging budget is spent.
    Rate,
    /// The storm breaker is open.
    Breaker,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Rate => "rate",
            HoldReason::Breaker => "breaker",
        }
    }
}

/// One held-back page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldPage {
    pub team: String,
    pub service: String,
    pub environment: String,
    pub reason: HoldReason,
    /// The limit that held it: a bucket key (`page:service:checkout`) or the storm id.
    pub limit: String,
    pub run_id: RunId,
    pub at: DateTime<Utc>,
}

/// An action the decision produced: carried out now (`Execute`) or drafted for a human (`Review`).
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub outcome: Outcome,
    pub action: PlannedAction,
}

/// Everything a step returns.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    pub decision: Decision,
    pub planned: Vec<Planned>,
    pub effects: Vec<Effect>,
}

/// What the runtime may skip before calling a model: a duplicate needs no classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precheck {
    /// Classify, then step.
    Classify,
    /// A duplicate inside an open window: step without classifying.
    Duplicate { first_run_id: RunId },
    /// A resolution: nothing to classify.
    Resolved,
}

/// Decides whether a model call is needed at all (saves model calls in a storm).
pub fn precheck(state: &StepState, event: &NormalizedEvent, now: DateTime<Utc>) -> Precheck {
    if event.status == AlertStatus::Resolved {
        return Precheck::Resolved;
    }
    match &state.dedup {
        Some(d) if d.duplicate(event.impact.level, &event.origin, now) => Precheck::Duplicate {
            first_run_id: d.first_run_id.clone(),
        },
        _ => Precheck::Classify,
    }
}

/// The decision for one run. Pure: the same inputs always give the same output.
///
/// The stages, in order: a resolution resolves its group ([`group`]); every
/// firing event is a signal and a sighting for the breaker ([`storm`]); a
/// duplicate inside its window is suppressed ([`window`]); an answer that
/// broke the contract goes to a human ([`review`]); the gates judge the
/// classification with the facts ([`budgets`], signals, open MIMs); then each
/// action's verdict passes the storm rules in [`rules::STORM_RULES`]' order
/// and what may execute spends its budget and records its state.
pub fn step(
    gates: &Gates,
    catalog: &Catalog,
    settings: &StormSettings,
    state: &StepState,
    input: StepInput<'_>,
    now: DateTime<Utc>,
) -> StepOutput {
    let event = input.event;
    // A runtime cap (the kill switch) lowers the catalog's level, never raises it.
    let autonomy = state
        .autonomy_cap
        .map_or(catalog.autonomy_for(&event.service), |cap| {
            catalog.autonomy_for(&event.service).min(cap)
        });
    let paused = catalog.service(&event.service).is_some_and(|s| s.paused);
    let dedup_window = settings.dedup_window_for(event);
    let mut effects = Vec::new();

    if event.status == AlertStatus::Resolved {
        return group::resolved(gates, settings, state, input, autonomy, paused, effects);
    }

    let signal = storm::signal(settings, event, now, &mut effects);
    let obs = storm::observe(settings, catalog, state, input, now, &mut effects);
    let breaker = obs.state.clone();

    if let Some(decision) = window::duplicate(gates, autonomy, state, event, dedup_window, now) {
        storm::put_breaker(&mut effects, event, state.breaker.as_ref(), breaker);
        return StepOutput {
            decision,
            planned: Vec::new(),
            effects,
        };
    }
    let opened = window::open(settings, state, input, dedup_window, now);
    let window_at = effects.len();
    effects.push(Effect::OpenDedup(opened.entry.clone()));

    let classification = match review::classification(gates, autonomy, input.classification) {
        Ok(c) => c,
        Err(decision) => {
            storm::put_breaker(&mut effects, event, state.breaker.as_ref(), breaker);
            return StepOutput {
                decision: *decision,
                planned: Vec::new(),
                effects,
            };
        }
    };

    let grouping = group::join(
        settings,
        state,
        event,
        opened.open_ticket.as_ref(),
        dedup_window,
        now,
    );
    let owner_team = catalog.owner_team(&event.service);
    let team = routing_team(catalog, &event.service, classification);
    let budgets = budgets::page_budgets(settings, state, &event.service, team, now);
    let tightest = budgets::tightest(settings, &budgets, now);
    let signals = independent_signals(&state.signals, signal.as_ref(), now, settings.signal_window);
    let facts = Facts {
        page_budget_left: tightest.left,
        independent_signals: i64::try_from(signals.len()).unwrap_or(i64::MAX),
        mim_open: storm::open_mim(state.open_mim.as_ref(), now).is_some(),
    };
    let verdicts = gates.evaluate(&GateInput {
        service: &event.service,
        owner_team,
        environment: event.environment,
        source_impact: event.impact.level,
        classification,
        facts,
    });
    let umbrella = umbrella_service(event.environment);
    let umbrella_verdicts = storm::umbrella_verdicts(
        gates,
        settings,
        state,
        &breaker,
        &umbrella,
        owner_team,
        event,
        classification,
        facts,
        now,
    );

    let ctx = rules::Ctx {
        settings,
        dedup_window,
        tightest: &tightest,
        flap_hold: opened.flap_hold,
        page_open: opened.page_open,
        group_page: grouping.page.as_ref(),
        group_ticket: grouping.ticket.as_ref(),
        open_ticket: opened.open_ticket.as_ref(),
        storm_condition: storm::breaker_condition(settings, &breaker, &obs),
        storm: &obs.state,
        obs: &obs,
        umbrella: &umbrella,
        umbrella_before: breaker.umbrella_run.clone(),
        signals: &signals,
    };
    let mut draft = rules::Draft {
        window: opened.entry,
        group: grouping.entry,
        breaker,
    };
    let mut actions = Vec::with_capacity(verdicts.len());
    let mut planned = Vec::new();
    let mut errors = Vec::new();
    for own in verdicts {
        // In storm mode the MIM (and the storm's first ticket) is decided for the umbrella.
        let umbrella_verdict = storm::umbrella_verdict(
            umbrella_verdicts.as_deref(),
            own.action,
            &ctx,
            autonomy,
            paused,
            classification,
        );
        let for_umbrella = umbrella_verdict.is_some();
        let mut verdict = umbrella_verdict.unwrap_or(own);
        let (outcome, capped_by) = tg_policy::cap(
            autonomy,
            paused,
            verdict.action,
            classification.classification,
            verdict.outcome,
        );
        let mut w = rules::Working {
            action: verdict.action,
            for_umbrella,
            // The model asked, or its "no" went to review (the source says severe): a draft is made.
            wanted: verdict.requested || verdict.declined,
            gate_reason: verdict.reason.clone(),
            outcome,
            op: ActionOp::Create,
            conditions: std::mem::take(&mut verdict.conditions),
            reason: None,
            held: None,
        };
        rules::apply(&ctx, &mut draft, &mut w);
        execute(
            &ctx,
            &mut draft,
            &mut w,
            &budgets,
            input,
            team,
            now,
            &mut effects,
        );
        if let Some((reason, limit)) = w.held.clone()
            && w.wanted
        {
            effects.push(Effect::HoldPage(HeldPage {
                team: team.to_owned(),
                service: event.service.clone(),
                environment: event.environment.as_str().to_owned(),
                reason,
                limit,
                run_id: input.run_id.clone(),
                at: now,
            }));
        }
        if matches!(w.outcome, Outcome::Execute | Outcome::Review) && w.wanted {
            // (a suppressed escalation ticket plans nothing)
            let mut action = plan(w.action, input, classification, team);
            if w.for_umbrella {
                action = storm::umbrella_plan(action, &umbrella, &draft.breaker, &obs, settings);
            }
            if w.op == ActionOp::Update
                && let (Some(carrier), Some(g)) = (ctx.group_ticket, &draft.group)
            {
                action = group::work_note_plan(action, carrier, &g.key);
            }
            planned.push(Planned {
                outcome: w.outcome,
                action,
            });
        }
        errors.extend(verdict.errors.iter().cloned());
        let reason = match (&capped_by, w.reason) {
            (_, Some(storm)) => storm,
            (Some(cap), None) => format!("{} (gates: {})", cap, verdict.reason),
            (None, None) => verdict.reason,
        };
        actions.push(ActionDecision {
            action: verdict.action,
            op: w.op,
            outcome: w.outcome,
            requested: verdict.requested,
            gate_outcome: verdict.outcome,
            reason,
            conditions: w.conditions,
            capped_by,
        });
    }

    let rules::Draft {
        window,
        group,
        breaker,
    } = draft;
    if let Some(e) = effects.get_mut(window_at) {
        *e = Effect::OpenDedup(window);
    }
    let group_name = group.as_ref().map(|g| g.key.clone());
    if let Some(g) = group {
        effects.push(Effect::PutGroup(g));
    }
    storm::put_breaker(&mut effects, event, state.breaker.as_ref(), breaker);
    StepOutput {
        decision: Decision {
            policy_version: gates.version().to_owned(),
            autonomy,
            actions,
            duplicate_of: None,
            resolves: None,
            group: group_name,
            errors,
        },
        planned,
        effects,
    }
}

/// What an action that passed the storm rules and may execute changes: a
/// ticket it creates carries the window, the group or the storm; a page spends
/// one token of each of its budgets (and fails closed to review when one is
/// spent); a MIM opens its window.
#[allow(clippy::too_many_arguments)]
fn execute(
    ctx: &rules::Ctx<'_>,
    draft: &mut rules::Draft,
    w: &mut rules::Working,
    budgets: &[budgets::Budget; 3],
    input: StepInput<'_>,
    team: &str,
    now: DateTime<Utc>,
    effects: &mut Vec<Effect>,
) {
    if w.outcome != Outcome::Execute {
        return;
    }
    match w.action {
        ActionKind::Ticket if w.op == ActionOp::Create => {
            draft.window.ticket_run = Some(input.run_id.clone());
            if w.for_umbrella {
                draft.breaker.umbrella_run = Some(input.run_id.clone());
            } else if let Some(g) = draft.group.as_mut() {
                g.ticket_run = Some(input.run_id.clone());
            }
        }
        ActionKind::Ticket => {}
        ActionKind::Page => match budgets::take_page_tokens(budgets, now) {
            Some(taken) => {
                draft.window.paged_at = Some(now);
                if let Some(g) = draft.group.as_mut() {
                    g.page = Some(GroupPage {
                        run_id: input.run_id.clone(),
                        team: team.to_owned(),
                        dedup_key: format!("tg:{}", input.event.fingerprint),
                        at: now,
                    });
                }
                effects.extend(
                    taken
                        .into_iter()
                        .map(|(key, state)| Effect::PutBucket { key, state }),
                );
            }
            None => {
                // Unreachable while page.rate gates on the smallest budget; fail closed anyway.
                w.outcome = Outcome::Review;
                w.held = Some((HoldReason::Rate, ctx.tightest.key.clone()));
            }
        },
        ActionKind::Mim => {
            let service = if w.for_umbrella {
                draft.breaker.umbrella_mim_run = Some(input.run_id.clone());
                ctx.umbrella.to_owned()
            } else {
                input.event.service.clone()
            };
            draft.breaker.last_mim_at = Some(now);
            effects.push(Effect::OpenMim {
                service,
                run_id: input.run_id.clone(),
                expires_at: now + ctx.settings.mim_window,
            });
        }
    }
}
