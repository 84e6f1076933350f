//! `triage-gate audit verify | show | keygen`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

/// The store file inside a data directory.
const STORE_FILE: &str = "triage-gate.sqlite";

fn read_public_key(path: Option<&Path>) -> anyhow::Result<Option<tg_audit::VerifyingKey>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read public key {}", path.display()))?;
    let key = tg_audit::verifying_key_from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some(key))
}

async fn open_store(data_dir: &Path) -> anyhow::Result<tg_store::Store> {
    let db = data_dir.join(STORE_FILE);
    if !db.exists() {
        bail!("no store at {} (is --data-dir right?)", db.display());
    }
    tg_store::Store::open(&db)
        .await
        .with_context(|| format!("cannot open store {}", db.display()))
}

/// Verifies an exported file or the store: the chain, and with a public key
/// every checkpoint's signature. Exit status 1 names the first bad record.
pub async fn verify(
    file: Option<&Path>,
    data_dir: Option<&Path>,
    public_key: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let key = read_public_key(public_key)?;
    let (what, report) = match (file, data_dir) {
        (Some(f), None) => (
            f.display().to_string(),
            tg_audit::verify_file_with(f, key.as_ref())
                .with_context(|| format!("cannot read {}", f.display()))?,
        ),
        (None, Some(d)) => {
            let store = open_store(d).await?;
            let lines = store.audit_lines().await?;
            (
                format!("store {}", d.join(STORE_FILE).display()),
                tg_audit::verify_lines(&lines, key.as_ref()),
            )
        }
        _ => bail!("give either a FILE or --data-dir"),
    };
    crate::outln!("{what}: {report}")?;
    if report.ok && key.is_none() && report.checkpoints > 0 {
        crate::outln!(
            "note: {} checkpoint signatures not checked; pass --public-key to check them",
            report.checkpoints
        )?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Filters of `audit show`.
#[derive(Debug, Clone, Default)]
pub struct ShowArgs {
    pub run_id: Option<String>,
    pub correlation_id: Option<String>,
    pub service: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub json: bool,
}

/// Prints the story of a run, a correlation id or a service, in time order.
pub async fn show(data_dir: &Path, args: ShowArgs) -> anyhow::Result<ExitCode> {
    if args.run_id.is_none() && args.correlation_id.is_none() && args.service.is_none() {
        bail!("name --run-id, --correlation-id or --service");
    }
    let store = open_store(data_dir).await?;
    let query = tg_store::AuditQuery {
        run_id: args.run_id,
        correlation_id: args.correlation_id,
        service: args.service,
        from: args.from,
        to: args.to,
        limit: tg_store::AUDIT_QUERY_ROWS_MAX,
    };
    let started = std::time::Instant::now();
    let (records, truncated) = store.audit_query(&query).await?;
    let story = tg_audit::story::story(&records);
    let took = started.elapsed();
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&story)?)?;
    } else {
        crate::out!("{}", tg_audit::story::render(&story))?;
        eprintln!(
            "{} records, {} story lines in {:.1} ms{}",
            records.len(),
            story.len(),
            took.as_secs_f64() * 1000.0,
            if truncated {
                format!(
                    " (truncated at {} records: narrow with --from/--to)",
                    tg_store::AUDIT_QUERY_ROWS_MAX
                )
            } else {
                String::new()
            }
        );
    }
    if records.is_empty() {
        eprintln!("nothing matched");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if story.iter().all(|e| e.hash_ok) {
        ExitCode::SUCCESS
    } else {
        eprintln!("some records do not match their own hash: run `audit verify`");
        ExitCode::FAILURE
    })
}

/// Writes a new Ed25519 key pair: `out` (PKCS#8 PEM, mode 0600) and `out.pub` (SPKI PEM).
pub fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    if out.exists() {
        bail!("{} exists; not overwriting a key", out.display());
    }
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("cannot encode the key: {e}"))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("cannot encode the public key: {e}"))?;
    write_private(out, private.as_bytes())?;
    let pub_path = PathBuf::from(format!("{}.pub", out.display()));
    std::fs::write(&pub_path, public.as_bytes())
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    crate::outln!(
        "private key {} (keep it secret: audit.checkpoint.key), public key {} (give it to auditors), key id {}",
        out.display(),
        pub_path.display(),
        tg_audit::key_id(&key.verifying_key())
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
