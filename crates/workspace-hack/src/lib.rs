//! Empty on purpose: see this crate's Cargo.toml. The product (`crates/cli`)
//! depends on it so that its build and the workspace's test build agree on
//! the features of shared dependencies.
