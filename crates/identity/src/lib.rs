//! Zero-trust identity for triage-gate.
//!
//! - Inbound: [`jwks::Authenticator`] verifies bearer JWTs against the issuer's
//!   key set (fetched from configuration, never from the token), with an
//!   asymmetric algorithm allow-list, `iss`/`aud`/`exp`/`nbf`/`iat` checked
//!   against an injected clock, and per-route [`Scope`]s. The verification
//!   itself ([`jwt::verify`]) is pure.
//! - Outbound: [`oauth::TokenSource`] obtains short-lived, narrowly scoped
//!   client-credentials tokens, cached and refreshed single-flight.

pub mod jwks;
pub mod jwt;
pub mod oauth;

pub use jsonwebtoken::Algorithm;
pub use jwks::{Authenticator, JwksConfig};
pub use jwt::{AuthError, Caller, JwtPolicy, KeySet, Scope};
pub use oauth::{ClientAuth, ClientCredentials, OAuthError, TokenSource};
