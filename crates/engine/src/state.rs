//! What a step reads ([`Reads`], declared by the engine) and the state it
//! reads it from ([`MemState`]): one in-memory model of the storm tables that
//! every caller shares. The store loads a wave's keys into a `MemState`,
//! [`decide_wave`] steps the wave's runs over it, and the store writes back
//! what [`MemState::touched`] names; `policy test`, the simulator and the
//! engine's own tests use a `MemState` alone. Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tg_model::{
    AutonomyLevel, Classification, CorrelationId, Environment, Fingerprint, NormalizedEvent,
    Rejection, RunId,
};
use tg_policy::Gates;
use tg_policy::catalog::Catalog;
use tg_storm::{BreakerState, BucketState, DedupEntry, GroupEntry, Sighting, Signal};

use crate::{
    Effect, GLOBAL_BUCKET, HeldPage, StepInput, StepOutput, StepState, StormSettings, group_key,
    routing_team, service_bucket_key, signal_key_for, team_bucket_key, umbrella_service,
};

/// Every key one step reads, named by the engine (the store loads exactly
/// these; nothing else decides what a step sees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reads {
    pub fingerprint: Fingerprint,
    pub service: String,
    /// The event's environment label: the breaker's and the sightings' key.
    pub environment: String,
    /// Key of the service's independent signals ([`signal_key`]).
    pub signal_key: String,
    /// The service's paging bucket.
    pub service_bucket: String,
    /// The routing team's paging bucket (known once the classification is).
    pub team_bucket: Option<String>,
    /// The environment's storm umbrella ([`umbrella_service`]).
    pub umbrella: String,
    /// The event's group ([`group_key`]), when grouping is on.
    pub group_key: Option<String>,
    /// The autonomy-cap scopes that apply: `all`, `team:<owner>`, `service:<service>`.
    pub cap_scopes: Vec<String>,
}

/// The autonomy-cap scope of every service.
pub const CAP_SCOPE_ALL: &str = "all";

/// The cap scope of a team.
pub fn cap_scope_team(team: &str) -> String {
    format!("team:{team}")
}

/// The cap scope of a service.
pub fn cap_scope_service(service: &str) -> String {
    format!("service:{service}")
}

/// The keys a step for `event` reads. `classification` is the validated
/// answer, if any: it names the routing team only when the catalog names no
/// owner ([`routing_team`]).
pub fn reads(
    event: &NormalizedEvent,
    classification: Option<&Classification>,
    settings: &StormSettings,
    catalog: &Catalog,
) -> Reads {
    Reads::of(
        &event.service,
        event.environment,
        &event.fingerprint,
        classification.map(|c| routing_team(catalog, &event.service, c)),
        group_key(&settings.group, event),
        catalog,
    )
}

impl Reads {
    /// The keys of a step (or an approval) for `service` in `environment`,
    /// its paging charged to `team` when one is known.
    pub fn of(
        service: &str,
        environment: Environment,
        fingerprint: &Fingerprint,
        team: Option<&str>,
        group_key: Option<String>,
        catalog: &Catalog,
    ) -> Reads {
        let mut cap_scopes = vec![CAP_SCOPE_ALL.to_owned(), cap_scope_service(service)];
        if let Some(owner) = catalog.owner_team(service) {
            cap_scopes.push(cap_scope_team(owner));
        }
        Reads {
            fingerprint: fingerprint.clone(),
            service: service.to_owned(),
            environment: environment.as_str().to_owned(),
            signal_key: signal_key_for(service, environment),
            service_bucket: service_bucket_key(service),
            team_bucket: team.map(team_bucket_key),
            umbrella: umbrella_service(environment),
            group_key,
            cap_scopes,
        }
    }
}

/// The storm state as the store keeps it, in memory: every table a step
/// reads, keyed as the tables are. [`MemState::apply`] changes it exactly as
/// the store's write-back does (last sighting per service, latest signal
/// per sender, bounded groups), and records what it changed in
/// [`MemState::touched`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemState {
    /// Runtime autonomy caps by scope (`all`, `team:<t>`, `service:<s>`).
    pub caps: BTreeMap<String, AutonomyLevel>,
    pub dedup: BTreeMap<Fingerprint, DedupEntry>,
    pub buckets: BTreeMap<String, BucketState>,
    /// Per signal key, the latest signal per sender.
    pub signals: BTreeMap<String, BTreeMap<String, Signal>>,
    /// Open MIM windows by service (umbrellas included): the run and its end.
    pub mims: BTreeMap<String, (RunId, DateTime<Utc>)>,
    /// Per environment, the last sighting per service.
    pub sightings: BTreeMap<String, BTreeMap<String, DateTime<Utc>>>,
    pub breakers: BTreeMap<String, BreakerState>,
    pub groups: BTreeMap<String, GroupEntry>,
    /// What [`MemState::apply`] changed since the last [`MemState::take_touched`].
    #[serde(skip)]
    pub touched: Touched,
}

/// The keys [`MemState::apply`] changed, and the append-only effects (breaker
/// transitions, held pages) in the order they happened: what a store writes
/// back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Touched {
    pub dedup: BTreeSet<Fingerprint>,
    pub buckets: BTreeSet<String>,
    /// (signal key, sender).
    pub signals: BTreeSet<(String, String)>,
    pub mims: BTreeSet<String>,
    /// (environment, service).
    pub sightings: BTreeSet<(String, String)>,
    /// Per environment, the latest prune bound: older sightings are deleted.
    pub sightings_pruned: BTreeMap<String, DateTime<Utc>>,
    pub breakers: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    /// Groups that expired before this bound are forgotten ([`GROUP_RETENTION`]).
    pub groups_pruned: Option<DateTime<Utc>>,
    /// Pages held back, in order (a summary's input, never read by a step).
    pub held: Vec<HeldPage>,
}

/// A group not touched for this long is forgotten (bounded table); a
/// resolution arriving later resolves nothing remotely.
pub const GROUP_RETENTION: chrono::Duration = chrono::Duration::days(7);

impl MemState {
    /// The state one step reads: the keys `reads` names.
    pub fn load(&self, reads: &Reads) -> StepState {
        StepState {
            autonomy_cap: reads
                .cap_scopes
                .iter()
                .filter_map(|s| self.caps.get(s).copied())
                .min(),
            dedup: self.dedup.get(&reads.fingerprint).cloned(),
            team_bucket: reads
                .team_bucket
                .as_ref()
                .and_then(|k| self.buckets.get(k).copied()),
            global_bucket: self.buckets.get(GLOBAL_BUCKET).copied(),
            signals: self
                .signals
                .get(&reads.signal_key)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default(),
            open_mim: self.mims.get(&reads.service).cloned(),
            service_bucket: self.buckets.get(&reads.service_bucket).copied(),
            breaker: self.breakers.get(&reads.environment).cloned(),
            sightings: self.sightings_of(&reads.environment),
            umbrella_mim: self.mims.get(&reads.umbrella).cloned(),
            group: reads
                .group_key
                .as_ref()
                .and_then(|k| self.groups.get(k).cloned()),
        }
    }

    /// The environment's most recent sightings, newest first (at most
    /// `SIGHTINGS_MAX`; ties by service name), as the store selects them.
    pub fn sightings_of(&self, environment: &str) -> Vec<Sighting> {
        let mut v: Vec<Sighting> = self
            .sightings
            .get(environment)
            .map(|m| {
                m.iter()
                    .map(|(service, seen_at)| Sighting {
                        service: service.clone(),
                        seen_at: *seen_at,
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| {
            b.seen_at
                .cmp(&a.seen_at)
                .then_with(|| a.service.cmp(&b.service))
        });
        v.truncate(tg_storm::breaker::SIGHTINGS_MAX);
        v
    }

    /// Applies a step's effects: the one place their meaning is written.
    pub fn apply(&mut self, effects: &[Effect]) {
        for effect in effects {
            self.apply_one(effect);
        }
    }

    fn apply_one(&mut self, effect: &Effect) {
        let t = &mut self.touched;
        match effect {
            Effect::OpenDedup(d) => {
                self.dedup.insert(d.fingerprint.clone(), d.clone());
                t.dedup.insert(d.fingerprint.clone());
            }
            Effect::CloseDedup(fp) => {
                // Kept, marked resolved: its last page time damps a flapping alert.
                if let Some(d) = self.dedup.get_mut(fp) {
                    d.resolved = true;
                    t.dedup.insert(fp.clone());
                }
            }
            Effect::PutBucket { key, state } => {
                self.buckets.insert(key.clone(), *state);
                t.buckets.insert(key.clone());
            }
            Effect::RecordSignal { key, signal } => {
                let senders = self.signals.entry(key.clone()).or_default();
                // The latest sighting per sender wins, whatever the order they arrive in.
                let newer = senders
                    .get(&signal.sender)
                    .is_none_or(|old| old.seen_at <= signal.seen_at);
                if newer {
                    senders.insert(signal.sender.clone(), signal.clone());
                }
                t.signals.insert((key.clone(), signal.sender.clone()));
            }
            Effect::OpenMim {
                service,
                run_id,
                expires_at,
            } => {
                self.mims
                    .insert(service.clone(), (run_id.clone(), *expires_at));
                t.mims.insert(service.clone());
            }
            Effect::RecordSighting {
                environment,
                sighting,
                prune_before,
            } => {
                let seen = self.sightings.entry(environment.clone()).or_default();
                let at = seen
                    .get(&sighting.service)
                    .map_or(sighting.seen_at, |old| (*old).max(sighting.seen_at));
                seen.insert(sighting.service.clone(), at);
                // Bounded: sightings outside the breaker window no longer count.
                seen.retain(|_, at| *at >= *prune_before);
                t.sightings
                    .insert((environment.clone(), sighting.service.clone()));
                let bound = t
                    .sightings_pruned
                    .entry(environment.clone())
                    .or_insert(*prune_before);
                *bound = (*bound).max(*prune_before);
            }
            Effect::PutBreaker { environment, state } => {
                self.breakers.insert(environment.clone(), state.clone());
                t.breakers.insert(environment.clone());
            }
            // Recorded by the store from the step's effects (a table row and a
            // step record on the chain, in decision order); no step reads it.
            Effect::BreakerTransition { .. } => {}
            Effect::HoldPage(h) => t.held.push(h.clone()),
            Effect::PutGroup(g) => {
                self.groups.insert(g.key.clone(), g.clone());
                t.groups.insert(g.key.clone());
                let bound = g.expires_at - GROUP_RETENTION;
                self.groups.retain(|_, old| old.expires_at >= bound);
                t.groups_pruned = Some(t.groups_pruned.map_or(bound, |b| b.max(bound)));
            }
        }
    }

    /// What changed since the last call, emptied.
    pub fn take_touched(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
    }
}

/// The policy a wave is decided under (one for the whole wave, even if a
/// reload lands meanwhile).
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub gates: &'a Gates,
    pub catalog: &'a Catalog,
    pub settings: &'a StormSettings,
}

/// One run of a wave: what it reads and what the step gets.
#[derive(Debug, Clone, Copy)]
pub struct WaveRun<'a> {
    pub reads: &'a Reads,
    pub run_id: &'a RunId,
    pub correlation_id: &'a CorrelationId,
    pub event: &'a NormalizedEvent,
    /// The validated classification, or why the model's answer was rejected;
    /// `None` for a duplicate or a resolution (no model was asked).
    pub classification: Option<Result<&'a Classification, &'a Rejection>>,
}

/// Decides a wave: for each run in order { load its reads; [`crate::step`];
/// apply its effects }, so each run sees what the ones before it left. The
/// one place the stage order is written: the server (through the store's
/// wave transaction), `policy test` and the engine's tests call it.
pub fn decide_wave(
    state: &mut MemState,
    policy: Policy<'_>,
    runs: &[WaveRun<'_>],
    now: DateTime<Utc>,
) -> Vec<StepOutput> {
    runs.iter()
        .map(|run| {
            let before = state.load(run.reads);
            let out = crate::step(
                policy.gates,
                policy.catalog,
                policy.settings,
                &before,
                StepInput {
                    run_id: run.run_id,
                    correlation_id: run.correlation_id,
                    event: run.event,
                    classification: run.classification,
                },
                now,
            );
            state.apply(&out.effects);
            out
        })
        .collect()
}
