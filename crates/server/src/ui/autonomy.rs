//! **Autonomy**: each service's configured, capped and effective level, the
//! promotion report (`reports::autonomy`), and the kill switch: a cap on
//! everything, a team or a service, set only after a confirmation step, and
//! through the API's own `autonomy::set` (audited with the signed-in user).

use axum::Extension;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::PrivateCookieJar;
use maud::html;
use serde::Deserialize;
use serde_json::{Value, json};
use tg_identity::Scope;
use tg_model::AutonomyLevel;

use super::UiError;
use super::layout::{self, Nav};
use super::session::{User, set_flash, take_flash};
use crate::AppState;

fn text(v: &Value, k: &str) -> String {
    match v.get(k) {
        None | Some(Value::Null) => "–".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `GET /ui/autonomy`.
pub(crate) async fn page(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    jar: PrivateCookieJar,
) -> Result<Response, UiError> {
    let levels = crate::autonomy::get(State(state.clone())).await?.0;
    let report_query: crate::reports::ReportQuery = serde_json::from_value(json!({}))
        .map_err(|e| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Report", e.to_string()))?;
    let report = crate::reports::autonomy(State(state.clone()), Ok(Query(report_query)))
        .await?
        .0;
    let empty = Vec::new();
    let caps = levels
        .get("caps")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let services = levels
        .get("services")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let lines = report
        .get("services")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let teams = state.pipeline.policy().catalog.known_teams();
    let is_admin = user.has(Scope::Admin);
    let (jar, flash) = take_flash(jar);
    let body = html! {
        div.page-head { h1 { "Autonomy" } }
        section aria-labelledby="switch-h" .killswitch {
            h2 #switch-h { "Kill switch" }
            @if caps.is_empty() {
                p { "No cap is in force: every service runs at its configured level." }
            } @else {
                table #caps {
                    caption { "Caps in force" }
                    thead { tr { th scope="col" { "Scope" } th scope="col" { "Cap" } th scope="col" { "Set by" } th scope="col" { "At" } th scope="col" { "Reason" } } }
                    tbody {
                        @for c in caps {
                            tr { th scope="row" { (text(c, "scope")) } td { (text(c, "level")) } td { (text(c, "set_by")) } td { (text(c, "set_at")) } td { (text(c, "reason")) } }
                        }
                    }
                }
            }
            @if is_admin {
                form method="post" action="/ui/autonomy" .stop-all {
                    input type="hidden" name="csrf" value=(user.csrf());
                    input type="hidden" name="scope" value="all";
                    input type="hidden" name="level" value="shadow";
                    button.danger type="submit" { "Stop all automatic actions (cap everything at shadow)…" }
                }
                form method="post" action="/ui/autonomy" .cap {
                    input type="hidden" name="csrf" value=(user.csrf());
                    div.field {
                        label for="cap-scope" { "Scope" }
                        select id="cap-scope" name="scope" {
                            option value="all" { "Everything" }
                            @for t in &teams { option value=(format!("team:{t}")) { "Team " (t) } }
                            @for s in services { option value=(format!("service:{}", text(s, "service"))) { "Service " (text(s, "service")) } }
                        }
                    }
                    div.field {
                        label for="cap-level" { "Cap" }
                        select id="cap-level" name="level" {
                            @for l in AutonomyLevel::ALL { option value=(l.as_str()) { (l.as_str()) } }
                            option value="lift" { "lift the cap" }
                        }
                    }
                    div.field {
                        label for="cap-reason" { "Reason" }
                        input id="cap-reason" name="reason" type="text" maxlength=(tg_store::CAP_REASON_CHARS_MAX);
                    }
                    button type="submit" { "Review the change…" }
                }
            } @else {
                p.small { "Changing a cap needs the admin scope." }
            }
        }
        section aria-labelledby="levels-h" {
            h2 #levels-h { "Levels by service" }
            table #levels {
                thead { tr { th scope="col" { "Service" } th scope="col" { "Team" } th scope="col" { "Configured" } th scope="col" { "Cap" } th scope="col" { "Effective" } } }
                tbody {
                    @for s in services {
                        tr { th scope="row" { (text(s, "service")) } td { (text(s, "team")) } td { (text(s, "configured")) } td { (text(s, "cap")) } td { strong { (text(s, "effective")) } } }
                    }
                }
            }
        }
        section aria-labelledby="report-h" {
            h2 #report-h { "Promotion report" }
            @let bar = report.get("bar").cloned().unwrap_or_default();
            p.small {
                "Since " (text(&report, "since")) ". The bar for moving up a level: at least "
                (text(&bar, "runs_min")) " runs, " (text(&bar, "verdicts_min")) " human verdicts and an agreement of "
                (text(&bar, "agreement_min")) " (review.promotion)."
            }
            table #report {
                thead { tr {
                    th scope="col" { "Service" } th scope="col" { "Level" } th scope="col" { "Next" }
                    th scope="col" { "Runs" } th scope="col" { "Verdicts" } th scope="col" { "Agreement" }
                    th scope="col" { "False pages" } th scope="col" { "Missed pages" } th scope="col" { "Expired" }
                    th scope="col" { "Meets the bar?" }
                } }
                tbody {
                    @for l in lines {
                        tr {
                            th scope="row" { (text(l, "service")) }
                            td { (text(l, "level")) } td { (text(l, "next_level")) }
                            td { (text(l, "runs")) } td { (text(l, "verdicts")) }
                            td { (l.get("agreement").and_then(Value::as_f64).map(|a| format!("{:.1} %", a * 100.0)).unwrap_or_else(|| "–".into())) }
                            td { (text(l, "false_pages")) } td { (text(l, "missed_pages")) } td { (text(l, "expired")) }
                            td {
                                @if l.get("meets_bar").and_then(Value::as_bool).unwrap_or(false) { "yes" }
                                @else {
                                    "no: "
                                    (l.get("short_of").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; ")).unwrap_or_default())
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let page = layout::page("Autonomy", Nav::Autonomy, &user, flash.as_ref(), body);
    Ok((jar, Html(page.into_string())).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChangeForm {
    #[serde(default)]
    csrf: String,
    scope: String,
    level: String,
    #[serde(default)]
    reason: Option<String>,
    /// `yes` on the confirmation step.
    #[serde(default)]
    confirm: Option<String>,
}

/// `POST /ui/autonomy`: first a confirmation page, then (with `confirm=yes`)
/// the change through `crate::autonomy::set`.
pub(crate) async fn change(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    jar: PrivateCookieJar,
    Form(f): Form<ChangeForm>,
) -> Result<Response, UiError> {
    user.require_csrf(&f.csrf)?;
    user.require(Scope::Admin)?;
    let level: Option<AutonomyLevel> = match f.level.as_str() {
        "lift" => None,
        l => Some(
            AutonomyLevel::ALL
                .into_iter()
                .find(|x| x.as_str() == l)
                .ok_or_else(|| {
                    UiError::new(StatusCode::BAD_REQUEST, "Unknown level", format!("{l:?}"))
                })?,
        ),
    };
    let reason = f
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    if f.confirm.as_deref() != Some("yes") {
        let what = match level {
            Some(l) => format!("Cap {} at {}", scope_words(&f.scope), l.as_str()),
            None => format!("Lift the cap on {}", scope_words(&f.scope)),
        };
        let body = html! {
            div.page-head { h1 { "Confirm: " (what) } }
            div.confirm role="alertdialog" aria-labelledby="confirm-h" aria-describedby="confirm-d" {
                h2 #confirm-h { (what) "?" }
                p #confirm-d {
                    @if level.is_some() {
                        "The next decision of every service in scope is capped at this level, with no restart. "
                        "Queued creates that the cap no longer allows are drafted for review instead of sent. "
                        "The change is recorded on the audit chain with your name."
                    } @else {
                        "Services in scope go back to their configured level at the next decision. "
                        "The change is recorded on the audit chain with your name."
                    }
                }
                form method="post" action="/ui/autonomy" {
                    input type="hidden" name="csrf" value=(user.csrf());
                    input type="hidden" name="scope" value=(f.scope);
                    input type="hidden" name="level" value=(f.level);
                    input type="hidden" name="confirm" value="yes";
                    div.field {
                        label for="confirm-reason" { "Reason (recorded)" }
                        input id="confirm-reason" name="reason" type="text" value=(reason.as_deref().unwrap_or("")) maxlength=(tg_store::CAP_REASON_CHARS_MAX);
                    }
                    button.danger type="submit" autofocus { "Yes: " (what) }
                    " "
                    a href="/ui/autonomy" { "Cancel" }
                }
            }
        };
        let page = layout::page("Confirm", Nav::Autonomy, &user, None, body);
        return Ok(Html(page.into_string()).into_response());
    }
    let body = axum::body::Bytes::from(
        json!({ "scope": f.scope, "level": level, "reason": reason }).to_string(),
    );
    let secure = state.pipeline.console.config.cookie_secure;
    let jar = match crate::autonomy::set(State(state.clone()), user.extension(), body).await {
        Ok(v) => set_flash(
            jar,
            secure,
            true,
            &format!(
                "{} by {} (audit record {}).",
                match level {
                    Some(l) => format!("{} capped at {}", scope_words(&f.scope), l.as_str()),
                    None => format!("Cap lifted on {}", scope_words(&f.scope)),
                },
                user.label(),
                text(&v.0, "audit_seq")
            ),
        ),
        Err(p) => set_flash(jar, secure, false, &format!("{}: {}", p.title, p.detail)),
    };
    Ok((jar, Redirect::to("/ui/autonomy")).into_response())
}

fn scope_words(scope: &str) -> String {
    match scope.split_once(':') {
        None if scope == "all" => "everything".to_owned(),
        Some(("team", t)) => format!("team {t}"),
        Some(("service", s)) => format!("service {s}"),
        _ => scope.to_owned(),
    }
}
