//! `triage-gate autonomy set | clear | show`: the kill switch, through the
//! running server's API (bearer token from `TRIAGE_GATE_TOKEN`, scope `admin`).

use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

/// A field of an answer (`null` when missing).
fn at<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

use crate::actions::{client, failure, with_token};

/// Sets (`level`) or lifts (`None`) the cap of `scope`.
pub async fn set(
    server: &str,
    scope: &str,
    level: Option<&str>,
    reason: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let url = format!("{}/v1/autonomy", server.trim_end_matches('/'));
    let resp = with_token(client()?.post(&url))
        .json(&json!({"scope": scope, "level": level, "reason": reason}))
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {server}"))?;
    if !resp.status().is_success() {
        eprintln!(
            "error: autonomy of {scope} not changed: {}",
            failure(resp).await
        );
        return Ok(ExitCode::FAILURE);
    }
    let body: Value = resp.json().await.context("unreadable answer")?;
    let show = |v: &Value| v.as_str().unwrap_or("no cap").to_owned();
    crate::outln!(
        "autonomy cap of {scope}: {} -> {} (by {}, audit seq {}); applies to the next decision",
        show(at(&body, "from")),
        show(at(&body, "level")),
        at(&body, "by").as_str().unwrap_or("?"),
        at(&body, "audit_seq")
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the caps in force and every catalog service's effective level.
pub async fn show(server: &str) -> anyhow::Result<ExitCode> {
    let url = format!("{}/v1/autonomy", server.trim_end_matches('/'));
    let resp = with_token(client()?.get(&url))
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {server}"))?;
    if !resp.status().is_success() {
        eprintln!("error: {}", failure(resp).await);
        return Ok(ExitCode::FAILURE);
    }
    let body: Value = resp.json().await.context("unreadable answer")?;
    for c in at(&body, "caps").as_array().into_iter().flatten() {
        crate::outln!(
            "cap {:<28} {:<8} by {} at {}{}",
            at(c, "scope").as_str().unwrap_or("?"),
            at(c, "level").as_str().unwrap_or("?"),
            at(c, "set_by").as_str().unwrap_or("?"),
            at(c, "set_at").as_str().unwrap_or("?"),
            at(c, "reason")
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )?;
    }
    crate::outln!(
        "{:<24} {:<16} {:<10} effective",
        "service",
        "team",
        "configured"
    )?;
    for s in at(&body, "services").as_array().into_iter().flatten() {
        crate::outln!(
            "{:<24} {:<16} {:<10} {}",
            at(s, "service").as_str().unwrap_or("?"),
            at(s, "team").as_str().unwrap_or("?"),
            at(s, "configured").as_str().unwrap_or("?"),
            at(s, "effective").as_str().unwrap_or("?")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `report autonomy`: per service, the evidence for moving up a level.
pub async fn report(server: &str, service: Option<&str>, since: &str) -> anyhow::Result<ExitCode> {
    let url = format!("{}/v1/reports/autonomy", server.trim_end_matches('/'));
    let mut query = vec![("since", since)];
    if let Some(s) = service {
        query.push(("service", s));
    }
    let resp = with_token(client()?.get(&url).query(&query))
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {server}"))?;
    if !resp.status().is_success() {
        eprintln!("error: {}", failure(resp).await);
        return Ok(ExitCode::FAILURE);
    }
    let body: Value = resp.json().await.context("unreadable answer")?;
    crate::outln!(
        "{:<24} {:<8} {:>6} {:>8} {:>9} {:>6} {:>6}  next",
        "service",
        "level",
        "runs",
        "verdicts",
        "agreement",
        "false",
        "missed"
    )?;
    for s in at(&body, "services").as_array().into_iter().flatten() {
        let agreement = at(s, "agreement")
            .as_f64()
            .map_or_else(|| "-".to_owned(), |a| format!("{:.1}%", a * 100.0));
        let next = match (at(s, "next_level").as_str(), at(s, "meets_bar").as_bool()) {
            (Some(n), Some(true)) => format!("ready for {n}"),
            (Some(n), _) => format!(
                "{n}: short of {}",
                at(s, "short_of")
                    .as_array()
                    .map(|v| v
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
            (None, _) => "top level".to_owned(),
        };
        crate::outln!(
            "{:<24} {:<8} {:>6} {:>8} {:>9} {:>6} {:>6}  {next}",
            at(s, "service").as_str().unwrap_or("?"),
            at(s, "level").as_str().unwrap_or("?"),
            at(s, "runs"),
            at(s, "verdicts"),
            agreement,
            at(s, "false_pages"),
            at(s, "missed_pages"),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
