//! `identity.console`: who may use the web console at `/ui` (docs/console.md).
//! Validation is pure; the server builds the session key and the guard.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Longest console session (`session_ttl_secs`): a working day and a bit.
pub const SESSION_TTL_SECS_MAX: u64 = 86_400;
/// Shortest session key (`session_key`): the cookie key takes 64 bytes
/// (32 signing, 32 encryption).
pub const SESSION_KEY_BYTES_MIN: usize = 64;
/// Trusted proxy addresses at most (`proxy.trusted_proxies`).
pub const TRUSTED_PROXIES_MAX: usize = 64;
/// Role entries at most (`roles`).
pub const ROLES_MAX: usize = 1_000;
/// Longest user name taken from the proxy header, in bytes.
pub const PROXY_USER_BYTES_MAX: usize = 256;

/// The scopes a console role may grant (the API's names).
pub const CONSOLE_SCOPES: &[&str] = &["runs:read", "review:decide", "audit:read", "admin"];

/// `identity.console.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleMode {
    /// The API's own identity (`identity.inbound`): with `mode: jwt`, sign in
    /// with a bearer token verified exactly as the API verifies it (issuer,
    /// audience, keys, scopes); with `mode: none` (acknowledged by
    /// `insecure_allow_anonymous`), the console is as open as the API.
    #[default]
    Inbound,
    /// A trusted reverse proxy (oauth2-proxy, Pomerium, a cloud IAP) signs the
    /// user in with OIDC and names them in `proxy.user_header`; the header is
    /// believed only from `proxy.trusted_proxies`, scopes come from `roles`.
    Proxy,
    /// No console: `/ui` answers 404.
    Off,
}

/// `identity.console.proxy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// The header the proxy sets to the signed-in user.
    pub user_header: String,
    /// Peer addresses whose `user_header` is believed (the proxy's own).
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            user_header: "X-Forwarded-User".to_owned(),
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    pub mode: ConsoleMode,
    pub proxy: ProxyConfig,
    /// Proxy mode: user (as the proxy names them) -> scopes; `"*"` is any
    /// signed-in user. A user listed by name gets only that entry.
    pub roles: BTreeMap<String, Vec<String>>,
    /// A session lasts at most this long (token mode: never past the token's `exp`).
    pub session_ttl_secs: u64,
    /// Key of the encrypted session cookie (at least 64 bytes). Unset: a
    /// random key per process (sessions end at a restart and are not shared
    /// between replicas).
    pub session_key: Option<crate::SecretRef>,
    /// `Secure` on the session cookie (only sent over HTTPS). Turn off only
    /// for plain-HTTP loopback use.
    pub cookie_secure: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            mode: ConsoleMode::Inbound,
            proxy: ProxyConfig::default(),
            roles: BTreeMap::new(),
            session_ttl_secs: 8 * 3_600,
            session_key: None,
            cookie_secure: true,
        }
    }
}

impl ConsoleConfig {
    /// Every problem at once, as (path, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let p = |k: &str| format!("identity.console.{k}");
        if self.session_ttl_secs == 0 || self.session_ttl_secs > SESSION_TTL_SECS_MAX {
            out.push((
                p("session_ttl_secs"),
                format!(
                    "{} is outside 1..={SESSION_TTL_SECS_MAX}",
                    self.session_ttl_secs
                ),
            ));
        }
        if self.roles.len() > ROLES_MAX {
            out.push((
                p("roles"),
                format!("{} entries, at most {ROLES_MAX}", self.roles.len()),
            ));
        }
        for (user, scopes) in &self.roles {
            if user.trim().is_empty() || user.len() > PROXY_USER_BYTES_MAX {
                out.push((
                    p("roles"),
                    format!("user {user:?} is empty or over {PROXY_USER_BYTES_MAX} bytes"),
                ));
            }
            for s in scopes {
                if !CONSOLE_SCOPES.contains(&s.as_str()) {
                    out.push((
                        format!("identity.console.roles.{user}"),
                        format!("{s:?} is not one of {}", CONSOLE_SCOPES.join(", ")),
                    ));
                }
            }
        }
        if self.mode == ConsoleMode::Proxy {
            let h = &self.proxy.user_header;
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                out.push((
                    p("proxy.user_header"),
                    format!("{h:?} is not a header name"),
                ));
            }
            if self.proxy.trusted_proxies.is_empty() {
                out.push((
                    p("proxy.trusted_proxies"),
                    "proxy mode needs the proxy's address (a header from anyone else is ignored)"
                        .into(),
                ));
            }
            if self.proxy.trusted_proxies.len() > TRUSTED_PROXIES_MAX {
                out.push((
                    p("proxy.trusted_proxies"),
                    format!(
                        "{} addresses, at most {TRUSTED_PROXIES_MAX}",
                        self.proxy.trusted_proxies.len()
                    ),
                ));
            }
            if self.roles.is_empty() {
                out.push((
                    p("roles"),
                    "proxy mode needs roles (e.g. \"*\": [runs:read])".into(),
                ));
            }
        } else if !self.roles.is_empty() {
            out.push((
                p("roles"),
                "only applies to mode proxy (mode inbound takes the token's scopes)".into(),
            ));
        }
        out
    }

    /// The scopes of a proxy-named user: their own entry, else `"*"`'s, else none.
    pub fn scopes_of(&self, user: &str) -> &[String] {
        self.roles
            .get(user)
            .or_else(|| self.roles.get("*"))
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_follows_the_api_and_is_valid() {
        let c = ConsoleConfig::default();
        assert_eq!(c.mode, ConsoleMode::Inbound);
        assert!(c.cookie_secure);
        assert!(c.check().is_empty(), "{:?}", c.check());
    }

    #[test]
    fn proxy_mode_needs_trusted_addresses_roles_and_known_scopes() {
        let mut c = ConsoleConfig {
            mode: ConsoleMode::Proxy,
            ..ConsoleConfig::default()
        };
        let paths: Vec<String> = c.check().into_iter().map(|(p, _)| p).collect();
        assert!(paths.contains(&"identity.console.proxy.trusted_proxies".to_owned()));
        assert!(paths.contains(&"identity.console.roles".to_owned()));
        c.proxy.trusted_proxies = vec!["127.0.0.1".parse().unwrap_or(IpAddr::from([0; 4]))];
        c.roles.insert("*".into(), vec!["runs:read".into()]);
        c.roles.insert(
            "alice".into(),
            vec!["admin".into(), "launch:missiles".into()],
        );
        let errs = c.check();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "identity.console.roles.alice");
        c.proxy.user_header = "X Forwarded".into();
        assert!(
            c.check()
                .iter()
                .any(|(p, _)| p == "identity.console.proxy.user_header")
        );
    }

    #[test]
    fn a_named_user_gets_only_their_entry_others_the_wildcard() {
        let mut c = ConsoleConfig::default();
        c.roles.insert("*".into(), vec!["runs:read".into()]);
        c.roles.insert("alice".into(), vec!["admin".into()]);
        assert_eq!(c.scopes_of("alice"), ["admin".to_owned()]);
        assert_eq!(c.scopes_of("bob"), ["runs:read".to_owned()]);
        c.roles.remove("*");
        assert!(c.scopes_of("bob").is_empty());
    }

    #[test]
    fn limits_are_enforced() {
        let c = ConsoleConfig {
            session_ttl_secs: SESSION_TTL_SECS_MAX + 1,
            ..ConsoleConfig::default()
        };
        assert_eq!(c.check()[0].0, "identity.console.session_ttl_secs");
        let mut c = ConsoleConfig::default();
        c.roles.insert("*".into(), vec!["runs:read".into()]);
        assert_eq!(
            c.check()[0].0,
            "identity.console.roles",
            "roles need mode proxy"
        );
    }
}
