//! Classification: the contract (pure validation) and the providers that
//! produce answers for it (the deterministic rules classifier, Anthropic,
//! Amazon Bedrock Converse, OpenAI-compatible chat completions), plus the
//! [`Guarded`] wrapper (cache, single-flight, concurrency, budget, timeout,
//! circuit breaker, fallback).
//!
//! Every provider's answer goes through [`contract::validate`] and comes out as
//! a validated [`Classification`] or a [`Rejection`] with a stable reason code.
//! This crate must never let raw model text reach a gate, never "repair" model
//! output, and never put an API key in a log, an error or a `Debug` string.
//! `contract`, `rules` and `prompt` are pure (no I/O, clock or environment);
//! `anthropic`, `bedrock`, `openai` and `transport` do I/O; `guard` reads a
//! monotonic clock only through its injected [`GuardClock`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
pub use tg_model::{
    Classification, ClassifierInfo, NormalizedEvent, Rejection, Severity, Sha256Hex,
};

pub mod anthropic;
pub mod bedrock;
pub mod contract;
pub mod guard;
pub mod openai;
pub mod prompt;
pub mod route;
pub mod rules;
pub mod secret;
pub mod sts;
pub mod transport;

pub use anthropic::{AnthropicClassifier, AnthropicConfig};
pub use bedrock::{
    AwsCredentialSource, AwsCredentials, BedrockClassifier, BedrockConfig, sigv4_headers,
};
pub use contract::{REASON_CODES, validate};
pub use guard::{
    Fallback, GuardClock, GuardConfig, GuardStats, Guarded, ManualGuardClock, NamedGuardStats,
    SystemGuardClock,
};
pub use openai::{OpenAiClassifier, OpenAiConfig};
pub use route::{Route, Routed};
pub use rules::{RulesClassifier, RulesConfig};
pub use secret::Secret;
pub use sts::{WebIdentityConfig, WebIdentityCredentials};
pub use transport::{BuildError, RetryPolicy};

/// The teams a classification may name, and the hints for choosing one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamContext {
    /// Every team the configuration knows; an answer naming another is rejected.
    pub known_teams: BTreeSet<String>,
    /// The owner of the event's service, from the service catalog.
    pub service_team: Option<String>,
    /// The team that gets what nobody else owns.
    pub default_team: String,
}

/// Token usage reported by an LLM provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Everything one classification attempt produced, accepted or not.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyOutcome {
    pub info: ClassifierInfo,
    /// Exactly what the model returned (the tool input JSON text, or the text
    /// block); `None` when nothing came back. For the audit, never for a gate.
    pub raw_output: Option<String>,
    /// The validated classification, or why the answer was not accepted.
    pub result: Result<Classification, Rejection>,
    /// Wall time of the provider call, retries included (0 for pure classifiers).
    pub latency_ms: u64,
    pub usage: Option<Usage>,
    /// SHA-256 of the system prompt followed by the user prompt.
    pub prompt_sha256: Option<Sha256Hex>,
}

/// A source of classifications. Implementations validate through [`contract::validate`].
#[async_trait::async_trait]
pub trait Classifier: Send + Sync {
    fn info(&self) -> ClassifierInfo;
    async fn classify(&self, event: &NormalizedEvent, teams: &TeamContext) -> ClassifyOutcome;
    /// The counters of every [`Guarded`] inside, for metrics; none by default.
    fn guard_stats(&self) -> Vec<guard::NamedGuardStats> {
        Vec::new()
    }
}
