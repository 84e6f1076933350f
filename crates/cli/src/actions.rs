//! `triage-gate actions ...`: the outbox's dead letters, through the running
//! server's API (the server owns the store's single writer, so the CLI never
//! writes the database behind its back).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

/// Timeout of one CLI call to the server.
pub const CLI_HTTP_TIMEOUT_MS: u64 = 10_000;
/// The environment variable holding the bearer token sent to a server with
/// inbound identity on (`identity.inbound.mode: jwt`); never a flag, so it
/// does not show in the process list or shell history.
pub const TOKEN_ENV: &str = "TRIAGE_GATE_TOKEN";

/// `Authorization: Bearer` from [`TOKEN_ENV`], when set and not empty.
pub(crate) fn with_token(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.trim().is_empty() => req.bearer_auth(t.trim()),
        _ => req,
    }
}

pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(CLI_HTTP_TIMEOUT_MS))
        .build()
        .context("cannot build the http client")
}

/// The server's problem+json detail, or the status line.
pub(crate) async fn failure(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    match body.get("detail").and_then(Value::as_str) {
        Some(d) => format!("{status}: {d}"),
        None => status.to_string(),
    }
}

/// `actions retry ID`: a dead letter goes back to the outbox.
pub async fn retry(server: &str, id: u64) -> anyhow::Result<ExitCode> {
    let url = format!("{}/v1/actions/{id}/retry", server.trim_end_matches('/'));
    let resp = with_token(client()?.post(&url))
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {server}"))?;
    if resp.status().as_u16() != 202 {
        eprintln!("error: action {id} not retried: {}", failure(resp).await);
        return Ok(ExitCode::FAILURE);
    }
    let body: Value = resp.json().await.context("unreadable answer")?;
    crate::outln!(
        "action {id} ({} of run {}) queued for delivery again by {} at {}",
        body.get("action").and_then(Value::as_str).unwrap_or("?"),
        body.get("run_id").and_then(Value::as_str).unwrap_or("?"),
        body.get("retried_by")
            .and_then(Value::as_str)
            .unwrap_or("an unauthenticated operator (identity disabled)"),
        body.get("retried_at")
            .and_then(Value::as_str)
            .unwrap_or("?"),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `actions list --status dead|pending`: one line per action, decision order.
pub async fn list(server: &str, status: &str) -> anyhow::Result<ExitCode> {
    let url = format!("{}/v1/actions", server.trim_end_matches('/'));
    let resp = with_token(client()?.get(&url))
        .query(&[("status", status)])
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {server}"))?;
    if !resp.status().is_success() {
        eprintln!("error: {}", failure(resp).await);
        return Ok(ExitCode::FAILURE);
    }
    let body: Value = resp.json().await.context("unreadable answer")?;
    let empty = Vec::new();
    let actions = body
        .get("actions")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if actions.is_empty() {
        // On stderr, so that a script reading stdout still sees no lines.
        eprintln!(
            "no {} actions at {server}",
            if status == "dead" {
                "dead-letter"
            } else {
                status
            }
        );
    }
    for a in actions {
        let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
        crate::outln!(
            "{}\t{}\t{}\tattempts={}\t{}",
            a.get("id").and_then(Value::as_i64).unwrap_or(0),
            s("action"),
            s("run_id"),
            a.get("attempts").and_then(Value::as_u64).unwrap_or(0),
            s("last_error"),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
