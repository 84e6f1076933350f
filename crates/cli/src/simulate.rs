//! `triage-gate simulate SCENARIO.yaml [--seed N] [--scale F] [--chaos P]`: a scenario through
//! the real gate with a manual clock and the sandbox; prints actions per minute,
//! what was held back and why, totals, and fails non-zero (naming the seed) when
//! a storm invariant is broken.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use tg_sim::{Options, Scenario};

pub async fn run(
    file: &Path,
    seed: u64,
    scale: f64,
    chaos: Option<f64>,
) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut scenario = Scenario::from_yaml(&text).with_context(|| format!("{}", file.display()))?;
    if let Some(fraction) = chaos {
        scenario.with_action_chaos(fraction, seed)?;
    }
    let report = tg_sim::run(
        &scenario,
        &Options {
            seed,
            scale,
            ..Options::default()
        },
    )
    .await?;
    crate::out!("{}", report.render())?;
    if report.violations.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} invariant(s) broken; reproduce with --seed {}",
            report.violations.len(),
            seed
        );
        Ok(ExitCode::FAILURE)
    }
}

/// `triage-gate policy diff SCENARIO --with CHANGE.yaml`: the decisions a
/// configuration change (thresholds, autonomy, storm settings) moves, on a
/// scenario's events.
pub async fn diff(file: &Path, with: &Path, seed: u64, scale: f64) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let scenario = Scenario::from_yaml(&text).with_context(|| format!("{}", file.display()))?;
    let change =
        std::fs::read_to_string(with).with_context(|| format!("cannot read {}", with.display()))?;
    let overlay: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&change)
        .with_context(|| format!("{}: not a YAML mapping", with.display()))?;
    let (a, b, moved) = tg_sim::policy_diff(
        &scenario,
        &overlay,
        &Options {
            seed,
            scale,
            ..Options::default()
        },
    )
    .await?;
    crate::outln!(
        "scenario {} (seed {seed}): {} decisions; {} moved by {}",
        scenario.name,
        a.decisions.len(),
        moved.len(),
        with.display()
    )?;
    let mut tally: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for m in &moved {
        let changes = m.changes();
        crate::outln!(
            "  #{:<6} {}  {:<20} {:<24} {:<8} {}",
            m.before.index,
            m.before.received_at.format("%H:%M:%S"),
            m.before.service,
            m.before.alert_name,
            m.before.status,
            changes.join("; ")
        )?;
        for c in changes {
            let key = c.split(" (").next().unwrap_or_default().to_owned();
            *tally.entry(key).or_default() += 1;
        }
    }
    crate::outln!("moved:")?;
    for (k, n) in &tally {
        crate::outln!("  {n:>6}  {k}")?;
    }
    // A change may well miss the scenario's own expectations (that is what
    // it shows); storm invariants and expectations are listed, not fatal.
    for (name, r) in [("before", &a), ("after", &b)] {
        if !r.violations.is_empty() {
            crate::outln!(
                "{name}: {} expectation(s) or invariant(s) not met:",
                r.violations.len()
            )?;
            for v in &r.violations {
                crate::outln!("  - {v}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
