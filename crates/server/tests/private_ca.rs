//! Issue 21 item 12: private certificate authorities. A loopback HTTPS server
//! whose certificate is signed by a CA made here (the `openssl` CLI) fronts
//! the sandbox. Every outbound client the gate builds from its configuration
//! (an action target, its OAuth token endpoint, the classifier, an audit
//! sink, the JWKS fetch, the SNS certificate fetch) accepts it when
//! `tls.ca_file` (or the target's own `tls.ca_file`) names the CA, and
//! refuses it, saying the issuer is unknown, when it does not. Real TLS
//! (rustls on both sides), real sockets, no mock of the TLS layer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, TimeZone as _, Utc};
use common::tg_server;
use common::tg_server::Clock as _;
use serde_json::{Value, json};
use tg_config::{Config, MapSecrets, SecretRef};
use tg_model::{
    ActionKind, ActionOp, AlertStatus, CorrelationId, Environment, Fingerprint, Impact,
    ImpactLevel, NormalizedEvent, PlannedAction, RunId, Severity, Source,
};
use tokio_rustls::rustls;

/// What the test says when a client refuses the server (`tg_identity::trust`).
const UNKNOWN_ISSUER: &str = "unknown issuer";
const CLIENT_ID: &str = "gate-client";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:alarms";

// ------------------------------------------------------------ certificates

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ca.pem` (the private CA), `other-ca.pem` (a CA that signed nothing here),
/// and `server.pem`/`server.key` for `localhost` (and 127.0.0.1) signed by `ca.pem`. EC keys:
/// made in milliseconds.
fn make_certificates(dir: &Path) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=tg-test-{ca}"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

// ------------------------------------------------------------ the HTTPS front

/// Accepts TLS on loopback; a client that does not trust the certificate
/// aborts its handshake, and the next connection is awaited.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[derive(Clone)]
struct Front {
    sandbox: String,
    http: reqwest::Client,
    jwks: Value,
}

/// `/jwks` answers the issuer's key set; everything else is forwarded to the
/// sandbox over plain http, so the emulators answer behind real TLS.
async fn forward(State(front): State<Front>, req: axum::extract::Request) -> Response {
    if req.uri().path() == "/jwks" {
        return axum::Json(front.jwks.clone()).into_response();
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20).await.unwrap();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = front
        .http
        .request(parts.method, format!("{}{path}", front.sandbox))
        .body(body);
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            out = out.header(name, value);
        }
    }
    let answer = out.send().await.unwrap();
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap();
    let mut resp = Response::new(axum::body::Body::from(bytes));
    *resp.status_mut() = status;
    for (name, value) in &headers {
        if name != axum::http::header::CONTENT_LENGTH
            && name != axum::http::header::TRANSFER_ENCODING
        {
            resp.headers_mut().insert(name, value.clone());
        }
    }
    resp
}

/// Serves HTTPS for `localhost` with `dir/server.pem`; returns its base URL.
async fn https_front(dir: &Path, sandbox: String) -> String {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&std::fs::read(dir.join("server.pem")).unwrap())
            .collect::<Result<_, _>>()
            .unwrap();
    let key =
        PrivateKeyDer::from_pem_slice(&std::fs::read(dir.join("server.key")).unwrap()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    let jwk_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../identity/tests/keys/rsa1.jwk.json");
    let jwk: Value = serde_json::from_slice(&std::fs::read(jwk_path).unwrap()).unwrap();
    let front = Front {
        sandbox,
        http: reqwest::Client::new(),
        jwks: json!({ "keys": [jwk] }),
    };
    let app = axum::Router::new().fallback(forward).with_state(front);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("https://localhost:{port}")
}

// ------------------------------------------------------------ logs

/// Every log line of this test process (the JWKS and SNS fetches report
/// their failures in logs only).
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

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

fn logs() -> LogBuffer {
    static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(buffer.clone())
            .with_ansi(false)
            .init();
        buffer
    })
    .clone()
}

// ------------------------------------------------------------ the gate's side

struct World {
    sandbox: tg_sandbox::Sandbox,
    base: String,
    certs: tempfile::TempDir,
}

impl World {
    async fn start() -> Option<World> {
        if Command::new("openssl").arg("version").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs openssl for this test"
            );
            eprintln!("SKIPPED: no openssl");
            return None;
        }
        let certs = tempfile::tempdir().unwrap();
        make_certificates(certs.path());
        let sandbox = tg_sandbox::Sandbox::start(tg_sandbox::SandboxConfig::default())
            .await
            .unwrap();
        sandbox
            .state()
            .servicenow_oauth_client(CLIENT_ID, tg_sandbox::DEFAULT_SERVICENOW_TOKEN)
            .unwrap();
        sandbox
            .state()
            .servicenow_oauth_enable_client_credentials(true);
        let base = https_front(certs.path(), sandbox.base_url()).await;
        Some(World {
            sandbox,
            base,
            certs,
        })
    }

    fn ca(&self, name: &str) -> PathBuf {
        self.certs.path().join(name)
    }

    fn secrets(&self) -> MapSecrets {
        MapSecrets::default()
            .with(
                &SecretRef::Env("ANTHROPIC_API_KEY".into()),
                tg_sandbox::DEFAULT_ANTHROPIC_API_KEY,
            )
            .with(
                &SecretRef::Env("SERVICENOW_SECRET".into()),
                tg_sandbox::DEFAULT_SERVICENOW_TOKEN,
            )
            .with(
                &SecretRef::Env("HEC_TOKEN".into()),
                tg_sandbox::DEFAULT_SPLUNK_HEC_TOKEN,
            )
    }

    /// Every HTTPS client's target is the front; `tls` is added as given.
    fn config(&self, tls: &str, servicenow_tls: &str) -> Config {
        let base = &self.base;
        let yaml = format!(
            r#"
{tls}
classifier:
  provider: anthropic
  anthropic:
    base_url: {base}/anthropic
    model: claude-sonnet-4-5
    api_key: {{ env: ANTHROPIC_API_KEY }}
    timeout_ms: 5000
    retries_max: 0
catalog:
  teams:
    payments: {{ description: "Payments SRE" }}
  services:
    checkout: {{ team: payments, autonomy: paging, tier: 1 }}
actions:
  servicenow:
    base_url: {base}/servicenow
    auth:
      oauth:
        client_id: {CLIENT_ID}
        client_secret: {{ env: SERVICENOW_SECRET }}
        timeout_ms: 5000
    assignment_groups:
      payments: 1c832706732023002728660c4cf6a7b9
    timeout_ms: 5000
{servicenow_tls}
audit:
  sinks:
    - name: splunk
      type: splunk_hec
      url: {base}/splunk
      token: {{ env: HEC_TOKEN }}
      timeout_ms: 5000
identity:
  outbound:
    probe_interval_secs: 0
  inbound:
    mode: jwt
    issuer: https://idp.test
    audiences: [triage-gate]
    jwks_url: {base}/jwks
    jwks_timeout_ms: 5000
    jwks_refresh_min_interval_secs: 1
sources:
  sns:
    topic_arns: ["{TOPIC}"]
    # The SNS URL policy allows a port other than 443 only for a loopback IP
    # (behind this test flag); the fetch is still HTTPS, verified as any other.
    cert_host_pattern: '127\.0\.0\.1'
    allow_insecure_loopback_cert_urls: true
  aws:
    account_environments: {{ "123456789012": prod }}
"#
        );
        Config::from_yaml(&yaml, "private_ca.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn pipeline(&self, config: &Config) -> tg_server::Pipeline {
        tg_server::build_pipeline(config, None, &self.secrets()).expect("pipeline builds")
    }
}

fn ticket() -> PlannedAction {
    PlannedAction {
        kind: ActionKind::Ticket,
        op: ActionOp::Create,
        parent_key: None,
        run_id: RunId::from("run_0190f0c2-7a3b-7c1d-9e2f-000000000001"),
        correlation_id: CorrelationId::from("am:prod:9f3c1e2a"),
        idempotency_key: "tg:run_0190f0c2-7a3b-7c1d-9e2f-000000000001:ticket".into(),
        dedup_key: "tg:0123456789abcdef0123456789abcdef".into(),
        team: "payments".into(),
        service: "checkout".into(),
        environment: Environment::Production,
        severity: Severity::High,
        confidence: 0.91,
        fingerprint: Fingerprint::from("0123456789abcdef0123456789abcdef"),
        title: "Checkout error rate".into(),
        details: "error rate above 5%".into(),
        links: vec![],
    }
}

fn event() -> NormalizedEvent {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    NormalizedEvent {
        source: Source::Alertmanager,
        origin: "prometheus".to_owned(),
        status: AlertStatus::Firing,
        environment: Environment::Production,
        service: "checkout".to_owned(),
        component: None,
        alert_name: "HighErrorRate".to_owned(),
        summary: "error rate above 5% on checkout".to_owned(),
        error_signature: "error rate above <n>% on checkout".to_owned(),
        fingerprint: Fingerprint::from("0123456789abcdef0123456789abcdef"),
        correlation_ids: BTreeMap::new(),
        impact: Impact {
            level: ImpactLevel::High,
            evidence: vec![],
        },
        log_pointers: vec![],
        labels: BTreeMap::new(),
        occurred_at: at,
        received_at: at,
        sender: None,
    }
}

fn record(seq: u64) -> tg_ship::ShipRecord {
    tg_ship::ShipRecord {
        seq,
        time: Utc::now(),
        json: json!({ "seq": seq, "kind": "run" }).to_string(),
        fields: BTreeMap::new(),
    }
}

/// What each client did against the front: `Ok` when the request went
/// through, `Err(why)` when it did not.
struct Outcomes {
    action: Result<(), String>,
    token: Result<(), String>,
    classifier: Result<(), String>,
    sink: Result<(), String>,
    jwks_ready: bool,
}

async fn drive(p: &tg_server::Pipeline) -> Outcomes {
    let attempt = p.executor.attempt(&ticket()).await;
    let action = match attempt.error {
        None => Ok(()),
        Some(e) => Err(e.to_string()),
    };
    let (_, source) = p
        .token_sources
        .iter()
        .find(|(t, _)| t == "servicenow")
        .expect("servicenow token source");
    let token = source.token().await.map(|_| ()).map_err(|e| e.to_string());
    let outcome = p
        .classifier
        .classify(&event(), &p.teams_for("checkout"))
        .await;
    let classifier = match (&outcome.raw_output, &outcome.result) {
        (Some(_), _) => Ok(()),
        (None, Err(r)) => Err(format!("{}: {}", r.reason, r.detail)),
        (None, Ok(_)) => Ok(()),
    };
    let sink = p.sinks[0]
        .send(&[record(1)])
        .await
        .map_err(|e| e.to_string());
    let tg_server::auth::Inbound::Jwt(auth) = &p.inbound else {
        panic!("jwt mode");
    };
    let now = Utc::now().timestamp();
    auth.warm(now).await;
    let jwks_ready = auth.ready(now).await;
    Outcomes {
        action,
        token,
        classifier,
        sink,
        jwks_ready,
    }
}

fn assert_refused(what: &str, r: &Result<(), String>) {
    match r {
        Ok(()) => panic!("{what}: accepted a certificate from an unknown CA"),
        Err(e) => assert!(e.contains(UNKNOWN_ISSUER), "{what}: {e}"),
    }
}

/// The acceptance test: the same configuration with and without
/// `tls.ca_file`, every client exercised against the same HTTPS server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outbound_client_trusts_the_configured_ca_and_only_it() {
    let log = logs();
    let Some(w) = World::start().await else {
        return;
    };

    // Trusted: tls.ca_file names the CA that signed the server's certificate.
    let trusted = w.config(
        &format!("tls:\n  ca_file: {}", w.ca("ca.pem").display()),
        "",
    );
    let p = w.pipeline(&trusted);
    let o = drive(&p).await;
    assert_eq!(o.token, Ok(()), "OAuth token endpoint");
    assert_eq!(o.action, Ok(()), "ServiceNow ticket");
    assert_eq!(o.classifier, Ok(()), "classifier (Anthropic)");
    assert_eq!(o.sink, Ok(()), "audit sink (Splunk HEC)");
    assert!(o.jwks_ready, "JWKS fetched: {}", log.text());
    assert_eq!(w.sandbox.state().incidents().len(), 1);
    drop(p);

    // Not trusted: the bundled roots only.
    let untrusted = w.config("", "");
    let p = w.pipeline(&untrusted);
    let o = drive(&p).await;
    assert_refused("OAuth token endpoint", &o.token);
    assert_refused("ServiceNow ticket", &o.action);
    assert_refused("classifier (Anthropic)", &o.classifier);
    assert_refused("audit sink (Splunk HEC)", &o.sink);
    assert!(!o.jwks_ready, "JWKS must not be fetched");
    let text = log.text();
    assert!(
        text.lines()
            .any(|l| l.contains("cannot fetch the issuer's key set") && l.contains(UNKNOWN_ISSUER)),
        "the JWKS failure names the cause: {text}"
    );
    assert_eq!(
        w.sandbox.state().incidents().len(),
        1,
        "nothing reached ServiceNow"
    );
}

/// A target's own `tls.ca_file` replaces the top-level one for that target:
/// ServiceNow (its own file: the right CA) is trusted while the classifier
/// (the top-level file: a CA that signed nothing here) is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targets_own_ca_file_replaces_the_global_one() {
    let Some(w) = World::start().await else {
        return;
    };
    let config = w.config(
        &format!("tls:\n  ca_file: {}", w.ca("other-ca.pem").display()),
        &format!("    tls:\n      ca_file: {}", w.ca("ca.pem").display()),
    );
    let p = w.pipeline(&config);
    let o = drive(&p).await;
    assert_eq!(o.token, Ok(()), "ServiceNow's token endpoint: its own CA");
    assert_eq!(o.action, Ok(()), "ServiceNow: its own CA");
    assert_refused("classifier: the global CA", &o.classifier);
    assert_refused("audit sink: the global CA", &o.sink);
}

/// The SNS signing certificate is fetched over HTTPS from a host the CA
/// vouches for: accepted with `tls.ca_file`, 503 (nothing accepted, the log
/// says why) without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_certificate_fetch_trusts_the_configured_ca() {
    let log = logs();
    let Some(w) = World::start().await else {
        return;
    };
    let cert_url = format!("{}/sns/cert.pem", w.base.replace("localhost", "127.0.0.1"));
    for (tls, expected) in [
        (
            format!("tls:\n  ca_file: {}", w.ca("ca.pem").display()),
            202,
        ),
        (String::new(), 503),
    ] {
        let mut config = w.config(&tls, "");
        config.identity.inbound = tg_config::InboundConfig {
            insecure_allow_anonymous: true,
            ..Default::default()
        };
        let sandbox = tg_sandbox::Sandbox::start(tg_sandbox::SandboxConfig::default())
            .await
            .unwrap();
        let h = common::Harness::launch(sandbox, &config, &w.secrets()).await;
        let message = json!({
            "AlarmName": "checkout-5xx", "AlarmDescription": "errors", "AWSAccountId": "123456789012",
            "NewStateValue": "ALARM", "NewStateReason": "Threshold Crossed",
            "StateChangeTime": "2026-11-24T02:59:50.000+0000", "Region": "US East (N. Virginia)",
            "AlarmArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:checkout-5xx",
            "OldStateValue": "OK",
            "Trigger": {
                "MetricName": "CPUUtilization", "Namespace": "AWS/RDS", "StatisticType": "Statistic",
                "Statistic": "AVERAGE", "Unit": null,
                "Dimensions": [{"value": "checkout", "name": "DBInstanceIdentifier"}],
                "Period": 60, "EvaluationPeriods": 1,
                "ComparisonOperator": "GreaterThanThreshold", "Threshold": 90.0
            }
        });
        let envelope = json!({
            "Type": "Notification",
            "MessageId": uuid::Uuid::new_v4().to_string(),
            "TopicArn": TOPIC,
            "Message": message.to_string(),
            "Timestamp": h.clock.now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "SigningCertURL": cert_url,
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
        });
        // Signed by the front's sandbox, whose /sns/cert.pem the front serves.
        let signed = w.sandbox.state().sns_sign(&envelope, 2).unwrap();
        let resp = h
            .http
            .post(format!("{}/v1/events/cloudwatch-sns", h.base))
            .header("content-type", "text/plain; charset=UTF-8")
            .header("x-amz-sns-message-type", "Notification")
            .body(serde_json::to_vec(&signed).unwrap())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, expected, "{tls:?}: {body}");
        if expected == 503 {
            assert_eq!(
                body["type"], "https://triage-gate.dev/problems/sns-cert-unavailable",
                "{body}"
            );
            let text = log.text();
            assert!(
                text.lines()
                    .any(|l| l.contains("SNS signing certificate unavailable")
                        && l.contains(UNKNOWN_ISSUER)),
                "the log names the cause: {text}"
            );
        }
    }
}

/// A CA file that cannot be used stops the build with its key and path, and
/// `check_tls` (what `config check` runs) lists every such file at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_ca_files_are_named_with_key_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-cert.pem");
    std::fs::write(&not_pem, "just text\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let yaml = format!(
        "tls:\n  ca_file: {}\nactions:\n  bridge:\n    webhooks: [{{name: ops, url: 'https://hooks.example.com/x', secret: {{env: S}}}}]\n    tls:\n      ca_file: {}\n",
        not_pem.display(),
        missing.display()
    );
    let config = Config::from_yaml(&yaml, "gate.yaml").unwrap_or_else(|e| panic!("{e}"));
    let found = tg_server::build::check_tls(&config);
    let keys: BTreeSet<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["tls.ca_file", "actions.bridge.tls.ca_file"]),
        "{found:?}"
    );
    for (key, message) in &found {
        assert!(message.starts_with(&format!("{key}: ")), "{message}");
    }
    assert!(
        found
            .iter()
            .any(|(_, m)| m.contains(&not_pem.display().to_string())
                && m.contains("no certificate in the PEM file")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(_, m)| m.contains(&missing.display().to_string())
                && m.contains("cannot read the file")),
        "{found:?}"
    );
    let secrets = MapSecrets::default().with(&SecretRef::Env("S".into()), &"s".repeat(40));
    let err = tg_server::build_pipeline(&config, None, &secrets).unwrap_err();
    assert!(
        format!("{err:#}").starts_with(&format!(
            "tls.ca_file: {}: no certificate",
            not_pem.display()
        )),
        "{err:#}"
    );

    // An empty path is a configuration error with its line.
    let errors = Config::from_yaml("tls:\n  ca_file: ''\n", "gate.yaml").unwrap_err();
    assert_eq!(
        errors.to_string(),
        "gate.yaml:2: tls.ca_file: must name a PEM file (or be left out)"
    );
}
