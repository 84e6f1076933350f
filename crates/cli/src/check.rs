//! `triage-gate config check FILE [--strict]`: everything `serve` would
//! validate, without starting anything.
//!
//! Secrets are resolved as `serve` resolves them (`{env:}` from the
//! environment, `{file:}` from disk), and their values go through the same
//! parsers (URLs, PEM keys, minimum lengths). A reference that cannot be read
//! here (the variable is unset, the file is missing: common on a build machine
//! that holds no production secrets) is a warning naming its `file:line`;
//! with `--strict` it is an error, as it would be for `serve`. The rest of the
//! pipeline is still checked, with a stand-in value of the right shape.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;

use tg_config::{Config, EnvAndFiles, Secret, SecretError, SecretRef, SecretSource};

/// A stand-in for a secret that cannot be read here: a URL (for webhook URL
/// secrets) long enough for keys with a minimum length (64 bytes).
const STAND_IN: &str =
    "https://unresolved-secret.invalid/config-check/stand-in-for-a-secret-that-cannot-be-read-here";

/// One secret reference of the file that could not be read.
#[derive(Debug, Clone)]
pub struct Unresolved {
    /// Where the reference is, dotted (`actions.bridge.webhook_url`).
    pub path: String,
    pub error: String,
}

/// Reads secrets like `serve`; records the references it cannot read and
/// answers them with a stand-in of the shape their key needs.
pub struct CheckSecrets {
    /// Every secret reference of the configuration, with the keys it is at.
    paths: BTreeMap<SecretRef, Vec<String>>,
    unresolved: Mutex<Vec<Unresolved>>,
}

impl CheckSecrets {
    pub fn new(config: &Config) -> anyhow::Result<CheckSecrets> {
        let mut paths = BTreeMap::new();
        collect_refs(&serde_json::to_value(config)?, "", &mut paths);
        Ok(CheckSecrets {
            paths,
            unresolved: Mutex::new(Vec::new()),
        })
    }

    /// The references that could not be read, in the order they were met.
    pub fn unresolved(&self) -> Vec<Unresolved> {
        match self.unresolved.lock() {
            Ok(u) => u.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn record(&self, path: &str, error: &SecretError) {
        let u = Unresolved {
            path: path.to_owned(),
            error: error.to_string(),
        };
        match self.unresolved.lock() {
            Ok(mut v) => v.push(u),
            Err(poisoned) => poisoned.into_inner().push(u),
        }
    }
}

impl SecretSource for CheckSecrets {
    fn read(&self, reference: &SecretRef) -> Result<Secret, SecretError> {
        let error = match EnvAndFiles.read(reference) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Some(paths) = self.paths.get(reference) else {
            // Not in the file: an optional variable the build looks up by
            // name (AWS web identity); its absence means what it means to serve.
            return Err(error);
        };
        // Where an unset value has a meaning of its own to `serve`, the check
        // follows the same path: an unset session token means long-term
        // keys; unset AWS keys mean web identity, when its variables are set.
        if paths
            .iter()
            .all(|p| p.ends_with("credentials.session_token"))
        {
            return Err(error);
        }
        let web_identity = ["AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"]
            .iter()
            .all(|v| EnvAndFiles.read(&SecretRef::Env((*v).into())).is_ok());
        if web_identity
            && paths
                .iter()
                .all(|p| p.ends_with("credentials.access_key_id"))
        {
            return Err(error);
        }
        let path = paths.first().cloned().unwrap_or_default();
        if path.ends_with("private_key") {
            // An RSA or EC key cannot be stood in for; the OAuth client needs one.
            return Err(error);
        }
        self.record(&path, &error);
        if path == "audit.checkpoint.key" {
            return checkpoint_stand_in().map_err(|reason| SecretError::Unreadable {
                reference: reference.to_string(),
                reason,
            });
        }
        Ok(Secret::new(STAND_IN))
    }
}

/// An Ed25519 key of no use to anyone, so the checkpoint settings build.
fn checkpoint_stand_in() -> Result<Secret, String> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("cannot make a stand-in key: {e}"))?;
    Ok(Secret::new(pem.as_str()))
}

/// Every `{env: NAME}` / `{file: PATH}` in the serialized configuration, by
/// the dotted keys it sits at. (A `policy: {file: ...}` looks the same; it is
/// only looked up for references the build actually reads as secrets.)
fn collect_refs(v: &serde_json::Value, path: &str, out: &mut BTreeMap<SecretRef, Vec<String>>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            if m.len() == 1 {
                let r = match (m.get("env"), m.get("file")) {
                    (Some(Value::String(e)), None) => Some(SecretRef::Env(e.clone())),
                    (None, Some(Value::String(f))) => Some(SecretRef::File(f.into())),
                    _ => None,
                };
                if let Some(r) = r {
                    out.entry(r).or_default().push(path.to_owned());
                    return;
                }
            }
            for (k, child) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                collect_refs(child, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_refs(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `file:line: ` of a dotted key, or `file: ` when the key is not in the file.
fn at(file: &Path, text: &str, path: &str) -> String {
    match tg_config::line_of_key(text, path) {
        Some(l) => format!("{}:{l}: ", file.display()),
        None => format!("{}: ", file.display()),
    }
}

/// The build's error with the `file:line` of the key it starts with
/// (`actions.bridge.webhook_url: ...`), when it names one.
fn locate_build_error(file: &Path, text: &str, e: &anyhow::Error) -> String {
    let message = format!("{e:#}");
    let key = message.split([':', ' ']).next().unwrap_or_default();
    let looks_like_key = !key.is_empty()
        && key.contains('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-[]".contains(c));
    if looks_like_key && tg_config::line_of_key(text, key).is_some() {
        format!("{}{message}", at(file, text, key))
    } else {
        format!("{}: {message}", file.display())
    }
}

/// Runs the check; prints every problem (errors and warnings) to stderr.
pub fn run(file: &Path, strict: bool) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let config = match Config::from_yaml(&text, &file.display().to_string()) {
        Ok(c) => c,
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("error: {issue}");
            }
            eprintln!("{}: {} error(s)", file.display(), errors.0.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut errors = Vec::new();
    // What `serve` would refuse, the check refuses too.
    if let Some(why) = config.identity.anonymous_refusal() {
        errors.push(format!("{}{why}", at(file, &text, "identity.inbound")));
    }
    let policy = match crate::read_policy(file, &config) {
        Ok(p) => p,
        Err(e) => {
            errors.push(format!("{}: {e:#}", file.display()));
            None
        }
    };
    // Every CA file at once (the build stops at the first it cannot use).
    let tls = tg_server::build::check_tls(&config);
    for (key, message) in &tls {
        errors.push(format!("{}{message}", at(file, &text, key)));
    }
    let secrets = CheckSecrets::new(&config)?;
    if let Err(e) = tg_server::build::check_pipeline(&config, policy.as_deref(), &secrets) {
        // Not twice: a CA file's error is already listed.
        let message = format!("{e:#}");
        if !tls.iter().any(|(_, m)| *m == message) {
            errors.push(locate_build_error(file, &text, &e));
        }
    }
    let mut warnings = Vec::new();
    for u in secrets.unresolved() {
        let line = format!(
            "{}{}: {}; serve will not start without it",
            at(file, &text, &u.path),
            u.path,
            u.error
        );
        if strict {
            errors.push(line);
        } else {
            warnings.push(line);
        }
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    if !errors.is_empty() {
        eprintln!("{}: {} error(s)", file.display(), errors.len());
        return Ok(ExitCode::FAILURE);
    }
    crate::outln!(
        "{}: ok{}",
        file.display(),
        if warnings.is_empty() {
            String::new()
        } else {
            format!(
                " ({} secret reference(s) not readable here: see the warnings; --strict makes them errors)",
                warnings.len()
            )
        }
    )?;
    Ok(ExitCode::SUCCESS)
}
