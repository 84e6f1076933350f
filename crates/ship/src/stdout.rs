//! Standard output, one record JSON per line (containers: the runtime's log
//! collector ships it). Flushed per batch; no resume (stdout has no memory).

use std::io::Write;

use tg_config::StdoutSinkConfig;

use crate::{BatchLimits, SendFuture, ShipError, ShipRecord, Sink, check_batch};

#[derive(Debug)]
pub struct StdoutSink {
    name: String,
    limits: BatchLimits,
}

impl StdoutSink {
    pub fn new(config: &StdoutSinkConfig) -> Self {
        StdoutSink {
            name: config.name.clone(),
            limits: BatchLimits {
                records_max: config.batch_records_max,
                bytes_max: config.batch_bytes_max,
            },
        }
    }

    async fn deliver(&self, batch: &[ShipRecord]) -> Result<(), ShipError> {
        check_batch(&self.limits, batch)?;
        let mut text = Vec::with_capacity(batch.iter().map(|r| r.json.len() + 1).sum());
        for r in batch {
            // A record spanning lines would break line-based collectors.
            if r.json.contains(['\n', '\r']) {
                return Err(ShipError::refused("record spans lines", Some(r.seq)));
            }
            text.extend_from_slice(r.json.as_bytes());
            text.push(b'\n');
        }
        // A blocked pipe must not stall the runtime's workers.
        tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            out.write_all(&text)?;
            out.flush()
        })
        .await
        .map_err(|e| ShipError::retry(format!("stdout task: {e}")))?
        .map_err(|e| ShipError::retry(format!("stdout: {e}")))
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn limits(&self) -> BatchLimits {
        self.limits
    }

    fn send<'a>(&'a self, batch: &'a [ShipRecord]) -> SendFuture<'a> {
        Box::pin(self.deliver(batch))
    }
}
