//! Audit trail: hash-chain verification and the JSON Lines file sink.
//!
//! Every run leaves one [`tg_model::AuditRecord`]; records form a chain where
//! each `hash` covers the record's canonical JSON (including `prev_hash`), so
//! editing, deleting, reordering or inserting a record is detectable.
//!
//! Signed checkpoints ([`checkpoint`]) put an Ed25519 signature over the chain's
//! head now and then, so an auditor with only the public key can check it.
//!
//! [`verify_records`] / [`verify_chain`] are pure: they never touch the disk,
//! the clock or the environment. [`verify_file`] and [`JsonlSink`] are the
//! only file I/O.
//!
//! This crate must never rewrite or reorder existing records: the sink only
//! appends, and only cuts a torn (unterminated) last line left by a crash.
//! Truncating the *end* of a chain is invisible to the chain itself; compare
//! [`VerifyReport::last_hash`] against the store's last hash to catch it.

pub mod checkpoint;
mod sink;
pub mod story;
mod verify;

pub use checkpoint::{
    key_id, sign_checkpoint, signing_key_from_pem, verify_checkpoint, verifying_key_from_pem,
};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use sink::{JsonlSink, LINE_BYTES_MAX, verify_file, verify_file_with, verify_lines};
pub use verify::{BadRecord, CHECKPOINT_REACH_MAX, VerifyReport, verify_chain, verify_records};
