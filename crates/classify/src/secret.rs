//! The secret type, shared with every crate that holds credentials.

pub use tg_model::Secret;
