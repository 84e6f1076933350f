//! Storm control as seen from outside: `GET /v1/storm` (breakers, paging
//! buckets, held-back pages, recent transitions) and the periodic held-back
//! summary sent to a team's chat webhook at most once per interval.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tg_engine::{GLOBAL_BUCKET, StormSettings};
use tg_model::Secret;
use tg_storm::{BucketConfig, observe};
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::problem::Problem;

/// Transitions listed by `GET /v1/storm`.
pub const STORM_TRANSITIONS_LISTED: i64 = 50;
/// How often (wall time) the summary task looks at the injected clock.
pub const SUMMARY_POLL_MS: u64 = 1_000;
/// Longest summary message, in characters (chat services cap message size).
pub const SUMMARY_TEXT_CHARS_MAX: usize = 3_000;

/// Where held-back summaries go (from `storm.summary`; webhook URLs are secrets).
#[derive(Clone, Default)]
pub struct SummaryConfig {
    pub interval: chrono::Duration,
    pub runs_max: usize,
    /// Team -> webhook URL.
    pub webhooks: BTreeMap<String, Secret>,
    /// `true`: Teams Workflows payload; `false`: Slack.
    pub teams_format: bool,
    pub timeout: Duration,
    /// The certificate authorities the chat webhooks may chain to (`tls.ca_file`);
    /// review notifications use them too.
    pub tls: tg_identity::TrustRoots,
}

impl std::fmt::Debug for SummaryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SummaryConfig")
            .field("interval", &self.interval)
            .field("teams", &self.webhooks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn bucket_config(settings: &StormSettings, key: &str) -> BucketConfig {
    if key == GLOBAL_BUCKET {
        settings.global_bucket
    } else if let Some(service) = key.strip_prefix("page:service:") {
        settings.service_bucket_for(service)
    } else {
        settings.team_bucket
    }
}

/// `GET /v1/storm`: the storm state, as of the injected clock.
pub(crate) async fn get_storm(State(state): State<AppState>) -> Result<Response, Problem> {
    Ok(Json(snapshot(&state).await?).into_response())
}

/// The storm state `GET /v1/storm` answers (the console shows it too).
pub(crate) async fn snapshot(state: &AppState) -> Result<Value, Problem> {
    let now = state.clock.now();
    let settings = &state.pipeline.storm;
    let read = |e: tg_store::StoreError| Problem::internal("the store cannot be read", &e);
    let mut breakers = Vec::new();
    for (environment, stored) in state.store.storm_breakers().await.map_err(read)? {
        let sightings = state
            .store
            .storm_sightings(&environment)
            .await
            .map_err(read)?;
        // A time check without an event: the current count, and whether the
        // cool-down is over (`breaker_task` closes it within one tick).
        let o = observe(
            &settings.breaker,
            settings
                .breaker
                .open_threshold(state.pipeline.policy().catalog.services.len()),
            &environment,
            Some(&stored),
            &sightings,
            None,
            now,
        );
        breakers.push(json!({
            "environment": environment,
            "open": stored.open,
            "since": stored.since,
            "storm_id": stored.storm_id,
            "services": o.services,
            "open_threshold": o.open_threshold,
            "close_services": settings.breaker.close_services,
            "cooldown_secs": settings.breaker.cooldown.num_seconds(),
            "window_secs": settings.breaker.window.num_seconds(),
            "quiet_since": o.state.quiet_since,
            "cooldown_over": o.transition.is_some(),
            "peak_services": stored.peak_services,
            "origins": stored.origins,
            "umbrella_run": stored.umbrella_run,
            "umbrella_mim_run": stored.umbrella_mim_run,
        }));
    }
    let buckets: Vec<Value> = state
        .store
        .buckets()
        .await
        .map_err(read)?
        .into_iter()
        .map(|(key, b)| {
            let cfg = bucket_config(settings, &key);
            json!({
                "key": key,
                "tokens": b.available(cfg, now),
                "burst": cfg.burst,
                "per_hour": cfg.per_hour,
                "updated_at": b.updated_at,
            })
        })
        .collect();
    let held = state.store.held_back(None, None).await.map_err(read)?;
    let transitions = state
        .store
        .storm_transitions(STORM_TRANSITIONS_LISTED)
        .await
        .map_err(read)?;
    Ok(json!({
        "now": now,
        "breakers": breakers,
        "buckets": buckets,
        "held_back": held,
        "transitions": transitions,
    }))
}

/// The summary text for one team.
pub fn summary_text(team: &str, rows: &[tg_store::HeldRow], runs_max: usize) -> String {
    let total: i64 = rows.iter().map(|r| r.count).sum();
    let mut text = format!("triage-gate held back {total} page(s) for team {team}:\n");
    for r in rows {
        let runs: Vec<&str> = r
            .run_ids
            .iter()
            .take(runs_max)
            .map(String::as_str)
            .collect();
        let more = r.run_ids.len().saturating_sub(runs.len());
        text.push_str(&format!(
            "- {} ({}): {} held by {} ({}), {} .. {}; runs {}{}\n",
            r.service,
            r.environment,
            r.count,
            r.reason,
            r.limit,
            r.first_at.to_rfc3339(),
            r.last_at.to_rfc3339(),
            runs.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    tg_engine::truncate(&text, SUMMARY_TEXT_CHARS_MAX)
}

/// Checks every open breaker once at the injected clock's `now` and closes
/// those whose cool-down is over; returns how many transitions were recorded.
pub async fn tick_breakers(state: &AppState) -> Result<usize, tg_store::StoreError> {
    let now = state.clock.now();
    let p = &state.pipeline;
    let policy = p.policy();
    let effects = state
        .store
        .tick_breakers(|environment, stored, sightings| {
            tg_engine::tick_breaker(
                &p.storm,
                &policy.catalog,
                environment,
                stored,
                sightings,
                now,
            )
        })
        .await?;
    Ok(effects
        .iter()
        .filter(|e| matches!(e, tg_engine::Effect::BreakerTransition { .. }))
        .count())
}

/// Closes open breakers when their cool-down ends, even if no event arrives
/// (`storm.breaker.tick_ms`). A store error is logged and retried at the next tick.
pub async fn breaker_task(state: AppState, token: CancellationToken) {
    let Some(every) = state.pipeline.breaker_tick else {
        return;
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = tick_breakers(&state).await {
            tracing::warn!(error = %e, "storm breaker check failed; retrying at the next tick");
        }
    }
}

/// Sends each configured team its held-back summary, at most once per interval,
/// reading time from the injected clock.
pub async fn summary_task(state: AppState, token: CancellationToken) {
    let cfg = state.pipeline.summary.clone();
    if cfg.webhooks.is_empty() {
        return;
    }
    let http = match cfg
        .tls
        .client_builder()
        .timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "held-back summary: cannot build the HTTP client");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(SUMMARY_POLL_MS)) => {}
        }
        for (team, url) in &cfg.webhooks {
            if let Err(e) = summarize(&state, &http, &cfg, team, url).await {
                tracing::warn!(team = %team, error = %e, "held-back summary not sent");
            }
        }
    }
}

async fn summarize(
    state: &AppState,
    http: &reqwest::Client,
    cfg: &SummaryConfig,
    team: &str,
    url: &Secret,
) -> anyhow::Result<()> {
    let now = state.clock.now();
    let last = state.store.summary_sent_at(team).await?;
    if last.is_some_and(|t| now < t + cfg.interval) {
        return Ok(());
    }
    let rows = state.store.held_back(Some(team), last).await?;
    if rows.is_empty() {
        return Ok(());
    }
    // Claim the slot first: at most one summary per interval, even with replicas.
    if !state
        .store
        .claim_summary_slot(team, now, cfg.interval)
        .await?
    {
        return Ok(());
    }
    let text = summary_text(team, &rows, cfg.runs_max);
    let body = if cfg.teams_format {
        json!({ "type": "message", "text": text })
    } else {
        json!({ "text": text })
    };
    let resp = http.post(url.expose()).json(&body).send().await;
    match resp {
        Ok(r) if r.status().is_success() => {
            metrics::counter!("triage_gate_storm_summaries_total", "result" => "sent").increment(1);
            tracing::info!(team = %team, lines = rows.len(), "held-back summary sent");
            Ok(())
        }
        // The URL is a secret: report the status only.
        Ok(r) => {
            metrics::counter!("triage_gate_storm_summaries_total", "result" => "failed")
                .increment(1);
            anyhow::bail!("the webhook answered {}", r.status())
        }
        Err(e) => {
            metrics::counter!("triage_gate_storm_summaries_total", "result" => "failed")
                .increment(1);
            anyhow::bail!("the webhook could not be reached ({})", e.without_url())
        }
    }
}
