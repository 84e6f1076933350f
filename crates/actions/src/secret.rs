//! A credential that prints as `[redacted]`.

use std::fmt;

pub use tg_model::Secret;

/// Every secret the executor holds, to scrub from any text that leaves it
/// (a target may echo a key back in an error body).
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<Secret>,
}

impl Redactor {
    pub(crate) fn add(&mut self, secret: &Secret) {
        // Very short values would scrub ordinary words; they are refused at config time.
        if !secret.expose().is_empty() {
            self.secrets.push(secret.clone());
        }
    }

    /// This redactor plus one more secret (a short-lived token).
    pub(crate) fn with(&self, secret: &Secret) -> Redactor {
        let mut r = self.clone();
        r.add(secret);
        r
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if out.contains(s.expose()) {
                out = out.replace(s.expose(), "[redacted]");
            }
        }
        out
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let s = Secret::new("hunter2-token");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2-token");
    }

    #[test]
    fn redactor_scrubs_every_occurrence() {
        let mut r = Redactor::default();
        r.add(&Secret::new("abc123secret"));
        r.add(&Secret::new(""));
        assert_eq!(
            r.scrub("key abc123secret is bad; abc123secret"),
            "key [redacted] is bad; [redacted]"
        );
        assert!(!format!("{r:?}").contains("abc123"));
    }
}
