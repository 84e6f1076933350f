//! A secret value (token, API key, routing key, webhook URL, client secret,
//! private key) that never shows itself and is wiped from memory when dropped.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// What a secret prints as, everywhere.
pub const REDACTED: &str = "[redacted]";

/// A credential. `Debug`, `Display` and `Serialize` all give `[redacted]`; only
/// [`Secret::expose`] yields the value, at the one place that puts it on the wire.
///
/// INVARIANT: the bytes are overwritten with zeros when the value is dropped
/// (`zeroize`, which the optimizer cannot remove), so a freed secret does not
/// linger in the heap. Copies made with `expose().to_owned()` are not covered:
/// keep them in [`zeroize::Zeroizing`] or do not make them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl Zeroize for Secret {
    /// Overwrites the value with zeros and leaves it empty.
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl zeroize::ZeroizeOnDrop for Secret {}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_formats_or_serializes_its_value() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        assert_eq!(s.expose(), "sk-very-secret");
        let back: Secret = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(back.expose(), "abc");
    }

    #[test]
    fn a_secret_is_wiped_on_drop() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let mut s = Secret::new("client-secret-value");
        wiped_on_drop(&s);
        // What `Drop` runs: the bytes are overwritten, then the value is empty.
        s.zeroize();
        assert_eq!(s.expose(), "");
        assert_eq!(format!("{s:?}"), REDACTED);
    }
}
