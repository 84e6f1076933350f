//! Secret references and the one trait through which they are read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest secret file read.
pub const SECRET_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Where a secret lives: `{env: NAME}` or `{file: /run/secrets/x}`. Never the value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "SecretRefRepr", into = "SecretRefRepr")]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

/// The YAML shape: exactly one of `env` or `file`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRefRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
}

impl TryFrom<SecretRefRepr> for SecretRef {
    type Error = String;
    fn try_from(r: SecretRefRepr) -> Result<Self, Self::Error> {
        match (r.env, r.file) {
            (Some(e), None) if !e.is_empty() => Ok(SecretRef::Env(e)),
            (None, Some(f)) if !f.as_os_str().is_empty() => Ok(SecretRef::File(f)),
            _ => Err("a secret reference is exactly one of {env: NAME} or {file: PATH}".into()),
        }
    }
}

impl From<SecretRef> for SecretRefRepr {
    fn from(r: SecretRef) -> Self {
        match r {
            SecretRef::Env(e) => SecretRefRepr {
                env: Some(e),
                file: None,
            },
            SecretRef::File(f) => SecretRefRepr {
                env: None,
                file: Some(f),
            },
        }
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

pub use tg_model::Secret;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {0} is not set")]
    Missing(String),
    #[error("secret {reference} cannot be read: {reason}")]
    Unreadable { reference: String, reason: String },
    #[error("secret {0} is empty")]
    Empty(String),
}

/// Reads secrets. Production reads the environment and files; tests and the demo use a map.
pub trait SecretSource: Send + Sync {
    fn read(&self, reference: &SecretRef) -> Result<Secret, SecretError>;
}

/// The production source: environment variables and files (trailing newline trimmed).
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvAndFiles;

impl SecretSource for EnvAndFiles {
    fn read(&self, reference: &SecretRef) -> Result<Secret, SecretError> {
        // The raw value is wiped when dropped, like the `Secret` made from it.
        let value: zeroize::Zeroizing<String> = match reference {
            SecretRef::Env(name) => std::env::var(name)
                .map_err(|_| SecretError::Missing(reference.to_string()))?
                .into(),
            SecretRef::File(path) => {
                let meta = std::fs::metadata(path).map_err(|e| SecretError::Unreadable {
                    reference: reference.to_string(),
                    reason: e.kind().to_string(),
                })?;
                if meta.len() > SECRET_FILE_BYTES_MAX {
                    return Err(SecretError::Unreadable {
                        reference: reference.to_string(),
                        reason: format!("larger than {SECRET_FILE_BYTES_MAX} bytes"),
                    });
                }
                std::fs::read_to_string(path)
                    .map_err(|e| SecretError::Unreadable {
                        reference: reference.to_string(),
                        reason: e.kind().to_string(),
                    })?
                    .into()
            }
        };
        let trimmed = value.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(SecretError::Empty(reference.to_string()));
        }
        Ok(Secret::new(trimmed))
    }
}

/// An in-memory source keyed by the reference's display form (`env:NAME`, `file:PATH`).
#[derive(Debug, Clone, Default)]
pub struct MapSecrets(pub BTreeMap<String, Secret>);

impl MapSecrets {
    pub fn with(mut self, reference: &SecretRef, value: &str) -> Self {
        self.0.insert(reference.to_string(), Secret::new(value));
        self
    }
}

impl SecretSource for MapSecrets {
    fn read(&self, reference: &SecretRef) -> Result<Secret, SecretError> {
        self.0
            .get(&reference.to_string())
            .cloned()
            .ok_or_else(|| SecretError::Missing(reference.to_string()))
    }
}
