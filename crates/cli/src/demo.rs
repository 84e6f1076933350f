//! `triage-gate demo`: the bundled incident, end to end, offline.
//!
//! Starts the sandbox emulators and the gate on loopback, sends the incident's
//! events step by step (waiting for each step's runs, so the story reads in
//! order), prints what was decided and why, then checks the emulators against
//! the decisions and verifies the audit chain.

#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing by key yields Null when absent; it never panics"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;
use tg_config::Config;
use tg_model::{ActionKind, ActionOp, ActionStatus, Decision, Outcome};

use crate::brain::RulesBrain;

const CONFIG: &str = include_str!("../demo/config.yaml");
const INCIDENT: &str = include_str!("../demo/incident.json");
/// How long the demo waits for one step's runs to complete.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Deserialize)]
struct Incident {
    description: String,
    model_scripts: Vec<tg_sandbox::AnthropicScript>,
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
struct Step {
    label: String,
    source: String,
    /// The client at the sandbox's authorization server that submits it:
    /// one per detecting system, each bound to its origin in the demo's
    /// `identity.inbound.origins` (independent signals are independent senders).
    sender: String,
    body: Option<Value>,
    /// Resend the body of this earlier step (a repeat notification).
    #[serde(default)]
    repeat: Option<usize>,
}

/// One row of the result table.
struct Row {
    step: usize,
    run: Value,
}

/// The demo's readers' client: reads runs and the review queue.
const DEMO_READER: &str = "demo-reader";

/// Registers `client` with a fresh secret and `scopes` at the sandbox's
/// authorization server, and fetches its access token (client credentials).
async fn demo_access_token(
    sandbox: &tg_sandbox::Sandbox,
    client: &str,
    scopes: &[&str],
) -> anyhow::Result<String> {
    use rand_core::RngCore as _;
    let mut raw = [0u8; 24];
    rand_core::OsRng.fill_bytes(&mut raw);
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    sandbox
        .state()
        .idp_client(client, &secret, scopes)
        .map_err(|e| anyhow!("the sandbox's authorization server: {e}"))?;
    let answer: Value = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .post(format!("{}/idp/token", sandbox.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", secret.as_str()),
            ("scope", &scopes.join(" ")),
        ])
        .send()
        .await
        .context("the sandbox's token endpoint")?
        .error_for_status()
        .context("the sandbox's token endpoint")?
        .json()
        .await?;
    answer["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the sandbox's token endpoint answered no access_token"))
}

/// `Authorization: Bearer <token>`, marked sensitive (never logged).
fn bearer(token: &str) -> anyhow::Result<reqwest::header::HeaderValue> {
    let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
    v.set_sensitive(true);
    Ok(v)
}

pub async fn run(data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let incident: Incident = serde_json::from_str(INCIDENT).context("bundled incident")?;

    // The sandbox stands in for ServiceNow, PagerDuty, Slack and Claude.
    let owners: BTreeMap<String, String> = {
        let probe = Config::from_yaml(
            &CONFIG.replace("${SANDBOX}", "http://127.0.0.1:1"),
            "demo/config.yaml",
        )
        .map_err(|e| anyhow!("{e}"))?;
        probe
            .catalog
            .services
            .iter()
            .map(|(s, e)| (s.clone(), e.team.clone()))
            .collect()
    };
    let sandbox = tg_sandbox::Sandbox::start(tg_sandbox::SandboxConfig {
        brain: Some(Arc::new(RulesBrain::new(owners))),
        ..Default::default()
    })
    .await
    .context("cannot start the sandbox")?;
    for script in incident.model_scripts.iter().cloned() {
        sandbox
            .state()
            .script_anthropic(script)
            .map_err(|e| anyhow!("model script: {e}"))?;
    }

    let config = Config::from_yaml(
        &CONFIG.replace("${SANDBOX}", &sandbox.base_url()),
        "demo/config.yaml",
    )
    .map_err(|e| anyhow!("{e}"))?;
    let data_dir = match data_dir {
        Some(d) => d,
        None => tempfile::Builder::new()
            .prefix("triage-gate-demo-")
            .tempdir()
            .context("cannot create a temporary data dir")?
            .keep(),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    // A checkpoint key for this run only: the private half stays in memory.
    let (private_pem, public_path) = demo_checkpoint_key(&data_dir)?;
    let secrets = tg_sim::sandbox_secrets(&sandbox, "demo-mim-channel").with(
        &tg_config::SecretRef::Env("AUDIT_CHECKPOINT_KEY".into()),
        private_pem.as_str(),
    );
    drop(private_pem);
    let pipeline = tg_server::build_pipeline(&config, None, &secrets)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gate = tg_server::start(
        listener,
        &data_dir,
        pipeline,
        Arc::new(tg_server::SystemClock),
        &config.server,
    )
    .await?;
    let base = format!("http://{}", gate.addr);
    // Inbound identity on, as a deployment runs it: the sandbox's
    // authorization server issues the demo's access token (client
    // credentials) and the gate checks it against the sandbox's key set.
    // One client per detecting system submits its events; reads use a
    // client that may only read.
    let mut senders = BTreeMap::new();
    for step in &incident.steps {
        if !senders.contains_key(&step.sender) {
            let token = demo_access_token(&sandbox, &step.sender, &["events:write"]).await?;
            senders.insert(step.sender.clone(), bearer(&token)?);
        }
    }
    let reader = demo_access_token(&sandbox, DEMO_READER, &["runs:read"]).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            bearer(&reader)?,
        )]))
        .build()?;

    crate::outln!("triage-gate demo: {}", incident.description)?;
    crate::outln!(
        "gate {base}  sandbox {}  data {}",
        sandbox.base_url(),
        data_dir.display()
    )?;
    crate::outln!(
        "identity: each source submits with its own JWT access token ({}; scope events:write), reads use {DEMO_READER} (runs:read); issuer {}\n",
        senders.keys().cloned().collect::<Vec<_>>().join(", "),
        sandbox.state().idp_issuer()
    )?;

    let mut rows = Vec::new();
    for (i, step) in incident.steps.iter().enumerate() {
        let body = match (&step.body, step.repeat) {
            (Some(b), _) => b.clone(),
            (None, Some(j)) => incident
                .steps
                .get(j)
                .and_then(|s| s.body.clone())
                .ok_or_else(|| anyhow!("step {i} repeats missing step {j}"))?,
            (None, None) => bail!("step {i} has no body"),
        };
        let sender = senders
            .get(&step.sender)
            .ok_or_else(|| anyhow!("step {} has no token", i + 1))?;
        let resp = http
            .post(format!("{base}/v1/events/{}", step.source))
            .header(reqwest::header::AUTHORIZATION, sender.clone())
            .json(&body)
            .send()
            .await
            .with_context(|| format!("step {}: {}", i + 1, step.label))?;
        let status = resp.status();
        let answer: Value = resp.json().await?;
        if status.as_u16() != 202 {
            bail!(
                "step {} ({}) was refused: {status} {answer}",
                i + 1,
                step.label
            );
        }
        let ids: Vec<String> = answer["runs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["run_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            rows.push(Row {
                step: i,
                run: wait_completed(&http, &base, &id).await?,
            });
        }
    }

    print_table(&incident, &rows)?;
    // Each caption's words about why must be what decided (issue 19).
    let mut caption_mismatches = Vec::new();
    for (i, step) in incident.steps.iter().enumerate() {
        let runs: Vec<&Value> = rows
            .iter()
            .filter(|r| r.step == i)
            .map(|r| &r.run)
            .collect();
        for claim in unmet_claims(&step.label, &runs) {
            caption_mismatches.push(format!("step {} ({:?}) says {claim}", i + 1, step.label));
        }
    }
    let review: Value = http
        .get(format!("{base}/v1/review"))
        .send()
        .await?
        .json()
        .await?;
    let review_items = review["items"].as_array().map(Vec::len).unwrap_or(0);

    gate.shutdown(Duration::from_secs(5)).await;

    // Cross-check: what the emulators received must be exactly what was executed.
    let executed = |kind: ActionKind, op: ActionOp| {
        rows.iter()
            .filter(|r| {
                decision(r).is_some_and(|d| {
                    d.get(kind)
                        .is_some_and(|a| a.outcome == Outcome::Execute && a.op == op)
                }) && delivered(r, kind)
            })
            .count()
    };
    let (tickets, pages, mims) = (
        executed(ActionKind::Ticket, ActionOp::Create),
        executed(ActionKind::Page, ActionOp::Create),
        executed(ActionKind::Mim, ActionOp::Create),
    );
    let notes = executed(ActionKind::Ticket, ActionOp::Update);
    let resolves = executed(ActionKind::Page, ActionOp::Resolve)
        + executed(ActionKind::Ticket, ActionOp::Resolve);
    let suppressed = rows
        .iter()
        .filter(|r| decision(r).is_some_and(|d| d.duplicate_of.is_some()))
        .count();
    let st = sandbox.state();
    let sn_incidents = st.incidents().len();
    let pd_alerts = st.pagerduty_alerts().len();
    let bridge_posts = st.bridge_posts().len();
    let sn_updates = st.servicenow_updates();
    let sn_notes = sn_updates.iter().filter(|u| u.adds_work_note()).count();
    let resolved = sn_updates.iter().filter(|u| u.resolves()).count()
        + st.pagerduty_alerts()
            .iter()
            .filter(|a| a.status == tg_sandbox::AlertStatus::Resolved)
            .count();

    crate::outln!("\nTotals over {} runs:", rows.len())?;
    crate::outln!(
        "  tickets created      {tickets:>3}   (ServiceNow emulator holds {sn_incidents} incidents: tickets + MIM proposals)"
    )?;
    crate::outln!(
        "  work notes (grouped) {notes:>3}   (ServiceNow emulator received {sn_notes} work notes)"
    )?;
    crate::outln!(
        "  pages sent           {pages:>3}   (PagerDuty emulator holds {pd_alerts} alerts)"
    )?;
    crate::outln!(
        "  incidents resolved   {resolves:>3}   (emulators hold {resolved} resolved by the gate)"
    )?;
    crate::outln!(
        "  MIM bridges opened   {mims:>3}   (chat bridge received {bridge_posts} announcements)"
    )?;
    crate::outln!("  duplicates suppressed{suppressed:>4}")?;
    crate::outln!("  waiting for a human  {review_items:>3}   (GET /v1/review)")?;

    let audit_path = data_dir.join("audit.jsonl");
    let public = tg_audit::verifying_key_from_pem(
        &std::fs::read_to_string(&public_path)
            .with_context(|| format!("cannot read {}", public_path.display()))?,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let report = tg_audit::verify_file_with(&audit_path, Some(&public))
        .with_context(|| format!("cannot read {}", audit_path.display()))?;
    crate::outln!("\nAudit chain {}: {report}", audit_path.display())?;
    crate::outln!(
        "  verify it yourself:  triage-gate audit verify {} --public-key {}",
        audit_path.display(),
        public_path.display()
    )?;
    let paged = rows.iter().find(|r| {
        r.run["decision"]["actions"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["action"] == "page" && x["outcome"] == "execute")
        })
    });
    if let Some(run_id) = paged.and_then(|r| r.run["run_id"].as_str()) {
        crate::outln!(
            "  the story of a page: triage-gate audit show --data-dir {} --run-id {run_id}",
            data_dir.display()
        )?;
    }

    // Besides one record per run, the chain holds step records (kind): the
    // configuration loaded, each delivery attempt, breaker moves, checkpoints.
    let steps = std::fs::read_to_string(&audit_path)
        .map(|t| t.lines().filter(|l| l.contains("\"kind\":")).count())
        .unwrap_or(0);
    let consistent = sn_incidents == tickets + mims
        && sn_notes == notes
        && resolved == resolves
        && pd_alerts == pages
        && bridge_posts == mims
        && report.ok
        && report.checkpoints_verified > 0
        && usize::try_from(report.records).unwrap_or(0) == rows.len() + steps
        && caption_mismatches.is_empty();
    for m in &caption_mismatches {
        crate::outln!("CAPTION MISMATCH: {m}")?;
    }
    sandbox.shutdown().await;
    if consistent {
        crate::outln!("Emulators match the decisions one for one; every run is audited once.")?;
        Ok(ExitCode::SUCCESS)
    } else {
        crate::outln!("MISMATCH between decisions, emulators and audit trail (see above)")?;
        Ok(ExitCode::FAILURE)
    }
}

/// A fresh Ed25519 key: the private PEM (wiped on drop) and where its public half was written.
fn demo_checkpoint_key(
    data_dir: &std::path::Path,
) -> anyhow::Result<(zeroize::Zeroizing<String>, PathBuf)> {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let signing = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let public_path = data_dir.join("audit-checkpoint.pub.pem");
    let public = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| anyhow!("cannot encode the demo's public key: {e}"))?;
    std::fs::write(&public_path, public)
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    let private = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| anyhow!("cannot encode the demo's key: {e}"))?;
    Ok((zeroize::Zeroizing::new(private.to_string()), public_path))
}

async fn wait_completed(http: &reqwest::Client, base: &str, run_id: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let run: Value = http
            .get(format!("{base}/v1/runs/{run_id}"))
            .send()
            .await?
            .json()
            .await?;
        if run["status"] == "completed" {
            return Ok(run);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "run {run_id} did not complete within {STEP_TIMEOUT:?} (status {})",
                run["status"]
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn decision(row: &Row) -> Option<Decision> {
    serde_json::from_value(row.run["decision"].clone()).ok()
}

fn delivered(row: &Row, kind: ActionKind) -> bool {
    row.run["actions"].as_array().is_some_and(|a| {
        a.iter().any(|x| {
            x["action"] == kind.as_str()
                && serde_json::from_value::<ActionStatus>(x["status"].clone()).ok()
                    == Some(ActionStatus::Delivered)
        })
    })
}

fn external_id(row: &Row, kind: ActionKind) -> Option<String> {
    let actions = row.run["actions"].as_array()?;
    let a = actions.iter().find(|x| x["action"] == kind.as_str())?;
    let ids = &a["result"]["external_ids"];
    ids["servicenow_number"]
        .as_str()
        .or_else(|| ids["pagerduty_dedup_key"].as_str())
        .map(str::to_owned)
}

fn cell(row: &Row, d: &Decision, kind: ActionKind) -> String {
    let verb = match d.get(kind).map(|a| a.op) {
        Some(ActionOp::Update) => "NOTE",
        Some(ActionOp::Resolve) => "RESOLVE",
        _ => "EXECUTE",
    };
    match d.outcome(kind) {
        Some(Outcome::Execute) => match external_id(row, kind) {
            Some(id) if kind != ActionKind::Page => format!("{verb} {id}"),
            _ => verb.into(),
        },
        Some(o) => o.as_str().into(),
        None => "-".into(),
    }
}

/// Why an action went the way it did, in one line: the failed conditions with
/// their values and thresholds, or the hard stop that capped it.
fn why(d: &Decision, kind: ActionKind) -> Option<String> {
    let a = d.get(kind)?;
    match a.outcome {
        Outcome::Skip if a.capped_by.is_none() => None,
        Outcome::Execute => None,
        _ => {
            let failed: Vec<String> = a
                .conditions
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("{} ({} vs {})", c.id, c.actual, c.threshold))
                .collect();
            let mut s = format!("{}: {}", kind.as_str(), a.outcome.as_str());
            if let Some(cap) = &a.capped_by {
                s.push_str(&format!(", {cap}"));
            }
            if !failed.is_empty() {
                s.push_str(&format!(": {}", failed.join("; ")));
            }
            Some(s)
        }
    }
}

fn print_table(incident: &Incident, rows: &[Row]) -> std::io::Result<()> {
    crate::outln!(
        "{:<3} {:<15} {:<11} {:<26} {:<16} {:<11} {:<16}",
        "#",
        "service",
        "env",
        "model",
        "ticket",
        "page",
        "mim"
    )?;
    let mut last_step = usize::MAX;
    for (n, row) in rows.iter().enumerate().map(|(i, r)| (i + 1, r)) {
        if row.step != last_step {
            let label = incident
                .steps
                .get(row.step)
                .map(|s| s.label.as_str())
                .unwrap_or("");
            crate::outln!("-- step {}: {label}", row.step + 1)?;
            last_step = row.step;
        }
        let ev = &row.run["event"];
        let class = &row.run["classification"];
        let model = match (
            class["classification"].as_object(),
            class["rejection"]["reason"].as_str(),
            class["skipped"].as_str(),
        ) {
            (Some(c), _, _) => format!(
                "{} {:.2} {}",
                c.get("classification")
                    .and_then(Value::as_str)
                    .unwrap_or("?"),
                c.get("confidence").and_then(Value::as_f64).unwrap_or(0.0),
                c.get("recommended_team")
                    .and_then(Value::as_str)
                    .unwrap_or("?"),
            ),
            (None, Some(reason), _) => format!("REJECTED {reason}"),
            (None, None, Some(skip)) => {
                format!("(not asked: {})", skip.split(' ').next().unwrap_or(skip))
            }
            _ => "-".into(),
        };
        let Some(d) = decision(row) else { continue };
        crate::outln!(
            "{:<3} {:<15} {:<11} {:<26} {:<16} {:<11} {:<16}",
            n,
            ev["service"].as_str().unwrap_or("?"),
            ev["environment"].as_str().unwrap_or("?"),
            truncate(&model, 26),
            cell(row, &d, ActionKind::Ticket),
            cell(row, &d, ActionKind::Page),
            cell(row, &d, ActionKind::Mim),
        )?;
        if let Some(dup) = &d.duplicate_of {
            crate::outln!(
                "      why: duplicate of {dup} (same fingerprint inside the suppression window)"
            )?;
            continue;
        }
        let uniform = model.starts_with("REJECTED")
            || d.actions
                .iter()
                .all(|a| a.conditions.iter().any(|c| c.id == "event.firing"));
        if uniform {
            if let Some(a) = d.actions.first() {
                crate::outln!("      why: {}", a.reason)?;
            }
            continue;
        }
        for kind in ActionKind::ALL {
            if let Some(w) = why(&d, kind) {
                crate::outln!("      why: {w}")?;
            }
        }
    }
    Ok(())
}

/// What a caption's words claim decided a step, and how a run shows it.
#[derive(Debug, Clone, Copy)]
enum Claim {
    /// An action did not execute because this condition failed (an id, or
    /// `.suffix` for that condition of any action).
    Failed(&'static str),
    /// The run was suppressed as a duplicate.
    Duplicate,
    /// The model's answer was rejected; with a word its reason code holds.
    Rejected(Option<&'static str>),
    /// The run is the source's resolution of an alert the gate saw firing.
    Resolved,
}

/// The words a caption may use about why, each with what must then show in
/// at least one run of the step. A caption that uses none claims nothing.
const CLAIMS: &[(&str, Claim)] = &[
    ("paging budget", Claim::Failed("page.rate")),
    ("grouped", Claim::Failed("page.group")),
    ("duplicate", Claim::Duplicate),
    ("noise", Claim::Failed(".production")),
    ("off-contract", Claim::Rejected(None)),
    ("unknown team", Claim::Rejected(Some("team"))),
    ("resolved", Claim::Resolved),
];

/// The claims of `caption` that none of `runs` bears out, in words.
fn unmet_claims(caption: &str, runs: &[&Value]) -> Vec<String> {
    let lower = caption.to_lowercase();
    CLAIMS
        .iter()
        .filter(|(words, _)| lower.contains(words))
        .filter(|(_, claim)| !runs.iter().any(|r| shows(r, *claim)))
        .map(|(words, claim)| format!("{words:?}, but no run shows {claim:?}"))
        .collect()
}

fn shows(run: &Value, claim: Claim) -> bool {
    let Ok(d) = serde_json::from_value::<Decision>(run["decision"].clone()) else {
        return false;
    };
    match claim {
        Claim::Failed(id) => d.actions.iter().any(|a| {
            a.outcome != Outcome::Execute
                && a.conditions.iter().any(|c| {
                    !c.passed
                        && if id.starts_with('.') {
                            c.id.ends_with(id)
                        } else {
                            c.id == id
                        }
                })
        }),
        Claim::Duplicate => d.duplicate_of.is_some(),
        Claim::Rejected(word) => run["classification"]["rejection"]["reason"]
            .as_str()
            .is_some_and(|reason| word.is_none_or(|w| reason.contains(w))),
        Claim::Resolved => d.resolves.is_some(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    tg_engine_truncate(s, max)
}

fn tg_engine_truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        s.chars().take(max).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "tests: a failed unwrap is a failed test"
    )]

    use super::*;
    use serde_json::json;

    /// A run whose page went to review because `failed` did not hold.
    fn page_refused_by(failed: &str) -> Value {
        let condition = |id: &str, passed: bool| json!({"id": id, "description": "d", "passed": passed, "actual": "x", "threshold": "y"});
        json!({"decision": {
            "policy_version": "v", "autonomy": "paging",
            "actions": [{
                "action": "page", "outcome": "review", "requested": true,
                "gate_outcome": "review", "reason": "r",
                "conditions": [condition("page.requested", true), condition(failed, false)]
            }]
        }})
    }

    #[test]
    fn a_caption_claiming_a_condition_that_did_not_decide_is_caught() {
        // Issue 19: step 9 said "(paging budget spent)" while page.group decided.
        let grouped = page_refused_by("page.group");
        assert!(shows(&grouped, Claim::Failed("page.group")));
        let unmet = unmet_claims("checkout cart errors (paging budget spent)", &[&grouped]);
        assert_eq!(unmet.len(), 1, "{unmet:?}");
        assert!(unmet[0].contains("paging budget"), "{unmet:?}");
        assert!(
            unmet_claims(
                "checkout cart errors (grouped: checkout already paged)",
                &[&grouped]
            )
            .is_empty()
        );
        let budget = page_refused_by("page.rate");
        assert!(unmet_claims("x (paging budget spent)", &[&budget]).is_empty());
    }
}
