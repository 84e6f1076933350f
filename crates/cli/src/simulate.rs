//! `triage-gate simulate SCENARIO.yaml [--seed N] [--scale F]`: a scenario through
//! the real gate with a manual clock and the sandbox; prints actions per minute,
//! what was held back and why, totals, and fails non-zero (naming the seed) when
//! a storm invariant is broken.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use tg_sim::{Options, Scenario};

pub async fn run(file: &Path, seed: u64, scale: f64) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let scenario = Scenario::from_yaml(&text).with_context(|| format!("{}", file.display()))?;
    let report = tg_sim::run(&scenario, &Options { seed, scale }).await?;
    print!("{}", report.render());
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
