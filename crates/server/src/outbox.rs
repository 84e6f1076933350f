//! Outbox delivery, decoupled from the processing workers: claims due actions
//! (per target, in decision order, within `actions.concurrency`), makes ONE
//! attempt per claim, records it, and schedules the next one (exponential
//! backoff with seeded jitter, Retry-After honoured and capped) or dead-letters
//! the action after `attempts_max` (or at once when the target refuses it for
//! good). A run is audited once all its actions are delivered or dead.
//!
//! Every time comes from the injected `Clock`, so the simulator (a
//! `ManualClock`) decides when a retry is due.

use std::sync::Arc;
use std::time::Duration;

use tg_actions::{RetryPolicy, TargetError};
use tg_model::ActionStatus;
use tg_store::{AttemptOutcome, Claimed, DeliveryEnd, OutboxTarget};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::metrics as m;

/// Pause after a store error before the outbox tries again.
pub const STORE_RETRY_MS: u64 = 1_000;

/// How the outbox delivers (from `actions.retry`, `actions.concurrency`, `actions.outbox`).
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    pub retry: RetryPolicy,
    /// Deliveries in flight per target, in [`OutboxTarget::ALL`] order.
    pub concurrency: [usize; 3],
    pub lease_ms: u64,
    pub idle_poll_ms: u64,
    /// After a restart, an interrupted delivery waits this long (the longest
    /// target timeout) before it is tried again: a request the dead process
    /// still had in flight has then landed or failed at the target, so the
    /// ServiceNow look-up before create sees it instead of racing it.
    pub restart_grace_ms: u64,
}

impl OutboxSettings {
    pub fn from_config(a: &tg_config::ActionsConfig) -> Self {
        OutboxSettings {
            retry: RetryPolicy {
                attempts_max: a.retry.attempts_max,
                backoff_base_ms: a.retry.backoff_base_ms,
                backoff_max_ms: a.retry.backoff_max_ms,
                retry_after_max_secs: a.retry.retry_after_max_secs,
                jitter_seed: a.retry.jitter_seed,
            },
            concurrency: [
                a.concurrency.servicenow,
                a.concurrency.pagerduty,
                a.concurrency.bridge,
            ],
            lease_ms: a.outbox.lease_ms,
            idle_poll_ms: a.outbox.idle_poll_ms,
            restart_grace_ms: [
                a.servicenow.as_ref().map(|t| t.timeout_ms),
                a.pagerduty.as_ref().map(|t| t.timeout_ms),
                a.bridge.as_ref().map(|t| t.timeout_ms),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0),
        }
    }
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings::from_config(&tg_config::ActionsConfig::default())
    }
}

/// The delivery loop: runs until cancelled; deliveries in flight then finish
/// (bounded by the server's shutdown grace) or are picked up after a restart.
pub async fn run(state: AppState, token: CancellationToken) {
    // The process among replicas: a claim left by a dead one is attributable.
    let owner = format!("{}/outbox", state.instance);
    let settings = state.pipeline.outbox.clone();
    let slots: Vec<(OutboxTarget, Arc<Semaphore>)> = OutboxTarget::ALL
        .into_iter()
        .zip(settings.concurrency)
        .map(|(t, n)| (t, Arc::new(Semaphore::new(n.max(1)))))
        .collect();
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        if token.is_cancelled() {
            while inflight.join_next().await.is_some() {}
            return;
        }
        let mut store_failed = false;
        // INVARIANT: while the store cannot commit, nothing is claimed (a
        // delivery whose attempt cannot be recorded would be sent again).
        if !state.store.health().claims() {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(STORE_RETRY_MS)) => {}
            }
            continue;
        }
        // The kill switch: creates now capped below their level are drafted, not sent.
        let policy = state.pipeline.policy();
        match state
            .store
            .hold_capped(&policy.catalog, state.clock.now())
            .await
        {
            Ok(runs) => {
                for run_id in runs {
                    complete_quietly(&state, &run_id).await;
                }
            }
            Err(e) => {
                state.store.observe_error(&e);
                tracing::error!(error = %e, "outbox cannot check autonomy caps; claiming nothing");
                store_failed = true;
            }
        }
        // Fail closed: with the caps unknown, nothing is delivered this round.
        let caps_unknown = store_failed;
        for (target, sem) in slots.iter().filter(|_| !caps_unknown) {
            let free = sem.available_permits();
            if free == 0 {
                continue;
            }
            let now = state.clock.now();
            match state
                .store
                .claim_due(&owner, *target, free, now, settings.lease_ms)
                .await
            {
                Ok(claims) => {
                    for claimed in claims {
                        let Ok(permit) = sem.clone().try_acquire_owned() else {
                            // Cannot happen (we claimed at most `free`); the lease
                            // expires and the action is claimed again.
                            break;
                        };
                        let st = state.clone();
                        let owner = owner.clone();
                        let target = *target;
                        inflight.spawn(async move {
                            deliver(&st, &owner, target, claimed).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    state.store.observe_error(&e);
                    tracing::error!(target = target.as_str(), error = %e, "outbox cannot claim actions");
                    store_failed = true;
                }
            }
        }
        refresh_gauges(&state).await;
        let pause = if store_failed {
            STORE_RETRY_MS
        } else {
            settings.idle_poll_ms
        };
        tokio::select! {
            _ = token.cancelled() => {}
            _ = state.outbox.notified() => {}
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
            _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
        }
    }
}

/// Sets the backlog gauges from the store.
pub(crate) async fn refresh_gauges(state: &AppState) {
    if let Ok(c) = state.store.outbox_counts(state.clock.now()).await {
        m::outbox(&c);
    }
}

/// One attempt at one claimed action, recorded; the run is audited when it was
/// the last action outstanding.
async fn deliver(state: &AppState, owner: &str, target: OutboxTarget, claimed: Claimed) {
    let settings = &state.pipeline.outbox;
    let action = &claimed.action;
    let attempt = state.pipeline.executor.attempt(&action.planned).await;
    let now = state.clock.now();
    let mut result = attempt.result;
    result.attempts = claimed.attempt;
    let (outcome, http_status, end) = match &attempt.error {
        None => (
            AttemptOutcome::Delivered,
            None,
            DeliveryEnd::Delivered(result.clone()),
        ),
        Some(err) => {
            let outcome = match err {
                TargetError::Retryable { .. } => AttemptOutcome::Retryable,
                TargetError::Throttled { .. } => AttemptOutcome::Throttled,
                TargetError::Permanent { .. } => AttemptOutcome::Permanent,
            };
            let jitter = settings
                .retry
                .jitter(&action.planned.idempotency_key, claimed.attempt);
            let end = match settings.retry.delay_after(err, claimed.attempt, jitter) {
                Some(wait) => {
                    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    let at = now
                        + chrono::Duration::milliseconds(
                            i64::try_from(wait_ms).unwrap_or(i64::MAX),
                        );
                    // Not terminal yet: the stored result says so.
                    result.status = ActionStatus::Pending;
                    DeliveryEnd::Retry { at, wait_ms }
                }
                None => DeliveryEnd::Dead(result.clone()),
            };
            (outcome, err.http_status(), end)
        }
    };
    m::attempt(target.as_str(), outcome.as_str());
    if let DeliveryEnd::Dead(_) = end {
        m::action_result(action.kind, ActionStatus::Failed);
        tracing::warn!(
            run_id = %action.run_id,
            action_id = action.id,
            kind = action.kind.as_str(),
            attempts = claimed.attempt,
            error = result.error.as_deref().unwrap_or(""),
            "action dead-lettered"
        );
    } else if let DeliveryEnd::Delivered(_) = end {
        m::action_result(action.kind, ActionStatus::Delivered);
    }
    let progress = loop {
        match state
            .store
            .record_attempt(
                &claimed,
                owner,
                outcome,
                http_status,
                result.error.as_deref(),
                Some(&attempt.identity),
                &end,
                now,
            )
            .await
        {
            Ok(p) => break p,
            Err(e) => {
                // The claim stays ours until its lease ends; keep trying to record
                // (a delivered result must not be lost while the store blips).
                tracing::error!(action_id = action.id, error = %e, "cannot record an attempt; retrying");
                tokio::time::sleep(Duration::from_millis(STORE_RETRY_MS)).await;
            }
        }
    };
    if !progress.recorded {
        tracing::warn!(
            action_id = action.id,
            "the claim was lost before the attempt was recorded; another delivery owns the action"
        );
    }
    if progress.run_decided && progress.pending_left == 0 {
        complete_quietly(state, &progress.run_id).await;
    }
    state.outbox.notify_one();
}

/// Audits a run whose actions are all terminal. A concurrent completion (two
/// last actions finishing together) is not an error: the store completes once.
pub(crate) async fn complete_quietly(state: &AppState, run_id: &tg_model::RunId) {
    match crate::worker::complete(state, run_id).await {
        Ok(()) => {}
        Err(e) => match e.downcast_ref::<tg_store::StoreError>() {
            Some(tg_store::StoreError::WrongState { .. }) => {}
            _ => tracing::error!(run_id = %run_id, error = %e, "cannot audit a delivered run"),
        },
    }
}
