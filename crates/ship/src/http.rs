//! What the HTTP sinks share: bounded response reading, `Retry-After`,
//! transport failures, and error text that never carries a secret.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use tg_model::Secret;

use crate::ShipError;

/// Largest response body read from a sink (answers are small JSON documents).
pub(crate) const RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// Longest `Retry-After` honoured; a longer one is capped (the driver retries anyway).
pub(crate) const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);
/// Characters of a sink's answer quoted in an error reason.
pub(crate) const QUOTE_CHARS_MAX: usize = 200;

/// A response's status, headers and (bounded) body.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Reads at most [`RESPONSE_BYTES_MAX`]; a longer body is cut (only quoted or
/// parsed for error codes, so the cut loses nothing a sink needs).
pub(crate) async fn read(mut resp: reqwest::Response) -> Result<Answer, ShipError> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = RESPONSE_BYTES_MAX.saturating_sub(body.len());
                body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
                if body.len() >= RESPONSE_BYTES_MAX {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => return Err(transport(&e)),
        }
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A failure before an answer: always retryable (the batch may or may not
/// have arrived; every sink documents how it deals with a resend).
pub(crate) fn transport(e: &reqwest::Error) -> ShipError {
    if let Some(why) = tg_identity::trust::certificate_failure(e) {
        return ShipError::retry(format!("connection failed: {why}"));
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    // `without_url`: the URL is harmless, but nothing else of the request is quoted either.
    let detail = source_chain(e);
    ShipError::retry(format!("{what}: {detail}"))
}

fn source_chain(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut out = String::new();
    let mut cur: Option<&dyn Error> = e.source();
    let mut depth = 0;
    while let Some(err) = cur
        && depth < 4
    {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&err.to_string());
        cur = err.source();
        depth += 1;
    }
    if out.is_empty() {
        "no detail".into()
    } else {
        truncate(&out)
    }
}

/// `Retry-After` in seconds (or an HTTP date), capped at [`RETRY_AFTER_MAX`].
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            let secs = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
            Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        }
    };
    Some(d.min(RETRY_AFTER_MAX))
}

/// Cut to [`QUOTE_CHARS_MAX`] characters.
pub(crate) fn truncate(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS_MAX) {
        Some((i, _)) => format!("{}...", text.get(..i).unwrap_or_default()),
        None => text.to_owned(),
    }
}

/// A sink's answer, quoted for an error: cut, and any secret replaced (a
/// proxy may echo the `Authorization` header back).
pub(crate) fn quote(body: &[u8], secrets: &[&Secret]) -> String {
    scrub(&truncate(&String::from_utf8_lossy(body)), secrets)
}

pub(crate) fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        let v = s.expose();
        if !v.is_empty() && out.contains(v) {
            out = out.replace(v, "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn retry_after_is_parsed_and_capped() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "99999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(RETRY_AFTER_MAX));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn quotes_are_cut_and_scrubbed() {
        let s = Secret::new("tok-123");
        assert_eq!(
            quote(b"bad token tok-123 here", &[&s]),
            "bad token [redacted] here"
        );
        let long = "é".repeat(500);
        assert_eq!(
            quote(long.as_bytes(), &[]).chars().count(),
            QUOTE_CHARS_MAX + 3
        );
    }
}
