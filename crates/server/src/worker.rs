//! Processing: claim a run -> classify -> decide (prefetch, step, apply in one
//! transaction, the planned actions committed to the outbox) -> complete with
//! one audit record once no action is pending. Workers never call an incident
//! tool: the outbox (`crate::outbox`) delivers and completes runs with actions.
//! Every stage is restartable: a crash anywhere leaves the run `pending`
//! (re-claimed), or `decided` (its actions stay in the outbox, then audited once).

use std::time::Duration;

use serde_json::json;
use tg_engine::Precheck;
use tg_model::{
    ActionKind, ActionResult, AuditRecord, ChainRecord, ClassificationRecord, RunTimestamps,
    sha256_hex,
};
use tg_store::StoredRun;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::metrics as m;

/// How long an idle worker sleeps before looking for work it was not told about.
pub const IDLE_POLL_MS: u64 = 500;
/// Pause after a store error before trying again (the run stays in the store).
pub const STORE_RETRY_MS: u64 = 1_000;
/// Tries to put a run that failed mid-processing back in the queue (one per
/// [`STORE_RETRY_MS`]) before leaving it to its lease.
pub const RELEASE_TRIES_MAX: u32 = 30;
/// Runs a worker claims and decides together at most: one claim commit and
/// one decision commit for all of them (their model calls run concurrently).
pub const DECIDE_BATCH_MAX: i64 = 64;
/// How often decided runs that nothing is completing are looked for.
pub const SWEEP_INTERVAL_MS: u64 = 5_000;
/// A decided run with no pending action is swept after it has been decided this long.
pub const SWEEP_AFTER_MS: i64 = 5_000;
/// Runs completed per sweep at most.
pub const SWEEP_BATCH_MAX: i64 = 500;
/// Audit records appended to the file per store read.
pub const AUDIT_FILE_BATCH_MAX: i64 = 500;

/// One processing worker: takes pending runs until cancelled.
pub async fn run(id: usize, state: AppState, token: CancellationToken) {
    // Claims carry the process and worker, so a stolen lease is attributable.
    let owner = format!("{}/worker-{id}", state.instance);
    loop {
        if token.is_cancelled() {
            return;
        }
        // INVARIANT: no claims while the store cannot commit; the health
        // task's probe tells when it can again.
        if !state.store.health().claims() {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(STORE_RETRY_MS)) => {}
            }
            continue;
        }
        let now = state.clock.now();
        let claimed = state
            .store
            .claim_batch(&owner, now, state.pipeline.run_lease, DECIDE_BATCH_MAX)
            .await;
        match claimed.map(|runs| (!runs.is_empty()).then_some(runs)) {
            Ok(Some(runs)) => {
                // A full batch may have left more: another worker takes it
                // (an accept wakes one worker, not all of them).
                if i64::try_from(runs.len()).unwrap_or(i64::MAX) >= DECIDE_BATCH_MAX {
                    state.work.notify_one();
                }
                let ids: Vec<tg_model::RunId> = runs.iter().map(|r| r.run_id.clone()).collect();
                if let Err(e) = process_batch(&state, runs).await {
                    if let Some(e) = e.downcast_ref::<tg_store::StoreError>() {
                        state.store.observe_error(e);
                    }
                    tracing::error!(worker = id, runs = ids.len(), error = %e, "processing failed");
                    release_all(&state, &ids, &token).await;
                    // Back in the queue if not decided; a decided run is completed here.
                    for run_id in &ids {
                        if let Ok(Some(r)) = state.store.get_run(run_id).await
                            && r.status == tg_store::RunStatus::Decided
                        {
                            let _ = complete_or_hand_over(&state, run_id).await;
                        }
                    }
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = state.work.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(IDLE_POLL_MS)) => {}
                }
            }
            Err(e) => {
                state.store.observe_error(&e);
                tracing::error!(worker = id, error = %e, "cannot claim work");
                tokio::time::sleep(Duration::from_millis(STORE_RETRY_MS)).await;
            }
        }
    }
}

/// Audits runs decided before a restart whose actions are all terminal; the
/// outbox delivers (and then audits) the others.
pub async fn resume_decided(state: &AppState, token: &CancellationToken) {
    match state.store.decided_runs().await {
        Ok(ids) => {
            for run_id in ids {
                if token.is_cancelled() {
                    return;
                }
                tracing::info!(run_id = %run_id, "resuming a decided run");
                if let Err(e) = complete_or_hand_over(state, &run_id).await {
                    tracing::error!(run_id = %run_id, error = %e, "cannot resume run");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot list decided runs"),
    }
}

/// Completes decided runs whose completion was lost (the store failed between
/// the decision and the audit record, or after the last delivery): nothing
/// decided stays unaudited until a restart.
pub async fn sweeper(state: AppState, token: CancellationToken) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(SWEEP_INTERVAL_MS)) => {}
        }
        // Replay keys past their window (signed webhooks, SNS): bounded by
        // the window times the delivery rate.
        if let Err(e) = state.store.prune_replay(state.clock.now()).await {
            tracing::warn!(error = %e, "cannot prune replay keys; will retry");
        }
        if let Err(e) = state.store.prune_console_revoked(state.clock.now()).await {
            tracing::warn!(error = %e, "cannot prune revoked console sessions; will retry");
        }
        let before = state.clock.now() - chrono::Duration::milliseconds(SWEEP_AFTER_MS);
        match state.store.stale_decided(before, SWEEP_BATCH_MAX).await {
            Ok(ids) => {
                for run_id in ids {
                    if let Err(e) = complete_or_hand_over(&state, &run_id).await {
                        tracing::warn!(run_id = %run_id, error = %e, "cannot complete a decided run; will retry");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for decided runs; will retry"),
        }
    }
}

/// [`classify_run`] inside a span naming the run, so that what the classifier
/// logs carries `run_id` and `correlation_id` (`--log-format json`: `span`).
async fn prepare(
    state: &AppState,
    run: StoredRun,
    dedup: Option<tg_storm::DedupEntry>,
) -> anyhow::Result<Prepared> {
    use tracing::Instrument as _;
    let span = tracing::info_span!(
        "run",
        run_id = %run.run_id,
        correlation_id = %run.correlation_id
    );
    classify_run(state, run, dedup).instrument(span).await
}

async fn classify_run(
    state: &AppState,
    run: StoredRun,
    dedup: Option<tg_storm::DedupEntry>,
) -> anyhow::Result<Prepared> {
    let p = &state.pipeline;
    let event = &run.event;
    let now = state.clock.now();

    // A duplicate or a resolution needs no model call.
    let pre = tg_engine::precheck(
        &tg_engine::StepState {
            dedup,
            ..Default::default()
        },
        event,
        now,
    );
    let record = match no_model(p, &pre) {
        Some(record) => record,
        None => {
            let teams = p.teams_for(&event.service);
            let out = p.classifier.classify(event, &teams).await;
            m::classified(&out.info.classifier, out.result.is_ok());
            // With `output_retention: sha256` only the hash of the model's
            // text is kept: not the text, not the rationale it wrote.
            let keep_text = p.output_retention == tg_config::OutputRetention::Full;
            let mut classification = out.result.as_ref().ok().cloned();
            if !keep_text && let Some(c) = classification.as_mut() {
                c.rationale = None;
            }
            ClassificationRecord {
                output_sha256: out.raw_output.as_deref().map(|s| sha256_hex(s.as_bytes())),
                raw_output: out.raw_output.filter(|_| keep_text),
                classification,
                rejection: out.result.err(),
                info: out.info,
                skipped: None,
                latency_ms: out.latency_ms,
                prompt_sha256: out.prompt_sha256,
                usage: out.usage.map(
                    |u| json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}),
                ),
            }
        }
    };

    let record_json = serde_json::to_value(&record)?;
    tracing::debug!(
        classifier = %record.info.classifier,
        rejected = record.rejection.is_some(),
        skipped = record.skipped.is_some(),
        "run classified"
    );
    Ok(Prepared {
        run,
        record,
        record_json,
    })
}

/// A claimed run, classified (or found a duplicate), ready to be decided.
struct Prepared {
    run: StoredRun,
    record: ClassificationRecord,
    record_json: serde_json::Value,
}

/// Puts claimed runs back in the queue, retrying while the store is down for
/// a while, so that they do not wait out their lease.
async fn release_all(state: &AppState, ids: &[tg_model::RunId], token: &CancellationToken) {
    for run_id in ids {
        let mut attempt = 0;
        while attempt < RELEASE_TRIES_MAX {
            tokio::time::sleep(Duration::from_millis(STORE_RETRY_MS)).await;
            if token.is_cancelled() {
                return;
            }
            // While the store cannot commit, a try is pointless and not
            // counted: the run goes back to the queue as soon as it can.
            if !state.store.health().claims() {
                continue;
            }
            attempt += 1;
            match state.store.release(run_id).await {
                Ok(()) => break,
                Err(e) if attempt == RELEASE_TRIES_MAX || token.is_cancelled() => {
                    tracing::error!(run_id = %run_id, error = %e, "cannot requeue run; its lease will expire");
                    break;
                }
                Err(_) => {}
            }
        }
    }
}

/// A claimed run in its batch: ready to be decided (classified, or found to
/// need no model), or a repeat of an earlier run of the batch, whose
/// pre-check waits for that run's decision.
enum Item {
    Ready(Box<Prepared>),
    Repeat(Box<StoredRun>),
}

impl Item {
    fn run(&self) -> &StoredRun {
        match self {
            Item::Ready(p) => &p.run,
            Item::Repeat(r) => r,
        }
    }
}

/// Processes claimed runs in acceptance order, in waves (one transaction
/// each). Before a wave, every run that is the first of its fingerprint in
/// what is left is classified (concurrently: model calls overlap); a repeat
/// is pre-checked inside the wave, on the state the runs before it left, so
/// a duplicate is decided in the same transaction and never reaches the
/// model. A wave ends at the first repeat that needs the model (it leads the
/// next wave) or at the end of the batch.
async fn process_batch(state: &AppState, runs: Vec<StoredRun>) -> anyhow::Result<()> {
    let mut items: Vec<Item> = runs
        .into_iter()
        .map(|r| Item::Repeat(Box::new(r)))
        .collect();
    while !items.is_empty() {
        prepare_leads(state, &mut items).await?;
        let decided = process_wave(state, &items).await?;
        items.drain(..decided.max(1).min(items.len()));
    }
    Ok(())
}

/// Classifies every run that no earlier run of `items` shares a fingerprint
/// with (its dedup window read from the store: nothing before it in the
/// batch can change it). The first item is always one, so a wave decides at
/// least one run.
async fn prepare_leads(state: &AppState, items: &mut [Item]) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut leads = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let first = seen.insert(item.run().event.fingerprint.clone());
        if first && matches!(item, Item::Repeat(_)) {
            leads.push(i);
        }
    }
    if leads.is_empty() {
        return Ok(());
    }
    let fingerprints: Vec<&tg_model::Fingerprint> = leads
        .iter()
        .filter_map(|&i| items.get(i))
        .map(|x| &x.run().event.fingerprint)
        .collect();
    let mut windows = state.store.dedup_entries(&fingerprints).await?;
    let mut set = tokio::task::JoinSet::new();
    for &i in &leads {
        let Some(Item::Repeat(run)) = items.get(i) else {
            continue;
        };
        let (st, run) = (state.clone(), StoredRun::clone(run));
        let dedup = windows.remove(&run.event.fingerprint);
        set.spawn(async move { (i, prepare(&st, run, dedup).await) });
    }
    while let Some(joined) = set.join_next().await {
        let (i, p) = joined?;
        if let Some(slot) = items.get_mut(i) {
            *slot = Item::Ready(Box::new(p?));
        }
    }
    Ok(())
}

/// Decides a prefix of `items` in one transaction in acceptance order (a run
/// that leaves nothing for the outbox is audited in that same transaction)
/// and returns its length: up to the first repeat whose pre-check on the
/// wave's state says it needs the model.
async fn process_wave(state: &AppState, items: &[Item]) -> anyhow::Result<usize> {
    let started = std::time::Instant::now();
    let p = &state.pipeline;
    // One policy for the whole wave, even if a reload lands meanwhile.
    let policy = p.policy();
    let policy = &*policy;
    // A repeat reads what a run without a model answer reads: if its
    // pre-check says it needs one, it is not decided in this wave.
    let reads: Vec<tg_engine::Reads> = items
        .iter()
        .map(|x| {
            let classification = match x {
                Item::Ready(x) => x.record.classification.as_ref(),
                Item::Repeat(_) => None,
            };
            tg_engine::reads(&x.run().event, classification, &p.storm, &policy.catalog)
        })
        .collect();
    // Milliseconds, as the store keeps time: a run later in the wave sees
    // exactly what a run in the next wave would read back.
    let now = {
        use chrono::DurationRound as _;
        let now = state.clock.now();
        now.duration_trunc(chrono::Duration::milliseconds(1))
            .unwrap_or(now)
    };
    let keyed: Vec<(&tg_model::RunId, &tg_engine::Reads)> = items
        .iter()
        .zip(&reads)
        .map(|(x, r)| (&x.run().run_id, r))
        .collect();
    // begin -> for each run { load; step; apply } -> commit: the wave.
    let mut wave = state.store.begin_wave(&keyed, now).await?;
    let policy = tg_engine::Policy {
        gates: &policy.gates,
        catalog: &policy.catalog,
        settings: &p.storm,
    };
    let mut taken = 0;
    let mut elsewhere = 0;
    let mut repeats: Vec<Prepared> = Vec::new();
    let mut decided = Vec::new();
    for (item, r) in items.iter().zip(&reads) {
        if !wave.claimable(&item.run().run_id) {
            // Decided by another worker (its lease had expired).
            taken += 1;
            elsewhere += 1;
            continue;
        }
        let x: &Prepared = match item {
            Item::Ready(x) => x,
            Item::Repeat(run) => {
                let dedup = wave.state().dedup.get(&run.event.fingerprint).cloned();
                let pre = tg_engine::precheck(
                    &tg_engine::StepState {
                        dedup,
                        ..Default::default()
                    },
                    &run.event,
                    now,
                );
                let Some(record) = no_model(p, &pre) else {
                    break;
                };
                let record_json = serde_json::to_value(&record)?;
                repeats.push(Prepared {
                    run: StoredRun::clone(run),
                    record,
                    record_json,
                });
                repeats.last().ok_or_else(|| anyhow::anyhow!("repeat"))?
            }
        };
        let classification = match (&x.record.classification, &x.record.rejection) {
            (Some(c), _) => Some(Ok(c)),
            (None, Some(r)) => Some(Err(r)),
            (None, None) => None,
        };
        let run = tg_engine::WaveRun {
            reads: r,
            run_id: &x.run.run_id,
            correlation_id: &x.run.correlation_id,
            event: &x.run.event,
            classification,
        };
        let out = tg_engine::decide_wave(wave.state(), policy, &[run], now)
            .pop()
            .ok_or_else(|| anyhow::anyhow!("a wave of one run decided nothing"))?;
        let sealed = wave.apply(&x.run.run_id, &x.record_json, &out, |out| {
            let at = RunTimestamps {
                received_at: x.run.received_at,
                classified_at: now,
                decided_at: now,
                completed_at: now,
            };
            build_audit(
                &x.run,
                &x.record,
                out.decision.clone(),
                ActionResult::none_executed(),
                at,
            )
        })?;
        decided.push((
            x.run.run_id.clone(),
            x.run.received_at,
            x.record.latency_ms,
            out,
            sealed,
        ));
        taken += 1;
    }
    wave.commit().await?;
    let decided_at = state.clock.now();
    if elsewhere > 0 {
        tracing::info!(runs = elsewhere, "runs already decided by another worker");
    }
    for (run_id, received_at, latency_ms, out, sealed) in decided {
        for a in &out.decision.actions {
            m::decided(a.action, a.outcome);
        }
        m::processing_seconds(started.elapsed());
        // Accepted -> decided, without the model call: the gate's own share,
        // queueing included (the issue 11 lag target).
        m::decision_lag(
            decided_at
                - received_at
                - chrono::Duration::milliseconds(i64::try_from(latency_ms).unwrap_or(0)),
        );
        match sealed {
            Some(record) => audited(state, &record),
            None => complete_or_hand_over(state, &run_id).await?,
        }
    }
    Ok(taken)
}

/// The record of a run the pre-check found needs no model call (a
/// duplicate inside its window, a resolution); `None` when it needs one.
fn no_model(p: &crate::Pipeline, pre: &Precheck) -> Option<ClassificationRecord> {
    match pre {
        Precheck::Classify => None,
        Precheck::Duplicate { first_run_id } => {
            Some(skipped(p, format!("duplicate of {first_run_id}")))
        }
        Precheck::Resolved => Some(skipped(p, "resolved alert".into())),
    }
}

fn skipped(p: &crate::Pipeline, why: String) -> ClassificationRecord {
    ClassificationRecord {
        info: p.classifier.info(),
        skipped: Some(why),
        raw_output: None,
        output_sha256: None,
        classification: None,
        rejection: None,
        latency_ms: 0,
        prompt_sha256: None,
        usage: None,
    }
}

/// Audits the run now if none of its actions is pending; otherwise wakes the
/// outbox, which audits it once the last action is delivered or dead.
pub async fn complete_or_hand_over(
    state: &AppState,
    run_id: &tg_model::RunId,
) -> anyhow::Result<()> {
    if state.store.pending_count(run_id).await? > 0 {
        state.outbox.notify_one();
        return Ok(());
    }
    complete(state, run_id).await
}

/// Builds the run's one audit record from the store and seals it (the store
/// refuses a run that is not `decided`, so a run is never audited twice).
pub(crate) async fn complete(state: &AppState, run_id: &tg_model::RunId) -> anyhow::Result<()> {
    let run = state
        .store
        .get_run(run_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished"))?;
    let decision = run
        .decision
        .clone()
        .ok_or_else(|| anyhow::anyhow!("run {run_id} has no decision"))?;
    let record: ClassificationRecord = run
        .classification
        .clone()
        .map(serde_json::from_value)
        .transpose()?
        .ok_or_else(|| anyhow::anyhow!("run {run_id} has no classification record"))?;
    let stored = state.store.actions(run_id).await?;
    let actions: Vec<ActionResult> = ActionKind::ALL
        .into_iter()
        .map(|kind| {
            let s = stored.iter().find(|a| a.kind == kind);
            s.and_then(|a| a.result.clone())
                .unwrap_or_else(|| ActionResult::not_executed(kind))
        })
        .collect();
    let now = state.clock.now();
    let decided_at = run.decided_at.unwrap_or(now);
    let at = RunTimestamps {
        received_at: run.received_at,
        classified_at: run.classified_at.unwrap_or(decided_at),
        decided_at,
        completed_at: now,
    };
    let audit = build_audit(&run, &record, decision, actions, at);
    let sealed = state.store.complete(audit, now).await?;
    audited(state, &sealed);
    Ok(())
}

fn audited(state: &AppState, sealed: &AuditRecord) {
    tracing::info!(
        run_id = %sealed.run_id,
        correlation_id = %sealed.correlation_id,
        seq = sealed.seq,
        outcomes = %sealed.decision.actions.iter().map(|a| format!("{}={}", a.action, a.outcome.as_str())).collect::<Vec<_>>().join(","),
        "run audited"
    );
    state.audited.notify_one();
    state.completed.notify_waiters();
}

/// The run's one audit record (unsealed): [`AuditRecord::unsealed`].
fn build_audit(
    run: &StoredRun,
    record: &ClassificationRecord,
    decision: tg_model::Decision,
    actions: Vec<ActionResult>,
    timestamps: RunTimestamps,
) -> AuditRecord {
    let at = tg_model::RunRef {
        run_id: &run.run_id,
        correlation_id: &run.correlation_id,
        event: &run.event,
        submitted_by: run.submitted_by.as_deref(),
    };
    AuditRecord::unsealed(at, record, decision, actions, timestamps)
}

/// Appends audit records to the JSON Lines file in chain order, from the store.
/// On start it first catches up with whatever the store has that the file lacks.
pub async fn audit_file_writer(state: AppState, token: CancellationToken) {
    let Some(path) = state.audit_file.clone() else {
        return;
    };
    let mut sink = match tg_audit::JsonlSink::open(&path) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open audit file; records stay in the store");
            return;
        }
    };
    let mut last = match sink.last_seq() {
        Ok(s) => s.unwrap_or(0),
        Err(e) => {
            tracing::error!(error = %e, "cannot read audit file; records stay in the store");
            return;
        }
    };
    loop {
        match state.store.audit_after(last, AUDIT_FILE_BATCH_MAX).await {
            Ok(records) if !records.is_empty() => {
                let next = records.last().map(ChainRecord::seq).unwrap_or(last);
                match sink.append(&records) {
                    Ok(()) => last = next,
                    Err(e) => {
                        tracing::error!(error = %e, "audit file append failed; will retry");
                        tokio::time::sleep(Duration::from_millis(STORE_RETRY_MS)).await;
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot read audit records"),
        }
        tokio::select! {
            _ = token.cancelled() => {
                // The last checkpoint signs the end of the chain, then one last
                // catch-up leaves the file complete (checkpoint included).
                if let Some(cp) = state.pipeline.audit.checkpoint.as_ref()
                    && let Err(e) = crate::audit::checkpoint_if_due(&state, cp, true).await
                {
                    tracing::error!(error = %e, "final audit checkpoint failed");
                }
                if let Ok(records) = state.store.audit_after(last, AUDIT_FILE_BATCH_MAX).await {
                    let _ = sink.append(&records);
                }
                return;
            }
            _ = state.audited.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(IDLE_POLL_MS)) => {}
        }
    }
}
