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
    /// SNS signature verification, certificate cache, subscriptions.
    pub sns: crate::sns::SnsVerifier,
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
    let aws_account_environments = config
        .sources
        .aws
        .account_environments
        .iter()
        .map(|(account, env)| (account.clone(), tg_model::Environment::from_label(env)))
        .collect();
    let normalize = NormalizeContext {
        service_aliases,
        redactor,
        limits,
        aws_account_environments,
    };
    let sns = build_sns(&config.sources.sns)?;

    let classifier: Arc<dyn Classifier> = {
        let c = &config.classifier;
        let rules = || -> anyhow::Result<tg_classify::RulesClassifier> {
            let rules = match &c.rules {
                Some(v) => serde_json::from_value(v.clone()).context("classifier.rules")?,
                None => tg_classify::RulesClassifier::default_config(),
            };
            tg_classify::RulesClassifier::new(rules).map_err(|e| anyhow!("classifier.rules: {e}"))
        };
        let guard = tg_classify::GuardConfig {
            cache_ttl_secs: c.guard.cache_ttl_secs,
            cache_entries_max: usize::try_from(c.guard.cache_entries_max).unwrap_or(usize::MAX),
            concurrency_max: usize::try_from(c.guard.concurrency_max).unwrap_or(usize::MAX),
            permit_wait_ms: c.guard.permit_wait_ms,
            calls_per_minute: u32::try_from(c.guard.calls_per_minute).unwrap_or(u32::MAX),
            call_timeout_ms: c.guard.call_timeout_ms,
            breaker_failures: u32::try_from(c.guard.breaker_failures).unwrap_or(u32::MAX),
            breaker_cooldown_secs: c.guard.breaker_cooldown_secs,
        };
        let fallback: Option<Arc<dyn Classifier>> = match c.guard.fallback {
            tg_config::FallbackKind::None => None,
            tg_config::FallbackKind::Rules => Some(Arc::new(rules()?)),
        };
        let clock: Arc<dyn tg_classify::GuardClock> =
            Arc::new(tg_classify::SystemGuardClock::default());
        fn guarded<C: Classifier + 'static>(
            inner: C,
            guard: tg_classify::GuardConfig,
            clock: Arc<dyn tg_classify::GuardClock>,
            fallback: Option<Arc<dyn Classifier>>,
        ) -> anyhow::Result<Arc<dyn Classifier>> {
            Ok(Arc::new(
                tg_classify::Guarded::new(inner, guard, clock, fallback)
                    .map_err(|e| anyhow!("classifier.guard.{e}"))?,
            ))
        }
        let retry = |timeout_ms: u64, retries_max: u32| tg_classify::RetryPolicy {
            timeout_ms,
            retries_max,
            ..tg_classify::RetryPolicy::default()
        };
        match c.provider {
            ProviderKind::Rules => Arc::new(rules()?),
            ProviderKind::Anthropic => {
                let a = c
                    .anthropic
                    .as_ref()
                    .ok_or_else(|| anyhow!("classifier.anthropic is missing"))?;
                let key = secrets
                    .read(&a.api_key)
                    .context("classifier.anthropic.api_key")?;
                let mut ac = tg_classify::AnthropicConfig::new(a.model.clone(), key);
                ac.base_url = a.base_url.clone();
                ac.timeout_ms = a.timeout_ms;
                ac.max_tokens = a.max_tokens;
                ac.retries_max = a.retries_max;
                ac.reask = c.reask;
                let inner = tg_classify::AnthropicClassifier::new(ac)
                    .map_err(|e| anyhow!("classifier.anthropic: {e}"))?;
                guarded(inner, guard, clock, fallback)?
            }
            ProviderKind::Bedrock => {
                let b = c
                    .bedrock
                    .as_ref()
                    .ok_or_else(|| anyhow!("classifier.bedrock is missing"))?;
                let r = &b.credentials;
                let credentials = tg_classify::AwsCredentials {
                    access_key_id: secrets
                        .read(&r.access_key_id)
                        .context("classifier.bedrock.credentials.access_key_id")?,
                    secret_access_key: secrets
                        .read(&r.secret_access_key)
                        .context("classifier.bedrock.credentials.secret_access_key")?,
                    // Temporary credentials only: an unset token means long-term keys.
                    session_token: match &r.session_token {
                        Some(t) => match secrets.read(t) {
                            Ok(v) => Some(v),
                            Err(tg_config::SecretError::Missing(_)) => None,
                            Err(e) => {
                                return Err(anyhow!(
                                    "classifier.bedrock.credentials.session_token: {e}"
                                ));
                            }
                        },
                        None => None,
                    },
                };
                let mut bc = tg_classify::BedrockConfig::new(
                    b.region.clone(),
                    b.model_id.clone(),
                    credentials,
                );
                bc.base_url = b.base_url.clone();
                bc.max_tokens = b.max_tokens;
                bc.retry = retry(b.timeout_ms, b.retries_max);
                bc.reask = c.reask;
                let inner = tg_classify::BedrockClassifier::new(bc)
                    .map_err(|e| anyhow!("classifier.bedrock: {e}"))?;
                guarded(inner, guard, clock, fallback)?
            }
            ProviderKind::OpenAi => {
                let o = c
                    .openai
                    .as_ref()
                    .ok_or_else(|| anyhow!("classifier.openai is missing"))?;
                let mut oc = tg_classify::OpenAiConfig::new(o.base_url.clone(), o.model.clone());
                oc.api_key = match &o.api_key {
                    Some(r) => Some(secrets.read(r).context("classifier.openai.api_key")?),
                    None => None,
                };
                oc.max_tokens = o.max_tokens;
                oc.retry = retry(o.timeout_ms, o.retries_max);
                oc.reask = c.reask;
                let inner = tg_classify::OpenAiClassifier::new(oc)
                    .map_err(|e| anyhow!("classifier.openai: {e}"))?;
                guarded(inner, guard, clock, fallback)?
            }
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
        sns,
    })
}

fn build_sns(c: &tg_config::SnsSourceConfig) -> anyhow::Result<crate::sns::SnsVerifier> {
    let policy = tg_normalize::sns::CertUrlPolicy::new(
        &c.cert_host_pattern,
        c.allow_insecure_loopback_cert_urls,
    )
    .map_err(|e| anyhow!("sources.sns.cert_host_pattern: {e}"))?;
    if c.allow_insecure_loopback_cert_urls {
        tracing::warn!(
            "sources.sns.allow_insecure_loopback_cert_urls is on: SNS certificates may come over http from loopback (tests only)"
        );
    }
    let settings = crate::sns::SnsSettings {
        topic_arns: c.topic_arns.iter().cloned().collect(),
        policy,
        replay_window_secs: i64::try_from(c.replay_window_secs).unwrap_or(i64::MAX / 1000),
        fetch_timeout: std::time::Duration::from_millis(c.fetch_timeout_ms),
        cert_cache_max: c.cert_cache_max.max(1),
        cert_cache_ttl: chrono::Duration::seconds(
            i64::try_from(c.cert_cache_ttl_secs).unwrap_or(i64::MAX / 1000),
        ),
        message_ids_max: c.message_ids_max.max(1),
    };
    crate::sns::SnsVerifier::new(settings).context("sources.sns: http client")
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
