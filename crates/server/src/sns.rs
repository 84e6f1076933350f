//! `POST /v1/events/cloudwatch-sns`: AWS SNS over HTTP(S), verified before
//! anything is accepted.
//!
//! Every message, whatever its type: signature fields present, `Timestamp`
//! inside `replay_window_secs`, `SigningCertURL` on the allow-list (https,
//! `cert_host_pattern`, `.pem`; loopback http only with
//! `allow_insecure_loopback_cert_urls`), certificate fetched without
//! redirects, bounded in size and time and cached, signature valid. Any
//! failure is 403 problem+json and no run; an unreachable certificate host is
//! 503 with Retry-After (SNS retries 5xx; a 4xx would drop the message).
//!
//! Then by type: `Notification` -> normalized and accepted like every source
//! (202), or 200 for a `MessageId` already accepted (SNS redelivers with the
//! same ID); `SubscriptionConfirmation` -> `GET SubscribeURL` only if the
//! topic is in `topic_arns` and the URL is on an allowed host, else 403;
//! `UnsubscribeConfirmation` -> logged, 200.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::json;
use tg_model::Source;
use tg_normalize::sns::{
    CERT_PEM_BYTES_MAX, CertUrlPolicy, Envelope, MessageType, SigningCert, SnsError,
    check_timestamp, verify,
};

use crate::AppState;
use crate::http::{accept_body, body_problem, normalize_problem};
use crate::metrics as m;
use crate::problem::Problem;

/// Bytes of a confirmation answer read (and discarded).
pub const CONFIRM_BODY_BYTES_MAX: usize = 64 * 1024;
/// Seconds SNS is told to wait when a certificate cannot be fetched.
pub const RETRY_AFTER_SECS: u64 = 20;

const LABEL: &str = "cloudwatch-sns";

/// Settings of the SNS source, from `sources.sns`.
#[derive(Debug, Clone)]
pub struct SnsSettings {
    pub topic_arns: BTreeSet<String>,
    pub policy: CertUrlPolicy,
    pub replay_window_secs: i64,
    pub fetch_timeout: Duration,
    pub cert_cache_max: usize,
    pub cert_cache_ttl: chrono::Duration,
    pub message_ids_max: usize,
    /// The certificate authorities the certificate host may chain to (`tls.ca_file`).
    pub tls: tg_identity::TrustRoots,
}

impl Default for SnsSettings {
    fn default() -> Self {
        SnsSettings {
            topic_arns: BTreeSet::new(),
            policy: CertUrlPolicy::default(),
            replay_window_secs: 3600,
            fetch_timeout: Duration::from_secs(5),
            cert_cache_max: 32,
            cert_cache_ttl: chrono::Duration::hours(24),
            message_ids_max: 10_000,
            tls: tg_identity::TrustRoots::bundled(),
        }
    }
}

struct CachedCert {
    cert: Arc<SigningCert>,
    fetched_at: DateTime<Utc>,
}

/// Recently accepted `MessageId`s, bounded, oldest evicted first.
#[derive(Default)]
struct SeenIds {
    order: VecDeque<(String, DateTime<Utc>)>,
    ids: HashSet<String>,
}

/// The verifier and its caches; one per pipeline.
pub struct SnsVerifier {
    settings: SnsSettings,
    http: reqwest::Client,
    certs: Mutex<HashMap<String, CachedCert>>,
    seen: Mutex<SeenIds>,
}

impl std::fmt::Debug for SnsVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnsVerifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Why a message was not verified.
enum Refusal {
    /// 403: forged, stale, unsigned, disallowed URL, bad certificate.
    Forbidden(SnsError),
    /// 503: the certificate host did not answer usefully; SNS should retry.
    Unavailable(String),
}

impl SnsVerifier {
    pub fn new(settings: SnsSettings) -> anyhow::Result<SnsVerifier> {
        let http = settings
            .tls
            .client_builder()
            // A redirect could lead anywhere: the allow-list covers only the URL we were given.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.fetch_timeout)
            .connect_timeout(settings.fetch_timeout)
            .build()?;
        Ok(SnsVerifier {
            settings,
            http,
            certs: Mutex::new(HashMap::new()),
            seen: Mutex::new(SeenIds::default()),
        })
    }

    /// Certificates currently cached.
    pub fn cached_certs(&self) -> usize {
        self.certs.lock().map(|c| c.len()).unwrap_or(0)
    }

    async fn authenticate(&self, env: &Envelope, now: DateTime<Utc>) -> Result<(), Refusal> {
        let forbid = Refusal::Forbidden;
        if env.signature.as_deref().is_none_or(str::is_empty) {
            return Err(forbid(SnsError::Unsigned("Signature")));
        }
        let cert_url = env
            .signing_cert_url
            .as_deref()
            .ok_or(SnsError::Unsigned("SigningCertURL"))
            .map_err(forbid)?;
        if env.signature_version.is_none() {
            return Err(forbid(SnsError::Unsigned("SignatureVersion")));
        }
        check_timestamp(env, now, self.settings.replay_window_secs).map_err(forbid)?;
        let url = self
            .settings
            .policy
            .check_cert_url(cert_url)
            .map_err(forbid)?;
        let cert = self.certificate(url, now).await?;
        verify(env, &cert).map_err(forbid)?;
        if env.kind == MessageType::Notification
            && !self.settings.topic_arns.is_empty()
            && !self.settings.topic_arns.contains(&env.topic_arn)
        {
            return Err(forbid(SnsError::TopicNotAllowed));
        }
        Ok(())
    }

    async fn certificate(
        &self,
        url: reqwest::Url,
        now: DateTime<Utc>,
    ) -> Result<Arc<SigningCert>, Refusal> {
        let key = url.as_str().to_owned();
        if let Ok(certs) = self.certs.lock()
            && let Some(c) = certs.get(&key)
            && c.fetched_at + self.settings.cert_cache_ttl > now
            && c.cert.not_after() > now
        {
            return Ok(c.cert.clone());
        }
        let unavailable = |what: String| Refusal::Unavailable(what);
        let mut resp = self.http.get(url).send().await.map_err(|e| {
            let why = match tg_identity::trust::certificate_failure(&e) {
                Some(tls) => tls.to_owned(),
                None => e.to_string(),
            };
            unavailable(format!("cannot fetch the signing certificate: {why}"))
        })?;
        let status = resp.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(unavailable(format!(
                "the signing certificate host answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(Refusal::Forbidden(SnsError::Certificate(format!(
                "fetching it answered {status}"
            ))));
        }
        let mut pem = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| unavailable(format!("cannot read the signing certificate: {e}")))?
        {
            if pem.len() + chunk.len() > CERT_PEM_BYTES_MAX {
                return Err(Refusal::Forbidden(SnsError::Certificate(format!(
                    "larger than {CERT_PEM_BYTES_MAX} bytes"
                ))));
            }
            pem.extend_from_slice(&chunk);
        }
        let cert = Arc::new(SigningCert::from_pem(&pem, now).map_err(Refusal::Forbidden)?);
        if let Ok(mut certs) = self.certs.lock() {
            if certs.len() >= self.settings.cert_cache_max && !certs.contains_key(&key) {
                let oldest = certs
                    .iter()
                    .min_by_key(|(_, c)| c.fetched_at)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    certs.remove(&k);
                }
            }
            certs.insert(
                key,
                CachedCert {
                    cert: cert.clone(),
                    fetched_at: now,
                },
            );
        }
        Ok(cert)
    }

    /// Claims `id` for acceptance; false if it was accepted inside the replay window.
    fn claim(&self, id: &str, now: DateTime<Utc>) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return true;
        };
        let horizon = now - chrono::Duration::seconds(self.settings.replay_window_secs);
        while let Some((old, at)) = seen.order.front().cloned() {
            if at >= horizon && seen.order.len() < self.settings.message_ids_max {
                break;
            }
            seen.order.pop_front();
            seen.ids.remove(&old);
        }
        if !seen.ids.insert(id.to_owned()) {
            return false;
        }
        seen.order.push_back((id.to_owned(), now));
        true
    }

    /// Forgets a claim whose acceptance failed, so SNS's retry is not dropped.
    fn release(&self, id: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.ids.remove(id);
            seen.order.retain(|(i, _)| i != id);
        }
    }

    async fn confirm(&self, env: &Envelope) -> Result<Response, Problem> {
        if !self.settings.topic_arns.contains(&env.topic_arn) {
            m::rejected(LABEL, "forbidden");
            tracing::warn!(topic_arn = %env.topic_arn, "SNS subscription for an unconfigured topic refused");
            return Err(forbidden(&SnsError::TopicNotAllowed));
        }
        let raw = env
            .subscribe_url
            .as_deref()
            .ok_or(SnsError::MissingField("SubscribeURL"))
            .map_err(|e| forbidden(&e))?;
        let url = self
            .settings
            .policy
            .check_subscribe_url(raw, &env.topic_arn)
            .map_err(|e| {
                m::rejected(LABEL, "forbidden");
                forbidden(&e)
            })?;
        let failed = |detail: String| {
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "sns-confirmation-failed",
                "Subscription not confirmed",
                detail,
            )
        };
        let mut resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| failed(format!("GET SubscribeURL failed: {}", e.without_url())))?;
        let status = resp.status();
        let mut read = 0usize;
        while let Ok(Some(chunk)) = resp.chunk().await {
            read += chunk.len();
            if read > CONFIRM_BODY_BYTES_MAX {
                break;
            }
        }
        if !status.is_success() {
            return Err(failed(format!("GET SubscribeURL answered {status}")));
        }
        tracing::info!(topic_arn = %env.topic_arn, "SNS subscription confirmed");
        Ok((
            StatusCode::OK,
            Json(json!({"status": "confirmed", "topic_arn": env.topic_arn})),
        )
            .into_response())
    }
}

fn forbidden(e: &SnsError) -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "sns-not-verified",
        "SNS message not verified",
        e.to_string(),
    )
}

/// The handler of `POST /v1/events/cloudwatch-sns`. SNS sends JSON as
/// `text/plain`, so the content type is not checked.
pub(crate) async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    m::received(LABEL);
    let body = body.map_err(|e| body_problem(&state, LABEL, &e))?;
    let env = Envelope::parse(&body, &state.pipeline.normalize)
        .map_err(|e| normalize_problem(LABEL, &e))?;
    if let Some(h) = headers.get("x-amz-sns-message-type")
        && h.as_bytes() != env.kind.as_str().as_bytes()
    {
        m::rejected(LABEL, "invalid");
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-event",
            "Malformed event",
            "x-amz-sns-message-type differs from the message's Type",
        )
        .field("Type"));
    }
    let now = state.clock.now();
    let sns = &state.pipeline.sns;
    match sns.authenticate(&env, now).await {
        Ok(()) => {}
        Err(Refusal::Forbidden(e)) => {
            m::rejected(LABEL, "forbidden");
            // The MessageId is the sender's text: redacted before it is logged.
            let message_id = state
                .pipeline
                .normalize
                .redactor
                .redact_line(&env.message_id);
            tracing::warn!(message_id = %tg_engine::truncate(&message_id, 128), reason = %e, "SNS message refused");
            return Err(forbidden(&e));
        }
        Err(Refusal::Unavailable(detail)) => {
            m::rejected(LABEL, "unavailable");
            tracing::warn!(%detail, "SNS signing certificate unavailable");
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "sns-cert-unavailable",
                "Signing certificate unavailable",
                "the signing certificate could not be fetched; nothing was accepted, retry later",
            )
            .retry_after(RETRY_AFTER_SECS));
        }
    }
    match env.kind {
        MessageType::Notification => {
            if !sns.claim(&env.message_id, now) {
                return Ok((
                    StatusCode::OK,
                    Json(json!({"status": "duplicate", "runs": []})),
                )
                    .into_response());
            }
            // The store remembers the MessageId too: a restart or another
            // replica does not accept SNS's redelivery again.
            let replay = crate::http::Replay {
                key: tg_store::ReplayKey {
                    key: sns_replay_key(&env.topic_arn, &env.message_id),
                    until: now
                        .timestamp()
                        .saturating_add(sns.settings.replay_window_secs),
                },
                answer: crate::http::ReplayAnswer::Duplicate,
            };
            let result = accept_body(
                &state,
                Source::CloudwatchSns,
                &body,
                &headers,
                crate::http::Submitter {
                    label: Some("sns-signature".to_owned()),
                    sender: Some(format!("sns:{}", env.topic_arn)),
                },
                Some(replay),
            )
            .await;
            if result.is_err() {
                sns.release(&env.message_id);
            }
            result
        }
        MessageType::SubscriptionConfirmation => sns.confirm(&env).await,
        MessageType::UnsubscribeConfirmation => {
            let topic_arn = state
                .pipeline
                .normalize
                .redactor
                .redact_line(&env.topic_arn);
            tracing::info!(%topic_arn, "SNS unsubscribe confirmation received");
            Ok((StatusCode::OK, Json(json!({"status": "unsubscribed"}))).into_response())
        }
    }
}

/// The store's replay key of an SNS message: its topic and `MessageId`.
fn sns_replay_key(topic_arn: &str, message_id: &str) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"sns\0");
    h.update(topic_arn.as_bytes());
    h.update(b"\0");
    h.update(message_id.as_bytes());
    hex::encode(h.finalize())
}
