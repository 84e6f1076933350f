//! `triage-gate policy diff --events gate.yaml --with CHANGE.yaml`: the
//! decisions a configuration change would have moved on what really
//! happened. Every decided run in the store `gate.yaml` names is replayed in
//! acceptance order, with the classification the gate recorded for it (no
//! model is asked), through `tg_engine::decide_wave` twice: once under
//! `gate.yaml` and once with CHANGE merged into it, each over its own
//! in-memory storm state (starting empty). Lists every decision that moves
//! and the conditions that moved it; reports events per second. Reads the
//! store only: nothing is written but the pending schema migrations that
//! opening a store runs, as the server's start would.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use tg_engine::{MemState, WaveRun};
use tg_model::ClassificationRecord;
use tg_model::{Decision, Outcome};

/// Moved decisions listed one per line at most (the tally counts them all).
pub const MOVED_LISTED_MAX: usize = 1_000;

/// One side of the comparison: its pipeline and its storm state.
struct Side {
    pipeline: tg_server::Pipeline,
    state: MemState,
}

impl Side {
    fn decide(
        &mut self,
        run: &tg_store::StoredRun,
        record: &ClassificationRecord,
        now: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<Decision> {
        let policy = self.pipeline.policy();
        let classification = match (&record.classification, &record.rejection) {
            (Some(c), _) => Some(Ok(c)),
            (None, Some(r)) => Some(Err(r)),
            (None, None) => None,
        };
        let reads = tg_engine::reads(
            &run.event,
            record.classification.as_ref(),
            &self.pipeline.storm,
            &policy.catalog,
        );
        let outs = tg_engine::decide_wave(
            &mut self.state,
            tg_engine::Policy {
                gates: &policy.gates,
                catalog: &policy.catalog,
                settings: &self.pipeline.storm,
            },
            &[WaveRun {
                reads: &reads,
                run_id: &run.run_id,
                correlation_id: &run.correlation_id,
                event: &run.event,
                classification,
            }],
            now,
        );
        // The touched keys matter to a store only.
        self.state.take_touched();
        outs.into_iter()
            .next()
            .map(|o| o.decision)
            .ok_or_else(|| anyhow!("the replay decided nothing for {}", run.run_id))
    }
}

/// What moved between two decisions of one run: per action whose outcome
/// differs, `action: before -> after` and each condition whose verdict flipped.
fn changes(a: &Decision, b: &Decision) -> Vec<String> {
    let mut out = Vec::new();
    for (x, y) in a.actions.iter().zip(&b.actions) {
        if x.outcome == y.outcome {
            continue;
        }
        let mut line = format!(
            "{}: {} -> {}",
            x.action,
            x.outcome.as_str(),
            y.outcome.as_str()
        );
        for c in &y.conditions {
            let before = x.conditions.iter().find(|d| d.id == c.id);
            if before.is_none_or(|d| d.passed != c.passed) {
                line.push_str(&format!(
                    " ({} {}: {}, needs {})",
                    c.id,
                    if c.passed { "now passes" } else { "now fails" },
                    c.actual,
                    c.threshold
                ));
            }
        }
        if y.outcome != Outcome::Execute && x.outcome == Outcome::Execute {
            line.push_str(&format!(" [{}]", y.reason));
        }
        out.push(line);
    }
    out
}

pub async fn diff_events(config_path: &Path, with: &Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let change =
        std::fs::read_to_string(with).with_context(|| format!("cannot read {}", with.display()))?;
    let overlay: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&change)
        .with_context(|| format!("{}: not a YAML mapping", with.display()))?;
    let mut merged: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{}: not a YAML mapping", config_path.display()))?;
    tg_sim::merge(&mut merged, &overlay);
    let name = config_path.display().to_string();
    let before = tg_config::Config::from_yaml(&text, &name).map_err(|e| anyhow!("{e}"))?;
    let after = tg_config::Config::from_yaml(
        &serde_yaml_ng::to_string(&merged)?,
        &format!("{name} with {}", with.display()),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let policy_text = crate::read_policy(config_path, &before)?;
    let side = |config: &tg_config::Config| -> anyhow::Result<Side> {
        let secrets = crate::check::CheckSecrets::new(config)?;
        Ok(Side {
            pipeline: tg_server::build::check_pipeline(config, policy_text.as_deref(), &secrets)?,
            state: MemState::default(),
        })
    };
    let (mut a, mut b) = (side(&before)?, side(&after)?);
    let secrets = crate::check::CheckSecrets::new(&before)?;
    let selection = tg_server::build::store_selection(&before.store, &secrets)?;
    let store = tg_server::open_store(&before.server.data_dir, &selection).await?;

    let started = std::time::Instant::now();
    let (mut replayed, mut skipped, mut moved) = (0usize, 0usize, 0usize);
    let mut same_as_recorded = 0usize;
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut after_seq = 0i64;
    loop {
        let page = store
            .runs_in_order(after_seq, tg_store::LIST_ROWS_MAX)
            .await?;
        let Some((last, _)) = page.last() else { break };
        after_seq = *last;
        for (_, run) in &page {
            let (Some(recorded), Some(record), Some(at)) = (
                run.decision.as_ref(),
                run.classification.clone(),
                run.decided_at,
            ) else {
                // Not decided yet: nothing happened to replay.
                skipped += 1;
                continue;
            };
            let record: ClassificationRecord = serde_json::from_value(record)
                .with_context(|| format!("run {}: its classification record", run.run_id))?;
            let da = a.decide(run, &record, at)?;
            let db = b.decide(run, &record, at)?;
            replayed += 1;
            if outcomes(&da) == outcomes(recorded) {
                same_as_recorded += 1;
            }
            let lines = changes(&da, &db);
            if lines.is_empty() {
                continue;
            }
            moved += 1;
            if moved <= MOVED_LISTED_MAX {
                crate::outln!(
                    "  {} {}  {:<20} {:<24} {}",
                    run.run_id,
                    at.format("%Y-%m-%d %H:%M:%S"),
                    run.event.service,
                    run.event.alert_name,
                    lines.join("; ")
                )?;
            }
            for l in lines {
                let key = l.split(" (").next().unwrap_or_default().to_owned();
                *tally.entry(key).or_default() += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    crate::outln!(
        "{replayed} recorded decisions replayed ({skipped} runs not decided yet, skipped) in {secs:.2} s \
         ({:.0} events/s, two policies each); {moved} moved by {}",
        if secs > 0.0 {
            replayed as f64 / secs
        } else {
            0.0
        },
        with.display()
    )?;
    crate::outln!(
        "as recorded: {same_as_recorded} of {replayed} replayed under {} decide as the gate did \
         (the replay starts from an empty storm state and ignores approvals and kill switches made since)",
        config_path.display()
    )?;
    crate::outln!("moved:")?;
    for (k, n) in &tally {
        crate::outln!("  {n:>6}  {k}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Each action's outcome, for comparing with what the gate recorded.
fn outcomes(d: &Decision) -> Vec<(tg_model::ActionKind, Outcome)> {
    d.actions.iter().map(|a| (a.action, a.outcome)).collect()
}
