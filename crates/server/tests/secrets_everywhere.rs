//! Issue 3's acceptance: a secret placed in every field of every source never
//! appears in the store, the audit log, the model request, the logs, or any
//! HTTP answer of the gate.
//!
//! Each source's documented example payloads (the golden inputs of
//! `crates/normalize/tests/golden/`) are walked and a secret is injected into
//! every string leaf (appended to it, or replacing it) and, separately, into
//! every object key, so a field added to an example later is covered without
//! touching this test. A leaf the normalizer must refuse when it carries a
//! secret (an enumerated status, a version, a base64 blob) is *structural*: it
//! is posted on its own instead, and must be refused without echoing the
//! secret. The SNS payloads are signed by the sandbox's SNS signer.
//!
//! Everything goes through the real gate over HTTP, with the Anthropic
//! emulator as the model (its recordings are the model requests), real
//! SQLite, and a `tracing` subscriber at DEBUG capturing every log line.
//! Afterwards the raw bytes of every file in the data dir (SQLite database,
//! WAL, audit.jsonl), every request any emulator received, the logs and the
//! gate's answers are searched for each secret and its distinctive parts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::SecondsFormat;
use common::tg_server::Clock as _;
use common::{CONFIG, Harness};
use serde_json::{Value, json};
use tg_model::Source;
use tg_normalize::NormalizeContext;
use tg_sandbox::Target;

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:alarms";

/// One kind of secret: the text planted, and the substrings that must never
/// show up anywhere (the whole secret is not enough: a half-redacted JWT
/// still leaks its signature).
struct Secret {
    /// The `[REDACTED:<kind>]` marker the redactor writes for it.
    kind: &'static str,
    text: &'static str,
    needles: &'static [&'static str],
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ0Zy1sZWFrLXByb2JlIn0.Qm9ndXNTaWduYXR1cmVGb3JUcmlhZ2VHYXRlX3Rlc3Q";

const SECRETS: &[Secret] = &[
    Secret {
        kind: "aws_access_key",
        text: "AKIAZ7QW4XK2N3LP5RTV",
        needles: &["AKIAZ7QW4XK2N3LP5RTV", "Z7QW4XK2N3LP5RTV"],
    },
    Secret {
        kind: "aws_secret",
        text: "aws_secret_access_key=Wq7Zp2Lk9Xv4Rt8Yn3Bc6Md1Fg5Hj0KsEaUiOoPz",
        needles: &[
            "Wq7Zp2Lk9Xv4Rt8Yn3Bc6Md1Fg5Hj0KsEaUiOoPz",
            "Wq7Zp2Lk9Xv4Rt8Yn3",
        ],
    },
    Secret {
        kind: "jwt",
        text: JWT,
        needles: &[
            "eyJzdWIiOiJ0Zy1sZWFrLXByb2JlIn0",
            "Qm9ndXNTaWduYXR1cmVGb3JUcmlhZ2VHYXRlX3Rlc3Q",
        ],
    },
    Secret {
        kind: "bearer",
        text: "Authorization: Bearer tgpat_Tk7Rv2Xq9Lm4Np8Zs3Wc6Yb1Hd5Jf0Ge",
        needles: &["Tk7Rv2Xq9Lm4Np8Zs3Wc6Yb1Hd5Jf0Ge", "Tk7Rv2Xq9Lm4Np8"],
    },
    Secret {
        kind: "url_password",
        text: "https://deploy:hunter2pass@grafana.internal.example.com/d/leak",
        needles: &["hunter2pass"],
    },
    Secret {
        kind: "pem",
        text: "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mVk9QxR7sLp4WnY8bHc1JfG6dKe0uTqZ\nTGVha1Byb2JlUGVtQm9keUxpbmVUd29PZlRoZUtleQ\n-----END RSA PRIVATE KEY-----",
        needles: &[
            "MIIEpAIBAAKCAQEA3Tz2mVk9QxR7sLp4WnY8bHc1JfG6dKe0uTqZ",
            "TGVha1Byb2JlUGVtQm9keUxpbmVUd29PZlRoZUtleQ",
        ],
    },
    // The shapes issue 21 (item 5) added: whole quoted and bracketed
    // values, Slack and GitHub tokens, an `Authorization: Token` value.
    Secret {
        kind: "secret",
        text: "db_password: \"staple sweepQz8 horse\"",
        needles: &["sweepQz8"],
    },
    Secret {
        kind: "secret",
        text: "api_key=[BracketSweepQz8Lm]",
        needles: &["BracketSweepQz8Lm"],
    },
    Secret {
        kind: "slack",
        text: "xoxb-2233445566-SlackSweepQz8Wv9",
        needles: &["SlackSweepQz8Wv9"],
    },
    Secret {
        kind: "github",
        text: "ghp_GhSweepQz8Wv9Lm4Xc2Rt8Yb3Nd6Kf1Hs5P",
        needles: &["GhSweepQz8Wv9Lm4Xc2"],
    },
    Secret {
        kind: "authorization",
        text: "Authorization: Token AuthSweepQz8Wv9Lm4",
        needles: &["AuthSweepQz8Wv9Lm4"],
    },
    Secret {
        kind: "email",
        text: "leakprobe.oncall@payments-corp.example",
        needles: &["leakprobe.oncall", "leakprobe"],
    },
];

/// Every secret at once, one per line (a value may hold several).
fn all_secrets() -> String {
    SECRETS
        .iter()
        .map(|s| s.text)
        .collect::<Vec<_>>()
        .join("\n")
}

fn needles() -> impl Iterator<Item = (&'static str, &'static str)> {
    SECRETS
        .iter()
        .flat_map(|s| s.needles.iter().map(move |n| (s.kind, *n)))
}

// ---------------------------------------------------------------- log capture

/// Every log line of the test process, written by the `tracing` subscriber.
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

/// The process's one subscriber (several tests share it; each searches all of it).
fn capture_logs() -> LogBuffer {
    static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(install_log_capture).clone()
}

fn install_log_capture() -> LogBuffer {
    let buffer = LogBuffer::default();
    // DEBUG everywhere except the HTTP/TLS plumbing's wire-level chatter; the
    // triage_gate crates at TRACE (whatever they log, at any level).
    let filter = tracing_subscriber::EnvFilter::new(
        "debug,triage_gate_server=trace,triage_gate_classify=trace,triage_gate_actions=trace,\
         triage_gate_store=trace,triage_gate_normalize=trace,triage_gate_sandbox=trace",
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(buffer.clone())
        .with_ansi(false)
        .init();
    buffer
}

// ------------------------------------------------------------- JSON injection

#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Paths of every string leaf of `v`.
fn string_leaves(v: &Value, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match v {
        Value::String(_) => out.push(path.clone()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                string_leaves(item, path, out);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                path.push(Seg::Key(k.clone()));
                string_leaves(item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Paths of every object key of `v` (the path ends with the key itself).
fn object_keys(v: &Value, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                object_keys(item, path, out);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                path.push(Seg::Key(k.clone()));
                out.push(path.clone());
                object_keys(item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The value at `path`, if every step exists (never inserts).
fn get_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::Index(i) => v.get_mut(*i),
    })
}

fn at_mut<'a>(v: &'a mut Value, path: &[Seg]) -> &'a mut Value {
    path.iter().fold(v, |v, seg| match seg {
        Seg::Key(k) => &mut v[k.as_str()],
        Seg::Index(i) => &mut v[*i],
    })
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `original + " " + secret`: the field keeps its meaning.
    Append,
    /// The secret alone (a URL field becomes a URL with a password).
    Replace,
    /// The key `original_secret` (label names, tag keys, annotation names).
    Key,
}

fn inject_one(v: &mut Value, path: &[Seg], mode: Mode, secret: &str) {
    match mode {
        Mode::Append | Mode::Replace => {
            let leaf = at_mut(v, path);
            let old = leaf.as_str().unwrap_or_default().to_owned();
            *leaf = Value::String(match mode {
                Mode::Append => format!("{old} {secret}"),
                _ => secret.to_owned(),
            });
        }
        Mode::Key => {
            let (Seg::Key(key), parent) = path.split_last().unwrap() else {
                panic!("a key path ends with a key")
            };
            // With several secrets planted at once, an earlier key rename can
            // have moved this key's parent: then this path no longer exists.
            let Some(map) = get_mut(v, parent).and_then(Value::as_object_mut) else {
                return;
            };
            // Rebuild to keep the order (and so the rest of the payload) stable.
            let old = std::mem::take(map);
            for (k, item) in old {
                let k = if &k == key {
                    format!("{k}_{secret}")
                } else {
                    k
                };
                map.insert(k, item);
            }
        }
    }
}

// ------------------------------------------------------------------- sources

/// A golden input in the shape the injector walks. For SNS the `Message`
/// string is parsed, so its alarm fields are leaves too, and the fields the
/// signature check pins are left alone (they are injected one at a time in
/// the refusals instead).
struct Case {
    source: Source,
    name: String,
    view: Value,
}

const SNS_PINNED: &[&str] = &[
    "Type",
    "TopicArn",
    "Timestamp",
    "SignatureVersion",
    "Signature",
    "SigningCertURL",
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../normalize/tests/golden")
}

/// Every golden case of every source whose expected result is accepted events.
fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for source in [
        Source::Generic,
        Source::Alertmanager,
        Source::Cloudevents,
        Source::Splunk,
        Source::Grafana,
        Source::Datadog,
        Source::Eventbridge,
        Source::CloudwatchSns,
    ] {
        let dir = golden_dir().join(source.as_str());
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let read = |f: &str| -> Value {
                serde_json::from_slice(&std::fs::read(dir.join(&name).join(f)).unwrap()).unwrap()
            };
            if read("expected.json").get("events").is_none() {
                continue;
            }
            let mut view = read("input.json");
            if source == Source::CloudwatchSns {
                let message: Value = serde_json::from_str(view["Message"].as_str().unwrap())
                    .expect("the golden SNS Message is JSON");
                view["Message"] = message;
            }
            out.push(Case { source, name, view });
        }
    }
    out
}

/// Leaves and keys a secret may go into, for `case`.
fn candidates(case: &Case, mode: Mode) -> Vec<Vec<Seg>> {
    let mut out = Vec::new();
    match mode {
        Mode::Key => object_keys(&case.view, &mut Vec::new(), &mut out),
        _ => string_leaves(&case.view, &mut Vec::new(), &mut out),
    }
    if case.source == Source::CloudwatchSns {
        out.retain(|p| {
            !matches!(&p[0], Seg::Key(k) if SNS_PINNED.contains(&k.as_str()) || (matches!(mode, Mode::Key) && p.len() == 1))
        });
    }
    out
}

/// The body the source receives for a view (SNS: `Message` back to a string;
/// not yet signed).
fn body_of(source: Source, view: &Value) -> Value {
    let mut body = view.clone();
    if source == Source::CloudwatchSns {
        body["Message"] = Value::String(view["Message"].to_string());
    }
    body
}

fn normalizes(source: Source, view: &Value) -> bool {
    let normalize = tg_normalize::normalizer(source).unwrap();
    let bytes = serde_json::to_vec(&body_of(source, view)).unwrap();
    normalize(&bytes, &NormalizeContext::default(), common::t0()).is_ok()
}

/// A payload with `secret` in every candidate that accepts one, and the
/// candidates that must refuse it (structural).
fn injected(case: &Case, mode: Mode, secret: &str) -> (Value, usize, Vec<Vec<Seg>>) {
    let mut view = case.view.clone();
    let mut structural = Vec::new();
    let mut planted = 0;
    for path in candidates(case, mode) {
        let mut alone = case.view.clone();
        inject_one(&mut alone, &path, mode, secret);
        if normalizes(case.source, &alone) {
            // Planted together only while the whole stays acceptable: renaming
            // every label key at once can remove the one the service comes from.
            let mut next = view.clone();
            inject_one(&mut next, &path, mode, secret);
            if normalizes(case.source, &next) {
                view = next;
                planted += 1;
            }
        } else {
            structural.push(path);
        }
    }
    assert!(
        normalizes(case.source, &view),
        "{}/{}: every accepting field together must be accepted too",
        case.source.as_str(),
        case.name
    );
    (view, planted, structural)
}

// -------------------------------------------------------------------- posting

struct Run {
    harness: Harness,
    /// Every body the gate answered.
    answers: Vec<String>,
    run_ids: Vec<String>,
}

impl Run {
    async fn post(&mut self, source: Source, view: &Value, correlation: Option<&str>) -> u16 {
        let h = &self.harness;
        let mut body = body_of(source, view);
        let mut req = h
            .http
            .post(format!("{}/v1/events/{}", h.base, source.as_str()))
            .header("content-type", "application/json");
        if source == Source::CloudwatchSns {
            // A fresh MessageId (SNS dedupes on it), the gate's time, the
            // sandbox's certificate, then the sandbox's signature.
            let id = body["MessageId"].as_str().unwrap_or_default().to_owned();
            body["MessageId"] = json!(format!("{id} {}", uuid::Uuid::new_v4()));
            body["TopicArn"] = json!(TOPIC);
            body["Timestamp"] = json!(h.clock.now().to_rfc3339_opts(SecondsFormat::Millis, true));
            body["SigningCertURL"] = json!(h.sandbox.sns_cert_url());
            body = h.state().sns_sign(&body, 2).expect("sandbox signs");
            req = req.header("x-amz-sns-message-type", "Notification");
        }
        if let Some(c) = correlation {
            req = req.header("x-correlation-id", c);
        }
        let resp = req
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .expect("gate answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("answer body");
        if status == 202 {
            let v: Value = serde_json::from_str(&text).unwrap();
            for r in v["runs"].as_array().unwrap() {
                self.run_ids.push(r["run_id"].as_str().unwrap().to_owned());
            }
        }
        self.answers.push(text);
        status
    }

    /// POSTs an arbitrary body and keeps the answer.
    async fn post_raw(&mut self, path: &str, body: &Value, headers: &[(&str, &str)]) -> u16 {
        let h = &self.harness;
        let mut req = h
            .http
            .post(format!("{}{path}", h.base))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .expect("gate answers");
        let status = resp.status().as_u16();
        self.answers.push(resp.text().await.expect("answer body"));
        status
    }

    async fn get_text(&mut self, path: &str) -> String {
        let resp = self
            .harness
            .http
            .get(format!("{}{path}", self.harness.base))
            .send()
            .await
            .expect("gate answers");
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        let text = resp.text().await.expect("body");
        self.answers.push(text.clone());
        text
    }
}

fn config() -> String {
    format!(
        r#"{CONFIG}
sources:
  sns:
    topic_arns: ["{TOPIC}"]
    cert_host_pattern: '127\.0\.0\.1'
    allow_insecure_loopback_cert_urls: true
    replay_window_secs: 3600
"#
    )
}

/// Where `needle` occurs in `hay`, with some context, or `None`.
fn find(hay: &[u8], needle: &str) -> Option<String> {
    let n = needle.as_bytes();
    hay.windows(n.len()).position(|w| w == n).map(|at| {
        let from = at.saturating_sub(80);
        let to = (at + n.len() + 80).min(hay.len());
        String::from_utf8_lossy(&hay[from..to]).into_owned()
    })
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_every_field_of_every_source_never_leaves_the_normalizer() {
    let logs = capture_logs();
    let mut run = Run {
        harness: Harness::start_with(&config()).await,
        answers: Vec::new(),
        run_ids: Vec::new(),
    };
    let all = all_secrets();
    let cases = cases();
    let mut sources_seen = BTreeSet::new();
    let mut structural_total = 0;

    // Accepted payloads: every accepting field carries the secret.
    for case in &cases {
        sources_seen.insert(case.source.as_str());
        let mut variants: Vec<(Mode, &str)> =
            SECRETS.iter().map(|s| (Mode::Append, s.text)).collect();
        variants.push((Mode::Append, &all));
        variants.push((Mode::Replace, &all));
        variants.extend(SECRETS.iter().map(|s| (Mode::Replace, s.text)));
        variants.extend(SECRETS.iter().map(|s| (Mode::Key, s.text)));
        for (mode, secret) in variants {
            let (view, planted, structural) = injected(case, mode, secret);
            assert!(
                planted > 0 || matches!(mode, Mode::Key),
                "{}/{} {mode:?}: no field took the secret",
                case.source.as_str(),
                case.name
            );
            let status = run.post(case.source, &view, None).await;
            assert_eq!(
                status,
                202,
                "{}/{} {mode:?}: {}",
                case.source.as_str(),
                case.name,
                run.answers.last().unwrap()
            );
            // The fields that refuse a secret are refused one by one, and the
            // refusal must not echo it.
            for path in structural {
                structural_total += 1;
                let mut alone = case.view.clone();
                inject_one(&mut alone, &path, mode, secret);
                let status = run.post(case.source, &alone, None).await;
                assert!(
                    (400..500).contains(&status),
                    "{}/{} {mode:?} {path:?}: {status}",
                    case.source.as_str(),
                    case.name
                );
            }
        }
    }
    assert_eq!(
        sources_seen.len(),
        8,
        "every source covered: {sources_seen:?}"
    );

    // The fields SNS's signature check pins, each with a secret, forged or
    // unsigned: refused (403/400) without echoing or logging the secret.
    let sns_case = cases
        .iter()
        .find(|c| c.source == Source::CloudwatchSns)
        .unwrap();
    for field in SNS_PINNED.iter().chain(["MessageId", "Subject"].iter()) {
        for s in SECRETS {
            let mut body = body_of(Source::CloudwatchSns, &sns_case.view);
            body["TopicArn"] = json!(TOPIC);
            body["SigningCertURL"] = json!(run.harness.sandbox.sns_cert_url());
            body["Timestamp"] = json!(
                run.harness
                    .clock
                    .now()
                    .to_rfc3339_opts(SecondsFormat::Millis, true)
            );
            body["MessageId"] = json!(uuid::Uuid::new_v4().to_string());
            let old = body[*field].as_str().unwrap_or_default().to_owned();
            body[*field] = json!(format!("{old} {}", s.text));
            let status = run.post_raw("/v1/events/cloudwatch-sns", &body, &[]).await;
            assert!(
                matches!(status, 400 | 403),
                "SNS {field} {}: {status}",
                s.kind
            );
        }
    }

    // A secret as the caller's correlation ID: accepted, but never used as one.
    for s in SECRETS {
        let body = json!({
            "service": "checkout", "alert_name": "CorrelationProbe",
            "summary": format!("correlation probe {}", s.kind), "severity": "high",
        });
        let value = s.text.lines().next().unwrap_or(s.text);
        // Only secrets that are valid correlation IDs as they are (a JWT, an
        // access key id): a secret stripped of its `=`, spaces or `@` is no
        // longer recognisable to any redactor (a documented limit: caller
        // correlation IDs are opaque and stored as sent).
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        {
            continue;
        }
        let status = run.post(Source::Generic, &body, Some(value)).await;
        assert_eq!(status, 202, "{}", run.answers.last().unwrap());
    }

    // Every accepted run completes; read back each through the API.
    let ids = run.run_ids.clone();
    let mut by_model = 0;
    for id in &ids {
        let done = run.harness.wait_completed(id).await;
        if done["classification"]["info"]["classifier"] == "anthropic" {
            by_model += 1;
        }
        run.get_text(&format!("/v1/runs/{id}")).await;
    }
    run.get_text("/v1/review").await;
    run.get_text("/metrics").await;
    let model_requests = run.harness.state().requests(Target::Anthropic);
    eprintln!(
        "{} cases, {} runs ({} classified by the model), {} model requests, {} structural refusals",
        cases.len(),
        ids.len(),
        by_model,
        model_requests.len(),
        structural_total
    );
    assert!(
        ids.len() >= cases.len() * 3,
        "runs were created: {}",
        ids.len()
    );
    assert!(by_model > 0, "the model classified runs");
    assert!(!model_requests.is_empty(), "the model was called");

    // The model saw the events with the secrets redacted (not dropped): every
    // kind's marker reached it.
    let model_text: String = model_requests
        .iter()
        .map(|r| serde_json::to_string(&r.body).unwrap())
        .collect();
    for s in SECRETS {
        let marker = format!("[REDACTED:{}]", s.kind);
        assert!(
            model_text.contains(&marker),
            "no {marker} in any model request: the secret never reached the model's input"
        );
    }

    run.harness.stop_gate().await;
    let log_text = logs.text();
    assert!(
        log_text.matches("run audited").count() >= ids.len(),
        "the log capture sees the gate's logs"
    );

    // ---- the search
    let mut leaks = Vec::new();
    let mut check = |place: &str, hay: &[u8]| {
        for (kind, needle) in needles() {
            if let Some(context) = find(hay, needle) {
                leaks.push(format!("{kind} ({needle}) in {place}: …{context}…"));
            }
        }
    };
    let mut files = Vec::new();
    files_under(run.harness.data.path(), &mut files);
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "audit.jsonl"), "{names:?}");
    match &run.harness.store_url {
        None => assert!(names.iter().any(|n| n.ends_with(".sqlite")), "{names:?}"),
        // On PostgreSQL the store is not a file here: search what it holds.
        Some(url) => {
            let rows = tg_store::testing::dump_postgres_text(url).await.unwrap();
            assert!(rows.contains("run_"), "the dump holds the runs");
            check("the PostgreSQL store", rows.as_bytes());
        }
    }
    let audit = std::fs::read_to_string(run.harness.audit_path()).unwrap();
    // (Breaker transitions add step records, which carry a `kind`.)
    let run_records = audit
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .map(|v| v.get("kind").is_none())
                .unwrap_or(true)
        })
        .count();
    assert_eq!(run_records, ids.len(), "one audit record per run");
    // SQLite's -wal and -shm files may vanish while this reads (the last
    // pooled connection closes after the gate stopped; it checkpoints the WAL
    // into the main file first): read those first and the main file last, so
    // whatever the WAL held is read in one of the two.
    files.sort_by_key(|f| f.extension().is_some_and(|e| e == "sqlite"));
    for f in &files {
        match std::fs::read(f) {
            Ok(bytes) => check(&f.display().to_string(), &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !f.ends_with("audit.jsonl") => {
                assert!(
                    f.extension().is_some_and(|e| e != "sqlite"),
                    "the main store file vanished: {}",
                    f.display()
                );
            }
            Err(e) => panic!("{}: {e}", f.display()),
        }
    }
    for target in Target::ALL {
        for r in run.harness.state().requests(target) {
            let text = format!(
                "{} {} {:?} {}",
                r.path,
                r.query.clone().unwrap_or_default(),
                r.headers,
                serde_json::to_string(&r.body).unwrap()
            );
            check(
                &format!("a request to the {target} emulator"),
                text.as_bytes(),
            );
        }
    }
    check("the logs", log_text.as_bytes());
    for (i, a) in run.answers.iter().enumerate() {
        check(&format!("gate answer #{i}"), a.as_bytes());
    }
    if !leaks.is_empty() {
        let mut out = std::io::stderr().lock();
        for l in leaks.iter().take(40) {
            writeln!(out, "LEAK {l}").unwrap();
        }
    }
    assert!(leaks.is_empty(), "{} leaks (first 40 above)", leaks.len());
}

/// Issue 27, end to end: a secret whose parts a control character (a JSON
/// escape such as `\b` or `\u0000`), an invisible format character (zero-width
/// space, soft hyphen, bidi mark) or a white space variant separates, sent in
/// the fields of a generic event over HTTP, reaches neither the store (SQLite
/// file and WAL, audit.jsonl) nor the model request, the logs or the answers;
/// the model sees the redaction marker instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_split_by_a_control_or_invisible_character_reaches_neither_store_nor_model() {
    never_stored_nor_shown(&[
        (
            "token Bearer \u{8}SuperSecretTok123 end",
            "SuperSecretTok123",
            "[REDACTED:bearer]",
        ),
        (
            "Bearer\u{8}tokBs8Wq3Zn5Rk",
            "tokBs8Wq3Zn5Rk",
            "[REDACTED:bearer]",
        ),
        (
            "Bearer\u{200b}tokZw8Wq3Zn5Rk",
            "tokZw8Wq3Zn5Rk",
            "[REDACTED:bearer]",
        ),
        (
            "Bearer\u{202e}tokRlo8Wq3Zn5Rk",
            "tokRlo8Wq3Zn5Rk",
            "[REDACTED:bearer]",
        ),
        (
            "Bearer\u{a0}tokNb8Wq3Zn5Rk",
            "tokNb8Wq3Zn5Rk",
            "[REDACTED:bearer]",
        ),
        (
            "AKIAQ9SH7YMD\u{ad}2WF4KXUP",
            "2WF4KXUP",
            "[REDACTED:aws_access_key]",
        ),
        (
            "AKIAR4TJ8ZNE\u{200d}3XG5LYVQ",
            "3XG5LYVQ",
            "[REDACTED:aws_access_key]",
        ),
        (
            "password=\u{0}pwNul8Wq3Zn5Rk",
            "pwNul8Wq3Zn5Rk",
            "[REDACTED:secret]",
        ),
        (
            "pass\u{ad}word=pwShy8Wq3Zn5Rk",
            "pwShy8Wq3Zn5Rk",
            "[REDACTED:secret]",
        ),
    ])
    .await;
}

/// Issue 21 (5), end to end: whole quoted and bracketed values, Slack and
/// GitHub tokens, `Authorization: Token`, and an AWS secret access key next
/// to its key ID reach neither the store nor the model request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_values_and_token_shapes_reach_neither_store_nor_model() {
    never_stored_nor_shown(&[
        (
            "password=[Hunter2SecretQz7]",
            "Hunter2SecretQz7",
            "[REDACTED:secret]",
        ),
        (
            r#"password: "correct horseQz7 battery""#,
            "horseQz7",
            "[REDACTED:secret]",
        ),
        (
            "db_password = 'staple batteryQz7 horse'",
            "batteryQz7",
            "[REDACTED:secret]",
        ),
        (
            "xoxb-2233445566-SlackTokQz7Wv9Lm4",
            "SlackTokQz7Wv9Lm4",
            "[REDACTED:slack]",
        ),
        (
            "ghp_GhTokQz7Wv9Lm4Xc2Rt8Yb3Nd6Kf1Hs5Pa0",
            "GhTokQz7Wv9Lm4Xc2Rt8",
            "[REDACTED:github]",
        ),
        (
            "github_pat_11AAQZ7WV9LM4XC2RT8YB_PatTokQz7Wv9Lm4Xc2Rt8Yb3Nd6Kf1Hs5Pa0",
            "PatTokQz7Wv9Lm4Xc2Rt8",
            "[REDACTED:github]",
        ),
        (
            "Authorization: Token AuthTokQz7Wv9Lm4",
            "AuthTokQz7Wv9Lm4",
            "[REDACTED:authorization]",
        ),
        (
            "AKIAT5UK9AOF4YH6MZWR WsecQz7Wv9Lm4Xc2Rt8Yb3Nd6Kf1Hs5Pa0Ge4Jq6",
            "WsecQz7Wv9Lm4Xc2Rt8",
            "[REDACTED:aws_secret]",
        ),
    ])
    .await;
}

/// Posts each `(text, needle, marker)` in the fields of a generic event (and
/// once in a field that must refuse it), lets the runs complete through the
/// model, then searches the model requests, every file of the data dir (or
/// the PostgreSQL store), the logs and the gate's answers for each needle;
/// the model must have seen each marker.
async fn never_stored_nor_shown(cases: &[(&str, &str, &str)]) {
    let logs = capture_logs();
    let mut run = Run {
        harness: Harness::start_with(&config()).await,
        answers: Vec::new(),
        run_ids: Vec::new(),
    };
    let tag = uuid::Uuid::new_v4().simple().to_string();
    for (i, (text, _, _)) in cases.iter().enumerate() {
        let body = json!({
            "service": "checkout",
            "alert_name": format!("Probe{tag}n{i}"),
            "summary": format!("upstream said {text}"),
            "message": format!("auth failed: {text}"),
            "severity": "high",
            "labels": {"note": text, "region": "eu-west-1"},
            "correlation_ids": {"trace": format!("t-{i} {text}")},
        });
        let status = run.post(Source::Generic, &body, None).await;
        assert_eq!(status, 202, "{text:?}: {}", run.answers.last().unwrap());
        // Refused with the secret in an enumerated field: the answer must not echo it.
        let refused =
            json!({"service": "checkout", "alert_name": "a", "summary": "s", "status": text});
        let status = run.post(Source::Generic, &refused, None).await;
        assert_eq!(status, 400, "{text:?}: {}", run.answers.last().unwrap());
    }
    let ids = run.run_ids.clone();
    assert_eq!(ids.len(), cases.len());
    for id in &ids {
        run.harness.wait_completed(id).await;
        run.get_text(&format!("/v1/runs/{id}")).await;
    }
    let model_text: String = run
        .harness
        .state()
        .requests(Target::Anthropic)
        .iter()
        .map(|r| serde_json::to_string(&r.body).unwrap())
        .collect();
    for (i, (text, _, marker)) in cases.iter().enumerate() {
        assert!(
            model_text.contains(&format!("Probe{tag}n{i}")),
            "{text:?}: the model never saw its run"
        );
        assert!(
            model_text.contains(marker),
            "{text:?}: no {marker} reached the model"
        );
    }
    run.harness.stop_gate().await;

    let mut leaks = Vec::new();
    let mut check = |place: &str, hay: &[u8]| {
        for (text, needle, _) in cases {
            if let Some(context) = find(hay, needle) {
                leaks.push(format!("{text:?} ({needle}) in {place}: …{context}…"));
            }
        }
    };
    check("the model requests", model_text.as_bytes());
    if let Some(url) = &run.harness.store_url {
        let rows = tg_store::testing::dump_postgres_text(url).await.unwrap();
        assert!(
            rows.contains(&format!("Probe{tag}n0")),
            "the dump holds the runs"
        );
        check("the PostgreSQL store", rows.as_bytes());
    }
    let mut files = Vec::new();
    files_under(run.harness.data.path(), &mut files);
    let mut seen_in_files = false;
    files.sort_by_key(|f| f.extension().is_some_and(|e| e == "sqlite"));
    for f in &files {
        if let Ok(bytes) = std::fs::read(f) {
            seen_in_files |= find(&bytes, &format!("Probe{tag}n0")).is_some();
            check(&f.display().to_string(), &bytes);
        }
    }
    assert!(seen_in_files, "the runs were found in the data dir's files");
    check("the logs", logs.text().as_bytes());
    for (i, a) in run.answers.iter().enumerate() {
        check(&format!("gate answer #{i}"), a.as_bytes());
    }
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}
