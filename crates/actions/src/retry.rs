//! Bounded retries: exponential backoff with deterministic jitter, Retry-After honoured.

use std::future::Future;
use std::time::Duration;

use crate::error::{ConfigError, TargetError};

/// Most attempts a policy may ask for (first try included).
pub const ATTEMPTS_MAX_LIMIT: u32 = 25;
/// Largest backoff a policy may configure, in milliseconds.
pub const BACKOFF_MS_MAX_LIMIT: u64 = 5 * 60 * 1000;
/// Largest Retry-After cap a policy may configure, in seconds.
pub const RETRY_AFTER_SECS_MAX_LIMIT: u64 = 15 * 60;

/// How failed calls are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1..=[`ATTEMPTS_MAX_LIMIT`]).
    pub attempts_max: u32,
    /// Backoff before the second attempt; doubles each time.
    pub backoff_base_ms: u64,
    /// Ceiling on one backoff (before jitter is applied within it).
    pub backoff_max_ms: u64,
    /// Ceiling on a target's Retry-After.
    pub retry_after_max_secs: u64,
    /// Seed of the jitter; with the idempotency key and the attempt it fixes each delay,
    /// so tests and simulations replay exactly while actions still spread out.
    pub jitter_seed: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 4,
            backoff_base_ms: 250,
            backoff_max_ms: 10_000,
            retry_after_max_secs: 60,
            jitter_seed: 0,
        }
    }
}

impl RetryPolicy {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |which, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::RetryLimit {
                    which,
                    value,
                    min,
                    max,
                })
            }
        };
        check(
            "attempts_max",
            u64::from(self.attempts_max),
            1,
            u64::from(ATTEMPTS_MAX_LIMIT),
        )?;
        check(
            "backoff_max_ms",
            self.backoff_max_ms,
            0,
            BACKOFF_MS_MAX_LIMIT,
        )?;
        check(
            "backoff_base_ms",
            self.backoff_base_ms,
            0,
            self.backoff_max_ms,
        )?;
        check(
            "retry_after_max_secs",
            self.retry_after_max_secs,
            0,
            RETRY_AFTER_SECS_MAX_LIMIT,
        )
    }

    /// Backoff after failed attempt `attempt` (1-based): `base * 2^(attempt-1)`
    /// capped at `backoff_max_ms`, then "equal jitter": half fixed, half scaled
    /// by `jitter` in `[0, 1)`.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let shift = attempt.saturating_sub(1).min(32);
        let exp = self
            .backoff_base_ms
            .saturating_mul(1u64 << shift)
            .min(self.backoff_max_ms);
        let half = exp / 2;
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // exp <= BACKOFF_MS_MAX_LIMIT, so the float round trip is exact enough.
        let spread = ((exp - half) as f64 * jitter) as u64;
        Duration::from_millis(half.saturating_add(spread))
    }

    /// The wait before the next attempt, or `None` when there must be none
    /// (permanent error, or `attempt` was the last allowed).
    pub fn delay_after(&self, err: &TargetError, attempt: u32, jitter: f64) -> Option<Duration> {
        if attempt >= self.attempts_max {
            return None;
        }
        match err {
            TargetError::Permanent { .. } => None,
            TargetError::Retryable { .. } => Some(self.backoff(attempt, jitter)),
            TargetError::Throttled {
                retry_after: Some(after),
                ..
            } => Some((*after).min(Duration::from_secs(self.retry_after_max_secs))),
            TargetError::Throttled {
                retry_after: None, ..
            } => Some(self.backoff(attempt, jitter)),
        }
    }

    /// Jitter in `[0, 1)` for `key` and `attempt`, fixed by `jitter_seed`.
    pub fn jitter(&self, key: &str, attempt: u32) -> f64 {
        // FNV-1a of the key: spreads actions apart without any OS randomness.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let seed = self.jitter_seed ^ h ^ u64::from(attempt).rotate_left(32);
        fastrand::Rng::with_seed(seed).f64()
    }

    /// Runs `op` until it succeeds, fails permanently, or attempts run out.
    /// Returns the last result and the number of attempts made.
    pub(crate) async fn run<T, F, Fut>(&self, key: &str, mut op: F) -> (Result<T, TargetError>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, TargetError>>,
    {
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            match op().await {
                Ok(v) => return (Ok(v), attempt),
                Err(err) => match self.delay_after(&err, attempt, self.jitter(key, attempt)) {
                    Some(delay) => {
                        tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %err, "retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => return (Err(err), attempt),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts_max: 4,
            backoff_base_ms: 100,
            backoff_max_ms: 1000,
            retry_after_max_secs: 30,
            jitter_seed: 7,
        }
    }

    #[test]
    fn backoff_doubles_then_caps_with_jitter_inside_the_upper_half() {
        let p = policy();
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(50));
        assert_eq!(p.backoff(1, 0.999_999), Duration::from_millis(99));
        assert_eq!(p.backoff(2, 0.0), Duration::from_millis(100));
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(300));
        assert_eq!(p.backoff(5, 0.0), Duration::from_millis(500));
        assert_eq!(p.backoff(40, 0.0), Duration::from_millis(500));
        assert_eq!(p.backoff(2, f64::NAN), Duration::from_millis(100));
    }

    #[test]
    fn jitter_is_deterministic_per_seed_key_and_attempt() {
        let p = policy();
        assert_eq!(p.jitter("k", 1), p.jitter("k", 1));
        assert_ne!(p.jitter("k", 1), p.jitter("k", 2));
        assert_ne!(p.jitter("k", 1), p.jitter("j", 1));
        let other = RetryPolicy {
            jitter_seed: 8,
            ..policy()
        };
        assert_ne!(p.jitter("k", 1), other.jitter("k", 1));
        assert!((0.0..1.0).contains(&p.jitter("k", 3)));
    }

    #[test]
    fn delay_follows_the_error_class_and_the_attempt_budget() {
        let p = policy();
        let retry = TargetError::retryable("t", "500");
        let perm = TargetError::permanent("t", "400");
        let thr = |s| TargetError::Throttled {
            target: "t",
            retry_after: Some(Duration::from_secs(s)),
            detail: String::new(),
        };
        assert_eq!(p.delay_after(&perm, 1, 0.0), None);
        assert_eq!(
            p.delay_after(&retry, 1, 0.0),
            Some(Duration::from_millis(50))
        );
        assert_eq!(p.delay_after(&retry, 4, 0.0), None);
        assert_eq!(p.delay_after(&thr(3), 1, 0.0), Some(Duration::from_secs(3)));
        assert_eq!(
            p.delay_after(&thr(999), 1, 0.0),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn validation_names_the_bad_field() {
        let bad = RetryPolicy {
            attempts_max: 0,
            ..policy()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("attempts_max")
        );
        let bad = RetryPolicy {
            backoff_base_ms: 2000,
            ..policy()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("backoff_base_ms")
        );
        assert!(policy().validate().is_ok());
    }
}
