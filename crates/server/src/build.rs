//! Build: the only place configuration turns into live objects (reads secrets,
//! compiles policies and regexes, builds HTTP clients). Fails with every reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use tg_classify::{Classifier, TeamContext};
use tg_config::{Config, ProviderKind, SecretSource};
use tg_engine::StormSettings;
use tg_normalize::NormalizeContext;
use tg_policy::Gates;
use tg_policy::catalog::Catalog;
use tg_storm::BucketConfig;

/// The team that receives what no catalog entry owns.
pub const DEFAULT_TEAM: &str = "platform-ops";

/// Everything a run needs besides the store: built once from the configuration.
pub struct Pipeline {
    pub normalize: NormalizeContext,
    pub classifier: Arc<dyn Classifier>,
    pub gates: Gates,
    pub catalog: Catalog,
    pub storm: StormSettings,
    pub executor: tg_actions::Executor,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("policy_version", &self.gates.version())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// The teams a classification may name, with the service's owner as a hint.
    pub fn teams_for(&self, service: &str) -> TeamContext {
        let known_teams = self.catalog.known_teams();
        let default_team = if known_teams.contains(DEFAULT_TEAM) {
            DEFAULT_TEAM.to_owned()
        } else {
            known_teams
                .iter()
                .next()
                .cloned()
                .unwrap_or_else(|| DEFAULT_TEAM.to_owned())
        };
        TeamContext {
            service_team: self.catalog.team_for(service).map(str::to_owned),
            known_teams,
            default_team,
        }
    }
}

/// Builds the pipeline. `policy_text` overrides `config.policy.file` (already read by the caller).
pub fn build_pipeline(
    config: &Config,
    policy_text: Option<&str>,
    secrets: &dyn SecretSource,
) -> anyhow::Result<Pipeline> {
    let text = policy_text.unwrap_or(Gates::default_policy_text());
    let gates = Gates::load(text, &config.catalog).map_err(|errs| {
        let file = config
            .policy
            .file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<built-in policy>".into());
        anyhow!(
            "policy is invalid:\n{}",
            errs.iter()
                .map(|e| format!("{file}:{e}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;

    let redactor = tg_normalize::Redactor::with_extra(&config.normalize.redact_patterns)
        .map_err(|e| anyhow!("normalize.redact_patterns: {e}"))?;
    let mut service_aliases = BTreeMap::new();
    for (name, svc) in &config.catalog.services {
        for alias in &svc.aliases {
            service_aliases.insert(alias.clone(), name.clone());
        }
    }
    let limits = tg_normalize::Limits {
        body_bytes_max: config.server.body_bytes_max,
        ..Default::default()
    };
    let normalize = NormalizeContext {
        service_aliases,
        redactor,
        limits,
    };

    let classifier: Arc<dyn Classifier> = match config.classifier.provider {
        ProviderKind::Rules => {
            let rules = match &config.classifier.rules {
                Some(v) => serde_json::from_value(v.clone()).context("classifier.rules")?,
                None => tg_classify::RulesClassifier::default_config(),
            };
            Arc::new(
                tg_classify::RulesClassifier::new(rules)
                    .map_err(|e| anyhow!("classifier.rules: {e}"))?,
            )
        }
        ProviderKind::Anthropic => {
            let a = config
                .classifier
                .anthropic
                .as_ref()
                .ok_or_else(|| anyhow!("classifier.anthropic is missing"))?;
            let key = secrets
                .read(&a.api_key)
                .context("classifier.anthropic.api_key")?;
            let mut c = tg_classify::AnthropicConfig::new(a.model.clone(), key);
            c.base_url = a.base_url.clone();
            c.timeout_ms = a.timeout_ms;
            c.max_tokens = a.max_tokens;
            c.retries_max = a.retries_max;
            Arc::new(
                tg_classify::AnthropicClassifier::new(c)
                    .map_err(|e| anyhow!("classifier.anthropic: {e}"))?,
            )
        }
    };

    let executor = build_executor(config, secrets)?;
    let storm = StormSettings {
        dedup_window: config.dedup_window(),
        signal_window: config.signal_window(),
        mim_window: config.mim_window(),
        team_bucket: BucketConfig {
            burst: config.storm.paging.team.burst,
            per_hour: config.storm.paging.team.per_hour,
        },
        global_bucket: BucketConfig {
            burst: config.storm.paging.global.burst,
            per_hour: config.storm.paging.global.per_hour,
        },
    };
    Ok(Pipeline {
        normalize,
        classifier,
        gates,
        catalog: config.catalog.clone(),
        storm,
        executor,
    })
}

fn build_executor(
    config: &Config,
    secrets: &dyn SecretSource,
) -> anyhow::Result<tg_actions::Executor> {
    use tg_actions::{
        BridgeConfig, BridgeFormat, PagerDutyConfig, RetryPolicy, Secret, ServiceNowConfig,
    };
    let a = &config.actions;
    let servicenow = match &a.servicenow {
        Some(sn) => Some(ServiceNowConfig {
            base_url: sn.base_url.clone(),
            token: Secret::new(
                secrets
                    .read(&sn.token)
                    .context("actions.servicenow.token")?
                    .expose(),
            ),
            assignment_groups: sn.assignment_groups.clone(),
            caller_id: sn.caller_id.clone(),
            timeout_ms: sn.timeout_ms,
        }),
        None => None,
    };
    let pagerduty = match &a.pagerduty {
        Some(pd) => {
            let mut keys = BTreeMap::new();
            for (team, r) in &pd.routing_keys {
                let k = secrets
                    .read(r)
                    .with_context(|| format!("actions.pagerduty.routing_keys.{team}"))?;
                keys.insert(team.clone(), k);
            }
            Some(PagerDutyConfig {
                base_url: pd.base_url.clone(),
                routing_keys: keys,
                timeout_ms: pd.timeout_ms,
            })
        }
        None => None,
    };
    let bridge = match &a.bridge {
        Some(b) => Some(BridgeConfig {
            webhook_url: Secret::new(
                secrets
                    .read(&b.webhook_url)
                    .context("actions.bridge.webhook_url")?
                    .expose(),
            ),
            format: match b.format {
                tg_config::BridgeFormatConfig::Slack => BridgeFormat::Slack,
                tg_config::BridgeFormatConfig::Teams => BridgeFormat::Teams,
            },
            conference_url: b.conference_url.clone(),
            timeout_ms: b.timeout_ms,
        }),
        None => None,
    };
    let retry = RetryPolicy {
        attempts_max: a.retry.attempts_max,
        backoff_base_ms: a.retry.backoff_base_ms,
        backoff_max_ms: a.retry.backoff_max_ms,
        retry_after_max_secs: a.retry.retry_after_max_secs,
        jitter_seed: a.retry.jitter_seed,
    };
    tg_actions::Executor::new(servicenow, pagerduty, bridge, retry)
        .map_err(|e| anyhow!("actions: {e}"))
}
