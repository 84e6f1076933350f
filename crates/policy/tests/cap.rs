//! The autonomy cap table, every level x action x severity x gate outcome.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers may fail loudly"
)]

use tg_model::{ActionKind, AutonomyLevel, Outcome, Severity};
use triage_gate_policy::cap;

use ActionKind::{Mim, Page, Ticket};
use AutonomyLevel as L;
use Outcome::{Execute, Review, Skip};

/// What an `Execute` becomes, not paused.
fn expected(level: AutonomyLevel, action: ActionKind, sev: Severity) -> Outcome {
    match (level, action) {
        (L::Shadow, _) => Skip,
        (L::Assist, _) => Review,
        (L::Limited, Ticket) if sev <= Severity::Medium => Execute,
        (L::Limited, _) => Review,
        (L::Paging, Ticket | Page) => Execute,
        (L::Paging, Mim) => Review,
        (L::Mim, _) => Execute,
    }
}

const SEVERITIES: [Severity; 4] = [
    Severity::Low,
    Severity::Medium,
    Severity::High,
    Severity::Sev1,
];

#[test]
fn execute_is_capped_by_the_autonomy_level() {
    for level in L::ALL {
        for action in ActionKind::ALL {
            for sev in SEVERITIES {
                let (out, why) = cap(level, false, action, sev, Execute);
                let want = expected(level, action, sev);
                assert_eq!(out, want, "{level} {action} {sev}");
                assert_eq!(
                    why.is_some(),
                    want != Execute,
                    "{level} {action} {sev}: {why:?}"
                );
            }
        }
    }
}

#[test]
fn the_table_in_words() {
    assert_eq!(
        cap(L::Shadow, false, Ticket, Severity::Low, Execute),
        (Skip, Some("shadow mode: recorded only".into()))
    );
    assert_eq!(
        cap(L::Limited, false, Ticket, Severity::Medium, Execute),
        (Execute, None)
    );
    assert_eq!(
        cap(L::Limited, false, Ticket, Severity::High, Execute).0,
        Review
    );
    assert_eq!(
        cap(L::Paging, false, Page, Severity::Sev1, Execute),
        (Execute, None)
    );
    assert_eq!(
        cap(L::Paging, false, Mim, Severity::Sev1, Execute).0,
        Review
    );
    assert_eq!(
        cap(L::Mim, false, Mim, Severity::Sev1, Execute),
        (Execute, None)
    );
    assert!(
        cap(L::Assist, false, Ticket, Severity::Low, Execute)
            .1
            .unwrap()
            .contains("assist")
    );
}

#[test]
fn review_and_skip_pass_through_unless_paused() {
    for level in L::ALL {
        for action in ActionKind::ALL {
            for gate in [Review, Skip, Outcome::Suppressed] {
                assert_eq!(
                    cap(level, false, action, Severity::Sev1, gate),
                    (gate, None)
                );
            }
        }
    }
}

#[test]
fn a_paused_service_skips_everything_it_would_execute_or_queue() {
    for level in L::ALL {
        for action in ActionKind::ALL {
            for gate in [Execute, Review] {
                assert_eq!(
                    cap(level, true, action, Severity::Sev1, gate),
                    (Skip, Some("service paused (kill switch)".into())),
                    "{level} {action} {gate:?}"
                );
            }
            assert_eq!(cap(level, true, action, Severity::Low, Skip), (Skip, None));
        }
    }
}
