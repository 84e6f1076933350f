//! The pipeline's decision step, written in exactly one place.
//!
//! A step declares what it reads ([`reads`]); the runtime loads those keys of
//! a whole wave into a [`MemState`] and calls [`decide_wave`], which for each
//! run loads its [`StepState`], calls [`step`] with the event, the validated
//! classification (or its rejection) and `now`, and applies the returned
//! [`Effect`]s to the `MemState` (the one place an effect's meaning is
//! written); the store then persists what the wave touched, with the
//! [`Decision`]s, in one transaction. The same function serves every store,
//! `policy test` and the engine's tests.
//!
//! This crate must never do I/O, read the clock, or execute an action: it only
//! says what should happen and why.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tg_model::action::{DETAILS_BYTES_MAX, TITLE_BYTES_MAX};
use tg_model::{
    ActionDecision, ActionKind, ActionOp, AlertStatus, AutonomyLevel, Classification, Condition,
    CorrelationId, Decision, Fingerprint, NormalizedEvent, Outcome, PlannedAction, Rejection,
    RunId,
};
use tg_policy::catalog::Catalog;
use tg_policy::{Facts, GateInput, Gates, ids};
use tg_storm::{
    BreakerConfig, BreakerState, BucketConfig, BucketState, DedupEntry, GroupEntry, GroupField,
    GroupPage, Sighting, Signal, Transition, independent_signals,
};

/// Storm-control settings the step needs (from configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StormSettings {
    /// Same fingerprint within this window: suppressed (unless overridden below).
    pub dedup_window: chrono::Duration,
    /// Per-service suppression windows, by the service name events carry.
    pub dedup_service_windows: BTreeMap<String, chrono::Duration>,
    /// Per-source suppression windows, by source (`alertmanager`, `splunk`, ...).
    pub dedup_source_windows: BTreeMap<String, chrono::Duration>,
    /// Window in which events from distinct senders count as independent signals.
    pub signal_window: chrono::Duration,
    /// The lowest source impact at which an event is a signal ([`Self::is_signal`]).
    pub signal_min_impact: tg_model::ImpactLevel,
    /// At most one MIM per service within this window.
    pub mim_window: chrono::Duration,
    /// Paging budget per team.
    pub team_bucket: BucketConfig,
    /// Paging budget across all teams.
    pub global_bucket: BucketConfig,
    /// Paging budget per service (unless overridden in `service_buckets`).
    pub service_bucket: BucketConfig,
    /// Per-service paging budgets, by the service name events carry.
    pub service_buckets: BTreeMap<String, BucketConfig>,
    /// Storm-mode circuit breaker, one per environment.
    pub breaker: BreakerConfig,
    /// Team of the storm's umbrella incident; `None`: the team the model
    /// recommended for the event that carries it.
    pub umbrella_team: Option<String>,
    /// Which alerts share one incident.
    pub group: GroupSettings,
    /// What a resolution closes remotely.
    pub resolve: ResolveSettings,
}

/// Grouping settings (`storm.group`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSettings {
    /// The fields whose values make the group key; the environment is always one.
    /// Empty: no grouping (each fingerprint is its own incident).
    pub by: Vec<GroupField>,
    /// A group stays open this long after its last new alert.
    pub window: chrono::Duration,
    /// Work notes one group's ticket receives at most; later alerts are suppressed.
    pub notes_max: u32,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            by: vec![GroupField::Service],
            window: chrono::Duration::minutes(30),
            notes_max: 50,
        }
    }
}

/// What a resolution closes (`actions.resolve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveSettings {
    /// Resolve the PagerDuty alert when the group's last alert resolves.
    pub page: bool,
    /// Set the ServiceNow incident Resolved too (many teams leave that to people).
    pub ticket: bool,
}

impl Default for ResolveSettings {
    fn default() -> Self {
        ResolveSettings {
            page: true,
            ticket: false,
        }
    }
}

/// The group an event belongs to: `environment=...,<field>=<value>,...`; a key
/// longer than [`tg_storm::group::GROUP_KEY_BYTES_MAX`] is replaced by its hash.
/// `None` when grouping is off.
pub fn group_key(settings: &GroupSettings, event: &NormalizedEvent) -> Option<String> {
    if settings.by.is_empty() {
        return None;
    }
    let mut key = format!("environment={}", event.environment.as_str());
    for f in &settings.by {
        key.push(',');
        key.push_str(&f.name());
        key.push('=');
        key.push_str(f.value(event));
    }
    if key.len() > tg_storm::group::GROUP_KEY_BYTES_MAX {
        key = format!(
            "sha256:{}",
            tg_model::hash::sha256_hex(key.as_bytes()).as_str()
        );
    }
    Some(key)
}

impl StormSettings {
    /// The suppression window of an event: its service's, else its source's, else the default.
    pub fn dedup_window_for(&self, event: &NormalizedEvent) -> chrono::Duration {
        self.dedup_service_windows
            .get(&event.service)
            .or_else(|| self.dedup_source_windows.get(event.source.as_str()))
            .copied()
            .unwrap_or(self.dedup_window)
    }

    /// Whether an event of source impact `level` is a signal: at
    /// `signal_min_impact` or above, or `unknown` (a source without a
    /// severity scale, such as a CloudWatch alarm, is not filtered by it).
    pub fn is_signal(&self, level: tg_model::ImpactLevel) -> bool {
        level == tg_model::ImpactLevel::Unknown || level >= self.signal_min_impact
    }

    /// The paging budget of a service: its override, or the per-service default.
    pub fn service_bucket_for(&self, service: &str) -> BucketConfig {
        self.service_buckets
            .get(service)
            .copied()
            .unwrap_or(self.service_bucket)
    }
}

impl Default for StormSettings {
    fn default() -> Self {
        StormSettings {
            dedup_window: chrono::Duration::minutes(10),
            dedup_service_windows: BTreeMap::new(),
            dedup_source_windows: BTreeMap::new(),
            signal_window: chrono::Duration::minutes(15),
            signal_min_impact: tg_model::ImpactLevel::High,
            mim_window: chrono::Duration::hours(1),
            team_bucket: BucketConfig {
                burst: 3,
                per_hour: 6,
            },
            global_bucket: BucketConfig {
                burst: 10,
                per_hour: 30,
            },
            service_bucket: BucketConfig {
                burst: 2,
                per_hour: 6,
            },
            service_buckets: BTreeMap::new(),
            breaker: BreakerConfig::default(),
            umbrella_team: None,
            group: GroupSettings::default(),
            resolve: ResolveSettings::default(),
        }
    }
}

/// The team an action for `service` is routed to, assigned to and charged to:
/// the catalog owner ([`Catalog::owner_team`]). Only when nobody owns the
/// service is it the model's recommendation, and then the shipped policy sends
/// every action to review (`ticket.owner`, `page.team`, `mim.team`): the
/// model's team reaches a target only through a human's approval.
pub fn routing_team<'a>(catalog: &'a Catalog, service: &str, c: &'a Classification) -> &'a str {
    catalog
        .owner_team(service)
        .unwrap_or(c.recommended_team.as_str())
}

/// Signals are counted per service and environment.
pub fn signal_key(event: &NormalizedEvent) -> String {
    signal_key_for(&event.service, event.environment)
}

/// [`signal_key`] of a service in an environment.
pub fn signal_key_for(service: &str, environment: tg_model::Environment) -> String {
    format!("{service}@{}", environment.as_str())
}

/// The key of the global paging bucket.
pub const GLOBAL_BUCKET: &str = "page:global";

/// The key of a team's paging bucket.
pub fn team_bucket_key(team: &str) -> String {
    format!("page:team:{team}")
}

/// The key of a service's paging bucket.
pub fn service_bucket_key(service: &str) -> String {
    format!("page:service:{service}")
}

/// The synthetic service of an environment's storm umbrella incident.
pub fn umbrella_service(environment: tg_model::Environment) -> String {
    format!("storm:{}", environment.as_str())
}

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
    let dedup_window = settings.dedup_window_for(event);
    let mut effects = Vec::new();

    if event.status == AlertStatus::Resolved {
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
        let mut decision = uniform(gates, autonomy, Outcome::Skip, &reason, &cond, None);
        decision.resolves = resolves;
        let paused = catalog.service(&event.service).is_some_and(|s| s.paused);
        let planned = resolve_group(
            settings,
            state,
            input,
            autonomy,
            paused,
            &mut decision,
            &mut effects,
        );
        return StepOutput {
            decision,
            planned,
            effects,
        };
    }

    // A signal is (verified sender, origin); only a severe enough event is one.
    let sender = Signal::sender_of(event.sender.as_deref(), &event.origin);
    let signal = settings.is_signal(event.impact.level).then(|| Signal {
        sender: sender.clone(),
        origin: event.origin.clone(),
        seen_at: now,
    });
    if let Some(signal) = &signal {
        effects.push(Effect::RecordSignal {
            key: signal_key(event),
            signal: signal.clone(),
        });
    }

    // The breaker sees every firing event, duplicates included: a storm is mostly repeats.
    let obs = tg_storm::observe(
        &settings.breaker,
        settings.breaker.open_threshold(catalog.services.len()),
        event.environment.as_str(),
        state.breaker.as_ref(),
        &state.sightings,
        Some(tg_storm::Current {
            service: &event.service,
            // The storm's confirming signals are counted by sender too.
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
    let mut breaker = obs.state.clone();

    if let Some(d) = state
        .dedup
        .as_ref()
        .filter(|d| d.duplicate(event.impact.level, &event.origin, now))
    {
        let window_secs = dedup_window.num_seconds();
        let cond = Condition {
            id: ids::DEDUP_WINDOW.into(),
            description: "no earlier run with this fingerprint inside the suppression window"
                .into(),
            passed: false,
            actual: format!(
                "duplicate of {} (window opened {})",
                d.first_run_id,
                d.opened_at.to_rfc3339()
            ),
            threshold: format!("none within {window_secs}s"),
        };
        let reason = format!("duplicate of run {} within {window_secs}s", d.first_run_id);
        put_breaker(&mut effects, event, state.breaker.as_ref(), breaker);
        return StepOutput {
            decision: uniform(
                gates,
                autonomy,
                Outcome::Suppressed,
                &reason,
                &cond,
                Some(d.first_run_id.clone()),
            ),
            planned: Vec::new(),
            effects,
        };
    }

    // The first run of a fingerprint opens the window, whatever its outcome, so a
    // storm of one bad answer becomes one review item rather than thousands. An
    // escalation (higher impact inside the window) or a re-fire after a
    // resolution re-opens it; the last page time carries over (flap damping).
    let previous = state.dedup.as_ref();
    let mut window = DedupEntry::open(
        event.fingerprint.clone(),
        input.run_id.clone(),
        now,
        dedup_window,
    )
    .with_impact(event.impact.level);
    window.paged_at = previous.and_then(|d| d.paged_at);
    // An escalation, or a re-fire after a resolution, inside the window keeps the
    // window's ticket: no second incident for one flapping fault. (The ticket is
    // not closed remotely on resolution yet, so a new one would be a duplicate.)
    // With `actions.resolve.ticket`, a group whose last alert resolved had its
    // ticket resolved remotely: a re-fire opens a new one.
    let open_ticket = rules::open_ticket(settings, state, now);
    window.ticket_run = open_ticket.clone();
    // The origins that reported the fingerprint in this window, this one included.
    let mut seen: Vec<String> = previous
        .filter(|d| now >= d.opened_at && now < d.expires_at)
        .map(|d| d.origins.clone())
        .unwrap_or_default();
    if !seen.contains(&event.origin) {
        seen.push(event.origin.clone());
        seen.sort();
    }
    window.origins = seen;
    // A confirmation or an escalation inside an open window does not page again:
    // the window's page is still open.
    let page_open = rules::open_page(previous, now, dedup_window);
    // A re-fire after a resolution must not page again inside the window of the last page.
    let flap_hold = rules::flapped_page(previous, now, dedup_window);
    let window_at = effects.len();
    effects.push(Effect::OpenDedup(window.clone()));

    let classification = match input.classification {
        Some(Ok(c)) => c,
        Some(Err(rejection)) => {
            let cond = Condition {
                id: ids::CONTRACT_VALID.into(),
                description: "the model's answer satisfies the classification contract".into(),
                passed: false,
                actual: rejection.reason.clone(),
                threshold: "a valid classification".into(),
            };
            let reason = format!(
                "model answer rejected ({}): a human decides",
                rejection.reason
            );
            put_breaker(&mut effects, event, state.breaker.as_ref(), breaker);
            return StepOutput {
                decision: uniform(gates, autonomy, Outcome::Review, &reason, &cond, None),
                planned: Vec::new(),
                effects,
            };
        }
        None => {
            let cond = Condition {
                id: ids::CONTRACT_VALID.into(),
                description: "a classification is available".into(),
                passed: false,
                actual: "none".into(),
                threshold: "a valid classification".into(),
            };
            put_breaker(&mut effects, event, state.breaker.as_ref(), breaker);
            return StepOutput {
                decision: uniform(
                    gates,
                    autonomy,
                    Outcome::Review,
                    "no classification: a human decides",
                    &cond,
                    None,
                ),
                planned: Vec::new(),
                effects,
            };
        }
    };

    // Grouping: a new alert of an open group attaches to the group's incident.
    let group_before = state.group.as_ref().filter(|g| g.is_open(now));
    let mut group: Option<GroupEntry> = group_key(&settings.group, event).map(|key| {
        match group_before.filter(|g| g.key == key) {
            Some(g) => {
                let mut g = g.clone();
                g.attach(&event.fingerprint, now, settings.group.window);
                g
            }
            None => {
                let mut g =
                    GroupEntry::open(key, event.fingerprint.clone(), now, settings.group.window);
                // A ticket still open for this fingerprint carries the new group too.
                g.ticket_run = open_ticket.clone();
                g
            }
        }
    });
    let group_ticket = group_before
        .filter(|g| Some(&g.key) == group.as_ref().map(|n| &n.key))
        .and_then(|g| g.ticket_run.clone());
    let group_page = rules::group_page(
        state.group.as_ref(),
        group.as_ref().map(|g| g.key.as_str()),
        now,
        dedup_window,
    )
    .cloned();

    let owner_team = catalog.owner_team(&event.service);
    let team = routing_team(catalog, &event.service, classification);
    let budgets = rules::page_budgets(settings, state, &event.service, team, now);
    // The tightest budget names the limit; on a tie the most specific one.
    let tightest = budgets
        .iter()
        .map(|b| (b.key.clone(), b.cfg, b.state.available(b.cfg, now)))
        .min_by_key(|(_, _, left)| *left)
        .unwrap_or((GLOBAL_BUCKET.to_owned(), settings.global_bucket, 0));
    let signals = independent_signals(&state.signals, signal.as_ref(), now, settings.signal_window);
    let mim_open = rules::open_mim(state.open_mim.as_ref(), now).is_some();
    let facts = Facts {
        page_budget_left: tightest.2,
        independent_signals: i64::try_from(signals.len()).unwrap_or(i64::MAX),
        mim_open,
    };
    let verdicts = gates.evaluate(&GateInput {
        service: &event.service,
        owner_team,
        environment: event.environment,
        source_impact: event.impact.level,
        classification,
        facts,
    });

    // Storm mode: the MIM gate (and, until one exists, the ticket gate) is
    // evaluated for the environment's umbrella, with the origins of the whole storm.
    let umbrella = umbrella_service(event.environment);
    let storm_origins = breaker.origins.clone();
    let umbrella_verdicts = breaker.open.then(|| {
        let mim_open = rules::open_mim(state.umbrella_mim.as_ref(), now).is_some()
            || breaker
                .last_mim_at
                .is_some_and(|t| now >= t && now < t + settings.mim_window);
        gates.evaluate(&GateInput {
            service: &umbrella,
            // The model's team is judged against the owner of the service it classified.
            owner_team,
            environment: event.environment,
            source_impact: event.impact.level,
            classification,
            facts: Facts {
                page_budget_left: facts.page_budget_left,
                independent_signals: i64::try_from(storm_origins.len()).unwrap_or(i64::MAX),
                mim_open,
            },
        })
    });
    let storm_condition = breaker_condition(settings, &breaker, &obs);
    let umbrella_before = breaker.umbrella_run.clone();

    let paused = catalog.service(&event.service).is_some_and(|s| s.paused);
    let mut actions = Vec::with_capacity(verdicts.len());
    let mut planned = Vec::new();
    let mut errors = Vec::new();
    for own in verdicts {
        let for_umbrella_verdict = umbrella_verdicts
            .as_ref()
            .and_then(|v| v.iter().find(|u| u.action == own.action))
            .filter(|u| match u.action {
                ActionKind::Mim => true,
                // One umbrella ticket per storm, carried by the first run that may open it.
                // (not by a fingerprint that already has a ticket open: one open ticket per fingerprint).
                ActionKind::Ticket => {
                    umbrella_before.is_none()
                        && open_ticket.is_none()
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
            .cloned();
        let for_umbrella = for_umbrella_verdict.is_some();
        let verdict = for_umbrella_verdict.unwrap_or(own);
        // The model asked, or its "no" went to review (the source says severe): a draft is made.
        let wanted = verdict.requested || verdict.declined;
        let (mut outcome, capped_by) = tg_policy::cap(
            autonomy,
            paused,
            verdict.action,
            classification.classification,
            verdict.outcome,
        );
        let mut conditions = verdict.conditions;
        let mut op = ActionOp::Create;
        // Set when storm control overrides the gates' outcome (flap damping, an open ticket, the breaker).
        let mut flap_reason = None;
        let mut held = None;
        if verdict.action == ActionKind::Page {
            // Name the bucket behind the budget, so a refusal says which limit held.
            let (key, cfg, _) = &tightest;
            for c in conditions.iter_mut().filter(|c| c.id == ids::PAGE_RATE) {
                c.actual = format!("{} ({key})", c.actual);
                c.threshold = format!(
                    "{} ({key}: burst {}, {}/h)",
                    c.threshold, cfg.burst, cfg.per_hour
                );
                if !c.passed && outcome == Outcome::Review {
                    held = Some((HoldReason::Rate, key.clone()));
                    flap_reason = Some(format!(
                        "{}; limit {key} (burst {}, {}/h) is spent",
                        verdict.reason, cfg.burst, cfg.per_hour
                    ));
                }
            }
        }
        if verdict.action == ActionKind::Page
            && let Some(paged_at) = flap_hold
        {
            let window_secs = dedup_window.num_seconds();
            conditions.push(rules::page_flap_condition(paged_at, dedup_window));
            if outcome == Outcome::Execute {
                outcome = Outcome::Review;
                flap_reason = Some(format!(
                    "the alert flapped: it was paged within {window_secs}s before it resolved"
                ));
            }
        }
        if verdict.action == ActionKind::Page
            && let Some(paged_at) = page_open
        {
            conditions.push(rules::page_open_condition(paged_at, dedup_window));
            if outcome == Outcome::Execute {
                outcome = Outcome::Suppressed;
                held = None;
                flap_reason = Some(format!(
                    "the page sent at {} is still open for this fingerprint",
                    paged_at.to_rfc3339()
                ));
            }
        }
        if verdict.action == ActionKind::Page
            && page_open.is_none()
            && let Some(p) = &group_page
        {
            let key = group.as_ref().map(|g| g.key.as_str()).unwrap_or_default();
            conditions.push(rules::page_group_condition(p, key, dedup_window));
            if outcome == Outcome::Execute {
                outcome = Outcome::Suppressed;
                held = None;
                flap_reason = Some(format!(
                    "the page of run {} covers group {key}; this alert's evidence goes to the group's ticket",
                    p.run_id
                ));
            }
        }
        if verdict.action == ActionKind::Page {
            conditions.push(storm_condition.clone());
            // INVARIANT: while the breaker is open no individual page is sent or drafted.
            if breaker.open && wanted && matches!(outcome, Outcome::Execute | Outcome::Review) {
                outcome = Outcome::Suppressed;
                let storm = breaker.storm_id.clone().unwrap_or_default();
                held = Some((HoldReason::Breaker, storm.clone()));
                flap_reason = Some(format!(
                    "storm mode ({storm}): individual pages are held; the umbrella incident carries the storm"
                ));
            }
        }
        if verdict.action == ActionKind::Mim {
            // Name the confirming senders (and the origins they claimed) next
            // to the count, so a reader sees which signals agreed, and say
            // when the gate could not vouch for their independence.
            let listed: Vec<String> = if for_umbrella {
                storm_origins.iter().cloned().collect()
            } else {
                signals
                    .iter()
                    .map(|(sender, origin)| format!("{sender} ({origin})"))
                    .collect()
            };
            let unverified = if for_umbrella {
                storm_origins.iter().any(|s| !Signal::verified(s))
            } else {
                signals.keys().any(|s| !Signal::verified(s))
            };
            for c in conditions.iter_mut().filter(|c| c.id == ids::MIM_SIGNALS) {
                c.actual = format!("{} ({})", c.actual, listed.join(", "));
                if unverified {
                    c.actual.push_str(
                        "; senders not verified (identity.inbound.mode none): independence is not vouched for",
                    );
                }
            }
        }
        if for_umbrella {
            conditions.push(Condition {
                id: ids::STORM_UMBRELLA.into(),
                description:
                    "in storm mode this action is decided for the environment's umbrella incident"
                        .into(),
                passed: true,
                actual: format!(
                    "{umbrella} ({}: {} services alerting)",
                    breaker.storm_id.as_deref().unwrap_or_default(),
                    obs.services
                ),
                threshold: format!("breaker open above {} services", obs.open_threshold),
            });
        }
        if verdict.action == ActionKind::Ticket
            && !for_umbrella
            && breaker.open
            && outcome == Outcome::Execute
            && let Some(carrier) = &umbrella_before
        {
            let mut c = storm_condition.clone();
            c.actual = format!(
                "{}; the umbrella ticket of run {carrier} carries it",
                c.actual
            );
            conditions.push(c);
            outcome = Outcome::Suppressed;
            window.ticket_run = Some(carrier.clone());
            flap_reason = Some(format!(
                "storm mode: the umbrella ticket of run {carrier} carries this service"
            ));
        }
        if verdict.action == ActionKind::Ticket
            && !for_umbrella
            && let Some(first) = &open_ticket
            && outcome == Outcome::Execute
        {
            conditions.push(rules::ticket_open_condition(first));
            outcome = Outcome::Suppressed;
            flap_reason = Some(format!(
                "the ticket of run {first} is still open for this fingerprint"
            ));
        }
        if verdict.action == ActionKind::Ticket
            && !for_umbrella
            && open_ticket.is_none()
            && matches!(outcome, Outcome::Execute | Outcome::Review)
            && let (Some(carrier), Some(g)) = (&group_ticket, group.as_mut())
        {
            let max = settings.group.notes_max;
            window.ticket_run = Some(carrier.clone());
            let (fits, condition) = rules::group_note_condition(&g.key, carrier, g.notes, max);
            conditions.push(condition);
            if fits {
                if outcome == Outcome::Execute {
                    g.notes = g.notes.saturating_add(1);
                }
                op = ActionOp::Update;
                flap_reason = Some(format!(
                    "grouped: this alert's evidence goes to the ticket of run {carrier} as a work note ({})",
                    g.key
                ));
            } else {
                outcome = Outcome::Suppressed;
                flap_reason = Some(format!(
                    "the ticket of run {carrier} already has {max} work notes for {}",
                    g.key
                ));
            }
        }
        if outcome == Outcome::Execute
            && verdict.action == ActionKind::Ticket
            && op == ActionOp::Create
        {
            window.ticket_run = Some(input.run_id.clone());
            if for_umbrella {
                breaker.umbrella_run = Some(input.run_id.clone());
            } else if let Some(g) = group.as_mut() {
                g.ticket_run = Some(input.run_id.clone());
            }
        }
        if outcome == Outcome::Execute && verdict.action == ActionKind::Page {
            if let Some(taken) = rules::take_page_tokens(&budgets, now) {
                window.paged_at = Some(now);
                if let Some(g) = group.as_mut() {
                    g.page = Some(GroupPage {
                        run_id: input.run_id.clone(),
                        team: team.to_owned(),
                        dedup_key: format!("tg:{}", event.fingerprint),
                        at: now,
                    });
                }
                effects.extend(
                    taken
                        .into_iter()
                        .map(|(key, state)| Effect::PutBucket { key, state }),
                );
            } else {
                // Unreachable while page.rate gates on the smallest budget; fail closed anyway.
                outcome = Outcome::Review;
                held = Some((HoldReason::Rate, tightest.0.clone()));
            }
        }
        if outcome == Outcome::Execute && verdict.action == ActionKind::Mim {
            let service = if for_umbrella {
                breaker.umbrella_mim_run = Some(input.run_id.clone());
                umbrella.clone()
            } else {
                event.service.clone()
            };
            breaker.last_mim_at = Some(now);
            effects.push(Effect::OpenMim {
                service,
                run_id: input.run_id.clone(),
                expires_at: now + settings.mim_window,
            });
        }
        if let Some((reason, limit)) = held
            && wanted
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
        if matches!(outcome, Outcome::Execute | Outcome::Review) && wanted {
            // (a suppressed escalation ticket plans nothing)
            let mut action = plan(verdict.action, input, classification, team);
            if for_umbrella {
                action = umbrella_plan(action, &umbrella, &breaker, &obs, settings);
            }
            if op == ActionOp::Update
                && let (Some(carrier), Some(g)) = (&group_ticket, &group)
            {
                action = work_note_plan(action, carrier, &g.key);
            }
            planned.push(Planned { outcome, action });
        }
        errors.extend(verdict.errors.iter().cloned());
        let reason = match (&capped_by, flap_reason) {
            (_, Some(flap)) => flap,
            (Some(cap), None) => format!("{} (gates: {})", cap, verdict.reason),
            (None, None) => verdict.reason,
        };
        actions.push(ActionDecision {
            action: verdict.action,
            op,
            outcome,
            requested: verdict.requested,
            gate_outcome: verdict.outcome,
            reason,
            conditions,
            capped_by,
        });
    }

    if let Some(e) = effects.get_mut(window_at) {
        *e = Effect::OpenDedup(window);
    }
    let group_name = group.as_ref().map(|g| g.key.clone());
    if let Some(g) = group {
        effects.push(Effect::PutGroup(g));
    }
    put_breaker(&mut effects, event, state.breaker.as_ref(), breaker);
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
        "Resolved by the source: {summary}\n\nservice: {service}\nenvironment: {env}\nalert: {alert}\n\
         source: {source} ({origin})\ngroup: {group} (no alert firing)\nopened by run: {parent_run}\n\
         resolved by run: {run}\ncorrelation: {corr}\n",
        summary = e.summary,
        service = e.service,
        env = e.environment.as_str(),
        alert = e.alert_name,
        source = e.source.as_str(),
        origin = e.origin,
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
fn put_breaker(
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
fn breaker_condition(
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
fn umbrella_plan(
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

/// Turns a ticket planned for a grouped alert into a work note on the group's ticket.
fn work_note_plan(mut action: PlannedAction, carrier: &RunId, group: &str) -> PlannedAction {
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

/// A decision with the same outcome for every action, for reasons that precede the gates.
fn uniform(
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

/// The idempotency key of one action of one run: stable across retries and restarts.
pub fn idempotency_key(run_id: &RunId, kind: ActionKind) -> String {
    format!("tg:{}:{}", run_id, kind.as_str())
}

/// Builds what a target adapter needs; text is bounded here, once.
fn plan(kind: ActionKind, input: StepInput<'_>, c: &Classification, team: &str) -> PlannedAction {
    let e = input.event;
    let prefix = match kind {
        ActionKind::Ticket => "",
        ActionKind::Page => "",
        ActionKind::Mim => "MAJOR: ",
    };
    let title = truncate(
        &format!(
            "{prefix}[{}] {}: {}",
            c.classification, e.service, e.summary
        ),
        TITLE_BYTES_MAX,
    );
    let mut details = format!(
        "{summary}\n\nservice: {service}\nenvironment: {env}\nalert: {alert}\nsource: {source} ({origin})\n\
         classification: {class} (confidence {conf:.2})\nimpact: {impact:?} {evidence}\nfingerprint: {fp}\n\
         run: {run}\ncorrelation: {corr}\n",
        summary = e.summary,
        service = e.service,
        env = e.environment.as_str(),
        alert = e.alert_name,
        source = e.source.as_str(),
        origin = e.origin,
        class = c.classification,
        conf = c.confidence,
        impact = e.impact.level,
        evidence = e.impact.evidence.join("; "),
        fp = e.fingerprint,
        run = input.run_id,
        corr = input.correlation_id,
    );
    details.push_str(&format!("team: {team} (catalog owner)\n"));
    if c.recommended_team != team {
        details.push_str(&format!(
            "model recommended team (not obeyed): {}\n",
            c.recommended_team
        ));
    }
    if let Some(r) = &c.rationale {
        details.push_str("\nmodel rationale (untrusted): ");
        details.push_str(r);
        details.push('\n');
    }
    for p in &e.log_pointers {
        details.push_str(&format!("{}: {}\n", p.label, p.url));
    }
    PlannedAction {
        kind,
        op: ActionOp::Create,
        parent_key: None,
        run_id: input.run_id.clone(),
        correlation_id: input.correlation_id.clone(),
        idempotency_key: idempotency_key(input.run_id, kind),
        dedup_key: format!("tg:{}", e.fingerprint),
        team: team.to_owned(),
        service: e.service.clone(),
        environment: e.environment,
        severity: c.classification,
        confidence: c.confidence,
        fingerprint: e.fingerprint.clone(),
        title,
        details: truncate(&details, DETAILS_BYTES_MAX),
        links: e.log_pointers.clone(),
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

mod approve;
mod rules;
mod state;
#[cfg(test)]
mod tests;

pub use approve::{Approval, Approved, approve};
pub use state::{
    CAP_SCOPE_ALL, GROUP_RETENTION, MemState, Policy, Reads, Touched, WaveRun, cap_scope_service,
    cap_scope_team, decide_wave, reads,
};
