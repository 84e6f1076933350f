//! OTLP/HTTP logs, JSON encoding: `POST {endpoint}/v1/logs` with an
//! `ExportLogsServiceRequest` (one resource `service.name=triage-gate`, one
//! scope, a log record per chain record: `timeUnixNano`, body `stringValue` =
//! the record JSON, attributes = the indexed fields plus `seq`).
//!
//! Retried: 429, 502, 503, 504 (`Retry-After` honoured) and transport
//! failures; any other status, or a `partialSuccess` rejecting records, is a
//! refusal (the OTLP specification says not to retry those).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tg_config::OtlpSinkConfig;
use tg_model::Secret;

use crate::http;
use crate::{BatchLimits, SendFuture, ShipError, ShipRecord, Sink, check_batch};

/// `service.name` of the resource.
pub const SERVICE_NAME: &str = "triage-gate";
/// The instrumentation scope of audit records.
pub const SCOPE_NAME: &str = "triage-gate.audit";
/// OTLP `SEVERITY_NUMBER_INFO`: audit records are informational.
const SEVERITY_INFO: u8 = 9;

pub struct OtlpSink {
    name: String,
    url: String,
    token: Option<Secret>,
    config: OtlpSinkConfig,
    http: reqwest::Client,
}

impl std::fmt::Debug for OtlpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSink")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogRecord {
    time_unix_nano: String,
    observed_time_unix_nano: String,
    severity_number: u8,
    severity_text: &'static str,
    body: Value,
    attributes: Vec<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ExportAnswer {
    #[serde(default)]
    partial_success: Option<PartialSuccess>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PartialSuccess {
    /// int64: a JSON string by the protobuf mapping, a number from some servers.
    #[serde(default)]
    rejected_log_records: Option<Value>,
    #[serde(default)]
    error_message: Option<String>,
}

fn string_attr(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

fn nanos(t: chrono::DateTime<chrono::Utc>) -> String {
    // Before 1677 or after 2262 does not fit i64 nanoseconds; micros * 1000 then.
    match t.timestamp_nanos_opt() {
        Some(n) => n.max(0).to_string(),
        None => format!("{}000", t.timestamp_micros().max(0)),
    }
}

impl OtlpSink {
    pub fn new(
        config: &OtlpSinkConfig,
        token: Option<Secret>,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        let base = config.endpoint.trim_end_matches('/');
        if reqwest::Url::parse(base).is_err() {
            return Err(format!("endpoint: {base:?} is not a URL"));
        }
        Ok(OtlpSink {
            name: config.name.clone(),
            url: format!("{base}/v1/logs"),
            token,
            config: config.clone(),
            http,
        })
    }

    /// The `ExportLogsServiceRequest` JSON for `batch`.
    pub fn request(batch: &[ShipRecord], observed: chrono::DateTime<chrono::Utc>) -> Value {
        let observed = nanos(observed);
        let records: Vec<LogRecord> = batch
            .iter()
            .map(|r| {
                let mut attributes: Vec<Value> =
                    r.fields.iter().map(|(k, v)| string_attr(k, v)).collect();
                // int64 is a string in OTLP JSON.
                attributes.push(json!({"key": "seq", "value": {"intValue": r.seq.to_string()}}));
                LogRecord {
                    time_unix_nano: nanos(r.time),
                    observed_time_unix_nano: observed.clone(),
                    severity_number: SEVERITY_INFO,
                    severity_text: "INFO",
                    body: json!({"stringValue": r.json}),
                    attributes,
                }
            })
            .collect();
        json!({
            "resourceLogs": [{
                "resource": {"attributes": [string_attr("service.name", SERVICE_NAME)]},
                "scopeLogs": [{
                    "scope": {"name": SCOPE_NAME},
                    "logRecords": records,
                }],
            }],
        })
    }

    fn secrets(&self) -> Vec<&Secret> {
        self.token.iter().collect()
    }

    async fn deliver(&self, batch: &[ShipRecord]) -> Result<(), ShipError> {
        check_batch(&self.limits(), batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_vec(&Self::request(batch, chrono::Utc::now()))
            .map_err(|e| ShipError::refused(format!("encoding: {e}"), None))?;
        let mut req = self
            .http
            .post(&self.url)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(t) = &self.token {
            req = req.header(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", t.expose()),
            );
        }
        let resp = req.send().await.map_err(|e| http::transport(&e))?;
        let answer = http::read(resp).await?;
        let reason = || {
            format!(
                "otlp collector answered {} {}",
                answer.status,
                http::quote(&answer.body, &self.secrets())
            )
        };
        match answer.status {
            200..=299 => {}
            429 | 502 | 503 | 504 => {
                return Err(ShipError::Retryable {
                    reason: reason(),
                    retry_after: http::retry_after(&answer.headers),
                });
            }
            _ => return Err(ShipError::refused(reason(), None)),
        }
        let parsed: ExportAnswer = serde_json::from_slice(&answer.body).unwrap_or_default();
        let Some(p) = parsed.partial_success else {
            return Ok(());
        };
        let rejected = match &p.rejected_log_records {
            Some(Value::String(s)) => s.parse::<u64>().unwrap_or(0),
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        if rejected == 0 {
            return Ok(());
        }
        Err(ShipError::refused(
            http::scrub(
                &format!(
                    "otlp collector rejected {rejected} of {} log records: {}",
                    batch.len(),
                    http::truncate(p.error_message.as_deref().unwrap_or("no message"))
                ),
                &self.secrets(),
            ),
            None,
        ))
    }
}

impl Sink for OtlpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            records_max: self.config.batch_records_max,
            bytes_max: self.config.batch_bytes_max,
        }
    }

    fn send<'a>(&'a self, batch: &'a [ShipRecord]) -> SendFuture<'a> {
        Box::pin(self.deliver(batch))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn request_has_the_otlp_json_shape() {
        let t = chrono::DateTime::from_timestamp_millis(1_785_578_400_123).unwrap();
        let r = ShipRecord {
            seq: 42,
            time: t,
            json: "{\"a\":1}".into(),
            fields: [("run_id".to_owned(), "run_1".to_owned())].into(),
        };
        let v = OtlpSink::request(&[r], t);
        let res = &v["resourceLogs"][0];
        assert_eq!(res["resource"]["attributes"][0]["key"], "service.name");
        assert_eq!(
            res["resource"]["attributes"][0]["value"]["stringValue"],
            "triage-gate"
        );
        let lr = &res["scopeLogs"][0]["logRecords"][0];
        assert_eq!(lr["timeUnixNano"], "1785578400123000000");
        assert_eq!(lr["body"]["stringValue"], "{\"a\":1}");
        assert_eq!(lr["attributes"][0]["key"], "run_id");
        assert_eq!(lr["attributes"][1]["value"]["intValue"], "42");
    }
}
