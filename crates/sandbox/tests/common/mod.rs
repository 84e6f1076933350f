//! Shared helpers: a sandbox on 127.0.0.1:0 and a client.
#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "shared test helpers: not every test file uses every helper; a failed unwrap is a failed test"
)]

use serde_json::Value;
use triage_gate_sandbox::{Sandbox, SandboxConfig};

pub const SN_TOKEN: &str = "sn-test-token-7f3a";
pub const API_KEY: &str = "sk-ant-test-key-91bc";
pub const ROUTING_KEY: &str = "0123456789abcdef0123456789abcdef";

pub async fn start() -> (Sandbox, reqwest::Client) {
    start_with(SandboxConfig {
        servicenow_token: SN_TOKEN.into(),
        anthropic_api_key: API_KEY.into(),
        ..SandboxConfig::default()
    })
    .await
}

pub async fn start_with(cfg: SandboxConfig) -> (Sandbox, reqwest::Client) {
    let sb = Sandbox::start(cfg).await.unwrap();
    (sb, reqwest::Client::new())
}

pub async fn json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

pub async fn control(c: &reqwest::Client, sb: &Sandbox, path: &str, body: Value) -> u16 {
    c.post(format!("{}/_sandbox/{path}", sb.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
