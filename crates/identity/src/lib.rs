//! Zero-trust identity for triage-gate.
//!
//! - Inbound: [`jwks::Authenticator`] verifies bearer JWTs against the issuer's
//!   key set (fetched from configuration, never from the token), with an
//!   asymmetric algorithm allow-list, `iss`/`aud`/`exp`/`nbf`/`iat` checked
//!   against an injected clock, and per-route [`Scope`]s. The verification
//!   itself ([`jwt::verify`]) is pure.
//! - Outbound: [`oauth::TokenSource`] obtains short-lived, narrowly scoped
//!   client-credentials tokens, cached and refreshed single-flight, with a
//!   secret-free [`oauth::TokenHealth`] kept current by [`probe`]s.
//! - Trust: [`trust::TrustRoots`], the certificate authorities every outbound
//!   HTTPS client of the gate trusts (bundled roots plus `tls.ca_file`).
//! - Time: the token cache reads an injected [`IdentityClock`]; the JWKS cache
//!   takes `now` from its caller (the server's clock).

pub mod clock;
pub mod jwks;
pub mod jwt;
pub mod oauth;
pub mod probe;
pub mod trust;

pub use clock::{IdentityClock, ManualIdentityClock, SystemIdentityClock};
pub use jsonwebtoken::Algorithm;
pub use jwks::{Authenticator, JwksConfig};
pub use jwt::{AuthError, Caller, JwtPolicy, KeySet, Scope};
pub use oauth::{ClientAuth, ClientCredentials, OAuthError, TokenHealth, TokenSource};
pub use probe::{ProbeHandle, spawn_probes};
pub use trust::{TrustError, TrustLoader, TrustRoots};

/// Whether `raw` parses as an http(s) URL with a host and no user info (a
/// real parser, not a prefix: `http://127.0.0.1:1@idp.example.com/` has the
/// host `idp.example.com`).
pub(crate) fn http_url_without_userinfo(raw: &str) -> bool {
    reqwest::Url::parse(raw).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host().is_some()
            && u.username().is_empty()
            && u.password().is_none()
    })
}
