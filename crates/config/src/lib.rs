//! Configuration: parse, then validate purely (every error at once, with
//! file:line), then build. Only `build`-time code in the server does I/O.
//!
//! Secrets are never inline: a config names an environment variable or a file
//! ([`SecretRef`]), read through a [`SecretSource`] that tests replace with a map.
//! This crate must never print a secret value, even in errors.

pub mod audit;
pub mod console;
mod identity;
mod locate;
mod secrets;
mod shape;
pub mod tls;
pub mod urls;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tg_policy::catalog::Catalog;

pub use audit::{
    AuditConfig, AuditSinkConfig, CHECKPOINT_EVERY_RECORDS_MAX, CHECKPOINT_EVERY_SECS_MAX,
    CheckpointConfig, CloudWatchSinkConfig, FileSinkConfig, OtlpSinkConfig, SplunkHecSinkConfig,
    StdoutSinkConfig,
};
pub use console::{ConsoleConfig, ConsoleMode, ProxyConfig};
pub use identity::{IdentityConfig, InboundConfig, InboundMode, InboundWebhook, OutboundConfig};
pub use secrets::{EnvAndFiles, MapSecrets, Secret, SecretError, SecretRef, SecretSource};
pub use tls::TlsTrust;

/// The whole configuration file. Every section is optional: an empty file (or
/// none) means the built-in defaults: rules classifier, default policy and
/// catalog, every service in shadow mode, no action targets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub classifier: ClassifierConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub catalog: Catalog,
    #[serde(default)]
    pub storm: StormConfig,
    #[serde(default)]
    pub normalize: NormalizeConfig,
    #[serde(default)]
    pub actions: ActionsConfig,
    #[serde(default)]
    pub sources: SourcesConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub review: ReviewConfig,
    /// Signed checkpoints and external audit sinks (issue 8); `audit.jsonl` is always written.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Where state lives: SQLite in `server.data_dir` (default) or PostgreSQL.
    #[serde(default)]
    pub store: StoreConfig,
    /// Certificate authorities every outbound HTTPS client trusts besides the
    /// bundled roots (a target's own `tls.ca_file` replaces it for that target).
    #[serde(default, skip_serializing_if = "TlsTrust::is_unset")]
    pub tls: TlsTrust,
}

/// Most connections one gate process opens to PostgreSQL.
pub const STORE_POOL_MAX: u32 = 256;
/// Longest `store.acquire_timeout_ms` / `store.statement_timeout_ms` (a minute).
pub const STORE_TIMEOUT_MS_MAX: u64 = 60_000;
/// Shortest `store.run_lease_secs`. A lease shorter than a model call (with
/// its retries) lets a second replica classify the same run; the decision is
/// still made once (the first to decide wins, the other finds it decided).
pub const STORE_RUN_LEASE_SECS_MIN: u64 = 5;
/// Longest `store.run_lease_secs` (an hour).
pub const STORE_RUN_LEASE_SECS_MAX: u64 = 3_600;
/// Default `store.disk_free_min_bytes` (64 MiB): room to decide and audit
/// what was accepted before new events are refused.
pub const STORE_DISK_FREE_MIN_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Largest `store.disk_free_min_bytes` (1 TiB).
pub const STORE_DISK_FREE_MIN_BYTES_MAX: u64 = 1 << 40;

/// `store`: the database behind the gate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite` (the default: `triage-gate.sqlite` in `server.data_dir`) or
    /// `postgres://user@host:port/database` (no password in the URL).
    pub url: Option<String>,
    /// The PostgreSQL password, from the environment or a file.
    pub password: Option<SecretRef>,
    /// Connections in the pool (PostgreSQL).
    pub pool_max: u32,
    /// Waiting for a connection fails after this: the event is refused with
    /// 503 + Retry-After, never accepted and lost.
    pub acquire_timeout_ms: u64,
    /// A statement (or a lock wait) running longer is cancelled (PostgreSQL).
    pub statement_timeout_ms: u64,
    /// A run claimed by a worker that died is taken by another after this.
    pub run_lease_secs: u64,
    /// Below this many free bytes on the file system of the SQLite database
    /// or of the audit file, new events are refused with 503 (0: no floor).
    pub disk_free_min_bytes: u64,
    /// TLS to PostgreSQL, as libpq's `sslmode`: `disable`, `prefer` (the
    /// default: TLS when the server offers it), `require`, `verify-ca`,
    /// `verify-full` (recommended: the certificate chains to `tls_ca_file`
    /// and names the host).
    pub tls_mode: Option<String>,
    /// PEM root certificate(s) for `verify-ca` / `verify-full`.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            password: None,
            pool_max: 16,
            acquire_timeout_ms: 2_000,
            statement_timeout_ms: 10_000,
            run_lease_secs: 300,
            disk_free_min_bytes: STORE_DISK_FREE_MIN_BYTES_DEFAULT,
            tls_mode: None,
            tls_ca_file: None,
        }
    }
}

impl StoreConfig {
    /// Whether the store is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
    }

    fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match self.url.as_deref() {
            None | Some("sqlite") => {}
            Some(u) if self.is_postgres() => match url::Url::parse(u) {
                Err(e) => out.push(("store.url".into(), format!("not a URL: {e}"))),
                Ok(p) if p.password().is_some() => out.push((
                    "store.url".into(),
                    "holds a password: put it in store.password (env or file) so it never \
                     reaches logs"
                        .into(),
                )),
                Ok(p) if p.host_str().is_none_or(str::is_empty) => {
                    out.push(("store.url".into(), "names no host".into()));
                }
                Ok(_) => {}
            },
            Some(_) => out.push((
                "store.url".into(),
                "is `sqlite` or postgres://user@host:port/database".into(),
            )),
        }
        if self.password.is_some() && !self.is_postgres() {
            out.push((
                "store.password".into(),
                "applies to a postgres:// store.url only".into(),
            ));
        }
        if !(1..=STORE_POOL_MAX).contains(&self.pool_max) {
            out.push((
                "store.pool_max".into(),
                format!("{} is outside 1..={STORE_POOL_MAX}", self.pool_max),
            ));
        }
        for (field, v) in [
            ("store.acquire_timeout_ms", self.acquire_timeout_ms),
            ("store.statement_timeout_ms", self.statement_timeout_ms),
        ] {
            if !(100..=STORE_TIMEOUT_MS_MAX).contains(&v) {
                out.push((
                    field.into(),
                    format!("{v} is outside 100..={STORE_TIMEOUT_MS_MAX}"),
                ));
            }
        }
        if let Some(m) = &self.tls_mode {
            const MODES: [&str; 5] = ["disable", "prefer", "require", "verify-ca", "verify-full"];
            if !MODES.contains(&m.as_str()) {
                out.push((
                    "store.tls_mode".into(),
                    format!("{m:?} is not one of disable, prefer, require, verify-ca, verify-full"),
                ));
            }
            if !self.is_postgres() {
                out.push((
                    "store.tls_mode".into(),
                    "applies to a postgres:// store.url only".into(),
                ));
            }
        }
        if self.tls_ca_file.is_some()
            && !matches!(self.tls_mode.as_deref(), Some("verify-ca" | "verify-full"))
        {
            out.push((
                "store.tls_ca_file".into(),
                "is used with tls_mode verify-ca or verify-full only".into(),
            ));
        }
        if self.disk_free_min_bytes > STORE_DISK_FREE_MIN_BYTES_MAX {
            out.push((
                "store.disk_free_min_bytes".into(),
                format!(
                    "{} is above {STORE_DISK_FREE_MIN_BYTES_MAX} (1 TiB)",
                    self.disk_free_min_bytes
                ),
            ));
        }
        if !(STORE_RUN_LEASE_SECS_MIN..=STORE_RUN_LEASE_SECS_MAX).contains(&self.run_lease_secs) {
            out.push((
                "store.run_lease_secs".into(),
                format!(
                    "{} is outside {STORE_RUN_LEASE_SECS_MIN}..={STORE_RUN_LEASE_SECS_MAX}",
                    self.run_lease_secs
                ),
            ));
        }
        out
    }
}

/// Shortest `review.expire_after_secs` (a minute).
pub const REVIEW_EXPIRE_SECS_MIN: u64 = 60;
/// Longest `review.expire_after_secs` (30 days).
pub const REVIEW_EXPIRE_SECS_MAX: u64 = 30 * 86_400;

/// Longest `review.external_match_secs` (7 days).
pub const REVIEW_EXTERNAL_MATCH_SECS_MAX: u64 = 7 * 86_400;

/// The review queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewConfig {
    /// An open draft older than this expires (audited, never sent).
    pub expire_after_secs: u64,
    /// The bar a service must clear to move up a level (the autonomy report).
    pub promotion: PromotionBar,
    /// Tell each team's chat channel (`storm.summary.webhooks`) about its new
    /// review items.
    pub notify: bool,
    /// An incident reported as opened outside the gate is compared with the
    /// service's decisions made up to this long before it opened.
    pub external_match_secs: u64,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        ReviewConfig {
            expire_after_secs: 86_400,
            promotion: PromotionBar::default(),
            notify: false,
            external_match_secs: 3_600,
        }
    }
}

/// `review.promotion`: runs in the window and agreement with humans.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromotionBar {
    pub runs_min: u64,
    /// Share of human verdicts on drafts that matched the gate, in `[0, 1]`.
    pub agreement_min: f64,
    /// Human verdicts needed before agreement counts.
    pub verdicts_min: u64,
}

impl Default for PromotionBar {
    fn default() -> Self {
        PromotionBar {
            runs_min: 200,
            agreement_min: 0.95,
            verdicts_min: 20,
        }
    }
}

/// Per-source settings (issue 3): `sources.sns` and `sources.aws`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    #[serde(default)]
    pub sns: SnsSourceConfig,
    #[serde(default)]
    pub aws: AwsSourceConfig,
}

/// The AWS host pattern of SNS signing-certificate and subscribe URLs.
pub const SNS_CERT_HOST_PATTERN_DEFAULT: &str = r"^sns\.[a-zA-Z0-9-]{3,}\.amazonaws\.com(\.cn)?$";

/// `POST /v1/events/cloudwatch-sns`: signature verification and subscriptions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnsSourceConfig {
    /// Topics whose SubscriptionConfirmation is confirmed (GET SubscribeURL).
    /// When non-empty, notifications from other topics are refused (403) too.
    pub topic_arns: Vec<String>,
    /// Regex the whole host of `SigningCertURL`/`SubscribeURL` must match.
    pub cert_host_pattern: String,
    /// Also admit `http` to a loopback IP literal matching the pattern. For
    /// tests against the sandbox only; never on in production.
    pub allow_insecure_loopback_cert_urls: bool,
    /// Messages whose `Timestamp` is further than this from now are refused.
    pub replay_window_secs: u64,
    /// Timeout of one certificate fetch and of one confirmation GET.
    pub fetch_timeout_ms: u64,
    /// Certificates kept (by URL); the oldest is evicted beyond it.
    pub cert_cache_max: usize,
    /// How long a fetched certificate is trusted before it is fetched again.
    pub cert_cache_ttl_secs: u64,
    /// Recent `MessageId`s remembered to drop redeliveries (within the replay window).
    pub message_ids_max: usize,
}

impl Default for SnsSourceConfig {
    fn default() -> Self {
        SnsSourceConfig {
            topic_arns: Vec::new(),
            cert_host_pattern: SNS_CERT_HOST_PATTERN_DEFAULT.to_owned(),
            allow_insecure_loopback_cert_urls: false,
            replay_window_secs: 3600,
            fetch_timeout_ms: 5_000,
            cert_cache_max: 32,
            cert_cache_ttl_secs: 86_400,
            message_ids_max: 10_000,
        }
    }
}

#[cfg(test)]
mod sources_tests {
    use super::Config;

    #[test]
    fn sources_default_is_strict_and_valid() {
        let c = Config::from_yaml("", "t").unwrap();
        assert!(!c.sources.sns.allow_insecure_loopback_cert_urls);
        assert_eq!(c.sources.sns.replay_window_secs, 3600);
        assert_eq!(
            c.sources.sns.cert_host_pattern,
            r"^sns\.[a-zA-Z0-9-]{3,}\.amazonaws\.com(\.cn)?$"
        );
    }

    #[test]
    fn bad_sources_are_named() {
        let yaml = "sources:\n  sns:\n    topic_arns: [\"arn:aws:sqs:us-east-1:1:q\"]\n    cert_host_pattern: \"(\"\n    replay_window_secs: 0\n  aws:\n    account_environments: { \"12\": prod, \"123456789012\": moon }\n";
        let err = Config::from_yaml(yaml, "t").unwrap_err().to_string();
        for needle in [
            "sources.sns.topic_arns[0]",
            "sources.sns.cert_host_pattern",
            "sources.sns.replay_window_secs",
            "sources.aws.account_environments.12: an AWS account ID is 12 digits",
            "names no environment",
        ] {
            assert!(err.contains(needle), "{needle} missing in:\n{err}");
        }
    }
}

/// AWS-wide source settings (CloudWatch over SNS, EventBridge).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSourceConfig {
    /// AWS account ID -> environment label (`prod`, `staging`, ...).
    #[serde(default)]
    pub account_environments: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Directory for the SQLite store and the audit log.
    pub data_dir: PathBuf,
    /// Largest request body accepted (413 above).
    pub body_bytes_max: usize,
    /// Accepted-but-undecided runs above which new events get 503 + Retry-After.
    pub backlog_max: i64,
    /// Concurrent processing workers (0 accepts but processes nothing: for drills).
    pub workers: usize,
    /// Whole-request timeout at the HTTP edge.
    pub request_timeout_ms: u64,
    /// Concurrent HTTP requests in flight at most.
    pub concurrency_max: usize,
    /// How long shutdown waits for in-flight work.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8700".into(),
            data_dir: PathBuf::from("./triage-gate-data"),
            body_bytes_max: 1024 * 1024,
            backlog_max: 10_000,
            workers: 4,
            request_timeout_ms: 10_000,
            concurrency_max: 512,
            shutdown_grace_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// The built-in deterministic rules classifier (offline default).
    #[default]
    Rules,
    /// Claude on the Anthropic Messages API.
    Anthropic,
    /// Amazon Bedrock Converse (SigV4-signed).
    Bedrock,
    /// An OpenAI-compatible `/v1/chat/completions` (vLLM, Ollama, llama.cpp, OpenAI).
    #[serde(rename = "openai")]
    OpenAi,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Rules => "rules",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::OpenAi => "openai",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    #[serde(default)]
    pub provider: ProviderKind,
    /// Rules for the rules classifier (default: the built-in set). Also the
    /// fallback's rules when `guard.fallback` is `rules`, in every profile.
    #[serde(default)]
    pub rules: Option<serde_json::Value>,
    #[serde(default)]
    pub anthropic: Option<AnthropicConfig>,
    #[serde(default)]
    pub bedrock: Option<BedrockConfig>,
    #[serde(default)]
    pub openai: Option<OpenAiConfig>,
    /// After an answer breaks the schema, ask the model once more (telling it
    /// only the reason code), then review. On by default (issue 4: "at most one
    /// bounded re-ask").
    #[serde(default = "default_true")]
    pub reask: bool,
    /// Cost and storm control around an LLM provider (not used for `rules`).
    #[serde(default)]
    pub guard: GuardConfig,
    /// Named classifier profiles (provider, model, base URL, timeouts, guard
    /// and fallback), chosen per event by `routes`. The fields above are the
    /// `default` profile.
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileConfig>,
    /// First matching route chooses the profile; none matching: `default`.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// What of the model's answer the store and the audit trail keep.
    #[serde(default)]
    pub output_retention: OutputRetention,
}

/// `classifier.output_retention`: what of a model's answer is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputRetention {
    /// The answer's text (bounded) and its SHA-256.
    #[default]
    Full,
    /// Only the SHA-256 of the text: the text and the model's rationale are
    /// not kept (the validated fields are: the decision rests on them).
    Sha256,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            provider: ProviderKind::default(),
            rules: None,
            anthropic: None,
            bedrock: None,
            openai: None,
            reask: true,
            guard: GuardConfig::default(),
            profiles: BTreeMap::new(),
            routes: Vec::new(),
            output_retention: OutputRetention::default(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// The name of the profile made of the top-level `classifier` fields.
pub const DEFAULT_PROFILE: &str = "default";
/// Most named profiles in `classifier.profiles`.
pub const PROFILES_MAX: usize = 32;
/// Most entries in `classifier.routes`.
pub const ROUTES_MAX: usize = 256;
/// Most environments or services one route lists.
pub const ROUTE_ITEMS_MAX: usize = 256;
/// Longest profile name.
pub const PROFILE_NAME_CHARS_MAX: usize = 64;

/// One classifier: a provider with its settings, guard and fallback.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    #[serde(default)]
    pub provider: ProviderKind,
    #[serde(default)]
    pub anthropic: Option<AnthropicConfig>,
    #[serde(default)]
    pub bedrock: Option<BedrockConfig>,
    #[serde(default)]
    pub openai: Option<OpenAiConfig>,
    #[serde(default = "default_true")]
    pub reask: bool,
    #[serde(default)]
    pub guard: GuardConfig,
}

/// Sends events of some environments and/or services to a profile. An empty
/// list matches anything; a route must list at least one environment or service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Environment labels (`production`, `staging`, `development`, `unknown`, or a spelling `Environment::from_label` knows).
    #[serde(default)]
    pub environments: Vec<String>,
    /// Canonical service names (after alias resolution).
    #[serde(default)]
    pub services: Vec<String>,
    /// A name in `classifier.profiles`, or `default`.
    pub profile: String,
}

/// An environment label of a route: a known spelling or `unknown`.
pub fn route_environment(label: &str) -> Option<tg_model::Environment> {
    match tg_model::Environment::from_label(label) {
        tg_model::Environment::Unknown if label.trim().eq_ignore_ascii_case("unknown") => {
            Some(tg_model::Environment::Unknown)
        }
        tg_model::Environment::Unknown => None,
        env => Some(env),
    }
}

impl ClassifierConfig {
    /// The `default` profile: the top-level fields.
    pub fn default_profile(&self) -> ProfileConfig {
        ProfileConfig {
            provider: self.provider,
            anthropic: self.anthropic.clone(),
            bedrock: self.bedrock.clone(),
            openai: self.openai.clone(),
            reask: self.reask,
            guard: self.guard,
        }
    }

    /// Semantic checks of the classifier section: `(dotted path, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = self.default_profile().validate("classifier");
        if self.profiles.len() > PROFILES_MAX {
            out.push((
                "classifier.profiles".into(),
                format!(
                    "{} profiles, over the limit of {PROFILES_MAX}",
                    self.profiles.len()
                ),
            ));
        }
        for (name, profile) in &self.profiles {
            let path = format!("classifier.profiles.{name}");
            let name_ok = !name.is_empty()
                && name.len() <= PROFILE_NAME_CHARS_MAX
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok {
                out.push((
                    path.clone(),
                    format!(
                        "profile name {name:?} is not 1..={PROFILE_NAME_CHARS_MAX} of [A-Za-z0-9_-]"
                    ),
                ));
            }
            if name == DEFAULT_PROFILE {
                out.push((
                    path.clone(),
                    "`default` is the top-level classifier; name this profile otherwise".into(),
                ));
            }
            out.extend(profile.validate(&path));
        }
        if self.routes.len() > ROUTES_MAX {
            out.push((
                "classifier.routes".into(),
                format!(
                    "{} routes, over the limit of {ROUTES_MAX}",
                    self.routes.len()
                ),
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            let path = format!("classifier.routes[{i}]");
            if route.profile != DEFAULT_PROFILE && !self.profiles.contains_key(&route.profile) {
                out.push((
                    format!("{path}.profile"),
                    format!(
                        "profile {:?} is not in classifier.profiles (known: {})",
                        route.profile,
                        std::iter::once(DEFAULT_PROFILE)
                            .chain(self.profiles.keys().map(String::as_str))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if route.environments.is_empty() && route.services.is_empty() {
                out.push((
                    path.clone(),
                    "a route lists at least one environment or service".into(),
                ));
            }
            if route.environments.len() > ROUTE_ITEMS_MAX || route.services.len() > ROUTE_ITEMS_MAX
            {
                out.push((
                    path.clone(),
                    format!("more than {ROUTE_ITEMS_MAX} environments or services"),
                ));
            }
            for (j, env) in route.environments.iter().enumerate() {
                if route_environment(env).is_none() {
                    out.push((
                        format!("{path}.environments[{j}]"),
                        format!("{env:?} names no environment (production, staging, development, unknown)"),
                    ));
                }
            }
            for (j, svc) in route.services.iter().enumerate() {
                if svc.trim().is_empty() {
                    out.push((format!("{path}.services[{j}]"), "must not be empty".into()));
                }
            }
        }
        out
    }
}

impl ProfileConfig {
    /// Semantic checks of one profile; paths start with `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let missing = match self.provider {
            ProviderKind::Rules => None,
            ProviderKind::Anthropic => self.anthropic.is_none().then_some("anthropic"),
            ProviderKind::Bedrock => self.bedrock.is_none().then_some("bedrock"),
            ProviderKind::OpenAi => self.openai.is_none().then_some("openai"),
        };
        if let Some(section) = missing {
            out.push((
                format!("{prefix}.{section}"),
                format!("provider is {section} but the {section} section is missing"),
            ));
        }
        let url_ok = |u: &str| crate::urls::outbound(u).is_ok();
        let mut model_checks: Vec<(&str, &str, u64, u32, u32)> = Vec::new();
        if let Some(a) = &self.anthropic {
            if !url_ok(&a.base_url) {
                out.push((
                    format!("{prefix}.anthropic.base_url"),
                    format!("{:?} is not an http(s) URL", a.base_url),
                ));
            }
            model_checks.push((
                "anthropic",
                &a.model,
                a.timeout_ms,
                a.max_tokens,
                a.retries_max,
            ));
        }
        if let Some(b) = &self.bedrock {
            if let Some(u) = &b.base_url
                && !url_ok(u)
            {
                out.push((
                    format!("{prefix}.bedrock.base_url"),
                    format!("{u:?} is not an http(s) URL"),
                ));
            }
            let region_ok = !b.region.is_empty()
                && b.region.len() <= 32
                && b.region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !region_ok {
                out.push((
                    format!("{prefix}.bedrock.region"),
                    format!("{:?} is not an AWS region such as us-east-1", b.region),
                ));
            }
            if let Some(w) = &b.credentials.web_identity {
                out.extend(w.validate(&format!("{prefix}.bedrock.credentials.web_identity")));
            }
            model_checks.push((
                "bedrock",
                &b.model_id,
                b.timeout_ms,
                b.max_tokens,
                b.retries_max,
            ));
        }
        if let Some(o) = &self.openai {
            if !url_ok(&o.base_url) {
                out.push((
                    format!("{prefix}.openai.base_url"),
                    format!("{:?} is not an http(s) URL", o.base_url),
                ));
            }
            model_checks.push((
                "openai",
                &o.model,
                o.timeout_ms,
                o.max_tokens,
                o.retries_max,
            ));
        }
        for (section, model, timeout_ms, max_tokens, retries_max) in model_checks {
            let key = if section == "bedrock" {
                "model_id"
            } else {
                "model"
            };
            if model.trim().is_empty() {
                out.push((
                    format!("{prefix}.{section}.{key}"),
                    "must not be empty".into(),
                ));
            }
            if timeout_ms == 0 || timeout_ms > MODEL_TIMEOUT_MS_MAX {
                out.push((
                    format!("{prefix}.{section}.timeout_ms"),
                    format!("{timeout_ms} is outside 1..={MODEL_TIMEOUT_MS_MAX}"),
                ));
            }
            if max_tokens == 0 || max_tokens > MODEL_MAX_TOKENS_MAX {
                out.push((
                    format!("{prefix}.{section}.max_tokens"),
                    format!("{max_tokens} is outside 1..={MODEL_MAX_TOKENS_MAX}"),
                ));
            }
            if retries_max > MODEL_RETRIES_MAX {
                out.push((
                    format!("{prefix}.{section}.retries_max"),
                    format!("{retries_max} is over the limit of {MODEL_RETRIES_MAX}"),
                ));
            }
        }
        let g = &self.guard;
        let limits: [(&str, u64, u64, u64); 8] = [
            ("cache_ttl_secs", g.cache_ttl_secs, 0, 86_400),
            ("cache_entries_max", g.cache_entries_max, 1, 1_000_000),
            ("concurrency_max", g.concurrency_max, 1, 1024),
            ("permit_wait_ms", g.permit_wait_ms, 0, 600_000),
            ("calls_per_minute", g.calls_per_minute, 1, 100_000),
            ("call_timeout_ms", g.call_timeout_ms, 1, 600_000),
            ("breaker_failures", g.breaker_failures, 1, 1000),
            ("breaker_cooldown_secs", g.breaker_cooldown_secs, 1, 3600),
        ];
        for (name, v, min, max) in limits {
            if v < min || v > max {
                out.push((
                    format!("{prefix}.guard.{name}"),
                    format!("{v} is outside {min}..={max}"),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod classifier_tests {
    use super::*;

    #[test]
    fn bedrock_and_openai_sections_parse_with_defaults() {
        let text = "classifier:\n  provider: bedrock\n  bedrock:\n    region: eu-west-1\n    model_id: m\n  guard:\n    cache_ttl_secs: 300\n    fallback: rules\n";
        let c = Config::from_yaml(text, "c.yaml").unwrap();
        let b = c.classifier.bedrock.unwrap();
        assert_eq!(c.classifier.provider, ProviderKind::Bedrock);
        assert_eq!(
            b.credentials.access_key_id,
            SecretRef::Env("AWS_ACCESS_KEY_ID".into())
        );
        assert_eq!(
            b.credentials.session_token,
            Some(SecretRef::Env("AWS_SESSION_TOKEN".into()))
        );
        assert_eq!(c.classifier.guard.cache_ttl_secs, 300);
        assert_eq!(c.classifier.guard.fallback, FallbackKind::Rules);
        assert!(c.classifier.reask, "one re-ask is on by default");
        assert_eq!(GuardConfig::default().cache_ttl_secs, 300);
        let text = "classifier:\n  provider: openai\n  openai:\n    base_url: http://127.0.0.1:8000\n    model: qwen3:8b\n";
        let c = Config::from_yaml(text, "c.yaml").unwrap();
        assert_eq!(c.classifier.openai.unwrap().api_key, None);
    }

    const PROFILES: &str = "classifier:
  provider: anthropic
  anthropic:
    model: claude-sonnet-4-5
    api_key: { env: ANTHROPIC_API_KEY }
  profiles:
    local:
      provider: openai
      openai:
        base_url: http://127.0.0.1:8000
        model: qwen3:8b
      guard:
        calls_per_minute: 60
        fallback: rules
    offline:
      provider: rules
  routes:
    - environments: [staging, dev]
      profile: local
    - services: [legacy-billing]
      environments: [prod]
      profile: offline
";

    #[test]
    fn profiles_and_routes_parse() {
        let c = Config::from_yaml(PROFILES, "c.yaml").unwrap();
        let cl = &c.classifier;
        assert_eq!(cl.profiles.len(), 2);
        let local = &cl.profiles["local"];
        assert_eq!(local.provider, ProviderKind::OpenAi);
        assert_eq!(local.guard.calls_per_minute, 60);
        assert_eq!(local.guard.fallback, FallbackKind::Rules);
        assert!(local.reask);
        assert_eq!(cl.routes.len(), 2);
        assert_eq!(cl.routes[0].environments, ["staging", "dev"]);
        assert_eq!(cl.routes[1].profile, "offline");
        assert_eq!(cl.default_profile().provider, ProviderKind::Anthropic);
        assert_eq!(
            route_environment("dev"),
            Some(tg_model::Environment::Development)
        );
        assert_eq!(
            route_environment("unknown"),
            Some(tg_model::Environment::Unknown)
        );
        assert_eq!(route_environment("moon"), None);
    }

    #[test]
    fn route_and_profile_problems_are_located() {
        let text = PROFILES
            .replace("      profile: offline", "      profile: offlin")
            .replace("[staging, dev]", "[staging, moon]")
            .replace("calls_per_minute: 60", "calls_per_minute: 0")
            .replace(
                "    offline:\n      provider: rules\n",
                "    offline:\n      provider: bedrock\n",
            )
            + "    - profile: local\n";
        let err = Config::from_yaml(&text, "c.yaml").unwrap_err().to_string();
        assert!(
            err.contains(
                "c.yaml:18: classifier.routes[0].environments[1]: \"moon\" names no environment"
            ),
            "{err}"
        );
        assert!(
            err.contains("c.yaml:22: classifier.routes[1].profile: profile \"offlin\" is not in classifier.profiles (known: default, local, offline)"),
            "{err}"
        );
        assert!(
            err.contains(
                "c.yaml:13: classifier.profiles.local.guard.calls_per_minute: 0 is outside"
            ),
            "{err}"
        );
        assert!(
            err.contains("c.yaml:15: classifier.profiles.offline.bedrock: provider is bedrock but the bedrock section is missing"),
            "{err}"
        );
        assert!(
            err.contains(
                "c.yaml:23: classifier.routes[2]: a route lists at least one environment or service"
            ),
            "{err}"
        );
        let text = PROFILES.replace("    offline:", "    default:");
        let err = Config::from_yaml(&text, "c.yaml").unwrap_err().to_string();
        assert!(
            err.contains("classifier.profiles.default: `default` is the top-level classifier"),
            "{err}"
        );
    }

    #[test]
    fn web_identity_credentials_parse_and_are_checked() {
        let text = "classifier:
  provider: bedrock
  bedrock:
    region: eu-west-1
    model_id: m
    credentials:
      web_identity:
        token_file: /var/run/secrets/eks.amazonaws.com/serviceaccount/token
        role_arn: arn:aws:iam::123456789012:role/triage
";
        let c = Config::from_yaml(text, "c.yaml").unwrap();
        let w = c
            .classifier
            .bedrock
            .unwrap()
            .credentials
            .web_identity
            .unwrap();
        assert_eq!(w.session_name, "triage-gate");
        assert_eq!(w.duration_secs, 3600);
        assert_eq!(w.sts_base_url, None);
        let bad = text.replace("arn:aws:iam::123456789012:role/triage", "triage")
            + "        session_name: \"a b\"\n        duration_secs: 60\n        sts_base_url: ftp://x\n";
        let err = Config::from_yaml(&bad, "c.yaml").unwrap_err().to_string();
        for (line, field) in [
            (9, "role_arn"),
            (10, "session_name"),
            (11, "duration_secs"),
            (12, "sts_base_url"),
        ] {
            assert!(
                err.contains(&format!(
                    "c.yaml:{line}: classifier.bedrock.credentials.web_identity.{field}"
                )),
                "{field}: {err}"
            );
        }
    }

    #[test]
    fn classifier_problems_are_located() {
        let text = "classifier:\n  provider: openai\n  bedrock:\n    region: US East\n    model_id: m\n  guard:\n    calls_per_minute: 0\n";
        let err = Config::from_yaml(text, "c.yaml").unwrap_err().to_string();
        assert!(
            err.contains("classifier.openai: provider is openai but the openai section is missing"),
            "{err}"
        );
        assert!(err.contains("c.yaml:4: classifier.bedrock.region"), "{err}");
        assert!(
            err.contains("c.yaml:7: classifier.guard.calls_per_minute"),
            "{err}"
        );
    }
}

/// Largest `timeout_ms` of one model call attempt (10 minutes).
pub const MODEL_TIMEOUT_MS_MAX: u64 = 600_000;
/// Largest `max_tokens` of a model answer.
pub const MODEL_MAX_TOKENS_MAX: u32 = 8192;
/// Largest `retries_max` of a model call.
pub const MODEL_RETRIES_MAX: u32 = 10;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicConfig {
    #[serde(default = "default_anthropic_url")]
    pub base_url: String,
    pub model: String,
    pub api_key: SecretRef,
    #[serde(default = "default_model_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    #[serde(default = "default_model_retries")]
    pub retries_max: u32,
    /// Certificate authorities trusted besides the bundled roots; its
    /// `ca_file` replaces the top-level `tls.ca_file` here.
    #[serde(default, skip_serializing_if = "crate::TlsTrust::is_unset")]
    pub tls: crate::TlsTrust,
}

/// Amazon Bedrock Converse. Credentials come from secret references
/// (environment or files) only; the defaults are the standard AWS variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BedrockConfig {
    /// e.g. `us-east-1`.
    pub region: String,
    /// Model id, inference-profile id or ARN.
    pub model_id: String,
    /// Default `https://bedrock-runtime.{region}.amazonaws.com`.
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub credentials: AwsCredentialRefs,
    #[serde(default = "default_model_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    #[serde(default = "default_model_retries")]
    pub retries_max: u32,
    /// Certificate authorities trusted besides the bundled roots; its
    /// `ca_file` replaces the top-level `tls.ca_file` here.
    #[serde(default, skip_serializing_if = "crate::TlsTrust::is_unset")]
    pub tls: crate::TlsTrust,
}

/// Where the AWS credentials are read from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsCredentialRefs {
    pub access_key_id: SecretRef,
    pub secret_access_key: SecretRef,
    /// Read if present (temporary credentials); a missing value means none.
    pub session_token: Option<SecretRef>,
    /// Temporary credentials from STS `AssumeRoleWithWebIdentity` (EKS IRSA,
    /// GitHub OIDC, ...). When set, the static keys above are not read. When
    /// absent and `access_key_id` is unset, the standard variables
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN` and `AWS_ROLE_SESSION_NAME`
    /// are used if present.
    pub web_identity: Option<WebIdentityConfig>,
}

/// Longest `duration_secs` STS grants (12 hours).
pub const WEB_IDENTITY_DURATION_SECS_MAX: u32 = 43_200;
/// Shortest `duration_secs` STS grants (15 minutes).
pub const WEB_IDENTITY_DURATION_SECS_MIN: u32 = 900;

/// `AssumeRoleWithWebIdentity` settings. The token file is a path, not a
/// secret reference: it is re-read at every refresh because it rotates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebIdentityConfig {
    pub token_file: PathBuf,
    /// `arn:aws:iam::<account>:role/<name>`.
    pub role_arn: String,
    #[serde(default = "default_session_name")]
    pub session_name: String,
    /// Default `https://sts.{bedrock.region}.amazonaws.com`.
    #[serde(default)]
    pub sts_base_url: Option<String>,
    /// Lifetime asked of STS (`DurationSeconds`), 900..=43200.
    #[serde(default = "default_web_identity_duration")]
    pub duration_secs: u32,
    /// Timeout of one STS call.
    #[serde(default = "default_model_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_session_name() -> String {
    "triage-gate".into()
}
fn default_web_identity_duration() -> u32 {
    3600
}

impl WebIdentityConfig {
    /// Semantic checks; paths start with `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.token_file.as_os_str().is_empty() {
            out.push((format!("{prefix}.token_file"), "must not be empty".into()));
        }
        let arn = &self.role_arn;
        if !(arn.starts_with("arn:") && arn.contains(":role/") && arn.len() <= 2048) {
            out.push((
                format!("{prefix}.role_arn"),
                format!("{arn:?} is not a role ARN (arn:aws:iam::<account>:role/<name>)"),
            ));
        }
        let s = &self.session_name;
        let session_ok = (2..=64).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
        if !session_ok {
            out.push((
                format!("{prefix}.session_name"),
                format!("{s:?} is not 2..=64 of [A-Za-z0-9_+=,.@-]"),
            ));
        }
        if let Some(Err(e)) = self.sts_base_url.as_deref().map(crate::urls::outbound) {
            out.push((format!("{prefix}.sts_base_url"), e));
        }
        if !(WEB_IDENTITY_DURATION_SECS_MIN..=WEB_IDENTITY_DURATION_SECS_MAX)
            .contains(&self.duration_secs)
        {
            out.push((
                format!("{prefix}.duration_secs"),
                format!(
                    "{} is outside {WEB_IDENTITY_DURATION_SECS_MIN}..={WEB_IDENTITY_DURATION_SECS_MAX}",
                    self.duration_secs
                ),
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MODEL_TIMEOUT_MS_MAX {
            out.push((
                format!("{prefix}.timeout_ms"),
                format!("{} is outside 1..={MODEL_TIMEOUT_MS_MAX}", self.timeout_ms),
            ));
        }
        out
    }
}

impl Default for AwsCredentialRefs {
    fn default() -> Self {
        AwsCredentialRefs {
            access_key_id: SecretRef::Env("AWS_ACCESS_KEY_ID".into()),
            secret_access_key: SecretRef::Env("AWS_SECRET_ACCESS_KEY".into()),
            session_token: Some(SecretRef::Env("AWS_SESSION_TOKEN".into())),
            web_identity: None,
        }
    }
}

/// An OpenAI-compatible chat-completions server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Scheme, host, port and path prefix; `/v1/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    /// Bearer key; omit for self-hosted servers that check none.
    #[serde(default)]
    pub api_key: Option<SecretRef>,
    #[serde(default = "default_model_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    #[serde(default = "default_model_retries")]
    pub retries_max: u32,
    /// Certificate authorities trusted besides the bundled roots; its
    /// `ca_file` replaces the top-level `tls.ca_file` here.
    #[serde(default, skip_serializing_if = "crate::TlsTrust::is_unset")]
    pub tls: crate::TlsTrust,
}

/// What answers when the provider is down, slow, over budget or its breaker is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackKind {
    /// Nothing: fail closed, the run goes to review.
    #[default]
    None,
    /// The built-in rules classifier answers, and the outcome says so.
    Rules,
}

/// Cost and storm control around an LLM provider (`classify::Guarded`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Reuse an answer for the same fingerprint and content this long (default
    /// 300); 0 keeps none (concurrent identical calls are still coalesced).
    pub cache_ttl_secs: u64,
    pub cache_entries_max: u64,
    /// Provider calls in flight at most.
    pub concurrency_max: u64,
    /// How long a call waits for a free slot.
    pub permit_wait_ms: u64,
    /// Provider calls per minute at most.
    pub calls_per_minute: u64,
    /// Whole provider call, retries and re-ask included.
    pub call_timeout_ms: u64,
    /// Consecutive provider failures that open the circuit breaker.
    pub breaker_failures: u64,
    pub breaker_cooldown_secs: u64,
    pub fallback: FallbackKind,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            cache_ttl_secs: 300,
            cache_entries_max: 10_000,
            concurrency_max: 8,
            permit_wait_ms: 30_000,
            calls_per_minute: 600,
            call_timeout_ms: 60_000,
            breaker_failures: 5,
            breaker_cooldown_secs: 30,
            fallback: FallbackKind::None,
        }
    }
}

fn default_anthropic_url() -> String {
    "https://api.anthropic.com".into()
}
fn default_model_timeout_ms() -> u64 {
    10_000
}
fn default_max_tokens() -> u32 {
    512
}
fn default_model_retries() -> u32 {
    2
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A Cedar policy file; default: the shipped policy.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketSpec {
    pub burst: u32,
    pub per_hour: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagingLimits {
    pub team: BucketSpec,
    pub global: BucketSpec,
    /// Every service's own budget, unless overridden in `services`.
    pub service: BucketSpec,
    /// Per-service budgets, by catalog service name (at most [`PAGING_SERVICES_MAX`]).
    pub services: BTreeMap<String, BucketSpec>,
}

/// Largest `burst` of a paging bucket.
pub const BUCKET_BURST_MAX: u32 = 10_000;
/// Largest `per_hour` refill of a paging bucket.
pub const BUCKET_PER_HOUR_MAX: u32 = 1_000_000;
/// Most per-service paging overrides.
pub const PAGING_SERVICES_MAX: usize = 10_000;
/// Longest breaker window or cool-down, in seconds (a day).
pub const BREAKER_SECS_MAX: u64 = 24 * 3600;
/// Largest breaker service threshold.
pub const BREAKER_SERVICES_MAX: u32 = 10_000;

/// `storm.breaker`: storm mode per environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSpec {
    /// Opens when more than this many distinct services alert within `window_secs`.
    pub open_services: u32,
    /// Or more than this percentage of the catalog's services (unset: not used).
    pub open_catalog_percent: Option<u32>,
    /// Closes once at most this many services alert within the window ...
    pub close_services: u32,
    /// ... for this long.
    pub cooldown_secs: u64,
    /// The sliding window in which distinct services are counted.
    pub window_secs: u64,
    /// Team of the umbrella incident (a `catalog.teams` key); unset: the team
    /// the model recommended for the event that carries it.
    pub umbrella_team: Option<String>,
    /// How often an open breaker is checked without an event, so it closes
    /// when the cool-down ends even if nothing else arrives; 0: only at the
    /// next event (the simulator's choice, for determinism).
    pub tick_ms: u64,
}

/// Longest breaker check interval (`storm.breaker.tick_ms`).
pub const BREAKER_TICK_MS_MAX: u64 = 600_000;

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            open_services: 10,
            open_catalog_percent: None,
            close_services: 5,
            cooldown_secs: 600,
            window_secs: 300,
            umbrella_team: None,
            tick_ms: 1_000,
        }
    }
}

/// Shortest interval between two held-back summaries to one team.
pub const SUMMARY_INTERVAL_SECS_MIN: u64 = 60;
/// Most run IDs listed per summary line.
pub const SUMMARY_RUNS_MAX: usize = 100;

/// `storm.summary`: the held-back pages, sent to a team's chat webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SummarySpec {
    /// At most one summary per team per interval.
    pub interval_secs: u64,
    /// Run IDs listed per (team, service, reason) line.
    pub runs_max: usize,
    /// Chat webhook per team (a `catalog.teams` key); teams without one get none.
    pub webhooks: BTreeMap<String, SecretRef>,
    /// `slack` or `teams`.
    pub format: String,
    pub timeout_ms: u64,
}

impl Default for SummarySpec {
    fn default() -> Self {
        SummarySpec {
            interval_secs: 900,
            runs_max: 10,
            webhooks: BTreeMap::new(),
            format: "slack".into(),
            timeout_ms: 5_000,
        }
    }
}

impl Default for PagingLimits {
    fn default() -> Self {
        PagingLimits {
            team: BucketSpec {
                burst: 3,
                per_hour: 6,
            },
            global: BucketSpec {
                burst: 10,
                per_hour: 30,
            },
            service: BucketSpec {
                burst: 2,
                per_hour: 6,
            },
            services: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StormConfig {
    /// Same fingerprint within this window: suppressed.
    pub dedup_window_secs: u64,
    /// Per-service and per-source suppression windows (a service's wins).
    pub dedup_overrides: DedupOverrides,
    /// Events from distinct verified senders within this window are
    /// independent signals (docs/policy.md).
    pub signal_window_secs: u64,
    /// An event confirms a major incident only at this source impact or above.
    pub signal_min_impact: tg_model::ImpactLevel,
    /// At most one MIM per service within this window.
    pub mim_window_secs: u64,
    pub paging: PagingLimits,
    pub breaker: BreakerSpec,
    pub summary: SummarySpec,
    pub group: GroupSpec,
}

/// Per-service or per-source suppression windows, in seconds (`storm.dedup_overrides`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupOverrides {
    /// Catalog service -> window.
    pub services: BTreeMap<String, u64>,
    /// Source (`alertmanager`, `cloudwatch-sns`, `splunk`, ...) -> window.
    pub sources: BTreeMap<String, u64>,
}

/// Fields in `storm.group.by` at most.
pub const GROUP_BY_MAX: usize = 8;
/// Work notes per group at most (`storm.group.notes_max`).
pub const GROUP_NOTES_MAX: u32 = 1_000;

/// Grouping (`storm.group`): alerts with the same values of `by` (within one
/// environment) share one incident; later ones add work notes to its ticket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupSpec {
    /// `service`, `alert_name`, `origin`, `source`, `component`, `label:<name>`,
    /// `correlation:<kind>`; empty turns grouping off.
    pub by: Vec<String>,
    /// A group stays open this long after its last new alert.
    pub window_secs: u64,
    /// Work notes per group's ticket; later alerts of the group are suppressed.
    pub notes_max: u32,
}

impl Default for GroupSpec {
    fn default() -> Self {
        GroupSpec {
            by: vec!["service".into()],
            window_secs: 1800,
            notes_max: 50,
        }
    }
}

impl GroupSpec {
    /// The parsed fields (validated at load, so errors here are skipped).
    pub fn fields(&self) -> Vec<tg_storm::GroupField> {
        self.by
            .iter()
            .filter_map(|f| tg_storm::GroupField::parse(f).ok())
            .collect()
    }
}

impl StormConfig {
    /// The `storm` section's problems: `(dotted path, message)`.
    fn validate(&self, catalog: &Catalog) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, v) in [
            ("storm.dedup_window_secs", self.dedup_window_secs),
            ("storm.signal_window_secs", self.signal_window_secs),
            ("storm.mim_window_secs", self.mim_window_secs),
        ] {
            if v == 0 || v > 7 * 24 * 3600 {
                out.push((name.into(), format!("{v} is outside 1..=604800 seconds")));
            }
        }
        let p = &self.paging;
        let mut buckets = vec![
            ("storm.paging.team".to_owned(), p.team),
            ("storm.paging.global".to_owned(), p.global),
            ("storm.paging.service".to_owned(), p.service),
        ];
        if p.services.len() > PAGING_SERVICES_MAX {
            out.push((
                "storm.paging.services".into(),
                format!(
                    "{} overrides, at most {PAGING_SERVICES_MAX}",
                    p.services.len()
                ),
            ));
        }
        for (service, b) in &p.services {
            if !catalog.services.contains_key(service) {
                out.push((
                    format!("storm.paging.services.{service}"),
                    format!("service {service:?} is not in catalog.services"),
                ));
            }
            buckets.push((format!("storm.paging.services.{service}"), *b));
        }
        for (name, b) in buckets {
            if b.burst == 0 {
                out.push((
                    format!("{name}.burst"),
                    "must be at least 1 (use autonomy to stop paging)".into(),
                ));
            } else if b.burst > BUCKET_BURST_MAX {
                out.push((
                    format!("{name}.burst"),
                    format!("{} is over the limit of {BUCKET_BURST_MAX}", b.burst),
                ));
            }
            if b.per_hour > BUCKET_PER_HOUR_MAX {
                out.push((
                    format!("{name}.per_hour"),
                    format!("{} is over the limit of {BUCKET_PER_HOUR_MAX}", b.per_hour),
                ));
            }
        }
        let b = &self.breaker;
        if b.open_services == 0 || b.open_services > BREAKER_SERVICES_MAX {
            out.push((
                "storm.breaker.open_services".into(),
                format!("{} is outside 1..={BREAKER_SERVICES_MAX}", b.open_services),
            ));
        }
        if let Some(pct) = b.open_catalog_percent
            && (pct == 0 || pct > 100)
        {
            out.push((
                "storm.breaker.open_catalog_percent".into(),
                format!("{pct} is outside 1..=100"),
            ));
        }
        if b.close_services >= b.open_services {
            out.push((
                "storm.breaker.close_services".into(),
                format!(
                    "{} must be below open_services ({}) for hysteresis",
                    b.close_services, b.open_services
                ),
            ));
        }
        for (name, v) in [
            ("storm.breaker.cooldown_secs", b.cooldown_secs),
            ("storm.breaker.window_secs", b.window_secs),
        ] {
            if v == 0 || v > BREAKER_SECS_MAX {
                out.push((
                    name.into(),
                    format!("{v} is outside 1..={BREAKER_SECS_MAX} seconds"),
                ));
            }
        }
        if b.tick_ms > BREAKER_TICK_MS_MAX {
            out.push((
                "storm.breaker.tick_ms".into(),
                format!("{} is over the limit of {BREAKER_TICK_MS_MAX}", b.tick_ms),
            ));
        }
        let teams = catalog.known_teams();
        if let Some(team) = &b.umbrella_team
            && !teams.contains(team)
        {
            out.push((
                "storm.breaker.umbrella_team".into(),
                format!("team {team:?} is not in catalog.teams"),
            ));
        }
        let o = &self.dedup_overrides;
        if o.services.len() + o.sources.len() > PAGING_SERVICES_MAX {
            out.push((
                "storm.dedup_overrides".into(),
                format!("more than {PAGING_SERVICES_MAX} overrides"),
            ));
        }
        for (service, v) in &o.services {
            let path = format!("storm.dedup_overrides.services.{service}");
            if !catalog.services.contains_key(service) {
                out.push((
                    path.clone(),
                    format!("service {service:?} is not in catalog.services"),
                ));
            }
            if *v == 0 || *v > 7 * 24 * 3600 {
                out.push((path, format!("{v} is outside 1..=604800 seconds")));
            }
        }
        for (source, v) in &o.sources {
            let path = format!("storm.dedup_overrides.sources.{source}");
            if !tg_model::Source::ALL.iter().any(|s| s.as_str() == source) {
                out.push((path.clone(), format!("{source:?} is not a source")));
            }
            if *v == 0 || *v > 7 * 24 * 3600 {
                out.push((path, format!("{v} is outside 1..=604800 seconds")));
            }
        }
        let g = &self.group;
        if g.by.len() > GROUP_BY_MAX {
            out.push((
                "storm.group.by".into(),
                format!("{} fields, at most {GROUP_BY_MAX}", g.by.len()),
            ));
        }
        for (i, f) in g.by.iter().enumerate() {
            if let Err(e) = tg_storm::GroupField::parse(f) {
                out.push((format!("storm.group.by.{i}"), e));
            }
        }
        if g.window_secs == 0 || g.window_secs > 7 * 24 * 3600 {
            out.push((
                "storm.group.window_secs".into(),
                format!("{} is outside 1..=604800 seconds", g.window_secs),
            ));
        }
        if g.notes_max > GROUP_NOTES_MAX {
            out.push((
                "storm.group.notes_max".into(),
                format!("{} is over the limit of {GROUP_NOTES_MAX}", g.notes_max),
            ));
        }
        let sm = &self.summary;
        if sm.interval_secs < SUMMARY_INTERVAL_SECS_MIN || sm.interval_secs > 7 * 24 * 3600 {
            out.push((
                "storm.summary.interval_secs".into(),
                format!(
                    "{} is outside {SUMMARY_INTERVAL_SECS_MIN}..=604800 seconds",
                    sm.interval_secs
                ),
            ));
        }
        if sm.runs_max == 0 || sm.runs_max > SUMMARY_RUNS_MAX {
            out.push((
                "storm.summary.runs_max".into(),
                format!("{} is outside 1..={SUMMARY_RUNS_MAX}", sm.runs_max),
            ));
        }
        if sm.format != "slack" && sm.format != "teams" {
            out.push((
                "storm.summary.format".into(),
                format!("{:?} is not slack or teams", sm.format),
            ));
        }
        if sm.timeout_ms == 0 || sm.timeout_ms > 60_000 {
            out.push((
                "storm.summary.timeout_ms".into(),
                format!("{} is outside 1..=60000", sm.timeout_ms),
            ));
        }
        for team in sm.webhooks.keys() {
            if !teams.contains(team) {
                out.push((
                    format!("storm.summary.webhooks.{team}"),
                    format!("team {team:?} is not in catalog.teams"),
                ));
            }
        }
        out
    }
}

impl Default for StormConfig {
    fn default() -> Self {
        StormConfig {
            dedup_window_secs: 600,
            dedup_overrides: DedupOverrides::default(),
            signal_window_secs: 900,
            signal_min_impact: tg_model::ImpactLevel::High,
            mim_window_secs: 3600,
            paging: PagingLimits::default(),
            breaker: BreakerSpec::default(),
            summary: SummarySpec::default(),
            group: GroupSpec::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeConfig {
    /// Extra redaction patterns (regular expressions), applied after the built-in ones.
    #[serde(default)]
    pub redact_patterns: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsConfig {
    #[serde(default)]
    pub servicenow: Option<ServiceNowTarget>,
    #[serde(default)]
    pub pagerduty: Option<PagerDutyTarget>,
    #[serde(default)]
    pub bridge: Option<BridgeTarget>,
    /// Retries of the outbox: exponential backoff with seeded jitter, Retry-After
    /// honoured (capped), `attempts_max` then a dead letter.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Deliveries in flight at once, per target.
    #[serde(default)]
    pub concurrency: ActionsConcurrency,
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// What a source's resolution closes remotely.
    #[serde(default)]
    pub resolve: ResolveSpec,
}

/// `actions.resolve`: when a group's last firing alert resolves, resolve the
/// incidents the gate opened for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResolveSpec {
    /// Resolve the PagerDuty alert (Events API v2 `resolve`, same routing key).
    pub page: bool,
    /// Set the ServiceNow incident Resolved (off by default: many teams close
    /// tickets themselves, with a resolution note).
    pub ticket: bool,
}

impl Default for ResolveSpec {
    fn default() -> Self {
        ResolveSpec {
            page: true,
            ticket: false,
        }
    }
}

/// Most deliveries in flight per target (`actions.concurrency.*`).
pub const ACTIONS_CONCURRENCY_MAX: usize = 64;
/// Longest outbox claim lease and idle poll (`actions.outbox.*`), in milliseconds.
pub const OUTBOX_MS_MAX: u64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionsConcurrency {
    pub servicenow: usize,
    pub pagerduty: usize,
    /// Major incidents (ServiceNow proposal + chat announcement).
    pub bridge: usize,
}

impl Default for ActionsConcurrency {
    fn default() -> Self {
        ActionsConcurrency {
            servicenow: 4,
            pagerduty: 4,
            bridge: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// How long a claim holds an action; a delivery still running after it may
    /// be taken over. Must exceed the longest attempt (a MIM makes 3 requests).
    pub lease_ms: u64,
    /// How often an idle outbox looks for due actions it was not woken for.
    pub idle_poll_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            lease_ms: 600_000,
            idle_poll_ms: 1_000,
        }
    }
}

impl ActionsConfig {
    /// Semantic checks of the `actions` section that need no I/O.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let c = &self.concurrency;
        for (name, v) in [
            ("servicenow", c.servicenow),
            ("pagerduty", c.pagerduty),
            ("bridge", c.bridge),
        ] {
            if !(1..=ACTIONS_CONCURRENCY_MAX).contains(&v) {
                out.push((
                    format!("actions.concurrency.{name}"),
                    format!("{v} is outside 1..={ACTIONS_CONCURRENCY_MAX}"),
                ));
            }
        }
        let timeouts = [
            self.servicenow.as_ref().map(|t| t.timeout_ms),
            self.pagerduty.as_ref().map(|t| t.timeout_ms),
            self.bridge.as_ref().map(|t| t.timeout_ms),
        ];
        let longest = timeouts.into_iter().flatten().max().unwrap_or(0);
        if let Some(b) = &self.bridge {
            out.extend(b.validate());
        }
        if let Some(pd) = &self.pagerduty {
            out.extend(pd.validate());
        }
        let o = &self.outbox;
        if o.lease_ms > OUTBOX_MS_MAX || o.lease_ms <= longest.saturating_mul(3) {
            out.push((
                "actions.outbox.lease_ms".into(),
                format!(
                    "{} must exceed 3 x the longest target timeout_ms ({longest}) and be at most {OUTBOX_MS_MAX}",
                    o.lease_ms
                ),
            ));
        }
        if o.idle_poll_ms == 0 || o.idle_poll_ms > OUTBOX_MS_MAX {
            out.push((
                "actions.outbox.idle_poll_ms".into(),
                format!("{} is outside 1..={OUTBOX_MS_MAX}", o.idle_poll_ms),
            ));
        }
        out
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNowTarget {
    /// `https://<instance>.service-now.com`
    pub base_url: String,
    /// A static bearer token; or use `auth.oauth` (exactly one of the two).
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// OAuth 2.0 client credentials instead of a static token.
    #[serde(default)]
    pub auth: Option<ServiceNowAuthConfig>,
    /// team -> assignment group (sys_id or name).
    #[serde(default)]
    pub assignment_groups: BTreeMap<String, String>,
    #[serde(default)]
    pub caller_id: Option<String>,
    #[serde(default = "default_action_timeout_ms")]
    pub timeout_ms: u64,
    /// How a ticket op `resolve` closes the incident.
    #[serde(default)]
    pub resolve: ServiceNowResolve,
    /// Certificate authorities trusted besides the bundled roots; its
    /// `ca_file` replaces the top-level `tls.ca_file` here.
    #[serde(default, skip_serializing_if = "crate::TlsTrust::is_unset")]
    pub tls: crate::TlsTrust,
}

/// `actions.servicenow.auth`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNowAuthConfig {
    pub oauth: ServiceNowOAuth,
}

/// Longest `timeout_ms` of a token request.
pub const OAUTH_TIMEOUT_MS_MAX: u64 = 60_000;
/// Largest `refresh_margin_secs` (a token is refreshed this long before it expires).
pub const OAUTH_REFRESH_MARGIN_SECS_MAX: u64 = 3_600;
/// Algorithms a `private_key` may sign client assertions with.
pub const CLIENT_ASSERTION_ALGORITHMS: &[&str] = &["RS256", "ES256"];

/// How the client secret is sent to the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientSecretMethod {
    /// `client_id` and `client_secret` in the form body (what ServiceNow documents).
    #[default]
    Post,
    /// HTTP Basic.
    Basic,
}

/// `actions.servicenow.auth.oauth`: client credentials against `/oauth_token.do`
/// (the instance must enable the client_credentials grant).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNowOAuth {
    /// Default `<base_url>/oauth_token.do`.
    #[serde(default)]
    pub token_url: Option<String>,
    pub client_id: String,
    /// The client secret; or `private_key` (exactly one).
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// `client_secret_post` (default) or `client_secret_basic`.
    #[serde(default)]
    pub client_secret_method: ClientSecretMethod,
    /// A PEM private key signing `private_key_jwt` client assertions (RFC 7523).
    #[serde(default)]
    pub private_key: Option<SecretRef>,
    /// `RS256` (default) or `ES256`.
    #[serde(default = "default_assertion_alg")]
    pub private_key_alg: String,
    /// `kid` of the assertion header, when the IdP holds several keys.
    #[serde(default)]
    pub key_id: Option<String>,
    /// Requested scope (space-separated); none by default (the OAuth
    /// application user's rights apply).
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default = "default_action_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_refresh_margin_secs")]
    pub refresh_margin_secs: u64,
}

fn default_assertion_alg() -> String {
    "RS256".into()
}

fn default_refresh_margin_secs() -> u64 {
    60
}

impl ServiceNowOAuth {
    /// The token endpoint: configured, or `<base_url>/oauth_token.do`.
    pub fn token_url(&self, base_url: &str) -> String {
        self.token_url
            .clone()
            .unwrap_or_else(|| format!("{}/oauth_token.do", base_url.trim_end_matches('/')))
    }
}

impl ServiceNowTarget {
    fn validate_auth(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let p = |k: &str| format!("actions.servicenow.{k}");
        let oauth = match (&self.token, &self.auth) {
            (Some(_), None) => return out,
            (None, Some(a)) => &a.oauth,
            (Some(_), Some(_)) => {
                out.push((p("auth"), "set either token or auth.oauth, not both".into()));
                return out;
            }
            (None, None) => {
                out.push((p("token"), "set token or auth.oauth".into()));
                return out;
            }
        };
        let p = |k: &str| format!("actions.servicenow.auth.oauth.{k}");
        if oauth.client_id.trim().is_empty() {
            out.push((p("client_id"), "must not be empty".into()));
        }
        match (&oauth.client_secret, &oauth.private_key) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => out.push((
                p("client_secret"),
                "set exactly one of client_secret or private_key".into(),
            )),
        }
        if !CLIENT_ASSERTION_ALGORITHMS.contains(&oauth.private_key_alg.as_str()) {
            out.push((
                p("private_key_alg"),
                format!(
                    "{:?} is not one of {}",
                    oauth.private_key_alg,
                    CLIENT_ASSERTION_ALGORITHMS.join(", ")
                ),
            ));
        }
        if let Some(Err(e)) = oauth.token_url.as_deref().map(crate::urls::outbound) {
            out.push((p("token_url"), e));
        }
        if oauth.timeout_ms == 0 || oauth.timeout_ms > OAUTH_TIMEOUT_MS_MAX {
            out.push((
                p("timeout_ms"),
                format!("{} is outside 1..={OAUTH_TIMEOUT_MS_MAX}", oauth.timeout_ms),
            ));
        }
        if oauth.refresh_margin_secs > OAUTH_REFRESH_MARGIN_SECS_MAX {
            out.push((
                p("refresh_margin_secs"),
                format!(
                    "{} exceeds {OAUTH_REFRESH_MARGIN_SECS_MAX}",
                    oauth.refresh_margin_secs
                ),
            ));
        }
        out
    }
}

/// `actions.servicenow.resolve`: the values a resolve writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceNowResolve {
    /// `close_code` (a choice value of the instance's incident table).
    pub close_code: String,
}

impl Default for ServiceNowResolve {
    fn default() -> Self {
        ServiceNowResolve {
            close_code: "Solved (Permanently)".into(),
        }
    }
}

/// `actions.pagerduty.region`: picks the API hosts of the account's region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PagerDutyRegionConfig {
    /// `events.pagerduty.com`, `api.pagerduty.com`.
    #[default]
    Us,
    /// `events.eu.pagerduty.com`, `api.eu.pagerduty.com`.
    Eu,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyTarget {
    /// `us` (default) or `eu`: picks `https://events[.eu].pagerduty.com`.
    #[serde(default)]
    pub region: PagerDutyRegionConfig,
    /// An explicit Events API base URL (a proxy, the sandbox); wins over `region`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// team -> Events API v2 integration (routing) key (with `api: events`).
    #[serde(default)]
    pub routing_keys: BTreeMap<String, SecretRef>,
    #[serde(default = "default_action_timeout_ms")]
    pub timeout_ms: u64,
    /// `events` (default: Events API v2 alerts) or `rest` (REST API incidents).
    #[serde(default)]
    pub api: PagerDutyApiConfig,
    /// REST API access; required with `api: rest`.
    #[serde(default)]
    pub rest: Option<PagerDutyRestTarget>,
    /// Certificate authorities trusted besides the bundled roots; its
    /// `ca_file` replaces the top-level `tls.ca_file` here.
    #[serde(default, skip_serializing_if = "crate::TlsTrust::is_unset")]
    pub tls: crate::TlsTrust,
}

/// `actions.pagerduty.api`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PagerDutyApiConfig {
    #[default]
    Events,
    Rest,
}

/// `actions.pagerduty.rest`: incidents through the REST API with a scoped OAuth token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyRestTarget {
    /// An explicit REST base URL; wins over `region` (`https://api[.eu].pagerduty.com`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The `From` header: the email of a user on the account.
    pub from: String,
    /// team -> PagerDuty service ID.
    pub service_ids: BTreeMap<String, String>,
    pub oauth: PagerDutyOAuth,
}

/// `actions.pagerduty.rest.oauth`: the scoped app's client credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyOAuth {
    #[serde(default = "default_pagerduty_token_url")]
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretRef,
    /// The account subdomain (`acme` of acme.pagerduty.com): the token's scope
    /// is `as_account-<region>.<subdomain> incidents.read incidents.write`.
    pub subdomain: String,
    #[serde(default = "default_action_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_pagerduty_token_url() -> String {
    "https://identity.pagerduty.com/oauth/token".into()
}

impl PagerDutyTarget {
    fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(Err(e)) = self.base_url.as_deref().map(crate::urls::outbound) {
            out.push(("actions.pagerduty.base_url".into(), e));
        }
        let Some(rest) = &self.rest else {
            if self.api == PagerDutyApiConfig::Rest {
                out.push((
                    "actions.pagerduty.api".into(),
                    "rest needs an actions.pagerduty.rest section".into(),
                ));
            }
            return out;
        };
        if !rest.from.contains('@') || rest.from.chars().any(char::is_whitespace) {
            out.push((
                "actions.pagerduty.rest.from".into(),
                format!("{:?} is not an email address", rest.from),
            ));
        }
        for (path, url) in [
            ("actions.pagerduty.rest.base_url", rest.base_url.as_deref()),
            (
                "actions.pagerduty.rest.oauth.token_url",
                Some(rest.oauth.token_url.as_str()),
            ),
        ] {
            if let Some(Err(e)) = url.map(crate::urls::outbound) {
                out.push((path.into(), e));
            }
        }
        let sub = &rest.oauth.subdomain;
        if sub.is_empty() || !sub.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            out.push((
                "actions.pagerduty.rest.oauth.subdomain".into(),
                format!("{sub:?} is not an account subdomain ([A-Za-z0-9-])"),
            ));
        }
        if rest.oauth.client_id.is_empty() {
            out.push((
                "actions.pagerduty.rest.oauth.client_id".into(),
                "must not be empty".into(),
            ));
        }
        if rest.oauth.timeout_ms == 0 || rest.oauth.timeout_ms > 60_000 {
            out.push((
                "actions.pagerduty.rest.oauth.timeout_ms".into(),
                format!("{} is outside 1..=60000", rest.oauth.timeout_ms),
            ));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BridgeFormatConfig {
    #[default]
    Slack,
    Teams,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeTarget {
    /// The chat incoming-webhook URL (a secret: anyone holding it can post).
    /// Optional when `webhooks` names at least one receiver.
    #[serde(default)]
    pub webhook_url: Option<SecretRef>,
    #[serde(default)]
    pub format: BridgeFormatConfig,
    #[serde(default)]
    pub conference_url: Option<String>,
    #[serde(default = "default_action_timeout_ms")]
    pub timeout_ms: u64,
    /// Generic receivers of the announcement, signed with HMAC-SHA256 (docs/webhooks.md).
    #[serde(default)]
    pub webhooks: Vec<SignedWebhookTarget>,
    /// Certificate authorities trusted besides the bundled roots; its
    /// `ca_file` replaces the top-level `tls.ca_file` here.
    #[serde(default, skip_serializing_if = "crate::TlsTrust::is_unset")]
    pub tls: crate::TlsTrust,
}

/// Most signed webhooks (`actions.bridge.webhooks`).
pub const BRIDGE_WEBHOOKS_MAX: usize = 8;

/// `actions.bridge.webhooks[]`: one signed-webhook receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedWebhookTarget {
    /// Names it in results and errors: 1..=64 of `[A-Za-z0-9_-]`, unique.
    pub name: String,
    /// Where to POST (http(s)).
    pub url: String,
    /// The shared signing secret (at least 32 characters).
    pub secret: SecretRef,
}

impl BridgeTarget {
    fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.webhook_url.is_none() && self.webhooks.is_empty() {
            out.push((
                "actions.bridge".into(),
                "needs a webhook_url, at least one entry in webhooks, or both".into(),
            ));
        }
        if self.webhooks.len() > BRIDGE_WEBHOOKS_MAX {
            out.push((
                "actions.bridge.webhooks".into(),
                format!(
                    "{} webhooks; at most {BRIDGE_WEBHOOKS_MAX}",
                    self.webhooks.len()
                ),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            let ok = !w.name.is_empty()
                && w.name.len() <= 64
                && w.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
            if !ok {
                out.push((
                    format!("actions.bridge.webhooks[{i}].name"),
                    format!("{:?} is not 1..=64 characters of [A-Za-z0-9_-]", w.name),
                ));
            } else if !names.insert(w.name.as_str()) {
                out.push((
                    format!("actions.bridge.webhooks[{i}].name"),
                    format!("{:?} is used twice", w.name),
                ));
            }
            if let Err(e) = crate::urls::outbound(&w.url) {
                out.push((format!("actions.bridge.webhooks[{i}].url"), e));
            }
        }
        out
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub attempts_max: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub retry_after_max_secs: u64,
    /// Seeds the retry jitter (deterministic per action and attempt).
    pub jitter_seed: u64,
}

impl Default for RetryConfig {
    /// 10 to 20 minutes of attempts before a dead letter: an incident tool
    /// that is down for minutes during a storm loses nothing.
    fn default() -> Self {
        RetryConfig {
            attempts_max: 12,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            retry_after_max_secs: 300,
            jitter_seed: 0,
        }
    }
}

fn default_action_timeout_ms() -> u64 {
    10_000
}

/// One configuration problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: ", self.file, l)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// The 1-based line of the dotted `path` in the YAML `text` (or of its
/// nearest ancestor that is in the file), for messages about keys found
/// after parsing (`config check`).
pub fn line_of_key(text: &str, path: &str) -> Option<usize> {
    locate::line_of(&locate::key_lines(text), path)
}

/// Most shape errors (unknown keys, wrong types) reported from one file.
pub const SHAPE_ERRORS_MAX: usize = 100;

/// Largest configuration file accepted.
pub const CONFIG_BYTES_MAX: usize = 4 * 1024 * 1024;

impl Config {
    /// Parses and validates YAML text; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let issue = |line, path: &str, message: String| ConfigIssue {
            file: file.to_owned(),
            line,
            path: path.to_owned(),
            message,
        };
        if text.len() > CONFIG_BYTES_MAX {
            return Err(ConfigErrors(vec![issue(
                None,
                "",
                format!(
                    "file is {} bytes, over the {CONFIG_BYTES_MAX}-byte limit",
                    text.len()
                ),
            )]));
        }
        let lines = locate::key_lines(text);
        let mut issues = Vec::new();
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            match serde_yaml_ng::from_str(text) {
                Ok(c) => c,
                Err(first) => {
                    // Not YAML at all: nothing more can be said than where it broke.
                    let mut value: serde_yaml_ng::Value =
                        serde_yaml_ng::from_str(text).map_err(|e| {
                            let line = e.location().map(|l| l.line());
                            ConfigErrors(vec![issue(line, "", e.to_string())])
                        })?;
                    // A shape error (unknown key, wrong type) at a time: each
                    // is recorded and its key dropped, so the next one shows.
                    let mut parsed = None;
                    while issues.len() < SHAPE_ERRORS_MAX {
                        match serde_path_to_error::deserialize::<_, Config>(value.clone()) {
                            Ok(c) => {
                                parsed = Some(c);
                                break;
                            }
                            Err(e) => {
                                let mut segments = shape::segments(e.path());
                                let message = e.into_inner().to_string();
                                if let Some(key) = shape::unknown_field(&message) {
                                    // serde_path_to_error may or may not have reached the key.
                                    let key = shape::Segment::Key(key);
                                    if segments.last() != Some(&key) {
                                        segments.push(key);
                                    }
                                }
                                let path = shape::dotted(&segments);
                                let message = shape::humanize(&message, &path);
                                issues.push(issue(locate::line_of(&lines, &path), &path, message));
                                if !shape::remove(&mut value, &segments) {
                                    break;
                                }
                            }
                        }
                    }
                    match parsed {
                        Some(c) if !issues.is_empty() => c,
                        // The shape errors could not all be set aside: report
                        // what was found (at least the first one).
                        _ if issues.is_empty() => {
                            let line = first.location().map(|l| l.line());
                            return Err(ConfigErrors(vec![issue(line, "", first.to_string())]));
                        }
                        _ => return Err(ConfigErrors(issues)),
                    }
                }
            }
        };
        issues.extend(
            config
                .validate()
                .into_iter()
                .map(|(path, msg)| issue(locate::line_of(&lines, &path), &path, msg)),
        );
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(issues))
        }
    }

    /// Semantic checks, all at once: `(dotted path, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .catalog
            .validate()
            .into_iter()
            .map(|i| (format!("catalog.{}", i.path), i.message))
            .collect();
        let s = &self.server;
        if s.listen.parse::<std::net::SocketAddr>().is_err() {
            out.push((
                "server.listen".into(),
                format!("{:?} is not an address like 127.0.0.1:8700", s.listen),
            ));
        }
        if s.body_bytes_max == 0 || s.body_bytes_max > 64 * 1024 * 1024 {
            out.push((
                "server.body_bytes_max".into(),
                format!("{} is outside 1..=67108864", s.body_bytes_max),
            ));
        }
        if s.backlog_max <= 0 {
            out.push((
                "server.backlog_max".into(),
                format!("{} must be positive", s.backlog_max),
            ));
        }
        if s.workers > 256 {
            out.push((
                "server.workers".into(),
                format!("{} is over the limit of 256", s.workers),
            ));
        }
        out.extend(self.classifier.validate());
        out.extend(self.identity.check());
        out.extend(self.storm.validate(&self.catalog));
        out.extend(self.actions.validate());
        out.extend(self.audit.validate());
        let bar = &self.review.promotion;
        if !(0.0..=1.0).contains(&bar.agreement_min) {
            out.push((
                "review.promotion.agreement_min".into(),
                format!("{} is outside 0..=1", bar.agreement_min),
            ));
        }
        let e = self.review.expire_after_secs;
        if !(REVIEW_EXPIRE_SECS_MIN..=REVIEW_EXPIRE_SECS_MAX).contains(&e) {
            out.push((
                "review.expire_after_secs".into(),
                format!("{e} is outside {REVIEW_EXPIRE_SECS_MIN}..={REVIEW_EXPIRE_SECS_MAX}"),
            ));
        }
        out.extend(self.store.validate());
        for (key, path) in self.tls_ca_files() {
            if path.as_os_str().is_empty() {
                out.push((key, "must name a PEM file (or be left out)".into()));
            }
        }
        let m = self.review.external_match_secs;
        if !(1..=REVIEW_EXTERNAL_MATCH_SECS_MAX).contains(&m) {
            out.push((
                "review.external_match_secs".into(),
                format!("{m} is outside 1..={REVIEW_EXTERNAL_MATCH_SECS_MAX}"),
            ));
        }
        let teams = self.catalog.known_teams();
        if let Some(pd) = &self.actions.pagerduty {
            for team in pd.routing_keys.keys() {
                if !teams.contains(team) {
                    out.push((
                        format!("actions.pagerduty.routing_keys.{team}"),
                        format!("team {team:?} is not in catalog.teams"),
                    ));
                }
            }
            let rest_teams = pd.rest.iter().flat_map(|r| r.service_ids.keys());
            for team in rest_teams {
                if !teams.contains(team) {
                    out.push((
                        format!("actions.pagerduty.rest.service_ids.{team}"),
                        format!("team {team:?} is not in catalog.teams"),
                    ));
                }
            }
        }
        if let Some(sn) = &self.actions.servicenow {
            for team in sn.assignment_groups.keys() {
                if !teams.contains(team) {
                    out.push((
                        format!("actions.servicenow.assignment_groups.{team}"),
                        format!("team {team:?} is not in catalog.teams"),
                    ));
                }
            }
            if let Err(e) = crate::urls::outbound(&sn.base_url) {
                out.push(("actions.servicenow.base_url".into(), e));
            }
            out.extend(sn.validate_auth());
        }
        let sns = &self.sources.sns;
        if let Err(e) = regex::Regex::new(&sns.cert_host_pattern) {
            out.push((
                "sources.sns.cert_host_pattern".into(),
                format!("invalid regular expression: {e}"),
            ));
        }
        for (i, arn) in sns.topic_arns.iter().enumerate() {
            let parts: Vec<&str> = arn.split(':').collect();
            if parts.len() != 6 || parts.first() != Some(&"arn") || parts.get(2) != Some(&"sns") {
                out.push((
                    format!("sources.sns.topic_arns[{i}]"),
                    format!(
                        "{arn:?} is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)"
                    ),
                ));
            }
        }
        for (name, v, max) in [
            (
                "sources.sns.replay_window_secs",
                sns.replay_window_secs,
                7 * 24 * 3600,
            ),
            ("sources.sns.fetch_timeout_ms", sns.fetch_timeout_ms, 60_000),
            (
                "sources.sns.cert_cache_max",
                sns.cert_cache_max as u64,
                1_000,
            ),
            (
                "sources.sns.cert_cache_ttl_secs",
                sns.cert_cache_ttl_secs,
                7 * 24 * 3600,
            ),
            (
                "sources.sns.message_ids_max",
                sns.message_ids_max as u64,
                1_000_000,
            ),
        ] {
            if v == 0 || v > max {
                out.push((name.into(), format!("{v} is outside 1..={max}")));
            }
        }
        for (account, env) in &self.sources.aws.account_environments {
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                out.push((
                    format!("sources.aws.account_environments.{account}"),
                    "an AWS account ID is 12 digits".into(),
                ));
            }
            if tg_model::Environment::from_label(env) == tg_model::Environment::Unknown {
                out.push((
                    format!("sources.aws.account_environments.{account}"),
                    format!("{env:?} names no environment (prod, staging, dev, ...)"),
                ));
            }
        }
        for (i, p) in self.normalize.redact_patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(p) {
                out.push((
                    format!("normalize.redact_patterns[{i}]"),
                    format!("invalid regular expression: {e}"),
                ));
            }
        }
        out
    }

    /// Every `tls.ca_file` set in the file, with its dotted key
    /// (`tls.ca_file`, `actions.servicenow.tls.ca_file`,
    /// `audit.sinks[0].tls.ca_file`, ...): what `config check` reads.
    pub fn tls_ca_files(&self) -> Vec<(String, PathBuf)> {
        let mut sections: Vec<(String, &TlsTrust)> = vec![(String::new(), &self.tls)];
        let c = &self.classifier;
        let profiles = std::iter::once((
            "classifier".to_owned(),
            c.anthropic.as_ref(),
            c.bedrock.as_ref(),
            c.openai.as_ref(),
        ))
        .chain(c.profiles.iter().map(|(name, p)| {
            (
                format!("classifier.profiles.{name}"),
                p.anthropic.as_ref(),
                p.bedrock.as_ref(),
                p.openai.as_ref(),
            )
        }));
        for (prefix, a, b, o) in profiles {
            if let Some(a) = a {
                sections.push((format!("{prefix}.anthropic"), &a.tls));
            }
            if let Some(b) = b {
                sections.push((format!("{prefix}.bedrock"), &b.tls));
            }
            if let Some(o) = o {
                sections.push((format!("{prefix}.openai"), &o.tls));
            }
        }
        let a = &self.actions;
        if let Some(t) = &a.servicenow {
            sections.push(("actions.servicenow".into(), &t.tls));
        }
        if let Some(t) = &a.pagerduty {
            sections.push(("actions.pagerduty".into(), &t.tls));
        }
        if let Some(t) = &a.bridge {
            sections.push(("actions.bridge".into(), &t.tls));
        }
        for (i, sink) in self.audit.sinks.iter().enumerate() {
            if let Some(t) = sink.tls() {
                sections.push((format!("audit.sinks[{i}]"), t));
            }
        }
        sections.push(("identity.inbound".into(), &self.identity.inbound.tls));
        sections
            .into_iter()
            .filter_map(|(prefix, t)| {
                let path = t.ca_file.clone()?;
                let key = if prefix.is_empty() {
                    "tls.ca_file".to_owned()
                } else {
                    format!("{prefix}.tls.ca_file")
                };
                Some((key, path))
            })
            .collect()
    }

    pub fn dedup_window(&self) -> chrono::Duration {
        secs(self.storm.dedup_window_secs)
    }
    /// The suppression window of a service's events from a source (overrides applied).
    pub fn dedup_window_for(&self, service: &str, source: &str) -> chrono::Duration {
        let o = &self.storm.dedup_overrides;
        secs(
            o.services
                .get(service)
                .or_else(|| o.sources.get(source))
                .copied()
                .unwrap_or(self.storm.dedup_window_secs),
        )
    }
    pub fn signal_window(&self) -> chrono::Duration {
        secs(self.storm.signal_window_secs)
    }
    pub fn mim_window(&self) -> chrono::Duration {
        secs(self.storm.mim_window_secs)
    }
}

fn secs(s: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}

#[cfg(test)]
mod tests;
