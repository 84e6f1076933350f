//! Token buckets for paging budgets, in integer milli-tokens so every replica and
//! the simulator compute exactly the same budget from the same stored state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const MILLI: i64 = 1000;

/// A bucket's shape: it holds at most `burst` tokens and refills `per_hour` tokens an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    pub burst: u32,
    pub per_hour: u32,
}

/// A bucket's stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketState {
    pub tokens_milli: i64,
    pub updated_at: DateTime<Utc>,
}

impl BucketState {
    /// A full bucket, as a bucket never seen before starts.
    pub fn full(cfg: BucketConfig, now: DateTime<Utc>) -> Self {
        BucketState {
            tokens_milli: i64::from(cfg.burst) * MILLI,
            updated_at: now,
        }
    }

    /// The state at `now` after refilling; time going backwards refills nothing.
    pub fn refilled(self, cfg: BucketConfig, now: DateTime<Utc>) -> Self {
        let cap = i64::from(cfg.burst) * MILLI;
        let elapsed_ms = (now - self.updated_at).num_milliseconds().max(0);
        // per_hour tokens per 3_600_000 ms, in milli-tokens; i128 so long gaps cannot overflow.
        let add =
            i128::from(elapsed_ms) * i128::from(cfg.per_hour) * i128::from(MILLI) / 3_600_000_i128;
        let tokens = (i128::from(self.tokens_milli) + add).min(i128::from(cap));
        BucketState {
            tokens_milli: i64::try_from(tokens).unwrap_or(cap),
            updated_at: now.max(self.updated_at),
        }
    }

    /// Whole tokens available at `now`.
    pub fn available(self, cfg: BucketConfig, now: DateTime<Utc>) -> i64 {
        self.refilled(cfg, now).tokens_milli / MILLI
    }

    /// Takes one token at `now`, or `None` when the budget is spent.
    pub fn take(self, cfg: BucketConfig, now: DateTime<Utc>) -> Option<Self> {
        let s = self.refilled(cfg, now);
        (s.tokens_milli >= MILLI).then_some(BucketState {
            tokens_milli: s.tokens_milli - MILLI,
            updated_at: s.updated_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    #[test]
    fn burst_is_spent_then_refills_at_the_configured_rate() {
        let cfg = BucketConfig {
            burst: 2,
            per_hour: 6,
        }; // one token every 10 minutes
        let s = BucketState::full(cfg, t(0));
        let s = s.take(cfg, t(0)).unwrap();
        let s = s.take(cfg, t(1)).unwrap();
        assert!(s.take(cfg, t(2)).is_none());
        assert_eq!(s.available(cfg, t(599)), 0);
        assert_eq!(s.available(cfg, t(601)), 1);
        assert_eq!(s.available(cfg, t(100_000)), 2, "never above burst");
    }

    #[test]
    fn clock_going_backwards_neither_refills_nor_panics() {
        let cfg = BucketConfig {
            burst: 1,
            per_hour: 60,
        };
        let s = BucketState::full(cfg, t(100)).take(cfg, t(100)).unwrap();
        assert_eq!(s.available(cfg, t(0)), 0);
    }
}
