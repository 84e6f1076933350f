//! `triage-gate`: the gate between AI triage agents and the systems that page people.
//!
//! Subcommands: `serve`, `demo`, `simulate`, `sandbox`, `audit verify`, `config check`,
//! `actions list|retry`.
//!
//! Standard output is for results and may be a pipe that closes early
//! (`| head -1`): everything printed there goes through [`outln!`], and a
//! closed stdout ends the command quietly with status 0.

/// Prints a line to stdout, returning the write error (instead of
/// panicking as `println!` does when the reader is gone, e.g. `| head -1`).
/// Use with `?`: `main` turns a broken pipe into a quiet exit.
#[macro_export]
macro_rules! outln {
    () => { $crate::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Like [`outln!`] without the newline.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*)) };
}

mod actions;
mod audit;
mod autonomy;
mod brain;
mod check;
mod demo;
mod policy_test;
mod replay;
mod simulate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tg_config::{Config, EnvAndFiles};

/// The allocator: glibc's malloc was about a quarter of the gate's samples
/// under a storm (bench/README.md, "Profile after the change"); mimalloc's
/// per-thread heaps suit a process whose tasks hop between threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "triage-gate",
    version,
    about = "The AI recommends; the system decides."
)]
struct Cli {
    /// Log lines on stderr: `text` (for people; coloured only on a terminal,
    /// and never when NO_COLOR is set) or `json` (one object per line, for a
    /// log collector). Levels: RUST_LOG (e.g. `info`, `triage_gate_server=debug`).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "TRIAGE_GATE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gate: HTTP API, workers, audit log.
    Serve {
        /// YAML configuration; without it, built-in defaults (every service in
        /// shadow mode), which `serve` refuses: they allow anonymous callers.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides server.listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Overrides server.data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the bundled incident end to end against the sandbox, offline.
    Demo {
        /// Where to keep the demo's store and audit log (default: a fresh temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run a storm scenario through the real gate with a simulated clock; checks the storm invariants.
    Simulate {
        /// Scenario file (see scenarios/).
        scenario: PathBuf,
        /// Seeds the scenario's jitter: the same seed gives the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// In (0, 1]: divides repeat intervals (fewer events, same timeline).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// In [0, 1]: every action emulator (ServiceNow, PagerDuty, bridge) fails
        /// this share of calls with 500, 429, stalls and resets (seeded by --seed).
        #[arg(long)]
        chaos: Option<f64>,
    },
    /// Run the emulators (ServiceNow, PagerDuty, chat bridge, Anthropic) standalone.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8701")]
        listen: SocketAddr,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Create or upgrade the store's schema (SQLite in server.data_dir, or
    /// PostgreSQL at store.url) and print its version. `serve` does the same
    /// at start; this runs it alone, e.g. before rolling out replicas.
    Migrate {
        /// YAML configuration (`store`, `server.data_dir`).
        config: PathBuf,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The kill switch: cap the autonomy of a service, a team or everything
    /// (through the running server; bearer token from TRIAGE_GATE_TOKEN).
    Autonomy {
        #[command(subcommand)]
        command: AutonomyCommand,
    },
    /// Reports from the running server (bearer token from TRIAGE_GATE_TOKEN).
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Outbox tools: list pending actions and dead letters, retry a dead letter.
    /// With the server's inbound identity on, the bearer token is read from
    /// the TRIAGE_GATE_TOKEN environment variable.
    Actions {
        #[command(subcommand)]
        command: ActionsCommand,
    },
}

/// Default server the `actions` commands talk to.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8700";

#[derive(Debug, Subcommand)]
enum ActionsCommand {
    /// Put a dead letter back in the outbox with a fresh attempt budget.
    Retry {
        /// The action id (from `actions list --status dead` or GET /v1/actions).
        id: u64,
        /// The running server's base URL.
        #[arg(long, default_value = DEFAULT_SERVER)]
        server: String,
    },
    /// List actions waiting for delivery (`pending`) or dead letters (`dead`).
    List {
        #[arg(long, default_value = "dead")]
        status: String,
        #[arg(long, default_value = DEFAULT_SERVER)]
        server: String,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Table tests of the gates: each case an event (vendor payload), the
    /// model's answer and a little storm state, with the outcome expected
    /// per action; exit code 1 when any case fails (docs/policy.md).
    Test { file: PathBuf },
    /// The decisions a configuration change moves on a scenario's events
    /// (the scenario run twice on a simulated clock: as shipped, and with
    /// CHANGE merged into its configuration), or with `--events gate.yaml`
    /// on the decisions the gate of gate.yaml really made (its store
    /// replayed under both configurations, no model asked).
    Diff {
        #[arg(required_unless_present = "events", conflicts_with = "events")]
        scenario: Option<PathBuf>,
        /// A gate's configuration: replay the decided runs of its store.
        #[arg(long, value_name = "CONFIG")]
        events: Option<PathBuf>,
        /// YAML merged into the scenario's configuration, e.g.
        /// `catalog: { defaults: { thresholds: { page: 0.9 } } }`.
        #[arg(long = "with")]
        with: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Per service: runs, agreement with human verdicts, false and missed
    /// pages, and whether the bar to move up a level is met.
    Autonomy {
        #[arg(long)]
        service: Option<String>,
        /// Window: 30d, 12h, 90m.
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long, default_value = DEFAULT_SERVER)]
        server: String,
    },
}

#[derive(Debug, Subcommand)]
enum AutonomyCommand {
    /// Cap a scope's autonomy (e.g. `--all --level shadow`): applies to the next decision.
    Set {
        #[command(flatten)]
        scope: ScopeArgs,
        /// shadow, assist, limited, paging or mim.
        #[arg(long)]
        level: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value = DEFAULT_SERVER)]
        server: String,
    },
    /// Lift a scope's cap (back to the catalog's level).
    Clear {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value = DEFAULT_SERVER)]
        server: String,
    },
    /// The caps in force and each service's effective level.
    Show {
        #[arg(long, default_value = DEFAULT_SERVER)]
        server: String,
    },
}

/// Exactly one of `--all`, `--team T`, `--service S`.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct ScopeArgs {
    #[arg(long)]
    all: bool,
    #[arg(long)]
    team: Option<String>,
    #[arg(long)]
    service: Option<String>,
}

impl ScopeArgs {
    fn scope(&self) -> String {
        match (&self.team, &self.service) {
            (Some(t), _) => format!("team:{t}"),
            (None, Some(s)) => format!("service:{s}"),
            (None, None) => "all".to_owned(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain (and, with --public-key, every checkpoint's
    /// signature) of an exported JSON Lines file or of the store; names the
    /// first bad record.
    Verify {
        /// An exported audit file (`audit.jsonl` or a sink's file).
        #[arg(conflicts_with = "data_dir", required_unless_present = "data_dir")]
        file: Option<PathBuf>,
        /// Verify the store in this data directory instead.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Ed25519 public key (SPKI PEM) the checkpoints must be signed with.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// The story of an incident from the store, in time order: events,
    /// classifications, decisions with their conditions, actions, attempts.
    Show {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        run_id: Option<String>,
        #[arg(long)]
        correlation_id: Option<String>,
        #[arg(long)]
        service: Option<String>,
        /// RFC 3339 lower bound of when records happened.
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// Print the story as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an Ed25519 key pair for signed checkpoints (OUT and OUT.pub).
    Keygen { out: PathBuf },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration (and its policy file) without starting
    /// anything. Secret references are read as `serve` reads them; one that
    /// cannot be read here (unset variable, missing file) is a warning.
    Check {
        file: PathBuf,
        /// An unreadable secret reference is an error (as it is for `serve`).
        #[arg(long)]
        strict: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // The reader of stdout is gone (`| head`): it has what it wanted.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            notice(true, &format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by RUST_LOG (default: `info` for the long
/// running commands, `warn` for the others).
fn init_logs(cli: &Cli) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let default = match cli.command {
            Command::Serve { .. } | Command::Sandbox { .. } => "info",
            _ => "warn",
        };
        tracing_subscriber::EnvFilter::new(default)
    });
    let _ = LOG_FORMAT.set(cli.log_format);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder
            .json()
            // Event fields (`run_id`, `correlation_id`, ...) at the top
            // level; the run being processed as `span`.
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => {
            // Colour codes are for people at a terminal (https://no-color.org).
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init();
        }
    }
}

/// The log format chosen at start (for [`notice`]).
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// A message for the operator on stderr: a plain line, or with
/// `--log-format json` a log record like every other line there.
/// Like the plain line, it is never filtered out by RUST_LOG.
fn notice(error: bool, message: &str) {
    match LOG_FORMAT.get() {
        Some(LogFormat::Json) => {
            let record = serde_json::json!({
                "timestamp": chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "level": if error { "ERROR" } else { "INFO" },
                "target": "triage_gate",
                "message": message,
            });
            eprintln!("{record}");
        }
        _ => eprintln!("{message}"),
    }
}

/// Writes to stdout; see [`outln!`].
pub fn write_stdout(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write as _;
    std::io::stdout().lock().write_fmt(args)
}

/// Whether `e` is (or was caused by) a write to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => serve(config.as_deref(), listen, data_dir).await,
        Command::Demo { data_dir } => demo::run(data_dir).await,
        Command::Simulate {
            scenario,
            seed,
            scale,
            chaos,
        } => simulate::run(&scenario, seed, scale, chaos).await,
        Command::Sandbox { listen } => {
            let cfg = tg_sandbox::SandboxConfig {
                listen,
                brain: Some(Arc::new(brain::RulesBrain::new(Default::default()))),
                ..Default::default()
            };
            eprintln!(
                "sandbox emulators on http://{listen} (/servicenow, /pagerduty, /bridge, /anthropic, /_sandbox)"
            );
            tg_sandbox::serve_forever(cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command } => match command {
            AuditCommand::Verify {
                file,
                data_dir,
                public_key,
            } => audit::verify(file.as_deref(), data_dir.as_deref(), public_key.as_deref()).await,
            AuditCommand::Show {
                data_dir,
                run_id,
                correlation_id,
                service,
                from,
                to,
                json,
            } => {
                audit::show(
                    &data_dir,
                    audit::ShowArgs {
                        run_id,
                        correlation_id,
                        service,
                        from,
                        to,
                        json,
                    },
                )
                .await
            }
            AuditCommand::Keygen { out } => audit::keygen(&out),
        },
        Command::Policy {
            command: PolicyCommand::Test { file },
        } => policy_test::run(&file, load_config),
        Command::Policy {
            command:
                PolicyCommand::Diff {
                    scenario,
                    events,
                    with,
                    seed,
                    scale,
                },
        } => match (scenario, events) {
            (_, Some(config)) => replay::diff_events(&config, &with).await,
            (Some(scenario), None) => simulate::diff(&scenario, &with, seed, scale).await,
            (None, None) => Err(anyhow::anyhow!(
                "policy diff needs SCENARIO or --events CONFIG"
            )),
        },
        Command::Report {
            command:
                ReportCommand::Autonomy {
                    service,
                    since,
                    server,
                },
        } => autonomy::report(&server, service.as_deref(), &since).await,
        Command::Autonomy { command } => match command {
            AutonomyCommand::Set {
                scope,
                level,
                reason,
                server,
            } => autonomy::set(&server, &scope.scope(), Some(&level), reason.as_deref()).await,
            AutonomyCommand::Clear {
                scope,
                reason,
                server,
            } => autonomy::set(&server, &scope.scope(), None, reason.as_deref()).await,
            AutonomyCommand::Show { server } => autonomy::show(&server).await,
        },
        Command::Actions {
            command: ActionsCommand::Retry { id, server },
        } => actions::retry(&server, id).await,
        Command::Actions {
            command: ActionsCommand::List { status, server },
        } => actions::list(&server, &status).await,
        Command::Migrate { config: file } => {
            let (config, _) = load_config(&file)?;
            let problems = config.validate();
            if let Some((field, why)) = problems.first() {
                anyhow::bail!("{}: {field}: {why}", file.display());
            }
            let selection =
                tg_server::build::store_selection(&config.store, &tg_config::EnvAndFiles)?;
            std::fs::create_dir_all(&config.server.data_dir).with_context(|| {
                format!(
                    "cannot create data dir {}",
                    config.server.data_dir.display()
                )
            })?;
            let store = tg_server::open_store(&config.server.data_dir, &selection).await?;
            let version = store.schema_version().await?;
            outln!(
                "{} store at schema version {version}",
                store.backend().as_str()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { file, strict },
        } => check::run(&file, strict),
    }
}

/// Reads and validates the config file and the policy file it names.
fn load_config(path: &Path) -> anyhow::Result<(Config, Option<String>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = Config::from_yaml(&text, &path.display().to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let policy = read_policy(path, &config)?;
    Ok((config, policy))
}

/// The policy file `config` names (relative to the config file at `path`).
fn read_policy(path: &Path, config: &Config) -> anyhow::Result<Option<String>> {
    match &config.policy.file {
        Some(p) => {
            let full = path
                .parent()
                .map(|d| d.join(p))
                .unwrap_or_else(|| p.clone());
            Ok(Some(std::fs::read_to_string(&full).with_context(|| {
                format!("cannot read policy {}", full.display())
            })?))
        }
        None => Ok(None),
    }
}

async fn serve(
    config_path: Option<&Path>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (mut config, policy) = match config_path {
        Some(p) => load_config(p)?,
        None => (Config::default(), None),
    };
    if let Some(l) = listen {
        config.server.listen = l.to_string();
    }
    if let Some(d) = data_dir {
        config.server.data_dir = d;
    }
    // Fail closed: no anonymous API unless the operator said so in the config.
    if let Some(why) = config.identity.anonymous_refusal() {
        anyhow::bail!("refusing to serve: {why}");
    }
    let pipeline = tg_server::build_pipeline(&config, policy.as_deref(), &EnvAndFiles)?;
    let addr: SocketAddr = config.server.listen.parse().context("server.listen")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let running = tg_server::start(
        listener,
        &config.server.data_dir,
        pipeline,
        Arc::new(tg_server::SystemClock),
        &config.server,
    )
    .await?;
    notice(
        false,
        &format!(
            "triage-gate listening on http://{} (data in {})",
            running.addr,
            config.server.data_dir.display()
        ),
    );
    // SIGHUP reloads the policy and the catalog from the same files.
    #[cfg(unix)]
    if let Some(path) = config_path.map(Path::to_path_buf) {
        let state = running.state.clone();
        // The command line's overrides hold for the reloaded file too.
        let server = config.server.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::error!("cannot listen for SIGHUP; reload needs a restart");
                return;
            };
            while hup.recv().await.is_some() {
                let outcome = match load_config(&path) {
                    Ok((mut c, p)) => {
                        c.server.listen.clone_from(&server.listen);
                        c.server.data_dir.clone_from(&server.data_dir);
                        tg_server::reload(&state, &c, p.as_deref()).await
                    }
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(r) => notice(
                        false,
                        &format!(
                            "reloaded {}: policy {} (was {}){}",
                            path.display(),
                            r.policy_version,
                            r.previous_policy_version,
                            if r.changed { "" } else { ", unchanged" }
                        ),
                    ),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "reload refused");
                        if LOG_FORMAT.get() != Some(&LogFormat::Json) {
                            eprintln!("reload refused: {e:#}");
                        }
                    }
                }
            }
        });
    }
    shutdown_signal().await;
    notice(false, "shutting down: finishing in-flight work");
    running
        .shutdown(std::time::Duration::from_millis(
            config.server.shutdown_grace_ms,
        ))
        .await;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
