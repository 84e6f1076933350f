//! `audit`: signed checkpoints over the audit chain, and where the chain is
//! shipped besides `audit.jsonl` (issue 8).
//!
//! Each entry of `audit.sinks` names one external sink (Splunk HEC, CloudWatch
//! Logs, OTLP/HTTP logs, a rotated JSON Lines file, stdout). Validation here is
//! pure; `tg_ship::build` resolves secrets and builds the clients.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{AwsCredentialRefs, SecretRef};

/// Sinks configured at most.
pub const AUDIT_SINKS_MAX: usize = 16;
/// Longest sink name.
pub const SINK_NAME_CHARS_MAX: usize = 64;
/// Longest HTTP timeout of one sink request.
pub const SINK_TIMEOUT_MS_MAX: u64 = 300_000;
/// Default HTTP timeout of one sink request.
pub const SINK_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Records per batch at most, for any sink (CloudWatch's own ceiling).
pub const SINK_BATCH_RECORDS_MAX: usize = 10_000;
/// Bytes per batch at most, for the HTTP sinks other than CloudWatch.
pub const SINK_BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Splunk HEC: records per batch by default.
pub const SPLUNK_BATCH_RECORDS_DEFAULT: usize = 500;
/// Splunk HEC: bytes per request by default (the reference's "keep batches ≤ ~1 MB").
pub const SPLUNK_BATCH_BYTES_DEFAULT: usize = 1024 * 1024;
/// Splunk HEC: how long `ack: true` waits for the indexer acknowledgement by default.
pub const SPLUNK_ACK_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Splunk HEC: longest acknowledgement wait accepted.
pub const SPLUNK_ACK_TIMEOUT_MS_MAX: u64 = 600_000;
/// Splunk HEC: default pause between two acknowledgement polls.
pub const SPLUNK_ACK_POLL_MS_DEFAULT: u64 = 1_000;
/// Splunk HEC: poll interval bounds (never hammer the indexer, never sleep past the timeout).
pub const SPLUNK_ACK_POLL_MS_MIN: u64 = 10;
/// See [`SPLUNK_ACK_POLL_MS_MIN`].
pub const SPLUNK_ACK_POLL_MS_MAX: u64 = 10_000;
/// CloudWatch Logs: events per `PutLogEvents` (the API's maximum).
pub const CLOUDWATCH_BATCH_RECORDS_MAX: usize = 10_000;
/// CloudWatch Logs: bytes per `PutLogEvents`, counted as UTF-8 message bytes
/// plus [`CLOUDWATCH_EVENT_OVERHEAD_BYTES`] per event (the API's maximum).
pub const CLOUDWATCH_BATCH_BYTES_MAX: usize = 1_048_576;
/// CloudWatch Logs: what each event adds to the batch size.
pub const CLOUDWATCH_EVENT_OVERHEAD_BYTES: usize = 26;
/// OTLP: records per request by default.
pub const OTLP_BATCH_RECORDS_DEFAULT: usize = 500;
/// OTLP: bytes of record JSON per request by default.
pub const OTLP_BATCH_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
/// File sink: size at which the file is rotated, by default (100 MiB).
pub const FILE_ROTATE_BYTES_DEFAULT: u64 = 100 * 1024 * 1024;
/// File sink: smallest `rotate_bytes` (a rotation per record is pointless).
pub const FILE_ROTATE_BYTES_MIN: u64 = 4 * 1024;
/// File sink: rotated files kept by default.
pub const FILE_KEEP_DEFAULT: u32 = 10;
/// File sink: rotated files kept at most.
pub const FILE_KEEP_MAX: u32 = 1_000;
/// File and stdout sinks: records per batch by default.
pub const LOCAL_BATCH_RECORDS_DEFAULT: usize = 1_000;
/// File and stdout sinks: bytes per batch by default.
pub const LOCAL_BATCH_BYTES_DEFAULT: usize = 4 * 1024 * 1024;

/// Largest `checkpoint.every_records`: the verifier looks at most
/// `tg_audit::CHECKPOINT_REACH_MAX` (100 000) records back.
pub const CHECKPOINT_EVERY_RECORDS_MAX: u64 = 50_000;
/// Largest `checkpoint.every_secs` (a day).
pub const CHECKPOINT_EVERY_SECS_MAX: u64 = 86_400;

/// The `audit` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Signed checkpoints; off unless a key is configured.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// External sinks the chain is shipped to, in addition to `audit.jsonl`.
    #[serde(default)]
    pub sinks: Vec<AuditSinkConfig>,
}

/// Ed25519 checkpoints: the gate signs the chain's head when `every_records`
/// new records have been sealed since the last checkpoint, or `every_secs`
/// after it if any have, and when it stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// The Ed25519 private key, PKCS#8 PEM (`openssl genpkey -algorithm ed25519`
    /// or `triage-gate audit keygen`). No key, no checkpoints.
    pub key: Option<SecretRef>,
    pub every_records: u64,
    pub every_secs: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            key: None,
            every_records: 1_000,
            every_secs: 300,
        }
    }
}

/// One sink, tagged by `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditSinkConfig {
    SplunkHec(SplunkHecSinkConfig),
    Cloudwatch(CloudWatchSinkConfig),
    Otlp(OtlpSinkConfig),
    File(FileSinkConfig),
    Stdout(StdoutSinkConfig),
}

impl AuditSinkConfig {
    /// The sink's configured name (unique).
    pub fn name(&self) -> &str {
        match self {
            AuditSinkConfig::SplunkHec(c) => &c.name,
            AuditSinkConfig::Cloudwatch(c) => &c.name,
            AuditSinkConfig::Otlp(c) => &c.name,
            AuditSinkConfig::File(c) => &c.name,
            AuditSinkConfig::Stdout(c) => &c.name,
        }
    }

    /// The sink's `tls` section; `None` for sinks that make no HTTP request.
    pub fn tls(&self) -> Option<&crate::TlsTrust> {
        match self {
            AuditSinkConfig::SplunkHec(c) => Some(&c.tls),
            AuditSinkConfig::Cloudwatch(c) => Some(&c.tls),
            AuditSinkConfig::Otlp(c) => Some(&c.tls),
            AuditSinkConfig::File(_) | AuditSinkConfig::Stdout(_) => None,
        }
    }

    /// The `type` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditSinkConfig::SplunkHec(_) => "splunk_hec",
            AuditSinkConfig::Cloudwatch(_) => "cloudwatch",
            AuditSinkConfig::Otlp(_) => "otlp",
            AuditSinkConfig::File(_) => "file",
            AuditSinkConfig::Stdout(_) => "stdout",
        }
    }
}

/// Splunk HTTP Event Collector (`POST {url}/services/collector/event`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkHecSinkConfig {
    pub name: String,
    /// `https://splunk.example.com:8088` (a path prefix is kept).
    pub url: String,
    /// The HEC token (`Authorization: Splunk <token>`).
    pub token: SecretRef,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_source")]
    pub source: String,
    #[serde(default = "default_sourcetype")]
    pub sourcetype: String,
    /// Must be one of the token's allowed indexes; unset uses the token's default.
    #[serde(default)]
    pub index: Option<String>,
    /// Indexer acknowledgement: Ok only once the indexer confirms the batch.
    #[serde(default)]
    pub ack: bool,
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    #[serde(default = "default_ack_poll_ms")]
    pub ack_poll_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_splunk_records")]
    pub batch_records_max: usize,
    #[serde(default = "default_splunk_bytes")]
    pub batch_bytes_max: usize,
    /// Certificate authorities trusted besides the bundled roots; its
    /// `ca_file` replaces the top-level `tls.ca_file` here.
    #[serde(default, skip_serializing_if = "crate::TlsTrust::is_unset")]
    pub tls: crate::TlsTrust,
}

/// CloudWatch Logs `PutLogEvents`, SigV4-signed (service `logs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchSinkConfig {
    pub name: String,
    /// e.g. `eu-west-1`.
    pub region: String,
    /// Default `https://logs.{region}.amazonaws.com` (VPC endpoints, the sandbox).
    #[serde(default)]
    pub endpoint: Option<String>,
    pub log_group_name: String,
    pub log_stream_name: String,
    /// Same keys and defaults as `classifier.bedrock.credentials`.
    #[serde(default)]
    pub credentials: AwsCredentialRefs,
    /// Create the log stream (`CreateLogStream`) when `PutLogEvents` says it does not exist.
    #[serde(default)]
    pub create_stream: bool,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_cloudwatch_records")]
    pub batch_records_max: usize,
    /// Certificate authorities trusted besides the bundled roots; its
    /// `ca_file` replaces the top-level `tls.ca_file` here.
    #[serde(default, skip_serializing_if = "crate::TlsTrust::is_unset")]
    pub tls: crate::TlsTrust,
}

/// OTLP/HTTP logs, JSON encoding (`POST {endpoint}/v1/logs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    pub name: String,
    /// `https://collector.example.com:4318` (`/v1/logs` is appended).
    pub endpoint: String,
    /// Sent as `Authorization: Bearer`; omit for collectors that check none.
    #[serde(default)]
    pub token: Option<SecretRef>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_otlp_records")]
    pub batch_records_max: usize,
    #[serde(default = "default_otlp_bytes")]
    pub batch_bytes_max: usize,
    /// Certificate authorities trusted besides the bundled roots; its
    /// `ca_file` replaces the top-level `tls.ca_file` here.
    #[serde(default, skip_serializing_if = "crate::TlsTrust::is_unset")]
    pub tls: crate::TlsTrust,
}

/// A JSON Lines file, rotated by size.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub name: String,
    /// The live file; rotated files are `<path>.<n>`, the highest `n` the newest.
    pub path: PathBuf,
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Rotated files kept (the oldest are deleted beyond it).
    #[serde(default = "default_keep")]
    pub keep: u32,
    #[serde(default = "default_local_records")]
    pub batch_records_max: usize,
    #[serde(default = "default_local_bytes")]
    pub batch_bytes_max: usize,
}

/// One line per record on standard output (containers).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    pub name: String,
    #[serde(default = "default_local_records")]
    pub batch_records_max: usize,
    #[serde(default = "default_local_bytes")]
    pub batch_bytes_max: usize,
}

fn default_host() -> String {
    "triage-gate".into()
}
fn default_source() -> String {
    "triage-gate".into()
}
fn default_sourcetype() -> String {
    "triage-gate:audit".into()
}
fn default_ack_timeout_ms() -> u64 {
    SPLUNK_ACK_TIMEOUT_MS_DEFAULT
}
fn default_ack_poll_ms() -> u64 {
    SPLUNK_ACK_POLL_MS_DEFAULT
}
fn default_timeout_ms() -> u64 {
    SINK_TIMEOUT_MS_DEFAULT
}
fn default_splunk_records() -> usize {
    SPLUNK_BATCH_RECORDS_DEFAULT
}
fn default_splunk_bytes() -> usize {
    SPLUNK_BATCH_BYTES_DEFAULT
}
fn default_cloudwatch_records() -> usize {
    CLOUDWATCH_BATCH_RECORDS_MAX
}
fn default_otlp_records() -> usize {
    OTLP_BATCH_RECORDS_DEFAULT
}
fn default_otlp_bytes() -> usize {
    OTLP_BATCH_BYTES_DEFAULT
}
fn default_rotate_bytes() -> u64 {
    FILE_ROTATE_BYTES_DEFAULT
}
fn default_keep() -> u32 {
    FILE_KEEP_DEFAULT
}
fn default_local_records() -> usize {
    LOCAL_BATCH_RECORDS_DEFAULT
}
fn default_local_bytes() -> usize {
    LOCAL_BATCH_BYTES_DEFAULT
}

fn http_url(v: &str) -> bool {
    crate::urls::outbound(v).is_ok()
}

fn log_group_ok(v: &str) -> bool {
    (1..=512).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_/#".contains(c))
}

fn log_stream_ok(v: &str) -> bool {
    (1..=512).contains(&v.len()) && !v.contains([':', '*'])
}

impl AuditConfig {
    /// Semantic checks of `audit`, all at once: `(dotted path, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let c = &self.checkpoint;
        if c.every_records == 0 || c.every_records > CHECKPOINT_EVERY_RECORDS_MAX {
            out.push((
                "audit.checkpoint.every_records".into(),
                format!(
                    "{} is outside 1..={CHECKPOINT_EVERY_RECORDS_MAX}",
                    c.every_records
                ),
            ));
        }
        if c.every_secs == 0 || c.every_secs > CHECKPOINT_EVERY_SECS_MAX {
            out.push((
                "audit.checkpoint.every_secs".into(),
                format!(
                    "{} is outside 1..={CHECKPOINT_EVERY_SECS_MAX}",
                    c.every_secs
                ),
            ));
        }
        if self.sinks.len() > AUDIT_SINKS_MAX {
            out.push((
                "audit.sinks".into(),
                format!("{} sinks, at most {AUDIT_SINKS_MAX}", self.sinks.len()),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let p = |k: &str| format!("audit.sinks[{i}].{k}");
            let name = sink.name();
            let name_ok = (1..=SINK_NAME_CHARS_MAX).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok {
                out.push((
                    p("name"),
                    format!("{name:?} is not 1..={SINK_NAME_CHARS_MAX} of [A-Za-z0-9_-]"),
                ));
            } else if !names.insert(name) {
                out.push((p("name"), format!("{name:?} is used by another sink")));
            }
            let mut range = |key: &str, v: u64, min: u64, max: u64| {
                if !(min..=max).contains(&v) {
                    out.push((p(key), format!("{v} is outside {min}..={max}")));
                }
            };
            let usz = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
            let records = usz(SINK_BATCH_RECORDS_MAX);
            match sink {
                AuditSinkConfig::SplunkHec(c) => {
                    range("timeout_ms", c.timeout_ms, 1, SINK_TIMEOUT_MS_MAX);
                    range(
                        "ack_timeout_ms",
                        c.ack_timeout_ms,
                        1,
                        SPLUNK_ACK_TIMEOUT_MS_MAX,
                    );
                    range(
                        "ack_poll_ms",
                        c.ack_poll_ms,
                        SPLUNK_ACK_POLL_MS_MIN,
                        SPLUNK_ACK_POLL_MS_MAX,
                    );
                    range("batch_records_max", usz(c.batch_records_max), 1, records);
                    range(
                        "batch_bytes_max",
                        usz(c.batch_bytes_max),
                        1024,
                        usz(SINK_BATCH_BYTES_MAX),
                    );
                    if !http_url(&c.url) {
                        out.push((p("url"), format!("{:?} is not an http(s) URL", c.url)));
                    }
                    for (key, v) in [
                        ("host", &c.host),
                        ("source", &c.source),
                        ("sourcetype", &c.sourcetype),
                    ] {
                        if v.trim().is_empty() || v.len() > 256 {
                            out.push((p(key), "must be 1..=256 characters".into()));
                        }
                    }
                    if let Some(ix) = &c.index
                        && (ix.is_empty()
                            || ix.len() > 80
                            || !ix
                                .chars()
                                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'))
                    {
                        out.push((
                            p("index"),
                            format!("{ix:?} is not a Splunk index name (1..=80 of [A-Za-z0-9_-])"),
                        ));
                    }
                }
                AuditSinkConfig::Cloudwatch(c) => {
                    range("timeout_ms", c.timeout_ms, 1, SINK_TIMEOUT_MS_MAX);
                    range(
                        "batch_records_max",
                        usz(c.batch_records_max),
                        1,
                        usz(CLOUDWATCH_BATCH_RECORDS_MAX),
                    );
                    let region_ok = !c.region.is_empty()
                        && c.region.len() <= 32
                        && c.region
                            .chars()
                            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-');
                    if !region_ok {
                        out.push((
                            p("region"),
                            format!("{:?} is not an AWS region such as eu-west-1", c.region),
                        ));
                    }
                    if let Some(e) = &c.endpoint
                        && !http_url(e)
                    {
                        out.push((p("endpoint"), format!("{e:?} is not an http(s) URL")));
                    }
                    if !log_group_ok(&c.log_group_name) {
                        out.push((
                            p("log_group_name"),
                            format!("{:?} is not 1..=512 of [.-_/#A-Za-z0-9]", c.log_group_name),
                        ));
                    }
                    if !log_stream_ok(&c.log_stream_name) {
                        out.push((
                            p("log_stream_name"),
                            format!(
                                "{:?} is not 1..=512 characters without ':' or '*'",
                                c.log_stream_name
                            ),
                        ));
                    }
                    if let Some(w) = &c.credentials.web_identity {
                        out.extend(w.validate(&p("credentials.web_identity")));
                    }
                }
                AuditSinkConfig::Otlp(c) => {
                    range("timeout_ms", c.timeout_ms, 1, SINK_TIMEOUT_MS_MAX);
                    range("batch_records_max", usz(c.batch_records_max), 1, records);
                    range(
                        "batch_bytes_max",
                        usz(c.batch_bytes_max),
                        1024,
                        usz(SINK_BATCH_BYTES_MAX),
                    );
                    if !http_url(&c.endpoint) {
                        out.push((
                            p("endpoint"),
                            format!("{:?} is not an http(s) URL", c.endpoint),
                        ));
                    }
                }
                AuditSinkConfig::File(c) => {
                    range(
                        "rotate_bytes",
                        c.rotate_bytes,
                        FILE_ROTATE_BYTES_MIN,
                        u64::MAX,
                    );
                    range("keep", u64::from(c.keep), 1, u64::from(FILE_KEEP_MAX));
                    range("batch_records_max", usz(c.batch_records_max), 1, records);
                    range(
                        "batch_bytes_max",
                        usz(c.batch_bytes_max),
                        1024,
                        usz(SINK_BATCH_BYTES_MAX),
                    );
                    if c.path.as_os_str().is_empty() || c.path.file_name().is_none() {
                        out.push((p("path"), "must name a file".into()));
                    }
                }
                AuditSinkConfig::Stdout(c) => {
                    range("batch_records_max", usz(c.batch_records_max), 1, records);
                    range(
                        "batch_bytes_max",
                        usz(c.batch_bytes_max),
                        1024,
                        usz(SINK_BATCH_BYTES_MAX),
                    );
                }
            }
        }
        let files: Vec<&PathBuf> = self
            .sinks
            .iter()
            .filter_map(|s| match s {
                AuditSinkConfig::File(f) => Some(&f.path),
                _ => None,
            })
            .collect();
        for (i, sink) in self.sinks.iter().enumerate() {
            if let AuditSinkConfig::File(f) = sink
                && files.iter().filter(|p| **p == &f.path).count() > 1
            {
                out.push((
                    format!("audit.sinks[{i}].path"),
                    format!("{} is written by another file sink", f.path.display()),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use crate::{AuditSinkConfig, Config, SecretRef};

    #[test]
    fn no_sinks_by_default() {
        let c = Config::from_yaml("", "t").unwrap();
        assert!(c.audit.sinks.is_empty());
    }

    #[test]
    fn every_type_parses_with_defaults() {
        let yaml = "\
audit:
  sinks:
    - name: splunk
      type: splunk_hec
      url: https://splunk.example.com:8088
      token: {env: HEC_TOKEN}
      ack: true
    - name: cw
      type: cloudwatch
      region: eu-west-1
      log_group_name: /triage-gate/audit
      log_stream_name: prod-1
    - name: otel
      type: otlp
      endpoint: http://collector:4318
    - name: archive
      type: file
      path: /var/lib/triage-gate/ship/audit.jsonl
    - name: console
      type: stdout
";
        let c = Config::from_yaml(yaml, "t").unwrap();
        let s = &c.audit.sinks;
        assert_eq!(s.len(), 5);
        let AuditSinkConfig::SplunkHec(h) = &s[0] else {
            panic!("{:?}", s[0]);
        };
        assert_eq!(h.token, SecretRef::Env("HEC_TOKEN".into()));
        assert_eq!(
            (h.source.as_str(), h.sourcetype.as_str()),
            ("triage-gate", "triage-gate:audit")
        );
        assert!(h.ack);
        assert_eq!(h.ack_timeout_ms, 30_000);
        assert_eq!((h.batch_records_max, h.batch_bytes_max), (500, 1_048_576));
        let AuditSinkConfig::Cloudwatch(w) = &s[1] else {
            panic!()
        };
        assert_eq!(w.batch_records_max, 10_000);
        assert!(!w.create_stream);
        let AuditSinkConfig::File(f) = &s[3] else {
            panic!()
        };
        assert_eq!((f.rotate_bytes, f.keep), (100 * 1024 * 1024, 10));
        assert_eq!(
            s.iter().map(|s| s.kind()).collect::<Vec<_>>(),
            ["splunk_hec", "cloudwatch", "otlp", "file", "stdout"]
        );
    }

    #[test]
    fn sink_problems_are_located() {
        let yaml = "\
audit:
  sinks:
    - name: a
      type: splunk_hec
      url: splunk:8088
      token: {env: T}
      ack_poll_ms: 1
    - name: a
      type: cloudwatch
      region: EU
      log_group_name: 'bad group!'
      log_stream_name: 'a:b'
      batch_records_max: 10001
    - name: f
      type: file
      path: /tmp/x.jsonl
      keep: 0
      rotate_bytes: 10
";
        let err = Config::from_yaml(yaml, "gate.yaml").unwrap_err();
        let lines: Vec<String> = err.0.iter().map(|i| i.to_string()).collect();
        for needle in [
            "gate.yaml:5: audit.sinks[0].url:",
            "gate.yaml:7: audit.sinks[0].ack_poll_ms: 1 is outside 10..=10000",
            "gate.yaml:8: audit.sinks[1].name: \"a\" is used by another sink",
            "gate.yaml:10: audit.sinks[1].region:",
            "gate.yaml:11: audit.sinks[1].log_group_name:",
            "gate.yaml:12: audit.sinks[1].log_stream_name:",
            "gate.yaml:13: audit.sinks[1].batch_records_max: 10001 is outside 1..=10000",
            "gate.yaml:17: audit.sinks[2].keep:",
            "gate.yaml:18: audit.sinks[2].rotate_bytes:",
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(needle)),
                "{needle} missing in {lines:#?}"
            );
        }
        assert_eq!(lines.len(), 9, "{lines:#?}");
    }

    #[test]
    fn unknown_types_and_keys_are_refused() {
        for yaml in [
            "audit:\n  sinks:\n    - name: x\n      type: kafka\n",
            "audit:\n  sinks:\n    - name: x\n      type: stdout\n      colour: red\n",
            "audit:\n  sinks:\n    - type: stdout\n",
            "audit:\n  sinkz: []\n",
        ] {
            let err = Config::from_yaml(yaml, "t.yaml").unwrap_err().to_string();
            assert!(err.starts_with("t.yaml:"), "{err}");
        }
    }
}
