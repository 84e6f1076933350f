//! The decide transaction, with two verbs: a wave's state is loaded once
//! ([`Store::begin_wave`]: one statement per table for all of its runs, into
//! the engine's [`MemState`]), the runs are stepped over it in memory
//! (`tg_engine::decide_wave`, the one place the stage order is written), each
//! run's outcome is recorded with [`Wave::apply`], and [`Wave::commit`] writes
//! everything the wave changed in a few multi-row statements and commits.
//!
//! Why: every statement is a hand-off to the connection's thread (SQLite) or a
//! round trip (PostgreSQL); a decision used to cost about 20 of them. A wave
//! now costs about 20 in all, whatever its size (bench/README.md).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::Row;
use tg_engine::{Effect, MemState, Planned, Reads, StepOutput, Touched};
use tg_model::{
    ActionStatus, AuditRecord, BreakerStep, Outcome, RunId, Sha256Hex, StepKind, StepRecord,
};
use tg_storm::{BreakerState, Transition};

use crate::audit::RowMeta;
use crate::db::{Tx, corrupt, json, values_list};
use crate::{Store, StoreError, from_ms, outcome_str, to_ms};

/// Rows one generated multi-row statement carries at most (SQLite binds at
/// most 32,766 parameters per statement; the widest row here has 11 columns).
pub const ROWS_PER_STATEMENT_MAX: usize = 256;
/// Runs one wave decides at most (its keys are bound in `IN` lists).
pub const WAVE_RUNS_MAX: usize = 256;
/// Most planned actions one decision may insert (ticket, page, MIM, notes
/// and resolutions stay far below; a bound for the generated statement).
pub const PLANNED_ACTIONS_MAX: usize = 32;

/// One audit chain row, sealed in memory and inserted at commit.
struct ChainRow {
    seq: i64,
    id: String,
    hash: Sha256Hex,
    json: String,
    kind: &'static str,
    meta: RowMeta,
}

/// A run's row as the decision leaves it.
struct RunRow {
    run_id: String,
    status: &'static str,
    classification_json: String,
    decision_json: String,
    review_state: Option<&'static str>,
    /// Set when the run's record was sealed with its decision.
    sealed: Option<(i64, String)>,
}

/// An open decide transaction over a wave of runs.
pub struct Wave {
    tx: Tx,
    now: DateTime<Utc>,
    /// The wave's storm state: every key its runs read, as stored when it began.
    state: MemState,
    claimable: BTreeSet<String>,
    /// The next chain position and the hash it links to.
    chain: (i64, Sha256Hex),
    rows: Vec<ChainRow>,
    runs: Vec<RunRow>,
    actions: Vec<(String, Planned)>,
    transitions: Vec<(String, RunId, Transition)>,
}

impl std::fmt::Debug for Wave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wave")
            .field("claimable", &self.claimable.len())
            .field("runs", &self.runs.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Begins the decide transaction of a wave: takes the writer, finds which
    /// of `runs` may still be decided (`pending` or `classifying`: another
    /// worker may have decided one after its lease expired), and loads every
    /// key their [`Reads`] name. At most [`WAVE_RUNS_MAX`] runs.
    pub async fn begin_wave(
        &self,
        runs: &[(&RunId, &Reads)],
        now: DateTime<Utc>,
    ) -> Result<Wave, StoreError> {
        if runs.len() > WAVE_RUNS_MAX {
            return Err(StoreError::Config(format!(
                "a wave of {} runs (at most {WAVE_RUNS_MAX})",
                runs.len()
            )));
        }
        let mut tx = self.begin_write().await?;
        let mut claimable = BTreeSet::new();
        if !runs.is_empty() {
            // By `run_id` alone (its unique index), the status checked here:
            // with `status IN (..)` in the query SQLite walks every pending
            // run instead (22 ms at 38,000 pending runs, against 0.2 ms).
            let sql = statuses_sql(runs.len());
            let mut q = sqlx::query(&sql);
            for (id, _) in runs {
                q = q.bind(id.as_str());
            }
            for r in q.fetch_all(&mut *tx).await? {
                let status: String = r.try_get("status")?;
                if status == "pending" || status == "classifying" {
                    claimable.insert(r.try_get::<String, _>("run_id")?);
                }
            }
        }
        let reads: Vec<&Reads> = runs
            .iter()
            .filter(|(id, _)| claimable.contains(id.as_str()))
            .map(|(_, r)| *r)
            .collect();
        let state = load(&mut tx, &reads).await?;
        let chain = crate::audit::chain_next(&mut tx).await?;
        Ok(Wave {
            tx,
            now,
            state,
            claimable,
            chain,
            rows: Vec::new(),
            runs: Vec::new(),
            actions: Vec::new(),
            transitions: Vec::new(),
        })
    }
}

impl Wave {
    /// Whether `run_id` may be decided in this wave.
    pub fn claimable(&self, run_id: &RunId) -> bool {
        self.claimable.contains(run_id.as_str())
    }

    /// The wave's state, for `tg_engine::decide_wave` (which applies each
    /// run's effects to it as it goes).
    pub fn state(&mut self) -> &mut MemState {
        &mut self.state
    }

    /// Records one run's decision: its planned actions for the outbox, its
    /// breaker transitions as step records on the chain, and, when nothing
    /// is left for the outbox, its audit record from `seal`, sealed onto the
    /// chain now (returned). The run moves to `decided` (or `completed`).
    pub fn apply(
        &mut self,
        run_id: &RunId,
        classification: &serde_json::Value,
        out: &StepOutput,
        seal: impl FnOnce(&StepOutput) -> AuditRecord,
    ) -> Result<Option<AuditRecord>, StoreError> {
        self.apply_with(run_id, classification, out, Some(seal))
    }

    /// [`Wave::apply`] without sealing: the run stays `decided` whatever
    /// its actions (audited when something completes it).
    pub fn apply_unsealed(
        &mut self,
        run_id: &RunId,
        classification: &serde_json::Value,
        out: &StepOutput,
    ) -> Result<(), StoreError> {
        self.apply_with(
            run_id,
            classification,
            out,
            None::<fn(&StepOutput) -> AuditRecord>,
        )
        .map(|_| ())
    }

    fn apply_with(
        &mut self,
        run_id: &RunId,
        classification: &serde_json::Value,
        out: &StepOutput,
        seal: Option<impl FnOnce(&StepOutput) -> AuditRecord>,
    ) -> Result<Option<AuditRecord>, StoreError> {
        if !self.claimable.remove(run_id.as_str()) {
            return Err(StoreError::WrongState {
                run_id: run_id.to_string(),
                status: "decided".into(),
                expected: "classifying",
            });
        }
        if out.planned.len() > PLANNED_ACTIONS_MAX {
            return Err(StoreError::Config(format!(
                "a decision planned {} actions (at most {PLANNED_ACTIONS_MAX})",
                out.planned.len()
            )));
        }
        for effect in &out.effects {
            if let Effect::BreakerTransition {
                environment,
                run_id,
                transition,
            } = effect
            {
                self.transitions
                    .push((environment.clone(), run_id.clone(), transition.clone()));
                // Every transition is also a record on the audit chain, sealed
                // with the decision that caused it.
                self.seal_step(breaker_step(environment, run_id, transition))?;
            }
        }
        for p in &out.planned {
            self.actions.push((run_id.to_string(), p.clone()));
        }
        let pending = out.planned.iter().any(|p| p.outcome == Outcome::Execute);
        let review = out.planned.is_empty()
            && out
                .decision
                .actions
                .iter()
                .any(|a| a.outcome == Outcome::Review);
        let sealed = match seal {
            // INVARIANT: only a run with no action for the outbox is sealed
            // here: its record's action results are final.
            Some(seal) if !pending => {
                let mut record = seal(out);
                let (seq, prev) = self.next_link();
                record.seal(u64::try_from(seq).unwrap_or(0), prev);
                let meta = RowMeta::of_run(&record);
                self.push_row(
                    seq,
                    record.run_id.to_string(),
                    &record.hash,
                    json(&record)?,
                    "run",
                    meta,
                );
                Some((seq, record))
            }
            _ => None,
        };
        self.runs.push(RunRow {
            run_id: run_id.to_string(),
            status: if sealed.is_some() {
                "completed"
            } else {
                "decided"
            },
            classification_json: json(classification)?,
            decision_json: json(&out.decision)?,
            review_state: review.then_some("open"),
            sealed: sealed
                .as_ref()
                .map(|(seq, r)| (*seq, r.hash.as_str().to_owned())),
        });
        Ok(sealed.map(|(_, r)| r))
    }

    fn seal_step(&mut self, mut record: StepRecord) -> Result<(), StoreError> {
        let (seq, prev) = self.next_link();
        record.seal(u64::try_from(seq).unwrap_or(0), prev);
        let meta = RowMeta::of_step(&record, None);
        self.push_row(
            seq,
            record.record_id.clone(),
            &record.hash,
            json(&record)?,
            "step",
            meta,
        );
        Ok(())
    }

    /// The next chain position and the hash it links to.
    fn next_link(&mut self) -> (i64, Sha256Hex) {
        (
            self.chain.0,
            std::mem::replace(&mut self.chain.1, Sha256Hex::zero()),
        )
    }

    /// A record sealed at `seq` with `hash`: the chain's new head, and a row
    /// to insert at commit.
    fn push_row(
        &mut self,
        seq: i64,
        id: String,
        hash: &Sha256Hex,
        json: String,
        kind: &'static str,
        meta: RowMeta,
    ) {
        self.chain = (seq + 1, hash.clone());
        self.rows.push(ChainRow {
            seq,
            id,
            hash: hash.clone(),
            json,
            kind,
            meta,
        });
    }

    /// Writes what the wave changed and commits: the state's touched keys, the
    /// transitions, held pages, planned actions, chain rows and runs, each
    /// table in multi-row statements.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let touched = self.state.take_touched();
        write_state(&mut self.tx, &self.state, &touched).await?;
        insert_transitions(&mut self.tx, &self.transitions).await?;
        for h in &touched.held {
            crate::storm::hold_page(&mut self.tx, h).await?;
        }
        insert_actions(&mut self.tx, &self.actions, self.now).await?;
        insert_chain_rows(&mut self.tx, &self.rows).await?;
        update_runs(&mut self.tx, &self.runs, self.now).await?;
        self.tx.commit().await?;
        transitions_committed(&self.transitions);
        Ok(())
    }
}

fn breaker_step(environment: &str, run_id: &RunId, t: &Transition) -> StepRecord {
    StepRecord {
        breaker: Some(BreakerStep {
            environment: environment.to_owned(),
            to: t.to.as_str().to_owned(),
            services: t.services,
            threshold: t.threshold,
            storm_id: t.storm_id.clone(),
            reason: t.reason.clone(),
        }),
        ..StepRecord::new(
            StepKind::BreakerTransition,
            format!("breaker:{environment}:{}:{}", t.storm_id, t.to.as_str()),
            t.at,
            run_id.to_string(),
        )
    }
}

/// The status of `n` runs, by their unique `run_id` index.
pub(crate) fn statuses_sql(n: usize) -> String {
    format!(
        "SELECT run_id, status FROM runs WHERE run_id IN ({})",
        params(1, n)
    )
}

/// `$first, .., $(first + n - 1)`.
fn params(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of `select` whose `column` is one of `keys` (`None`: every row).
async fn fetch_rows(
    tx: &mut Tx,
    select: &str,
    column: &str,
    keys: Option<&BTreeSet<&str>>,
) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
    let Some(keys) = keys else {
        return Ok(sqlx::query(select).fetch_all(&mut **tx).await?);
    };
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("{select} WHERE {column} IN ({})", params(1, keys.len()));
    let mut q = sqlx::query(&sql);
    for k in keys {
        q = q.bind(*k);
    }
    Ok(q.fetch_all(&mut **tx).await?)
}

/// Every key `reads` name, as stored: one statement per table (and one per
/// environment for its sightings).
pub(crate) async fn load(tx: &mut Tx, reads: &[&Reads]) -> Result<MemState, StoreError> {
    if reads.is_empty() {
        return Ok(MemState::default());
    }
    let set = |f: &dyn Fn(&Reads) -> Vec<&str>| -> BTreeSet<&str> {
        reads.iter().flat_map(|r| f(r)).collect::<BTreeSet<&str>>()
    };
    let keys = Keys {
        scopes: set(&|r| r.cap_scopes.iter().map(String::as_str).collect()),
        fingerprints: set(&|r| vec![r.fingerprint.as_str()]),
        buckets: set(&|r| {
            let mut v = vec![tg_engine::GLOBAL_BUCKET, r.service_bucket.as_str()];
            v.extend(r.team_bucket.as_deref());
            v
        }),
        signals: set(&|r| vec![r.signal_key.as_str()]),
        mims: set(&|r| vec![r.service.as_str(), r.umbrella.as_str()]),
        environments: set(&|r| vec![r.environment.as_str()]),
        groups: set(&|r| r.group_key.as_deref().into_iter().collect()),
    };
    load_keys(tx, Some(&keys)).await
}

/// The keys of each table to load.
struct Keys<'a> {
    scopes: BTreeSet<&'a str>,
    fingerprints: BTreeSet<&'a str>,
    buckets: BTreeSet<&'a str>,
    signals: BTreeSet<&'a str>,
    mims: BTreeSet<&'a str>,
    environments: BTreeSet<&'a str>,
    groups: BTreeSet<&'a str>,
}

/// The rows of `keys` (`None`: every row of every table a step reads).
async fn load_keys(tx: &mut Tx, keys: Option<&Keys<'_>>) -> Result<MemState, StoreError> {
    let mut state = MemState::default();
    for r in fetch_rows(
        tx,
        "SELECT scope, level FROM autonomy_caps",
        "scope",
        keys.map(|k| &k.scopes),
    )
    .await?
    {
        let level: String = r.try_get("level")?;
        // An unreadable level is the lowest (fail closed: shadow).
        let level = crate::autonomy::parse_level(&level).unwrap_or(tg_model::AutonomyLevel::Shadow);
        state.caps.insert(r.try_get("scope")?, level);
    }
    for r in fetch_rows(
        tx,
        "SELECT fingerprint, first_run_id, opened_at, expires_at, impact, resolved, paged_at, \
         ticket_run, origins FROM dedup",
        "fingerprint",
        keys.map(|k| &k.fingerprints),
    )
    .await?
    {
        let fp = tg_model::Fingerprint(r.try_get("fingerprint")?);
        let entry = crate::db::dedup_from_row(&fp, &r)?;
        state.dedup.insert(fp, entry);
    }
    for r in fetch_rows(
        tx,
        "SELECT key, tokens_milli, updated_at FROM buckets",
        "key",
        keys.map(|k| &k.buckets),
    )
    .await?
    {
        let (key, bucket) = crate::db::keyed_bucket(&r)?;
        state.buckets.insert(key, bucket);
    }
    for r in fetch_rows(
        tx,
        "SELECT key, sender, origin, seen_at FROM signals",
        "key",
        keys.map(|k| &k.signals),
    )
    .await?
    {
        let signal = tg_storm::Signal {
            sender: r.try_get("sender")?,
            origin: r.try_get("origin")?,
            seen_at: from_ms(r.try_get("seen_at")?),
        };
        state
            .signals
            .entry(r.try_get("key")?)
            .or_default()
            .insert(signal.sender.clone(), signal);
    }
    for r in fetch_rows(
        tx,
        "SELECT service, run_id, expires_at FROM mim",
        "service",
        keys.map(|k| &k.mims),
    )
    .await?
    {
        state.mims.insert(
            r.try_get("service")?,
            (
                RunId(r.try_get("run_id")?),
                from_ms(r.try_get("expires_at")?),
            ),
        );
    }
    for r in fetch_rows(
        tx,
        "SELECT environment, state_json FROM storm_breaker",
        "environment",
        keys.map(|k| &k.environments),
    )
    .await?
    {
        let s: String = r.try_get("state_json")?;
        let b: BreakerState = serde_json::from_str(&s).map_err(corrupt("storm breaker"))?;
        state.breakers.insert(r.try_get("environment")?, b);
    }
    let environments: Vec<String> = match keys {
        Some(k) => k.environments.iter().map(|e| (*e).to_owned()).collect(),
        None => {
            sqlx::query_scalar("SELECT DISTINCT environment FROM storm_sightings")
                .fetch_all(&mut **tx)
                .await?
        }
    };
    for env in environments {
        let seen = crate::storm::load_sightings(&mut **tx, &env).await?;
        if !seen.is_empty() {
            let m = state.sightings.entry(env).or_default();
            for s in seen {
                m.insert(s.service, s.seen_at);
            }
        }
    }
    for r in fetch_rows(
        tx,
        "SELECT key, state_json FROM storm_groups",
        "key",
        keys.map(|k| &k.groups),
    )
    .await?
    {
        let s: String = r.try_get("state_json")?;
        let g: tg_storm::GroupEntry = serde_json::from_str(&s).map_err(corrupt("storm group"))?;
        state.groups.insert(r.try_get("key")?, g);
    }
    Ok(state)
}

/// A multi-row statement: `head VALUES (..), (..) tail` over `rows`, each
/// bound by `bind`, in chunks of [`ROWS_PER_STATEMENT_MAX`].
async fn insert_rows<T, F>(
    tx: &mut Tx,
    head: &str,
    tail: &str,
    cols: usize,
    rows: &[T],
    bind: F,
) -> Result<(), StoreError>
where
    F: for<'q> Fn(
        sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        &'q T,
    ) -> Result<
        sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        StoreError,
    >,
{
    for chunk in rows.chunks(ROWS_PER_STATEMENT_MAX) {
        let sql = format!("{head} VALUES {} {tail}", values_list(chunk.len(), cols));
        let mut q = sqlx::query(&sql);
        for row in chunk {
            q = bind(q, row)?;
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Writes the keys `touched` names, as `state` holds them now.
async fn write_state(tx: &mut Tx, state: &MemState, touched: &Touched) -> Result<(), StoreError> {
    let dedup: Vec<_> = touched
        .dedup
        .iter()
        .filter_map(|fp| state.dedup.get(fp))
        .collect();
    insert_rows(
        tx,
        "INSERT INTO dedup (fingerprint, first_run_id, opened_at, expires_at, impact, resolved, paged_at, ticket_run, origins)",
        "ON CONFLICT (fingerprint) DO UPDATE SET first_run_id = excluded.first_run_id, \
         opened_at = excluded.opened_at, expires_at = excluded.expires_at, \
         impact = excluded.impact, resolved = excluded.resolved, paged_at = excluded.paged_at, \
         ticket_run = excluded.ticket_run, origins = excluded.origins",
        9,
        &dedup,
        |q, d| {
            Ok(q.bind(d.fingerprint.as_str())
                .bind(d.first_run_id.as_str())
                .bind(to_ms(d.opened_at))
                .bind(to_ms(d.expires_at))
                .bind(crate::db::impact_str(d.impact))
                .bind(i64::from(d.resolved))
                .bind(d.paged_at.map(to_ms))
                .bind(d.ticket_run.as_ref().map(|r| r.as_str().to_owned()))
                .bind(json(&d.origins)?))
        },
    )
    .await?;
    let buckets: Vec<_> = touched
        .buckets
        .iter()
        .filter_map(|k| state.buckets.get(k).map(|b| (k, b)))
        .collect();
    insert_rows(
        tx,
        "INSERT INTO buckets (key, tokens_milli, updated_at)",
        "ON CONFLICT (key) DO UPDATE SET tokens_milli = excluded.tokens_milli, \
         updated_at = excluded.updated_at",
        3,
        &buckets,
        |q, (k, b)| {
            Ok(q.bind(k.as_str())
                .bind(b.tokens_milli)
                .bind(to_ms(b.updated_at)))
        },
    )
    .await?;
    let signals: Vec<_> = touched
        .signals
        .iter()
        .filter_map(|(k, sender)| state.signals.get(k)?.get(sender).map(|s| (k, s)))
        .collect();
    insert_rows(
        tx,
        "INSERT INTO signals (key, sender, origin, seen_at)",
        "ON CONFLICT (key, sender) DO UPDATE SET \
         origin = CASE WHEN signals.seen_at > excluded.seen_at THEN signals.origin ELSE excluded.origin END, \
         seen_at = CASE WHEN signals.seen_at > excluded.seen_at THEN signals.seen_at ELSE excluded.seen_at END",
        4,
        &signals,
        |q, (k, s)| {
            Ok(q.bind(k.as_str())
                .bind(s.sender.as_str())
                .bind(s.origin.as_str())
                .bind(to_ms(s.seen_at)))
        },
    )
    .await?;
    let mims: Vec<_> = touched
        .mims
        .iter()
        .filter_map(|s| state.mims.get(s).map(|m| (s, m)))
        .collect();
    insert_rows(
        tx,
        "INSERT INTO mim (service, run_id, expires_at)",
        "ON CONFLICT (service) DO UPDATE SET run_id = excluded.run_id, expires_at = excluded.expires_at",
        3,
        &mims,
        |q, (s, (run, until))| {
            Ok(q.bind(s.as_str())
                .bind(run.as_str())
                .bind(to_ms(*until)))
        },
    )
    .await?;
    // Pruned first, then written: what the wave's own sightings left stays.
    for (environment, before) in &touched.sightings_pruned {
        sqlx::query("DELETE FROM storm_sightings WHERE environment = $1 AND seen_at < $2")
            .bind(environment)
            .bind(to_ms(*before))
            .execute(&mut **tx)
            .await?;
    }
    let sightings: Vec<_> = touched
        .sightings
        .iter()
        .filter_map(|(env, service)| {
            state
                .sightings
                .get(env)?
                .get(service)
                .map(|at| (env, service, *at))
        })
        .collect();
    insert_rows(
        tx,
        "INSERT INTO storm_sightings (environment, service, seen_at)",
        "ON CONFLICT (environment, service) DO UPDATE SET seen_at = CASE WHEN storm_sightings.seen_at > excluded.seen_at \
         THEN storm_sightings.seen_at ELSE excluded.seen_at END",
        3,
        &sightings,
        |q, (env, service, at)| {
            Ok(q.bind(env.as_str())
                .bind(service.as_str())
                .bind(to_ms(*at)))
        },
    )
    .await?;
    let breakers: Vec<_> = touched
        .breakers
        .iter()
        .filter_map(|e| state.breakers.get(e).map(|b| (e, b)))
        .collect();
    insert_rows(
        tx,
        "INSERT INTO storm_breaker (environment, open, state_json, updated_at)",
        "ON CONFLICT (environment) DO UPDATE SET open = excluded.open, \
         state_json = excluded.state_json, updated_at = excluded.updated_at",
        4,
        &breakers,
        |q, (e, b)| {
            Ok(q.bind(e.as_str())
                .bind(i64::from(b.open))
                .bind(json(b)?)
                .bind(to_ms(b.observed_at.max(b.since))))
        },
    )
    .await?;
    if let Some(before) = touched.groups_pruned {
        sqlx::query("DELETE FROM storm_groups WHERE expires_at < $1")
            .bind(to_ms(before))
            .execute(&mut **tx)
            .await?;
    }
    let groups: Vec<_> = touched
        .groups
        .iter()
        .filter_map(|k| state.groups.get(k))
        .collect();
    insert_rows(
        tx,
        "INSERT INTO storm_groups (key, state_json, expires_at, resolved)",
        "ON CONFLICT (key) DO UPDATE SET state_json = excluded.state_json, \
         expires_at = excluded.expires_at, resolved = excluded.resolved",
        4,
        &groups,
        |q, g| {
            Ok(q.bind(g.key.as_str())
                .bind(json(g)?)
                .bind(to_ms(g.expires_at))
                .bind(i64::from(g.resolved)))
        },
    )
    .await?;
    Ok(())
}

async fn insert_transitions(
    tx: &mut Tx,
    rows: &[(String, RunId, Transition)],
) -> Result<(), StoreError> {
    insert_rows(
        tx,
        "INSERT INTO storm_transitions (environment, to_state, at, services, threshold, storm_id, run_id, reason)",
        "",
        8,
        rows,
        |q, (env, run, t)| {
            Ok(q.bind(env.as_str())
                .bind(t.to.as_str())
                .bind(to_ms(t.at))
                .bind(i64::from(t.services))
                .bind(i64::from(t.threshold))
                .bind(t.storm_id.as_str())
                .bind(run.as_str())
                .bind(t.reason.as_str()))
        },
    )
    .await
}

/// The decisions' planned actions: `pending` (the outbox delivers them in
/// `id`, i.e. decision, order) or `not_executed`.
async fn insert_actions(
    tx: &mut Tx,
    rows: &[(String, Planned)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    insert_rows(
        tx,
        "INSERT INTO actions (run_id, kind, outcome, status, idempotency_key, planned_json, \
         review_state, created_at, updated_at, target, next_attempt_at)",
        "",
        11,
        rows,
        |q, (run_id, p)| {
            let status = match p.outcome {
                Outcome::Execute => ActionStatus::Pending,
                _ => ActionStatus::NotExecuted,
            };
            Ok(q.bind(run_id.as_str())
                .bind(p.action.kind.as_str())
                .bind(outcome_str(p.outcome))
                .bind(crate::db::action_status_str(status))
                .bind(p.action.idempotency_key.as_str())
                .bind(json(&p.action)?)
                .bind((p.outcome == Outcome::Review).then_some("open"))
                .bind(to_ms(now))
                .bind(to_ms(now))
                .bind(crate::outbox::target_of(p.action.kind))
                .bind((status == ActionStatus::Pending).then(|| to_ms(now))))
        },
    )
    .await
}

async fn insert_chain_rows(tx: &mut Tx, rows: &[ChainRow]) -> Result<(), StoreError> {
    insert_rows(
        tx,
        "INSERT INTO audit (seq, run_id, hash, record_json, kind, at_ms, subject_run, correlation_id, service)",
        "",
        9,
        rows,
        |q, r| {
            Ok(q.bind(r.seq)
                .bind(r.id.as_str())
                .bind(r.hash.as_str())
                .bind(r.json.as_str())
                .bind(r.kind)
                .bind(r.meta.at.map(to_ms))
                .bind(r.meta.subject_run.as_deref())
                .bind(r.meta.correlation_id.as_deref())
                .bind(r.meta.service.as_deref()))
        },
    )
    .await
}

/// Columns of one row of [`update_runs`]'s `VALUES` list.
const RUN_COLUMNS: usize = 8;

/// Every decided run's row in one `UPDATE .. FROM (VALUES ..)` per chunk
/// (SQLite 3.33+ and PostgreSQL both name the columns `column1` ..).
async fn update_runs(tx: &mut Tx, rows: &[RunRow], now: DateTime<Utc>) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT_MAX) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = |c: usize| i * RUN_COLUMNS + c + 1;
                format!(
                    "(CAST(${} AS TEXT), CAST(${} AS TEXT), CAST(${} AS TEXT), CAST(${} AS TEXT), \
                     CAST(${} AS TEXT), CAST(${} AS BIGINT), CAST(${} AS TEXT), CAST(${} AS BIGINT))",
                    p(0),
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5),
                    p(6),
                    p(7)
                )
            })
            .collect();
        let at = chunk.len() * RUN_COLUMNS + 1;
        let sql = format!(
            "UPDATE runs SET status = v.column2, classification_json = v.column3, classified_at = ${at}, \
             decision_json = v.column4, decided_at = ${at}, review_state = v.column5, \
             completed_at = v.column8, audit_seq = v.column6, audit_hash = v.column7 \
             FROM (VALUES {}) AS v WHERE runs.run_id = v.column1",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
                .bind(r.run_id.as_str())
                .bind(r.status)
                .bind(r.classification_json.as_str())
                .bind(r.decision_json.as_str())
                .bind(r.review_state)
                .bind(r.sealed.as_ref().map(|(seq, _)| *seq))
                .bind(r.sealed.as_ref().map(|(_, h)| h.as_str()))
                .bind(r.sealed.as_ref().map(|_| to_ms(now)));
        }
        q.bind(to_ms(now)).execute(&mut **tx).await?;
    }
    Ok(())
}

impl Store {
    /// The storm state as stored: every row of every table a step reads (for
    /// comparing backends key by key, and for replays). Bounded by the
    /// tables' own limits (windows, retention).
    pub async fn storm_state(&self) -> Result<MemState, StoreError> {
        let mut tx = self.begin_write().await?;
        load_keys(&mut tx, None).await
    }
}

/// Applies `effects` to `state` (loaded for them in `tx`) and writes what
/// they changed, transitions and held pages included: for writers other than
/// a wave (an approval, the breaker's time check).
pub(crate) async fn persist(
    tx: &mut Tx,
    state: &mut MemState,
    effects: &[Effect],
) -> Result<Vec<(String, RunId, Transition)>, StoreError> {
    state.apply(effects);
    let touched = state.take_touched();
    write_state(tx, state, &touched).await?;
    let transitions: Vec<(String, RunId, Transition)> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::BreakerTransition {
                environment,
                run_id,
                transition,
            } => Some((environment.clone(), run_id.clone(), transition.clone())),
            _ => None,
        })
        .collect();
    insert_transitions(tx, &transitions).await?;
    for (environment, run_id, t) in &transitions {
        crate::audit::append_step(tx, breaker_step(environment, run_id, t), None).await?;
    }
    for h in &touched.held {
        crate::storm::hold_page(tx, h).await?;
    }
    Ok(transitions)
}

/// After the transaction that wrote them committed: each transition's metric and log line.
pub(crate) fn transitions_committed(transitions: &[(String, RunId, Transition)]) {
    for (environment, run_id, t) in transitions {
        crate::storm::transition_committed(environment, run_id, t);
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    /// SQLite's plan for `sql` (with `binds` text parameters), one line per step.
    async fn plan(store: &crate::Store, sql: &str, binds: usize) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query(&explain);
        for i in 0..binds {
            q = q.bind(format!("v{i}"));
        }
        let rows = q.fetch_all(&store.write).await.unwrap();
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The writer's per-wave statements search an index; none walks the
    /// backlog (an `OR` or a `status IN` made the claim and the wave's first
    /// read O(pending runs): 8 ms and 22 ms at 40,000 pending runs).
    #[tokio::test]
    async fn the_claim_and_the_wave_never_walk_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(&dir.path().join("plan.sqlite"))
            .await
            .unwrap();
        let claim = plan(&store, crate::db::CLAIM_SQLITE, 4).await;
        assert!(
            claim.contains("USING COVERING INDEX runs_status"),
            "{claim}"
        );
        assert!(!claim.contains("MULTI-INDEX OR"), "{claim}");
        assert!(!claim.contains("SCAN runs"), "{claim}");
        let statuses = plan(&store, &super::statuses_sql(64), 64).await;
        assert!(
            statuses.contains("USING INDEX sqlite_autoindex_runs_1 (run_id=?)"),
            "{statuses}"
        );
        assert!(!statuses.contains("runs_status"), "{statuses}");
    }
}
