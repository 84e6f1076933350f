//! Audit shipping: delivers chain records, in `seq` order, to external sinks
//! (Splunk HEC, CloudWatch Logs, OTLP/HTTP logs, a rotated JSON Lines file,
//! stdout). One [`Sink::send`] is one all-or-nothing delivery attempt of a
//! batch; the durable spool and the retry loop (the driver) live in the
//! server, which never drops a record: it retries a [`ShipError::Retryable`]
//! failure soon and a [`ShipError::Refused`] one slowly, with an alarm.
//!
//! This crate must never put a token, key or signature in an error, a log line
//! or a `Debug` string, never reorder records, and never send a batch over the
//! sink's [`Sink::limits`]. It holds no state a crash could lose: the file sink
//! re-reads its last line to skip what it already wrote.

mod cloudwatch;
mod file;
mod http;
mod otlp;
mod splunk;
mod stdout;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use cloudwatch::{CloudWatchSink, cloudwatch_batch_bytes};
pub use file::FileSink;
pub use otlp::OtlpSink;
pub use splunk::SplunkHecSink;
pub use stdout::StdoutSink;
use tg_config::{AuditSinkConfig, SecretSource};

/// One chain record ready to ship. `json` is the record's stored JSON exactly
/// as in the store (already secret-free).
#[derive(Debug, Clone)]
pub struct ShipRecord {
    /// Chain position, from 1, strictly increasing in a batch.
    pub seq: u64,
    pub time: chrono::DateTime<chrono::Utc>,
    /// One JSON object.
    pub json: String,
    /// Small indexed fields: `kind`, `run_id`, `correlation_id`, `service`,
    /// `environment` (any may be absent).
    pub fields: BTreeMap<String, String>,
}

/// The most one [`Sink::send`] may carry. `bytes_max` counts the records'
/// `json` lengths only: each sink has already subtracted its own per-record
/// overhead (CloudWatch's 26 bytes per event, Splunk's envelope), so a batch
/// within both limits is never refused for its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub records_max: usize,
    pub bytes_max: usize,
}

impl BatchLimits {
    /// How many records from the start of `records` fit in one batch (at least
    /// one when any is given: a record alone over `bytes_max` is left to the
    /// sink, which refuses it by `seq` rather than stall the driver silently).
    pub fn fit(&self, records: &[ShipRecord]) -> usize {
        let mut bytes = 0usize;
        let mut n = 0usize;
        for r in records.iter().take(self.records_max) {
            bytes = bytes.saturating_add(r.json.len());
            if bytes > self.bytes_max && n > 0 {
                break;
            }
            n += 1;
        }
        n
    }

    /// Whether `batch` is within both limits.
    pub fn admits(&self, batch: &[ShipRecord]) -> bool {
        batch.len() <= self.records_max
            && batch.iter().map(|r| r.json.len()).sum::<usize>() <= self.bytes_max
    }
}

/// Why a delivery failed. Reasons never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShipError {
    /// Try again later (outage, 429/503/500, timeout, connection refused);
    /// `retry_after` if the sink said so.
    #[error("retryable: {reason}")]
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The sink refuses this batch as sent (bad token, 400 invalid event,
    /// record too large). The driver still never drops records: it retries
    /// slowly and alarms. `seq` names the refused record if known.
    #[error("refused: {reason}{}", seq.map(|s| format!(" (record seq {s})")).unwrap_or_default())]
    Refused { reason: String, seq: Option<u64> },
}

impl ShipError {
    pub(crate) fn retry(reason: impl Into<String>) -> Self {
        ShipError::Retryable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub(crate) fn refused(reason: impl Into<String>, seq: Option<u64>) -> Self {
        ShipError::Refused {
            reason: reason.into(),
            seq,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, ShipError::Retryable { .. })
    }

    /// The reason text (for metrics labels and logs).
    pub fn reason(&self) -> &str {
        match self {
            ShipError::Retryable { reason, .. } | ShipError::Refused { reason, .. } => reason,
        }
    }
}

/// The future a [`Sink::send`] returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ShipError>> + Send + 'a>>;

/// An audit sink.
pub trait Sink: Send + Sync {
    /// From config, unique, e.g. `"splunk"`.
    fn name(&self) -> &str;
    /// The driver never sends more than this in one call.
    fn limits(&self) -> BatchLimits;
    /// Deliver the whole batch or fail; on Ok every record is durably accepted by the sink.
    fn send<'a>(&'a self, batch: &'a [ShipRecord]) -> SendFuture<'a>;
}

/// A batch the driver should never have built: refused before anything is sent.
pub(crate) fn check_batch(limits: &BatchLimits, batch: &[ShipRecord]) -> Result<(), ShipError> {
    if batch.len() > limits.records_max {
        return Err(ShipError::refused(
            format!(
                "batch of {} records is over the sink's limit of {}",
                batch.len(),
                limits.records_max
            ),
            None,
        ));
    }
    if let Some(r) = batch.iter().find(|r| r.json.len() > limits.bytes_max) {
        return Err(ShipError::refused(
            format!(
                "record of {} bytes is over the sink's limit of {} bytes",
                r.json.len(),
                limits.bytes_max
            ),
            Some(r.seq),
        ));
    }
    let bytes: usize = batch.iter().map(|r| r.json.len()).sum();
    if bytes > limits.bytes_max {
        return Err(ShipError::refused(
            format!(
                "batch of {bytes} bytes is over the sink's limit of {} bytes",
                limits.bytes_max
            ),
            None,
        ));
    }
    for pair in batch.windows(2) {
        if let [a, b] = pair
            && b.seq <= a.seq
        {
            return Err(ShipError::refused(
                format!("records out of order: seq {} after {}", b.seq, a.seq),
                Some(b.seq),
            ));
        }
    }
    Ok(())
}

/// Builds every configured sink, resolving secrets through `secrets`. Each
/// HTTP sink gets its own client, trusting the certificate authorities `trust`
/// resolves for it (its `tls.ca_file`, else the top-level one); each sets its
/// own per-request timeout. Errors name the sink and key
/// (`audit.sinks[0].token: ...`), never a value.
pub fn build(
    sinks: &[AuditSinkConfig],
    secrets: &dyn SecretSource,
    trust: &tg_identity::TrustLoader,
) -> Result<Vec<Box<dyn Sink>>, String> {
    let mut out: Vec<Box<dyn Sink>> = Vec::with_capacity(sinks.len());
    for (i, config) in sinks.iter().enumerate() {
        let path = format!("audit.sinks[{i}]");
        let http = || -> Result<(reqwest::Client, tg_identity::TrustRoots), String> {
            let own = config.tls().and_then(|t| t.ca_file());
            let roots = trust.for_target(&path, own)?;
            let client = roots
                .client_builder()
                .build()
                .map_err(|e| format!("{path}: cannot build the HTTP client: {e}"))?;
            Ok((client, roots))
        };
        let sink: Box<dyn Sink> = match config {
            AuditSinkConfig::SplunkHec(c) => {
                let token = secrets
                    .read(&c.token)
                    .map_err(|e| format!("{path}.token: {e}"))?;
                Box::new(
                    SplunkHecSink::new(c, token, http()?.0).map_err(|e| format!("{path}: {e}"))?,
                )
            }
            AuditSinkConfig::Cloudwatch(c) => {
                let (client, roots) = http()?;
                let credentials = cloudwatch::credentials(&path, c, secrets, &roots)?;
                Box::new(
                    CloudWatchSink::new(c, credentials, client)
                        .map_err(|e| format!("{path}: {e}"))?,
                )
            }
            AuditSinkConfig::Otlp(c) => {
                let token = match &c.token {
                    Some(r) => Some(secrets.read(r).map_err(|e| format!("{path}.token: {e}"))?),
                    None => None,
                };
                Box::new(OtlpSink::new(c, token, http()?.0).map_err(|e| format!("{path}: {e}"))?)
            }
            AuditSinkConfig::File(c) => Box::new(FileSink::new(c)),
            AuditSinkConfig::Stdout(c) => Box::new(StdoutSink::new(c)),
        };
        out.push(sink);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn rec(seq: u64, len: usize) -> ShipRecord {
        ShipRecord {
            seq,
            time: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            json: format!("{{\"p\":\"{}\"}}", "x".repeat(len.saturating_sub(8))),
            fields: BTreeMap::new(),
        }
    }

    #[test]
    fn fit_respects_both_limits_and_always_takes_one() {
        let l = BatchLimits {
            records_max: 3,
            bytes_max: 100,
        };
        let rs: Vec<_> = (1..=5).map(|s| rec(s, 40)).collect();
        assert_eq!(l.fit(&rs), 2, "the third would make 120 bytes");
        let small: Vec<_> = (1..=5).map(|s| rec(s, 10)).collect();
        assert_eq!(l.fit(&small), 3);
        assert_eq!(l.fit(&[rec(1, 500)]), 1);
        assert_eq!(l.fit(&[]), 0);
        assert!(!l.admits(&rs[..3]));
        assert!(l.admits(&rs[..2]));
    }

    #[test]
    fn over_limit_or_unordered_batches_are_refused_before_sending() {
        let l = BatchLimits {
            records_max: 2,
            bytes_max: 100,
        };
        assert!(check_batch(&l, &[rec(1, 10), rec(2, 10)]).is_ok());
        assert!(matches!(
            check_batch(&l, &[rec(1, 10), rec(2, 10), rec(3, 10)]),
            Err(ShipError::Refused { seq: None, .. })
        ));
        assert_eq!(
            check_batch(&l, &[rec(1, 10), rec(2, 200)]),
            Err(ShipError::Refused {
                reason: "record of 200 bytes is over the sink's limit of 100 bytes".into(),
                seq: Some(2)
            })
        );
        assert!(matches!(
            check_batch(&l, &[rec(2, 10), rec(2, 10)]),
            Err(ShipError::Refused { seq: Some(2), .. })
        ));
        let e = ShipError::Refused {
            reason: "bad".into(),
            seq: Some(7),
        };
        assert_eq!(e.to_string(), "refused: bad (record seq 7)");
    }
}
