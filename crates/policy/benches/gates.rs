//! A plain timing of three gates (no harness): `cargo bench -p triage-gate-policy`.

use tg_model::{Classification, Environment, Severity};
use triage_gate_policy::{Catalog, Facts, GateInput, Gates};

#[expect(
    clippy::disallowed_methods,
    reason = "a benchmark measures elapsed time"
)]
fn main() {
    let mut catalog = Catalog::default();
    catalog.services.insert(
        "checkout".into(),
        triage_gate_policy::ServiceEntry {
            team: "platform-ops".into(),
            autonomy: tg_model::AutonomyLevel::Paging,
            tier: Some(1),
            paused: false,
            aliases: vec!["checkout-api".into()],
            thresholds: Default::default(),
        },
    );
    let gates = match Gates::with_default_policy(&catalog) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("default policy failed to load: {e:?}");
            return;
        }
    };
    let classification = Classification {
        classification: Severity::Sev1,
        confidence: 0.93,
        requires_ticket: true,
        requires_paging: true,
        requires_mim: true,
        recommended_team: "platform-ops".into(),
        rationale: None,
    };
    let facts = Facts {
        page_budget_left: 2,
        independent_signals: 1,
        mim_open: false,
    };
    for (label, service) in [("listed", "checkout"), ("unlisted", "search")] {
        let input = GateInput {
            service,
            owner_team: gates.catalog().owner_team(service),
            environment: Environment::Production,
            source_impact: tg_model::ImpactLevel::Unknown,
            classification: &classification,
            facts,
        };
        let n: u32 = 20_000;
        let start = std::time::Instant::now();
        let mut executed = 0usize;
        for _ in 0..n {
            executed += gates.evaluate(&input).len();
        }
        let per = start.elapsed() / n;
        println!("{label}: {per:?} per three gates ({executed} verdicts)");
    }
}
