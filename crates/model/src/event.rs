//! `NormalizedEvent`: one alert from any source, in one shape, already redacted.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::Fingerprint;

/// Limits every normalized event obeys (adapters truncate or reject to meet them).
pub mod limits {
    /// Labels kept per event.
    pub const LABELS_MAX: usize = 64;
    /// Bytes of one label key.
    pub const LABEL_KEY_BYTES_MAX: usize = 128;
    /// Bytes of one label value.
    pub const LABEL_VALUE_BYTES_MAX: usize = 1024;
    /// Bytes of the summary.
    pub const SUMMARY_BYTES_MAX: usize = 1024;
    /// Bytes of the error signature.
    pub const SIGNATURE_BYTES_MAX: usize = 1024;
    /// Bytes of a service, component, alert name or origin.
    pub const NAME_BYTES_MAX: usize = 128;
    /// Correlation IDs kept per event.
    pub const CORRELATION_IDS_MAX: usize = 16;
    /// Log pointers kept per event.
    pub const LOG_POINTERS_MAX: usize = 8;
    /// Bytes of a log pointer URL.
    pub const URL_BYTES_MAX: usize = 2048;
    /// Evidence lines for the impact estimate.
    pub const EVIDENCE_MAX: usize = 8;
}

/// The adapter an event came in through.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Generic,
    Alertmanager,
    CloudwatchSns,
    Eventbridge,
    Splunk,
    Datadog,
    Grafana,
    Cloudevents,
}

impl Source {
    pub const ALL: [Source; 8] = [
        Source::Generic,
        Source::Alertmanager,
        Source::CloudwatchSns,
        Source::Eventbridge,
        Source::Splunk,
        Source::Datadog,
        Source::Grafana,
        Source::Cloudevents,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Generic => "generic",
            Source::Alertmanager => "alertmanager",
            Source::CloudwatchSns => "cloudwatch-sns",
            Source::Eventbridge => "eventbridge",
            Source::Splunk => "splunk",
            Source::Datadog => "datadog",
            Source::Grafana => "grafana",
            Source::Cloudevents => "cloudevents",
        }
    }
}

/// Where the service runs. Unknown is never treated as production.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Production,
    Staging,
    Development,
    Unknown,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Staging => "staging",
            Environment::Development => "development",
            Environment::Unknown => "unknown",
        }
    }

    /// Maps the usual spellings (`prod`, `prd`, `stage`, `dev`, ...) to an environment.
    pub fn from_label(label: &str) -> Environment {
        match label.trim().to_ascii_lowercase().as_str() {
            "production" | "prod" | "prd" | "live" => Environment::Production,
            "staging" | "stage" | "stg" | "preprod" | "pre-prod" | "uat" => Environment::Staging,
            "development" | "dev" | "test" | "qa" | "sandbox" => Environment::Development,
            _ => Environment::Unknown,
        }
    }
}

/// Whether the source says the problem is ongoing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// How bad the source says it is, before any model looks at it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ImpactLevel {
    Unknown,
    None,
    Low,
    Medium,
    High,
    Critical,
}

/// The impact estimate, stated as a level with the evidence it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Impact {
    pub level: ImpactLevel,
    /// Short statements from the source (`severity=critical`, `error_rate=12%`).
    pub evidence: Vec<String>,
}

/// A link to the source's own view of the logs or the alert; never log content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogPointer {
    /// What the link shows (`generator`, `splunk_results`, `runbook`).
    pub label: String,
    pub url: String,
}

/// One alert, normalized and redacted. Nothing in it is a raw payload or a log body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NormalizedEvent {
    /// The adapter the event came in through.
    pub source: Source,
    /// The system that detected the problem (`prometheus`, `cloudwatch`, `apm`).
    /// Distinct origins count as independent signals.
    pub origin: String,
    pub status: AlertStatus,
    pub environment: Environment,
    pub service: String,
    pub component: Option<String>,
    /// The alert rule's name (`PostgresDown`).
    pub alert_name: String,
    /// One human-readable line, redacted and bounded.
    pub summary: String,
    /// The message with volatile parts (numbers, IDs, addresses, times) replaced by placeholders.
    pub error_signature: String,
    /// Stable hash of (service, error_signature, alert_name); not of the source.
    pub fingerprint: Fingerprint,
    /// IDs that tie this event to others (trace IDs, alert fingerprints, ARNs), by kind.
    pub correlation_ids: BTreeMap<String, String>,
    pub impact: Impact,
    pub log_pointers: Vec<LogPointer>,
    /// Bounded, redacted labels from the source.
    pub labels: BTreeMap<String, String>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// Who delivered the event, as the gate verified it: `jwt:<client>`,
    /// `webhook:<sender>` or `sns:<topic arn>`. Set by the gate after
    /// normalizing, never read from the payload; `None` when nobody was
    /// verified (`identity.inbound.mode: none`). The unit of independence
    /// for multi-signal confirmation (docs/policy.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}
