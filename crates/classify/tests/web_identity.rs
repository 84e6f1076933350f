//! Bedrock with temporary credentials from STS `AssumeRoleWithWebIdentity`,
//! over real HTTP: the STS emulator issues them for a token read from a file,
//! the Bedrock emulator verifies SigV4 made with them (and their
//! `x-amz-security-token`). Caching, refresh before expiry with the token file
//! re-read, refresh after Bedrock refuses an expired credential, and failing
//! closed (`provider_error:credentials`) when STS refuses, without the token
//! ever appearing in what is recorded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

extern crate triage_gate_classify as tg_classify;

mod common;

use std::path::Path;

use serde_json::json;
use tg_classify::contract::reason;
use tg_classify::{
    BedrockClassifier, BedrockConfig, Classifier, ClassifyOutcome, RetryPolicy, WebIdentityConfig,
};
use tg_model::ImpactLevel;
use tg_sandbox::{ModelScript, Sandbox, SandboxConfig, ScriptReply, Target};

const MARK: &str = "checkout api";

fn good() -> serde_json::Value {
    json!({
        "classification": "high",
        "confidence": 0.91,
        "requires_ticket": true,
        "requires_paging": true,
        "requires_mim": false,
        "recommended_team": "payments",
        "rationale": "checkout error rate above 5%",
    })
}

fn web_identity(sb: &Sandbox, token_file: &Path) -> BedrockClassifier {
    let mut w = WebIdentityConfig::new(
        token_file.to_owned(),
        tg_sandbox::DEFAULT_STS_ROLE_ARN.to_owned(),
        "us-east-1",
    );
    w.sts_base_url = sb.sts_url();
    w.session_name = "triage-gate-test".into();
    w.duration_secs = 900;
    w.timeout_ms = 2_000;
    let mut c = BedrockConfig::new("us-east-1", "anthropic.claude-3-5-sonnet-20240620-v1:0", w);
    c.base_url = Some(sb.bedrock_url());
    c.retry = RetryPolicy {
        timeout_ms: 2_000,
        retries_max: 0,
        retry_after_max_secs: 1,
        backoff_base_ms: 5,
        backoff_max_ms: 20,
    };
    BedrockClassifier::new(c).unwrap()
}

async fn setup(token: &str) -> (Sandbox, tempfile::TempDir, std::path::PathBuf) {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    sb.state()
        .script_bedrock(ModelScript::new(
            MARK,
            ScriptReply::ToolInput { tool_input: good() },
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    (sb, dir, file)
}

async fn run(c: &dyn Classifier) -> ClassifyOutcome {
    c.classify(&common::event(ImpactLevel::High), &common::teams())
        .await
}

fn bedrock_statuses(sb: &Sandbox) -> Vec<u16> {
    sb.state()
        .requests(Target::Bedrock)
        .iter()
        .map(|r| r.status)
        .collect()
}

#[tokio::test]
async fn temporary_credentials_sign_bedrock_and_are_cached() {
    let (sb, _dir, file) = setup(tg_sandbox::DEFAULT_WEB_IDENTITY_TOKEN).await;
    let c = web_identity(&sb, &file);
    let first = run(&c).await;
    assert!(first.result.is_ok(), "{:?}", first.result);
    let second = run(&c).await;
    assert!(second.result.is_ok(), "{:?}", second.result);
    let calls = sb.state().sts_calls();
    assert_eq!(calls.len(), 1, "the credentials are reused: {calls:?}");
    assert_eq!(calls[0].status, 200);
    assert_eq!(calls[0].token_label.as_deref(), Some("default"));
    assert_eq!(calls[0].session_name.as_deref(), Some("triage-gate-test"));
    assert_eq!(calls[0].duration_secs.as_deref(), Some("900"));
    let requests = sb.state().requests(Target::Bedrock);
    assert_eq!(bedrock_statuses(&sb), [200, 200]);
    // Temporary credentials travel with their session token (redacted in recordings).
    assert!(
        requests[0].headers.contains_key("x-amz-security-token"),
        "{:?}",
        requests[0].headers
    );
}

#[tokio::test]
async fn credentials_near_expiry_are_refreshed_and_the_token_file_is_re_read() {
    let (sb, _dir, file) = setup(tg_sandbox::DEFAULT_WEB_IDENTITY_TOKEN).await;
    // 200 s left is inside the 300 s refresh margin: every call refreshes.
    sb.state().sts_set_credential_lifetime(Some(200));
    let rotated = "eyJhbGciOiJSUzI1NiJ9.rotated-web-identity.c2ln";
    sb.state().sts_issue_token("rotated", rotated).unwrap();
    let c = web_identity(&sb, &file);
    assert!(run(&c).await.result.is_ok());
    // The orchestrator rotates the projected token; the old one is revoked.
    std::fs::write(&file, rotated).unwrap();
    sb.state()
        .sts_revoke_token(tg_sandbox::DEFAULT_WEB_IDENTITY_TOKEN);
    assert!(run(&c).await.result.is_ok());
    let labels: Vec<_> = sb
        .state()
        .sts_calls()
        .into_iter()
        .map(|c| c.token_label)
        .collect();
    assert_eq!(
        labels,
        [Some("default".to_owned()), Some("rotated".to_owned())]
    );
    assert_eq!(bedrock_statuses(&sb), [200, 200]);
}

#[tokio::test]
async fn an_expired_credential_is_refreshed_once_and_the_call_succeeds() {
    let (sb, _dir, file) = setup(tg_sandbox::DEFAULT_WEB_IDENTITY_TOKEN).await;
    let c = web_identity(&sb, &file);
    assert!(run(&c).await.result.is_ok());
    // Revoked or expired early (clock skew): Bedrock refuses it.
    sb.state().sts_expire_credentials();
    let out = run(&c).await;
    assert!(out.result.is_ok(), "{:?}", out.result);
    assert_eq!(sb.state().sts_calls().len(), 2);
    assert_eq!(bedrock_statuses(&sb), [200, 403, 200]);
}

#[tokio::test]
async fn sts_refusals_fail_closed_without_quoting_the_token() {
    let secret_token = "eyJhbGciOiJSUzI1NiJ9.not-issued-by-anyone.c2ln";
    let (sb, dir, file) = setup(secret_token).await;
    let c = web_identity(&sb, &file);
    let out = run(&c).await;
    let r = out.result.unwrap_err();
    assert_eq!(r.reason, reason::PROVIDER_CREDENTIALS);
    assert!(r.detail.contains("InvalidIdentityToken"), "{}", r.detail);
    assert!(!r.detail.contains(secret_token));
    assert!(!format!("{c:?}").contains(secret_token));
    assert!(tg_classify::contract::is_provider_failure(&r.reason));
    assert_eq!(sb.state().requests(Target::Bedrock).len(), 0);

    // STS down.
    std::fs::write(&file, tg_sandbox::DEFAULT_WEB_IDENTITY_TOKEN).unwrap();
    sb.state().sts_fail_next(503, "ServiceUnavailable").unwrap();
    let r = run(&c).await.result.unwrap_err();
    assert_eq!(r.reason, reason::PROVIDER_CREDENTIALS);
    assert!(r.detail.contains("http 503"), "{}", r.detail);

    // No token file, then an empty one.
    let gone = web_identity(&sb, &dir.path().join("missing"));
    let r = run(&gone).await.result.unwrap_err();
    assert_eq!(r.reason, reason::PROVIDER_CREDENTIALS);
    assert!(r.detail.contains("cannot open"), "{}", r.detail);
    std::fs::write(&file, "  \n").unwrap();
    let r = run(&c).await.result.unwrap_err();
    assert_eq!(r.reason, reason::PROVIDER_CREDENTIALS);
    assert!(r.detail.contains("is empty"), "{}", r.detail);
    assert_eq!(sb.state().requests(Target::Bedrock).len(), 0);
}

#[tokio::test]
async fn the_sts_emulator_is_strict() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let post = |form: Vec<(&'static str, &'static str)>| {
        let http = http.clone();
        let url = format!("{}/", sb.sts_url());
        async move {
            let resp = http.post(url).form(&form).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    };
    let full = vec![
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", tg_sandbox::DEFAULT_STS_ROLE_ARN),
        ("RoleSessionName", "s1"),
        ("WebIdentityToken", tg_sandbox::DEFAULT_WEB_IDENTITY_TOKEN),
        ("DurationSeconds", "900"),
    ];
    let (status, body) = post(full.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<AssumeRoleWithWebIdentityResult>"));
    assert!(body.contains("<AccessKeyId>ASIA"));
    // (form parameters, expected status, expected error code)
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            full.iter()
                .copied()
                .filter(|p| p.0 != "WebIdentityToken")
                .collect(),
            400,
            "<Code>ValidationError</Code>",
        ),
        (
            full.iter()
                .map(|p| {
                    if p.0 == "WebIdentityToken" {
                        (p.0, "")
                    } else {
                        *p
                    }
                })
                .collect(),
            400,
            "<Code>ValidationError</Code>",
        ),
        (
            full.iter()
                .map(|p| {
                    if p.0 == "WebIdentityToken" {
                        (p.0, "forged.token.x")
                    } else {
                        *p
                    }
                })
                .collect(),
            400,
            "<Code>InvalidIdentityToken</Code>",
        ),
        (
            full.iter()
                .map(|p| {
                    if p.0 == "Action" {
                        (p.0, "AssumeRole")
                    } else {
                        *p
                    }
                })
                .collect(),
            400,
            "<Code>InvalidAction</Code>",
        ),
        (
            full.iter()
                .map(|p| {
                    if p.0 == "DurationSeconds" {
                        (p.0, "60")
                    } else {
                        *p
                    }
                })
                .collect(),
            400,
            "<Code>ValidationError</Code>",
        ),
        (
            full.iter()
                .map(|p| {
                    if p.0 == "RoleArn" {
                        (p.0, "arn:aws:iam::123456789012:role/someone-else")
                    } else {
                        *p
                    }
                })
                .collect(),
            403,
            "<Code>AccessDenied</Code>",
        ),
    ];
    for (form, want_status, want_code) in cases {
        let (status, body) = post(form.clone()).await;
        assert_eq!(status, want_status, "{form:?}: {body}");
        assert!(body.contains("<ErrorResponse"), "{body}");
        assert!(body.contains(want_code), "{form:?}: {body}");
    }
    // Never the token in what the emulator keeps.
    let calls = format!("{:?}", sb.state().sts_calls());
    assert!(!calls.contains(tg_sandbox::DEFAULT_WEB_IDENTITY_TOKEN));
    assert!(calls.contains("InvalidIdentityToken"));
}
