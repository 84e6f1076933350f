//! `POST /v1/review/{id}/approve` and `/reject`: a human decides a drafted
//! action. An approval is re-checked at approval time (dedup, storm mode,
//! paging budgets) and, when it holds, goes to the outbox like any executed
//! action; every decision, and every refused approval, is an audit step record
//! with the reviewer's identity.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tg_store::{ReviewError, Verdict};

use crate::AppState;
use crate::problem::Problem;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Body {
    #[serde(default)]
    reason: Option<String>,
    /// Approve only: fields changed before sending.
    #[serde(default)]
    edits: Option<Edits>,
}

/// The fields of a draft a reviewer may change.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Edits {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    severity: Option<tg_model::Severity>,
}

/// What a decision on a shadow service's item says, in the response and the console.
pub(crate) const SHADOW_NOTE: &str =
    "shadow mode: the verdict is recorded as evidence; nothing is sent to any incident tool";

/// Set on the answer to a decision on a shadow service's item.
pub(crate) const SHADOW_HEADER: &str = "x-triage-gate-shadow";

pub(crate) async fn approve(
    state: State<AppState>,
    caller: Option<axum::Extension<tg_identity::Caller>>,
    id: Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    decide(state, caller, id, body, Verdict::Approve).await
}

pub(crate) async fn reject(
    state: State<AppState>,
    caller: Option<axum::Extension<tg_identity::Caller>>,
    id: Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    decide(state, caller, id, body, Verdict::Reject).await
}

#[expect(
    clippy::result_large_err,
    reason = "a Problem is the handler's answer; it is built once per request"
)]
fn check_edits(e: Edits) -> Result<tg_store::DraftEdits, Problem> {
    use tg_model::action::{DETAILS_BYTES_MAX, TITLE_BYTES_MAX};
    let clean = |v: Option<String>, field: &str, max: usize| -> Result<Option<String>, Problem> {
        match v.map(|t| t.trim().to_owned()) {
            None => Ok(None),
            Some(t) if t.is_empty() => {
                Err(bad(format!("edits.{field} is empty")).field(format!("edits.{field}")))
            }
            Some(t) if t.len() > max => Err(bad(format!("edits.{field} is over {max} bytes"))
                .field(format!("edits.{field}"))
                .limit(max.to_string())),
            Some(t) => Ok(Some(t)),
        }
    };
    Ok(tg_store::DraftEdits {
        title: clean(e.title, "title", TITLE_BYTES_MAX)?,
        details: clean(e.details, "details", DETAILS_BYTES_MAX)?,
        severity: e.severity,
    })
}

fn bad(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-body",
        "Invalid body",
        detail,
    )
}

async fn decide(
    State(state): State<AppState>,
    caller: Option<axum::Extension<tg_identity::Caller>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
    verdict: Verdict,
) -> Result<Response, Problem> {
    let id: i64 = id
        .parse()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| Problem::not_found("review item"))?;
    // The body is optional for an approval: empty means no reason.
    let body: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(format!("not a review body: {e}")))?
    };
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > tg_store::REVIEW_REASON_CHARS_MAX)
    {
        return Err(bad(format!(
            "reason is longer than {} characters",
            tg_store::REVIEW_REASON_CHARS_MAX
        ))
        .field("reason")
        .limit(tg_store::REVIEW_REASON_CHARS_MAX.to_string()));
    }
    if verdict == Verdict::Reject && reason.is_none() {
        return Err(bad("a rejection needs a reason").field("reason"));
    }
    let edits = match body.edits {
        None => tg_store::DraftEdits::default(),
        Some(_) if verdict == Verdict::Reject => {
            return Err(bad("edits apply to an approval only").field("edits"));
        }
        Some(e) => check_edits(e)?,
    };
    let by = crate::auth::submitted_by(caller.as_ref().map(|c| &c.0))
        .unwrap_or_else(|| "anonymous (identity disabled)".to_owned());
    let now = state.clock.now();
    let policy = state.pipeline.policy();
    match state
        .store
        .review_decide(
            id,
            verdict,
            &by,
            reason.as_deref(),
            &edits,
            &state.pipeline.storm,
            &policy.catalog,
            now,
        )
        .await
    {
        Ok(done) => {
            let verdict_text = match verdict {
                Verdict::Approve => "approved",
                Verdict::Reject => "rejected",
            };
            tracing::info!(action_id = id, run_id = %done.action.run_id, by = %by, verdict = verdict_text, shadow = done.shadow, "review decided");
            state.audited.notify_waiters();
            if verdict == Verdict::Approve && !done.shadow {
                state.outbox.notify_one();
            }
            let mut body = crate::actions_api::action_json(&done.action);
            if let Some(obj) = body.as_object_mut() {
                obj.insert("verdict".into(), json!(verdict_text));
                obj.insert("by".into(), json!(by));
                obj.insert("conditions".into(), json!(done.conditions));
                // Whether anything will reach an incident tool.
                obj.insert(
                    "sent".into(),
                    json!(verdict == Verdict::Approve && !done.shadow),
                );
                if done.shadow {
                    obj.insert("shadow".into(), json!(true));
                    obj.insert("note".into(), json!(SHADOW_NOTE));
                }
            }
            let mut response = (StatusCode::OK, Json(body)).into_response();
            if done.shadow {
                // Lets the console say so without re-reading the body.
                response.headers_mut().insert(
                    SHADOW_HEADER,
                    axum::http::HeaderValue::from_static("recorded-only"),
                );
            }
            Ok(response)
        }
        Err(ReviewError::NotFound(_)) => Err(Problem::not_found("review item")),
        Err(e @ ReviewError::NotOpen { .. }) => Err(Problem::new(
            StatusCode::CONFLICT,
            "review-closed",
            "Review item is not open",
            e.to_string(),
        )),
        Err(ReviewError::Refused { conditions }) => {
            state.audited.notify_waiters();
            let failed: Vec<String> = conditions
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("{}: {} (needs {})", c.id, c.actual, c.threshold))
                .collect();
            Err(Problem::new(
                StatusCode::CONFLICT,
                "approval-refused",
                "The re-check at approval time failed",
                format!(
                    "not sent; the item stays open (reject it, or approve again later): {}",
                    failed.join("; ")
                ),
            ))
        }
        Err(ReviewError::Store(e)) => Err(Problem::internal("the store cannot be written", &e)),
    }
}

/// How often open drafts are checked for expiry (wall time).
pub const REVIEW_EXPIRY_POLL_MS: u64 = 10_000;

/// Expires the drafts older than `review.expire_after_secs` now; returns how many.
pub async fn expire_due(state: &AppState) -> Result<usize, tg_store::StoreError> {
    let now = state.clock.now();
    let age = chrono::Duration::seconds(
        i64::try_from(state.pipeline.review_expire_after_secs).unwrap_or(i64::MAX / 1000),
    );
    let ids = state.store.expire_reviews(now - age, now).await?;
    if !ids.is_empty() {
        tracing::warn!(
            expired = ids.len(),
            "review items expired undecided (audited, never sent)"
        );
        state.audited.notify_waiters();
    }
    Ok(ids.len())
}

/// Expires undecided drafts until cancelled.
pub async fn expiry_task(state: AppState, token: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(REVIEW_EXPIRY_POLL_MS)) => {}
        }
        if let Err(e) = expire_due(&state).await {
            tracing::error!(error = %e, "cannot expire review items; will retry");
        }
    }
}

/// How often new review items are looked for, to tell their team (wall time).
pub const REVIEW_NOTIFY_POLL_MS: u64 = 2_000;
/// Items listed per team message at most (the rest are counted).
pub const REVIEW_NOTIFY_ITEMS_MAX: usize = 20;
/// The cursor name under which the last notified item id is kept.
const NOTIFY_CURSOR: &str = "review-notify";

/// With `review.notify`, tells each team's chat channel (the webhook of
/// `storm.summary.webhooks`) about its new review items, once: the last
/// notified item id is kept in the store. Best effort: a failed post is
/// retried at the next poll, and never blocks a decision.
pub async fn notify_task(state: AppState, token: tokio_util::sync::CancellationToken) {
    if !state.pipeline.review_notify || state.pipeline.summary.webhooks.is_empty() {
        return;
    }
    let http = match state
        .pipeline
        .summary
        .tls
        .client_builder()
        .timeout(state.pipeline.summary.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "review notifications: cannot build the HTTP client");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(REVIEW_NOTIFY_POLL_MS)) => {}
        }
        if let Err(e) = notify_once(&state, &http).await {
            tracing::warn!(error = %e, "review notification not sent; will retry");
        }
    }
}

/// Posts one message per team with new items; returns how many items were told.
pub async fn notify_once(state: &AppState, http: &reqwest::Client) -> anyhow::Result<usize> {
    let after = state.store.sink_cursor(NOTIFY_CURSOR).await?;
    let items = state.store.review_queue(tg_store::LIST_ROWS_MAX).await?;
    let fresh: Vec<&tg_store::ReviewItem> = items
        .iter()
        .filter(|i| u64::try_from(i.id).is_ok_and(|id| id > after))
        .collect();
    let Some(last) = fresh.iter().filter_map(|i| u64::try_from(i.id).ok()).max() else {
        return Ok(0);
    };
    let cfg = &state.pipeline.summary;
    let mut by_team: std::collections::BTreeMap<&str, Vec<&tg_store::ReviewItem>> =
        std::collections::BTreeMap::new();
    for i in &fresh {
        by_team.entry(i.team.as_str()).or_default().push(i);
    }
    for (team, items) in by_team {
        let Some(url) = cfg.webhooks.get(team) else {
            continue;
        };
        let mut text = format!(
            "{} new item(s) for {team} in the triage-gate review queue:",
            items.len()
        );
        for i in items.iter().take(REVIEW_NOTIFY_ITEMS_MAX) {
            text.push_str(&format!(
                "\n- #{} {} {} ({}): {} [{}]",
                i.id,
                i.action.as_str(),
                i.service,
                i.environment,
                i.title,
                i.reason
            ));
        }
        if items.len() > REVIEW_NOTIFY_ITEMS_MAX {
            text.push_str(&format!(
                "\n... and {} more",
                items.len() - REVIEW_NOTIFY_ITEMS_MAX
            ));
        }
        let body = if cfg.teams_format {
            json!({ "type": "message", "text": text })
        } else {
            json!({ "text": text })
        };
        match http.post(url.expose()).json(&body).send().await {
            Ok(r) if r.status().is_success() => {}
            // The URL is a secret: the status only.
            Ok(r) => anyhow::bail!("the {team} webhook answered {}", r.status()),
            Err(e) => anyhow::bail!(
                "the {team} webhook could not be reached ({})",
                e.without_url()
            ),
        }
    }
    state
        .store
        .advance_sink(NOTIFY_CURSOR, last, state.clock.now())
        .await?;
    Ok(fresh.len())
}
