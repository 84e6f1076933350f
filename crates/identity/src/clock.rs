//! The clock the identity caches read (token lifetimes, refresh margins,
//! health times). Injected so expiry is testable without waiting: the server
//! passes an adapter over its own `Clock` (`ManualClock` under tests and
//! `triage-gate simulate`); [`ManualIdentityClock`] serves unit tests here.

use std::sync::atomic::{AtomicI64, Ordering};

/// Unix seconds. May step (a wall clock); the caches only compare readings.
pub trait IdentityClock: Send + Sync + 'static {
    fn now_secs(&self) -> i64;
}

/// Wall-clock time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemIdentityClock;

impl IdentityClock for SystemIdentityClock {
    fn now_secs(&self) -> i64 {
        chrono::Utc::now().timestamp()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualIdentityClock(AtomicI64);

impl ManualIdentityClock {
    pub fn new(start_secs: i64) -> Self {
        ManualIdentityClock(AtomicI64::new(start_secs))
    }

    pub fn set(&self, secs: i64) {
        self.0.store(secs, Ordering::SeqCst);
    }

    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl IdentityClock for ManualIdentityClock {
    fn now_secs(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
