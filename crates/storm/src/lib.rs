//! Storm control state machines: duplicate suppression windows, token buckets
//! for paging, the storm-mode circuit breaker, and independent-signal correlation.
//!
//! Everything here is a pure function of stored state and `now`; the store
//! persists the state so restarts do not reset windows or budgets. This crate
//! must never read the clock, sleep, or keep state of its own between calls.

pub mod breaker;
pub mod bucket;
pub mod dedup;
pub mod group;
pub mod signals;

pub use breaker::{
    BreakerConfig, BreakerPosition, BreakerState, Current, Observation, Sighting, Transition,
    observe,
};
pub use bucket::{BucketConfig, BucketState};
pub use dedup::DedupEntry;
pub use group::{GroupEntry, GroupField, GroupPage};
pub use signals::{Signal, UNVERIFIED_PREFIX, independent_signals};
