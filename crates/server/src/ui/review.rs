//! **Review queue**: drafted actions by team, oldest first; each with its
//! event, the model's answer and the conditions that refused it. Approve in
//! one click, reject with a preset reason in one click or a typed reason in
//! two; `j`/`k`/`a`/`r`/`o` from the keyboard (console.js). The decision goes
//! through the API's own handler (`review::approve`/`reject`): same checks,
//! same re-check at approval, same audit record with the signed-in user.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::PrivateCookieJar;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use tg_identity::Scope;
use tg_store::{ReviewItem, StoredRun};

use super::layout::{self, Nav};
use super::session::{User, set_flash, take_flash};
use super::story::{event_summary, model_answer, refusing_conditions};
use super::{REVIEW_ITEMS_MAX, UiError};
use crate::AppState;

/// Reasons offered as one-click rejections.
pub const PRESET_REASONS: &[&str] = &[
    "Not actionable",
    "Known issue, already handled",
    "False positive",
];

#[derive(Debug, Deserialize)]
pub(crate) struct ReviewQuery {
    #[serde(default)]
    team: Option<String>,
}

/// `GET /ui/review`.
pub(crate) async fn page(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    Query(q): Query<ReviewQuery>,
    jar: PrivateCookieJar,
) -> Result<Response, UiError> {
    let now = state.clock.now();
    let items = state.store.review_queue(REVIEW_ITEMS_MAX).await?;
    let run_items = state.store.runs_needing_review(REVIEW_ITEMS_MAX).await?;
    let teams: Vec<String> = {
        let mut t: Vec<String> = items.iter().map(|i| i.team.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    let team = q.team.filter(|t| teams.contains(t));
    // By team, each oldest first (the store's order).
    let mut by_team: BTreeMap<&str, Vec<&ReviewItem>> = BTreeMap::new();
    for i in items
        .iter()
        .filter(|i| team.as_ref().is_none_or(|t| *t == i.team))
    {
        by_team.entry(i.team.as_str()).or_default().push(i);
    }
    let mut runs: BTreeMap<String, Option<StoredRun>> = BTreeMap::new();
    for i in by_team.values().flatten() {
        if !runs.contains_key(i.run_id.as_str()) {
            let r = state.store.get_run(&i.run_id).await?;
            runs.insert(i.run_id.to_string(), r);
        }
    }
    let can_decide = user.has(Scope::ReviewDecide);
    let (jar, flash) = take_flash(jar);
    let shown: usize = by_team.values().map(Vec::len).sum();
    let body = html! {
        div.page-head {
            h1 { "Review queue" }
            form.filters method="get" action="/ui/review" {
                label for="team" { "Team" }
                select id="team" name="team" {
                    option value="" selected[team.is_none()] { "All teams" }
                    @for t in &teams {
                        option value=(t) selected[team.as_deref() == Some(t.as_str())] { (t) }
                    }
                }
                button type="submit" { "Filter" }
            }
        }
        p.small {
            (shown) " drafted action(s) waiting, oldest first within each team. "
            @if can_decide {
                "Select with " kbd { "j" } "/" kbd { "k" } ", approve with " kbd { "a" } ", reject with " kbd { "r" } "."
            } @else {
                "You may look but not decide (your sign-in lacks the review:decide scope)."
            }
        }
        @if by_team.is_empty() {
            p.empty { "Nothing waits for review." }
        }
        @for (team, list) in &by_team {
            section.team aria-labelledby=(format!("team-{team}")) {
                h2 id=(format!("team-{team}")) { "Team " (team) " (" (list.len()) ")" }
                @for i in list {
                    (item(&user, can_decide, now, i, runs.get(i.run_id.as_str()).and_then(Option::as_ref)))
                }
            }
        }
        @if !run_items.is_empty() {
            section aria-labelledby="run-items" {
                h2 #run-items { "Runs whose model answer was refused (" (run_items.len()) ")" }
                p.small { "Nothing was drafted for these: read the story and act in the incident tool if needed." }
                ul {
                    @for r in &run_items {
                        li {
                            a href=(format!("/ui/runs/{}", r.run_id)) { (r.run_id) }
                            " · " (r.event.service) " (" (r.event.environment.as_str()) "): "
                            (tg_engine::truncate(&r.event.summary, 160))
                        }
                    }
                }
            }
        }
    };
    let page = layout::page("Review queue", Nav::Review, &user, flash.as_ref(), body);
    Ok((jar, Html(page.into_string())).into_response())
}

fn item(
    user: &User,
    can_decide: bool,
    now: chrono::DateTime<chrono::Utc>,
    i: &ReviewItem,
    run: Option<&StoredRun>,
) -> Markup {
    let id = i.id;
    let reason_id = format!("reason-{id}");
    let decision = run
        .and_then(|r| r.decision.as_ref())
        .and_then(|d| d.get(i.action));
    html! {
        article.item id=(format!("item-{id}")) tabindex="-1" data-item=(id) aria-labelledby=(format!("item-{id}-h")) {
            h3 id=(format!("item-{id}-h")) {
                "#" (id) " · " (i.action.as_str()) " for " (i.service) " (" (i.environment) ")"
                span.age { " waiting " (layout::age(now, i.created_at)) }
            }
            p.draft { strong { "Draft: " } (i.title) " · severity " (i.planned.severity.as_str()) }
            div.cols {
                div {
                    h4 { "Event" }
                    @if let Some(r) = run { (event_summary(r)) } @else { p { "run not found" } }
                }
                div {
                    h4 { "Model answer" }
                    @if let Some(r) = run { (model_answer(r.classification.as_ref())) } @else { p { "–" } }
                }
                div {
                    h4 { "Why it waits" }
                    p { (i.reason) }
                    @if let Some(d) = decision { (refusing_conditions(d)) }
                }
            }
            p { a href=(format!("/ui/runs/{}", i.run_id)) data-open="story" { "Open the run story" } }
            @if can_decide {
                div.decide {
                    form method="post" action=(format!("/ui/review/{id}")) .approve {
                        input type="hidden" name="csrf" value=(user.csrf());
                        input type="hidden" name="verdict" value="approve";
                        button.primary type="submit" data-action="approve" { "Approve and send" }
                    }
                    form method="post" action=(format!("/ui/review/{id}")) .reject {
                        input type="hidden" name="csrf" value=(user.csrf());
                        input type="hidden" name="verdict" value="reject";
                        label for=(reason_id) { "Rejection reason" }
                        input id=(reason_id) name="reason" type="text" maxlength=(tg_store::REVIEW_REASON_CHARS_MAX) data-action="reason" autocomplete="off";
                        button type="submit" { "Reject" }
                        span.presets role="group" aria-label="Reject with a preset reason" {
                            @for p in PRESET_REASONS {
                                button.preset type="submit" name="preset" value=(p) { "Reject: " (p) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct DecideForm {
    #[serde(default)]
    csrf: String,
    verdict: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    preset: Option<String>,
}

/// `POST /ui/review/{id}`: through `crate::review::approve`/`reject`.
pub(crate) async fn decide(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
    jar: PrivateCookieJar,
    Form(f): Form<DecideForm>,
) -> Result<Response, UiError> {
    user.require_csrf(&f.csrf)?;
    user.require(Scope::ReviewDecide)?;
    let reason = f
        .preset
        .filter(|p| !p.trim().is_empty())
        .or(f.reason)
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    let body = axum::body::Bytes::from(json!({ "reason": reason }).to_string());
    let approve = match f.verdict.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return Err(UiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "Unknown verdict",
                "approve or reject",
            ));
        }
    };
    let st = State(state.clone());
    let result = if approve {
        crate::review::approve(st, user.extension(), Path(id.clone()), body).await
    } else {
        crate::review::reject(st, user.extension(), Path(id.clone()), body).await
    };
    let secure = state.pipeline.console.config.cookie_secure;
    let jar = match result {
        Ok(r) if approve && r.headers().contains_key(crate::review::SHADOW_HEADER) => set_flash(
            jar,
            secure,
            true,
            &format!(
                "#{id} approved by {}: {}.",
                user.label(),
                crate::review::SHADOW_NOTE
            ),
        ),
        Ok(_) if approve => set_flash(
            jar,
            secure,
            true,
            &format!("#{id} approved by {}: queued for delivery.", user.label()),
        ),
        Ok(_) => set_flash(
            jar,
            secure,
            true,
            &format!(
                "#{id} rejected by {} ({}). Nothing was sent.",
                user.label(),
                reason.as_deref().unwrap_or("")
            ),
        ),
        Err(p) => set_flash(
            jar,
            secure,
            false,
            &format!("#{id}: {}: {}", p.title, p.detail),
        ),
    };
    Ok((jar, Redirect::to("/ui/review")).into_response())
}
