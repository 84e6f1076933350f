//! The HTTP API. Tower layers only at the edge (body limit, timeout,
//! concurrency); handlers are thin: parse, call the store, answer.

use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tg_model::{CorrelationId, RunId, Source};
use tg_normalize::ErrorKind;
use tg_store::NewRun;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;

use crate::AppState;
use crate::metrics as m;
use crate::problem::Problem;

/// Header a caller may use to carry its own correlation ID.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// Seconds a client is told to wait when the backlog is full or the store is down.
pub const RETRY_AFTER_SECS: u64 = 5;

/// The router over a shared state.
pub fn app(state: AppState) -> Router {
    let limits = state.limits;
    Router::new()
        .route("/v1/events/cloudwatch-sns", post(crate::sns::ingest))
        .route("/v1/events/{source}", post(ingest))
        .route("/v1/runs/{run_id}", get(get_run))
        .route("/v1/review", get(review))
        .route("/v1/review/{id}/approve", post(crate::review::approve))
        .route("/v1/review/{id}/reject", post(crate::review::reject))
        .route("/v1/actions", get(crate::actions_api::list))
        .route("/v1/actions/{id}", get(crate::actions_api::get))
        .route("/v1/actions/{id}/retry", post(crate::actions_api::retry))
        .route("/v1/storm", get(crate::storm::get_storm))
        .route("/v1/audit", get(crate::audit::get_audit))
        .route("/v1/reports/autonomy", get(crate::reports::autonomy))
        .route("/v1/evidence/incidents", post(crate::evidence::report))
        .route(
            "/v1/autonomy",
            get(crate::autonomy::get).post(crate::autonomy::set),
        )
        .route("/v1/audit/sinks", get(crate::audit::get_sinks))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        // The web console (its own sign-in and sessions; docs/console.md).
        .merge(crate::ui::routes(&state))
        .fallback(|| async { Problem::not_found("route") })
        // Identity before anything reads the body (an anonymous caller costs no parsing).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authorize,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    Duration::from_millis(limits.request_timeout_ms),
                ))
                .layer(tower::limit::ConcurrencyLimitLayer::new(
                    limits.concurrency_max,
                ))
                .layer(DefaultBodyLimit::max(limits.body_bytes_max)),
        )
        .with_state(state)
}

fn source_from_path(s: &str) -> Option<Source> {
    Some(match s {
        "generic" => Source::Generic,
        "alertmanager" => Source::Alertmanager,
        "cloudevents" => Source::Cloudevents,
        "splunk" => Source::Splunk,
        "grafana" => Source::Grafana,
        "datadog" => Source::Datadog,
        "eventbridge" => Source::Eventbridge,
        _ => return None,
    })
}

#[derive(Debug, Serialize)]
struct Accepted {
    runs: Vec<AcceptedRun>,
}

#[derive(Debug, Serialize)]
struct AcceptedRun {
    run_id: RunId,
    correlation_id: CorrelationId,
}

async fn ingest(
    State(state): State<AppState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    caller: Option<axum::Extension<tg_identity::Caller>>,
    replay: Option<axum::Extension<tg_store::ReplayKey>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let submitted_by = crate::auth::submitted_by(caller.as_ref().map(|c| &c.0));
    let sender = crate::auth::sender_identity(caller.as_ref().map(|c| &c.0));
    let replay = replay.map(|r| Replay {
        key: r.0,
        answer: ReplayAnswer::Conflict,
    });
    let Some(src) = source_from_path(&source) else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-source",
            "Unknown source",
            format!(
                "no adapter for source {:?}; see docs/api.md for the list",
                truncate(&source, 64)
            ),
        ));
    };
    let label = src.as_str();
    m::received(label);
    let body = body.map_err(|e| body_problem(&state, label, &e))?;
    let who = Submitter {
        label: submitted_by,
        sender,
    };
    accept_body(&state, src, &body, &headers, who, replay).await
}

/// Who submitted a body, as the gate verified it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Submitter {
    /// Stored on the run (`submitted_by`).
    pub label: Option<String>,
    /// Set on every event ([`tg_model::NormalizedEvent::sender`]).
    pub sender: Option<String>,
}

/// A delivery to accept at most once inside its window.
#[derive(Debug, Clone)]
pub(crate) struct Replay {
    pub key: tg_store::ReplayKey,
    pub answer: ReplayAnswer,
}

/// What a repeat inside the window is answered.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReplayAnswer {
    /// 409 `signature_replayed` (signed webhooks).
    Conflict,
    /// 200 `{"status": "duplicate"}` (SNS redelivers with the same MessageId).
    Duplicate,
}

/// The problem for an over-long or unreadable body.
pub(crate) fn body_problem(state: &AppState, label: &'static str, e: &BytesRejection) -> Problem {
    m::rejected(label, "body");
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!(
                "the body is larger than body_bytes_max ({} bytes)",
                state.limits.body_bytes_max
            ),
        )
        .limit("body_bytes_max")
    } else {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "unreadable-body",
            "Unreadable body",
            e.body_text(),
        )
    }
}

/// The problem for a payload the normalizer refused (400/413).
pub(crate) fn normalize_problem(label: &'static str, e: &tg_normalize::NormalizeError) -> Problem {
    m::rejected(label, "invalid");
    let (status, slug, title) = match e.kind {
        ErrorKind::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
        ),
        ErrorKind::LimitExceeded => (
            StatusCode::BAD_REQUEST,
            "limit-exceeded",
            "A payload limit was exceeded",
        ),
        ErrorKind::Malformed => (
            StatusCode::BAD_REQUEST,
            "malformed-event",
            "Malformed event",
        ),
        ErrorKind::DuplicateKey => (StatusCode::BAD_REQUEST, "duplicate-key", "Duplicate key"),
    };
    let mut p = Problem::new(status, slug, title, e.message.clone()).field(e.field.clone());
    if matches!(e.kind, ErrorKind::TooLarge | ErrorKind::LimitExceeded) {
        p = p.limit(limit_name(&e.message));
    }
    p
}

/// Normalizes `body` as `src` and accepts its events whole (202), or refuses it whole.
pub(crate) async fn accept_body(
    state: &AppState,
    src: Source,
    body: &[u8],
    headers: &HeaderMap,
    who: Submitter,
    replay: Option<Replay>,
) -> Result<Response, Problem> {
    let label = src.as_str();
    let now = state.clock.now();
    let events = normalize_body(state, src, body, who.sender.as_ref(), now).map_err(|p| *p)?;
    let submitted_by = who.label;
    admit(state, label, events.len()).await?;

    let caller_correlation = headers
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| CorrelationId::is_valid(s))
        // A caller's ID is stored, logged and sent on verbatim: one the
        // redactor would change (an access key, a JWT) is not used.
        .filter(|s| state.pipeline.normalize.redactor.redact_line(s) == *s)
        .map(CorrelationId::from);
    let runs = new_runs(events, caller_correlation.as_ref(), submitted_by.as_ref());
    let accepted = state
        .store
        .accept_once(&runs, replay.as_ref().map(|r| &r.key), now)
        .await;
    if let (Err(tg_store::StoreError::Replayed), Some(r)) = (&accepted, &replay) {
        m::rejected(label, "replay");
        return match r.answer {
            ReplayAnswer::Conflict => {
                crate::metrics::auth_refused("signature_replayed");
                Err(Problem::new(
                    StatusCode::CONFLICT,
                    "signature-refused",
                    "Signed delivery refused",
                    "this delivery was already accepted (replay)",
                )
                .field("signature_replayed"))
            }
            ReplayAnswer::Duplicate => Ok((
                StatusCode::OK,
                Json(json!({"status": "duplicate", "runs": []})),
            )
                .into_response()),
        };
    }
    if let Err(e) = accepted {
        state.store.observe_error(&e);
        m::rejected(label, "store");
        return Err(match state.store.health().refusal() {
            // The store says why (and logged it when it started failing).
            Some(cause) => store_unavailable(cause),
            None => Problem::internal("the store cannot accept events", &e),
        });
    }
    m::accepted(label, runs.len() as u64);
    // INVARIANT: committed above, so the 202 below never promises a lost event.
    state.work.notify_one();
    let body = Accepted {
        runs: runs
            .into_iter()
            .map(|r| AcceptedRun {
                run_id: r.run_id,
                correlation_id: r.correlation_id,
            })
            .collect(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Normalizes one body as `src`: its events, each carrying the verified
/// sender, or the problem that refuses the body whole (400/403/413).
fn normalize_body(
    state: &AppState,
    src: Source,
    body: &[u8],
    sender: Option<&String>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<tg_model::NormalizedEvent>, Box<Problem>> {
    let label = src.as_str();
    let normalize = tg_normalize::normalizer(src)
        .ok_or_else(|| Box::new(Problem::not_found("source adapter")))?;
    let mut events = normalize(body, &state.pipeline.normalize, now)
        .map_err(|e| Box::new(normalize_problem(label, &e)))?;
    if let Some(sender) = sender {
        // A bound sender claims only its own origins (identity.inbound.origins).
        if let Some(bound) = state.pipeline.origin_bindings.get(sender)
            && let Some(e) = events.iter().find(|e| !bound.contains(&e.origin))
        {
            m::rejected(label, "origin");
            return Err(Box::new(Problem::new(
                StatusCode::FORBIDDEN,
                "origin-not-bound",
                "Origin not bound to the sender",
                format!(
                    "sender {sender} may claim only the origins {bound:?} (identity.inbound.origins); \
                     an event claims {:?}",
                    truncate(&e.origin, 64)
                ),
            )
            .field("origin")));
        }
    }
    for e in &mut events {
        e.sender = sender.cloned();
    }
    if events.is_empty() {
        m::rejected(label, "empty");
        return Err(Box::new(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-event",
            "Malformed event",
            "the payload holds no alerts",
        )));
    }
    Ok(events)
}

/// Whether `n` more runs may be accepted now: refused (503) while the store
/// cannot commit, the disk is below its floor, or the backlog is full.
async fn admit(state: &AppState, label: &'static str, n: usize) -> Result<(), Problem> {
    // INVARIANT: no 202 while the store cannot commit or the disk is below
    // its floor; the refusal is logged once per change of state, not here.
    if let Some(cause) = state.store.health().refusal() {
        m::rejected(label, "store");
        return Err(store_unavailable(cause));
    }
    // Shed load before accepting rather than accept and fall behind without bound.
    let backlog = state
        .store
        .backlog_estimate()
        .await
        .map_err(|e| Problem::internal("the store cannot be read", &e))?;
    m::backlog(backlog);
    if backlog.saturating_add(i64::try_from(n).unwrap_or(i64::MAX)) > state.limits.backlog_max {
        m::rejected(label, "backlog");
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backlog-full",
            "Backlog full",
            format!(
                "{backlog} runs are waiting, the limit is backlog_max = {}",
                state.limits.backlog_max
            ),
        )
        .limit("backlog_max")
        .retry_after(RETRY_AFTER_SECS));
    }
    Ok(())
}

/// A new run for each event, with a fresh run ID and the caller's
/// correlation ID or a fresh one.
fn new_runs(
    events: Vec<tg_model::NormalizedEvent>,
    correlation: Option<&CorrelationId>,
    submitted_by: Option<&String>,
) -> Vec<NewRun> {
    events
        .into_iter()
        .map(|event| {
            let uuid = uuid::Uuid::now_v7();
            NewRun {
                run_id: RunId(format!("run_{uuid}")),
                correlation_id: correlation
                    .cloned()
                    .unwrap_or_else(|| CorrelationId(format!("tg-{uuid}"))),
                event,
                submitted_by: submitted_by.cloned(),
            }
        })
        .collect()
}

/// Accepts several bodies, in order, in one commit, as one anonymous caller
/// (no HTTP, no replay key): how the simulator hands the intake one time
/// step's events (`crates/sim`), so that their order is the order given and
/// a step costs one commit. Refuses all of them if any is refused. Returns
/// the number of runs accepted.
pub async fn accept_in_order(
    state: &AppState,
    bodies: &[(Source, &[u8])],
) -> Result<usize, Problem> {
    let now = state.clock.now();
    let mut events = Vec::new();
    let mut counts = Vec::with_capacity(bodies.len());
    for (src, body) in bodies {
        m::received(src.as_str());
        let these = normalize_body(state, *src, body, None, now).map_err(|p| *p)?;
        counts.push((src.as_str(), these.len() as u64));
        events.extend(these);
    }
    admit(state, "batch", events.len()).await?;
    let runs = new_runs(events, None, None);
    if let Err(e) = state.store.accept(&runs, now).await {
        state.store.observe_error(&e);
        return Err(Problem::internal("the store cannot accept events", &e));
    }
    for (label, n) in counts {
        m::accepted(label, n);
    }
    state.work.notify_one();
    Ok(runs.len())
}

/// 503 for an event the store cannot take now: nothing of it was stored.
fn store_unavailable(cause: &str) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
        "Store unavailable",
        format!("the store cannot accept events: {cause}; nothing was accepted, retry later"),
    )
    .retry_after(RETRY_AFTER_SECS)
}

/// The limit's config name, when the normalizer's message starts with it.
fn limit_name(message: &str) -> String {
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.ends_with("_max"))
        .unwrap_or("limit")
        .to_owned()
}

fn truncate(s: &str, max: usize) -> String {
    tg_engine::truncate(s, max)
}

async fn get_run(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Response, Problem> {
    if run_id.len() > 64 {
        return Err(Problem::not_found("run"));
    }
    let id = RunId(run_id);
    let run = state
        .store
        .get_run(&id)
        .await
        .map_err(|e| Problem::internal("the store cannot be read", &e))?
        .ok_or_else(|| Problem::not_found("run"))?;
    let actions = state
        .store
        .actions(&id)
        .await
        .map_err(|e| Problem::internal("the store cannot be read", &e))?;
    let audit = state
        .store
        .audit_of(&id)
        .await
        .map_err(|e| Problem::internal("the store cannot be read", &e))?;
    Ok(Json(json!({
        "run_id": run.run_id,
        "correlation_id": run.correlation_id,
        "status": run.status,
        "event": run.event,
        "submitted_by": run.submitted_by,
        "received_at": run.received_at,
        "classification": run.classification,
        "decision": run.decision,
        "actions": actions.iter().map(|a| json!({
            "action": a.kind,
            "outcome": a.outcome,
            "status": a.status,
            "review_state": a.review_state,
            "planned": a.planned,
            "result": a.result,
        })).collect::<Vec<_>>(),
        "audit": audit.map(|r| json!({"seq": r.seq, "hash": r.hash, "prev_hash": r.prev_hash, "actions": r.actions})),
        "completed_at": run.completed_at,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct ReviewQuery {
    #[serde(default)]
    limit: Option<i64>,
    /// Only items of this team (run-level items have no team: left out).
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    service: Option<String>,
    /// Only items whose reason contains this text.
    #[serde(default)]
    reason: Option<String>,
    /// Only items waiting at least this long.
    #[serde(default)]
    min_age_secs: Option<i64>,
}

/// Default and maximum review items per response.
pub const REVIEW_PAGE_DEFAULT: i64 = 100;

async fn review(
    State(state): State<AppState>,
    Query(q): Query<ReviewQuery>,
) -> Result<Response, Problem> {
    let limit = q
        .limit
        .unwrap_or(REVIEW_PAGE_DEFAULT)
        .clamp(1, tg_store::LIST_ROWS_MAX);
    let actions = state
        .store
        .review_queue(limit)
        .await
        .map_err(|e| Problem::internal("the store cannot be read", &e))?;
    let runs = state
        .store
        .runs_needing_review(limit)
        .await
        .map_err(|e| Problem::internal("the store cannot be read", &e))?;
    let mut items: Vec<serde_json::Value> = actions
        .into_iter()
        .map(|i| {
            json!({
                "kind": "action",
                "id": i.id,
                // Exactly what approving would send (editable: title, details, severity).
                "draft": state.pipeline.executor.preview(&i.planned),
                "run_id": i.run_id,
                "action": i.action,
                "service": i.service,
                "team": i.team,
                "environment": i.environment,
                "title": i.title,
                "reason": i.reason,
                "created_at": i.created_at,
            })
        })
        .collect();
    items.extend(runs.into_iter().map(|r| {
        let reason = r
            .decision
            .as_ref()
            .and_then(|d| d.actions.first())
            .map(|a| a.reason.clone())
            .unwrap_or_default();
        json!({
            "kind": "run",
            "run_id": r.run_id,
            "service": r.event.service,
            "environment": r.event.environment,
            "title": r.event.summary,
            "reason": reason,
            "created_at": r.decided_at,
        })
    }));
    // Filters (the store returns the oldest `limit` of each kind; filtering
    // here keeps the queue's order).
    let now = state.clock.now();
    items.retain(|i| {
        let text = |k: &str| {
            i.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        q.team.as_ref().is_none_or(|t| text("team") == *t)
            && q.service.as_ref().is_none_or(|s| text("service") == *s)
            && q.reason
                .as_ref()
                .is_none_or(|r| text("reason").contains(r.as_str()))
            && q.min_age_secs.is_none_or(|min| {
                i.get("created_at")
                    .and_then(|v| {
                        serde_json::from_value::<chrono::DateTime<chrono::Utc>>(v.clone()).ok()
                    })
                    .is_some_and(|at| (now - at).num_seconds() >= min)
            })
    });
    items.sort_by_key(|i| {
        i.get("created_at")
            .and_then(|v| serde_json::from_value::<chrono::DateTime<chrono::Utc>>(v.clone()).ok())
    });
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    // The delivery backlog: actions waiting for an incident tool, and dead letters.
    let outbox = state
        .store
        .outbox_counts(state.clock.now())
        .await
        .map_err(|e| Problem::internal("the store cannot be read", &e))?;
    m::outbox(&outbox);
    Ok(Json(json!({ "items": items, "outbox": outbox })).into_response())
}

/// Readiness per capability. The instance is ready (200) when it can accept
/// without losing anything: the store answers and, with JWT identity, the
/// issuer's keys are usable; otherwise 503 with Retry-After. Action targets are
/// reported per target (`ready: false` while the target's head action is being
/// retried, e.g. the tool or its token endpoint is down): the gate still
/// accepts and queues, so they do not make the instance unready.
async fn ready(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    let health = state.store.health();
    let store_ok = health.refusal().is_none() && state.store.ping().await;
    let (identity_ok, mode) = match &state.pipeline.inbound {
        crate::auth::Inbound::Disabled => (true, "none"),
        crate::auth::Inbound::Jwt(a) => {
            let t = now.timestamp();
            // The last known state: an anonymous probe never makes the
            // gate call its issuer (the warm-up task does, rate-limited).
            (a.ready(t).await, "jwt")
        }
    };
    let identity = json!({"ready": identity_ok, "mode": mode});
    let mut actions = serde_json::Map::new();
    if store_ok && let Ok(c) = state.store.outbox_counts(now).await {
        for (target, b) in &c.by_target {
            actions.insert(
                target.clone(),
                json!({
                    "ready": b.head_attempts == 0,
                    "pending": b.pending,
                    "dead": b.dead,
                    "head_attempts": b.head_attempts,
                    "oldest_pending_at": b.oldest_pending_at,
                }),
            );
        }
    }
    // A target whose token source cannot get a token is not ready, known from
    // the background probe before any action for it queues. Its reason is
    // secret-free (`TokenHealth`). Like a stuck outbox head, it does not make
    // the whole gate unready: events are still accepted and wait in the outbox.
    for (target, source) in &state.pipeline.token_sources {
        let health = source.health();
        // No outbox row for the target: nothing waits (when the store answered).
        let entry = actions.entry(target.clone()).or_insert_with(|| {
            if store_ok {
                json!({"ready": true, "pending": 0, "dead": 0})
            } else {
                json!({"ready": true})
            }
        });
        if let Some(obj) = entry.as_object_mut() {
            if !health.ready {
                obj.insert("ready".into(), json!(false));
                obj.insert("reason".into(), json!(health.reason));
            }
            obj.insert("token".into(), json!(health));
        }
    }
    let ready = store_ok && identity_ok;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "capabilities": {
            "store": match health.refusal() {
                Some(cause) => json!({"ready": false, "reason": cause, "commits": health.failing.is_none(), "disk_low": health.disk_low.is_some()}),
                None => json!({"ready": store_ok}),
            },
            "identity": identity,
            "actions": actions,
        },
    });
    if ready {
        Json(body).into_response()
    } else {
        let mut resp = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        if let Ok(v) = axum::http::HeaderValue::from_str(&RETRY_AFTER_SECS.to_string()) {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        resp
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Guard counters live in the classifiers; copied in at scrape time.
    m::guard(&state.pipeline.classifier.guard_stats());
    crate::outbox::refresh_gauges(&state).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        m::render(),
    )
        .into_response()
}
