//! **Now**: the storm at a glance. The live part (`/ui/now/live`) is one
//! fragment the page's script swaps in every [`super::REFRESH_MS`]; without
//! script, a `<noscript>` refresh reloads the whole page.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum_extra::extract::PrivateCookieJar;
use chrono::{DateTime, Duration, Utc};
use maud::{Markup, html};
use serde_json::Value;
use tg_store::{CHART_BUCKET_MS, MinuteCounts};

use super::layout::{self, Nav};
use super::session::{User, take_flash};
use super::{CHART_MINUTES, FEED_ROWS, REFRESH_MS, UiError};
use crate::AppState;

/// `GET /ui/now`.
pub(crate) async fn page(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    jar: PrivateCookieJar,
) -> Result<Response, UiError> {
    let live = live_markup(&state).await?;
    let (jar, flash) = take_flash(jar);
    let refresh_secs = REFRESH_MS / 1_000;
    let body = html! {
        noscript { meta http-equiv="refresh" content=(refresh_secs.max(1) * 2); }
        div.page-head {
            h1 { "Now" }
            p.live-controls {
                button #live-toggle type="button" aria-pressed="true" data-refresh-ms=(REFRESH_MS) {
                    "Pause live updates"
                }
                span #live-status role="status" { "Live: refreshes every " (refresh_secs) " s" }
            }
        }
        div #live data-src="/ui/now/live" { (live) }
    };
    let page = layout::page("Now", Nav::Now, &user, flash.as_ref(), body);
    Ok((jar, Html(page.into_string())).into_response())
}

/// `GET /ui/now/live`: the fragment the page refreshes.
pub(crate) async fn live(State(state): State<AppState>) -> Result<Response, UiError> {
    Ok(Html(live_markup(&state).await?.into_string()).into_response())
}

async fn live_markup(state: &AppState) -> Result<Markup, UiError> {
    let now = state.clock.now();
    let counts = state.store.console_counts().await?;
    let outbox = state.store.outbox_counts(now).await?;
    let storm = crate::storm::snapshot(state).await?;
    let from = minute_floor(now) - Duration::minutes(CHART_MINUTES - 1);
    let minutes = state
        .store
        .console_minutes(from, now + Duration::milliseconds(1))
        .await?;
    let feed = state.store.console_feed(FEED_ROWS).await?;
    let budgets = budgets(state, &storm);
    let backlog = state.store.backlog().await?;
    Ok(html! {
        section.cards aria-label="Summary" {
            div.card {
                h2 { "Runs accepted" }
                p.big { (counts.runs) }
            }
            div.card {
                h2 { "Review queue" }
                p.big { a href="/ui/review" { (counts.review_open) } }
                p.small { "items waiting for a human" }
            }
            div.card {
                h2 { "Outbox" }
                p.big { (outbox.pending) }
                p.small {
                    (outbox.in_flight) " in flight · " (outbox.dead) " dead"
                    @if let Some(at) = outbox.oldest_pending_at {
                        " · oldest " (layout::age(now, at))
                    }
                }
            }
            div.card {
                h2 { "Processing queue" }
                p.big { (backlog) }
                p.small { "runs waiting for a worker" }
            }
        }
        div.two {
            section aria-labelledby="breakers-h" {
                h2 #breakers-h { "Storm breakers" }
                (breakers(&storm))
            }
            section aria-labelledby="budget-h" {
                h2 #budget-h { "Paging budget left" }
                table {
                    thead { tr { th scope="col" { "Team" } th scope="col" { "Pages left" } th scope="col" { "Burst" } th scope="col" { "Refill / h" } } }
                    tbody {
                        @for (team, (left, burst, per_hour)) in &budgets {
                            tr {
                                th scope="row" { (team) }
                                td { meter min="0" max=(burst) value=(left) aria-label=(format!("{team}: {left} of {burst} pages left")) {} " " (left) }
                                td { (burst) }
                                td { (per_hour) }
                            }
                        }
                    }
                }
                h3 { "Outbox by target" }
                table {
                    thead { tr { th scope="col" { "Target" } th scope="col" { "Pending" } th scope="col" { "In flight" } th scope="col" { "Dead" } th scope="col" { "Head attempts" } } }
                    tbody {
                        @for (target, b) in &outbox.by_target {
                            tr {
                                th scope="row" { (target) }
                                td { (b.pending) } td { (b.in_flight) } td { (b.dead) }
                                td { (b.head_attempts) @if let Some(e) = &b.head_last_error { " · " span.small { (e) } } }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="chart-h" {
            h2 #chart-h { "Last hour, per minute" }
            (chart(&minutes, from))
        }
        section aria-labelledby="feed-h" {
            h2 #feed-h { "Latest runs" }
            (feed_table(now, &feed))
        }
    })
}

/// Per team: (pages left, burst, refill per hour). Teams without a bucket yet have a full one.
fn budgets(state: &AppState, storm: &Value) -> BTreeMap<String, (i64, u32, u32)> {
    let cfg = state.pipeline.storm.team_bucket;
    let mut out: BTreeMap<String, (i64, u32, u32)> = state
        .pipeline
        .policy()
        .catalog
        .known_teams()
        .into_iter()
        .map(|t| (t, (i64::from(cfg.burst), cfg.burst, cfg.per_hour)))
        .collect();
    for b in storm
        .get("buckets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(team) = b
            .get("key")
            .and_then(Value::as_str)
            .and_then(|k| k.strip_prefix("page:team:"))
        else {
            continue;
        };
        let tokens = b.get("tokens").and_then(Value::as_i64).unwrap_or(0);
        out.insert(team.to_owned(), (tokens, cfg.burst, cfg.per_hour));
    }
    out
}

fn breakers(storm: &Value) -> Markup {
    let list: Vec<&Value> = storm
        .get("breakers")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let s = |b: &Value, k: &str| {
        b.get(k)
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Null => "–".to_owned(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "–".to_owned())
    };
    html! {
        @if list.is_empty() {
            p { "No environment has alerted yet: every breaker is closed." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Environment" } th scope="col" { "State" }
                    th scope="col" { "Services alerting" } th scope="col" { "Opens at" }
                    th scope="col" { "Since" } th scope="col" { "Umbrella run" }
                } }
                tbody {
                    @for b in list {
                        @let open = b.get("open").and_then(Value::as_bool).unwrap_or(false);
                        tr.breaker-open[open] {
                            th scope="row" { (s(b, "environment")) }
                            td { @if open { span.badge.o-suppressed { "OPEN: storm mode" } } @else { span.badge.o-skip { "closed" } } }
                            td { (s(b, "services")) }
                            td { (s(b, "open_threshold")) }
                            td { (s(b, "since")) }
                            td {
                                @if let Some(r) = b.get("umbrella_run").and_then(Value::as_str) {
                                    a href=(format!("/ui/runs/{r}")) { (r) }
                                } @else { "–" }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn minute_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    let ms = t.timestamp_millis();
    let floored = ms - ms.rem_euclid(CHART_BUCKET_MS);
    DateTime::from_timestamp_millis(floored).unwrap_or(t)
}

/// Chart geometry (SVG user units).
const CHART_W: i64 = 720;
const CHART_H: i64 = 180;
const CHART_PAD: i64 = 30;

/// The inline SVG chart: three series, told apart by line style and marker
/// as well as colour, with the numbers in a table beside it.
fn chart(minutes: &[MinuteCounts], from: DateTime<Utc>) -> Markup {
    let from_ms = from.timestamp_millis();
    let n = usize::try_from(CHART_MINUTES).unwrap_or(60);
    let mut series = vec![(0i64, 0i64, 0i64); n];
    for m in minutes {
        let i = (m.minute_ms - from_ms) / CHART_BUCKET_MS;
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| series.get_mut(i)) {
            *slot = (m.events, m.suppressed, m.actions);
        }
    }
    let max = series
        .iter()
        .map(|(e, s, a)| *e.max(s).max(a))
        .max()
        .unwrap_or(0)
        .max(1);
    let total = |f: fn(&(i64, i64, i64)) -> i64| series.iter().map(f).sum::<i64>();
    let (te, ts, ta) = (total(|x| x.0), total(|x| x.1), total(|x| x.2));
    let x = |i: usize| {
        CHART_PAD + i64::try_from(i).unwrap_or(0) * (CHART_W - 2 * CHART_PAD) / (CHART_MINUTES - 1)
    };
    let y = |v: i64| CHART_H - CHART_PAD - v * (CHART_H - 2 * CHART_PAD) / max;
    let points = |f: fn(&(i64, i64, i64)) -> i64| {
        series
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{},{}", x(i), y(f(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let desc = format!(
        "In the last {CHART_MINUTES} minutes: {te} events, {ts} suppressed, {ta} actions; busiest minute {max}."
    );
    let svg = html! {
        svg.chart viewBox=(format!("0 0 {CHART_W} {CHART_H}")) role="img" aria-labelledby="chart-title chart-desc" {
            title #chart-title { "Events, suppressed events and actions per minute" }
            desc #chart-desc { (desc) }
            line.axis x1=(CHART_PAD) y1=(CHART_H - CHART_PAD) x2=(CHART_W - CHART_PAD) y2=(CHART_H - CHART_PAD) {}
            line.axis x1=(CHART_PAD) y1=(CHART_PAD) x2=(CHART_PAD) y2=(CHART_H - CHART_PAD) {}
            text.tick x="2" y=(CHART_PAD + 4) { (max) }
            text.tick x="2" y=(CHART_H - CHART_PAD + 4) { "0" }
            text.tick x=(CHART_PAD) y=(CHART_H - 8) { "-60 min" }
            text.tick x=(CHART_W / 2 - 20) y=(CHART_H - 8) { "-30 min" }
            text.tick x=(CHART_W - CHART_PAD - 24) y=(CHART_H - 8) { "now" }
            polyline.s-events points=(points(|p| p.0)) {}
            polyline.s-suppressed points=(points(|p| p.1)) {}
            polyline.s-actions points=(points(|p| p.2)) {}
        }
    };
    html! {
        figure.chart-box {
            (svg)
            figcaption {
                ul.legend {
                    li.l-events { "Events (" (te) ")" }
                    li.l-suppressed { "Suppressed (" (ts) ")" }
                    li.l-actions { "Actions (" (ta) ")" }
                }
            }
        }
        details {
            summary { "The numbers behind the chart" }
            table.small {
                thead { tr { th scope="col" { "Minute (UTC)" } th scope="col" { "Events" } th scope="col" { "Suppressed" } th scope="col" { "Actions" } } }
                tbody {
                    @for (i, (e, s, a)) in series.iter().enumerate() {
                        @if *e + *s + *a > 0 {
                            tr {
                                th scope="row" { ((from + Duration::minutes(i64::try_from(i).unwrap_or(0))).format("%H:%M")) }
                                td { (e) } td { (s) } td { (a) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn feed_table(now: DateTime<Utc>, feed: &[tg_store::FeedRun]) -> Markup {
    html! {
        @if feed.is_empty() {
            p { "No runs yet." }
        } @else {
            table.feed {
                thead { tr {
                    th scope="col" { "Received" } th scope="col" { "Run" } th scope="col" { "Service" }
                    th scope="col" { "Environment" } th scope="col" { "Alert" } th scope="col" { "Status" }
                    th scope="col" { "Outcomes" }
                } }
                tbody {
                    @for r in feed {
                        tr {
                            td { (layout::age(now, r.received_at)) " ago" }
                            td { a href=(format!("/ui/runs/{}", r.run_id)) { code { (short_run(r.run_id.as_str())) } } }
                            td { (r.service) }
                            td { (r.environment) }
                            td { (tg_engine::truncate(&r.event.summary, 120)) }
                            td { (r.status.as_str()) }
                            td {
                                @if let Some(d) = &r.decision {
                                    @if d.duplicate_of.is_some() { span.badge.o-suppressed { "duplicate" } " " }
                                    @for a in &d.actions {
                                        span.pair { (a.action.as_str()) " " (layout::outcome(a.outcome)) } " "
                                    }
                                } @else { "–" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `run_0193…c2f1`: enough to tell runs apart in a table.
fn short_run(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 20 {
        return id.to_owned();
    }
    let head: String = chars.iter().take(12).collect();
    let tail: String = chars.iter().skip(chars.len() - 4).collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_places_each_minute_and_states_the_totals() {
        let from = DateTime::from_timestamp_millis(60_000 * 1_000).unwrap();
        let m = |i: i64, e, s, a| MinuteCounts {
            minute_ms: from.timestamp_millis() + i * CHART_BUCKET_MS,
            events: e,
            suppressed: s,
            actions: a,
        };
        let html = chart(&[m(0, 4, 1, 2), m(59, 10, 7, 0), m(60, 99, 0, 0)], from).into_string();
        // The minute past the window (60) is left out of the series and totals.
        assert!(
            html.contains("14 events, 8 suppressed, 2 actions; busiest minute 10."),
            "{html}"
        );
        // The last point of the events line is at the right edge, at the top.
        assert!(html.contains(&format!("{},{}", CHART_W - CHART_PAD, CHART_PAD)));
    }

    #[test]
    fn minute_floor_and_short_ids() {
        let t = DateTime::from_timestamp_millis(125_500).unwrap();
        assert_eq!(minute_floor(t).timestamp_millis(), 120_000);
        assert_eq!(
            short_run("run_0193c1f2-aaaa-bbbb-cccc-1234567890ab"),
            "run_0193c1f2…90ab"
        );
        assert_eq!(short_run("run_1"), "run_1");
    }
}
