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

/// The outbound OAuth token sources by action target.
pub type TokenSources = Vec<(String, Arc<tg_identity::TokenSource>)>;

/// Everything a run needs besides the store: built once from the configuration.
pub struct Pipeline {
    /// The database (`store`): SQLite in the data dir, or PostgreSQL.
    pub store: StoreSelection,
    /// A claimed run whose worker died is taken by another after this (`store.run_lease_secs`).
    pub run_lease: chrono::Duration,
    /// New events are refused below this many free bytes (`store.disk_free_min_bytes`; 0: off).
    pub disk_free_min_bytes: u64,
    pub normalize: NormalizeContext,
    pub classifier: Arc<dyn Classifier>,
    /// What of a model's answer is kept (`classifier.output_retention`).
    pub output_retention: tg_config::OutputRetention,
    /// The gates and the catalog: swapped whole by a hot reload ([`Pipeline::policy`]).
    pub policy: PolicyCell,
    pub storm: StormSettings,
    pub executor: tg_actions::Executor,
    /// SNS signature verification, certificate cache, subscriptions.
    pub sns: crate::sns::SnsVerifier,
    /// Held-back summaries to chat webhooks (`storm.summary`).
    pub summary: crate::storm::SummaryConfig,
    /// Outbox delivery: retries, per-target concurrency, lease (`actions.*`).
    pub outbox: crate::outbox::OutboxSettings,
    /// Who may call the API (`identity.inbound`).
    pub inbound: crate::auth::Inbound,
    /// Senders that sign their deliveries instead of a JWT (`identity.inbound.webhooks`).
    pub signed: Arc<crate::signed::SignedSources>,
    /// The origins each verified sender may claim (`identity.inbound.origins`).
    pub origin_bindings: std::collections::BTreeMap<String, Vec<String>>,
    /// How often open storm breakers are checked without an event (`storm.breaker.tick_ms`; `None`: never).
    pub breaker_tick: Option<std::time::Duration>,
    /// Checkpoint key and cadence, the configuration's hash (`audit`).
    pub audit: crate::audit::AuditSettings,
    /// Where the audit chain is shipped (`audit.sinks`), each from its own cursor.
    pub sinks: Vec<Arc<dyn tg_ship::Sink>>,
    /// Open drafts older than this expire (`review.expire_after_secs`).
    pub review_expire_after_secs: u64,
    /// How far back a reported outside incident is matched (`review.external_match_secs`).
    pub review_external_match_secs: u64,
    /// Tell teams about new review items (`review.notify`).
    pub review_notify: bool,
    /// The bar of the autonomy report (`review.promotion`).
    pub promotion: tg_config::PromotionBar,
    /// The outbound OAuth token sources by action target (`servicenow`,
    /// `pagerduty`): readiness reads their health.
    pub token_sources: TokenSources,
    /// Background probes of `token_sources` (stopped when the pipeline is
    /// dropped); `None` when built outside a runtime or for a config check.
    pub token_probes: Option<tg_identity::ProbeHandle>,
    /// The web console's sign-in and session key (`identity.console`).
    pub console: crate::ui::ConsoleSettings,
}

/// The server's [`crate::Clock`] as the identity caches' clock, so token
/// lifetimes move with `ManualClock` under tests and simulation.
struct IdentityClockAdapter(Arc<dyn crate::Clock>);

impl tg_identity::IdentityClock for IdentityClockAdapter {
    fn now_secs(&self) -> i64 {
        self.0.now().timestamp()
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("policy_version", &self.policy().gates.version())
            .finish_non_exhaustive()
    }
}

/// What a hot reload replaces at once: the Cedar gates and the catalog they
/// were validated against (teams, services, thresholds, autonomy levels), and
/// the hash of the configuration they came from (references to secrets, never
/// their values), which the `config_loaded` audit step compares.
pub struct Policy {
    pub gates: Gates,
    pub catalog: Catalog,
    pub config_sha256: tg_model::Sha256Hex,
}

/// The current [`Policy`]. A run takes it once (`current`) and decides with
/// that one throughout, so a swap never mixes two versions in one decision.
pub struct PolicyCell(std::sync::RwLock<Arc<Policy>>);

impl PolicyCell {
    pub fn new(p: Policy) -> PolicyCell {
        PolicyCell(std::sync::RwLock::new(Arc::new(p)))
    }

    pub fn current(&self) -> Arc<Policy> {
        match self.0.read() {
            Ok(p) => p.clone(),
            // A writer never panics while holding the lock (it only assigns);
            // if one did, the value is still a whole policy.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Installs `p`; returns the policy it replaced.
    pub fn replace(&self, p: Policy) -> Arc<Policy> {
        let new = Arc::new(p);
        match self.0.write() {
            Ok(mut g) => std::mem::replace(&mut *g, new),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), new),
        }
    }
}

/// Loads and validates the gates against the catalog of `config` (the same
/// check as at start-up): every error at once, with the policy file's name.
pub fn load_policy(config: &Config, policy_text: Option<&str>) -> anyhow::Result<Policy> {
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
    let config_json = serde_json::to_value(config)?;
    Ok(Policy {
        gates,
        catalog: config.catalog.clone(),
        config_sha256: tg_model::sha256_hex(&tg_model::hash::canonical_json(&config_json)),
    })
}

impl Pipeline {
    /// The policy in force now (take it once per decision).
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.current()
    }

    /// The teams a classification may name, with the service's owner as a hint.
    pub fn teams_for(&self, service: &str) -> TeamContext {
        let policy = self.policy();
        let known_teams = policy.catalog.known_teams();
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
            service_team: policy.catalog.team_for(service).map(str::to_owned),
            known_teams,
            default_team,
        }
    }
}

/// Builds the pipeline on the wall clock. `policy_text` overrides
/// `config.policy.file` (already read by the caller).
pub fn build_pipeline(
    config: &Config,
    policy_text: Option<&str>,
    secrets: &dyn SecretSource,
) -> anyhow::Result<Pipeline> {
    build_pipeline_with_clock(config, policy_text, secrets, Arc::new(crate::SystemClock))
}

/// Builds the pipeline to validate a configuration (`config check`): like
/// [`build_pipeline`], but nothing is started, so no token is requested with
/// placeholder secrets.
pub fn check_pipeline(
    config: &Config,
    policy_text: Option<&str>,
    secrets: &dyn SecretSource,
) -> anyhow::Result<Pipeline> {
    build(
        config,
        policy_text,
        secrets,
        Arc::new(crate::SystemClock),
        false,
    )
}

/// Reads every `tls.ca_file` of `config` as the build would, all of them
/// (the build stops at the first bad one): `(dotted key, message starting
/// with the key)` for each file that cannot be used (`config check`).
pub fn check_tls(config: &Config) -> Vec<(String, String)> {
    config
        .tls_ca_files()
        .into_iter()
        .filter_map(|(key, path)| {
            tg_identity::TrustRoots::load(&path)
                .err()
                .map(|e| (key.clone(), format!("{key}: {e}")))
        })
        .collect()
}

/// Builds the pipeline with the clock the server will run on: the classifier
/// guard (cache TTL, breaker cooldown, budget) reads it, so a `ManualClock`
/// makes them deterministic.
pub fn build_pipeline_with_clock(
    config: &Config,
    policy_text: Option<&str>,
    secrets: &dyn SecretSource,
    clock: Arc<dyn crate::Clock>,
) -> anyhow::Result<Pipeline> {
    build(config, policy_text, secrets, clock, true)
}

fn build(
    config: &Config,
    policy_text: Option<&str>,
    secrets: &dyn SecretSource,
    clock: Arc<dyn crate::Clock>,
    probe_tokens: bool,
) -> anyhow::Result<Pipeline> {
    let policy = load_policy(config, policy_text)?;

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
    // Every CA file is read here, once (a change needs a restart).
    let trust = tg_identity::TrustLoader::new(config.tls.ca_file());
    let global_trust = trust.global().map_err(|e| anyhow!(e))?;
    let sns = build_sns(&config.sources.sns, &global_trust)?;

    let identity_clock: Arc<dyn tg_identity::IdentityClock> =
        Arc::new(IdentityClockAdapter(clock.clone()));
    let guard_clock: Arc<dyn tg_classify::GuardClock> =
        Arc::new(crate::clock::GuardClockAdapter::new(clock));
    let classifier = build_classifier(&config.classifier, secrets, &guard_clock, &trust)?;

    let mut token_sources = Vec::new();
    let executor = build_executor(config, secrets, &identity_clock, &trust, &mut token_sources)?;
    // Probed from now on, so readiness knows before the first action needs a token.
    let token_probes = if probe_tokens {
        tg_identity::spawn_probes(
            &token_sources,
            std::time::Duration::from_secs(config.identity.outbound.probe_interval_secs),
        )
    } else {
        None
    };
    let storm = StormSettings {
        dedup_window: config.dedup_window(),
        dedup_service_windows: config
            .storm
            .dedup_overrides
            .services
            .keys()
            .map(|s| (s.clone(), config.dedup_window_for(s, "")))
            .collect(),
        dedup_source_windows: config
            .storm
            .dedup_overrides
            .sources
            .keys()
            .map(|s| (s.clone(), config.dedup_window_for("", s)))
            .collect(),
        signal_window: config.signal_window(),
        signal_min_impact: config.storm.signal_min_impact,
        mim_window: config.mim_window(),
        team_bucket: BucketConfig {
            burst: config.storm.paging.team.burst,
            per_hour: config.storm.paging.team.per_hour,
        },
        global_bucket: BucketConfig {
            burst: config.storm.paging.global.burst,
            per_hour: config.storm.paging.global.per_hour,
        },
        service_bucket: bucket(config.storm.paging.service),
        service_buckets: config
            .storm
            .paging
            .services
            .iter()
            .map(|(name, b)| (name.clone(), bucket(*b)))
            .collect(),
        breaker: breaker_config(&config.storm.breaker),
        umbrella_team: config.storm.breaker.umbrella_team.clone(),
        group: tg_engine::GroupSettings {
            by: config.storm.group.fields(),
            window: chrono::Duration::seconds(
                i64::try_from(config.storm.group.window_secs).unwrap_or(i64::MAX),
            ),
            notes_max: config.storm.group.notes_max,
        },
        resolve: tg_engine::ResolveSettings {
            page: config.actions.resolve.page,
            ticket: config.actions.resolve.ticket,
        },
    };
    Ok(Pipeline {
        store: store_selection(&config.store, secrets)?,
        run_lease: chrono::Duration::seconds(
            i64::try_from(config.store.run_lease_secs).unwrap_or(i64::MAX / 1_000),
        ),
        disk_free_min_bytes: config.store.disk_free_min_bytes,
        normalize,
        classifier,
        output_retention: config.classifier.output_retention,
        policy: PolicyCell::new(policy),
        storm,
        executor,
        sns,
        summary: build_summary(&config.storm.summary, secrets, global_trust)?,
        outbox: crate::outbox::OutboxSettings::from_config(&config.actions),
        inbound: build_inbound(&config.identity.inbound, &trust)?,
        signed: Arc::new(build_signed(&config.identity.inbound, secrets)?),
        origin_bindings: config.identity.inbound.origins.clone(),
        breaker_tick: (config.storm.breaker.tick_ms > 0)
            .then(|| std::time::Duration::from_millis(config.storm.breaker.tick_ms)),
        audit: crate::audit::settings(config, secrets)?,
        sinks: build_sinks(config, secrets, &trust)?,
        review_expire_after_secs: config.review.expire_after_secs,
        promotion: config.review.promotion.clone(),
        review_notify: config.review.notify,
        review_external_match_secs: config.review.external_match_secs,
        token_sources,
        token_probes,
        console: crate::ui::settings(config, secrets)?,
    })
}

/// `audit.sinks`: one client each (secrets resolved here, never logged).
fn build_sinks(
    config: &Config,
    secrets: &dyn SecretSource,
    trust: &tg_identity::TrustLoader,
) -> anyhow::Result<Vec<Arc<dyn tg_ship::Sink>>> {
    if config.audit.sinks.is_empty() {
        return Ok(Vec::new());
    }
    // Each sink has its own client (its CA roots) and bounds its own requests (`timeout_ms`).
    let sinks =
        tg_ship::build(&config.audit.sinks, secrets, trust).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(sinks.into_iter().map(Arc::from).collect())
}

/// `identity.inbound`: the JWT authenticator (its key set is fetched on first use
/// and kept fresh; see `tg_identity::jwks`).
fn build_inbound(
    c: &tg_config::InboundConfig,
    trust: &tg_identity::TrustLoader,
) -> anyhow::Result<crate::auth::Inbound> {
    use tg_config::InboundMode;
    match c.mode {
        InboundMode::None => {
            tracing::warn!(
                "identity.inbound.mode is none: API callers are not authenticated (drills and tests only)"
            );
            Ok(crate::auth::Inbound::Disabled)
        }
        InboundMode::Jwt => {
            let algorithms = c
                .algorithms
                .iter()
                .map(|a| {
                    tg_identity::jwt::algorithm_from_name(a)
                        .ok_or_else(|| anyhow!("identity.inbound.algorithms: {a:?} is not allowed"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let policy = tg_identity::JwtPolicy {
                issuer: c.issuer.clone().unwrap_or_default(),
                audiences: c.audiences.clone(),
                algorithms,
                leeway_secs: c.leeway_secs,
                required_typ: c.required_typ.clone(),
                max_lifetime_secs: c.max_token_lifetime_secs,
            };
            let jwks = tg_identity::JwksConfig {
                url: c.jwks_url.clone().unwrap_or_default(),
                timeout_ms: c.jwks_timeout_ms,
                max_age_secs: c.jwks_max_age_secs,
                refresh_min_interval_secs: c.jwks_refresh_min_interval_secs,
                stale_max_secs: c.jwks_stale_max_secs,
                tls: trust
                    .for_target("identity.inbound", c.tls.ca_file())
                    .map_err(|e| anyhow!(e))?,
            };
            let auth = tg_identity::Authenticator::new(policy, jwks)
                .map_err(|e| anyhow!("identity.inbound: {e}"))?;
            Ok(crate::auth::Inbound::Jwt(Arc::new(auth)))
        }
    }
}

/// `storm.summary`, with each team's webhook URL read from its secret.
/// `identity.inbound.webhooks`: each sender's secret, read once (at least 32 bytes).
fn build_signed(
    c: &tg_config::InboundConfig,
    secrets: &dyn SecretSource,
) -> anyhow::Result<crate::signed::SignedSources> {
    let mut senders = Vec::new();
    for (i, w) in c.webhooks.iter().enumerate() {
        let secret = secrets
            .read(&w.secret)
            .with_context(|| format!("identity.inbound.webhooks.{i}.secret"))?;
        if secret.expose().len() < 32 {
            anyhow::bail!(
                "identity.inbound.webhooks.{i}.secret: shorter than 32 bytes (use a random 32-byte value or longer)"
            );
        }
        let versions = w
            .signature_versions
            .iter()
            .filter_map(|v| crate::signed::SignatureVersion::parse(v))
            .collect();
        senders.push((w.name.clone(), secret, w.sources.clone(), versions));
    }
    Ok(crate::signed::SignedSources::new(
        senders,
        c.replay_window_secs,
    ))
}

/// Which database `start` (and `triage-gate migrate`) opens.
#[derive(Debug, Clone)]
pub enum StoreSelection {
    /// `triage-gate.sqlite` in the data dir.
    Sqlite,
    Postgres(tg_store::StoreOptions),
}

pub fn store_selection(
    c: &tg_config::StoreConfig,
    secrets: &dyn SecretSource,
) -> anyhow::Result<StoreSelection> {
    if !c.is_postgres() {
        return Ok(StoreSelection::Sqlite);
    }
    let password = c
        .password
        .as_ref()
        .map(|r| secrets.read(r).map(|s| s.expose().to_owned()))
        .transpose()
        .context("store.password")?;
    Ok(StoreSelection::Postgres(tg_store::StoreOptions {
        url: c.url.clone().unwrap_or_default(),
        password,
        pool_max: c.pool_max,
        acquire_timeout: std::time::Duration::from_millis(c.acquire_timeout_ms),
        statement_timeout: std::time::Duration::from_millis(c.statement_timeout_ms),
        tls_mode: c.tls_mode.clone(),
        tls_ca_file: c.tls_ca_file.clone(),
    }))
}

fn build_summary(
    c: &tg_config::SummarySpec,
    secrets: &dyn SecretSource,
    tls: tg_identity::TrustRoots,
) -> anyhow::Result<crate::storm::SummaryConfig> {
    let mut webhooks = BTreeMap::new();
    for (team, r) in &c.webhooks {
        let url = secrets
            .read(r)
            .with_context(|| format!("storm.summary.webhooks.{team}"))?;
        webhooks.insert(team.clone(), url);
    }
    Ok(crate::storm::SummaryConfig {
        interval: chrono::Duration::seconds(
            i64::try_from(c.interval_secs).unwrap_or(i64::MAX / 1000),
        ),
        runs_max: c.runs_max,
        webhooks,
        teams_format: c.format == "teams",
        timeout: std::time::Duration::from_millis(c.timeout_ms),
        tls,
    })
}

/// The classifier: the `default` profile, or a [`tg_classify::Routed`] over
/// every profile when `classifier.profiles` or `classifier.routes` is set.
fn build_classifier(
    c: &tg_config::ClassifierConfig,
    secrets: &dyn SecretSource,
    clock: &Arc<dyn tg_classify::GuardClock>,
    trust: &tg_identity::TrustLoader,
) -> anyhow::Result<Arc<dyn Classifier>> {
    let default = build_profile("classifier", &c.default_profile(), c, secrets, clock, trust)?;
    if c.profiles.is_empty() && c.routes.is_empty() {
        return Ok(default);
    }
    let mut named = BTreeMap::new();
    for (name, p) in &c.profiles {
        let path = format!("classifier.profiles.{name}");
        named.insert(
            name.clone(),
            build_profile(&path, p, c, secrets, clock, trust)?,
        );
    }
    let mut routes = Vec::with_capacity(c.routes.len());
    for (i, r) in c.routes.iter().enumerate() {
        let mut environments = std::collections::BTreeSet::new();
        for (j, label) in r.environments.iter().enumerate() {
            let env = tg_config::route_environment(label).ok_or_else(|| {
                anyhow!("classifier.routes[{i}].environments[{j}]: {label:?} names no environment")
            })?;
            environments.insert(env);
        }
        routes.push(tg_classify::Route {
            environments,
            services: r.services.iter().cloned().collect(),
            profile: r.profile.clone(),
        });
    }
    let routed =
        tg_classify::Routed::new(default, named, routes).map_err(|e| anyhow!("classifier.{e}"))?;
    Ok(Arc::new(routed))
}

/// One profile's classifier; `path` prefixes every error (`classifier`,
/// `classifier.profiles.<name>`).
fn build_profile(
    path: &str,
    p: &tg_config::ProfileConfig,
    c: &tg_config::ClassifierConfig,
    secrets: &dyn SecretSource,
    clock: &Arc<dyn tg_classify::GuardClock>,
    trust: &tg_identity::TrustLoader,
) -> anyhow::Result<Arc<dyn Classifier>> {
    let tls = |provider: &str, own: &tg_config::TlsTrust| {
        trust
            .for_target(&format!("{path}.{provider}"), own.ca_file())
            .map_err(|e| anyhow!(e))
    };
    let rules = || -> anyhow::Result<tg_classify::RulesClassifier> {
        let rules = match &c.rules {
            Some(v) => serde_json::from_value(v.clone()).context("classifier.rules")?,
            None => tg_classify::RulesClassifier::default_config(),
        };
        tg_classify::RulesClassifier::new(rules).map_err(|e| anyhow!("classifier.rules: {e}"))
    };
    let guard = tg_classify::GuardConfig {
        cache_ttl_secs: p.guard.cache_ttl_secs,
        cache_entries_max: usize::try_from(p.guard.cache_entries_max).unwrap_or(usize::MAX),
        concurrency_max: usize::try_from(p.guard.concurrency_max).unwrap_or(usize::MAX),
        permit_wait_ms: p.guard.permit_wait_ms,
        calls_per_minute: u32::try_from(p.guard.calls_per_minute).unwrap_or(u32::MAX),
        call_timeout_ms: p.guard.call_timeout_ms,
        breaker_failures: u32::try_from(p.guard.breaker_failures).unwrap_or(u32::MAX),
        breaker_cooldown_secs: p.guard.breaker_cooldown_secs,
    };
    let fallback: Option<Arc<dyn Classifier>> = match p.guard.fallback {
        tg_config::FallbackKind::None => None,
        tg_config::FallbackKind::Rules => Some(Arc::new(rules()?)),
    };
    let guarded = |inner: Box<dyn GuardedInner>| -> anyhow::Result<Arc<dyn Classifier>> {
        inner
            .guard(guard, clock.clone(), fallback.clone())
            .map_err(|e| anyhow!("{path}.guard.{e}"))
    };
    let retry = |timeout_ms: u64, retries_max: u32| tg_classify::RetryPolicy {
        timeout_ms,
        retries_max,
        ..tg_classify::RetryPolicy::default()
    };
    Ok(match p.provider {
        ProviderKind::Rules => Arc::new(rules()?),
        ProviderKind::Anthropic => {
            let a = p
                .anthropic
                .as_ref()
                .ok_or_else(|| anyhow!("{path}.anthropic is missing"))?;
            let key = secrets
                .read(&a.api_key)
                .with_context(|| format!("{path}.anthropic.api_key"))?;
            let mut ac = tg_classify::AnthropicConfig::new(a.model.clone(), key);
            ac.base_url = a.base_url.clone();
            ac.timeout_ms = a.timeout_ms;
            ac.max_tokens = a.max_tokens;
            ac.retries_max = a.retries_max;
            ac.reask = p.reask;
            ac.tls = tls("anthropic", &a.tls)?;
            let inner = tg_classify::AnthropicClassifier::new(ac)
                .map_err(|e| anyhow!("{path}.anthropic: {e}"))?;
            guarded(Box::new(inner))?
        }
        ProviderKind::Bedrock => {
            let b = p
                .bedrock
                .as_ref()
                .ok_or_else(|| anyhow!("{path}.bedrock is missing"))?;
            let roots = tls("bedrock", &b.tls)?;
            let credentials = aws_credentials(path, b, secrets, &roots)?;
            let mut bc =
                tg_classify::BedrockConfig::new(b.region.clone(), b.model_id.clone(), credentials);
            bc.base_url = b.base_url.clone();
            bc.max_tokens = b.max_tokens;
            bc.retry = retry(b.timeout_ms, b.retries_max);
            bc.reask = p.reask;
            bc.tls = roots;
            let inner = tg_classify::BedrockClassifier::new(bc)
                .map_err(|e| anyhow!("{path}.bedrock: {e}"))?;
            guarded(Box::new(inner))?
        }
        ProviderKind::OpenAi => {
            let o = p
                .openai
                .as_ref()
                .ok_or_else(|| anyhow!("{path}.openai is missing"))?;
            let mut oc = tg_classify::OpenAiConfig::new(o.base_url.clone(), o.model.clone());
            oc.api_key = match &o.api_key {
                Some(r) => Some(
                    secrets
                        .read(r)
                        .with_context(|| format!("{path}.openai.api_key"))?,
                ),
                None => None,
            };
            oc.max_tokens = o.max_tokens;
            oc.retry = retry(o.timeout_ms, o.retries_max);
            oc.reask = p.reask;
            oc.tls = tls("openai", &o.tls)?;
            let inner = tg_classify::OpenAiClassifier::new(oc)
                .map_err(|e| anyhow!("{path}.openai: {e}"))?;
            guarded(Box::new(inner))?
        }
    })
}

/// A provider that can be put behind a [`tg_classify::Guarded`] (object-safe,
/// so one closure wraps every provider type).
trait GuardedInner {
    fn guard(
        self: Box<Self>,
        config: tg_classify::GuardConfig,
        clock: Arc<dyn tg_classify::GuardClock>,
        fallback: Option<Arc<dyn Classifier>>,
    ) -> Result<Arc<dyn Classifier>, tg_classify::guard::GuardError>;
}

impl<C: Classifier + 'static> GuardedInner for C {
    fn guard(
        self: Box<Self>,
        config: tg_classify::GuardConfig,
        clock: Arc<dyn tg_classify::GuardClock>,
        fallback: Option<Arc<dyn Classifier>>,
    ) -> Result<Arc<dyn Classifier>, tg_classify::guard::GuardError> {
        Ok(Arc::new(tg_classify::Guarded::new(
            *self, config, clock, fallback,
        )?))
    }
}

/// Names of the standard AWS web-identity variables (read through the secret
/// source, like every other credential reference).
const AWS_WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
const AWS_ROLE_ARN: &str = "AWS_ROLE_ARN";
const AWS_ROLE_SESSION_NAME: &str = "AWS_ROLE_SESSION_NAME";

/// Bedrock's credentials, in the order of the AWS SDKs' chain: an explicit
/// `web_identity` block; else the static keys; else, when the access key is
/// unset, `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (+ `AWS_ROLE_SESSION_NAME`).
/// The STS endpoint is regional (`bedrock.region`) unless `sts_base_url` is set.
fn aws_credentials(
    path: &str,
    b: &tg_config::BedrockConfig,
    secrets: &dyn SecretSource,
    tls: &tg_identity::TrustRoots,
) -> anyhow::Result<tg_classify::AwsCredentialSource> {
    let r = &b.credentials;
    let cpath = format!("{path}.bedrock.credentials");
    if let Some(w) = &r.web_identity {
        let mut wc = tg_classify::WebIdentityConfig::new(
            w.token_file.clone(),
            w.role_arn.clone(),
            &b.region,
        );
        wc.session_name = w.session_name.clone();
        if let Some(u) = &w.sts_base_url {
            wc.sts_base_url = u.clone();
        }
        wc.duration_secs = w.duration_secs;
        wc.timeout_ms = w.timeout_ms;
        wc.tls = tls.clone();
        return Ok(wc.into());
    }
    let optional = |name: &str| -> anyhow::Result<Option<String>> {
        match secrets.read(&tg_config::SecretRef::Env(name.into())) {
            Ok(v) => Ok(Some(v.expose().to_owned())),
            Err(tg_config::SecretError::Missing(_)) => Ok(None),
            Err(e) => Err(anyhow!("{cpath}: {name}: {e}")),
        }
    };
    let access_key_id = match secrets.read(&r.access_key_id) {
        Ok(v) => v,
        Err(tg_config::SecretError::Missing(missing)) => {
            let file = optional(AWS_WEB_IDENTITY_TOKEN_FILE)?;
            let role = optional(AWS_ROLE_ARN)?;
            let (Some(file), Some(role)) = (file, role) else {
                return Err(anyhow!(
                    "{cpath}.access_key_id: {missing} is not set, and neither are {AWS_WEB_IDENTITY_TOKEN_FILE} and {AWS_ROLE_ARN} (web identity)"
                ));
            };
            let mut wc = tg_classify::WebIdentityConfig::new(file.into(), role, &b.region);
            wc.tls = tls.clone();
            if let Some(name) = optional(AWS_ROLE_SESSION_NAME)? {
                wc.session_name = name;
            }
            tracing::info!(role_arn = %wc.role_arn, "bedrock credentials: web identity from the environment");
            return Ok(wc.into());
        }
        Err(e) => return Err(anyhow!("{cpath}.access_key_id: {e}")),
    };
    let credentials = tg_classify::AwsCredentials {
        access_key_id,
        secret_access_key: secrets
            .read(&r.secret_access_key)
            .with_context(|| format!("{cpath}.secret_access_key"))?,
        // Temporary credentials only: an unset token means long-term keys.
        session_token: match &r.session_token {
            Some(t) => match secrets.read(t) {
                Ok(v) => Some(v),
                Err(tg_config::SecretError::Missing(_)) => None,
                Err(e) => return Err(anyhow!("{cpath}.session_token: {e}")),
            },
            None => None,
        },
    };
    Ok(credentials.into())
}

fn build_sns(
    c: &tg_config::SnsSourceConfig,
    tls: &tg_identity::TrustRoots,
) -> anyhow::Result<crate::sns::SnsVerifier> {
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
        tls: tls.clone(),
    };
    crate::sns::SnsVerifier::new(settings).context("sources.sns: http client")
}

/// `tokens` receives each OAuth token source built, by target.
fn build_executor(
    config: &Config,
    secrets: &dyn SecretSource,
    clock: &Arc<dyn tg_identity::IdentityClock>,
    trust: &tg_identity::TrustLoader,
    tokens: &mut TokenSources,
) -> anyhow::Result<tg_actions::Executor> {
    use tg_actions::{
        BridgeConfig, BridgeFormat, PagerDutyConfig, PagerDutyRegion, RetryPolicy,
        ServiceNowConfig, SignedWebhook,
    };
    let a = &config.actions;
    let target_trust = |prefix: &str, own: &tg_config::TlsTrust| {
        trust
            .for_target(prefix, own.ca_file())
            .map_err(|e| anyhow!(e))
    };
    let servicenow = match &a.servicenow {
        Some(sn) => {
            // The instance and its OAuth token endpoint trust the same roots.
            let tls = target_trust("actions.servicenow", &sn.tls)?;
            Some(ServiceNowConfig {
                base_url: sn.base_url.clone(),
                auth: servicenow_auth(sn, secrets, clock, &tls)?,
                assignment_groups: sn.assignment_groups.clone(),
                caller_id: sn.caller_id.clone(),
                close_code: sn.resolve.close_code.clone(),
                timeout_ms: sn.timeout_ms,
                tls,
            })
        }
        None => None,
    };
    let pagerduty = match &a.pagerduty {
        Some(pd) => {
            let tls = target_trust("actions.pagerduty", &pd.tls)?;
            let mut keys = BTreeMap::new();
            for (team, r) in &pd.routing_keys {
                let k = secrets
                    .read(r)
                    .with_context(|| format!("actions.pagerduty.routing_keys.{team}"))?;
                keys.insert(team.clone(), k);
            }
            let region = match pd.region {
                tg_config::PagerDutyRegionConfig::Us => PagerDutyRegion::Us,
                tg_config::PagerDutyRegionConfig::Eu => PagerDutyRegion::Eu,
            };
            let rest = match (pd.api, &pd.rest) {
                (tg_config::PagerDutyApiConfig::Rest, Some(r)) => {
                    Some(build_pagerduty_rest(region, r, secrets, clock, &tls)?)
                }
                (tg_config::PagerDutyApiConfig::Rest, None) => {
                    return Err(anyhow!("actions.pagerduty.api: rest needs a rest section"));
                }
                (tg_config::PagerDutyApiConfig::Events, _) => None,
            };
            Some(PagerDutyConfig {
                rest,
                // An explicit base URL (a proxy, the sandbox) wins over the region.
                base_url: region.events_url(pd.base_url.as_deref()),
                routing_keys: keys,
                timeout_ms: pd.timeout_ms,
                tls,
            })
        }
        None => None,
    };
    let bridge = match &a.bridge {
        Some(b) => Some(BridgeConfig {
            webhook_url: match &b.webhook_url {
                Some(r) => {
                    let url = secrets.read(r).context("actions.bridge.webhook_url")?;
                    // Checked here to name the key (the value is a secret: never
                    // shown, so neither is the parser's message that quotes it).
                    tg_config::urls::outbound(url.expose()).map_err(|_| {
                        anyhow!(
                            "actions.bridge.webhook_url: not an http(s) URL with a host and without user info"
                        )
                    })?;
                    Some(url)
                }
                None => None,
            },
            webhooks: b
                .webhooks
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    Ok(SignedWebhook {
                        name: w.name.clone(),
                        url: w.url.clone(),
                        secret: secrets
                            .read(&w.secret)
                            .with_context(|| format!("actions.bridge.webhooks[{i}].secret"))?,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            format: match b.format {
                tg_config::BridgeFormatConfig::Slack => BridgeFormat::Slack,
                tg_config::BridgeFormatConfig::Teams => BridgeFormat::Teams,
            },
            conference_url: b.conference_url.clone(),
            timeout_ms: b.timeout_ms,
            tls: target_trust("actions.bridge", &b.tls)?,
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
    if let Some(ServiceNowConfig {
        auth: tg_actions::ServiceNowAuth::OAuth(source),
        ..
    }) = &servicenow
    {
        tokens.push((tg_actions::TARGET_SERVICENOW.to_owned(), source.clone()));
    }
    if let Some(rest) = pagerduty.as_ref().and_then(|p| p.rest.as_ref()) {
        tokens.push((tg_actions::TARGET_PAGERDUTY.to_owned(), rest.tokens.clone()));
    }
    tg_actions::Executor::new(servicenow, pagerduty, bridge, retry)
        .map_err(|e| anyhow!("actions: {e}"))
}

/// `actions.pagerduty.rest`: the REST base URL and a client-credentials token
/// source scoped to the account and to incidents only.
/// The ServiceNow credential: a static token, or an OAuth client-credentials
/// token source (secret or private key read once, here; both wiped on drop).
fn servicenow_auth(
    sn: &tg_config::ServiceNowTarget,
    secrets: &dyn SecretSource,
    clock: &Arc<dyn tg_identity::IdentityClock>,
    tls: &tg_identity::TrustRoots,
) -> anyhow::Result<tg_actions::ServiceNowAuth> {
    let oauth = match (&sn.token, &sn.auth) {
        (Some(token), None) => {
            return Ok(tg_actions::ServiceNowAuth::Token(
                secrets.read(token).context("actions.servicenow.token")?,
            ));
        }
        (None, Some(auth)) => &auth.oauth,
        _ => {
            return Err(anyhow!(
                "actions.servicenow: set exactly one of token or auth.oauth"
            ));
        }
    };
    let auth = match (&oauth.client_secret, &oauth.private_key) {
        (Some(r), None) => {
            let secret = secrets
                .read(r)
                .context("actions.servicenow.auth.oauth.client_secret")?;
            match oauth.client_secret_method {
                tg_config::ClientSecretMethod::Post => {
                    tg_identity::ClientAuth::SecretPost { secret }
                }
                tg_config::ClientSecretMethod::Basic => {
                    tg_identity::ClientAuth::SecretBasic { secret }
                }
            }
        }
        (None, Some(r)) => {
            let pem = secrets
                .read(r)
                .context("actions.servicenow.auth.oauth.private_key")?;
            let alg = match oauth.private_key_alg.as_str() {
                "ES256" => tg_identity::Algorithm::ES256,
                _ => tg_identity::Algorithm::RS256,
            };
            tg_identity::ClientAuth::private_key_jwt(&pem, alg, oauth.key_id.clone())
                .map_err(|e| anyhow!("actions.servicenow.auth.oauth.private_key: {e}"))?
        }
        _ => {
            return Err(anyhow!(
                "actions.servicenow.auth.oauth: set exactly one of client_secret or private_key"
            ));
        }
    };
    let tokens = tg_identity::TokenSource::new(tg_identity::ClientCredentials {
        token_url: oauth.token_url(&sn.base_url),
        client_id: oauth.client_id.clone(),
        auth,
        scopes: oauth
            .scope
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        extra: Vec::new(),
        timeout_ms: oauth.timeout_ms,
        refresh_margin_secs: i64::try_from(oauth.refresh_margin_secs).unwrap_or(i64::MAX),
        tls: tls.clone(),
    })
    .map_err(|e| anyhow!("actions.servicenow.auth.oauth: {e}"))?
    .with_clock(clock.clone());
    Ok(tg_actions::ServiceNowAuth::OAuth(Arc::new(tokens)))
}

fn build_pagerduty_rest(
    region: tg_actions::PagerDutyRegion,
    r: &tg_config::PagerDutyRestTarget,
    secrets: &dyn SecretSource,
    clock: &Arc<dyn tg_identity::IdentityClock>,
    tls: &tg_identity::TrustRoots,
) -> anyhow::Result<tg_actions::PagerDutyRest> {
    let secret = secrets
        .read(&r.oauth.client_secret)
        .context("actions.pagerduty.rest.oauth.client_secret")?;
    let tokens = tg_identity::TokenSource::new(tg_identity::ClientCredentials {
        token_url: r.oauth.token_url.clone(),
        client_id: r.oauth.client_id.clone(),
        auth: tg_identity::ClientAuth::SecretPost { secret },
        scopes: vec![
            format!("as_account-{}.{}", region.as_str(), r.oauth.subdomain),
            "incidents.read".into(),
            "incidents.write".into(),
        ],
        extra: Vec::new(),
        timeout_ms: r.oauth.timeout_ms,
        refresh_margin_secs: 300,
        tls: tls.clone(),
    })
    .map_err(|e| anyhow!("actions.pagerduty.rest.oauth: {e}"))?
    .with_clock(clock.clone());
    Ok(tg_actions::PagerDutyRest {
        base_url: region.api_url(r.base_url.as_deref()),
        from: r.from.clone(),
        service_ids: r.service_ids.clone(),
        tokens: Arc::new(tokens),
    })
}

fn bucket(b: tg_config::BucketSpec) -> BucketConfig {
    BucketConfig {
        burst: b.burst,
        per_hour: b.per_hour,
    }
}

/// `storm.breaker` as the storm crate's config (values already validated).
pub fn breaker_config(b: &tg_config::BreakerSpec) -> tg_storm::BreakerConfig {
    let secs = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
    tg_storm::BreakerConfig {
        open_services: b.open_services,
        open_catalog_percent: b.open_catalog_percent,
        close_services: b.close_services,
        cooldown: secs(b.cooldown_secs),
        window: secs(b.window_secs),
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "tests: a failed unwrap is a failed test"
    )]

    use super::*;
    use tg_config::{MapSecrets, SecretRef};

    const YAML: &str = "\
actions:
  servicenow:
    base_url: https://acme.service-now.com
    token: { env: SN_TOKEN }
    resolve: { close_code: Resolved by Caller }
  pagerduty:
    region: eu
    api: rest
    rest:
      from: mi-bot@example.com
      service_ids: {}
      oauth:
        client_id: app-1
        client_secret: { env: PD_CLIENT_SECRET }
        subdomain: acme
  bridge:
    webhooks:
      - name: mim-bot
        url: https://bot.example.com/hook
        secret: { env: MIM_BOT_SECRET }
";

    fn secrets() -> MapSecrets {
        MapSecrets::default()
            .with(&SecretRef::Env("SN_TOKEN".into()), "sn-token-0123456789")
            .with(
                &SecretRef::Env("PD_CLIENT_SECRET".into()),
                "pd-client-secret-0123456789",
            )
            .with(
                &SecretRef::Env("MIM_BOT_SECRET".into()),
                "whsec-0123456789abcdef0123456789abcdef",
            )
    }

    /// `build_executor` with the wall clock, and the token sources it built.
    fn executor(
        config: &Config,
        secrets: &MapSecrets,
    ) -> anyhow::Result<(tg_actions::Executor, TokenSources)> {
        let clock: Arc<dyn tg_identity::IdentityClock> = Arc::new(tg_identity::SystemIdentityClock);
        let mut tokens = Vec::new();
        let trust = tg_identity::TrustLoader::new(config.tls.ca_file());
        let exec = build_executor(config, secrets, &clock, &trust, &mut tokens)?;
        Ok((exec, tokens))
    }

    #[test]
    fn targets_are_built_from_the_actions_section() {
        let config = Config::from_yaml(YAML, "gate.yaml").unwrap();
        let (exec, tokens) = executor(&config, &secrets()).unwrap();
        // PagerDuty REST's token source is known to readiness; ServiceNow uses a static token.
        let targets: Vec<&str> = tokens.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(targets, ["pagerduty"]);
        let shown = format!("{exec:?}");
        for want in [
            "https://events.eu.pagerduty.com",
            "https://api.eu.pagerduty.com",
            "as_account-eu.acme",
            "incidents.write",
            "https://identity.pagerduty.com/oauth/token",
            "Resolved by Caller",
            "mim-bot",
        ] {
            assert!(shown.contains(want), "{want} missing from {shown}");
        }
        for secret in [
            "sn-token-0123456789",
            "pd-client-secret-0123456789",
            "whsec-0123456789abcdef",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
    }

    #[test]
    fn an_explicit_base_url_wins_and_a_missing_secret_is_named() {
        let yaml = YAML.replace(
            "    region: eu\n",
            "    region: eu\n    base_url: http://127.0.0.1:9/pagerduty\n",
        );
        let config = Config::from_yaml(&yaml, "gate.yaml").unwrap();
        let shown = format!("{:?}", executor(&config, &secrets()).unwrap().0);
        assert!(shown.contains("http://127.0.0.1:9/pagerduty"), "{shown}");
        assert!(
            !shown.contains("https://events.eu.pagerduty.com"),
            "{shown}"
        );

        let partial = MapSecrets::default()
            .with(&SecretRef::Env("SN_TOKEN".into()), "sn-token-0123456789")
            .with(
                &SecretRef::Env("PD_CLIENT_SECRET".into()),
                "pd-client-secret-0123456789",
            );
        let err = format!("{:#}", executor(&config, &partial).unwrap_err());
        assert!(err.contains("actions.bridge.webhooks[0].secret"), "{err}");
    }
}
