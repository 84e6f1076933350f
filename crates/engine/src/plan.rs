//! What a target adapter is handed: the action's text, bounded here, once.

use tg_model::action::{DETAILS_BYTES_MAX, TITLE_BYTES_MAX};
use tg_model::{ActionKind, ActionOp, Classification, NormalizedEvent, PlannedAction};

use crate::{StepInput, idempotency_key};

/// Builds what a target adapter needs; text is bounded here, once.
pub(crate) fn plan(
    kind: ActionKind,
    input: StepInput<'_>,
    c: &Classification,
    team: &str,
) -> PlannedAction {
    let e = input.event;
    let prefix = match kind {
        ActionKind::Ticket => "",
        ActionKind::Page => "",
        ActionKind::Mim => "MAJOR: ",
    };
    let title = truncate(
        &format!(
            "{prefix}[{}] {}: {}",
            c.classification, e.service, e.summary
        ),
        TITLE_BYTES_MAX,
    );
    let mut details = format!(
        "{summary}\n\n{about}classification: {class} (confidence {conf:.2})\n\
         impact: {impact:?} {evidence}\nfingerprint: {fp}\nrun: {run}\ncorrelation: {corr}\n",
        summary = e.summary,
        about = about(e),
        class = c.classification,
        conf = c.confidence,
        impact = e.impact.level,
        evidence = e.impact.evidence.join("; "),
        fp = e.fingerprint,
        run = input.run_id,
        corr = input.correlation_id,
    );
    details.push_str(&format!("team: {team} (catalog owner)\n"));
    if c.recommended_team != team {
        details.push_str(&format!(
            "model recommended team (not obeyed): {}\n",
            c.recommended_team
        ));
    }
    if let Some(r) = &c.rationale {
        details.push_str("\nmodel rationale (untrusted): ");
        details.push_str(r);
        details.push('\n');
    }
    for p in &e.log_pointers {
        details.push_str(&format!("{}: {}\n", p.label, p.url));
    }
    PlannedAction {
        kind,
        op: ActionOp::Create,
        parent_key: None,
        run_id: input.run_id.clone(),
        correlation_id: input.correlation_id.clone(),
        idempotency_key: idempotency_key(input.run_id, kind),
        dedup_key: format!("tg:{}", e.fingerprint),
        team: team.to_owned(),
        service: e.service.clone(),
        environment: e.environment,
        severity: c.classification,
        confidence: c.confidence,
        fingerprint: e.fingerprint.clone(),
        title,
        details: truncate(&details, DETAILS_BYTES_MAX),
        links: e.log_pointers.clone(),
    }
}

/// The lines that say which alert an action is about: service, environment,
/// alert and source.
pub(crate) fn about(e: &NormalizedEvent) -> String {
    format!(
        "service: {}\nenvironment: {}\nalert: {}\nsource: {} ({})\n",
        e.service,
        e.environment.as_str(),
        e.alert_name,
        e.source.as_str(),
        e.origin
    )
}

/// Cuts `s` to at most `max` bytes on a char boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}
