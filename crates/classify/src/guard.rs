//! [`Guarded`]: cost and storm control around any [`Classifier`].
//!
//! In order, for each call:
//! 1. **Cache** keyed by the event's fingerprint plus a SHA-256 of the content
//!    that matters (the canonical JSON of the event without `received_at`,
//!    `occurred_at` and `correlation_ids`, and of the team context), kept
//!    `cache_ttl_secs` and at most `cache_entries_max` entries (oldest evicted
//!    first). Provider answers are cached, accepted or rejected by the contract;
//!    provider failures and fallback answers never are.
//! 2. **Single-flight**: concurrent callers with the same key wait for the first
//!    caller's answer instead of calling the provider again (always on, even
//!    with `cache_ttl_secs: 0`).
//! 3. **Circuit breaker**: after `breaker_failures` consecutive provider
//!    failures (`provider_error:*` or the guard's timeout) it opens for
//!    `breaker_cooldown_secs`; then one probe call is let through (half-open);
//!    its success closes the breaker, its failure opens it again.
//! 4. **Budget**: at most `calls_per_minute` provider calls (a token bucket of
//!    that capacity, refilled continuously).
//! 5. **Concurrency**: at most `concurrency_max` calls in flight; a caller waits
//!    at most `permit_wait_ms` for a slot.
//! 6. **Timeout**: the whole provider call (its retries and re-ask included) is
//!    cut at `call_timeout_ms`.
//!
//! Whatever stops a call is a [`Rejection`] with a stable code
//! (`provider_unavailable:circuit_open|over_budget|saturated|timeout`): fail
//! closed, the run goes to review. With a fallback classifier configured, a
//! provider failure or unavailability is answered by the fallback instead and
//! the outcome says so: `ClassifierInfo.classifier` is
//! `"rules (fallback from anthropic: <reason code>)"`.
//!
//! Time comes only from the injected [`GuardClock`]: in the server it is the
//! server's `Clock` (a `ManualClock` under tests and `triage-gate simulate`),
//! so TTLs, cooldowns and the budget are deterministic there.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tg_model::hash::canonical_json;
use tg_model::{ClassifierInfo, NormalizedEvent, sha256_hex};
use tokio::sync::{Semaphore, watch};

use crate::contract::{self, reason, rejection};
use crate::{Classifier, ClassifyOutcome, TeamContext};

/// Upper bound on `cache_entries_max`.
pub const CACHE_ENTRIES_LIMIT: usize = 1_000_000;
/// Upper bound on `cache_ttl_secs` (one day).
pub const CACHE_TTL_SECS_LIMIT: u64 = 86_400;
/// Upper bound on `concurrency_max`.
pub const CONCURRENCY_LIMIT: usize = 1024;
/// Upper bound on `calls_per_minute`.
pub const CALLS_PER_MINUTE_LIMIT: u32 = 100_000;
/// Upper bound on `call_timeout_ms` and `permit_wait_ms` (10 minutes).
pub const CALL_TIMEOUT_MS_LIMIT: u64 = 600_000;
/// Upper bound on `breaker_failures`.
pub const BREAKER_FAILURES_LIMIT: u32 = 1000;
/// Upper bound on `breaker_cooldown_secs` (one hour).
pub const BREAKER_COOLDOWN_SECS_LIMIT: u64 = 3600;
/// Suffix of `ClassifierInfo.classifier` on an answer served from the cache
/// or shared with a concurrent identical call.
pub const CACHED_SUFFIX: &str = " (cached)";

/// A monotonic clock in milliseconds. Production uses [`SystemGuardClock`];
/// tests use [`ManualGuardClock`].
pub trait GuardClock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// Milliseconds since the clock was made, from `Instant` (monotonic).
#[derive(Debug, Clone, Copy)]
pub struct SystemGuardClock {
    origin: Instant,
}

impl Default for SystemGuardClock {
    fn default() -> Self {
        SystemGuardClock {
            origin: Instant::now(),
        }
    }
}

impl GuardClock for SystemGuardClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualGuardClock(AtomicU64);

impl ManualGuardClock {
    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl GuardClock for ManualGuardClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<T: GuardClock + ?Sized> GuardClock for Arc<T> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

/// What answers when the provider cannot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fallback {
    /// Nothing: the rejection stands and the run goes to review.
    #[default]
    None,
    /// The built-in rules classifier.
    Rules,
}

/// Limits of a [`Guarded`] classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// How long an answer is reused (default 300); 0 keeps nothing (single-flight still applies).
    pub cache_ttl_secs: u64,
    /// Cached answers kept at most (oldest evicted first).
    pub cache_entries_max: usize,
    /// Provider calls in flight at most.
    pub concurrency_max: usize,
    /// How long a call waits for a free slot before `provider_unavailable:saturated`.
    pub permit_wait_ms: u64,
    /// Provider calls per minute at most (token bucket, burst = this number).
    pub calls_per_minute: u32,
    /// Whole provider call (retries and re-ask included) at most.
    pub call_timeout_ms: u64,
    /// Consecutive provider failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call.
    pub breaker_cooldown_secs: u64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            cache_ttl_secs: 300,
            cache_entries_max: 10_000,
            concurrency_max: 8,
            permit_wait_ms: 30_000,
            calls_per_minute: 600,
            call_timeout_ms: 60_000,
            breaker_failures: 5,
            breaker_cooldown_secs: 30,
        }
    }
}

impl GuardConfig {
    /// Every out-of-range value, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut check = |ok: bool, field: &'static str, msg: String| {
            if !ok {
                out.push((field, msg));
            }
        };
        check(
            self.cache_ttl_secs <= CACHE_TTL_SECS_LIMIT,
            "cache_ttl_secs",
            format!(
                "{} is more than {CACHE_TTL_SECS_LIMIT}",
                self.cache_ttl_secs
            ),
        );
        check(
            (1..=CACHE_ENTRIES_LIMIT).contains(&self.cache_entries_max),
            "cache_entries_max",
            format!(
                "{} is not in 1..={CACHE_ENTRIES_LIMIT}",
                self.cache_entries_max
            ),
        );
        check(
            (1..=CONCURRENCY_LIMIT).contains(&self.concurrency_max),
            "concurrency_max",
            format!("{} is not in 1..={CONCURRENCY_LIMIT}", self.concurrency_max),
        );
        check(
            self.permit_wait_ms <= CALL_TIMEOUT_MS_LIMIT,
            "permit_wait_ms",
            format!(
                "{} is more than {CALL_TIMEOUT_MS_LIMIT}",
                self.permit_wait_ms
            ),
        );
        check(
            (1..=CALLS_PER_MINUTE_LIMIT).contains(&self.calls_per_minute),
            "calls_per_minute",
            format!(
                "{} is not in 1..={CALLS_PER_MINUTE_LIMIT}",
                self.calls_per_minute
            ),
        );
        check(
            (1..=CALL_TIMEOUT_MS_LIMIT).contains(&self.call_timeout_ms),
            "call_timeout_ms",
            format!(
                "{} is not in 1..={CALL_TIMEOUT_MS_LIMIT}",
                self.call_timeout_ms
            ),
        );
        check(
            (1..=BREAKER_FAILURES_LIMIT).contains(&self.breaker_failures),
            "breaker_failures",
            format!(
                "{} is not in 1..={BREAKER_FAILURES_LIMIT}",
                self.breaker_failures
            ),
        );
        check(
            (1..=BREAKER_COOLDOWN_SECS_LIMIT).contains(&self.breaker_cooldown_secs),
            "breaker_cooldown_secs",
            format!(
                "{} is not in 1..={BREAKER_COOLDOWN_SECS_LIMIT}",
                self.breaker_cooldown_secs
            ),
        );
        out
    }
}

/// Why a [`Guarded`] could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct GuardError {
    pub field: &'static str,
    pub message: String,
}

/// Counters, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Calls that reached the wrapped classifier.
    pub provider_calls: u64,
    /// Answers served from the cache.
    pub cache_hits: u64,
    /// Callers that waited for a concurrent identical call.
    pub coalesced: u64,
    /// Calls refused by the guard (breaker, budget, saturation, timeout).
    pub unavailable: u64,
    /// Answers given by the fallback classifier.
    pub fallbacks: u64,
    /// Of `unavailable`: refused because the breaker was open.
    pub circuit_open: u64,
    /// Of `unavailable`: refused because the calls-per-minute budget was spent.
    pub over_budget: u64,
    /// Of `unavailable`: no concurrency slot within `permit_wait_ms`.
    pub saturated: u64,
    /// Provider calls cut at `call_timeout_ms` (counted as provider failures).
    pub timeouts: u64,
    /// Times the breaker opened (closed -> open, or a failed half-open probe).
    pub breaker_opens: u64,
    /// The breaker now: 0 closed, 1 open, 2 half-open.
    pub breaker_state: u8,
}

/// One guard's counters with its profile and provider, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedGuardStats {
    /// The classifier profile (`default` unless routed).
    pub profile: String,
    /// The provider behind the guard (`anthropic`, `bedrock`, `openai`).
    pub provider: String,
    pub stats: GuardStats,
}

#[derive(Debug, Default)]
struct Counters {
    provider_calls: AtomicU64,
    cache_hits: AtomicU64,
    coalesced: AtomicU64,
    unavailable: AtomicU64,
    fallbacks: AtomicU64,
    circuit_open: AtomicU64,
    over_budget: AtomicU64,
    saturated: AtomicU64,
    timeouts: AtomicU64,
    breaker_opens: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One outcome, shared between the cache and waiting callers.
type Shared = Arc<ClassifyOutcome>;

enum Slot {
    Ready {
        outcome: Shared,
        expires_ms: u64,
        generation: u64,
    },
    Pending(watch::Receiver<Option<Shared>>),
}

#[derive(Default)]
struct Slots {
    map: HashMap<String, Slot>,
    /// Ready entries in insertion (= expiry) order, with their generation.
    order: VecDeque<(String, u64)>,
    generation: u64,
}

impl Slots {
    fn evict(&mut self, now_ms: u64, max: usize) {
        while let Some((key, generation)) = self.order.front().cloned() {
            let ready_count_over = self.map.len() >= max;
            let live = matches!(
                self.map.get(&key),
                Some(Slot::Ready { generation: g, .. }) if *g == generation
            );
            let expired = matches!(
                self.map.get(&key),
                Some(Slot::Ready { expires_ms, .. }) if *expires_ms <= now_ms
            );
            if !live {
                self.order.pop_front();
            } else if expired || ready_count_over {
                self.order.pop_front();
                self.map.remove(&key);
            } else {
                break;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed { failures: u32 },
    Open { until_ms: u64 },
    HalfOpen { probing: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Normal,
    Probe,
}

/// Integer milli-tokens, refilled continuously.
#[derive(Debug)]
struct Bucket {
    milli: u64,
    last_ms: u64,
}

/// A classifier behind a cache, single-flight, breaker, budget, concurrency
/// limit and timeout, with an optional fallback. See the module docs.
pub struct Guarded<C: Classifier> {
    inner: C,
    name: String,
    config: GuardConfig,
    clock: Arc<dyn GuardClock>,
    fallback: Option<Arc<dyn Classifier>>,
    slots: Mutex<Slots>,
    semaphore: Semaphore,
    bucket: Mutex<Bucket>,
    breaker: Mutex<BreakerState>,
    counters: Counters,
}

impl<C: Classifier> std::fmt::Debug for Guarded<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("fallback", &self.fallback.as_ref().map(|c| c.info()))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<C: Classifier> Guarded<C> {
    /// Wraps `inner`. `fallback` answers when the provider fails or is unavailable.
    pub fn new(
        inner: C,
        config: GuardConfig,
        clock: Arc<dyn GuardClock>,
        fallback: Option<Arc<dyn Classifier>>,
    ) -> Result<Self, GuardError> {
        if let Some((field, message)) = config.problems().into_iter().next() {
            return Err(GuardError { field, message });
        }
        let now = clock.now_ms();
        Ok(Guarded {
            name: inner.info().classifier,
            inner,
            semaphore: Semaphore::new(config.concurrency_max),
            bucket: Mutex::new(Bucket {
                milli: u64::from(config.calls_per_minute) * 1000,
                last_ms: now,
            }),
            breaker: Mutex::new(BreakerState::Closed { failures: 0 }),
            slots: Mutex::new(Slots::default()),
            counters: Counters::default(),
            config,
            clock,
            fallback,
        })
    }

    /// The wrapped classifier.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    pub fn stats(&self) -> GuardStats {
        let c = &self.counters;
        GuardStats {
            provider_calls: c.provider_calls.load(Ordering::Relaxed),
            cache_hits: c.cache_hits.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            unavailable: c.unavailable.load(Ordering::Relaxed),
            fallbacks: c.fallbacks.load(Ordering::Relaxed),
            circuit_open: c.circuit_open.load(Ordering::Relaxed),
            over_budget: c.over_budget.load(Ordering::Relaxed),
            saturated: c.saturated.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            breaker_opens: c.breaker_opens.load(Ordering::Relaxed),
            breaker_state: match *lock(&self.breaker) {
                BreakerState::Closed { .. } => 0,
                BreakerState::Open { .. } => 1,
                BreakerState::HalfOpen { .. } => 2,
            },
        }
    }

    /// Cached answers currently held (pending calls included).
    pub fn cache_len(&self) -> usize {
        lock(&self.slots).map.len()
    }

    fn unavailable(&self, code: &str, detail: String, latency_ms: u64) -> ClassifyOutcome {
        bump(&self.counters.unavailable);
        match code {
            reason::UNAVAILABLE_CIRCUIT_OPEN => bump(&self.counters.circuit_open),
            reason::UNAVAILABLE_OVER_BUDGET => bump(&self.counters.over_budget),
            reason::UNAVAILABLE_SATURATED => bump(&self.counters.saturated),
            _ => {}
        }
        ClassifyOutcome {
            info: self.inner.info(),
            raw_output: None,
            result: Err(rejection(code, detail)),
            latency_ms,
            usage: None,
            prompt_sha256: None,
        }
    }

    fn admit(&self, now: u64) -> Option<Admit> {
        let mut b = lock(&self.breaker);
        match *b {
            BreakerState::Closed { .. } => Some(Admit::Normal),
            BreakerState::Open { until_ms } if now < until_ms => None,
            BreakerState::Open { .. } | BreakerState::HalfOpen { probing: false } => {
                *b = BreakerState::HalfOpen { probing: true };
                Some(Admit::Probe)
            }
            BreakerState::HalfOpen { probing: true } => None,
        }
    }

    fn abandon(&self, admit: Admit) {
        if admit == Admit::Probe {
            *lock(&self.breaker) = BreakerState::HalfOpen { probing: false };
        }
    }

    fn record(&self, failed: bool, now: u64) {
        let mut b = lock(&self.breaker);
        let open = BreakerState::Open {
            until_ms: now.saturating_add(self.config.breaker_cooldown_secs.saturating_mul(1000)),
        };
        *b = match (*b, failed) {
            (_, false) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, true) => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.breaker_failures {
                    tracing::warn!(provider = %self.name, failures, "circuit breaker opens");
                    bump(&self.counters.breaker_opens);
                    open
                } else {
                    BreakerState::Closed { failures }
                }
            }
            (BreakerState::HalfOpen { .. }, true) => {
                tracing::warn!(provider = %self.name, "probe failed; circuit breaker opens again");
                bump(&self.counters.breaker_opens);
                open
            }
            (state @ BreakerState::Open { .. }, true) => state,
        };
    }

    fn take_budget(&self, now: u64) -> bool {
        let per_minute = u64::from(self.config.calls_per_minute);
        let cap = per_minute * 1000;
        let mut b = lock(&self.bucket);
        let elapsed = now.saturating_sub(b.last_ms);
        // milli-tokens per ms = per_minute * 1000 / 60_000 = per_minute / 60.
        let add = elapsed.saturating_mul(per_minute) / 60;
        if add > 0 {
            let filled = b.milli.saturating_add(add);
            if filled >= cap {
                b.milli = cap;
                b.last_ms = now;
            } else {
                b.milli = filled;
                // Carry the fraction of a milli-token not yet credited.
                b.last_ms = b
                    .last_ms
                    .saturating_add(add.saturating_mul(60) / per_minute);
            }
        }
        if b.milli >= 1000 {
            b.milli -= 1000;
            true
        } else {
            false
        }
    }

    /// One provider call behind the breaker, budget, concurrency limit and timeout.
    async fn call(&self, event: &NormalizedEvent, teams: &TeamContext) -> ClassifyOutcome {
        let started = self.clock.now_ms();
        let Some(admit) = self.admit(started) else {
            return self.unavailable(
                reason::UNAVAILABLE_CIRCUIT_OPEN,
                format!("the circuit breaker of {} is open", self.name),
                0,
            );
        };
        if !self.take_budget(started) {
            self.abandon(admit);
            return self.unavailable(
                reason::UNAVAILABLE_OVER_BUDGET,
                format!(
                    "the budget of {} calls per minute to {} is spent",
                    self.config.calls_per_minute, self.name
                ),
                0,
            );
        }
        let wait = Duration::from_millis(self.config.permit_wait_ms);
        let permit = match tokio::time::timeout(wait, self.semaphore.acquire()).await {
            Ok(Ok(p)) => p,
            _ => {
                self.abandon(admit);
                let waited = self.clock.now_ms().saturating_sub(started);
                return self.unavailable(
                    reason::UNAVAILABLE_SATURATED,
                    format!(
                        "no free slot among {} within {} ms",
                        self.config.concurrency_max, self.config.permit_wait_ms
                    ),
                    waited,
                );
            }
        };
        bump(&self.counters.provider_calls);
        let timeout = Duration::from_millis(self.config.call_timeout_ms);
        let outcome = match tokio::time::timeout(timeout, self.inner.classify(event, teams)).await {
            Ok(o) => o,
            Err(_) => {
                // Counted as a provider failure below, not as a guard refusal.
                bump(&self.counters.timeouts);
                ClassifyOutcome {
                    info: self.inner.info(),
                    raw_output: None,
                    result: Err(rejection(
                        reason::UNAVAILABLE_TIMEOUT,
                        format!("no answer within {} ms", self.config.call_timeout_ms),
                    )),
                    latency_ms: self.config.call_timeout_ms,
                    usage: None,
                    prompt_sha256: None,
                }
            }
        };
        drop(permit);
        let failed = outcome
            .result
            .as_ref()
            .is_err_and(|r| contract::is_provider_failure(&r.reason));
        self.record(failed, self.clock.now_ms());
        outcome
    }

    /// A provider call, or the fallback's answer when the provider failed.
    async fn call_or_fallback(
        &self,
        event: &NormalizedEvent,
        teams: &TeamContext,
    ) -> (ClassifyOutcome, bool) {
        let outcome = self.call(event, teams).await;
        let why = match &outcome.result {
            Err(r) if contract::is_provider_failure(&r.reason) => r.reason.clone(),
            _ => return (outcome, true),
        };
        let Some(fallback) = &self.fallback else {
            return (outcome, false);
        };
        bump(&self.counters.fallbacks);
        tracing::warn!(provider = %self.name, reason = %why, "provider unavailable; the fallback classifier answers");
        let mut fb = fallback.classify(event, teams).await;
        fb.info.classifier = format!(
            "{} (fallback from {}: {why})",
            fb.info.classifier, self.name
        );
        fb.latency_ms = fb.latency_ms.saturating_add(outcome.latency_ms);
        (fb, false)
    }

    fn shared_copy(&self, outcome: &ClassifyOutcome, waited_ms: u64) -> ClassifyOutcome {
        let mut out = outcome.clone();
        if out.info.classifier == self.name {
            out.info.classifier = format!("{}{CACHED_SUFFIX}", self.name);
        }
        // No tokens were spent for this caller.
        out.usage = None;
        out.latency_ms = waited_ms;
        out
    }
}

/// The cache key: fingerprint, then a SHA-256 of the canonical JSON of the
/// event (without `received_at`, `occurred_at`, `correlation_ids`) and of the
/// team context (the answer is validated against it).
pub fn cache_key(event: &NormalizedEvent, teams: &TeamContext) -> String {
    let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        for volatile in ["received_at", "occurred_at", "correlation_ids"] {
            map.remove(volatile);
        }
    }
    let doc = json!({
        "event": value,
        "known_teams": teams.known_teams,
        "service_team": teams.service_team,
        "default_team": teams.default_team,
    });
    let hash = sha256_hex(&canonical_json(&doc));
    format!("{}:{}", event.fingerprint.as_str(), hash.as_str())
}

/// Removes a pending slot if its leader goes away without an answer (cancelled).
struct PendingGuard<'a> {
    slots: &'a Mutex<Slots>,
    key: &'a str,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut slots = lock(self.slots);
            if matches!(slots.map.get(self.key), Some(Slot::Pending(_))) {
                slots.map.remove(self.key);
            }
        }
    }
}

#[async_trait::async_trait]
impl<C: Classifier> Classifier for Guarded<C> {
    fn info(&self) -> ClassifierInfo {
        self.inner.info()
    }

    fn guard_stats(&self) -> Vec<NamedGuardStats> {
        vec![NamedGuardStats {
            profile: crate::route::DEFAULT_PROFILE.into(),
            provider: self.name.clone(),
            stats: self.stats(),
        }]
    }

    async fn classify(&self, event: &NormalizedEvent, teams: &TeamContext) -> ClassifyOutcome {
        let key = cache_key(event, teams);
        let started = self.clock.now_ms();
        // Bounded: a waiter loops only when a leader vanished without answering.
        for _ in 0..8 {
            let wait_for = {
                let slots = lock(&self.slots);
                let now = self.clock.now_ms();
                match slots.map.get(&key) {
                    Some(Slot::Ready {
                        outcome,
                        expires_ms,
                        ..
                    }) if *expires_ms > now => {
                        bump(&self.counters.cache_hits);
                        return self.shared_copy(outcome, 0);
                    }
                    Some(Slot::Pending(rx)) => Some(rx.clone()),
                    Some(Slot::Ready { .. }) | None => None,
                }
            };
            if let Some(mut rx) = wait_for {
                bump(&self.counters.coalesced);
                let answer = rx
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|v| v.clone());
                match answer {
                    Some(outcome) => {
                        let waited = self.clock.now_ms().saturating_sub(started);
                        return self.shared_copy(&outcome, waited);
                    }
                    None => continue,
                }
            }
            // Lead: register the pending call, unless someone else just did.
            let tx = {
                let mut slots = lock(&self.slots);
                if matches!(slots.map.get(&key), Some(Slot::Pending(_))) {
                    continue;
                }
                let (tx, rx) = watch::channel(None);
                slots.map.insert(key.clone(), Slot::Pending(rx));
                tx
            };
            let mut guard = PendingGuard {
                slots: &self.slots,
                key: &key,
                armed: true,
            };
            let (outcome, from_provider) = self.call_or_fallback(event, teams).await;
            let shared = Arc::new(outcome);
            {
                let mut slots = lock(&self.slots);
                let now = self.clock.now_ms();
                let cacheable = from_provider && self.config.cache_ttl_secs > 0;
                if cacheable {
                    slots.evict(now, self.config.cache_entries_max);
                    slots.generation += 1;
                    let generation = slots.generation;
                    slots.map.insert(
                        key.clone(),
                        Slot::Ready {
                            outcome: shared.clone(),
                            expires_ms: now
                                .saturating_add(self.config.cache_ttl_secs.saturating_mul(1000)),
                            generation,
                        },
                    );
                    slots.order.push_back((key.clone(), generation));
                } else {
                    slots.map.remove(&key);
                }
                guard.armed = false;
            }
            // Waiters get the answer even when it is not cached.
            let _ = tx.send(Some(shared.clone()));
            return Arc::try_unwrap(shared).unwrap_or_else(|a| (*a).clone());
        }
        // Only reached if leaders kept vanishing: call without coalescing.
        self.call_or_fallback(event, teams).await.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counting {
        calls: AtomicUsize,
        answer: Result<(), &'static str>,
        delay_ms: u64,
    }

    #[async_trait::async_trait]
    impl Classifier for Counting {
        fn info(&self) -> ClassifierInfo {
            ClassifierInfo {
                classifier: "fake".into(),
                model: None,
            }
        }
        async fn classify(&self, _e: &NormalizedEvent, _t: &TeamContext) -> ClassifyOutcome {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
            }
            ClassifyOutcome {
                info: self.info(),
                raw_output: Some("{}".into()),
                result: match self.answer {
                    Ok(()) => Err(rejection(reason::UNKNOWN_TEAM, "contract")),
                    Err(code) => Err(rejection(code, "down")),
                },
                latency_ms: 1,
                usage: None,
                prompt_sha256: None,
            }
        }
    }

    #[test]
    fn breaker_opens_after_n_failures_and_half_opens_after_cooldown() {
        let clock = Arc::new(ManualGuardClock::default());
        let g = Guarded::new(
            Counting {
                calls: AtomicUsize::new(0),
                answer: Ok(()),
                delay_ms: 0,
            },
            GuardConfig {
                breaker_failures: 2,
                breaker_cooldown_secs: 10,
                ..GuardConfig::default()
            },
            clock.clone(),
            None,
        )
        .unwrap();
        assert_eq!(g.admit(0), Some(Admit::Normal));
        g.record(true, 0);
        assert_eq!(g.admit(0), Some(Admit::Normal));
        g.record(true, 0);
        assert_eq!(g.admit(9_999), None);
        assert_eq!(g.admit(10_000), Some(Admit::Probe));
        assert_eq!(g.admit(10_000), None, "one probe at a time");
        g.record(true, 10_000);
        assert_eq!(g.admit(19_999), None);
        assert_eq!(g.admit(20_000), Some(Admit::Probe));
        g.record(false, 20_000);
        assert_eq!(g.admit(20_000), Some(Admit::Normal));
    }

    #[test]
    fn budget_refills_continuously() {
        let clock = Arc::new(ManualGuardClock::default());
        let g = Guarded::new(
            Counting {
                calls: AtomicUsize::new(0),
                answer: Ok(()),
                delay_ms: 0,
            },
            GuardConfig {
                calls_per_minute: 2,
                ..GuardConfig::default()
            },
            clock,
            None,
        )
        .unwrap();
        assert!(g.take_budget(0));
        assert!(g.take_budget(0));
        assert!(!g.take_budget(0));
        assert!(!g.take_budget(29_000));
        assert!(g.take_budget(30_000));
        assert!(!g.take_budget(30_000));
    }

    #[test]
    fn limits_are_checked() {
        let bad = GuardConfig {
            concurrency_max: 0,
            calls_per_minute: 0,
            ..GuardConfig::default()
        };
        let fields: Vec<_> = bad.problems().into_iter().map(|p| p.0).collect();
        assert_eq!(fields, ["concurrency_max", "calls_per_minute"]);
        assert!(GuardConfig::default().problems().is_empty());
    }

    #[test]
    fn eviction_keeps_at_most_max_entries_oldest_first() {
        let mut s = Slots::default();
        let outcome = Arc::new(ClassifyOutcome {
            info: ClassifierInfo {
                classifier: "x".into(),
                model: None,
            },
            raw_output: None,
            result: Err(rejection("empty", "")),
            latency_ms: 0,
            usage: None,
            prompt_sha256: None,
        });
        for i in 0..5u64 {
            s.evict(0, 3);
            s.generation += 1;
            let g = s.generation;
            s.map.insert(
                format!("k{i}"),
                Slot::Ready {
                    outcome: outcome.clone(),
                    expires_ms: 100,
                    generation: g,
                },
            );
            s.order.push_back((format!("k{i}"), g));
        }
        assert_eq!(s.map.len(), 3);
        assert!(s.map.contains_key("k4") && !s.map.contains_key("k1"));
        s.evict(100, 3);
        assert!(s.map.is_empty(), "everything expired at 100");
    }
}
