//! The executor: configuration, validation, and carrying out one planned action.

use std::collections::BTreeMap;
use std::future::Future;

use tg_model::{ActionKind, ActionResult, ActionStatus, PlannedAction};

use crate::bridge::{self, Announcement};
use crate::error::{ConfigError, TargetError};
use crate::pagerduty;
use crate::retry::RetryPolicy;
use crate::secret::{Redactor, Secret};
use crate::servicenow::{self, Incident};

/// Longest request timeout a target may configure, in milliseconds.
pub const TIMEOUT_MS_MAX: u64 = 120_000;
/// Shortest secret accepted: shorter ones could not be scrubbed from text safely.
const SECRET_CHARS_MIN: usize = 8;

/// One attempt at an action: the result, and the error when it failed.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// `Delivered`, or `Failed` with a scrubbed error text.
    pub result: ActionResult,
    /// The failure and its class; `None` when delivered. Its text is scrubbed
    /// the same way `result.error` is before it is stored or logged.
    pub error: Option<TargetError>,
}

/// Whether the executor retries in-process or makes exactly one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Retry,
    Once,
}

/// `ActionResult::target` values.
pub const TARGET_SERVICENOW: &str = "servicenow";
pub const TARGET_PAGERDUTY: &str = "pagerduty";
pub const TARGET_BRIDGE: &str = "bridge";
pub const TARGET_SERVICENOW_BRIDGE: &str = "servicenow+bridge";

/// ServiceNow Table API access.
#[derive(Debug, Clone)]
pub struct ServiceNowConfig {
    /// `https://<instance>.service-now.com`, no path.
    pub base_url: String,
    /// Bearer token (OAuth client credentials come later).
    pub token: Secret,
    /// Team name -> assignment group (sys_id, or name when the instance accepts it).
    pub assignment_groups: BTreeMap<String, String>,
    pub caller_id: Option<String>,
    /// Per request.
    pub timeout_ms: u64,
}

/// PagerDuty Events API v2 access.
#[derive(Debug, Clone)]
pub struct PagerDutyConfig {
    /// `https://events.pagerduty.com` (or the EU host).
    pub base_url: String,
    /// Team name -> integration (routing) key.
    pub routing_keys: BTreeMap<String, Secret>,
    /// Per request.
    pub timeout_ms: u64,
}

/// The chat flavour of the major-incident bridge webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeFormat {
    /// Slack incoming webhook: `{"text", "blocks"}`.
    Slack,
    /// Teams Workflows webhook: an Adaptive Card message envelope.
    Teams,
}

/// The major-incident chat announcement.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The webhook URL is itself the credential.
    pub webhook_url: Secret,
    pub format: BridgeFormat,
    /// The standing conference bridge people should join.
    pub conference_url: Option<String>,
    /// Per request.
    pub timeout_ms: u64,
}

/// Carries out planned actions against the configured targets.
#[derive(Debug, Clone)]
pub struct Executor {
    client: reqwest::Client,
    servicenow: Option<ServiceNowConfig>,
    pagerduty: Option<PagerDutyConfig>,
    bridge: Option<BridgeConfig>,
    retry: RetryPolicy,
    redact: Redactor,
}

fn check_base_url(which: &'static str, url: &str) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::BaseUrl {
        which,
        url: url.to_owned(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!("scheme {:?} is not http(s)", parsed.scheme())));
    }
    if parsed.query().is_some() {
        return Err(bad("it must not have a query".into()));
    }
    Ok(())
}

fn check_timeout(which: &'static str, value: u64) -> Result<(), ConfigError> {
    if (1..=TIMEOUT_MS_MAX).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Timeout {
            which,
            value,
            max: TIMEOUT_MS_MAX,
        })
    }
}

fn check_secret(which: &'static str, name: &str, secret: &Secret) -> Result<(), ConfigError> {
    if secret.expose().chars().count() < SECRET_CHARS_MIN {
        return Err(ConfigError::ShortSecret {
            which,
            name: name.to_owned(),
            min: SECRET_CHARS_MIN,
        });
    }
    Ok(())
}

impl Executor {
    /// Validates the configuration and builds the HTTP client. A target left
    /// `None` makes its actions fail permanently with "not configured".
    pub fn new(
        servicenow: Option<ServiceNowConfig>,
        pagerduty: Option<PagerDutyConfig>,
        bridge: Option<BridgeConfig>,
        retry: RetryPolicy,
    ) -> Result<Self, ConfigError> {
        retry.validate()?;
        let mut redact = Redactor::default();
        if let Some(c) = &servicenow {
            check_base_url("servicenow", &c.base_url)?;
            check_timeout("servicenow", c.timeout_ms)?;
            check_secret("servicenow", "token", &c.token)?;
            redact.add(&c.token);
        }
        if let Some(c) = &pagerduty {
            check_base_url("pagerduty", &c.base_url)?;
            check_timeout("pagerduty", c.timeout_ms)?;
            for (team, key) in &c.routing_keys {
                check_secret("pagerduty routing key", team, key)?;
                redact.add(key);
            }
        }
        if let Some(c) = &bridge {
            // The URL is the secret: the parse error must not echo it.
            let parsed = reqwest::Url::parse(c.webhook_url.expose()).map_err(|e| {
                ConfigError::WebhookUrl {
                    reason: e.to_string(),
                }
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::WebhookUrl {
                    reason: "scheme is not http(s)".into(),
                });
            }
            check_timeout("bridge", c.timeout_ms)?;
            check_secret("bridge", "webhook_url", &c.webhook_url)?;
            redact.add(&c.webhook_url);
        }
        let client = reqwest::Client::builder()
            // A redirect would carry the bearer token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("triage-gate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Client(e.without_url().to_string()))?;
        Ok(Executor {
            client,
            servicenow,
            pagerduty,
            bridge,
            retry,
            redact,
        })
    }

    /// Carries out one action with bounded in-process retries (for one-off use:
    /// the server's outbox calls [`Executor::attempt`] and schedules retries
    /// itself, durably). Never panics and never returns an error: failure is an
    /// `ActionResult` with status `Failed`.
    pub async fn execute(&self, action: &PlannedAction) -> ActionResult {
        let (result, _) = self.carry_out(action, Mode::Retry).await;
        result
    }

    /// Exactly one attempt (one try per step: ServiceNow lookup-then-create,
    /// PagerDuty enqueue, bridge post), no waiting. `error` says why it failed and
    /// its class (and any Retry-After), so the caller can schedule the next one.
    /// Idempotent per action: a repeat finds the incident (by `correlation_id`)
    /// or is deduplicated (by `dedup_key`).
    pub async fn attempt(&self, action: &PlannedAction) -> Attempt {
        let (result, error) = self.carry_out(action, Mode::Once).await;
        Attempt { result, error }
    }

    async fn carry_out(
        &self,
        action: &PlannedAction,
        mode: Mode,
    ) -> (ActionResult, Option<TargetError>) {
        let (result, error) = match action.kind {
            ActionKind::Ticket => self.ticket(action, mode).await,
            ActionKind::Page => self.page(action, mode).await,
            ActionKind::Mim => self.mim(action, mode).await,
        };
        tracing::info!(
            kind = action.kind.as_str(),
            run_id = %action.run_id,
            idempotency_key = %action.idempotency_key,
            status = ?result.status,
            attempts = result.attempts,
            error = result.error.as_deref().unwrap_or(""),
            "action carried out"
        );
        (result, error)
    }

    /// One try, or the policy's retry loop.
    async fn call<T, F, Fut>(
        &self,
        mode: Mode,
        key: &str,
        mut op: F,
    ) -> (Result<T, TargetError>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, TargetError>>,
    {
        match mode {
            Mode::Retry => self.retry.run(key, op).await,
            Mode::Once => (op().await, 1),
        }
    }

    /// Resolves the PagerDuty alert opened with `dedup_key` for `team`.
    pub async fn resolve_page(&self, team: &str, dedup_key: &str) -> ActionResult {
        let mut result = blank(ActionKind::Page, TARGET_PAGERDUTY);
        let Some(cfg) = &self.pagerduty else {
            return self.failed(result, &not_configured(TARGET_PAGERDUTY), 0);
        };
        let body = match pagerduty::routing_key(cfg, team)
            .and_then(|key| pagerduty::resolve_body(key, dedup_key))
        {
            Ok(b) => b,
            Err(e) => return self.failed(result, &e, 0),
        };
        let (outcome, attempts) = self
            .retry
            .run(dedup_key, || {
                pagerduty::enqueue(&self.client, cfg, &self.redact, &body)
            })
            .await;
        match outcome {
            Ok(key) => {
                result
                    .external_ids
                    .insert("pagerduty_dedup_key".into(), key);
                delivered(result, attempts)
            }
            Err(e) => self.failed(result, &e, attempts),
        }
    }

    async fn ticket(
        &self,
        action: &PlannedAction,
        mode: Mode,
    ) -> (ActionResult, Option<TargetError>) {
        let result = blank(ActionKind::Ticket, TARGET_SERVICENOW);
        let Some(cfg) = &self.servicenow else {
            return self.failed_with(result, not_configured(TARGET_SERVICENOW), 0);
        };
        let (outcome, attempts) = self.incident(cfg, action, false, mode).await;
        match outcome {
            Ok(incident) => (delivered(with_incident(result, &incident), attempts), None),
            Err(e) => self.failed_with(result, e, attempts),
        }
    }

    async fn page(
        &self,
        action: &PlannedAction,
        mode: Mode,
    ) -> (ActionResult, Option<TargetError>) {
        let mut result = blank(ActionKind::Page, TARGET_PAGERDUTY);
        let Some(cfg) = &self.pagerduty else {
            return self.failed_with(result, not_configured(TARGET_PAGERDUTY), 0);
        };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = match pagerduty::routing_key(cfg, &action.team)
            .and_then(|key| pagerduty::trigger_body(action, key, &now))
        {
            Ok(b) => b,
            Err(e) => return self.failed_with(result, e, 0),
        };
        let (outcome, attempts) = self
            .call(mode, &action.idempotency_key, || {
                pagerduty::enqueue(&self.client, cfg, &self.redact, &body)
            })
            .await;
        match outcome {
            Ok(key) => {
                result
                    .external_ids
                    .insert("pagerduty_dedup_key".into(), key);
                (delivered(result, attempts), None)
            }
            Err(e) => self.failed_with(result, e, attempts),
        }
    }

    /// Incident proposed as major, then the bridge announcement. A retry of the
    /// whole action finds the incident by correlation_id and only re-announces.
    async fn mim(&self, action: &PlannedAction, mode: Mode) -> (ActionResult, Option<TargetError>) {
        let result = blank(ActionKind::Mim, TARGET_SERVICENOW_BRIDGE);
        let (Some(snow), Some(bridge_cfg)) = (&self.servicenow, &self.bridge) else {
            let missing = if self.servicenow.is_none() {
                TARGET_SERVICENOW
            } else {
                TARGET_BRIDGE
            };
            return self.failed_with(result, not_configured(missing), 0);
        };
        let (outcome, snow_attempts) = self.incident(snow, action, true, mode).await;
        let incident = match outcome {
            Ok(i) => i,
            Err(e) => return self.failed_with(result, e, snow_attempts),
        };
        let mut result = with_incident(result, &incident);
        let incident_url = servicenow::incident_link(snow, &incident.sys_id);
        let body = bridge::payload(
            bridge_cfg.format,
            &Announcement {
                action,
                incident_number: &incident.number,
                incident_url: &incident_url,
                conference_url: bridge_cfg.conference_url.as_deref(),
            },
        );
        let key = format!("{}:bridge", action.idempotency_key);
        let (posted, bridge_attempts) = self
            .call(mode, &key, || {
                bridge::post(&self.client, bridge_cfg, &self.redact, &body)
            })
            .await;
        let attempts = match mode {
            Mode::Retry => snow_attempts.saturating_add(bridge_attempts),
            Mode::Once => 1,
        };
        match posted {
            Ok(()) => {
                result.external_ids.insert("bridge".into(), "posted".into());
                (delivered(result, attempts), None)
            }
            Err(e) => self.failed_with(result, e, attempts),
        }
    }

    async fn incident(
        &self,
        cfg: &ServiceNowConfig,
        action: &PlannedAction,
        major: bool,
        mode: Mode,
    ) -> (Result<Incident, TargetError>, u32) {
        // Input errors (no group, bad key) are permanent: fail before any request.
        if let Err(e) = servicenow::incident_body(cfg, action, major) {
            return (Err(e), 0);
        }
        self.call(mode, &action.idempotency_key, || {
            servicenow::ensure_incident(&self.client, cfg, &self.redact, action, major)
        })
        .await
    }

    fn failed_with(
        &self,
        result: ActionResult,
        err: TargetError,
        attempts: u32,
    ) -> (ActionResult, Option<TargetError>) {
        (self.failed(result, &err, attempts), Some(err))
    }

    fn failed(&self, mut result: ActionResult, err: &TargetError, attempts: u32) -> ActionResult {
        result.status = ActionStatus::Failed;
        result.attempts = attempts;
        // Scrubbed once more here: nothing that leaves the executor names a secret.
        result.error = Some(self.redact.scrub(&err.to_string()));
        result
    }
}

fn not_configured(target: &'static str) -> TargetError {
    TargetError::permanent(target, format!("{target} is not configured"))
}

fn blank(kind: ActionKind, target: &str) -> ActionResult {
    ActionResult {
        action: kind,
        status: ActionStatus::Pending,
        target: Some(target.to_owned()),
        external_ids: BTreeMap::new(),
        attempts: 0,
        error: None,
    }
}

fn with_incident(mut result: ActionResult, incident: &Incident) -> ActionResult {
    result
        .external_ids
        .insert("servicenow_sys_id".into(), incident.sys_id.clone());
    result
        .external_ids
        .insert("servicenow_number".into(), incident.number.clone());
    result
}

fn delivered(mut result: ActionResult, attempts: u32) -> ActionResult {
    result.status = ActionStatus::Delivered;
    result.attempts = attempts;
    result
}
