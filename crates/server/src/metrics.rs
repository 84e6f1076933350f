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
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
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

pub fn processing_seconds(d: std::time::Duration) {
    metrics::histogram!("triage_gate_processing_seconds").record(d.as_secs_f64());
}

pub fn backlog(n: i64) {
    #[expect(clippy::cast_precision_loss, reason = "a gauge of a queue length")]
    metrics::gauge!("triage_gate_backlog_runs").set(n as f64);
}
