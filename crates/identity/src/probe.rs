//! Background probes of the outbound token sources, so readiness knows a
//! target cannot get a token before the first action for it queues.
//!
//! A probe is [`TokenSource::probe`]: it shares the source's fetch lock, so it
//! never duplicates a fetch an action is making, and it does nothing while a
//! cached token is outside its refresh margin (it then refreshes the token
//! ahead of the actions that need it). After a failure the next probe backs
//! off, doubling from [`PROBE_RETRY_MIN_SECS`] to [`PROBE_RETRY_MAX_SECS`], so
//! a down IdP is not hammered; a success returns to the configured interval
//! (`identity.outbound.probe_interval_secs`, default [`PROBE_INTERVAL_SECS`]).

use std::sync::Arc;
use std::time::Duration;

use crate::oauth::TokenSource;

/// Default time between two probes of a healthy token source.
pub const PROBE_INTERVAL_SECS: u64 = 30;
/// First wait after a failed probe.
pub const PROBE_RETRY_MIN_SECS: u64 = 5;
/// Longest wait between probes of a failing token source.
pub const PROBE_RETRY_MAX_SECS: u64 = 120;

/// The wait before the next probe, after `failures` failed probes in a row.
pub fn next_probe_delay(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let doublings = failures.saturating_sub(1).min(16);
    Duration::from_secs(
        PROBE_RETRY_MIN_SECS
            .saturating_mul(1u64 << doublings)
            .min(PROBE_RETRY_MAX_SECS),
    )
}

/// The running probes; dropping it stops them.
#[derive(Debug)]
pub struct ProbeHandle {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Probes each `(target, source)` now and then per [`next_probe_delay`] on the
/// current tokio runtime; `None` outside one (e.g. a config check) or when
/// `interval` is zero (probes off).
pub fn spawn_probes(
    sources: &[(String, Arc<TokenSource>)],
    interval: Duration,
) -> Option<ProbeHandle> {
    if interval.is_zero() {
        return None;
    }
    let rt = tokio::runtime::Handle::try_current().ok()?;
    let tasks = sources
        .iter()
        .map(|(target, source)| {
            let target = target.clone();
            let source = source.clone();
            rt.spawn(async move {
                let mut failures = 0u32;
                loop {
                    match source.probe().await {
                        Ok(()) => failures = 0,
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            tracing::warn!(target = %target, reason = %e.reason(), failures, "token probe failed");
                        }
                    }
                    tokio::time::sleep(next_probe_delay(interval, failures)).await;
                }
            })
        })
        .collect();
    Some(ProbeHandle { tasks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_minimum_to_the_cap_and_resets_on_success() {
        let every = Duration::from_secs(PROBE_INTERVAL_SECS);
        assert_eq!(next_probe_delay(every, 0), every);
        assert_eq!(next_probe_delay(every, 1).as_secs(), 5);
        assert_eq!(next_probe_delay(every, 2).as_secs(), 10);
        assert_eq!(next_probe_delay(every, 4).as_secs(), 40);
        assert_eq!(next_probe_delay(every, 6).as_secs(), PROBE_RETRY_MAX_SECS);
        assert_eq!(
            next_probe_delay(every, u32::MAX).as_secs(),
            PROBE_RETRY_MAX_SECS
        );
    }
}
