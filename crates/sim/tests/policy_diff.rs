//! `policy diff`: a threshold change on a shipped scenario moves exactly the
//! decisions it should, and nothing else.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use triage_gate_sim::{Options, Scenario, diff_decisions, policy_diff};

fn scenario(name: &str) -> Scenario {
    let path = format!("{}/../../scenarios/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    Scenario::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_page_threshold_moves_exactly_the_pages_below_it() {
    let overlay =
        serde_yaml_ng::from_str("catalog: { defaults: { thresholds: { page: 0.9 } } }").unwrap();
    let (a, b, moved) = policy_diff(&scenario("slow-burn"), &overlay, &Options::default())
        .await
        .unwrap();
    assert_eq!(a.decisions.len(), b.decisions.len());
    // By hand: as shipped, the scenario pages once, payments-api's escalation,
    // which the rules classifier rates high at 0.86: below 0.90, so that page
    // (and only it) goes to review.
    let paged: Vec<_> = a
        .decisions
        .iter()
        .filter(|d| d.outcomes[1] == "execute")
        .collect();
    assert_eq!(paged.len(), 1, "{:#?}", a.decisions);
    assert_eq!(moved.len(), 1, "{moved:#?}");
    let m = &moved[0];
    assert_eq!(m.before.index, paged[0].index);
    assert_eq!(m.before.service, "payments-api");
    assert_eq!(
        m.changes(),
        vec!["page execute -> review (page.confidence: 0.86 vs >= 0.90)".to_owned()]
    );
    assert_eq!(
        m.before.outcomes[0], m.after.outcomes[0],
        "the ticket did not move"
    );

    // The same change the other way round moves it back; no change moves nothing.
    let none =
        serde_yaml_ng::from_str("catalog: { defaults: { thresholds: { page: 0.80 } } }").unwrap();
    let (_, _, moved) = policy_diff(&scenario("slow-burn"), &none, &Options::default())
        .await
        .unwrap();
    assert!(moved.is_empty(), "{moved:#?}");
}

#[test]
fn runs_that_saw_different_events_are_not_compared() {
    let line = |i: usize, service: &str| triage_gate_sim::DecisionLine {
        index: i,
        received_at: chrono::DateTime::UNIX_EPOCH,
        service: service.to_owned(),
        alert_name: "A".to_owned(),
        status: "firing".to_owned(),
        outcomes: ["skip".into(), "skip".into(), "skip".into()],
        failed: [None, None, None],
    };
    assert!(diff_decisions(&[line(1, "a")], &[line(1, "b")]).is_err());
    assert!(diff_decisions(&[line(1, "a")], &[]).is_err());
    assert_eq!(diff_decisions(&[line(1, "a")], &[line(1, "a")]), Ok(vec![]));
}
