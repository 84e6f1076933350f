//! The storm rules: after the gates and the autonomy cap have judged an
//! action, these decide whether storm control lets it through, in this
//! order, each named. A rule adds the condition that explains it (value and
//! threshold) and may lower the outcome (execute -> review or suppressed),
//! hold a page back, or turn a ticket into a work note; none ever raises an
//! outcome. The table is the one place their order is written.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tg_model::{ActionKind, ActionOp, Condition, Outcome, RunId};
use tg_policy::ids;
use tg_storm::{BreakerState, DedupEntry, GroupEntry, GroupPage, Observation, Signal};

use crate::budgets::Tightest;
use crate::{HoldReason, StormSettings, group, window};

/// What every rule may read: the step's facts, fixed before the first action.
pub(crate) struct Ctx<'a> {
    pub settings: &'a StormSettings,
    pub dedup_window: chrono::Duration,
    pub tightest: &'a Tightest,
    /// The fingerprint was paged before it resolved, at this time.
    pub flap_hold: Option<DateTime<Utc>>,
    /// The fingerprint's page, sent at this time, is still open.
    pub page_open: Option<DateTime<Utc>>,
    /// The page that covers the open group.
    pub group_page: Option<&'a GroupPage>,
    /// The run whose ticket the open group has.
    pub group_ticket: Option<&'a RunId>,
    /// The run whose ticket is open for the fingerprint.
    pub open_ticket: Option<&'a RunId>,
    /// The breaker as a condition (passed while closed).
    pub storm_condition: Condition,
    /// The breaker after this event, before any action changed it.
    pub storm: &'a BreakerState,
    pub obs: &'a Observation,
    /// The environment's umbrella service (`storm:<environment>`).
    pub umbrella: &'a str,
    /// The run that carries the storm's umbrella ticket, before this step.
    pub umbrella_before: Option<RunId>,
    /// The independent signals, sender to origin.
    pub signals: &'a BTreeMap<String, String>,
}

/// What the step is building and a rule may change.
pub(crate) struct Draft {
    pub window: DedupEntry,
    pub group: Option<GroupEntry>,
    pub breaker: BreakerState,
}

/// One action's decision in the making.
#[derive(Debug, Clone)]
pub(crate) struct Working {
    pub action: ActionKind,
    /// Decided for the storm's umbrella incident rather than the event's service.
    pub for_umbrella: bool,
    /// The model asked for it, or its "no" went to review: a draft is made.
    pub wanted: bool,
    /// The gates' reason.
    pub gate_reason: String,
    pub outcome: Outcome,
    pub op: ActionOp,
    pub conditions: Vec<Condition>,
    /// Set when a storm rule overrides the gates' outcome: the reason given.
    pub reason: Option<String>,
    /// A page held back, and the limit that held it.
    pub held: Option<(HoldReason, String)>,
}

/// One named storm rule.
pub(crate) struct StormRule {
    pub name: &'static str,
    /// The action it judges; `None`: every action.
    pub action: Option<ActionKind>,
    pub apply: fn(&Ctx<'_>, &mut Draft, &mut Working),
}

/// The storm rules, in the order they apply.
pub(crate) const STORM_RULES: [StormRule; 10] = [
    StormRule {
        name: "page.rate",
        action: Some(ActionKind::Page),
        apply: page_rate,
    },
    StormRule {
        name: "page.flap",
        action: Some(ActionKind::Page),
        apply: page_flap,
    },
    StormRule {
        name: "page.open",
        action: Some(ActionKind::Page),
        apply: page_open,
    },
    StormRule {
        name: "page.group",
        action: Some(ActionKind::Page),
        apply: page_group,
    },
    StormRule {
        name: "storm.breaker",
        action: Some(ActionKind::Page),
        apply: page_breaker,
    },
    StormRule {
        name: "mim.signals",
        action: Some(ActionKind::Mim),
        apply: mim_signals,
    },
    StormRule {
        name: "storm.umbrella",
        action: None,
        apply: storm_umbrella,
    },
    StormRule {
        name: "ticket.umbrella",
        action: Some(ActionKind::Ticket),
        apply: ticket_umbrella,
    },
    StormRule {
        name: "ticket.open",
        action: Some(ActionKind::Ticket),
        apply: ticket_open,
    },
    StormRule {
        name: "ticket.group",
        action: Some(ActionKind::Ticket),
        apply: ticket_group,
    },
];

/// The storm rules' names, in the order they apply (docs/policy.md lists them).
pub fn storm_rule_names() -> impl Iterator<Item = &'static str> {
    STORM_RULES.iter().map(|r| r.name)
}

/// Applies every rule that judges `w.action`, in order.
pub(crate) fn apply(ctx: &Ctx<'_>, draft: &mut Draft, w: &mut Working) {
    for rule in &STORM_RULES {
        if rule.action.is_none_or(|a| a == w.action) {
            (rule.apply)(ctx, draft, w);
        }
    }
}

/// Names the bucket behind the page budget, so a refusal says which limit
/// held; a page the budget sent to review is held back.
fn page_rate(ctx: &Ctx<'_>, _: &mut Draft, w: &mut Working) {
    let Tightest { key, cfg, .. } = ctx.tightest;
    for c in w.conditions.iter_mut().filter(|c| c.id == ids::PAGE_RATE) {
        c.actual = format!("{} ({key})", c.actual);
        c.threshold = format!(
            "{} ({key}: burst {}, {}/h)",
            c.threshold, cfg.burst, cfg.per_hour
        );
        if !c.passed && w.outcome == Outcome::Review {
            w.held = Some((HoldReason::Rate, key.clone()));
            w.reason = Some(format!(
                "{}; limit {key} (burst {}, {}/h) is spent",
                w.gate_reason, cfg.burst, cfg.per_hour
            ));
        }
    }
}

/// A re-fire after a resolution does not page again inside the last page's window.
fn page_flap(ctx: &Ctx<'_>, _: &mut Draft, w: &mut Working) {
    let Some(paged_at) = ctx.flap_hold else {
        return;
    };
    w.conditions
        .push(window::page_flap_condition(paged_at, ctx.dedup_window));
    if w.outcome == Outcome::Execute {
        w.outcome = Outcome::Review;
        w.reason = Some(format!(
            "the alert flapped: it was paged within {}s before it resolved",
            ctx.dedup_window.num_seconds()
        ));
    }
}

/// A confirmation or an escalation inside an open window does not page again.
fn page_open(ctx: &Ctx<'_>, _: &mut Draft, w: &mut Working) {
    let Some(paged_at) = ctx.page_open else {
        return;
    };
    w.conditions
        .push(window::page_open_condition(paged_at, ctx.dedup_window));
    if w.outcome == Outcome::Execute {
        w.outcome = Outcome::Suppressed;
        w.held = None;
        w.reason = Some(format!(
            "the page sent at {} is still open for this fingerprint",
            paged_at.to_rfc3339()
        ));
    }
}

/// One page per group: a related alert's evidence goes to the group's ticket.
fn page_group(ctx: &Ctx<'_>, draft: &mut Draft, w: &mut Working) {
    let (None, Some(p)) = (ctx.page_open, ctx.group_page) else {
        return;
    };
    let key = draft
        .group
        .as_ref()
        .map(|g| g.key.as_str())
        .unwrap_or_default();
    w.conditions
        .push(group::page_group_condition(p, key, ctx.dedup_window));
    if w.outcome == Outcome::Execute {
        w.outcome = Outcome::Suppressed;
        w.held = None;
        w.reason = Some(format!(
            "the page of run {} covers group {key}; this alert's evidence goes to the group's ticket",
            p.run_id
        ));
    }
}

/// INVARIANT: while the breaker is open no individual page is sent or drafted.
fn page_breaker(ctx: &Ctx<'_>, _: &mut Draft, w: &mut Working) {
    w.conditions.push(ctx.storm_condition.clone());
    if ctx.storm.open && w.wanted && matches!(w.outcome, Outcome::Execute | Outcome::Review) {
        w.outcome = Outcome::Suppressed;
        let storm = ctx.storm.storm_id.clone().unwrap_or_default();
        w.held = Some((HoldReason::Breaker, storm.clone()));
        w.reason = Some(format!(
            "storm mode ({storm}): individual pages are held; the umbrella incident carries the storm"
        ));
    }
}

/// Names the confirming senders (and the origins they claimed) next to the
/// count, so a reader sees which signals agreed, and says when the gate
/// could not vouch for their independence.
fn mim_signals(ctx: &Ctx<'_>, _: &mut Draft, w: &mut Working) {
    let (listed, unverified): (Vec<String>, bool) = if w.for_umbrella {
        (
            ctx.storm.origins.iter().cloned().collect(),
            ctx.storm.origins.iter().any(|s| !Signal::verified(s)),
        )
    } else {
        (
            ctx.signals
                .iter()
                .map(|(sender, origin)| format!("{sender} ({origin})"))
                .collect(),
            ctx.signals.keys().any(|s| !Signal::verified(s)),
        )
    };
    for c in w.conditions.iter_mut().filter(|c| c.id == ids::MIM_SIGNALS) {
        c.actual = format!("{} ({})", c.actual, listed.join(", "));
        if unverified {
            c.actual.push_str(
                "; senders not verified (identity.inbound.mode none): independence is not vouched for",
            );
        }
    }
}

/// Says that the action was decided for the environment's umbrella incident.
fn storm_umbrella(ctx: &Ctx<'_>, _: &mut Draft, w: &mut Working) {
    if !w.for_umbrella {
        return;
    }
    w.conditions.push(Condition {
        id: ids::STORM_UMBRELLA.into(),
        description: "in storm mode this action is decided for the environment's umbrella incident"
            .into(),
        passed: true,
        actual: format!(
            "{} ({}: {} services alerting)",
            ctx.umbrella,
            ctx.storm.storm_id.as_deref().unwrap_or_default(),
            ctx.obs.services
        ),
        threshold: format!("breaker open above {} services", ctx.obs.open_threshold),
    });
}

/// In storm mode the umbrella ticket carries every service: no ticket of its own.
fn ticket_umbrella(ctx: &Ctx<'_>, draft: &mut Draft, w: &mut Working) {
    let Some(carrier) = &ctx.umbrella_before else {
        return;
    };
    if w.for_umbrella || !ctx.storm.open || w.outcome != Outcome::Execute {
        return;
    }
    let mut c = ctx.storm_condition.clone();
    c.actual = format!(
        "{}; the umbrella ticket of run {carrier} carries it",
        c.actual
    );
    w.conditions.push(c);
    w.outcome = Outcome::Suppressed;
    draft.window.ticket_run = Some(carrier.clone());
    w.reason = Some(format!(
        "storm mode: the umbrella ticket of run {carrier} carries this service"
    ));
}

/// One open ticket per fingerprint.
fn ticket_open(ctx: &Ctx<'_>, _: &mut Draft, w: &mut Working) {
    let Some(first) = ctx.open_ticket else {
        return;
    };
    if w.for_umbrella || w.outcome != Outcome::Execute {
        return;
    }
    w.conditions.push(window::ticket_open_condition(first));
    w.outcome = Outcome::Suppressed;
    w.reason = Some(format!(
        "the ticket of run {first} is still open for this fingerprint"
    ));
}

/// One ticket per group: a related alert adds a work note to the group's
/// ticket, up to `storm.group.notes_max`.
fn ticket_group(ctx: &Ctx<'_>, draft: &mut Draft, w: &mut Working) {
    if w.for_umbrella
        || ctx.open_ticket.is_some()
        || !matches!(w.outcome, Outcome::Execute | Outcome::Review)
    {
        return;
    }
    let (Some(carrier), Some(g)) = (ctx.group_ticket, draft.group.as_mut()) else {
        return;
    };
    let max = ctx.settings.group.notes_max;
    draft.window.ticket_run = Some(carrier.clone());
    let (fits, condition) = group::group_note_condition(&g.key, carrier, g.notes, max);
    w.conditions.push(condition);
    if fits {
        if w.outcome == Outcome::Execute {
            g.notes = g.notes.saturating_add(1);
        }
        w.op = ActionOp::Update;
        w.reason = Some(format!(
            "grouped: this alert's evidence goes to the ticket of run {carrier} as a work note ({})",
            g.key
        ));
    } else {
        w.outcome = Outcome::Suppressed;
        w.reason = Some(format!(
            "the ticket of run {carrier} already has {max} work notes for {}",
            g.key
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::{STORM_RULES, storm_rule_names};

    #[test]
    fn docs_policy_lists_the_storm_rules_in_their_order() {
        let doc = include_str!("../../../docs/policy.md");
        let table: Vec<&str> = doc
            .lines()
            .skip_while(|l| !l.starts_with("## Storm rules"))
            .skip_while(|l| !l.starts_with("|---:"))
            .skip(1)
            .map_while(|l| l.strip_prefix("| ").and_then(|l| l.split(" | ").nth(1)))
            .filter_map(|cell| cell.strip_prefix('`').and_then(|c| c.strip_suffix('`')))
            .collect();
        assert_eq!(table, storm_rule_names().collect::<Vec<_>>());
    }

    #[test]
    fn the_storm_rules_are_named_once_in_their_order() {
        let names: Vec<&str> = STORM_RULES.iter().map(|r| r.name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            names.len(),
            "a rule name is used twice: {names:?}"
        );
        // The breaker comes after every other page rule: a page it holds is
        // held whatever the rules before it decided.
        assert_eq!(
            names.iter().position(|n| *n == "storm.breaker"),
            names
                .iter()
                .rposition(|n| n.starts_with("page."))
                .map(|i| i + 1)
        );
    }
}
