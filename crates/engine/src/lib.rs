//! The pipeline's decision step, written in exactly one place.
//!
//! A step declares what it reads ([`reads`]); the runtime loads those keys of
//! a whole wave into a [`MemState`] and calls [`decide_wave`], which for each
//! run loads its [`StepState`], calls [`step`] with the event, the validated
//! classification (or its rejection) and `now`, and applies the returned
//! [`Effect`]s to the `MemState` (the one place an effect's meaning is
//! written); the store then persists what the wave touched, with the
//! [`Decision`]s, in one transaction. The same function serves every store,
//! `policy test` and the engine's tests.
//!
//! This crate must never do I/O, read the clock, or execute an action: it only
//! says what should happen and why.

mod approve;
mod budgets;
mod group;
mod keys;
mod plan;
mod review;
mod rules;
mod settings;
mod state;
mod step;
mod storm;
#[cfg(test)]
mod tests;
mod window;

pub use approve::{Approval, Approved, approve};
pub use keys::{
    GLOBAL_BUCKET, group_key, idempotency_key, routing_team, service_bucket_key, signal_key,
    signal_key_for, team_bucket_key, umbrella_service,
};
pub use plan::truncate;
pub use rules::storm_rule_names;
pub use settings::{GroupSettings, ResolveSettings, StormSettings};
pub use state::{
    CAP_SCOPE_ALL, GROUP_RETENTION, MemState, Policy, Reads, Touched, WaveRun, cap_scope_service,
    cap_scope_team, decide_wave, reads,
};
pub use step::{
    Effect, HeldPage, HoldReason, Planned, Precheck, StepInput, StepOutput, StepState, precheck,
    step,
};
pub use storm::{TICK_RUN, tick_breaker};
// The crate's vocabulary, re-exported for its users.
pub use tg_model::AutonomyLevel;
