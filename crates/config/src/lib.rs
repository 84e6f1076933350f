//! Configuration: parse, then validate purely (every error at once, with
//! file:line), then build. Only `build`-time code in the server does I/O.
//!
//! Secrets are never inline: a config names an environment variable or a file
//! ([`SecretRef`]), read through a [`SecretSource`] that tests replace with a map.
//! This crate must never print a secret value, even in errors.

mod locate;
mod secrets;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tg_policy::catalog::Catalog;

pub use secrets::{EnvAndFiles, MapSecrets, Secret, SecretError, SecretRef, SecretSource};

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
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    #[serde(default)]
    pub provider: ProviderKind,
    /// Rules for the rules classifier (default: the built-in set).
    #[serde(default)]
    pub rules: Option<serde_json::Value>,
    #[serde(default)]
    pub anthropic: Option<AnthropicConfig>,
}

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
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StormConfig {
    /// Same fingerprint within this window: suppressed.
    pub dedup_window_secs: u64,
    /// Events from distinct origins within this window are independent signals.
    pub signal_window_secs: u64,
    /// At most one MIM per service within this window.
    pub mim_window_secs: u64,
    pub paging: PagingLimits,
}

impl Default for StormConfig {
    fn default() -> Self {
        StormConfig {
            dedup_window_secs: 600,
            signal_window_secs: 900,
            mim_window_secs: 3600,
            paging: PagingLimits::default(),
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
    #[serde(default)]
    pub retry: RetryConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNowTarget {
    /// `https://<instance>.service-now.com`
    pub base_url: String,
    /// Bearer token (OAuth access token).
    pub token: SecretRef,
    /// team -> assignment group (sys_id or name).
    #[serde(default)]
    pub assignment_groups: BTreeMap<String, String>,
    #[serde(default)]
    pub caller_id: Option<String>,
    #[serde(default = "default_action_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyTarget {
    /// `https://events.pagerduty.com` (EU: `https://events.eu.pagerduty.com`).
    #[serde(default = "default_pagerduty_url")]
    pub base_url: String,
    /// team -> Events API v2 integration (routing) key.
    pub routing_keys: BTreeMap<String, SecretRef>,
    #[serde(default = "default_action_timeout_ms")]
    pub timeout_ms: u64,
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
    /// The incoming-webhook URL (a secret: anyone holding it can post).
    pub webhook_url: SecretRef,
    #[serde(default)]
    pub format: BridgeFormatConfig,
    #[serde(default)]
    pub conference_url: Option<String>,
    #[serde(default = "default_action_timeout_ms")]
    pub timeout_ms: u64,
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
    fn default() -> Self {
        RetryConfig {
            attempts_max: 4,
            backoff_base_ms: 200,
            backoff_max_ms: 5_000,
            retry_after_max_secs: 30,
            jitter_seed: 0,
        }
    }
}

fn default_pagerduty_url() -> String {
    "https://events.pagerduty.com".into()
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
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| {
                let line = e.location().map(|l| l.line());
                ConfigErrors(vec![issue(line, "", e.to_string())])
            })?
        };
        let problems = config.validate();
        if problems.is_empty() {
            return Ok(config);
        }
        let lines = locate::key_lines(text);
        Err(ConfigErrors(
            problems
                .into_iter()
                .map(|(path, msg)| issue(locate::line_of(&lines, &path), &path, msg))
                .collect(),
        ))
    }

    /// Semantic checks, all at once: `(dotted path, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .catalog
            .validate()
            .into_iter()
            .map(|i| (i.path, i.message))
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
        if self.classifier.provider == ProviderKind::Anthropic
            && self.classifier.anthropic.is_none()
        {
            out.push((
                "classifier.anthropic".into(),
                "provider is anthropic but the anthropic section is missing".into(),
            ));
        }
        let st = &self.storm;
        for (name, v) in [
            ("storm.dedup_window_secs", st.dedup_window_secs),
            ("storm.signal_window_secs", st.signal_window_secs),
            ("storm.mim_window_secs", st.mim_window_secs),
        ] {
            if v == 0 || v > 7 * 24 * 3600 {
                out.push((name.into(), format!("{v} is outside 1..=604800 seconds")));
            }
        }
        for (name, b) in [
            ("storm.paging.team", st.paging.team),
            ("storm.paging.global", st.paging.global),
        ] {
            if b.burst == 0 {
                out.push((
                    format!("{name}.burst"),
                    "must be at least 1 (use autonomy to stop paging)".into(),
                ));
            }
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
            if !(sn.base_url.starts_with("https://") || sn.base_url.starts_with("http://")) {
                out.push((
                    "actions.servicenow.base_url".into(),
                    format!("{:?} is not an http(s) URL", sn.base_url),
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

    pub fn dedup_window(&self) -> chrono::Duration {
        secs(self.storm.dedup_window_secs)
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
