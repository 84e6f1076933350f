//! Emulators of ServiceNow (Table API and `/oauth_token.do`), PagerDuty (Events v2, REST incidents and the
//! scoped-OAuth token endpoint), the chat bridge (Slack, Teams, and a
//! receiver of triage-gate's signed webhooks) and the model APIs
//! (Anthropic Messages, Amazon Bedrock Converse with SigV4, OpenAI-compatible
//! chat completions) and the audit sinks (Splunk HEC, CloudWatch Logs with
//! SigV4, an OTLP/HTTP logs receiver), recording what they receive.
//!
//! One axum server, one port, each emulator under a path prefix
//! (`/servicenow`, `/pagerduty`, `/bridge`, `/anthropic`, `/bedrock`, `/openai`,
//! `/splunk`, `/cloudwatch`, `/otlp`) and a control API
//! under `/_sandbox` (recordings, state, scripted model replies, fault
//! injection, reset). The emulators are as strict as the real services: they
//! reject what the service rejects and answer with its shapes and status codes,
//! so a client that passes here has been tested against the real contract.
//!
//! This crate must never be used as a production endpoint, never talk to the
//! real services, and never let a secret (bearer token, API key, routing key,
//! webhook token) reach a recording, a control answer, a log line or `Debug`.

pub mod anthropic;
pub mod bedrock;
pub mod bridge;
pub mod cloudwatch;
mod control;
pub mod faults;
pub mod idp;
pub mod openai;
pub mod otlp;
pub mod pagerduty;
pub mod pagerduty_rest;
pub mod record;
pub mod servicenow;
pub mod servicenow_oauth;
mod sigv4;
pub mod sns;
pub mod splunk;
pub mod sts;
pub mod webhook;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use anthropic::{
    AnthropicScript, BrainReply, DefaultBrain, ModelBrain, ScriptError, ScriptReply,
};
pub use bedrock::{BedrockCredentials, ModelScript, ModelScriptError};
pub use bridge::{BridgePost, Channel, DEFAULT_WEBHOOK_TOKEN, WebhookError};
pub use cloudwatch::LogEvent;
pub use faults::{ChaosKind, ChaosSpec, FaultError, FaultSpec, OutageSpec, SandboxClock};
pub use otlp::OtlpLogRecord;
pub use pagerduty::{Alert, AlertStatus};
pub use pagerduty_rest::RestIncident;
pub use record::{RecordedRequest, Secret, Target};
pub use servicenow::{Incident, IncidentUpdate, JournalEntry, ServiceNowRules};
pub use servicenow_oauth::OAuthClientError;
pub use sns::{Confirmation, SnsSignError};
pub use splunk::SplunkEvent;
pub use sts::{DEFAULT_STS_ROLE_ARN, DEFAULT_WEB_IDENTITY_TOKEN, StsCall, StsControlError};
pub use webhook::{ReceiverError, Refusal, SignedDelivery};

/// Largest request body any emulator reads, in bytes (answered 413 in the
/// target's error shape beyond it).
pub const BODY_BYTES_MAX: usize = 1_048_576;
/// Largest request body of the audit-sink emulators (Splunk HEC, CloudWatch
/// Logs, OTLP): a full CloudWatch batch is 1 MiB of messages before JSON escaping.
pub const AUDIT_BODY_BYTES_MAX: usize = 8 * 1_048_576;
/// The HEC token the Splunk emulator accepts until [`SandboxState::splunk_set_token`].
pub const DEFAULT_SPLUNK_HEC_TOKEN: &str = "sandbox-splunk-hec-token-0000";
/// Default ServiceNow bearer token of [`SandboxConfig::default`].
pub const DEFAULT_SERVICENOW_TOKEN: &str = "sandbox-servicenow-token";
/// Default Anthropic API key of [`SandboxConfig::default`].
pub const DEFAULT_ANTHROPIC_API_KEY: &str = "sandbox-anthropic-key";
/// Default AWS access key id the Bedrock emulator accepts.
pub const DEFAULT_BEDROCK_ACCESS_KEY_ID: &str = "AKIASANDBOXEXAMPLE01";
/// Default AWS secret access key the Bedrock emulator verifies signatures with.
pub const DEFAULT_BEDROCK_SECRET_ACCESS_KEY: &str = "sandbox/Bedrock/SecretKey/EXAMPLE0000000000";
/// Default bearer key the OpenAI-compatible emulator accepts.
pub const DEFAULT_OPENAI_API_KEY: &str = "sandbox-openai-key";

/// How to start a sandbox.
#[derive(Clone)]
pub struct SandboxConfig {
    /// Where to listen; `127.0.0.1:0` in tests (any free port).
    pub listen: SocketAddr,
    /// The bearer token the ServiceNow emulator accepts.
    pub servicenow_token: String,
    /// The `x-api-key` the Anthropic emulator accepts.
    pub anthropic_api_key: String,
    /// What the emulated model answers (Anthropic, Bedrock and OpenAI-compatible
    /// emulators alike); [`DefaultBrain`] when `None`.
    pub brain: Option<Arc<dyn ModelBrain>>,
    /// The AWS credentials the Bedrock emulator verifies SigV4 signatures with.
    pub bedrock_credentials: BedrockCredentials,
    /// The bearer key the OpenAI-compatible emulator requires; `None` checks none.
    pub openai_api_key: Option<String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            servicenow_token: DEFAULT_SERVICENOW_TOKEN.to_owned(),
            anthropic_api_key: DEFAULT_ANTHROPIC_API_KEY.to_owned(),
            brain: None,
            bedrock_credentials: BedrockCredentials {
                access_key_id: DEFAULT_BEDROCK_ACCESS_KEY_ID.to_owned(),
                secret_access_key: DEFAULT_BEDROCK_SECRET_ACCESS_KEY.to_owned(),
                session_token: None,
            },
            openai_api_key: Some(DEFAULT_OPENAI_API_KEY.to_owned()),
        }
    }
}

impl std::fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("listen", &self.listen)
            .field("servicenow_token", &record::REDACTED)
            .field("anthropic_api_key", &record::REDACTED)
            .field("brain", &self.brain.as_ref().map(|_| "custom"))
            .field("bedrock_credentials", &self.bedrock_credentials)
            .field(
                "openai_api_key",
                &self.openai_api_key.as_ref().map(|_| record::REDACTED),
            )
            .finish()
    }
}

/// Everything the emulators hold, shared by the server and in-process callers.
pub struct SandboxState {
    servicenow_token: String,
    anthropic_api_key: String,
    servicenow: servicenow::ServiceNowState,
    servicenow_oauth: servicenow_oauth::ServiceNowOAuthState,
    pagerduty: pagerduty::PagerDutyState,
    pagerduty_rest: pagerduty_rest::PagerDutyRestState,
    bridge: bridge::BridgeState,
    anthropic: anthropic::AnthropicState,
    brain: Arc<dyn ModelBrain>,
    bedrock: bedrock::BedrockState,
    openai: openai::OpenAiState,
    faults: faults::Faults,
    recorder: record::Recorder,
    sns: sns::SnsState,
    sts: sts::StsState,
    webhooks: webhook::WebhookState,
    splunk: splunk::SplunkState,
    cloudwatch: cloudwatch::CloudWatchState,
    otlp: otlp::OtlpState,
    /// The authorization server of inbound tokens (`idp.rs`); `Err`: its key
    /// could not be made (every request then answers 503).
    idp: Result<idp::IdpState, String>,
    /// `http://127.0.0.1:PORT`, once the server is bound (the IdP's issuer).
    base_url: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxState")
            .field("servicenow_token", &record::REDACTED)
            .field("anthropic_api_key", &record::REDACTED)
            .field("anthropic", &self.anthropic)
            .finish_non_exhaustive()
    }
}

impl SandboxState {
    pub fn new(cfg: &SandboxConfig) -> Self {
        SandboxState {
            servicenow_token: cfg.servicenow_token.clone(),
            anthropic_api_key: cfg.anthropic_api_key.clone(),
            servicenow: servicenow::ServiceNowState::default(),
            servicenow_oauth: servicenow_oauth::ServiceNowOAuthState::default(),
            pagerduty: pagerduty::PagerDutyState::default(),
            pagerduty_rest: pagerduty_rest::PagerDutyRestState::default(),
            bridge: bridge::BridgeState::default(),
            anthropic: anthropic::AnthropicState::new(cfg.brain.clone()),
            brain: cfg.brain.clone().unwrap_or_else(|| Arc::new(DefaultBrain)),
            bedrock: bedrock::BedrockState {
                credentials: cfg.bedrock_credentials.clone(),
                scripts: bedrock::ScriptQueue::default(),
            },
            openai: openai::OpenAiState {
                api_key: cfg.openai_api_key.clone(),
                scripts: bedrock::ScriptQueue::default(),
            },
            faults: faults::Faults::default(),
            recorder: record::Recorder::default(),
            sns: sns::SnsState::default(),
            sts: sts::StsState::default(),
            webhooks: webhook::WebhookState::default(),
            splunk: splunk::SplunkState::new(DEFAULT_SPLUNK_HEC_TOKEN),
            cloudwatch: cloudwatch::CloudWatchState::default(),
            otlp: otlp::OtlpState::default(),
            idp: idp::IdpState::new(),
            base_url: std::sync::OnceLock::new(),
        }
    }

    /// ServiceNow incidents, in creation order.
    pub fn incidents(&self) -> Vec<Incident> {
        self.servicenow.incidents()
    }

    /// Accepted ServiceNow updates (`PATCH`/`PUT`), oldest first: count work
    /// notes with [`IncidentUpdate::adds_work_note`], resolves with [`IncidentUpdate::resolves`].
    pub fn servicenow_updates(&self) -> Vec<IncidentUpdate> {
        self.servicenow.updates()
    }

    pub fn servicenow_rules(&self) -> ServiceNowRules {
        self.servicenow.rules()
    }

    /// Switch instance behaviour (business rules, data policies, query leniency).
    pub fn set_servicenow_rules(&self, rules: ServiceNowRules) {
        self.servicenow.set_rules(rules);
    }

    /// Set the instance property
    /// `glide.oauth.inbound.client.credential.grant_type.enabled` (off by
    /// default: `/oauth_token.do` then refuses client_credentials).
    /// Registers a client of the inbound-token authorization server (`/idp/token`).
    pub fn idp_client(&self, client_id: &str, secret: &str, scopes: &[&str]) -> Result<(), String> {
        match &self.idp {
            Ok(idp) => idp.register(client_id, secret, scopes),
            Err(e) => Err(e.clone()),
        }
    }

    /// The `iss` of the tokens `/idp/token` issues: `<base url>/idp`.
    pub fn idp_issuer(&self) -> String {
        format!(
            "{}/idp",
            self.base_url
                .get()
                .map_or("http://sandbox.invalid", String::as_str)
        )
    }

    pub fn servicenow_oauth_enable_client_credentials(&self, enabled: bool) {
        self.servicenow_oauth.set_enabled(enabled);
    }

    /// Register a ServiceNow OAuth client authenticating with a secret
    /// (`client_secret_post` or `client_secret_basic`). From then on the Table
    /// API accepts only tokens `/oauth_token.do` issued.
    pub fn servicenow_oauth_client(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<(), OAuthClientError> {
        self.servicenow_oauth
            .register_secret(client_id, client_secret)
    }

    /// Register a ServiceNow OAuth client authenticating with `private_key_jwt`
    /// (RS256), verified with this RSA public key (PEM).
    pub fn servicenow_oauth_client_key(
        &self,
        client_id: &str,
        public_key_pem: &str,
    ) -> Result<(), OAuthClientError> {
        self.servicenow_oauth
            .register_public_key(client_id, public_key_pem)
    }

    /// Issue tokens living `secs` instead of the default; `None` restores it.
    pub fn servicenow_oauth_token_lifetime(&self, secs: Option<i64>) {
        self.servicenow_oauth.set_lifetime(secs);
    }

    /// Requests received by `/oauth_token.do` (faulted ones excluded).
    pub fn servicenow_token_requests(&self) -> u64 {
        self.servicenow_oauth.token_requests()
    }

    /// Tokens `/oauth_token.do` issued.
    pub fn servicenow_tokens_issued(&self) -> u64 {
        self.servicenow_oauth.tokens_issued()
    }

    /// The tokens `/oauth_token.do` issued and still remembers (for leak
    /// tests that search every output for them; never served over HTTP).
    pub fn servicenow_issued_tokens(&self) -> Vec<Secret> {
        self.servicenow_oauth.issued_tokens()
    }

    /// Invalidate every issued ServiceNow token (the Table API then answers 401).
    pub fn servicenow_revoke_tokens(&self) {
        self.servicenow_oauth.revoke_tokens();
    }

    /// Whether `Authorization` carries a credential the Table API accepts:
    /// an unexpired issued token once OAuth is configured, else the static token.
    pub(crate) fn servicenow_authorized(&self, authorization: Option<&str>) -> bool {
        let Some(token) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
            return false;
        };
        if self.servicenow_oauth.required() {
            self.servicenow_oauth
                .valid(token, self.faults.now().timestamp())
        } else {
            token == self.servicenow_token
        }
    }

    /// PagerDuty alerts, open and closed, in the order they were opened.
    pub fn pagerduty_alerts(&self) -> Vec<Alert> {
        self.pagerduty.alerts()
    }

    /// Incidents created through the PagerDuty REST API, oldest first.
    pub fn pagerduty_rest_incidents(&self) -> Vec<RestIncident> {
        self.pagerduty_rest.incidents()
    }

    /// Register a PagerDuty OAuth app (client credentials) for account `subdomain`.
    pub fn pagerduty_oauth_client(&self, client_id: &str, client_secret: &str, subdomain: &str) {
        self.pagerduty_rest
            .register_client(client_id, client_secret, subdomain);
    }

    /// Accept `Authorization: Token token=<key>` on the REST API.
    pub fn pagerduty_api_key(&self, key: &str) {
        self.pagerduty_rest.register_api_key(key);
    }

    /// Token requests received by the PagerDuty OAuth endpoint.
    pub fn pagerduty_token_requests(&self) -> u64 {
        self.pagerduty_rest.token_requests()
    }

    /// Answer the next `n` token requests 503 (the identity service is down).
    pub fn pagerduty_fail_token_requests(&self, n: u32) {
        self.pagerduty_rest.fail_token_requests(n);
    }

    /// Answer the next `n` REST incident lists empty (a list that lags a create).
    pub fn pagerduty_stale_lists(&self, n: u32) {
        self.pagerduty_rest.stale_lists(n);
    }

    /// Invalidate every issued PagerDuty token (the REST API then answers 401).
    pub fn pagerduty_revoke_tokens(&self) {
        self.pagerduty_rest.revoke_tokens();
    }

    /// Accepted Slack and Teams posts, oldest first.
    pub fn bridge_posts(&self) -> Vec<BridgePost> {
        self.bridge.posts()
    }

    /// Make a Slack/Teams webhook token valid (like creating the webhook).
    pub fn issue_webhook(&self, token: &str) -> Result<(), WebhookError> {
        self.bridge.issue(token)
    }

    /// Make a webhook token invalid (later posts answer 404).
    pub fn revoke_webhook(&self, token: &str) {
        self.bridge.revoke(token);
    }

    /// Requests a target received, oldest first, secrets redacted.
    pub fn requests(&self, target: Target) -> Vec<RecordedRequest> {
        self.recorder.list(target)
    }

    /// Register a signed-webhook receiver `name` verifying with `secret`
    /// (served at `/bridge/signed/{name}`; registering again replaces the secret).
    pub fn register_signed_webhook(&self, name: &str, secret: &str) -> Result<(), ReceiverError> {
        self.webhooks.register(name, secret)
    }

    /// Verified signed-webhook deliveries, oldest first.
    pub fn signed_deliveries(&self) -> Vec<SignedDelivery> {
        self.webhooks.deliveries()
    }

    /// Refused signed-webhook deliveries, counted by reason.
    pub fn signed_refusals(&self) -> std::collections::BTreeMap<Refusal, u64> {
        self.webhooks.refusals()
    }

    /// Queue a scripted model reply (first matching script wins).
    pub fn script_anthropic(&self, script: AnthropicScript) -> Result<(), ScriptError> {
        self.anthropic.add_script(script)
    }

    /// Queue a scripted Bedrock Converse reply (first matching script wins).
    pub fn script_bedrock(&self, script: ModelScript) -> Result<(), ModelScriptError> {
        self.bedrock.scripts.add(script, bedrock::STOP_REASONS)
    }

    /// Queue a scripted OpenAI-compatible reply (first matching script wins).
    pub fn script_openai(&self, script: ModelScript) -> Result<(), ModelScriptError> {
        self.openai.scripts.add(script, openai::FINISH_REASONS)
    }

    /// The model brain shared by the model emulators.
    pub(crate) fn brain(&self) -> &dyn ModelBrain {
        self.brain.as_ref()
    }

    /// Make the next requests to a target fail or stall.
    pub fn inject_fault(&self, spec: FaultSpec) -> Result<(), FaultError> {
        self.faults.inject(&spec)
    }

    /// Take a target down for `down_for_ms` of the sandbox's clock.
    pub fn inject_outage(&self, spec: OutageSpec) -> Result<(), FaultError> {
        self.faults.inject_outage(&spec)
    }

    /// Fail a seeded fraction of a target's calls (500, 429, timeout, reset).
    pub fn inject_chaos(&self, spec: ChaosSpec) -> Result<(), FaultError> {
        self.faults.inject_chaos(&spec)
    }

    /// Drop every injected fault, outage and chaos (recordings and state stay).
    pub fn clear_faults(&self) {
        self.faults.clear();
    }

    /// Measure outages with `clock` instead of wall time (e.g. a test's manual clock).
    pub fn set_clock(&self, clock: SandboxClock) {
        self.faults.set_clock(clock);
    }

    /// Signs an SNS envelope like SNS (`version` 1: SHA1withRSA, 2:
    /// SHA256withRSA) with the key whose certificate `GET /sns/cert.pem` serves.
    pub fn sns_sign(
        &self,
        envelope: &serde_json::Value,
        version: u8,
    ) -> Result<serde_json::Value, SnsSignError> {
        sns::sign(envelope, version)
    }

    /// Subscription confirmations received at `GET /sns/confirm`, oldest first.
    pub fn sns_confirmations(&self) -> Vec<Confirmation> {
        self.sns.confirmations()
    }

    /// Make a web-identity token valid for STS `AssumeRoleWithWebIdentity`;
    /// `label` is what [`StsCall::token_label`] shows (never the token).
    pub fn sts_issue_token(&self, label: &str, token: &str) -> Result<(), StsControlError> {
        self.sts.issue_token(label, token)
    }

    /// Make a web-identity token invalid (`InvalidIdentityToken`).
    pub fn sts_revoke_token(&self, token: &str) {
        self.sts.revoke_token(token);
    }

    /// Let valid tokens assume `role_arn` (others answer `AccessDenied`).
    pub fn sts_allow_role(&self, role_arn: &str) {
        self.sts.allow_role(role_arn);
    }

    /// Issue credentials that live `secs` (whatever `DurationSeconds` says); `None` restores it.
    pub fn sts_set_credential_lifetime(&self, secs: Option<i64>) {
        self.sts.set_lifetime(secs);
    }

    /// Expire every credential STS issued so far (Bedrock then answers `ExpiredTokenException`).
    pub fn sts_expire_credentials(&self) {
        self.sts.expire_all();
    }

    /// Answer the next STS call with `status` and error `code`.
    pub fn sts_fail_next(&self, status: u16, code: &str) -> Result<(), StsControlError> {
        self.sts.fail_next(status, code)
    }

    /// `AssumeRoleWithWebIdentity` calls received, oldest first (tokens as labels).
    pub fn sts_calls(&self) -> Vec<StsCall> {
        self.sts.calls()
    }

    /// The credentials Bedrock verifies a signature with: the static ones, or
    /// temporary ones STS issued (refused once expired).
    pub(crate) fn bedrock_credentials_for(
        &self,
        access_key_id: &str,
    ) -> Result<bedrock::BedrockCredentials, &'static str> {
        if access_key_id == self.bedrock.credentials.access_key_id {
            return Ok(self.bedrock.credentials.clone());
        }
        match self.sts.credentials_for(access_key_id) {
            Some(Ok(c)) => Ok(c),
            Some(Err(())) => Err("ExpiredTokenException"),
            None => Err("UnrecognizedClientException"),
        }
    }

    /// Events the Splunk HEC emulator indexed, in order.
    pub fn splunk_events(&self) -> Vec<SplunkEvent> {
        self.splunk.events()
    }

    /// The HEC token the Splunk emulator accepts from now on.
    pub fn splunk_set_token(&self, token: &str) {
        self.splunk.set_token(token);
    }

    /// Indexer acknowledgement on or off (off by default). When on, every
    /// request needs a channel GUID and gets an `ackId`.
    pub fn splunk_set_ack(&self, on: bool) {
        self.splunk.set_ack(on);
    }

    /// While held, new ack ids stay unacknowledged; releasing acknowledges them all.
    pub fn splunk_hold_acks(&self, hold: bool) {
        self.splunk.hold_acks(hold);
    }

    /// The indexes the token may write to (`None`: any, the default).
    pub fn splunk_allow_indexes(&self, indexes: Option<Vec<String>>) {
        self.splunk.allow_indexes(indexes);
    }

    /// Index the next `n` accepted batches, then drop the connection unanswered
    /// (the client cannot know the batch arrived: an in-doubt failure).
    pub fn splunk_drop_after_index(&self, n: u32) {
        self.splunk.drop_after_index(n);
    }

    /// Create a CloudWatch log group (idempotent).
    pub fn cloudwatch_create_log_group(&self, group: &str) {
        self.cloudwatch.create_group(group);
    }

    /// Create a CloudWatch log stream, and its group if needed (idempotent).
    pub fn cloudwatch_create_log_stream(&self, group: &str, stream: &str) {
        self.cloudwatch.create_stream(group, stream);
    }

    /// Log events CloudWatch stored, in arrival order.
    pub fn cloudwatch_events(&self) -> Vec<LogEvent> {
        self.cloudwatch.events()
    }

    /// Log records the OTLP receiver accepted, in arrival order.
    pub fn otlp_records(&self) -> Vec<OtlpLogRecord> {
        self.otlp.records()
    }

    /// Require `Authorization: Bearer <token>` on the OTLP receiver (`None`: no check).
    pub fn otlp_require_token(&self, token: Option<&str>) {
        self.otlp.require_token(token);
    }

    /// Answer the next OTLP export with a `partialSuccess` rejecting its last `n` records.
    pub fn otlp_reject_next(&self, n: u64) {
        self.otlp.reject_next(n);
    }

    /// Forget incidents, alerts, posts, scripts, faults and recordings, and
    /// restore default ServiceNow rules. Issued webhooks stay valid.
    pub fn reset(&self) {
        self.servicenow.reset();
        self.servicenow_oauth.reset();
        self.pagerduty.reset();
        self.pagerduty_rest.reset();
        self.bridge.reset();
        self.anthropic.reset();
        self.bedrock.scripts.clear();
        self.openai.scripts.clear();
        self.faults.clear();
        self.recorder.clear();
        self.sns.reset();
        self.sts.reset();
        self.webhooks.reset();
        self.splunk.reset();
        self.cloudwatch.reset();
        self.otlp.reset();
    }
}

/// The whole sandbox as a router: emulators under their prefixes, control under `/_sandbox`.
pub fn router(state: Arc<SandboxState>) -> Router {
    let emulator = |routes: Router<Arc<SandboxState>>, target: Target| {
        routes.layer(from_fn_with_state((state.clone(), target), intercept))
    };
    Router::new()
        .nest(
            "/servicenow",
            emulator(servicenow::routes(), Target::Servicenow).merge(emulator(
                servicenow_oauth::routes(),
                Target::ServicenowOauth,
            )),
        )
        .nest(
            "/pagerduty",
            emulator(
                pagerduty::routes().merge(pagerduty_rest::routes()),
                Target::Pagerduty,
            ),
        )
        .nest(
            "/bridge",
            emulator(bridge::routes().merge(webhook::routes()), Target::Bridge),
        )
        .nest(
            "/anthropic",
            emulator(anthropic::routes(), Target::Anthropic),
        )
        .nest("/bedrock", emulator(bedrock::routes(), Target::Bedrock))
        .nest("/openai", emulator(openai::routes(), Target::Openai))
        .nest("/splunk", emulator(splunk::routes(), Target::Splunk))
        .merge(emulator(cloudwatch::routes(), Target::Cloudwatch))
        .nest("/otlp", emulator(otlp::routes(), Target::Otlp))
        .nest("/sns", sns::routes())
        // STS is served at its root path; with and without the trailing slash.
        .route("/sts", axum::routing::post(sts::assume))
        .route("/sts/", axum::routing::post(sts::assume))
        .nest("/idp", idp::routes())
        .nest("/_sandbox", control::routes())
        .with_state(state)
}

/// The edge of every emulator: bound the body, apply an injected fault, and
/// record the request with the status it got.
async fn intercept(
    State((state, target)): State<(Arc<SandboxState>, Target)>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map(|o| o.0.clone())
        .unwrap_or_else(|| parts.uri.clone());
    let path = uri.path().to_owned();
    let mut recorded = RecordedRequest {
        seq: 0,
        received_at: chrono::Utc::now(),
        target,
        method: parts.method.to_string(),
        path: record::redact_path(target, &path),
        query: uri.query().map(str::to_owned),
        headers: record::redact_headers(&parts.headers),
        body: None,
        status: 0,
        faulted: false,
    };
    let bytes = match axum::body::to_bytes(body, target.body_bytes_max()).await {
        Ok(b) => b,
        Err(_) => {
            let resp = faults::target_error(target, &path, StatusCode::PAYLOAD_TOO_LARGE, None);
            recorded.status = resp.status().as_u16();
            state.recorder.push(recorded);
            return resp;
        }
    };
    recorded.body = record::redact_body(&bytes);
    let fault = state.faults.next(target);
    if let Some(ms) = fault.and_then(|f| f.delay_ms) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if fault.is_some_and(|f| f.reset) {
        recorded.faulted = true;
        tracing::debug!(target = %target, method = %recorded.method, path = %recorded.path, "sandbox drops the connection");
        state.recorder.push(recorded);
        // Unwinding the connection's task closes the socket with no answer at
        // all (what a reset looks like to the client); `resume_unwind` runs no
        // panic hook, so nothing is printed.
        std::panic::resume_unwind(Box::new("sandbox: injected connection reset"));
    }
    let resp = match fault.and_then(|f| f.status.map(|s| (s, f.retry_after_secs))) {
        Some((status, retry_after)) => {
            recorded.faulted = true;
            faults::target_error(target, &path, status, retry_after)
        }
        None => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    };
    recorded.status = resp.status().as_u16();
    tracing::debug!(target = %target, method = %recorded.method, path = %recorded.path, status = recorded.status, faulted = recorded.faulted, "sandbox request");
    state.recorder.push(recorded);
    resp
}

/// A running sandbox server.
#[derive(Debug)]
pub struct Sandbox {
    state: Arc<SandboxState>,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Sandbox {
    /// Bind `cfg.listen` and serve in the background until [`Sandbox::shutdown`]
    /// (or until the `Sandbox` is dropped).
    pub async fn start(cfg: SandboxConfig) -> std::io::Result<Sandbox> {
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SandboxState::new(&cfg));
        let mut base = addr;
        if base.ip().is_unspecified() {
            base.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let _ = state.base_url.set(format!("http://{base}"));
        let app = router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender also stops the server.
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, "sandbox listening");
        Ok(Sandbox {
            state,
            addr,
            stop,
            task,
        })
    }

    /// `http://127.0.0.1:PORT` (an unspecified listen address is reached via loopback).
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        format!("http://{addr}")
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn servicenow_url(&self) -> String {
        format!("{}/servicenow", self.base_url())
    }

    /// ServiceNow's OAuth token endpoint (`<servicenow_url>/oauth_token.do`).
    pub fn servicenow_token_url(&self) -> String {
        format!("{}/servicenow/oauth_token.do", self.base_url())
    }

    pub fn pagerduty_url(&self) -> String {
        format!("{}/pagerduty", self.base_url())
    }

    /// Base URL of the PagerDuty REST API emulator (`/incidents` is appended).
    pub fn pagerduty_api_url(&self) -> String {
        format!("{}/pagerduty/rest", self.base_url())
    }

    /// The PagerDuty OAuth token endpoint emulator.
    pub fn pagerduty_token_url(&self) -> String {
        format!("{}/pagerduty/oauth/token", self.base_url())
    }

    pub fn anthropic_url(&self) -> String {
        format!("{}/anthropic", self.base_url())
    }

    /// Base URL for the Bedrock client (`/model/{id}/converse` is appended).
    pub fn bedrock_url(&self) -> String {
        format!("{}/bedrock", self.base_url())
    }

    /// Base URL for the OpenAI-compatible client (`/v1/chat/completions` is appended).
    pub fn openai_url(&self) -> String {
        format!("{}/openai", self.base_url())
    }

    /// Base URL of the Splunk HEC emulator (`/services/collector/event` is appended).
    pub fn splunk_url(&self) -> String {
        format!("{}/splunk", self.base_url())
    }

    /// The CloudWatch Logs endpoint (`POST <endpoint>/`).
    pub fn cloudwatch_url(&self) -> String {
        format!("{}/cloudwatch", self.base_url())
    }

    /// Base URL of the OTLP/HTTP receiver (`/v1/logs` is appended).
    pub fn otlp_url(&self) -> String {
        format!("{}/otlp", self.base_url())
    }

    /// The STS endpoint (`sts_base_url`) of the `AssumeRoleWithWebIdentity` emulator.
    pub fn sts_url(&self) -> String {
        format!("{}/sts", self.base_url())
    }

    /// Where the SNS emulator serves its signing certificate (plain http on
    /// loopback: the gate accepts it only with `allow_insecure_loopback_cert_urls`).
    pub fn sns_cert_url(&self) -> String {
        format!("{}/sns/cert.pem", self.base_url())
    }

    /// A `SubscribeURL` for `topic_arn` pointing at the emulator.
    pub fn sns_subscribe_url(&self, topic_arn: &str, token: &str) -> String {
        format!(
            "{}/sns/confirm?Action=ConfirmSubscription&TopicArn={}&Token={}",
            self.base_url(),
            sns::encode_query_value(topic_arn),
            sns::encode_query_value(token)
        )
    }

    /// The Slack incoming-webhook URL for `token`, issuing the token (it is
    /// then valid; any other token answers 404 `no_service`).
    pub fn slack_webhook_url(&self, token: &str) -> String {
        self.issue(token);
        format!("{}/bridge/slack/{token}", self.base_url())
    }

    /// The Teams Workflows webhook URL for `token`, issuing the token.
    pub fn teams_webhook_url(&self, token: &str) -> String {
        self.issue(token);
        format!("{}/bridge/teams/{token}", self.base_url())
    }

    /// The URL of signed-webhook receiver `name`, registering it with `secret`.
    pub fn signed_webhook_url(&self, name: &str, secret: &str) -> String {
        if let Err(e) = self.state.register_signed_webhook(name, secret) {
            tracing::warn!(error = %e, "receiver not registered; its URL will answer 404");
        }
        format!("{}/bridge/signed/{name}", self.base_url())
    }

    fn issue(&self, token: &str) {
        if let Err(e) = self.state.issue_webhook(token) {
            tracing::warn!(error = %e, "webhook not issued; its URL will answer 404");
        }
    }

    pub fn state(&self) -> &SandboxState {
        &self.state
    }

    /// The shared state, for handing to other components.
    pub fn state_arc(&self) -> Arc<SandboxState> {
        self.state.clone()
    }

    /// Stop accepting, finish in-flight requests, and wait for the server.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "sandbox server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "sandbox server task failed"),
        }
    }
}

/// Serve the sandbox on `cfg.listen` until Ctrl-C (for `triage-gate sandbox`).
pub async fn serve_forever(cfg: SandboxConfig) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(SandboxState::new(&cfg));
    tracing::info!(%addr, "sandbox listening; Ctrl-C stops it");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %e, "cannot listen for Ctrl-C; serving until killed");
                std::future::pending::<()>().await;
            }
        })
        .await
}
