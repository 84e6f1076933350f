//! `triage-gate policy test FILE`: table tests of the gates, so a policy or
//! catalog change is reviewed like code. Each case is a vendor payload (run
//! through the real normalizer), the model's answer (through the real
//! contract check), and a little storm state; the engine's own `step`
//! decides, and every action's outcome must match the expectation. A failed
//! case prints the conditions that settled it, value and threshold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tg_engine::MemState;
use tg_model::{ActionKind, AutonomyLevel, CorrelationId, RunId, Source};
use tg_storm::{BucketState, DedupEntry};

/// Cases in one file at most.
pub const CASES_MAX: usize = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The gate configuration (relative to the test file); absent: defaults.
    #[serde(default)]
    config: Option<PathBuf>,
    /// The moment the cases are decided at (default 2026-01-01T00:00:00Z).
    #[serde(default)]
    now: Option<DateTime<Utc>>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// The webhook source of `event` (default `generic`).
    #[serde(default = "generic")]
    source: String,
    /// The vendor payload, as the source would post it.
    event: serde_json::Value,
    /// The model's answer: an object is checked against the contract as its
    /// JSON text; a string is taken as the raw answer (to test rejections).
    /// Absent: classification skipped (a resolution).
    #[serde(default)]
    classification: Option<serde_json::Value>,
    #[serde(default)]
    state: CaseState,
    /// `ticket`, `page`, `mim` -> `execute` | `review` | `skip` | `suppressed`.
    expect: BTreeMap<String, String>,
}

fn generic() -> String {
    "generic".to_owned()
}

/// The storm state a case starts from (everything else empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseState {
    /// A runtime autonomy cap (the kill switch).
    #[serde(default)]
    autonomy_cap: Option<AutonomyLevel>,
    /// Whole tokens left in the team's, the service's and the global paging bucket.
    #[serde(default)]
    page_tokens: Option<i64>,
    /// The event's fingerprint already has an open window, opened by this
    /// origin at this impact: the event is a duplicate.
    #[serde(default)]
    duplicate: bool,
}

/// Runs the table tests in `file`; exit code 1 when any case fails.
pub fn run(
    file: &Path,
    load_config: impl Fn(&Path) -> anyhow::Result<(tg_config::Config, Option<String>)>,
) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let tests: TestFile = serde_yaml_ng::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        anyhow!("{}{at}: {e}", file.display())
    })?;
    if tests.cases.is_empty() || tests.cases.len() > CASES_MAX {
        anyhow::bail!(
            "{}: 1..={CASES_MAX} cases, found {}",
            file.display(),
            tests.cases.len()
        );
    }
    let (config, policy) = match &tests.config {
        Some(c) => load_config(
            &file
                .parent()
                .map(|d| d.join(c))
                .unwrap_or_else(|| c.clone()),
        )?,
        None => (tg_config::Config::default(), None),
    };
    // Secrets as `config check` reads them: the gates never see their values.
    let secrets = crate::check::CheckSecrets::new(&config)?;
    let pipeline = tg_server::build::check_pipeline(&config, policy.as_deref(), &secrets)?;
    let now = tests
        .now
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_454));
    let mut failed = 0usize;
    for (i, case) in tests.cases.iter().enumerate() {
        match check(&pipeline, case, now, i) {
            Ok(None) => crate::outln!("ok    {}", case.name)?,
            Ok(Some(why)) => {
                failed += 1;
                crate::outln!("FAIL  {}\n{why}", case.name)?;
            }
            Err(e) => {
                failed += 1;
                crate::outln!("ERROR {}: {e:#}", case.name)?;
            }
        }
    }
    crate::outln!(
        "{}: {} passed, {failed} failed",
        file.display(),
        tests.cases.len() - failed
    )?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `None` when every expected outcome holds; otherwise what differed, and why.
fn check(
    p: &tg_server::Pipeline,
    case: &Case,
    now: DateTime<Utc>,
    index: usize,
) -> anyhow::Result<Option<String>> {
    let source = Source::ALL
        .into_iter()
        .find(|s| s.as_str() == case.source)
        .ok_or_else(|| anyhow!("unknown source {:?}", case.source))?;
    let normalize = tg_normalize::normalizer(source)
        .ok_or_else(|| anyhow!("no normalizer for {}", case.source))?;
    let body = serde_json::to_vec(&case.event)?;
    let events = normalize(&body, &p.normalize, now).map_err(|e| anyhow!("event: {e}"))?;
    let event = events
        .first()
        .ok_or_else(|| anyhow!("the event holds no alert"))?;
    let policy = p.policy();
    let teams = policy.catalog.known_teams();
    let answer = case.classification.as_ref().map(|c| match c {
        serde_json::Value::String(raw) => raw.clone(),
        other => other.to_string(),
    });
    let verdict = answer
        .as_deref()
        .map(|raw| tg_classify::contract::validate(raw, &teams));
    let run_id = RunId(format!("run_policy_test_{index}"));
    // The case's stored state, keyed as the store keys it; then the one
    // decide path every caller shares (`tg_engine::decide_wave`).
    let classification = verdict.as_ref().map(|v| v.as_ref());
    let reads = tg_engine::reads(
        event,
        classification.and_then(|c| c.ok()),
        &p.storm,
        &policy.catalog,
    );
    let mut state = MemState::default();
    if let Some(cap) = case.state.autonomy_cap {
        state.caps.insert(tg_engine::CAP_SCOPE_ALL.to_owned(), cap);
    }
    if let Some(tokens) = case.state.page_tokens {
        let bucket = BucketState {
            tokens_milli: tokens.saturating_mul(1_000),
            updated_at: now,
        };
        for key in [Some(&reads.service_bucket), reads.team_bucket.as_ref()]
            .into_iter()
            .flatten()
        {
            state.buckets.insert(key.clone(), bucket);
        }
        state
            .buckets
            .insert(tg_engine::GLOBAL_BUCKET.to_owned(), bucket);
    }
    if case.state.duplicate {
        state.dedup.insert(
            event.fingerprint.clone(),
            DedupEntry {
                fingerprint: event.fingerprint.clone(),
                first_run_id: RunId("run_policy_test_first".into()),
                opened_at: now - chrono::Duration::seconds(1),
                expires_at: now + chrono::Duration::hours(1),
                impact: event.impact.level,
                resolved: false,
                paged_at: None,
                ticket_run: None,
                origins: vec![event.origin.clone()],
            },
        );
    }
    let correlation_id = CorrelationId(format!("tg-policy-test-{index}"));
    let outs = tg_engine::decide_wave(
        &mut state,
        tg_engine::Policy {
            gates: &policy.gates,
            catalog: &policy.catalog,
            settings: &p.storm,
        },
        &[tg_engine::WaveRun {
            reads: &reads,
            run_id: &run_id,
            correlation_id: &correlation_id,
            event,
            classification,
        }],
        now,
    );
    let out = outs
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the wave decided nothing"))?;
    let mut diffs = Vec::new();
    for (action, want) in &case.expect {
        let kind = ActionKind::ALL
            .into_iter()
            .find(|k| k.as_str() == action)
            .ok_or_else(|| anyhow!("expect: unknown action {action:?}"))?;
        let got = out.decision.get(kind);
        let got_text = got.map_or("absent", |a| a.outcome.as_str());
        if got_text != want {
            let mut why = format!("  {action}: expected {want}, decided {got_text}");
            if let Some(a) = got {
                why.push_str(&format!(" ({})", a.reason));
                for c in &a.conditions {
                    why.push_str(&format!(
                        "\n    {} {}: {} (needs {})",
                        if c.passed { "pass" } else { "FAIL" },
                        c.id,
                        c.actual,
                        c.threshold
                    ));
                }
            }
            diffs.push(why);
        }
    }
    Ok((!diffs.is_empty()).then(|| diffs.join("\n")))
}
