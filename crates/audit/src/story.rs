//! The story of an incident, from its audit records: every event,
//! classification, decision (condition by condition), action, attempt, replay
//! and breaker transition, in time order. Pure: the API (`GET /v1/audit`) and
//! `triage-gate audit show` render the same entries.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tg_model::{AuditRecord, ChainRecord, Outcome, StepKind, StepRecord};

/// One line of the story.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub at: DateTime<Utc>,
    /// The chain record it comes from.
    pub seq: u64,
    /// `event`, `classification`, `rejection`, `decision`, `action`, `completed`,
    /// `review`, `attempt`, `replay`, `breaker`, `checkpoint`, `config`.
    pub what: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// One line for a human.
    pub text: String,
    /// The conditions behind a decision line (`id: actual vs threshold`, pass or fail).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<String>,
    /// Whether the record's own hash recomputes (an edited record says false).
    pub hash_ok: bool,
}

/// The entries of `records`, in time order (chain order breaks ties, and a
/// run's own stages keep their order).
pub fn story(records: &[ChainRecord]) -> Vec<Entry> {
    let mut out = Vec::new();
    for r in records {
        match r {
            ChainRecord::Run(run) => run_entries(run, &mut out),
            ChainRecord::Step(step) => step_entries(step, &mut out),
        }
    }
    // Stable: equal times follow the pipeline's stages (a run's record is sealed
    // after its attempts, but its event came first), then chain order.
    out.sort_by_key(|e| (e.at, stage(e.what)));
    out
}

/// Where an entry falls in a run's life, for entries at the same instant.
fn stage(what: &str) -> u8 {
    match what {
        "event" => 0,
        "classification" | "rejection" => 1,
        "decision" => 2,
        "action" => 4,
        "completed" => 5,
        // attempts, replays, breaker moves, checkpoints, configuration
        _ => 3,
    }
}

fn run_entries(r: &AuditRecord, out: &mut Vec<Entry>) {
    let hash_ok = r.compute_hash() == r.hash;
    let run = Some(r.run_id.to_string());
    let e = &r.event;
    let entry = |at, what, text: String| Entry {
        at,
        seq: r.seq,
        what,
        run_id: run.clone(),
        text,
        conditions: Vec::new(),
        hash_ok,
    };
    let by = e
        .submitted_by
        .as_deref()
        .map(|s| format!(" by {s}"))
        .unwrap_or_default();
    out.push(entry(
        r.timestamps.received_at,
        "event",
        format!(
            "{} {} {} from {} ({}) in {} for {}{by}; correlation {}",
            e.alert_name,
            wire(&e.status),
            e.fingerprint,
            wire(&e.source),
            e.origin,
            e.environment.as_str(),
            e.service,
            r.correlation_id
        ),
    ));
    let model = r
        .classifier
        .model
        .as_deref()
        .map(|m| format!(" {m}"))
        .unwrap_or_default();
    let latency = r
        .model_latency_ms
        .map(|ms| format!(" in {ms} ms"))
        .unwrap_or_default();
    // A hash without the text: `classifier.output_retention: sha256`.
    let output = r
        .model_output_sha256
        .as_ref()
        .map(|h| match r.model_output {
            Some(_) => format!("; output sha256 {h}"),
            None => format!("; output sha256 {h} (text not kept)"),
        })
        .unwrap_or_default();
    match (&r.classification, &r.rejection) {
        (Some(c), _) => out.push(entry(
            r.timestamps.classified_at,
            "classification",
            format!(
                "{}{model}{latency}: {} confidence {:.2}, ticket {}, page {}, mim {}, team {}{output}",
                r.classifier.classifier,
                c.classification.as_str(),
                c.confidence,
                c.requires_ticket,
                c.requires_paging,
                c.requires_mim,
                c.recommended_team
            ),
        )),
        (None, Some(rej)) => out.push(entry(
            r.timestamps.classified_at,
            "rejection",
            format!(
                "{}{model}{latency}: answer rejected ({}): {}{output}",
                r.classifier.classifier, rej.reason, rej.detail
            ),
        )),
        // A duplicate or a resolution: no model call.
        (None, None) => {}
    }
    let d = &r.decision;
    let mut head = format!("policy {} at autonomy {}", d.policy_version, d.autonomy);
    if let Some(first) = &d.duplicate_of {
        head.push_str(&format!("; duplicate of {first}"));
    }
    if let Some(g) = &d.group {
        head.push_str(&format!("; group {g}"));
    }
    if let Some(res) = &d.resolves {
        head.push_str(&format!("; resolves {res}"));
    }
    for err in &d.errors {
        head.push_str(&format!("; error: {err}"));
    }
    out.push(entry(r.timestamps.decided_at, "decision", head));
    for a in &d.actions {
        let op = if a.op == tg_model::ActionOp::Create {
            String::new()
        } else {
            format!(" ({})", a.op.as_str())
        };
        let capped = a
            .capped_by
            .as_deref()
            .map(|c| format!(", capped by {c}"))
            .unwrap_or_default();
        let gate = if a.gate_outcome == a.outcome {
            String::new()
        } else {
            format!(" (gate said {})", a.gate_outcome.as_str())
        };
        let mut line = entry(
            r.timestamps.decided_at,
            "decision",
            format!(
                "{}{op}: {}{gate}{capped}: {}",
                a.action.as_str(),
                a.outcome.as_str(),
                a.reason
            ),
        );
        // Every condition for a refusal; the failing ones otherwise (the rest passed).
        line.conditions = a
            .conditions
            .iter()
            .filter(|c| a.outcome != Outcome::Execute || !c.passed)
            .map(|c| {
                format!(
                    "{} {}: {} vs {}",
                    if c.passed { "pass" } else { "FAIL" },
                    c.id,
                    c.actual,
                    c.threshold
                )
            })
            .collect();
        out.push(line);
    }
    for a in &r.actions {
        let ids = a
            .external_ids
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let err = a
            .error
            .as_deref()
            .map(|e| format!("; error: {e}"))
            .unwrap_or_default();
        out.push(entry(
            r.timestamps.completed_at,
            "action",
            format!(
                "{} {} via {} after {} attempt(s) {ids}{err}",
                a.action.as_str(),
                wire(&a.status).replace('_', " "),
                a.target.as_deref().unwrap_or("-"),
                a.attempts
            ),
        ));
    }
    out.push(entry(
        r.timestamps.completed_at,
        "completed",
        format!("run sealed at seq {} hash {}", r.seq, r.hash),
    ));
}

/// An enum's wire name (`firing`, `cloudwatch-sns`, `not_executed`).
fn wire<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

fn step_entries(s: &StepRecord, out: &mut Vec<Entry>) {
    let hash_ok = s.compute_hash() == s.hash;
    let (what, text) = match s.kind {
        StepKind::BreakerTransition => (
            "breaker",
            match &s.breaker {
                Some(b) => format!(
                    "storm breaker {} {} ({} services, threshold {}, storm {}): {}",
                    b.environment, b.to, b.services, b.threshold, b.storm_id, b.reason
                ),
                None => "storm breaker transition".to_owned(),
            },
        ),
        StepKind::ActionAttempt => (
            "attempt",
            match &s.attempt {
                Some(a) => {
                    let status = a
                        .http_status
                        .map(|h| format!(" HTTP {h}"))
                        .unwrap_or_default();
                    let ids = a
                        .external_ids
                        .iter()
                        .map(|(k, v)| format!(" {k}={v}"))
                        .collect::<String>();
                    let err = a
                        .error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default();
                    let next = a
                        .next_attempt_at
                        .map(|t| format!(", next at {}", t.to_rfc3339()))
                        .unwrap_or_default();
                    let identity = a
                        .identity
                        .as_deref()
                        .map(|i| format!(" [as {i}]"))
                        .unwrap_or_default();
                    format!(
                        "{} {} to {} attempt {}: {}{status}{ids}{err}{next}{identity}",
                        a.action, a.op, a.target, a.attempt, a.outcome
                    )
                }
                None => "action attempt".to_owned(),
            },
        ),
        StepKind::ActionReplay => (
            "replay",
            match &s.replay {
                Some(r) => format!(
                    "{} replayed by {} after {} attempt(s)",
                    r.action_key, s.actor, r.attempts_before
                ),
                None => format!("replayed by {}", s.actor),
            },
        ),
        StepKind::Checkpoint => (
            "checkpoint",
            match &s.checkpoint {
                Some(c) => format!(
                    "signed checkpoint up to seq {} (key {})",
                    c.upto_seq, c.key_id
                ),
                None => "checkpoint".to_owned(),
            },
        ),
        StepKind::ReviewDecision => (
            "review",
            match &s.review {
                Some(r) => {
                    let why = r
                        .reason
                        .as_deref()
                        .map(|x| format!(": {x}"))
                        .unwrap_or_default();
                    let failed: Vec<String> = r
                        .conditions
                        .iter()
                        .filter(|c| !c.passed)
                        .map(|c| format!("{} {} vs {}", c.id, c.actual, c.threshold))
                        .collect();
                    let refused = if failed.is_empty() {
                        String::new()
                    } else {
                        format!(" (re-check failed: {})", failed.join("; "))
                    };
                    format!("{} {} by {}{why}{refused}", r.action, r.verdict, s.actor)
                }
                None => format!("review by {}", s.actor),
            },
        ),
        StepKind::AutonomyChange => (
            "autonomy",
            match &s.autonomy {
                Some(a) => {
                    let lvl = |l: Option<tg_model::AutonomyLevel>| {
                        l.map_or_else(|| "no cap".to_owned(), |l| l.as_str().to_owned())
                    };
                    let why = a
                        .reason
                        .as_deref()
                        .map(|x| format!(": {x}"))
                        .unwrap_or_default();
                    format!(
                        "autonomy cap of {} {} -> {} by {}{why}",
                        a.scope,
                        lvl(a.from),
                        lvl(a.to),
                        s.actor
                    )
                }
                None => format!("autonomy changed by {}", s.actor),
            },
        ),
        StepKind::ExternalIncident => (
            "external",
            match &s.external {
                Some(x) => {
                    let gate = x
                        .gate_outcome
                        .map(|o| format!(", the gate's own outcome: {}", o.as_str()))
                        .unwrap_or_default();
                    let by = x
                        .opened_by
                        .as_deref()
                        .map(|b| format!(" by {b}"))
                        .unwrap_or_default();
                    format!(
                        "{} {} {} opened outside the gate{by}: {}{gate}",
                        x.system, x.action, x.external_id, x.verdict
                    )
                }
                None => "external incident".to_owned(),
            },
        ),
        StepKind::ConfigLoaded => (
            "config",
            match &s.config {
                Some(c) => format!(
                    "configuration loaded: policy {}, config sha256 {}",
                    c.policy_version, c.config_sha256
                ),
                None => "configuration loaded".to_owned(),
            },
        ),
    };
    out.push(Entry {
        at: s.at,
        seq: s.seq,
        what,
        run_id: s.run_id.as_ref().map(ToString::to_string),
        text,
        conditions: Vec::new(),
        hash_ok,
    });
}

/// The story as plain text, one entry per line (conditions indented below).
pub fn render(entries: &[Entry]) -> String {
    let mut s = String::new();
    for e in entries {
        let mark = if e.hash_ok { "" } else { " [HASH MISMATCH]" };
        s.push_str(&format!(
            "{}  #{:<6} {:<14} {}{mark}\n",
            e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            e.seq,
            e.what,
            e.text
        ));
        for c in &e.conditions {
            s.push_str(&format!("{:>40}{c}\n", ""));
        }
    }
    s
}
