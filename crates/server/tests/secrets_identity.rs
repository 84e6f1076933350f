//! Issue 7's secret check, a sibling of `secrets_everywhere.rs`: with OAuth
//! client credentials configured for ServiceNow (a client secret sent by HTTP
//! Basic, then a `private_key_jwt` private key), and the access tokens the
//! sandbox issued, none of them appears in the logs (every line, TRACE for
//! our crates), the data dir (SQLite database, WAL, audit.jsonl), the gate's
//! answers (runs, actions, review, problem bodies) , `/metrics` or `/readyz`. A 401 from
//! the Table API (tokens revoked) is part of the run, so error texts are covered.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{CONFIG, Harness, answer, event, tg_server};
use tg_config::{Config, MapSecrets, SecretRef};
use tg_sandbox::{Sandbox, SandboxConfig};

const CLIENT_SECRET: &str = "sn-oauth-secret-LEAKPROBE-9d2f6a";
const PRIVATE_KEY: &str = include_str!("../../identity/tests/keys/rsa1.pem");
const PUBLIC_KEY: &str = include_str!("../../identity/tests/keys/rsa1.pub.pem");
const STATIC_TOKEN: &str = "    token: { env: SERVICENOW_TOKEN }\n";

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A gate whose ServiceNow authenticates with `auth` (YAML under `auth:`).
async fn start(auth: &str, secrets: MapSecrets) -> Harness {
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    assert!(CONFIG.contains(STATIC_TOKEN));
    let yaml = CONFIG
        .replace(STATIC_TOKEN, auth)
        .replace("${SANDBOX}", &sandbox.base_url());
    let mut config = Config::from_yaml(&yaml, "test").unwrap();
    if tg_store::testing::postgres_selected() {
        config.store.url = Some(tg_store::testing::fresh_postgres_database().await.unwrap());
    }
    let webhook = sandbox.slack_webhook_url("leak-mim-channel");
    let mut secrets = secrets
        .with(
            &SecretRef::Env("ANTHROPIC_API_KEY".into()),
            tg_sandbox::DEFAULT_ANTHROPIC_API_KEY,
        )
        .with(&SecretRef::Env("MIM_BRIDGE_WEBHOOK".into()), &webhook);
    for (i, name) in [
        "PD_KEY_PLATFORM_OPS",
        "PD_KEY_DBA",
        "PD_KEY_PAYMENTS",
        "PD_KEY_SEARCH",
    ]
    .iter()
    .enumerate()
    {
        let key = format!("{i:0>2}{}", "t3stk3y0".repeat(4));
        secrets = secrets.with(&SecretRef::Env((*name).into()), &key[..32]);
    }
    let clock = Arc::new(tg_server::ManualClock::new(common::t0()));
    let pipeline =
        tg_server::build_pipeline_with_clock(&config, None, &secrets, clock.clone()).unwrap();
    let data = tempfile::Builder::new()
        .prefix("tg-secrets-identity-")
        .tempdir()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gate = tg_server::start(
        listener,
        data.path(),
        pipeline,
        clock.clone(),
        &config.server,
    )
    .await
    .unwrap();
    let base = format!("http://{}", gate.addr);
    Harness {
        sandbox,
        gate: Some(gate),
        clock,
        data,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        base,
        store_url: config.store.url.clone(),
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

async fn text(h: &Harness, path: &str) -> String {
    h.http
        .get(format!("{}{path}", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Two tickets (the second after every token was revoked: a 401, a refetch),
/// then every output of the gate, concatenated.
async fn exercise(h: &Harness, tag: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, service) in ["checkout", "payments-api"].iter().enumerate() {
        let marker = format!("{tag}-{i}");
        h.script_tool(
            &marker,
            answer("medium", 0.9, true, false, false, "payments"),
        );
        let ids = h
            .submit(
                "generic",
                &event(service, &format!("Leak{i}"), "prod", "datadog", &marker),
                None,
            )
            .await;
        let run = h.wait_completed(&ids[0]).await;
        assert_eq!(run["actions"][0]["status"], "delivered", "{run}");
        out.extend_from_slice(run.to_string().as_bytes());
        // The next delivery meets a 401 first.
        h.state().servicenow_revoke_tokens();
    }
    assert_eq!(h.state().incidents().len(), 2);
    // A problem body (an event the normalizer refuses).
    let bad = h.post_raw("generic", b"{not json".to_vec(), None).await;
    out.extend_from_slice(bad.text().await.unwrap().as_bytes());
    for path in [
        "/metrics",
        "/readyz",
        "/v1/review",
        "/v1/actions?status=delivered",
        "/v1/actions?status=pending",
        "/v1/actions?status=dead",
        "/v1/storm",
    ] {
        out.extend_from_slice(text(h, path).await.as_bytes());
    }
    let mut files = Vec::new();
    files_under(h.data.path(), &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("audit.jsonl")),
        "{files:?}"
    );
    // SQLite's -wal/-shm may vanish while this reads (checkpointed into the
    // main file when the last connection closes): the main file is read last.
    files.sort_by_key(|f| f.extension().is_some_and(|e| e == "sqlite"));
    for f in files {
        match std::fs::read(&f) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && f.extension().is_some_and(|x| x != "sqlite" && x != "jsonl") => {}
            Err(e) => panic!("{}: {e}", f.display()),
        }
    }
    if let Some(url) = &h.store_url {
        // On PostgreSQL the store is not a file: what it holds is searched too.
        let rows = tg_store::testing::dump_postgres_text(url).await.unwrap();
        out.extend_from_slice(rows.as_bytes());
    }
    out
}

fn assert_absent(hay: &[u8], what: &str, needle: &str) {
    let n = needle.as_bytes();
    if let Some(at) = hay.windows(n.len()).position(|w| w == n) {
        let from = at.saturating_sub(80);
        let to = (at + n.len() + 80).min(hay.len());
        panic!(
            "{what} leaked: ...{}...",
            String::from_utf8_lossy(&hay[from..to])
        );
    }
}

/// The distinctive parts of a PEM key: its base64 lines.
fn key_lines(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_client_secrets_private_keys_and_access_tokens_never_leak() {
    let logs = LogBuffer::default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "debug,triage_gate_server=trace,triage_gate_actions=trace,\
             triage_gate_identity=trace,triage_gate_store=trace,triage_gate_sandbox=trace",
        ))
        .with_writer(logs.clone())
        .with_ansi(false)
        .init();

    // 1. A client secret, sent with HTTP Basic.
    let secret_ref = SecretRef::Env("SN_OAUTH_SECRET".into());
    let h = start(
        "    auth:
      oauth:
        client_id: tg-leak-basic
        client_secret: { env: SN_OAUTH_SECRET }
        client_secret_method: basic
",
        MapSecrets::default().with(&secret_ref, CLIENT_SECRET),
    )
    .await;
    h.state()
        .servicenow_oauth_client("tg-leak-basic", CLIENT_SECRET)
        .unwrap();
    h.state().servicenow_oauth_enable_client_credentials(true);
    let mut outputs = exercise(&h, "basic").await;
    let mut tokens = h.state().servicenow_issued_tokens();
    assert_eq!(tokens.len(), 2, "one token, then one after the revocation");

    // 2. A private key signing client assertions.
    let key_ref = SecretRef::File("/run/secrets/sn-oauth-key.pem".into());
    let h2 = start(
        "    auth:
      oauth:
        client_id: tg-leak-key
        private_key: { file: /run/secrets/sn-oauth-key.pem }
",
        MapSecrets::default().with(&key_ref, PRIVATE_KEY),
    )
    .await;
    h2.state()
        .servicenow_oauth_client_key("tg-leak-key", PUBLIC_KEY)
        .unwrap();
    h2.state().servicenow_oauth_enable_client_credentials(true);
    outputs.extend(exercise(&h2, "key").await);
    tokens.extend(h2.state().servicenow_issued_tokens());
    assert_eq!(tokens.len(), 4);

    // Issue 21 item 15: each delivery attempt's audit record names the
    // outbound identity it used (the OAuth client, never its secret).
    let seen = String::from_utf8_lossy(&outputs);
    for client in ["tg-leak-basic", "tg-leak-key"] {
        assert!(
            seen.contains(&format!(
                "\"identity\":\"servicenow: oauth client_credentials client_id={client}"
            )),
            "no attempt record names {client}"
        );
    }

    // Every recording of both sandboxes (they redact what they were sent).
    for sb in [&h.sandbox, &h2.sandbox] {
        for t in tg_sandbox::Target::ALL {
            outputs.extend(serde_json::to_vec(&sb.state().requests(t)).unwrap());
        }
    }
    let logs = logs.0.lock().unwrap().clone();
    assert!(
        String::from_utf8_lossy(&logs).contains("fetching a new one"),
        "the 401 path ran"
    );
    for (where_, hay) in [("an output", &outputs), ("the logs", &logs)] {
        assert_absent(
            hay,
            &format!("the client secret in {where_}"),
            CLIENT_SECRET,
        );
        for line in key_lines(PRIVATE_KEY) {
            assert_absent(hay, &format!("the private key in {where_}"), line);
        }
        for t in &tokens {
            assert_absent(hay, &format!("an access token in {where_}"), t.expose());
        }
    }
}
