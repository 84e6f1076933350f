//! The clock is injected so tests and simulations control time.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// Wall-clock time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(start))
    }

    pub fn advance(&self, by: chrono::Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
            .lock()
            .map(|t| *t)
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }
}

/// The classifier guard's monotonic milliseconds, read from the injected
/// server [`Clock`], so that cache TTLs, the breaker's cooldown and the budget
/// move with `ManualClock` under tests and `triage-gate simulate`.
///
/// `GuardClock` must never go backwards, while a wall clock may be stepped back
/// (NTP, an operator). The reading saturates: it is the highest value seen so
/// far, so a step back freezes guard time until the wall clock catches up (a
/// cache entry lives a little longer, a breaker stays open a little longer);
/// it never panics and never wraps. Times before the origin read as 0.
pub struct GuardClockAdapter {
    clock: std::sync::Arc<dyn Clock>,
    origin: DateTime<Utc>,
    high_ms: std::sync::atomic::AtomicU64,
}

impl GuardClockAdapter {
    /// Guard time 0 is the clock's time now.
    pub fn new(clock: std::sync::Arc<dyn Clock>) -> Self {
        let origin = clock.now();
        GuardClockAdapter {
            clock,
            origin,
            high_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for GuardClockAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardClockAdapter")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl tg_classify::GuardClock for GuardClockAdapter {
    fn now_ms(&self) -> u64 {
        let elapsed = self.clock.now().signed_duration_since(self.origin);
        let ms = u64::try_from(elapsed.num_milliseconds()).unwrap_or(0);
        let before = self
            .high_ms
            .fetch_max(ms, std::sync::atomic::Ordering::SeqCst);
        before.max(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tg_classify::GuardClock as _;

    #[test]
    fn guard_time_follows_the_manual_clock_and_never_goes_back() {
        let start = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000);
        let manual = Arc::new(ManualClock::new(start));
        let g = GuardClockAdapter::new(manual.clone());
        assert_eq!(g.now_ms(), 0);
        manual.advance(chrono::Duration::milliseconds(1_500));
        assert_eq!(g.now_ms(), 1_500);
        // Stepped back: saturates at the highest reading.
        manual.advance(chrono::Duration::seconds(-10));
        assert_eq!(g.now_ms(), 1_500);
        manual.advance(chrono::Duration::seconds(12));
        assert_eq!(g.now_ms(), 3_500);
    }
}
