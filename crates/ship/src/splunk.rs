//! Splunk HTTP Event Collector: `POST {url}/services/collector/event`, the
//! batch as concatenated JSON event objects, `Authorization: Splunk <token>`.
//!
//! HEC has no idempotency key: a batch resent after an in-doubt failure (a
//! timeout, a dropped connection, an acknowledgement that never came) may be
//! indexed twice. Every event therefore carries the record's `seq` and `hash`
//! as indexed fields, so searches can dedupe. With `ack: true` the sink waits
//! for the indexer acknowledgement, which narrows the in-doubt window to the
//! acknowledgement timeout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tg_config::SplunkHecSinkConfig;
use tg_model::Secret;

use crate::http::{self, Answer};
use crate::{BatchLimits, SendFuture, ShipError, ShipRecord, Sink, check_batch};

/// HEC status codes worth retrying (8 internal error, 9 server busy, 18-20 unhealthy queues or ack service).
const RETRY_CODES: &[i64] = &[8, 9, 18, 19, 20];

pub struct SplunkHecSink {
    name: String,
    event_url: String,
    ack_url: String,
    token: Secret,
    /// Fixed per sink at build: acknowledgement ids are per channel.
    channel: Option<String>,
    config: SplunkHecSinkConfig,
    http: reqwest::Client,
}

impl std::fmt::Debug for SplunkHecSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplunkHecSink")
            .field("name", &self.name)
            .field("event_url", &self.event_url)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// One HEC event; `event` is the record's JSON as stored, embedded verbatim.
#[derive(Serialize)]
struct HecEvent<'a> {
    time: &'a RawValue,
    host: &'a str,
    source: &'a str,
    sourcetype: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<&'a str>,
    event: &'a RawValue,
    fields: BTreeMap<&'a str, &'a str>,
}

/// The record's `hash`, if it has one (every chain record does).
#[derive(Deserialize)]
struct HashOnly {
    #[serde(default)]
    hash: Option<String>,
}

/// HEC's answer: `{"text","code"}`, plus `ackId` or `invalid-event-number`.
#[derive(Deserialize, Default)]
struct HecAnswer {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default, rename = "ackId")]
    ack_id: Option<u64>,
    #[serde(default, rename = "invalid-event-number")]
    invalid_event_number: Option<usize>,
}

#[derive(Deserialize)]
struct AckAnswer {
    acks: BTreeMap<String, bool>,
}

impl SplunkHecSink {
    pub fn new(
        config: &SplunkHecSinkConfig,
        token: Secret,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        if token.expose().is_empty() {
            return Err("token: empty".into());
        }
        let base = config.url.trim_end_matches('/');
        if reqwest::Url::parse(base).is_err() {
            return Err(format!("url: {base:?} is not a URL"));
        }
        Ok(SplunkHecSink {
            name: config.name.clone(),
            event_url: format!("{base}/services/collector/event"),
            ack_url: format!("{base}/services/collector/ack"),
            token,
            channel: config.ack.then(|| uuid::Uuid::new_v4().to_string()),
            config: config.clone(),
            http,
        })
    }

    /// The acknowledgement channel GUID (`None` without `ack`).
    pub fn channel(&self) -> Option<&str> {
        self.channel.as_deref()
    }

    /// The request body: one event object per record, concatenated.
    pub fn body(&self, batch: &[ShipRecord]) -> Result<Vec<u8>, ShipError> {
        let mut out = Vec::new();
        for r in batch {
            let event = RawValue::from_string(r.json.clone())
                .map_err(|e| ShipError::refused(format!("record is not JSON: {e}"), Some(r.seq)))?;
            if !r.json.trim_start().starts_with('{') {
                return Err(ShipError::refused(
                    "record is not a JSON object",
                    Some(r.seq),
                ));
            }
            let hash = serde_json::from_str::<HashOnly>(&r.json)
                .ok()
                .and_then(|h| h.hash);
            let millis = r.time.timestamp_millis();
            let time = RawValue::from_string(format!(
                "{}.{:03}",
                millis.div_euclid(1000),
                millis.rem_euclid(1000)
            ))
            .map_err(|e| ShipError::refused(format!("time: {e}"), Some(r.seq)))?;
            let seq = r.seq.to_string();
            let mut fields: BTreeMap<&str, &str> = r
                .fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            fields.insert("seq", &seq);
            if let Some(h) = hash.as_deref() {
                fields.insert("hash", h);
            }
            let e = HecEvent {
                time: &time,
                host: &self.config.host,
                source: &self.config.source,
                sourcetype: &self.config.sourcetype,
                index: self.config.index.as_deref(),
                event: &event,
                fields,
            };
            serde_json::to_writer(&mut out, &e)
                .map_err(|e| ShipError::refused(format!("encoding: {e}"), Some(r.seq)))?;
            out.push(b'\n');
        }
        Ok(out)
    }

    fn request(&self, url: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(url)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Splunk {}", self.token.expose()),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(ch) = &self.channel {
            req = req.header("X-Splunk-Request-Channel", ch);
        }
        req
    }

    fn failure(&self, answer: &Answer, batch: &[ShipRecord]) -> ShipError {
        let parsed: HecAnswer = serde_json::from_slice(&answer.body).unwrap_or_default();
        let text = match (&parsed.text, parsed.code) {
            (Some(t), Some(c)) => format!("{} code {c} {:?}", answer.status, http::truncate(t)),
            _ => format!(
                "{} {}",
                answer.status,
                http::quote(&answer.body, &[&self.token])
            ),
        };
        let reason = http::scrub(&format!("splunk hec answered {text}"), &[&self.token]);
        let retry_status = matches!(answer.status, 429 | 500 | 502 | 503 | 504);
        if retry_status || parsed.code.is_some_and(|c| RETRY_CODES.contains(&c)) {
            return ShipError::Retryable {
                reason,
                retry_after: http::retry_after(&answer.headers),
            };
        }
        let seq = parsed
            .invalid_event_number
            .and_then(|i| batch.get(i))
            .map(|r| r.seq);
        ShipError::refused(reason, seq)
    }

    async fn deliver(&self, batch: &[ShipRecord]) -> Result<(), ShipError> {
        check_batch(&self.limits(), batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        let body = self.body(batch)?;
        let resp = self
            .request(&self.event_url, body)
            .send()
            .await
            .map_err(|e| http::transport(&e))?;
        let answer = http::read(resp).await?;
        if answer.status != 200 {
            return Err(self.failure(&answer, batch));
        }
        let parsed: HecAnswer = serde_json::from_slice(&answer.body).unwrap_or_default();
        if parsed.code.is_some_and(|c| c != 0) {
            return Err(self.failure(&answer, batch));
        }
        if self.channel.is_none() {
            return Ok(());
        }
        let Some(ack_id) = parsed.ack_id else {
            // The batch was received but cannot be confirmed: loud, so the
            // token's acknowledgement setting gets fixed (a resend may duplicate).
            return Err(ShipError::refused(
                "splunk hec answered without an ackId: indexer acknowledgement is off for this token (set ack: false or enable it)",
                None,
            ));
        };
        self.await_ack(ack_id).await
    }

    /// Polls `/services/collector/ack` until the id is acknowledged or the
    /// timeout passes (then the batch is in doubt: retryable, may duplicate).
    async fn await_ack(&self, ack_id: u64) -> Result<(), ShipError> {
        let timeout = Duration::from_millis(self.config.ack_timeout_ms);
        let poll = Duration::from_millis(self.config.ack_poll_ms);
        let started = Instant::now();
        let key = ack_id.to_string();
        let body = format!("{{\"acks\":[{ack_id}]}}").into_bytes();
        let mut last = String::from("not acknowledged yet");
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(ShipError::retry(format!(
                    "splunk hec ackId {ack_id} not acknowledged within {} ms ({last}); the batch is in doubt and a resend may duplicate it",
                    self.config.ack_timeout_ms
                )));
            }
            tokio::time::sleep(poll.min(left)).await;
            let answer = match self.request(&self.ack_url, body.clone()).send().await {
                Ok(resp) => http::read(resp).await,
                Err(e) => Err(http::transport(&e)),
            };
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    last = e.reason().to_owned();
                    continue;
                }
            };
            if answer.status != 200 {
                match self.failure(&answer, &[]) {
                    ShipError::Retryable { reason, .. } => {
                        last = reason;
                        continue;
                    }
                    refused => return Err(refused),
                }
            }
            match serde_json::from_slice::<AckAnswer>(&answer.body) {
                Ok(a) if a.acks.get(&key).copied() == Some(true) => return Ok(()),
                Ok(_) => last = "not acknowledged yet".into(),
                Err(_) => {
                    last = format!(
                        "unreadable ack answer {}",
                        http::quote(&answer.body, &[&self.token])
                    );
                }
            }
        }
    }
}

impl Sink for SplunkHecSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// `bytes_max` counts record JSON; each event adds its envelope (time,
    /// host, source, sourcetype, index, fields), a few hundred bytes.
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
    use tg_config::SecretRef;

    fn config(ack: bool) -> SplunkHecSinkConfig {
        SplunkHecSinkConfig {
            name: "splunk".into(),
            url: "http://127.0.0.1:1/".into(),
            token: SecretRef::Env("T".into()),
            host: "gate-1".into(),
            source: "triage-gate".into(),
            sourcetype: "triage-gate:audit".into(),
            index: Some("audit".into()),
            ack,
            ack_timeout_ms: 1000,
            ack_poll_ms: 10,
            timeout_ms: 1000,
            batch_records_max: 10,
            batch_bytes_max: 10_000,
            tls: Default::default(),
        }
    }

    #[test]
    fn body_is_concatenated_events_with_seq_and_hash_fields() {
        let sink =
            SplunkHecSink::new(&config(true), Secret::new("tok"), reqwest::Client::new()).unwrap();
        assert!(sink.channel().is_some());
        let time = chrono::DateTime::parse_from_rfc3339("2026-08-01T10:00:00.123Z")
            .unwrap()
            .to_utc();
        let rec = |seq: u64| ShipRecord {
            seq,
            time,
            json: format!("{{\"seq\":{seq},\"z\":1,\"a\":2,\"hash\":\"h{seq}\"}}"),
            fields: [("kind".to_owned(), "run".to_owned())].into(),
        };
        let body = String::from_utf8(sink.body(&[rec(1), rec(2)]).unwrap()).unwrap();
        let events: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&body)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["event"]["hash"], "h2");
        assert_eq!(events[1]["fields"]["seq"], "2");
        assert_eq!(events[1]["fields"]["hash"], "h2");
        assert_eq!(events[1]["fields"]["kind"], "run");
        assert_eq!(events[0]["index"], "audit");
        assert!(
            body.contains("\"time\":1785578400.123"),
            "time keeps its millis: {body}"
        );
        assert!(
            body.contains("\"event\":{\"seq\":1,\"z\":1,\"a\":2"),
            "the record is embedded verbatim: {body}"
        );
        let bad = ShipRecord {
            json: "[1]".into(),
            ..rec(3)
        };
        assert!(matches!(
            sink.body(&[bad]),
            Err(ShipError::Refused { seq: Some(3), .. })
        ));
    }
}
