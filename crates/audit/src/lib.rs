//! Audit trail: hash-chain verification and the JSON Lines file sink.
//!
//! Every run leaves one [`tg_model::AuditRecord`]; records form a chain where
//! each `hash` covers the record's canonical JSON (including `prev_hash`), so
//! editing, deleting, reordering or inserting a record is detectable.
//!
//! [`verify_records`] is pure: it never touches the disk, the clock or the
//! environment. [`verify_file`] and [`JsonlSink`] are the only file I/O.
//!
//! This crate must never rewrite or reorder existing records: the sink only
//! appends, and only cuts a torn (unterminated) last line left by a crash.
//! Truncating the *end* of a chain is invisible to the chain itself; compare
//! [`VerifyReport::last_hash`] against the store's last hash to catch it.

mod sink;
mod verify;

pub use sink::{JsonlSink, LINE_BYTES_MAX, verify_file};
pub use verify::{BadRecord, VerifyReport, verify_records};
