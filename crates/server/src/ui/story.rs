//! **Run story**: one run from its event to the end: the timeline from the
//! audit chain (`tg_audit::story`), every condition of every action with its
//! value and threshold, each action's delivery attempts and external IDs
//! (linked to ServiceNow where the instance is known), and the audit records'
//! hashes with their verification.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::PrivateCookieJar;
use maud::{Markup, html};
use serde::Deserialize;
use tg_identity::Scope;
use tg_model::{ActionDecision, RunId};
use tg_store::StoredRun;

use super::layout::{self, Nav};
use super::session::{User, take_flash};
use super::{ID_CHARS_MAX, STORY_ATTEMPTS_MAX, STORY_RECORDS_MAX, UiError};
use crate::AppState;
use tg_model::ClassificationRecord;

#[derive(Debug, Deserialize)]
pub(crate) struct FindQuery {
    #[serde(default)]
    q: String,
}

/// `GET /ui/runs?q=`: a run ID opens its story; a correlation ID opens the
/// story of the first run that carries it.
pub(crate) async fn find(
    State(state): State<AppState>,
    Query(q): Query<FindQuery>,
) -> Result<Response, UiError> {
    let q = q.q.trim();
    if q.is_empty() || q.chars().count() > ID_CHARS_MAX {
        return Err(UiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "Nothing to find",
            format!("type a run ID or a correlation ID (at most {ID_CHARS_MAX} characters)"),
        ));
    }
    if state.store.get_run(&RunId(q.to_owned())).await?.is_some() {
        return Ok(Redirect::to(&format!("/ui/runs/{}", url_path(q))).into_response());
    }
    let query = tg_store::AuditQuery {
        run_id: None,
        correlation_id: Some(q.to_owned()),
        service: None,
        from: None,
        to: None,
        limit: 1,
    };
    let (records, _) = state.store.audit_query(&query).await?;
    let run = records.iter().find_map(|r| match r {
        tg_model::ChainRecord::Run(run) => Some(run.run_id.to_string()),
        tg_model::ChainRecord::Step(s) => s.run_id.as_ref().map(ToString::to_string),
    });
    match run {
        Some(r) => Ok(Redirect::to(&format!("/ui/runs/{}", url_path(&r))).into_response()),
        None => Err(UiError::not_found("a run with this run or correlation ID")),
    }
}

/// Run IDs are `run_` + a UUID; anything else is percent-encoded.
fn url_path(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `GET /ui/runs/{run_id}`.
pub(crate) async fn page(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    Path(run_id): Path<String>,
    jar: PrivateCookieJar,
) -> Result<Response, UiError> {
    if run_id.chars().count() > ID_CHARS_MAX {
        return Err(UiError::not_found("run"));
    }
    let id = RunId(run_id);
    let run = state
        .store
        .get_run(&id)
        .await?
        .ok_or_else(|| UiError::not_found("run"))?;
    let actions = state.store.actions(&id).await?;
    let mut attempts = Vec::with_capacity(actions.len());
    for a in &actions {
        attempts.push(state.store.attempts_of(a.id, STORY_ATTEMPTS_MAX).await?);
    }
    let audit = if user.has(Scope::AuditRead) {
        let q = tg_store::AuditQuery {
            run_id: Some(id.to_string()),
            correlation_id: None,
            service: None,
            from: None,
            to: None,
            limit: STORY_RECORDS_MAX,
        };
        Some(state.store.audit_query(&q).await?)
    } else {
        None
    };
    let sn = state.pipeline.console.servicenow_url.as_deref();
    let (jar, flash) = take_flash(jar);
    let now = state.clock.now();
    let body = html! {
        div.page-head {
            h1 { "Run story" }
            p { code { (run.run_id) } }
        }
        dl.facts {
            dt { "Service" } dd { (run.event.service) " (" (run.event.environment.as_str()) ")" }
            dt { "Alert" } dd { (run.event.alert_name) ": " (run.event.summary) }
            dt { "Status" } dd { (run.status.as_str()) }
            dt { "Correlation ID" } dd { code { (run.correlation_id) } }
            dt { "Received" } dd { (layout::time(run.received_at)) " (" (layout::age(now, run.received_at)) " ago)" }
            dt { "Submitted by" } dd { (run.submitted_by.as_deref().unwrap_or("–")) }
            @if let Some(d) = &run.decision {
                dt { "Autonomy level" } dd { (d.autonomy.as_str()) }
                dt { "Policy version" } dd { (layout::short_hash(&d.policy_version)) }
                @if let Some(dup) = &d.duplicate_of {
                    dt { "Duplicate of" } dd { a href=(format!("/ui/runs/{}", url_path(dup.as_str()))) { (dup) } }
                }
                @if let Some(g) = &d.group { dt { "Group" } dd { (g) } }
            }
        }
        section aria-labelledby="timeline-h" {
            h2 #timeline-h { "Timeline" }
            @match &audit {
                None => p { "The timeline is read from the audit trail: it needs the audit:read scope." },
                Some((records, truncated)) => {
                    @let story = tg_audit::story::story(records);
                    @if story.is_empty() {
                        p { "Not audited yet (the run is still " (run.status.as_str()) ")." }
                    }
                    ol.timeline {
                        @for e in &story {
                            li {
                                (layout::time(e.at)) " "
                                span class={ "badge w-" (e.what) } { (e.what) } " "
                                (e.text)
                                @if !e.conditions.is_empty() {
                                    ul.small { @for c in &e.conditions { li { (c) } } }
                                }
                            }
                        }
                    }
                    @if *truncated { p.small { "Only the first " (STORY_RECORDS_MAX) " records are shown." } }
                }
            }
        }
        section aria-labelledby="model-h" {
            h2 #model-h { "Model answer" }
            (model_answer(run.classification.as_ref()))
        }
        section aria-labelledby="decision-h" {
            h2 #decision-h { "Decision: every condition" }
            @if let Some(d) = &run.decision {
                @if !d.errors.is_empty() {
                    p.flash.flash-error { "Policy evaluation errors (sent to review): " (d.errors.join("; ")) }
                }
                @for a in &d.actions {
                    h3 { (a.action.as_str()) ": " (layout::outcome(a.outcome)) " (gates said " (a.gate_outcome.as_str()) ")" }
                    p { (a.reason) @if let Some(c) = &a.capped_by { " · capped by " (c) } }
                    (conditions_table(a, false))
                }
            } @else { p { "Not decided yet." } }
        }
        section aria-labelledby="actions-h" {
            h2 #actions-h { "Actions" }
            @if actions.is_empty() { p { "No action was planned." } }
            @for (a, tries) in actions.iter().zip(&attempts) {
                article.action {
                    h3 {
                        "#" (a.id) " " (a.kind.as_str())
                        @if a.planned.op != tg_model::ActionOp::Create { " (" (format!("{:?}", a.planned.op).to_lowercase()) ")" }
                        " · " (layout::outcome(a.outcome)) " · " (if a.dead { "dead letter" } else { status_str(a.status) })
                        @if let Some(r) = &a.review_state { " · review " (r) }
                    }
                    p { (a.planned.title) }
                    @if let Some(res) = &a.result {
                        dl.facts {
                            @if let Some(t) = &res.target { dt { "Target" } dd { (t) } }
                            @for (k, v) in &res.external_ids {
                                dt { (k) }
                                dd { (external_link(sn, k, v, &res.external_ids)) }
                            }
                            @if let Some(e) = &res.error { dt { "Error" } dd { (e) } }
                        }
                    }
                    @if tries.is_empty() {
                        p.small { "No delivery attempt." }
                    } @else {
                        table.small {
                            caption { "Delivery attempts" }
                            thead { tr { th scope="col" { "#" } th scope="col" { "Started" } th scope="col" { "Outcome" } th scope="col" { "HTTP" } th scope="col" { "Error" } th scope="col" { "Next wait" } } }
                            tbody {
                                @for t in tries {
                                    tr {
                                        td { (t.attempt) }
                                        td { (layout::time(t.started_at)) }
                                        td { (t.outcome.as_deref().unwrap_or("in flight")) }
                                        td { (t.http_status.map(|s| s.to_string()).unwrap_or_default()) }
                                        td { (t.error.as_deref().unwrap_or("")) }
                                        td { (t.retry_after_ms.map(|ms| format!("{ms} ms")).unwrap_or_default()) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="audit-h" {
            h2 #audit-h { "Audit records" }
            @match &audit {
                None => p { "Needs the audit:read scope." },
                Some((records, _)) => {
                    @let story = tg_audit::story::story(records);
                    @let ok = |seq: u64| story.iter().filter(|e| e.seq == seq).all(|e| e.hash_ok);
                    @let all_ok = records.iter().all(|r| ok(r.seq()));
                    p #audit-verdict .verified[all_ok].tampered[!all_ok] {
                        @if all_ok {
                            "Verified: each of the " (records.len()) " record(s) recomputes to its stored hash."
                        } @else {
                            "NOT verified: a record does not recompute to its stored hash (edited after sealing)."
                        }
                        " The links between records and the signed checkpoints are checked over the whole chain by "
                        code { "triage-gate audit verify" } "."
                    }
                    table.small {
                        thead { tr { th scope="col" { "Seq" } th scope="col" { "Kind" } th scope="col" { "Hash" } th scope="col" { "Links to" } th scope="col" { "Hash check" } } }
                        tbody {
                            @for r in records {
                                tr {
                                    td { (r.seq()) }
                                    td { (if r.run().is_some() { "run" } else { "step" }) }
                                    td { (layout::short_hash(r.hash().as_str())) }
                                    td { (layout::short_hash(prev_hash(r))) }
                                    td { @if ok(r.seq()) { "ok" } @else { strong { "MISMATCH" } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let page = layout::page("Run story", Nav::Story, &user, flash.as_ref(), body);
    Ok((jar, Html(page.into_string())).into_response())
}

fn prev_hash(r: &tg_model::ChainRecord) -> &str {
    match r {
        tg_model::ChainRecord::Run(run) => run.prev_hash.as_str(),
        tg_model::ChainRecord::Step(s) => s.prev_hash.as_str(),
    }
}

fn status_str(s: tg_model::ActionStatus) -> &'static str {
    match s {
        tg_model::ActionStatus::NotExecuted => "not executed",
        tg_model::ActionStatus::Pending => "pending delivery",
        tg_model::ActionStatus::Delivered => "delivered",
        tg_model::ActionStatus::Failed => "failed",
    }
}

/// An external ID, linked to the incident when the tool's address is known.
fn external_link(
    servicenow: Option<&str>,
    key: &str,
    value: &str,
    all: &std::collections::BTreeMap<String, String>,
) -> Markup {
    match (key, servicenow) {
        ("servicenow_number", Some(base)) => match all.get("servicenow_sys_id") {
            Some(sys_id) => html! {
                a href=(format!("{base}/nav_to.do?uri=incident.do%3Fsys_id%3D{}", url_path(sys_id))) rel="noreferrer" target="_blank" {
                    (value) span.visually-hidden { " (opens ServiceNow)" }
                }
            },
            None => html! { (value) },
        },
        _ => html! { code { (value) } },
    }
}

/// The event as a reviewer needs it.
pub(crate) fn event_summary(r: &StoredRun) -> Markup {
    let e = &r.event;
    html! {
        dl.facts {
            dt { "Alert" } dd { (e.alert_name) }
            dt { "Summary" } dd { (e.summary) }
            dt { "Source" } dd { (e.source.as_str()) " via " (e.origin) }
            dt { "Status" } dd { (format!("{:?}", e.status).to_lowercase()) }
            dt { "Impact" } dd { (format!("{:?}", e.impact.level).to_lowercase()) }
            dt { "Occurred" } dd { (layout::time(e.occurred_at)) }
        }
    }
}

/// The stored classifier record: the answer, the refusal, or why it was skipped.
pub(crate) fn model_answer(v: Option<&serde_json::Value>) -> Markup {
    let Some(v) = v else {
        return html! { p { "Not classified yet." } };
    };
    let Ok(rec) = serde_json::from_value::<ClassificationRecord>(v.clone()) else {
        return html! { p { "Unreadable classification record." } };
    };
    html! {
        p.small {
            "By " (rec.info.classifier)
            @if let Some(m) = &rec.info.model { " (" (m) ")" }
            " in " (rec.latency_ms) " ms"
        }
        @if let Some(c) = &rec.classification {
            dl.facts {
                dt { "Severity" } dd { (c.classification.as_str()) }
                dt { "Confidence" } dd { (format!("{:.2}", c.confidence)) }
                dt { "Asks for" } dd {
                    @let asks: Vec<&str> = [("ticket", c.requires_ticket), ("page", c.requires_paging), ("MIM", c.requires_mim)]
                        .into_iter().filter(|(_, b)| *b).map(|(n, _)| n).collect();
                    @if asks.is_empty() { "nothing" } @else { (asks.join(", ")) }
                }
                dt { "Team" } dd { (c.recommended_team) }
                @if let Some(r) = &c.rationale { dt { "Rationale" } dd { (r) } }
            }
        }
        @if let (None, Some(h)) = (&rec.raw_output, &rec.output_sha256) {
            p.small { "The model's text was not kept (classifier.output_retention: sha256); its SHA-256 is " code { (h) } "." }
        }
        @if let Some(r) = &rec.rejection {
            p.flash.flash-error { "Answer refused by the contract: " code { (r.reason) } " " (r.detail) }
        }
        @if let Some(s) = &rec.skipped {
            p { "No model call: " (s) }
        }
    }
}

/// The conditions that failed for one action (all, when none failed).
pub(crate) fn refusing_conditions(d: &ActionDecision) -> Markup {
    conditions_table(d, true)
}

fn conditions_table(d: &ActionDecision, failed_only: bool) -> Markup {
    let rows: Vec<&tg_model::Condition> = d
        .conditions
        .iter()
        .filter(|c| !failed_only || !c.passed)
        .collect();
    html! {
        @if rows.is_empty() {
            p.small { @if failed_only { "No gate condition failed (capped by the autonomy level)." } @else { "No condition evaluated." } }
        } @else {
            table.conditions {
                thead { tr {
                    th scope="col" { "Condition" } th scope="col" { "Held?" }
                    th scope="col" { "Value" } th scope="col" { "Threshold" } th scope="col" { "Meaning" }
                } }
                tbody {
                    @for c in rows {
                        tr.failed[!c.passed] {
                            th scope="row" { code { (c.id) } }
                            td { @if c.passed { "yes" } @else { strong { "no" } } }
                            td { (c.actual) }
                            td { (c.threshold) }
                            td { (c.description) }
                        }
                    }
                }
            }
        }
    }
}
