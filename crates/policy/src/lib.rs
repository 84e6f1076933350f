//! Policy gates: the service catalog, Cedar policies validated at load,
//! decisions explained condition by condition, and autonomy caps.
//!
//! The AI recommends; the gates decide. A policy text is parsed and strictly
//! validated against `policies/gates.cedarschema` before it can run; every
//! forbid states its condition's `@id`, `@reason`, the value it tests and the
//! threshold it needs, so each decision lists every condition it checked.
//!
//! This crate is pure and must never do I/O, read the clock, the environment or
//! OS randomness. It must never let an evaluation error turn into `Execute`: any
//! error sends the action to review (fail closed).

pub mod cap;
pub mod catalog;
mod explain;
pub mod gates;
pub mod ids;

pub use cap::cap;
pub use catalog::{
    Catalog, CatalogIssue, DeclineFloor, Defaults, ServiceEntry, TeamEntry, Threshold,
    ThresholdOverrides, Thresholds,
};
pub use gates::{DEFAULT_POLICY, Facts, GateInput, GateVerdict, Gates, PolicyError, SCHEMA};
