//! Unit and property tests of `precheck` and `step` with the default policy.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use tg_model::{
    ActionKind, ActionOp, AlertStatus, AutonomyLevel, Classification, Condition, CorrelationId,
    Environment, Fingerprint, Impact, ImpactLevel, NormalizedEvent, Outcome, PlannedAction,
    Rejection, RunId, Severity, Source,
};
use tg_policy::Gates;
use tg_policy::catalog::{Catalog, ServiceEntry, TeamEntry};
use tg_storm::{BucketConfig, BucketState, DedupEntry, GroupEntry, GroupField, Signal, Transition};

use super::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap()
}

fn service(team: &str, autonomy: AutonomyLevel) -> ServiceEntry {
    ServiceEntry {
        team: team.into(),
        autonomy,
        tier: None,
        paused: false,
        aliases: Vec::new(),
        thresholds: Default::default(),
    }
}

fn catalog() -> Catalog {
    let mut c = Catalog::default();
    for team in ["payments", "dba", "search"] {
        c.teams.insert(team.into(), TeamEntry::default());
    }
    c.services.insert(
        "checkout".into(),
        service("payments", AutonomyLevel::Paging),
    );
    c.services
        .insert("orders-db".into(), service("dba", AutonomyLevel::Mim));
    c.services
        .insert("search".into(), service("search", AutonomyLevel::Shadow));
    c
}

struct Fixture {
    catalog: Catalog,
    gates: Gates,
    settings: StormSettings,
}

fn fixture() -> Fixture {
    let catalog = catalog();
    let gates = Gates::with_default_policy(&catalog).unwrap();
    Fixture {
        catalog,
        gates,
        settings: StormSettings::default(),
    }
}

fn event(service: &str, origin: &str, fingerprint: &str, status: AlertStatus) -> NormalizedEvent {
    NormalizedEvent {
        source: Source::Generic,
        origin: origin.into(),
        status,
        environment: Environment::Production,
        service: service.into(),
        component: None,
        alert_name: "ErrorRate".into(),
        summary: format!("{service} errors"),
        error_signature: "errors".into(),
        fingerprint: Fingerprint(fingerprint.into()),
        correlation_ids: BTreeMap::new(),
        impact: Impact {
            level: ImpactLevel::High,
            evidence: vec!["affected_customers=150".into()],
        },
        log_pointers: Vec::new(),
        labels: BTreeMap::new(),
        occurred_at: t0(),
        received_at: t0(),
        sender: None,
    }
}

fn firing(service: &str) -> NormalizedEvent {
    event(service, "cloudwatch", "fp-1", AlertStatus::Firing)
}

/// A page-worthy answer: high, 0.90, ticket and page.
fn page_worthy(team: &str) -> Classification {
    Classification {
        classification: Severity::High,
        confidence: 0.90,
        requires_ticket: true,
        requires_paging: true,
        requires_mim: false,
        recommended_team: team.into(),
        rationale: None,
    }
}

/// A MIM-worthy answer: sev1, 0.95, everything.
fn mim_worthy(team: &str) -> Classification {
    Classification {
        classification: Severity::Sev1,
        confidence: 0.95,
        requires_ticket: true,
        requires_paging: true,
        requires_mim: true,
        recommended_team: team.into(),
        rationale: None,
    }
}

fn run(
    f: &Fixture,
    state: &StepState,
    event: &NormalizedEvent,
    classification: Option<Result<&Classification, &Rejection>>,
    now: DateTime<Utc>,
) -> StepOutput {
    let run_id = RunId("run_test".into());
    let corr = CorrelationId("corr_test".into());
    step(
        &f.gates,
        &f.catalog,
        &f.settings,
        state,
        StepInput {
            run_id: &run_id,
            correlation_id: &corr,
            event,
            classification,
        },
        now,
    )
}

fn condition<'a>(out: &'a StepOutput, kind: ActionKind, id: &str) -> &'a Condition {
    out.decision
        .get(kind)
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no condition {id} on {kind:?}: {:?}", out.decision))
}

fn buckets(out: &StepOutput) -> BTreeMap<String, BucketState> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::PutBucket { key, state } => Some((key.clone(), *state)),
            _ => None,
        })
        .collect()
}

#[test]
fn resolved_skips_everything_and_closes_the_dedup_window() {
    let f = fixture();
    let ev = event("checkout", "cloudwatch", "fp-1", AlertStatus::Resolved);
    // Even with an open window, a resolution is a resolution.
    let state = StepState {
        dedup: Some(DedupEntry::open(
            ev.fingerprint.clone(),
            RunId("run_first".into()),
            t0(),
            f.settings.dedup_window,
        )),
        ..Default::default()
    };
    assert_eq!(precheck(&state, &ev, t0()), Precheck::Resolved);
    let out = run(&f, &state, &ev, None, t0());
    assert_eq!(out.decision.actions.len(), ActionKind::ALL.len());
    for a in &out.decision.actions {
        assert_eq!(a.outcome, Outcome::Skip, "{a:?}");
        assert!(a.conditions.iter().any(|c| c.id == "event.firing"));
    }
    assert_eq!(
        out.effects,
        vec![Effect::CloseDedup(ev.fingerprint.clone())]
    );
    assert!(out.planned.is_empty());
    assert_eq!(out.decision.resolves, Some(RunId("run_first".into())));

    // Without a window there is no run to record the resolution against.
    let out = run(&f, &StepState::default(), &ev, None, t0());
    assert_eq!(out.decision.resolves, None);
}

#[test]
fn escalation_inside_the_window_is_not_a_duplicate_and_reopens_it() {
    let f = fixture();
    let mut ev = firing("checkout");
    ev.impact.level = ImpactLevel::Critical;
    let state = StepState {
        dedup: Some(
            DedupEntry::open(
                ev.fingerprint.clone(),
                RunId("run_first".into()),
                t0(),
                f.settings.dedup_window,
            )
            .with_impact(ImpactLevel::Medium),
        ),
        ..Default::default()
    };
    let now = t0() + Duration::minutes(5);
    assert_eq!(precheck(&state, &ev, now), Precheck::Classify);
    let out = run(&f, &state, &ev, Some(Ok(&page_worthy("payments"))), now);
    assert_eq!(out.decision.duplicate_of, None);
    let reopened = out.effects.iter().find_map(|e| match e {
        Effect::OpenDedup(d) => Some(d.clone()),
        _ => None,
    });
    let reopened = reopened.unwrap();
    assert_eq!(reopened.impact, ImpactLevel::Critical);
    assert_eq!(reopened.opened_at, now);
    // The same critical level again is a duplicate of the escalated window.
    let state = StepState {
        dedup: Some(reopened),
        ..Default::default()
    };
    assert!(matches!(
        precheck(&state, &ev, now + Duration::seconds(1)),
        Precheck::Duplicate { .. }
    ));
}

#[test]
fn refire_after_resolution_does_not_page_again_within_the_window() {
    let f = fixture();
    let window = f.settings.dedup_window.num_minutes();
    let outs = check(
        &f,
        &[
            at(0, "run_a", "fp-1", AlertStatus::Firing),
            at(1, "run_r", "fp-1", AlertStatus::Resolved),
            // A re-fire inside the window: no second page (flap damping),
            // and the window's ticket is kept, not a second one.
            at(2, "run_b", "fp-1", AlertStatus::Firing),
            // Once the window run_b re-opened has lapsed (and with it the
            // last page's), it pages again.
            at(2 + window, "run_c", "fp-1", AlertStatus::Firing),
        ],
        &[
            "ticket=execute page=execute",
            "ticket=skip page=execute/resolve",
            "ticket=suppressed page=review",
            "page=execute",
        ],
    );
    assert!(!condition(&outs[2], ActionKind::Page, "page.flap").passed);
    assert!(!condition(&outs[2], ActionKind::Ticket, "ticket.open").passed);
}

#[test]
fn duplicate_inside_the_window_is_suppressed_and_names_the_first_run() {
    let f = fixture();
    let mut mem = MemState::default();
    check_in(
        &f,
        &mut mem,
        &[at(0, "run_first", "fp-1", AlertStatus::Firing)],
        &["ticket=execute page=execute"],
    );
    // The runtime's precheck on that state: no model call for the repeat.
    let mut repeat = at(5, "run_dup", "fp-1", AlertStatus::Firing);
    let now = t0() + repeat.at;
    let ev = repeat.event.clone();
    let state = mem.load(&reads(&ev, None, &f.settings, &f.catalog));
    assert_eq!(
        precheck(&state, &ev, now),
        Precheck::Duplicate {
            first_run_id: RunId("run_first".into())
        }
    );
    repeat.answer = None;
    let out = check_in(
        &f,
        &mut mem,
        &[repeat],
        &["ticket=suppressed page=suppressed mim=suppressed"],
    )
    .remove(0);
    assert_eq!(out.decision.duplicate_of, Some(RunId("run_first".into())));
    assert!(out.planned.is_empty());
    assert!(
        !out.effects
            .iter()
            .any(|e| matches!(e, Effect::OpenDedup(_) | Effect::PutBucket { .. })),
        "a duplicate neither reopens the window nor spends budget: {:?}",
        out.effects
    );

    assert!(!condition(&out, ActionKind::Page, "dedup.window").passed);

    // Once the window lapses the same fingerprint is classified again.
    let later = t0() + f.settings.dedup_window;
    assert_eq!(precheck(&state, &ev, later), Precheck::Classify);
}

#[test]
fn a_rejected_answer_goes_to_review_with_the_contract_condition() {
    let f = fixture();
    let ev = firing("checkout");
    let rejection = Rejection {
        reason: "unknown_team".into(),
        detail: "team \"nobody\" is not in the catalog".into(),
    };
    let out = run(&f, &StepState::default(), &ev, Some(Err(&rejection)), t0());
    for a in &out.decision.actions {
        assert_eq!(a.outcome, Outcome::Review);
        let c = a
            .conditions
            .iter()
            .find(|c| c.id == "contract.valid")
            .unwrap();
        assert!(!c.passed);
        assert_eq!(c.actual, "unknown_team");
    }
    assert!(
        out.planned.is_empty(),
        "nothing is drafted from a bad answer"
    );
    assert!(
        out.effects
            .iter()
            .any(|e| matches!(e, Effect::OpenDedup(d) if d.fingerprint == ev.fingerprint)),
        "the first run opens the window whatever its outcome"
    );
    assert!(buckets(&out).is_empty());
}

#[test]
fn an_executed_page_spends_one_token_of_the_team_and_global_buckets() {
    let f = fixture();
    let ev = firing("checkout");
    let c = page_worthy("payments");
    let now = t0();
    let state = StepState {
        team_bucket: Some(BucketState {
            tokens_milli: 2000,
            updated_at: now,
        }),
        ..Default::default()
    };
    let out = run(&f, &state, &ev, Some(Ok(&c)), now);
    assert_eq!(
        out.decision.outcome(ActionKind::Page),
        Some(Outcome::Execute)
    );
    assert_eq!(
        out.decision.outcome(ActionKind::Ticket),
        Some(Outcome::Execute)
    );
    let b = buckets(&out);
    assert_eq!(b.len(), 3, "{b:?}");
    assert_eq!(b[&team_bucket_key("payments")].tokens_milli, 1000);
    // No stored service bucket: it starts full and loses one token.
    let service_full = i64::from(f.settings.service_bucket.burst) * 1000;
    assert_eq!(
        b[&service_bucket_key("checkout")].tokens_milli,
        service_full - 1000
    );
    // No stored global bucket: it starts full and loses one token.
    let global_full = i64::from(f.settings.global_bucket.burst) * 1000;
    assert_eq!(b[GLOBAL_BUCKET].tokens_milli, global_full - 1000);
    let page = out
        .planned
        .iter()
        .find(|p| p.action.kind == ActionKind::Page)
        .unwrap();
    assert_eq!(page.outcome, Outcome::Execute);
    assert_eq!(page.action.team, "payments");
    assert_eq!(
        page.action.idempotency_key,
        idempotency_key(&RunId("run_test".into()), ActionKind::Page)
    );
}

#[test]
fn an_empty_team_bucket_sends_the_page_to_review() {
    let f = fixture();
    let ev = firing("checkout");
    let c = page_worthy("payments");
    let now = t0();
    let state = StepState {
        team_bucket: Some(BucketState {
            tokens_milli: 0,
            updated_at: now,
        }),
        ..Default::default()
    };
    let out = run(&f, &state, &ev, Some(Ok(&c)), now);
    assert_eq!(
        out.decision.outcome(ActionKind::Page),
        Some(Outcome::Review)
    );
    let rate = condition(&out, ActionKind::Page, "page.rate");
    assert!(!rate.passed);
    assert_eq!(rate.actual, "0 (page:team:payments)");
    assert_eq!(rate.threshold, "> 0 (page:team:payments: burst 3, 6/h)");
    let page = out.decision.get(ActionKind::Page).unwrap();
    assert!(
        page.reason.contains("limit page:team:payments"),
        "{}",
        page.reason
    );
    assert!(out.effects.iter().any(|e| matches!(e,
        Effect::HoldPage(h) if h.reason == HoldReason::Rate && h.limit == "page:team:payments")));
    assert!(buckets(&out).is_empty(), "review spends no budget");
    // The ticket is unaffected by the paging budget.
    assert_eq!(
        out.decision.outcome(ActionKind::Ticket),
        Some(Outcome::Execute)
    );
    let drafted = out
        .planned
        .iter()
        .find(|p| p.action.kind == ActionKind::Page)
        .unwrap();
    assert_eq!(drafted.outcome, Outcome::Review);
}

/// An `orders-db` alert from `origin`, `secs` after [`t0`], answered
/// MIM-worthy for its owner, `dba`.
fn db_at(secs: i64, run: &str, origin: &str, fp: &str) -> At {
    At {
        at: Duration::seconds(secs),
        run: run.to_owned(),
        event: event("orders-db", origin, fp, AlertStatus::Firing),
        answer: Some(mim_worthy("dba")),
    }
}

#[test]
fn mim_needs_two_independent_origins() {
    let f = fixture();
    let outs = check(
        &f,
        &[
            // One origin, twice: one signal.
            db_at(0, "run_1", "cloudwatch", "fp-1"),
            db_at(60, "run_2", "cloudwatch", "fp-2"),
            // A second origin inside the signal window confirms it.
            db_at(180, "run_3", "datadog", "fp-3"),
        ],
        &["mim=review", "mim=review", "mim=execute"],
    );
    assert!(!condition(&outs[1], ActionKind::Mim, "mim.signals").passed);
    assert!(
        !outs[1]
            .effects
            .iter()
            .any(|e| matches!(e, Effect::OpenMim { .. }))
    );
    let signals = condition(&outs[2], ActionKind::Mim, "mim.signals");
    assert!(signals.passed);
    assert!(
        signals.actual.contains("cloudwatch") && signals.actual.contains("datadog"),
        "names both origins: {}",
        signals.actual
    );
    let now = t0() + Duration::seconds(180);
    assert!(outs[2].effects.contains(&Effect::OpenMim {
        service: "orders-db".into(),
        run_id: RunId("run_3".into()),
        expires_at: now + f.settings.mim_window,
    }));
    assert!(outs[2].effects.contains(&Effect::RecordSignal {
        key: "orders-db@production".into(),
        signal: Signal {
            sender: "unverified:datadog".into(),
            origin: "datadog".into(),
            seen_at: now,
        },
    }));

    // A sighting older than the signal window does not count.
    let late = f.settings.signal_window.num_seconds() + 1;
    check(
        &f,
        &[
            db_at(0, "run_1", "datadog", "fp-1"),
            db_at(late, "run_2", "cloudwatch", "fp-2"),
        ],
        &["mim=review", "mim=review"],
    );
}

#[test]
fn an_open_mim_sends_another_to_review() {
    let f = fixture();
    let lapsed = f.settings.mim_window.num_seconds() + 120;
    let outs = check(
        &f,
        &[
            db_at(0, "run_1", "cloudwatch", "fp-1"),
            db_at(60, "run_mim", "datadog", "fp-2"),
            // Confirmed again, but the MIM of run_mim is open.
            db_at(120, "run_3", "cloudwatch", "fp-3"),
            // Once it lapses, two fresh signals open another.
            db_at(lapsed, "run_4", "cloudwatch", "fp-4"),
            db_at(lapsed + 60, "run_5", "datadog", "fp-5"),
        ],
        &[
            "mim=review",
            "mim=execute",
            "mim=review",
            "mim=review",
            "mim=execute",
        ],
    );
    let not_open = condition(&outs[2], ActionKind::Mim, "mim.not_open");
    assert!(!not_open.passed);
    assert!(
        !outs[2]
            .effects
            .iter()
            .any(|e| matches!(e, Effect::OpenMim { .. }))
    );
    assert!(condition(&outs[3], ActionKind::Mim, "mim.not_open").passed);
}

#[test]
fn shadow_autonomy_skips_what_the_gates_would_execute() {
    let f = fixture();
    let ev = firing("search");
    let c = page_worthy("search");
    let out = run(&f, &StepState::default(), &ev, Some(Ok(&c)), t0());
    assert_eq!(out.decision.autonomy, AutonomyLevel::Shadow);
    for kind in [ActionKind::Ticket, ActionKind::Page] {
        let a = out.decision.get(kind).unwrap();
        assert_eq!(a.outcome, Outcome::Skip, "{a:?}");
        assert_eq!(a.gate_outcome, Outcome::Execute, "{a:?}");
        assert!(
            a.capped_by.as_deref().is_some_and(|c| c.contains("shadow")),
            "{a:?}"
        );
    }
    assert!(out.planned.is_empty());
    assert!(buckets(&out).is_empty(), "shadow spends no paging budget");
}

#[test]
fn the_same_inputs_give_the_same_output() {
    let f = fixture();
    let ev = event("orders-db", "cloudwatch", "fp-db", AlertStatus::Firing);
    let c = mim_worthy("dba");
    let now = t0();
    let state = StepState {
        signals: vec![
            Signal {
                sender: "unverified:datadog".into(),
                origin: "datadog".into(),
                seen_at: now - Duration::minutes(2),
            },
            Signal {
                sender: "unverified:apm".into(),
                origin: "apm".into(),
                seen_at: now - Duration::minutes(1),
            },
        ],
        team_bucket: Some(BucketState {
            tokens_milli: 1500,
            updated_at: now - Duration::minutes(7),
        }),
        ..Default::default()
    };
    let a = run(&f, &state, &ev, Some(Ok(&c)), now);
    let b = run(&f, &state.clone(), &ev.clone(), Some(Ok(&c.clone())), now);
    assert_eq!(a, b);
    // And a separately loaded policy decides identically.
    let g = fixture();
    assert_eq!(a, run(&g, &state, &ev, Some(Ok(&c)), now));
    assert_eq!(
        serde_json::to_string(&a.decision).unwrap(),
        serde_json::to_string(&b.decision).unwrap()
    );
}

// ---- property: storm control holds over any sequence of events ------------

const TEAMS: [&str; 2] = ["payments", "dba"];

/// The engine's [`MemState`] (the state every store keeps, changed only
/// through effects), and the breaker transitions seen, for the invariants.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Sim {
    mem: MemState,
    transitions: Vec<Transition>,
}

impl std::ops::Deref for Sim {
    type Target = MemState;
    fn deref(&self) -> &MemState {
        &self.mem
    }
}

impl std::ops::DerefMut for Sim {
    fn deref_mut(&mut self) -> &mut MemState {
        &mut self.mem
    }
}

impl Sim {
    /// The state a step for `ev` reads, its paging charged to `team`.
    fn state_for(&self, ev: &NormalizedEvent, team: &str) -> StepState {
        let catalog = Catalog::default();
        let mut reads = reads(ev, None, &StormSettings::default(), &catalog);
        reads.team_bucket = Some(team_bucket_key(team));
        self.mem.load(&reads)
    }

    fn apply(&mut self, effects: &[Effect]) {
        for e in effects {
            if let Effect::BreakerTransition { transition, .. } = e {
                self.transitions.push(transition.clone());
            }
        }
        self.mem.apply(effects);
        // Only the store reads what changed; the tests compare states.
        self.mem.take_touched();
    }
}

/// Pages in any interval [a, b] stay within burst + refill over (b - a).
fn assert_within_budget(times: &[DateTime<Utc>], cfg: BucketConfig, what: &str) {
    for (i, a) in times.iter().enumerate() {
        for (j, b) in times.iter().enumerate().skip(i) {
            let count = i64::try_from(j - i + 1).unwrap();
            let elapsed_ms = (*b - *a).num_milliseconds();
            let allowed_milli =
                i64::from(cfg.burst) * 1000 + elapsed_ms * i64::from(cfg.per_hour) / 3600;
            assert!(
                count * 1000 <= allowed_milli,
                "{what}: {count} pages between {a} and {b} exceed burst {} + {}/h",
                cfg.burst,
                cfg.per_hour
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn storm_control_holds_over_random_sequences(
        events in prop::collection::vec((0usize..8, 0i64..240, prop::bool::weighted(0.1)), 1..50)
    ) {
        let mut f = fixture();
        // Small budgets so they are actually exhausted.
        f.settings.team_bucket = BucketConfig { burst: 2, per_hour: 6 };
        f.settings.global_bucket = BucketConfig { burst: 3, per_hour: 12 };
        // Every fingerprint belongs to a service at `paging` autonomy.
        f.catalog.services.insert("orders-db".into(), service("dba", AutonomyLevel::Paging));
        f.gates = Gates::with_default_policy(&f.catalog).unwrap();

        let mut sim = Sim::default();
        let mut now = t0();
        // Per fingerprint: when the last non-suppressed firing run happened.
        let mut last_open: HashMap<usize, DateTime<Utc>> = HashMap::new();
        let mut pages: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
        let mut all_pages = Vec::new();

        for (n, (fp, offset, resolved)) in events.into_iter().enumerate() {
            now += Duration::seconds(offset);
            let team = TEAMS[fp % TEAMS.len()];
            let svc = if team == "payments" { "checkout" } else { "orders-db" };
            let status = if resolved { AlertStatus::Resolved } else { AlertStatus::Firing };
            let ev = event(svc, "cloudwatch", &format!("fp-{fp}"), status);
            let c = page_worthy(team);
            let state = sim.state_for(&ev, team);
            let classification = match precheck(&state, &ev, now) {
                Precheck::Classify => Some(Ok(&c)),
                Precheck::Duplicate { .. } | Precheck::Resolved => None,
            };
            let run_id = RunId(format!("run_{n}"));
            let corr = CorrelationId(format!("corr_{n}"));
            let out = step(&f.gates, &f.catalog, &f.settings, &state, StepInput {
                run_id: &run_id,
                correlation_id: &corr,
                event: &ev,
                classification,
            }, now);
            sim.apply(&out.effects);

            if resolved {
                last_open.remove(&fp);
                continue;
            }
            let suppressed = out.decision.duplicate_of.is_some();
            prop_assert_eq!(
                suppressed,
                out.decision.actions.iter().all(|a| a.outcome == Outcome::Suppressed)
            );
            if !suppressed {
                if let Some(prev) = last_open.get(&fp) {
                    prop_assert!(
                        now - *prev >= f.settings.dedup_window,
                        "fp-{} ran unsuppressed at {} and again at {}", fp, prev, now
                    );
                }
                last_open.insert(fp, now);
            }
            if out.decision.outcome(ActionKind::Page) == Some(Outcome::Execute) {
                pages.entry(team).or_default().push(now);
                all_pages.push(now);
            }
        }
        for (team, times) in &pages {
            assert_within_budget(times, f.settings.team_bucket, team);
        }
        assert_within_budget(&all_pages, f.settings.global_bucket, "global");
    }
}

/// The dedup window a step opened (its `OpenDedup` effect).
fn opened_window(out: &StepOutput) -> DedupEntry {
    out.effects
        .iter()
        .find_map(|e| match e {
            Effect::OpenDedup(d) => Some(d.clone()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_new_origin_inside_the_window_confirms_the_mim_without_a_second_ticket_or_page() {
    let f = fixture();
    let c = mim_worthy("dba");
    let first_ev = event("orders-db", "prometheus", "fp-db", AlertStatus::Firing);
    let first = run(&f, &StepState::default(), &first_ev, Some(Ok(&c)), t0());
    assert_eq!(
        first.decision.outcome(ActionKind::Ticket),
        Some(Outcome::Execute)
    );
    assert_eq!(
        first.decision.outcome(ActionKind::Page),
        Some(Outcome::Execute)
    );
    assert_eq!(
        first.decision.outcome(ActionKind::Mim),
        Some(Outcome::Review)
    );

    // CloudWatch reports the same fingerprint two minutes later.
    let now = t0() + Duration::minutes(2);
    let second_ev = event("orders-db", "cloudwatch", "fp-db", AlertStatus::Firing);
    let state = StepState {
        dedup: Some(opened_window(&first)),
        signals: vec![Signal {
            sender: "unverified:prometheus".into(),
            origin: "prometheus".into(),
            seen_at: t0(),
        }],
        ..Default::default()
    };
    assert_eq!(precheck(&state, &second_ev, now), Precheck::Classify);
    let second = run(&f, &state, &second_ev, Some(Ok(&c)), now);
    assert_eq!(second.decision.duplicate_of, None);
    assert_eq!(
        second.decision.outcome(ActionKind::Mim),
        Some(Outcome::Execute)
    );
    assert!(condition(&second, ActionKind::Mim, "mim.signals").passed);
    assert_eq!(
        second.decision.outcome(ActionKind::Ticket),
        Some(Outcome::Suppressed)
    );
    assert!(!condition(&second, ActionKind::Ticket, "ticket.open").passed);
    assert_eq!(
        second.decision.outcome(ActionKind::Page),
        Some(Outcome::Suppressed)
    );
    assert!(!condition(&second, ActionKind::Page, "page.open").passed);
    assert!(
        !second
            .effects
            .iter()
            .any(|e| matches!(e, Effect::PutBucket { .. })),
        "a suppressed page spends no budget"
    );
    assert_eq!(
        opened_window(&second).origins,
        vec!["cloudwatch".to_owned(), "prometheus".to_owned()]
    );

    // The same origin again inside the window is a plain duplicate.
    let state = StepState {
        dedup: Some(opened_window(&second)),
        ..Default::default()
    };
    let third_ev = event("orders-db", "cloudwatch", "fp-db", AlertStatus::Firing);
    assert!(matches!(
        precheck(&state, &third_ev, now + Duration::minutes(1)),
        Precheck::Duplicate { .. }
    ));
}

// ---- property: dedup windows, buckets and the breaker over random timelines,
// ---- with a restart (state serialized as stored, then reloaded) anywhere ----

/// One generated event: which fingerprint (and so service and team), impact,
/// origin, whether it resolves, and the time step before it.
#[derive(Debug, Clone)]
struct TimelineEvent {
    fp: usize,
    impact: ImpactLevel,
    origin: usize,
    resolved: bool,
    step_secs: i64,
}

const SERVICES: [(&str, &str); 6] = [
    ("checkout", "payments"),
    ("payments-api", "payments"),
    ("orders-db", "dba"),
    ("ledger", "dba"),
    ("search", "search"),
    ("indexer", "search"),
];
const ORIGINS: [&str; 3] = ["prometheus", "cloudwatch", "apm"];

fn timeline_event() -> impl Strategy<Value = TimelineEvent> {
    (
        0usize..12,
        prop::sample::select(vec![
            ImpactLevel::Medium,
            ImpactLevel::High,
            ImpactLevel::Critical,
        ]),
        0usize..ORIGINS.len(),
        prop::bool::weighted(0.12),
        prop::sample::select(vec![0i64, 1, 5, 30, 90, 300, 900]),
    )
        .prop_map(|(fp, impact, origin, resolved, step_secs)| TimelineEvent {
            fp,
            impact,
            origin,
            resolved,
            step_secs,
        })
}

fn prop_fixture() -> Fixture {
    let mut c = Catalog::default();
    for team in ["payments", "dba", "search"] {
        c.teams.insert(team.into(), TeamEntry::default());
    }
    for (svc, team) in SERVICES {
        c.services
            .insert(svc.into(), service(team, AutonomyLevel::Mim));
    }
    let gates = Gates::with_default_policy(&c).unwrap();
    // Small budgets and a low breaker threshold, so every limit is actually reached.
    let mut settings = StormSettings {
        team_bucket: BucketConfig {
            burst: 2,
            per_hour: 6,
        },
        global_bucket: BucketConfig {
            burst: 4,
            per_hour: 12,
        },
        service_bucket: BucketConfig {
            burst: 1,
            per_hour: 4,
        },
        ..StormSettings::default()
    };
    settings.service_buckets.insert(
        "orders-db".into(),
        BucketConfig {
            burst: 2,
            per_hour: 2,
        },
    );
    settings.breaker = tg_storm::BreakerConfig {
        open_services: 3,
        open_catalog_percent: None,
        close_services: 1,
        cooldown: Duration::seconds(600),
        window: Duration::seconds(300),
    };
    Fixture {
        catalog: c,
        gates,
        settings,
    }
}

/// What a run of a timeline produced, for comparing runs.
#[derive(Debug, Default, PartialEq)]
struct Outcomes {
    decisions: Vec<String>,
    final_state: Sim,
}

/// Runs the timeline; when `restart_at` is set, the state is serialized (as the
/// store keeps it) and reloaded before that event. Checks the invariants on the way.
fn run_timeline(
    f: &Fixture,
    events: &[TimelineEvent],
    restart_at: Option<usize>,
) -> Result<Outcomes, TestCaseError> {
    let mut sim = Sim::default();
    let mut now = t0();
    let mut out_all = Outcomes::default();
    // A ticket is open until the source resolves the alert or its window
    // lapses; a non-duplicate event inside the window (escalation, new origin)
    // re-opens the window and keeps the ticket.
    let mut open_ticket: HashMap<usize, (String, DateTime<Utc>)> = HashMap::new();
    let window = f.settings.dedup_window;
    let mut resolved_last: HashMap<usize, bool> = HashMap::new();
    let mut pages: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    let mut umbrella_tickets: BTreeMap<String, usize> = BTreeMap::new();
    for (n, e) in events.iter().enumerate() {
        if restart_at == Some(n) {
            let stored = serde_json::to_string(&sim).unwrap();
            sim = serde_json::from_str(&stored).unwrap();
        }
        now += Duration::seconds(e.step_secs);
        let (svc, team) = SERVICES[e.fp % SERVICES.len()];
        let status = if e.resolved {
            AlertStatus::Resolved
        } else {
            AlertStatus::Firing
        };
        let mut ev = event(svc, ORIGINS[e.origin], &format!("fp-{}", e.fp), status);
        ev.impact.level = e.impact;
        let c = mim_worthy(team);
        let state = sim.state_for(&ev, team);
        let classification = match precheck(&state, &ev, now) {
            Precheck::Classify => Some(Ok(&c)),
            Precheck::Duplicate { .. } | Precheck::Resolved => None,
        };
        let run_id = RunId(format!("run_{n}"));
        let corr = CorrelationId(format!("corr_{n}"));
        let out = step(
            &f.gates,
            &f.catalog,
            &f.settings,
            &state,
            StepInput {
                run_id: &run_id,
                correlation_id: &corr,
                event: &ev,
                classification,
            },
            now,
        );
        sim.apply(&out.effects);
        out_all
            .decisions
            .push(serde_json::to_string(&out.decision).unwrap());

        if e.resolved {
            open_ticket.remove(&e.fp);
            resolved_last.insert(e.fp, true);
            continue;
        }
        // Resolved closes: the first firing event after a resolution is never a duplicate.
        if resolved_last.remove(&e.fp) == Some(true) {
            prop_assert!(
                out.decision.duplicate_of.is_none(),
                "fp-{} after its resolution",
                e.fp
            );
        }
        open_ticket.retain(|_, (_, until)| now < *until);
        let breaker_open = sim.breakers.get("production").is_some_and(|b| b.open);
        for p in out.planned.iter().filter(|p| p.outcome == Outcome::Execute) {
            match p.action.kind {
                ActionKind::Ticket if p.action.service.starts_with("storm:") => {
                    *umbrella_tickets
                        .entry(p.action.dedup_key.clone())
                        .or_default() += 1;
                }
                ActionKind::Ticket => {
                    // INVARIANT: a fingerprint never has two open tickets.
                    prop_assert!(
                        !open_ticket.contains_key(&e.fp),
                        "fp-{} got a ticket in run {} while run {}'s is open",
                        e.fp,
                        run_id,
                        open_ticket[&e.fp].0
                    );
                    open_ticket.insert(e.fp, (run_id.to_string(), now + window));
                }
                ActionKind::Page => {
                    // INVARIANT: no individual page while the breaker is open
                    // (after this event: the event that closes it may page).
                    prop_assert!(!breaker_open, "page at {} in storm mode", now);
                    for key in [
                        service_bucket_key(svc),
                        team_bucket_key(team),
                        GLOBAL_BUCKET.to_owned(),
                    ] {
                        pages.entry(key).or_default().push(now);
                    }
                }
                ActionKind::Mim => {}
            }
        }
        // The umbrella's ticket counts as the fingerprint's open ticket.
        if out.planned.iter().any(|p| {
            p.outcome == Outcome::Execute
                && p.action.kind == ActionKind::Ticket
                && p.action.service.starts_with("storm:")
        }) {
            prop_assert!(
                !open_ticket.contains_key(&e.fp),
                "umbrella carried by fp-{} with an open ticket",
                e.fp
            );
            open_ticket.insert(e.fp, (run_id.to_string(), now + window));
        }
        if out.decision.duplicate_of.is_none()
            && let Some((_, until)) = open_ticket.get_mut(&e.fp)
        {
            *until = now + window;
        }
    }
    // INVARIANT: pages per bucket never exceed burst + refill * t, for every interval.
    for (key, times) in &pages {
        let cfg = if key == GLOBAL_BUCKET {
            f.settings.global_bucket
        } else if let Some(svc) = key.strip_prefix("page:service:") {
            f.settings.service_bucket_for(svc)
        } else {
            f.settings.team_bucket
        };
        assert_within_budget(times, cfg, key);
    }
    // INVARIANT: one umbrella ticket per storm.
    for (storm, n) in &umbrella_tickets {
        prop_assert_eq!(*n, 1, "storm {} has {} umbrella tickets", storm, n);
    }
    out_all.final_state = sim;
    Ok(out_all)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn windows_buckets_and_breaker_hold_for_any_timeline_and_any_restart_point(
        events in prop::collection::vec(timeline_event(), 1..80),
        restart in any::<prop::sample::Index>(),
    ) {
        let f = prop_fixture();
        let straight = run_timeline(&f, &events, None)?;
        let at = restart.index(events.len());
        let restarted = run_timeline(&f, &events, Some(at))?;
        // INVARIANT: a restart (state stored and reloaded) changes nothing.
        prop_assert_eq!(&straight.decisions, &restarted.decisions, "restart before event {}", at);
        prop_assert_eq!(&straight.final_state, &restarted.final_state);
    }
}

#[test]
fn the_breaker_opens_holds_pages_carries_one_umbrella_and_closes() {
    let f = prop_fixture();
    let mut mem = MemState::default();
    // Four distinct services within the window (threshold 3), then quiet, then one service.
    let plan: [(usize, i64); 7] = [
        (0, 0),
        (2, 10),
        (4, 10),
        (1, 10),
        (3, 10),
        (0, 2000),
        (2, 10),
    ];
    let mut secs = 0;
    let timeline: Vec<At> = plan
        .into_iter()
        .enumerate()
        .map(|(n, (fp, step_secs))| {
            secs += step_secs;
            let (svc, team) = SERVICES[fp];
            At {
                at: Duration::seconds(secs),
                run: format!("run_{n}"),
                event: event(
                    svc,
                    ORIGINS[n % ORIGINS.len()],
                    &format!("fp-{fp}-{n}"),
                    AlertStatus::Firing,
                ),
                answer: Some(page_worthy(team)),
            }
        })
        .collect();
    let outs = check_in(
        &f,
        &mut mem,
        &timeline,
        &[
            "ticket=execute page=execute",
            "-",
            "-",
            // The fourth service opens the breaker: its page is held, its
            // ticket becomes the storm's umbrella ticket.
            "page=suppressed ticket=execute",
            // The next service's ticket is carried by the umbrella.
            "page=suppressed ticket=suppressed",
            // Long quiet: the breaker closes and pages flow again.
            "page=execute",
            "-",
        ],
    );
    // The fourth service opens it.
    let opened = &outs[3];
    assert!(opened.effects.iter().any(|e| matches!(e,
        Effect::BreakerTransition { transition, .. } if transition.to == tg_storm::BreakerPosition::Open
            && transition.services == 4 && transition.threshold == 3)));
    let page = opened.decision.get(ActionKind::Page).unwrap();
    assert_eq!(page.outcome, Outcome::Suppressed);
    let cond = page
        .conditions
        .iter()
        .find(|c| c.id == "storm.breaker")
        .unwrap();
    assert!(!cond.passed);
    assert!(cond.actual.contains("4 services"), "{}", cond.actual);
    assert!(
        cond.threshold.starts_with("<= 3 services"),
        "{}",
        cond.threshold
    );
    assert!(
        opened
            .effects
            .iter()
            .any(|e| matches!(e, Effect::HoldPage(h) if h.reason == HoldReason::Breaker))
    );
    // The same run carries the umbrella ticket, for the synthetic service.
    let umbrella = opened
        .planned
        .iter()
        .find(|p| p.action.kind == ActionKind::Ticket)
        .unwrap();
    assert_eq!(umbrella.outcome, Outcome::Execute);
    assert_eq!(umbrella.action.service, "storm:production");
    assert!(
        umbrella
            .action
            .dedup_key
            .starts_with("tg:storm:production:")
    );
    // The next service's ticket is carried by it, not opened.
    let carried = outs[4].decision.get(ActionKind::Ticket).unwrap();
    assert_eq!(carried.outcome, Outcome::Suppressed);
    assert!(carried.reason.contains("run_3"), "{}", carried.reason);
    assert!(
        outs[4]
            .planned
            .iter()
            .all(|p| p.action.kind != ActionKind::Ticket)
    );
    // Long quiet: the next event closes it (only one service in the window, for longer than the cool-down).
    assert!(outs[5].effects.iter().any(|e| matches!(e,
        Effect::BreakerTransition { transition, .. } if transition.to == tg_storm::BreakerPosition::Closed)));
    assert_eq!(
        outs[5].decision.outcome(ActionKind::Page),
        Some(Outcome::Execute)
    );
    // Storm mode is per environment: a staging breaker is another row.
    assert_eq!(mem.breakers.len(), 1);
    assert!(mem.breakers.contains_key("production"));
}

#[test]
fn in_storm_mode_the_mim_gate_is_evaluated_for_the_umbrella_with_the_storms_origins() {
    let f = prop_fixture();
    let mut sim = Sim::default();
    let now = t0();
    let mut last = None;
    for (n, (svc, team)) in SERVICES.iter().take(5).enumerate() {
        let ev = event(
            svc,
            ORIGINS[n % ORIGINS.len()],
            &format!("fp-{n}"),
            AlertStatus::Firing,
        );
        let c = mim_worthy(team);
        let state = sim.state_for(&ev, team);
        let run_id = RunId(format!("run_{n}"));
        let corr = CorrelationId(format!("corr_{n}"));
        // Each service alone has one origin: no service MIM before the storm.
        let out = step(
            &f.gates,
            &f.catalog,
            &f.settings,
            &state,
            StepInput {
                run_id: &run_id,
                correlation_id: &corr,
                event: &ev,
                classification: Some(Ok(&c)),
            },
            now + Duration::seconds(i64::try_from(n).unwrap()),
        );
        sim.apply(&out.effects);
        last = Some(out);
    }
    let out = last.unwrap();
    // Opened at the fourth event (origin prometheus); the fifth adds cloudwatch: two storm origins.
    let mim = out.decision.get(ActionKind::Mim).unwrap();
    assert_eq!(mim.outcome, Outcome::Execute, "{mim:?}");
    assert!(
        mim.conditions
            .iter()
            .any(|c| c.id == "storm.umbrella" && c.actual.starts_with("storm:production"))
    );
    let signals = mim
        .conditions
        .iter()
        .find(|c| c.id == "mim.signals")
        .unwrap();
    assert!(
        signals.actual.contains("cloudwatch") && signals.actual.contains("prometheus"),
        "{}",
        signals.actual
    );
    let planned = out
        .planned
        .iter()
        .find(|p| p.action.kind == ActionKind::Mim)
        .unwrap();
    assert_eq!(planned.action.service, "storm:production");
    assert!(
        out.effects
            .iter()
            .any(|e| matches!(e, Effect::OpenMim { service, .. } if service == "storm:production"))
    );
}

// ---- grouping and resolution ----

fn run_as(
    f: &Fixture,
    state: &StepState,
    run_id: &str,
    event: &NormalizedEvent,
    classification: Option<&Classification>,
    now: DateTime<Utc>,
) -> StepOutput {
    let run_id = RunId(run_id.into());
    let corr = CorrelationId("corr_test".into());
    step(
        &f.gates,
        &f.catalog,
        &f.settings,
        state,
        StepInput {
            run_id: &run_id,
            correlation_id: &corr,
            event,
            classification: classification.map(Ok),
        },
        now,
    )
}

fn group_of(out: &StepOutput) -> GroupEntry {
    out.effects
        .iter()
        .find_map(|e| match e {
            Effect::PutGroup(g) => Some(g.clone()),
            _ => None,
        })
        .expect("a group effect")
}

/// One event of a timeline: when (after [`t0`]), its run, the event and the
/// model's answer (`None`: no model was asked).
struct At {
    at: Duration,
    run: String,
    event: NormalizedEvent,
    answer: Option<Classification>,
}

/// A `checkout` alert from prometheus with fingerprint `fp`, `minute`
/// minutes after [`t0`]; a firing one is answered page-worthy for its
/// owner, `payments`.
fn at(minute: i64, run: &str, fp: &str, status: AlertStatus) -> At {
    At {
        at: Duration::minutes(minute),
        run: run.to_owned(),
        event: event("checkout", "prometheus", fp, status),
        answer: (status == AlertStatus::Firing).then(|| page_worthy("payments")),
    }
}

/// [`check_in`] from an empty state.
fn check(f: &Fixture, timeline: &[At], expect: &[&str]) -> Vec<StepOutput> {
    check_in(f, &mut MemState::default(), timeline, expect)
}

/// Decides `timeline` in order through [`decide_wave`] over `mem` (one wave
/// per event: each run sees what the one before it left), and checks each
/// decision against its line of `expect`: space-separated `action=outcome`
/// or `action=outcome/op` (`ticket=execute/update page=suppressed`); an
/// action not named is not checked, `-` checks nothing. Returns the
/// outputs, for what a line cannot say; `mem` is the state after.
fn check_in(f: &Fixture, mem: &mut MemState, timeline: &[At], expect: &[&str]) -> Vec<StepOutput> {
    assert_eq!(timeline.len(), expect.len(), "one expectation per event");
    let policy = Policy {
        gates: &f.gates,
        catalog: &f.catalog,
        settings: &f.settings,
    };
    let corr = CorrelationId("corr_test".into());
    let mut outs = Vec::with_capacity(timeline.len());
    for (i, (step, line)) in timeline.iter().zip(expect).enumerate() {
        let run_id = RunId(step.run.clone());
        let r = reads(&step.event, step.answer.as_ref(), &f.settings, &f.catalog);
        let run = WaveRun {
            reads: &r,
            run_id: &run_id,
            correlation_id: &corr,
            event: &step.event,
            classification: step.answer.as_ref().map(Ok),
        };
        let now = t0() + step.at;
        let out = decide_wave(mem, policy, &[run], now).remove(0);
        mem.take_touched();
        let got: Vec<String> = out
            .decision
            .actions
            .iter()
            .map(|a| {
                format!(
                    "{}={}/{}",
                    a.action.as_str(),
                    a.outcome.as_str(),
                    a.op.as_str()
                )
            })
            .collect();
        for want in line.split_whitespace().filter(|w| *w != "-") {
            let ok = got
                .iter()
                .any(|g| g == want || (!want.contains('/') && g.split('/').next() == Some(want)));
            assert!(
                ok,
                "event {i} ({}, at {}s): expected {want}, got {got:?}\n{:#?}",
                step.run,
                step.at.num_seconds(),
                out.decision
            );
        }
        outs.push(out);
    }
    outs
}

#[test]
fn a_related_alert_adds_a_work_note_to_the_groups_ticket_instead_of_a_second_ticket() {
    let f = fixture();
    let outs = check(
        &f,
        &[
            at(0, "run_a", "fp-a", AlertStatus::Firing),
            at(2, "run_b", "fp-b", AlertStatus::Firing),
        ],
        &[
            "ticket=execute/create page=execute/create",
            // One ticket per group, and the group's page covers the related alert.
            "ticket=execute/update page=suppressed",
        ],
    );
    let (a, b) = (&outs[0], &outs[1]);
    assert_eq!(
        a.decision.group.as_deref(),
        Some("environment=production,service=checkout")
    );

    let t = b.decision.get(ActionKind::Ticket).unwrap();
    assert_eq!((t.outcome, t.op), (Outcome::Execute, ActionOp::Update));
    assert!(!b.decision.creates(ActionKind::Ticket));
    let note = condition(b, ActionKind::Ticket, "ticket.group");
    assert!(note.passed);
    assert!(note.actual.contains("run_a"), "{}", note.actual);
    let planned = b
        .planned
        .iter()
        .find(|p| p.action.kind == ActionKind::Ticket)
        .unwrap();
    assert_eq!(planned.action.op, ActionOp::Update);
    assert_eq!(
        planned.action.parent_key.as_deref(),
        Some("tg:run_a:ticket")
    );
    assert_eq!(planned.action.idempotency_key, "tg:run_b:ticket");
    assert!(planned.action.details.contains("New alert in"));

    // The group's page covers the related alert.
    let p = b.decision.get(ActionKind::Page).unwrap();
    assert_eq!(p.outcome, Outcome::Suppressed);
    assert!(!condition(b, ActionKind::Page, "page.group").passed);
    assert!(b.planned.iter().all(|p| p.action.kind != ActionKind::Page));
    assert_eq!(group_of(b).notes, 1);
    assert_eq!(group_of(b).members.len(), 2);
}

#[test]
fn the_group_resolves_its_page_once_when_its_last_alert_resolves() {
    let f = fixture();
    let outs = check(
        &f,
        &[
            at(0, "run_a", "fp-a", AlertStatus::Firing),
            at(1, "run_b", "fp-b", AlertStatus::Firing),
            at(5, "run_ra", "fp-a", AlertStatus::Resolved),
            at(6, "run_rb", "fp-b", AlertStatus::Resolved),
            at(7, "run_rb2", "fp-b", AlertStatus::Resolved),
        ],
        &[
            "page=execute",
            "page=suppressed",
            "page=skip/create",
            "page=execute/resolve ticket=skip/resolve",
            "page=skip/create",
        ],
    );
    assert!(outs[2].planned.is_empty(), "fp-b still fires");
    let last = &outs[3];
    assert_eq!(last.planned.len(), 1, "{:?}", last.planned);
    let page = &last.planned[0].action;
    assert_eq!((page.kind, page.op), (ActionKind::Page, ActionOp::Resolve));
    assert_eq!(
        page.dedup_key, "tg:fp-a",
        "the dedup key the page was sent with"
    );
    assert_eq!(
        page.team, "payments",
        "the routing key the page went through"
    );
    assert_eq!(page.parent_key.as_deref(), Some("tg:run_a:page"));
    assert_eq!(page.idempotency_key, "tg:run_rb:page");
    assert!(condition(last, ActionKind::Page, "group.resolved").passed);
    // The ticket is left to people unless actions.resolve.ticket is on.
    let t = last.decision.get(ActionKind::Ticket).unwrap();
    assert_eq!(t.outcome, Outcome::Skip);
    assert!(!condition(last, ActionKind::Ticket, "resolve.enabled").passed);
    assert!(group_of(last).resolved);
    // A repeated resolution resolves nothing again.
    assert!(outs[4].planned.is_empty());
}

#[test]
fn with_resolve_ticket_on_the_ticket_is_resolved_and_a_refire_opens_a_new_one() {
    let mut f = fixture();
    f.settings.resolve.ticket = true;
    let outs = check(
        &f,
        &[
            at(0, "run_a", "fp-a", AlertStatus::Firing),
            at(3, "run_ra", "fp-a", AlertStatus::Resolved),
            at(4, "run_a2", "fp-a", AlertStatus::Firing),
        ],
        &[
            "ticket=execute page=execute",
            "ticket=execute/resolve page=execute/resolve",
            // The ticket was resolved remotely: a new one; the page stays damped.
            "ticket=execute/create page=review",
        ],
    );
    let kinds: Vec<_> = outs[1]
        .planned
        .iter()
        .map(|p| (p.action.kind, p.action.op, p.action.parent_key.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                ActionKind::Ticket,
                ActionOp::Resolve,
                Some("tg:run_a:ticket".into())
            ),
            (
                ActionKind::Page,
                ActionOp::Resolve,
                Some("tg:run_a:page".into())
            ),
        ]
    );
    // The ticket was resolved remotely, so the re-fire gets a new one (the page stays damped).
    assert!(outs[2].decision.creates(ActionKind::Ticket));
    assert!(!outs[2].decision.creates(ActionKind::Page));
}

#[test]
fn a_group_takes_at_most_notes_max_work_notes() {
    let mut f = fixture();
    f.settings.group.notes_max = 1;
    let outs = check(
        &f,
        &[
            at(0, "run_a", "fp-a", AlertStatus::Firing),
            at(1, "run_b", "fp-b", AlertStatus::Firing),
            at(2, "run_c", "fp-c", AlertStatus::Firing),
        ],
        &[
            "ticket=execute/create",
            "ticket=execute/update",
            "ticket=suppressed",
        ],
    );
    assert!(!condition(&outs[2], ActionKind::Ticket, "ticket.group").passed);
    assert!(
        outs[2]
            .planned
            .iter()
            .all(|p| p.action.kind != ActionKind::Ticket)
    );
}

#[test]
fn an_idle_group_closes_after_its_window_and_the_next_alert_opens_a_new_ticket() {
    let f = fixture();
    let window = f.settings.group.window.num_minutes();
    check(
        &f,
        &[
            at(0, "run_a", "fp-a", AlertStatus::Firing),
            at(window + 1, "run_b", "fp-b", AlertStatus::Firing),
        ],
        &["ticket=execute/create", "ticket=execute/create"],
    );
}

#[test]
fn without_group_by_each_fingerprint_is_its_own_incident() {
    let mut f = fixture();
    f.settings.group.by.clear();
    let outs = check(
        &f,
        &[
            at(0, "run_a", "fp-a", AlertStatus::Firing),
            at(1, "run_b", "fp-b", AlertStatus::Firing),
        ],
        &["ticket=execute/create", "ticket=execute/create"],
    );
    assert_eq!(outs[1].decision.group, None);
    assert!(
        outs[1]
            .effects
            .iter()
            .all(|e| !matches!(e, Effect::PutGroup(_)))
    );
}

#[test]
fn the_group_key_names_environment_and_fields_and_hashes_when_long() {
    let mut ev = firing("checkout");
    ev.labels.insert("cluster".into(), "eu-1".into());
    let s = GroupSettings {
        by: vec![
            GroupField::parse("service").unwrap(),
            GroupField::parse("label:cluster").unwrap(),
            GroupField::parse("correlation:trace_id").unwrap(),
        ],
        ..GroupSettings::default()
    };
    assert_eq!(
        group_key(&s, &ev).unwrap(),
        "environment=production,service=checkout,label:cluster=eu-1,correlation:trace_id="
    );
    ev.labels.insert("cluster".into(), "x".repeat(400));
    let long = group_key(&s, &ev).unwrap();
    assert!(long.starts_with("sha256:") && long.len() == 71, "{long}");
    assert!(GroupField::parse("label:").is_err());
    assert!(GroupField::parse("severity").is_err());
}

#[test]
fn a_service_or_source_window_overrides_the_default_suppression_window() {
    let mut f = fixture();
    f.settings
        .dedup_service_windows
        .insert("checkout".into(), Duration::seconds(60));
    f.settings
        .dedup_source_windows
        .insert("generic".into(), Duration::seconds(3600));
    let ev = firing("checkout");
    assert_eq!(f.settings.dedup_window_for(&ev), Duration::seconds(60));
    let other = firing("orders-db");
    assert_eq!(f.settings.dedup_window_for(&other), Duration::seconds(3600));

    let mut sim = Sim::default();
    let answer = page_worthy("payments");
    let first = sim.decide(&f, "run_a", &ev, &answer, t0());
    assert_eq!(
        opened_window(&first).expires_at,
        t0() + Duration::seconds(60)
    );
    // Two minutes later the checkout window (60 s) is over: not a duplicate.
    let later = t0() + Duration::minutes(2);
    let state = sim.state_for(&ev, "payments");
    assert_eq!(precheck(&state, &ev, later), Precheck::Classify);
    assert_eq!(
        precheck(&state, &ev, t0() + Duration::seconds(30)),
        Precheck::Duplicate {
            first_run_id: RunId("run_a".into())
        }
    );
}

#[test]
fn the_catalog_owner_is_routed_and_charged_never_the_models_team() {
    let f = fixture();
    let ev = firing("checkout");
    // The model names dba for checkout (owned by payments).
    let c = page_worthy("dba");
    let out = run(&f, &StepState::default(), &ev, Some(Ok(&c)), t0());
    let planned = |kind| {
        out.planned
            .iter()
            .find(|p| p.action.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} planned: {:?}", out.planned))
    };
    // The ticket goes to the owner, with the model's pick written in it.
    let ticket = planned(ActionKind::Ticket);
    assert_eq!(ticket.outcome, Outcome::Execute);
    assert_eq!(ticket.action.team, "payments");
    assert!(
        ticket
            .action
            .details
            .contains("model recommended team (not obeyed): dba"),
        "{}",
        ticket.action.details
    );
    // The page waits for a human, drafted for the owner, and spends no budget.
    let page = planned(ActionKind::Page);
    assert_eq!(page.outcome, Outcome::Review);
    assert_eq!(page.action.team, "payments");
    let team = condition(&out, ActionKind::Page, "page.team");
    assert!(!team.passed);
    assert_eq!(team.actual, "dba");
    assert_eq!(team.threshold, "== owner payments");
    assert!(buckets(&out).is_empty(), "{:?}", buckets(&out));

    // Naming the owner pages the owner and charges the owner's budget.
    let c = page_worthy("payments");
    let out = run(&f, &StepState::default(), &ev, Some(Ok(&c)), t0());
    assert_eq!(
        out.decision.get(ActionKind::Page).unwrap().outcome,
        Outcome::Execute
    );
    assert!(buckets(&out).contains_key("page:team:payments"));
}

#[test]
fn an_unlisted_service_without_a_default_team_routes_nothing_on_the_models_word() {
    let mut f = fixture();
    f.catalog.defaults.autonomy = AutonomyLevel::Paging;
    f.gates = Gates::with_default_policy(&f.catalog).unwrap();
    let ev = firing("stray");
    let c = page_worthy("dba");
    let out = run(&f, &StepState::default(), &ev, Some(Ok(&c)), t0());
    for kind in [ActionKind::Ticket, ActionKind::Page] {
        assert_eq!(
            out.decision.get(kind).unwrap().outcome,
            Outcome::Review,
            "{kind:?}"
        );
    }
    assert!(!condition(&out, ActionKind::Ticket, "ticket.owner").passed);

    // With defaults.team, that team owns strays.
    f.catalog.defaults.team = Some("search".into());
    f.gates = Gates::with_default_policy(&f.catalog).unwrap();
    let c = page_worthy("search");
    let out = run(&f, &StepState::default(), &ev, Some(Ok(&c)), t0());
    assert_eq!(
        out.decision.get(ActionKind::Page).unwrap().outcome,
        Outcome::Execute
    );
    assert!(buckets(&out).contains_key("page:team:search"));
}

#[test]
fn a_models_no_to_a_critical_production_event_goes_to_review_not_skip() {
    let f = fixture();
    let mut ev = firing("checkout");
    ev.impact.level = ImpactLevel::Critical;
    let c = Classification {
        classification: Severity::Sev1,
        confidence: 0.99,
        requires_ticket: false,
        requires_paging: false,
        requires_mim: false,
        recommended_team: "payments".into(),
        rationale: None,
    };
    let out = run(&f, &StepState::default(), &ev, Some(Ok(&c)), t0());
    for (kind, id) in [
        (ActionKind::Ticket, "ticket.model_declined"),
        (ActionKind::Page, "page.model_declined"),
    ] {
        let d = out.decision.get(kind).unwrap();
        assert_eq!(d.outcome, Outcome::Review, "{kind:?}: {d:?}");
        assert!(!d.requested);
        let cond = condition(&out, kind, id);
        assert!(!cond.passed);
        assert_eq!(cond.actual, "critical");
        // Drafted for a human, to the owner.
        assert!(
            out.planned.iter().any(|p| p.action.kind == kind
                && p.outcome == Outcome::Review
                && p.action.team == "payments"),
            "{kind:?}: {:?}",
            out.planned
        );
    }
    // Where the source itself is not severe, the model may decline.
    ev.impact.level = ImpactLevel::High;
    let out = run(&f, &StepState::default(), &ev, Some(Ok(&c)), t0());
    assert_eq!(
        out.decision.get(ActionKind::Ticket).unwrap().outcome,
        Outcome::Skip
    );
    assert!(out.planned.is_empty());
}

// ---- approval: the decision's rules, at approval time (issue 20 item 5) ----

/// A draft that goes to review: low confidence for everything the model asked.
fn doubtful(team: &str) -> Classification {
    Classification {
        confidence: 0.30,
        ..mim_worthy(team)
    }
}

fn draft(out: &StepOutput, kind: ActionKind) -> PlannedAction {
    out.planned
        .iter()
        .find(|p| p.action.kind == kind && p.outcome == Outcome::Review)
        .unwrap_or_else(|| panic!("no {kind:?} draft in {:?}", out.planned))
        .action
        .clone()
}

fn approve_in(
    f: &Fixture,
    sim: &Sim,
    ev: &NormalizedEvent,
    planned: &PlannedAction,
    group: Option<&str>,
    now: DateTime<Utc>,
) -> Approved {
    let state = sim.state_for(ev, &planned.team);
    approve(
        &f.catalog,
        &f.settings,
        &state,
        Approval {
            planned,
            group,
            open_create: None,
        },
        now,
    )
}

fn approval_condition<'a>(a: &'a Approved, id: &str) -> &'a Condition {
    a.conditions
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no condition {id}: {:?}", a.conditions))
}

impl Sim {
    /// Decides `ev` as run `run` on this in-memory state and applies the effects.
    fn decide(
        &mut self,
        f: &Fixture,
        run: &str,
        ev: &NormalizedEvent,
        c: &Classification,
        now: DateTime<Utc>,
    ) -> StepOutput {
        let state = self.state_for(ev, &c.recommended_team);
        let out = run_as(f, &state, run, ev, Some(c), now);
        self.apply(&out.effects);
        out
    }
}

#[test]
fn an_approved_page_for_a_paged_group_is_refused_and_its_ticket_becomes_a_work_note() {
    let f = fixture();
    let mut sim = Sim::default();
    // run_b's alert is drafted (low confidence), then run_a, in the same group, acts.
    let ev_b = event("checkout", "prometheus", "fp-b", AlertStatus::Firing);
    let b = sim.decide(&f, "run_b", &ev_b, &doubtful("payments"), t0());
    let ev_a = event("checkout", "prometheus", "fp-a", AlertStatus::Firing);
    let at = t0() + Duration::minutes(1);
    let a = sim.decide(&f, "run_a", &ev_a, &page_worthy("payments"), at);
    assert!(a.decision.creates(ActionKind::Page) && a.decision.creates(ActionKind::Ticket));
    let group = b.decision.group.clone().unwrap();
    let now = at + Duration::minutes(1);

    let page = approve_in(
        &f,
        &sim,
        &ev_b,
        &draft(&b, ActionKind::Page),
        Some(&group),
        now,
    );
    assert!(!page.allowed, "{:?}", page.conditions);
    let c = approval_condition(&page, "page.group");
    assert!(!c.passed && c.actual.contains("run_a"), "{c:?}");
    assert!(page.effects.is_empty(), "a refusal changes nothing");

    let ticket = approve_in(
        &f,
        &sim,
        &ev_b,
        &draft(&b, ActionKind::Ticket),
        Some(&group),
        now,
    );
    assert!(ticket.allowed, "{:?}", ticket.conditions);
    assert_eq!(ticket.action.op, ActionOp::Update);
    assert_eq!(ticket.action.parent_key.as_deref(), Some("tg:run_a:ticket"));
    assert_eq!(ticket.action.idempotency_key, "tg:run_b:ticket");
    assert!(approval_condition(&ticket, "ticket.group").passed);
    let noted = ticket
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::PutGroup(g) => Some(g.notes),
            _ => None,
        })
        .expect("the group counts the note");
    assert_eq!(noted, 1);
}

#[test]
fn an_approved_mim_is_refused_while_one_is_open_for_the_service() {
    let f = fixture();
    let mut sim = Sim::default();
    let ev = event("orders-db", "cloudwatch", "fp-1", AlertStatus::Firing);
    let held = sim.decide(&f, "run_held", &ev, &doubtful("dba"), t0());
    let planned = draft(&held, ActionKind::Mim);
    // Nothing open: the approval opens the MIM.
    let now = t0() + Duration::minutes(1);
    let ok = approve_in(&f, &sim, &ev, &planned, None, now);
    assert!(ok.allowed, "{:?}", ok.conditions);
    assert!(
        ok.effects
            .iter()
            .any(|e| matches!(e, Effect::OpenMim { run_id, .. } if run_id.as_str() == "run_held"))
    );
    // Another run opened one meanwhile: refused, and the condition names it.
    sim.mims.insert(
        "orders-db".into(),
        (RunId("run_other".into()), now + Duration::hours(4)),
    );
    let refused = approve_in(&f, &sim, &ev, &planned, None, now);
    assert!(!refused.allowed);
    let c = approval_condition(&refused, "mim.not_open");
    assert!(!c.passed && c.actual.contains("run_other"), "{c:?}");
    assert!(refused.effects.is_empty());
}

#[test]
fn an_approved_page_takes_a_token_of_each_budget_or_is_refused_naming_the_empty_one() {
    let mut f = fixture();
    f.settings.team_bucket = BucketConfig {
        burst: 1,
        per_hour: 1,
    };
    let mut sim = Sim::default();
    let ev = firing("checkout");
    let out = sim.decide(&f, "run_test", &ev, &doubtful("payments"), t0());
    let planned = draft(&out, ActionKind::Page);
    let ok = approve_in(&f, &sim, &ev, &planned, out.decision.group.as_deref(), t0());
    assert!(ok.allowed, "{:?}", ok.conditions);
    let taken: Vec<&str> = ok
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::PutBucket { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        taken,
        ["page:service:checkout", "page:team:payments", "page:global"]
    );
    sim.apply(&ok.effects);
    // The window now records the page: a second approval is refused by page.open.
    let again = approve_in(&f, &sim, &ev, &planned, out.decision.group.as_deref(), t0());
    assert!(!again.allowed);
    assert!(!approval_condition(&again, "page.open").passed);
    assert!(!approval_condition(&again, "review.rate:page:team:payments").passed);
}

#[test]
fn an_approval_for_a_paused_service_is_refused_by_the_autonomy_condition() {
    let mut f = fixture();
    let mut sim = Sim::default();
    let ev = firing("checkout");
    let out = sim.decide(&f, "run_test", &ev, &doubtful("payments"), t0());
    let planned = draft(&out, ActionKind::Ticket);
    if let Some(s) = f.catalog.services.get_mut("checkout") {
        s.paused = true;
    }
    let refused = approve_in(&f, &sim, &ev, &planned, None, t0());
    assert!(!refused.allowed);
    let c = approval_condition(&refused, "review.autonomy");
    assert!(!c.passed && c.actual.contains("paused"), "{c:?}");
}

// ---- independent signals (issue 20 item 3) ----

fn sent_by(sender: &str, origin: &str) -> NormalizedEvent {
    NormalizedEvent {
        sender: Some(sender.into()),
        ..event("orders-db", origin, "fp-db", AlertStatus::Firing)
    }
}

fn earlier(sender: &str, origin: &str) -> Signal {
    Signal {
        sender: sender.into(),
        origin: origin.into(),
        seen_at: t0() - Duration::minutes(1),
    }
}

#[test]
fn one_sender_claiming_two_origins_is_one_signal() {
    let f = fixture();
    let state = StepState {
        signals: vec![earlier("jwt:relay", "prometheus")],
        ..Default::default()
    };
    let ev = sent_by("jwt:relay", "cloudwatch");
    let out = run(&f, &state, &ev, Some(Ok(&mim_worthy("dba"))), t0());
    assert_eq!(out.decision.outcome(ActionKind::Mim), Some(Outcome::Review));
    let c = condition(&out, ActionKind::Mim, "mim.signals");
    assert!(!c.passed);
    assert!(
        c.actual.starts_with("1 (jwt:relay (cloudwatch))"),
        "{}",
        c.actual
    );
    assert!(!c.actual.contains("not verified"), "{}", c.actual);
}

#[test]
fn two_verified_senders_are_two_signals() {
    let f = fixture();
    let state = StepState {
        signals: vec![earlier("jwt:prom", "prometheus")],
        ..Default::default()
    };
    let ev = sent_by("jwt:cw", "cloudwatch");
    let out = run(&f, &state, &ev, Some(Ok(&mim_worthy("dba"))), t0());
    assert_eq!(
        out.decision.outcome(ActionKind::Mim),
        Some(Outcome::Execute)
    );
    let c = condition(&out, ActionKind::Mim, "mim.signals");
    assert_eq!(c.actual, "2 (jwt:cw (cloudwatch), jwt:prom (prometheus))");
}

#[test]
fn unverified_senders_count_by_origin_and_the_mim_gate_says_so() {
    let f = fixture();
    let state = StepState {
        signals: vec![earlier("unverified:prometheus", "prometheus")],
        ..Default::default()
    };
    let ev = event("orders-db", "cloudwatch", "fp-db", AlertStatus::Firing);
    let out = run(&f, &state, &ev, Some(Ok(&mim_worthy("dba"))), t0());
    let c = condition(&out, ActionKind::Mim, "mim.signals");
    assert!(c.passed, "{c:?}");
    assert!(
        c.actual.contains("independence is not vouched for"),
        "{}",
        c.actual
    );
}

#[test]
fn an_event_below_the_signal_impact_is_no_signal() {
    let f = fixture();
    let state = StepState {
        signals: vec![earlier("jwt:prom", "prometheus")],
        ..Default::default()
    };
    let mut ev = sent_by("jwt:cw", "cloudwatch");
    ev.impact.level = ImpactLevel::Medium;
    let out = run(&f, &state, &ev, Some(Ok(&mim_worthy("dba"))), t0());
    assert!(
        !out.effects
            .iter()
            .any(|e| matches!(e, Effect::RecordSignal { .. })),
        "a medium event is not recorded as a signal"
    );
    let c = condition(&out, ActionKind::Mim, "mim.signals");
    assert!(!c.passed && c.actual.starts_with("1 "), "{}", c.actual);
    // A source without a severity scale (a CloudWatch alarm) is not filtered.
    ev.impact.level = ImpactLevel::Unknown;
    let out = run(&f, &state, &ev, Some(Ok(&mim_worthy("dba"))), t0());
    assert!(condition(&out, ActionKind::Mim, "mim.signals").passed);
}

#[test]
fn an_approved_work_note_draft_is_added_to_the_groups_ticket() {
    let mut f = fixture();
    let mut sim = Sim::default();
    // run_a's ticket carries the group; then checkout drops to assist, and
    // run_b's related alert is drafted as a work note on run_a's ticket.
    let ev_a = event("checkout", "prometheus", "fp-a", AlertStatus::Firing);
    let a = sim.decide(&f, "run_a", &ev_a, &page_worthy("payments"), t0());
    assert!(a.decision.creates(ActionKind::Ticket));
    if let Some(s) = f.catalog.services.get_mut("checkout") {
        s.autonomy = AutonomyLevel::Assist;
    }
    let ev_b = event("checkout", "prometheus", "fp-b", AlertStatus::Firing);
    let at = t0() + Duration::minutes(1);
    let b = sim.decide(&f, "run_b", &ev_b, &page_worthy("payments"), at);
    let note = draft(&b, ActionKind::Ticket);
    assert_eq!(note.op, ActionOp::Update);
    let approved = approve_in(&f, &sim, &ev_b, &note, b.decision.group.as_deref(), at);
    assert!(approved.allowed, "{:?}", approved.conditions);
    assert_eq!(approved.action, note, "a drafted note is sent as drafted");
    assert!(approval_condition(&approved, "ticket.group").passed);
}

#[test]
fn an_action_says_which_alert_it_is_about_and_a_resolution_which_run_opened_it() {
    let f = fixture();
    let outs = check(
        &f,
        &[
            at(0, "run_a", "fp-a", AlertStatus::Firing),
            at(1, "run_ra", "fp-a", AlertStatus::Resolved),
        ],
        &["page=execute", "page=execute/resolve"],
    );
    let opened = &outs[0]
        .planned
        .iter()
        .find(|p| p.action.kind == ActionKind::Page)
        .unwrap()
        .action;
    assert!(
        opened.details.starts_with(
            "checkout errors\n\nservice: checkout\nenvironment: production\nalert: ErrorRate\n\
             source: generic (prometheus)\nclassification: high (confidence 0.90)\n"
        ),
        "{}",
        opened.details
    );
    let resolved = &outs[1].planned[0].action;
    assert!(
        resolved.details.starts_with(
            "Resolved by the source: checkout errors\n\nservice: checkout\nenvironment: production\n\
             alert: ErrorRate\nsource: generic (prometheus)\ngroup: environment=production,service=checkout (no alert firing)\n\
             opened by run: run_a\nresolved by run: run_ra\n"
        ),
        "{}",
        resolved.details
    );
}
