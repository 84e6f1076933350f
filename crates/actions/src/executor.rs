//! The executor: configuration, validation, and carrying out one planned action.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tg_identity::{TokenSource, TrustRoots};

use tg_model::{ActionKind, ActionOp, ActionResult, ActionStatus, PlannedAction};

use crate::bridge::{self, Announcement};
use crate::error::{ConfigError, TargetError};
use crate::pagerduty;
use crate::pagerduty_rest::{self, PagerDutyRest, RestIncident, RestResolve};
use crate::retry::RetryPolicy;
use crate::secret::{Redactor, Secret};
use crate::servicenow::{self, Incident, NoteOutcome, ResolveOutcome};

/// Longest request timeout a target may configure, in milliseconds.
pub const TIMEOUT_MS_MAX: u64 = 120_000;
/// Shortest secret accepted: shorter ones could not be scrubbed from text safely.
const SECRET_CHARS_MIN: usize = 8;
/// Signed webhooks one bridge may post to.
pub const BRIDGE_WEBHOOKS_MAX: usize = 8;
/// Shortest signing secret of a signed webhook (32 characters: 128 bits and
/// more of entropy from `openssl rand -hex 32`, which gives 64).
pub const WEBHOOK_SECRET_CHARS_MIN: usize = 32;
/// Longest name of a signed webhook (`[A-Za-z0-9_-]`).
pub const WEBHOOK_NAME_CHARS_MAX: usize = 64;

/// One attempt at an action: the result, and the error when it failed.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// `Delivered`, or `Failed` with a scrubbed error text.
    pub result: ActionResult,
    /// The failure and its class; `None` when delivered. Its text is scrubbed
    /// the same way `result.error` is before it is stored or logged.
    pub error: Option<TargetError>,
    /// Which outbound credential the attempt used ([`Executor::identity`]):
    /// never the secret itself.
    pub identity: String,
}

/// Whether the executor retries in-process or makes exactly one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Retry,
    Once,
}

/// `ActionResult::target` values.
pub use tg_model::action::{
    TARGET_BRIDGE, TARGET_PAGERDUTY, TARGET_SERVICENOW, TARGET_SERVICENOW_BRIDGE,
};

/// ServiceNow Table API access.
#[derive(Debug, Clone)]
pub struct ServiceNowConfig {
    /// `https://<instance>.service-now.com`, no path.
    pub base_url: String,
    /// How the Table API is authenticated.
    pub auth: ServiceNowAuth,
    /// Team name -> assignment group (sys_id, or name when the instance accepts it).
    pub assignment_groups: BTreeMap<String, String>,
    pub caller_id: Option<String>,
    /// `close_code` of a resolve (a choice value of the instance; see
    /// [`servicenow::DEFAULT_CLOSE_CODE`]).
    pub close_code: String,
    /// Per request.
    pub timeout_ms: u64,
    /// The certificate authorities the instance (and its token endpoint) may chain to.
    pub tls: TrustRoots,
}

/// The credential of the ServiceNow Table API.
#[derive(Debug, Clone)]
pub enum ServiceNowAuth {
    /// A static bearer token.
    Token(Secret),
    /// OAuth 2.0 client credentials (`/oauth_token.do`): short-lived tokens,
    /// cached and fetched single-flight; a 401 drops the token and refetches
    /// once. Fail closed: without a token no Table API request is made.
    OAuth(Arc<TokenSource>),
}

/// PagerDuty access: Events API v2 (routing keys), or the REST API when `rest` is set.
#[derive(Debug, Clone)]
pub struct PagerDutyConfig {
    /// `https://events.pagerduty.com` (or the EU host; see [`crate::PagerDutyRegion`]).
    pub base_url: String,
    /// Team name -> integration (routing) key.
    pub routing_keys: BTreeMap<String, Secret>,
    /// Per request.
    pub timeout_ms: u64,
    /// Open and resolve pages as REST API incidents instead of Events v2 alerts.
    pub rest: Option<PagerDutyRest>,
    /// The certificate authorities the Events and REST APIs may chain to.
    pub tls: TrustRoots,
}

/// The chat flavour of the major-incident bridge webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeFormat {
    /// Slack incoming webhook: `{"text", "blocks"}`.
    Slack,
    /// Teams Workflows webhook: an Adaptive Card message envelope.
    Teams,
}

/// The major-incident announcement: a chat webhook, signed webhooks, or both.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The chat webhook URL (itself the credential); `None`: no chat post.
    pub webhook_url: Option<Secret>,
    pub format: BridgeFormat,
    /// The standing conference bridge people should join.
    pub conference_url: Option<String>,
    /// Per request.
    pub timeout_ms: u64,
    /// Generic receivers, posted a signed JSON body after the chat post.
    pub webhooks: Vec<SignedWebhook>,
    /// The certificate authorities the chat webhook and the receivers may chain to.
    pub tls: TrustRoots,
}

/// A generic receiver of the major-incident announcement, signed with
/// HMAC-SHA256 (headers `X-TriageGate-Timestamp`, `X-TriageGate-Signature`).
#[derive(Debug, Clone)]
pub struct SignedWebhook {
    /// Names it in results and errors (`[A-Za-z0-9_-]`, unique).
    pub name: String,
    /// Where to POST (http(s); not a secret: the signature is the credential).
    pub url: String,
    /// The shared signing secret.
    pub secret: Secret,
}

/// Carries out planned actions against the configured targets.
#[derive(Debug, Clone)]
pub struct Executor {
    clients: Clients,
    servicenow: Option<ServiceNowConfig>,
    pagerduty: Option<PagerDutyConfig>,
    bridge: Option<BridgeConfig>,
    retry: RetryPolicy,
    redact: Redactor,
}

/// One HTTP client per target: each trusts its own certificate authorities.
#[derive(Debug, Clone)]
struct Clients {
    servicenow: reqwest::Client,
    pagerduty: reqwest::Client,
    bridge: reqwest::Client,
}

fn client(tls: Option<&TrustRoots>) -> Result<reqwest::Client, ConfigError> {
    tls.cloned()
        .unwrap_or_default()
        .client_builder()
        // A redirect would carry the bearer token to another host.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("triage-gate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::Client(e.without_url().to_string()))
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

fn check_signed_webhooks(hooks: &[SignedWebhook]) -> Result<(), ConfigError> {
    if hooks.len() > BRIDGE_WEBHOOKS_MAX {
        return Err(ConfigError::TooManyWebhooks {
            count: hooks.len(),
            max: BRIDGE_WEBHOOKS_MAX,
        });
    }
    let mut names = std::collections::BTreeSet::new();
    for hook in hooks {
        let bad = |reason: String| ConfigError::SignedWebhook {
            name: hook.name.clone(),
            reason,
        };
        let name_ok = !hook.name.is_empty()
            && hook.name.len() <= WEBHOOK_NAME_CHARS_MAX
            && hook
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !name_ok {
            return Err(bad(format!(
                "name must be 1..={WEBHOOK_NAME_CHARS_MAX} characters of [A-Za-z0-9_-]"
            )));
        }
        if !names.insert(hook.name.as_str()) {
            return Err(bad("name is used twice".into()));
        }
        check_base_url("bridge webhook", &hook.url).map_err(|e| bad(e.to_string()))?;
        if hook.secret.expose().chars().count() < WEBHOOK_SECRET_CHARS_MIN {
            return Err(bad(format!(
                "secret is shorter than {WEBHOOK_SECRET_CHARS_MIN} characters"
            )));
        }
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
            if let ServiceNowAuth::Token(token) = &c.auth {
                check_secret("servicenow", "token", token)?;
                redact.add(token);
            }
        }
        if let Some(c) = &pagerduty {
            check_base_url("pagerduty", &c.base_url)?;
            check_timeout("pagerduty", c.timeout_ms)?;
            for (team, key) in &c.routing_keys {
                check_secret("pagerduty routing key", team, key)?;
                redact.add(key);
            }
            if let Some(rest) = &c.rest {
                check_base_url("pagerduty api", &rest.base_url)?;
                let from_ok = rest.from.contains('@')
                    && !rest
                        .from
                        .chars()
                        .any(|ch| ch.is_control() || ch.is_whitespace());
                if !from_ok {
                    return Err(ConfigError::PagerDutyFrom);
                }
            }
        }
        if let Some(c) = &bridge {
            if c.webhook_url.is_none() && c.webhooks.is_empty() {
                return Err(ConfigError::NoBridgeDestination);
            }
            if let Some(url) = &c.webhook_url {
                // The URL is the secret: the parse error must not echo it.
                let parsed =
                    reqwest::Url::parse(url.expose()).map_err(|e| ConfigError::WebhookUrl {
                        reason: e.to_string(),
                    })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ConfigError::WebhookUrl {
                        reason: "scheme is not http(s)".into(),
                    });
                }
                check_secret("bridge", "webhook_url", url)?;
                redact.add(url);
            }
            check_timeout("bridge", c.timeout_ms)?;
            check_signed_webhooks(&c.webhooks)?;
            for hook in &c.webhooks {
                redact.add(&hook.secret);
            }
        }
        let clients = Clients {
            servicenow: client(servicenow.as_ref().map(|c| &c.tls))?,
            pagerduty: client(pagerduty.as_ref().map(|c| &c.tls))?,
            bridge: client(bridge.as_ref().map(|c| &c.tls))?,
        };
        Ok(Executor {
            clients,
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
        Attempt {
            result,
            error,
            identity: self.identity(action),
        }
    }

    /// Which outbound identity an attempt of `action` uses, for the audit
    /// record: the OAuth client id and scopes, or which configured static
    /// credential (by its configuration key). Never a secret. Pure.
    pub fn identity(&self, action: &PlannedAction) -> String {
        let oauth = |t: &TokenSource| {
            format!(
                "oauth client_credentials client_id={} scope={}",
                t.client_id(),
                if t.scopes().is_empty() {
                    "(none)".to_owned()
                } else {
                    t.scopes().join(" ")
                }
            )
        };
        let servicenow = || match self.servicenow.as_ref().map(|s| &s.auth) {
            Some(ServiceNowAuth::OAuth(t)) => format!("servicenow: {}", oauth(t)),
            Some(ServiceNowAuth::Token(_)) => {
                "servicenow: static token (actions.servicenow.token)".to_owned()
            }
            None => "servicenow: not configured".to_owned(),
        };
        let bridge = || match &self.bridge {
            Some(b) => {
                let mut parts = Vec::new();
                if b.webhook_url.is_some() {
                    parts.push("chat webhook URL (actions.bridge.webhook_url)".to_owned());
                }
                parts.extend(
                    b.webhooks
                        .iter()
                        .map(|w| format!("signed webhook {} (HMAC secret)", w.name)),
                );
                format!("bridge: {}", parts.join(", "))
            }
            None => "bridge: not configured".to_owned(),
        };
        match action.kind {
            ActionKind::Ticket => servicenow(),
            ActionKind::Mim => format!("{}; {}", servicenow(), bridge()),
            ActionKind::Page => match &self.pagerduty {
                Some(PagerDutyConfig {
                    rest: Some(rest), ..
                }) => format!("pagerduty REST: {}", oauth(&rest.tokens)),
                Some(_) => format!(
                    "pagerduty: routing key of team {team} (actions.pagerduty.routing_keys.{team})",
                    team = action.team
                ),
                None => "pagerduty: not configured".to_owned(),
            },
        }
    }

    /// What an attempt of `action` would send, for a reviewer: the ServiceNow
    /// incident fields, the PagerDuty event (its routing key shown as a
    /// placeholder, never the key) or the bridge. Pure: no request is made.
    pub fn preview(&self, action: &PlannedAction) -> serde_json::Value {
        use serde_json::json;
        let shown = |r: Result<serde_json::Value, TargetError>| match r {
            Ok(v) => v,
            Err(e) => json!({ "error": e.to_string() }),
        };
        match (action.kind, action.op) {
            (ActionKind::Ticket | ActionKind::Mim, ActionOp::Create) => match &self.servicenow {
                Some(cfg) => json!({
                    "target": "servicenow",
                    "request": "POST /api/now/table/incident (after a correlation_id lookup)",
                    "body": shown(crate::servicenow::incident_body(cfg, action, action.kind == ActionKind::Mim)),
                    "bridge": (action.kind == ActionKind::Mim && self.bridge.is_some()).then_some("announced on the major-incident bridge"),
                }),
                None => json!({ "error": "servicenow is not configured" }),
            },
            (ActionKind::Page, ActionOp::Create) => {
                let placeholder =
                    tg_model::Secret::new(format!("[routing key of team {}]", action.team));
                json!({
                    "target": "pagerduty",
                    "request": "POST /v2/enqueue",
                    "body": shown(crate::pagerduty::trigger_body(action, &placeholder, "(at delivery)")),
                })
            }
            (kind, op) => json!({
                "target": kind.target(),
                "request": format!("{} {}", kind.as_str(), op.as_str()),
                "parent_key": action.parent_key,
            }),
        }
    }

    async fn carry_out(
        &self,
        action: &PlannedAction,
        mode: Mode,
    ) -> (ActionResult, Option<TargetError>) {
        let (result, error) = match (action.kind, action.op) {
            (ActionKind::Ticket, ActionOp::Create) => self.ticket(action, mode).await,
            // A major incident is a ServiceNow incident too: new evidence is a note on it.
            (ActionKind::Ticket | ActionKind::Mim, ActionOp::Update) => {
                self.note(action, mode).await
            }
            (ActionKind::Ticket, ActionOp::Resolve) => self.resolve_ticket(action, mode).await,
            (ActionKind::Page, ActionOp::Create) => self.page(action, mode).await,
            (ActionKind::Page, ActionOp::Resolve) => self.resolve_page_action(action, mode).await,
            (ActionKind::Page, ActionOp::Update) | (ActionKind::Mim, ActionOp::Resolve) => {
                self.unsupported(action)
            }
            (ActionKind::Mim, ActionOp::Create) => self.mim(action, mode).await,
        };
        tracing::info!(
            kind = action.kind.as_str(),
            op = action.op.as_str(),
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

    /// Resolves the PagerDuty alert opened with `dedup_key` for `team`, with
    /// in-process retries (the outbox sends a page's op `resolve` through
    /// [`Executor::attempt`] instead).
    pub async fn resolve_page(&self, team: &str, dedup_key: &str) -> ActionResult {
        self.resolve_page_for(team, dedup_key, Mode::Retry).await.0
    }

    async fn resolve_page_action(
        &self,
        action: &PlannedAction,
        mode: Mode,
    ) -> (ActionResult, Option<TargetError>) {
        let rest = self.pagerduty.as_ref().and_then(|c| c.rest.as_ref());
        if rest.is_none() {
            return self
                .resolve_page_for(&action.team, &action.dedup_key, mode)
                .await;
        }
        // REST incidents are keyed by the create's idempotency key.
        match action.parent_key.as_deref() {
            Some(key) => self.resolve_page_for(&action.team, key, mode).await,
            None => self.failed_with(
                blank(ActionKind::Page, TARGET_PAGERDUTY),
                TargetError::permanent(
                    TARGET_PAGERDUTY,
                    "page resolve has no parent_key: there is no REST incident to resolve",
                ),
                0,
            ),
        }
    }

    /// A page as a REST API incident: looked up by `incident_key`, created if absent.
    async fn page_rest(
        &self,
        cfg: &PagerDutyConfig,
        rest: &PagerDutyRest,
        action: &PlannedAction,
        mode: Mode,
    ) -> (ActionResult, Option<TargetError>) {
        let result = blank(ActionKind::Page, TARGET_PAGERDUTY);
        if let Err(e) = pagerduty_rest::create_body(rest, action) {
            return self.failed_with(result, e, 0);
        }
        let (outcome, attempts) = self
            .call(mode, &action.idempotency_key, || {
                pagerduty_rest::ensure_incident(
                    &self.clients.pagerduty,
                    rest,
                    cfg.timeout_ms,
                    &self.redact,
                    action,
                )
            })
            .await;
        match outcome {
            Ok(incident) => (
                delivered(with_rest_incident(result, &incident), attempts),
                None,
            ),
            Err(e) => self.failed_with(result, e, attempts),
        }
    }

    /// An Events v2 `resolve` for `dedup_key` through the routing key of
    /// `team`. Idempotent: PagerDuty drops a resolve of an alert that is not open.
    async fn resolve_page_for(
        &self,
        team: &str,
        dedup_key: &str,
        mode: Mode,
    ) -> (ActionResult, Option<TargetError>) {
        let mut result = blank(ActionKind::Page, TARGET_PAGERDUTY);
        let Some(cfg) = &self.pagerduty else {
            return self.failed_with(result, not_configured(TARGET_PAGERDUTY), 0);
        };
        if let Some(rest) = &cfg.rest {
            let (outcome, attempts) = self
                .call(mode, dedup_key, || {
                    pagerduty_rest::resolve(
                        &self.clients.pagerduty,
                        rest,
                        cfg.timeout_ms,
                        &self.redact,
                        team,
                        dedup_key,
                    )
                })
                .await;
            return match outcome {
                Ok(RestResolve::Resolved(i)) => {
                    (delivered(with_rest_incident(result, &i), attempts), None)
                }
                Ok(RestResolve::AlreadyResolved(i)) => {
                    let mut result = with_rest_incident(result, &i);
                    result.external_ids.insert(
                        "pagerduty_noop".into(),
                        format!("incident {} is already resolved", i.id),
                    );
                    (delivered(result, attempts), None)
                }
                Ok(RestResolve::NoIncident(why)) => {
                    result.external_ids.insert("pagerduty_noop".into(), why);
                    (delivered(result, attempts), None)
                }
                Err(e) => self.failed_with(result, e, attempts),
            };
        }
        let body = match pagerduty::routing_key(cfg, team)
            .and_then(|key| pagerduty::resolve_body(key, dedup_key))
        {
            Ok(b) => b,
            Err(e) => return self.failed_with(result, e, 0),
        };
        let (outcome, attempts) = self
            .call(mode, dedup_key, || {
                pagerduty::enqueue(&self.clients.pagerduty, cfg, &self.redact, &body)
            })
            .await;
        match outcome {
            Ok(key) => {
                result
                    .external_ids
                    .insert("pagerduty_dedup_key".into(), key);
                result
                    .external_ids
                    .insert("pagerduty_event".into(), "resolve".into());
                (delivered(result, attempts), None)
            }
            Err(e) => self.failed_with(result, e, attempts),
        }
    }

    /// Ticket (or MIM) op `update`: the evidence as a work note on the parent
    /// incident, once (see [`servicenow::add_note`]).
    async fn note(
        &self,
        action: &PlannedAction,
        mode: Mode,
    ) -> (ActionResult, Option<TargetError>) {
        let mut result = blank(action.kind, TARGET_SERVICENOW);
        let Some(cfg) = &self.servicenow else {
            return self.failed_with(result, not_configured(TARGET_SERVICENOW), 0);
        };
        // Input errors (no parent, bad key) are permanent: fail before any request.
        if let Err(e) =
            servicenow::checked_parent(action).and_then(|_| servicenow::note_text(action))
        {
            return self.failed_with(result, e, 0);
        }
        let (outcome, attempts) = self
            .call(mode, &action.idempotency_key, || {
                servicenow::add_note(&self.clients.servicenow, cfg, &self.redact, action)
            })
            .await;
        match outcome {
            Ok(NoteOutcome::Added(incident)) => {
                result = with_incident(result, &incident);
                result
                    .external_ids
                    .insert("servicenow_note".into(), "added".into());
                (delivered(result, attempts), None)
            }
            Ok(NoteOutcome::AlreadyPresent(incident)) => {
                result = with_incident(result, &incident);
                result
                    .external_ids
                    .insert("servicenow_note".into(), "already_present".into());
                (delivered(result, attempts), None)
            }
            Ok(NoteOutcome::NoParent(why)) => {
                result.external_ids.insert("servicenow_noop".into(), why);
                (delivered(result, attempts), None)
            }
            Err(e) => self.failed_with(result, e, attempts),
        }
    }

    /// Ticket op `resolve`: the parent incident set Resolved, once.
    async fn resolve_ticket(
        &self,
        action: &PlannedAction,
        mode: Mode,
    ) -> (ActionResult, Option<TargetError>) {
        let mut result = blank(ActionKind::Ticket, TARGET_SERVICENOW);
        let Some(cfg) = &self.servicenow else {
            return self.failed_with(result, not_configured(TARGET_SERVICENOW), 0);
        };
        if let Err(e) = servicenow::checked_parent(action) {
            return self.failed_with(result, e, 0);
        }
        let (outcome, attempts) = self
            .call(mode, &action.idempotency_key, || {
                servicenow::resolve(&self.clients.servicenow, cfg, &self.redact, action)
            })
            .await;
        match outcome {
            Ok(ResolveOutcome::Resolved(incident)) => {
                result = with_incident(result, &incident);
                result
                    .external_ids
                    .insert("servicenow_state".into(), incident.state.clone());
                (delivered(result, attempts), None)
            }
            Ok(ResolveOutcome::AlreadyResolved(incident)) => {
                result = with_incident(result, &incident);
                result
                    .external_ids
                    .insert("servicenow_state".into(), incident.state.clone());
                result.external_ids.insert(
                    "servicenow_noop".into(),
                    format!(
                        "{} is already resolved or closed (state {})",
                        incident.number, incident.state
                    ),
                );
                (delivered(result, attempts), None)
            }
            Ok(ResolveOutcome::NoParent(why)) => {
                result.external_ids.insert("servicenow_noop".into(), why);
                (delivered(result, attempts), None)
            }
            Err(e) => self.failed_with(result, e, attempts),
        }
    }

    /// An (kind, op) pair no target carries out: a planning error, permanent.
    fn unsupported(&self, action: &PlannedAction) -> (ActionResult, Option<TargetError>) {
        let (target, why) = match action.kind {
            ActionKind::Page => (
                TARGET_PAGERDUTY,
                "a page is not updated (a repeated trigger merges into the open alert)",
            ),
            _ => (
                TARGET_SERVICENOW_BRIDGE,
                "a major incident is closed by its manager, not by triage-gate",
            ),
        };
        let err = TargetError::permanent(
            target,
            format!(
                "{} {} is not supported: {why}",
                action.kind,
                action.op.as_str()
            ),
        );
        self.failed_with(blank(action.kind, target), err, 0)
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
        if let Some(rest) = &cfg.rest {
            return self.page_rest(cfg, rest, action, mode).await;
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = match pagerduty::routing_key(cfg, &action.team)
            .and_then(|key| pagerduty::trigger_body(action, key, &now))
        {
            Ok(b) => b,
            Err(e) => return self.failed_with(result, e, 0),
        };
        let (outcome, attempts) = self
            .call(mode, &action.idempotency_key, || {
                pagerduty::enqueue(&self.clients.pagerduty, cfg, &self.redact, &body)
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
        let announcement = Announcement {
            action,
            incident_number: &incident.number,
            incident_sys_id: &incident.sys_id,
            incident_url: &incident_url,
            conference_url: bridge_cfg.conference_url.as_deref(),
        };
        let mut attempts = snow_attempts;
        let add = |attempts: u32, more: u32| match mode {
            Mode::Retry => attempts.saturating_add(more),
            Mode::Once => 1,
        };
        if let Some(url) = &bridge_cfg.webhook_url {
            let body = bridge::payload(bridge_cfg.format, &announcement);
            let key = format!("{}:bridge", action.idempotency_key);
            let (posted, bridge_attempts) = self
                .call(mode, &key, || {
                    bridge::post(
                        &self.clients.bridge,
                        url,
                        bridge_cfg.format,
                        bridge_cfg.timeout_ms,
                        &self.redact,
                        &body,
                    )
                })
                .await;
            attempts = add(attempts, bridge_attempts);
            if let Err(e) = posted {
                return self.failed_with(result, e, attempts);
            }
            result.external_ids.insert("bridge".into(), "posted".into());
        }
        // One delivery ID per (action, receiver), the same on every retry, so a
        // receiver can drop a repeat; the body is the same too, only the
        // signature's timestamp changes.
        for hook in &bridge_cfg.webhooks {
            let delivery_id = format!("{}:{}", action.idempotency_key, hook.name);
            let body = bridge::signed_payload(&announcement, &delivery_id).to_string();
            let (posted, hook_attempts) = self
                .call(mode, &delivery_id, || {
                    let now = chrono::Utc::now().timestamp();
                    bridge::post_signed(
                        &self.clients.bridge,
                        hook,
                        bridge_cfg.timeout_ms,
                        &self.redact,
                        &body,
                        &delivery_id,
                        now,
                    )
                })
                .await;
            attempts = add(attempts, hook_attempts);
            if let Err(e) = posted {
                return self.failed_with(result, e, attempts);
            }
            result
                .external_ids
                .insert(format!("webhook:{}", hook.name), "posted".into());
        }
        (delivered(result, attempts), None)
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
            servicenow::ensure_incident(&self.clients.servicenow, cfg, &self.redact, action, major)
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

fn with_rest_incident(mut result: ActionResult, incident: &RestIncident) -> ActionResult {
    result
        .external_ids
        .insert("pagerduty_incident_id".into(), incident.id.clone());
    if !incident.number.is_empty() {
        result
            .external_ids
            .insert("pagerduty_incident_number".into(), incident.number.clone());
    }
    result
        .external_ids
        .insert("pagerduty_status".into(), incident.status.clone());
    result
}

fn delivered(mut result: ActionResult, attempts: u32) -> ActionResult {
    result.status = ActionStatus::Delivered;
    result.attempts = attempts;
    result
}
