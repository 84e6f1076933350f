//! One bounded HTTP exchange, and mapping its failures to [`TargetError`] classes.

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};

use crate::error::TargetError;
use crate::secret::Redactor;
use crate::{ERROR_DETAIL_CHARS_MAX, RESPONSE_BODY_BYTES_MAX};

/// What came back: the status, any Retry-After, and the (bounded) body. The body
/// is raw: success data must not be altered; error text is scrubbed in [`status_error`].
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: String,
    /// The body was longer than the cap and was cut.
    pub truncated: bool,
}

/// Sends `req` and reads at most [`RESPONSE_BODY_BYTES_MAX`] of the reply.
/// Transport failures are retryable; their text never includes the URL.
pub(crate) async fn send(
    target: &'static str,
    req: RequestBuilder,
    timeout_ms: u64,
    redact: &Redactor,
) -> Result<Reply, TargetError> {
    send_capped(target, req, timeout_ms, redact, RESPONSE_BODY_BYTES_MAX).await
}

/// [`send`], reading at most `body_bytes_max` of the reply.
pub(crate) async fn send_capped(
    target: &'static str,
    req: RequestBuilder,
    timeout_ms: u64,
    redact: &Redactor,
    body_bytes_max: usize,
) -> Result<Reply, TargetError> {
    let mut resp = req
        .timeout(Duration::from_millis(timeout_ms))
        .send()
        .await
        .map_err(|e| transport_error(target, e, timeout_ms, redact))?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut bytes = Vec::new();
    let mut truncated = false;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = body_bytes_max.saturating_sub(bytes.len());
                if chunk.len() > room {
                    truncated = true;
                }
                bytes.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
                if truncated {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => return Err(transport_error(target, e, timeout_ms, redact)),
        }
    }
    Ok(Reply {
        status,
        retry_after,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        truncated,
    })
}

fn transport_error(
    target: &'static str,
    e: reqwest::Error,
    timeout_ms: u64,
    redact: &Redactor,
) -> TargetError {
    let e = e.without_url();
    if e.is_timeout() {
        return TargetError::retryable(target, format!("timed out after {timeout_ms} ms"));
    }
    if let Some(why) = tg_identity::trust::certificate_failure(&e) {
        // Retryable: the action waits in the outbox until the trust is fixed.
        return TargetError::retryable(target, format!("connection failed: {why}"));
    }
    // The source chain says why (refused, reset, dns); the URL was stripped above.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let kind = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    TargetError::retryable(target, format!("{kind}: {}", cut(&redact.scrub(&text))))
}

/// Classifies a non-success reply: 429 throttled, 408 and 5xx retryable, the rest permanent.
/// `what` is scrubbed of secrets before it is cut, so no part of one survives.
pub(crate) fn status_error(
    target: &'static str,
    reply: &Reply,
    what: &str,
    redact: &Redactor,
) -> TargetError {
    let detail = format!(
        "http {}: {}",
        reply.status.as_u16(),
        cut(&redact.scrub(what))
    );
    if reply.status == StatusCode::TOO_MANY_REQUESTS {
        TargetError::Throttled {
            target,
            retry_after: reply.retry_after,
            detail,
        }
    } else if reply.status.is_server_error() || reply.status == StatusCode::REQUEST_TIMEOUT {
        TargetError::Retryable { target, detail }
    } else {
        TargetError::Permanent { target, detail }
    }
}

/// At most [`ERROR_DETAIL_CHARS_MAX`] chars, cut on a char boundary, on one line.
pub(crate) fn cut(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ERROR_DETAIL_CHARS_MAX)
        .collect();
    one_line.trim().to_owned()
}

/// `text` cut to at most `max` chars on a char boundary.
pub(crate) fn take_chars(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Whether a link may be put in front of people: absolute http(s) only.
pub(crate) fn is_web_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_bounds_and_flattens() {
        let long = "é".repeat(ERROR_DETAIL_CHARS_MAX + 10);
        assert_eq!(cut(&long).chars().count(), ERROR_DETAIL_CHARS_MAX);
        assert_eq!(cut("a\nb\r\n"), "a b");
        assert_eq!(take_chars("héllo", 2), "hé");
    }

    #[test]
    fn only_web_links_pass() {
        assert!(is_web_url("https://grafana.example.com/d/x"));
        assert!(!is_web_url("javascript:alert(1)"));
        assert!(!is_web_url("/relative"));
    }
}
