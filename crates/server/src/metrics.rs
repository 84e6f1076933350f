//! Prometheus metrics. Names end in `_total` or `_seconds`; labels are bounded
//! enums (source, action, outcome, result), never IDs.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tg_model::{ActionKind, ActionStatus, Outcome};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later servers in the same process share it.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    // 15 and 20 ms: the decision-lag target (issue 11) falls between
                    // buckets otherwise.
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25,
                        0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .ok()?;
            builder.install_recorder().ok()
        })
        .as_ref()
}

pub fn render() -> String {
    handle().map(|h| h.render()).unwrap_or_default()
}

pub fn received(source: &'static str) {
    metrics::counter!("triage_gate_events_received_total", "source" => source).increment(1);
}

pub fn accepted(source: &'static str, n: u64) {
    metrics::counter!("triage_gate_events_accepted_total", "source" => source).increment(n);
}

pub fn rejected(source: &'static str, reason: &'static str) {
    metrics::counter!("triage_gate_events_rejected_total", "source" => source, "reason" => reason)
        .increment(1);
}

pub fn classified(classifier: &str, accepted: bool) {
    let result = if accepted { "accepted" } else { "rejected" };
    metrics::counter!("triage_gate_classifications_total", "classifier" => classifier.to_owned(), "result" => result)
        .increment(1);
}

pub fn decided(action: ActionKind, outcome: Outcome) {
    metrics::counter!("triage_gate_decisions_total", "action" => action.as_str(), "outcome" => outcome.as_str())
        .increment(1);
}

pub fn action_result(action: ActionKind, status: ActionStatus) {
    let result = match status {
        ActionStatus::Delivered => "delivered",
        ActionStatus::Failed => "failed",
        ActionStatus::Pending => "pending",
        ActionStatus::NotExecuted => "not_executed",
    };
    metrics::counter!("triage_gate_actions_total", "action" => action.as_str(), "result" => result)
        .increment(1);
}

/// Accepted -> decided, the model call left out (negative clock steps count as 0).
pub fn decision_lag(d: chrono::Duration) {
    let secs = d.to_std().map(|d| d.as_secs_f64()).unwrap_or(0.0);
    metrics::histogram!("triage_gate_decision_lag_seconds").record(secs);
}

pub fn processing_seconds(d: std::time::Duration) {
    metrics::histogram!("triage_gate_processing_seconds").record(d.as_secs_f64());
}

/// The classifier guards' counters (per profile and provider), set at scrape
/// time from `Classifier::guard_stats` (the guards count; this only copies).
pub fn guard(stats: &[tg_classify::NamedGuardStats]) {
    for g in stats {
        let s = &g.stats;
        let labels = [
            ("profile", g.profile.clone()),
            ("provider", g.provider.clone()),
        ];
        for (name, value) in [
            ("triage_gate_classifier_calls_total", s.provider_calls),
            ("triage_gate_classifier_cache_hits_total", s.cache_hits),
            (
                "triage_gate_classifier_single_flight_joins_total",
                s.coalesced,
            ),
            ("triage_gate_classifier_timeouts_total", s.timeouts),
            ("triage_gate_classifier_fallbacks_total", s.fallbacks),
            (
                "triage_gate_classifier_breaker_opens_total",
                s.breaker_opens,
            ),
        ] {
            metrics::counter!(name, &labels).absolute(value);
        }
        for (reason, value) in [
            ("circuit_open", s.circuit_open),
            ("over_budget", s.over_budget),
            ("saturated", s.saturated),
        ] {
            let mut with_reason = labels.to_vec();
            with_reason.push(("reason", reason.to_owned()));
            metrics::counter!("triage_gate_classifier_refusals_total", &with_reason)
                .absolute(value);
        }
        metrics::gauge!("triage_gate_classifier_breaker_state", &labels)
            .set(f64::from(s.breaker_state));
    }
}

pub fn backlog(n: i64) {
    #[expect(clippy::cast_precision_loss, reason = "a gauge of a queue length")]
    metrics::gauge!("triage_gate_backlog_runs").set(n as f64);
}

/// The outbox backlog: actions waiting for delivery, and dead letters; in
/// total (`triage_gate_outbox_pending`, `triage_gate_outbox_dead`) and per
/// target (`triage_gate_outbox_backlog{target, status}`, status `pending`,
/// `in_flight` or `dead`; every target is always set, zeros included).
pub fn outbox(c: &tg_store::OutboxCounts) {
    #[expect(clippy::cast_precision_loss, reason = "gauges of queue lengths")]
    {
        metrics::gauge!("triage_gate_outbox_pending").set(c.pending as f64);
        metrics::gauge!("triage_gate_outbox_dead").set(c.dead as f64);
        for t in tg_store::OutboxTarget::ALL {
            let b = c.by_target.get(t.as_str()).cloned().unwrap_or_default();
            for (status, n) in [
                ("pending", b.pending),
                ("in_flight", b.in_flight),
                ("dead", b.dead),
            ] {
                metrics::gauge!("triage_gate_outbox_backlog", "target" => t.as_str(), "status" => status)
                    .set(n as f64);
            }
        }
    }
}

/// One delivery attempt by target and outcome (delivered, retryable, throttled, permanent).
pub fn attempt(target: &'static str, outcome: &'static str) {
    metrics::counter!("triage_gate_action_attempts_total", "target" => target, "outcome" => outcome)
        .increment(1);
}

/// An API call refused by inbound identity, by reason code.
pub fn auth_refused(reason: &'static str) {
    metrics::counter!("triage_gate_auth_refused_total", "reason" => reason).increment(1);
}

/// A signed checkpoint sealed onto the audit chain.
pub fn audit_checkpoint() {
    metrics::counter!("triage_gate_audit_checkpoints_total").increment(1);
}

/// Records a sink has not shipped yet (the chain's head minus its cursor).
pub fn sink_lag(sink: &str, records: u64) {
    metrics::gauge!("triage_gate_audit_sink_lag_records", "sink" => sink.to_owned())
        .set(records as f64);
}

/// Records a sink accepted.
pub fn sink_shipped(sink: &str, n: usize) {
    metrics::counter!("triage_gate_audit_sink_shipped_total", "sink" => sink.to_owned())
        .increment(u64::try_from(n).unwrap_or(u64::MAX));
}

/// A batch a sink did not accept, by kind (`retryable`, `refused`).
pub fn sink_failed(sink: &str, kind: &'static str) {
    metrics::counter!("triage_gate_audit_sink_failures_total", "sink" => sink.to_owned(), "kind" => kind)
        .increment(1);
}
