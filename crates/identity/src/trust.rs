//! Which certificate authorities an outbound HTTPS client trusts: the bundled
//! public roots (webpki) always, plus the PEM bundle of `tls.ca_file` or of a
//! target's own `tls.ca_file` (a private CA in front of an internal Splunk, an
//! IdP, ServiceNow behind a corporate proxy).
//!
//! This is the one place that turns CA files into `reqwest` roots and the one
//! place every outbound client of the gate is made from
//! ([`TrustRoots::client_builder`]). The rule "a target's own file replaces
//! the global one" is [`TrustLoader::for_target`]. Files are read when the
//! pipeline is built (start-up, `config check`); a changed file takes effect
//! at the next start.
//!
//! It lives in `identity` because whom a server's certificate vouches for is
//! an identity question, and this crate is the lowest one with `reqwest`
//! (it depends only on `model`), so `actions`, `classify`, `ship` and
//! `server` can all share it without a cycle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Largest CA file read (a full public bundle is about 250 KiB).
pub const CA_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Most certificates one CA file may hold.
pub const CA_FILE_CERTS_MAX: usize = 1_000;

/// The roots a client trusts beyond the bundled ones: cheap to clone.
#[derive(Clone, Default)]
pub struct TrustRoots {
    /// The file they came from (`None`: the bundled roots only).
    file: Option<PathBuf>,
    certs: Arc<Vec<reqwest::Certificate>>,
}

impl std::fmt::Debug for TrustRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustRoots")
            .field("ca_file", &self.file)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

/// Two sets of roots are equal when they came from the same file and hold as
/// many certificates (configuration structs that compare themselves hold one).
impl PartialEq for TrustRoots {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file && self.certs.len() == other.certs.len()
    }
}

impl Eq for TrustRoots {}

/// Why a CA file cannot be used. Every message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: cannot read the file: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path}: the file is {bytes} bytes, over the limit of {CA_FILE_BYTES_MAX}")]
    TooLarge { path: String, bytes: u64 },
    #[error("{path}: malformed PEM (a CERTIFICATE block that does not decode)")]
    Malformed { path: String },
    #[error("{path}: no certificate in the PEM file (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: String },
    #[error("{path}: more than {CA_FILE_CERTS_MAX} certificates")]
    TooMany { path: String },
    #[error("{path}: certificate {index} is not a usable CA certificate")]
    Invalid { path: String, index: usize },
}

impl TrustRoots {
    /// The bundled public roots only.
    pub fn bundled() -> TrustRoots {
        TrustRoots::default()
    }

    /// Reads one PEM bundle (one or more `CERTIFICATE` blocks; other blocks,
    /// such as a key, are ignored).
    pub fn load(path: &Path) -> Result<TrustRoots, TrustError> {
        let shown = path.display().to_string();
        let unreadable = |e: std::io::Error| TrustError::Unreadable {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let bytes = std::fs::metadata(path).map_err(unreadable)?.len();
        if bytes > CA_FILE_BYTES_MAX {
            return Err(TrustError::TooLarge { path: shown, bytes });
        }
        let pem = std::fs::read(path).map_err(unreadable)?;
        TrustRoots::from_pem(&pem, path)
    }

    /// Parses PEM text; `path` names it in errors.
    pub fn from_pem(pem: &[u8], path: &Path) -> Result<TrustRoots, TrustError> {
        let shown = || path.display().to_string();
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|_| TrustError::Malformed { path: shown() })?;
        if certs.is_empty() {
            return Err(TrustError::NoCertificate { path: shown() });
        }
        if certs.len() > CA_FILE_CERTS_MAX {
            return Err(TrustError::TooMany { path: shown() });
        }
        // A block can be valid base64 and still not be a certificate: rustls
        // parses it only when a client is built, so build one per certificate
        // now to name the bad one here rather than fail later.
        for (i, cert) in certs.iter().enumerate() {
            reqwest::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(cert.clone())
                .build()
                .map_err(|_| TrustError::Invalid {
                    path: shown(),
                    index: i + 1,
                })?;
        }
        Ok(TrustRoots {
            file: Some(path.to_owned()),
            certs: Arc::new(certs),
        })
    }

    /// The CA file these roots came from, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Certificates added to the bundled roots.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Adds these roots to `builder` (the bundled roots stay).
    pub fn apply(&self, mut builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        for cert in self.certs.iter() {
            builder = builder.add_root_certificate(cert.clone());
        }
        builder
    }

    /// A client builder that trusts these roots: every outbound client of the
    /// gate starts here.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        self.apply(reqwest::Client::builder())
    }
}

/// Resolves the roots of each target, reading each file once.
#[derive(Debug)]
pub struct TrustLoader {
    /// `tls.ca_file`.
    global: Option<PathBuf>,
    loaded: Mutex<BTreeMap<PathBuf, TrustRoots>>,
}

impl TrustLoader {
    /// `global`: the configuration's `tls.ca_file`.
    pub fn new(global: Option<&Path>) -> TrustLoader {
        TrustLoader {
            global: global.map(Path::to_owned),
            loaded: Mutex::new(BTreeMap::new()),
        }
    }

    /// The roots of everything without a file of its own (`tls.ca_file`).
    /// Errors start with `tls.ca_file: `.
    pub fn global(&self) -> Result<TrustRoots, String> {
        self.for_target("", None)
    }

    /// The roots of one target: `own` (its `<prefix>.tls.ca_file`) when set,
    /// which replaces the global file for it; else the global file; else the
    /// bundled roots only. Errors start with the key of the file used
    /// (`actions.servicenow.tls.ca_file: /path: ...`).
    pub fn for_target(&self, prefix: &str, own: Option<&Path>) -> Result<TrustRoots, String> {
        let (key, path) = match (own, &self.global) {
            (Some(p), _) => (format!("{prefix}.tls.ca_file"), p),
            (None, Some(p)) => ("tls.ca_file".to_owned(), p.as_path()),
            (None, None) => return Ok(TrustRoots::bundled()),
        };
        let mut loaded = match self.loaded.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(t) = loaded.get(path) {
            return Ok(t.clone());
        }
        let roots = TrustRoots::load(path).map_err(|e| format!("{key}: {e}"))?;
        loaded.insert(path.to_owned(), roots.clone());
        Ok(roots)
    }
}

/// Why a request failed in the TLS handshake because of the server's
/// certificate, in words, or `None` when it failed for another reason. Found
/// by type in the error's sources (never by its text).
pub fn certificate_failure(e: &reqwest::Error) -> Option<&'static str> {
    use rustls::{CertificateError, Error as TlsError};
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<TlsError>() {
            return Some(match tls {
                TlsError::InvalidCertificate(CertificateError::UnknownIssuer) => {
                    "tls: the server's certificate is signed by an unknown issuer (not a bundled root nor in tls.ca_file)"
                }
                TlsError::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => "tls: the server's certificate does not name the host",
                TlsError::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. },
                ) => "tls: the server's certificate has expired",
                TlsError::InvalidCertificate(_) => "tls: the server's certificate is invalid",
                _ => "tls: handshake failed",
            });
        }
        // `io::Error::source` skips the error it wraps (io errors nest here):
        // step into it instead.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => err.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn err(pem: &str) -> TrustError {
        TrustRoots::from_pem(pem.as_bytes(), Path::new("/etc/ca.pem")).unwrap_err()
    }

    #[test]
    fn empty_or_keyonly_files_hold_no_certificate() {
        assert!(matches!(err(""), TrustError::NoCertificate { .. }));
        let key =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        let e = err(key);
        assert_eq!(
            e.to_string(),
            "/etc/ca.pem: no certificate in the PEM file (expected -----BEGIN CERTIFICATE-----)"
        );
    }

    #[test]
    fn a_block_that_does_not_decode_is_malformed() {
        let e = err("-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n");
        assert!(matches!(e, TrustError::Malformed { .. }), "{e}");
        let unterminated = err("-----BEGIN CERTIFICATE-----\nMIIB\n");
        assert!(
            matches!(unterminated, TrustError::Malformed { .. }),
            "{unterminated}"
        );
    }

    #[test]
    fn base64_that_is_no_certificate_is_named_by_its_index() {
        let e = err("-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n");
        assert_eq!(
            e.to_string(),
            "/etc/ca.pem: certificate 1 is not a usable CA certificate"
        );
    }

    #[test]
    fn a_missing_file_is_unreadable_and_named() {
        let e = TrustRoots::load(Path::new("/nonexistent/tg-ca.pem")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/tg-ca.pem: cannot read the file"),
            "{e}"
        );
        let loader = TrustLoader::new(Some(Path::new("/nonexistent/global.pem")));
        let e = loader
            .for_target(
                "actions.servicenow",
                Some(Path::new("/nonexistent/own.pem")),
            )
            .unwrap_err();
        assert!(
            e.starts_with("actions.servicenow.tls.ca_file: /nonexistent/own.pem: "),
            "{e}"
        );
        let e = loader.for_target("actions.servicenow", None).unwrap_err();
        assert!(
            e.starts_with("tls.ca_file: /nonexistent/global.pem: "),
            "{e}"
        );
        assert_eq!(
            TrustLoader::new(None).global().unwrap().len(),
            0,
            "no file: the bundled roots only"
        );
    }
}
