//! `identity`: who may call the API (inbound JWT validation against the
//! issuer's JWKS). Validation is pure; the server builds the authenticator.

use serde::{Deserialize, Serialize};

/// Largest `leeway_secs` (clock skew) accepted.
pub const LEEWAY_SECS_MAX: u64 = 300;
/// Longest JWKS fetch timeout.
pub const JWKS_TIMEOUT_MS_MAX: u64 = 60_000;
/// Longest JWKS cache age.
pub const JWKS_MAX_AGE_SECS_MAX: u64 = 86_400;
/// Longest time the last good JWKS is used while the issuer is unreachable.
pub const JWKS_STALE_MAX_SECS_MAX: u64 = 7 * 86_400;
/// Algorithms that may be allowed (asymmetric only; never `none` or HMAC).
pub const ALGORITHMS_ALLOWED: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Signed inbound webhooks at most (`identity.inbound.webhooks`).
pub const INBOUND_WEBHOOKS_MAX: usize = 16;
/// Longest replay window of signed inbound webhooks.
pub const REPLAY_WINDOW_SECS_MAX: u64 = 900;

/// A sender that cannot present a bearer JWT signs its deliveries instead:
/// `X-TriageGate-Timestamp` and `X-TriageGate-Signature: v1=<hex HMAC-SHA256
/// of "<timestamp>.<body>">` with a shared secret (at least 32 bytes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundWebhook {
    /// Names the sender; its runs record `webhook:<name>` as the caller.
    pub name: String,
    pub secret: crate::SecretRef,
    /// The sources (`/v1/events/<source>`) it may deliver to; for these a
    /// valid signature is required unless a valid bearer JWT is presented.
    pub sources: Vec<String>,
    /// The signature schemes this sender may use: `v2` (the MAC also covers
    /// the method and path: recommended) and `v1` (body and timestamp only,
    /// the scheme of triage-gate's own outbound webhooks).
    #[serde(default = "default_signature_versions")]
    pub signature_versions: Vec<String>,
}

fn default_signature_versions() -> Vec<String> {
    vec!["v1".to_owned(), "v2".to_owned()]
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default)]
    pub inbound: InboundConfig,
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// Who may use the web console at `/ui` (docs/console.md).
    #[serde(default)]
    pub console: crate::console::ConsoleConfig,
}

/// Default `identity.outbound.probe_interval_secs`.
pub const PROBE_INTERVAL_SECS_DEFAULT: u64 = 30;
/// Longest `identity.outbound.probe_interval_secs`.
pub const PROBE_INTERVAL_SECS_MAX: u64 = 3_600;

/// `identity.outbound`: the OAuth token sources of the action targets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// How often each token source is probed in the background, so readiness
    /// reports a target that cannot get a token before an action needs one.
    /// 0 turns the probes off (readiness then learns from the actions).
    pub probe_interval_secs: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            probe_interval_secs: PROBE_INTERVAL_SECS_DEFAULT,
        }
    }
}

/// `identity.inbound.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboundMode {
    /// No caller authentication: local drills and tests only. `serve` refuses
    /// it unless `insecure_allow_anonymous` is also set; the server logs a
    /// warning at start and `submitted_by` stays empty.
    #[default]
    None,
    /// Bearer JWTs validated against the issuer's JWKS, scopes per route.
    Jwt,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundConfig {
    pub mode: InboundMode,
    /// The operator's acknowledgement that `mode: none` lets anyone call the
    /// API. Without it, `serve` refuses `mode: none` (the default), so a
    /// forgotten identity section cannot open the gate to anonymous callers.
    pub insecure_allow_anonymous: bool,
    /// Exact `iss` of accepted tokens.
    pub issuer: Option<String>,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub leeway_secs: u64,
    /// Longest bearer-token lifetime accepted (`exp - iat`, or `exp - now`
    /// without `iat`).
    pub max_token_lifetime_secs: u64,
    /// E.g. `at+jwt` (RFC 9068); unset accepts any `typ`.
    pub required_typ: Option<String>,
    /// The issuer's key set (never taken from a token's `jku`/`x5u`).
    pub jwks_url: Option<String>,
    pub jwks_timeout_ms: u64,
    pub jwks_max_age_secs: u64,
    pub jwks_refresh_min_interval_secs: u64,
    pub jwks_stale_max_secs: u64,
    /// Senders that sign their deliveries (HMAC-SHA256) instead of a JWT.
    pub webhooks: Vec<InboundWebhook>,
    /// A signed delivery older or newer than this is refused, and a
    /// signature is accepted once within it (replay protection).
    pub replay_window_secs: u64,
    /// The origins each verified sender may claim, by sender identity
    /// (`jwt:<client>`, `webhook:<name>`, `sns:<topic arn>`). A bound sender
    /// claiming any other origin is refused (403 `origin-not-bound`); an
    /// unbound sender's claims are labels. Independence is counted by sender
    /// either way (docs/policy.md).
    pub origins: std::collections::BTreeMap<String, Vec<String>>,
    /// Certificate authorities the JWKS server may chain to besides the
    /// bundled roots; its `ca_file` replaces the top-level `tls.ca_file` here.
    #[serde(skip_serializing_if = "crate::TlsTrust::is_unset")]
    pub tls: crate::TlsTrust,
}

/// Senders in `identity.inbound.origins` at most.
pub const ORIGIN_SENDERS_MAX: usize = 1_024;
/// Origins one sender may be bound to at most.
pub const ORIGINS_PER_SENDER_MAX: usize = 64;
/// The sender identity prefixes the gate assigns.
pub const SENDER_PREFIXES: [&str; 3] = ["jwt:", "webhook:", "sns:"];

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            mode: InboundMode::None,
            insecure_allow_anonymous: false,
            issuer: None,
            audiences: vec!["triage-gate".to_owned()],
            algorithms: vec!["RS256".to_owned(), "ES256".to_owned(), "EdDSA".to_owned()],
            leeway_secs: 60,
            max_token_lifetime_secs: 86_400,
            required_typ: None,
            jwks_url: None,
            jwks_timeout_ms: 5_000,
            jwks_max_age_secs: 3_600,
            jwks_refresh_min_interval_secs: 30,
            jwks_stale_max_secs: 86_400,
            webhooks: Vec::new(),
            replay_window_secs: 300,
            origins: std::collections::BTreeMap::new(),
            tls: crate::TlsTrust::default(),
        }
    }
}

impl IdentityConfig {
    /// Why `serve` must not start with this identity section: anonymous API
    /// callers without the operator's explicit acknowledgement.
    pub fn anonymous_refusal(&self) -> Option<String> {
        (self.inbound.mode == InboundMode::None && !self.inbound.insecure_allow_anonymous).then(|| {
            "identity.inbound.mode is none (the default), so any caller could submit events and read runs; \
             set identity.inbound.mode: jwt (see docs/configuration.md, identity), or acknowledge \
             anonymous access for a drill with identity.inbound.insecure_allow_anonymous: true"
                .to_owned()
        })
    }

    /// Every problem at once, as (path, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.outbound.probe_interval_secs > PROBE_INTERVAL_SECS_MAX {
            out.push((
                "identity.outbound.probe_interval_secs".to_owned(),
                format!(
                    "{} exceeds {PROBE_INTERVAL_SECS_MAX}",
                    self.outbound.probe_interval_secs
                ),
            ));
        }
        out.extend(self.console.check());
        let i = &self.inbound;
        let p = |k: &str| format!("identity.inbound.{k}");
        if i.origins.len() > ORIGIN_SENDERS_MAX {
            out.push((
                p("origins"),
                format!("{} senders, at most {ORIGIN_SENDERS_MAX}", i.origins.len()),
            ));
        }
        for (sender, origins) in &i.origins {
            let sp = format!("identity.inbound.origins.{sender}");
            if !SENDER_PREFIXES.iter().any(|pre| sender.starts_with(pre)) {
                out.push((
                    sp.clone(),
                    format!(
                        "a sender identity starts with one of {SENDER_PREFIXES:?} (jwt:<client_id or sub>, webhook:<name>, sns:<topic arn>)"
                    ),
                ));
            }
            if origins.is_empty() || origins.len() > ORIGINS_PER_SENDER_MAX {
                out.push((
                    sp,
                    format!(
                        "1 to {ORIGINS_PER_SENDER_MAX} origins, got {}",
                        origins.len()
                    ),
                ));
            }
        }
        // Signed webhooks are enforced in either mode, so checked in either.
        if i.webhooks.len() > INBOUND_WEBHOOKS_MAX {
            out.push((
                p("webhooks"),
                format!(
                    "{} webhooks, at most {INBOUND_WEBHOOKS_MAX}",
                    i.webhooks.len()
                ),
            ));
        }
        if i.replay_window_secs == 0 || i.replay_window_secs > REPLAY_WINDOW_SECS_MAX {
            out.push((
                p("replay_window_secs"),
                format!(
                    "{} is outside 1..={REPLAY_WINDOW_SECS_MAX}",
                    i.replay_window_secs
                ),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (n, w) in i.webhooks.iter().enumerate() {
            let wp = |k: &str| format!("identity.inbound.webhooks.{n}.{k}");
            if w.name.trim().is_empty() || !names.insert(w.name.as_str()) {
                out.push((wp("name"), format!("{:?} is empty or repeated", w.name)));
            }
            if w.sources.is_empty() {
                out.push((wp("sources"), "needs at least one source".into()));
            }
            if w.signature_versions.is_empty() {
                out.push((wp("signature_versions"), "needs v1, v2 or both".into()));
            }
            for v in &w.signature_versions {
                if v != "v1" && v != "v2" {
                    out.push((
                        wp("signature_versions"),
                        format!("{v:?} is not a signature version (v1 or v2)"),
                    ));
                }
            }
            for s in &w.sources {
                let known = tg_model::Source::ALL.iter().any(|k| k.as_str() == s);
                if !known || s == "cloudwatch-sns" {
                    out.push((
                        wp("sources"),
                        format!("{s:?} is not a source that can be signed (cloudwatch-sns has its own signatures)"),
                    ));
                }
            }
        }
        if i.mode == InboundMode::None {
            return out;
        }
        if i.insecure_allow_anonymous {
            out.push((
                p("insecure_allow_anonymous"),
                "only applies to mode none; remove it with mode jwt".into(),
            ));
        }
        match i.issuer.as_deref() {
            Some(s) if !s.trim().is_empty() => {}
            _ => out.push((p("issuer"), "is required when mode is jwt".into())),
        }
        match i.jwks_url.as_deref().map(crate::urls::https_or_loopback) {
            Some(Ok(_)) => {}
            Some(Err(e)) => out.push((p("jwks_url"), e)),
            None => out.push((p("jwks_url"), "is required when mode is jwt".into())),
        }
        if i.audiences.iter().all(|a| a.trim().is_empty()) {
            out.push((p("audiences"), "needs at least one audience".into()));
        }
        if i.algorithms.is_empty() {
            out.push((p("algorithms"), "needs at least one algorithm".into()));
        }
        for a in &i.algorithms {
            if !ALGORITHMS_ALLOWED.contains(&a.as_str()) {
                out.push((
                    p("algorithms"),
                    format!(
                        "{a:?} is not allowed (asymmetric only: {})",
                        ALGORITHMS_ALLOWED.join(", ")
                    ),
                ));
            }
        }
        if !(60..=30 * 86_400).contains(&i.max_token_lifetime_secs) {
            out.push((
                p("max_token_lifetime_secs"),
                format!(
                    "{} is outside 60..=2592000 (a minute to 30 days)",
                    i.max_token_lifetime_secs
                ),
            ));
        }
        if i.leeway_secs > LEEWAY_SECS_MAX {
            out.push((
                p("leeway_secs"),
                format!("{} exceeds {LEEWAY_SECS_MAX}", i.leeway_secs),
            ));
        }
        for (k, v, max) in [
            ("jwks_timeout_ms", i.jwks_timeout_ms, JWKS_TIMEOUT_MS_MAX),
            (
                "jwks_max_age_secs",
                i.jwks_max_age_secs,
                JWKS_MAX_AGE_SECS_MAX,
            ),
            (
                "jwks_refresh_min_interval_secs",
                i.jwks_refresh_min_interval_secs,
                JWKS_MAX_AGE_SECS_MAX,
            ),
            (
                "jwks_stale_max_secs",
                i.jwks_stale_max_secs,
                JWKS_STALE_MAX_SECS_MAX,
            ),
        ] {
            if v == 0 || v > max {
                out.push((p(k), format!("{v} is outside 1..={max}")));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_mode_needs_issuer_and_jwks_and_refuses_hmac() {
        let mut c = IdentityConfig::default();
        assert!(c.check().is_empty(), "mode none needs nothing");
        c.inbound.mode = InboundMode::Jwt;
        c.inbound.algorithms.push("HS256".into());
        c.inbound.jwks_url = Some("http://idp.example/keys".into());
        let errs = c.check();
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert!(paths.contains(&"identity.inbound.issuer"), "{errs:?}");
        assert!(paths.contains(&"identity.inbound.jwks_url"), "{errs:?}");
        assert!(paths.contains(&"identity.inbound.algorithms"), "{errs:?}");
        c.inbound.algorithms.pop();
        c.inbound.issuer = Some("https://idp.example".into());
        c.inbound.jwks_url = Some("http://127.0.0.1:9000/keys".into());
        assert!(c.check().is_empty(), "{:?}", c.check());
        // Issue 21 item 4: user info made a remote host look like loopback.
        c.inbound.jwks_url = Some("http://127.0.0.1:1@jwks.example.com/keys".into());
        let errs = c.check();
        assert!(
            errs.iter()
                .any(|(p, m)| p == "identity.inbound.jwks_url" && m.contains("user info")),
            "{errs:?}"
        );
    }

    #[test]
    fn anonymous_access_needs_the_operators_acknowledgement() {
        let mut c = IdentityConfig::default();
        assert!(
            c.anonymous_refusal().is_some(),
            "the default refuses to serve"
        );
        c.inbound.insecure_allow_anonymous = true;
        assert!(c.anonymous_refusal().is_none());
        assert!(c.check().is_empty());
        // With jwt the acknowledgement means nothing: refused as a mistake.
        c.inbound.mode = InboundMode::Jwt;
        c.inbound.issuer = Some("https://idp.example".into());
        c.inbound.jwks_url = Some("https://idp.example/keys".into());
        assert!(c.anonymous_refusal().is_none());
        let errs = c.check();
        assert!(
            errs.iter()
                .any(|(p, _)| p == "identity.inbound.insecure_allow_anonymous"),
            "{errs:?}"
        );
    }
}
