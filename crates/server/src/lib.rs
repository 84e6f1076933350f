//! The imperative shell: the HTTP API, the processing workers, the audit-file
//! writer, and graceful shutdown. It owns the clock, the IDs and every I/O
//! handle; the decisions themselves come from `tg_engine::step`.
//!
//! Invariants kept here:
//! - an event is answered 202 only after its run is committed to the store;
//! - nothing is executed unless the decision said `execute`;
//! - every run is audited exactly once (the store's `complete` transaction), and
//!   the JSON Lines file is written from the store in chain order.

mod actions_api;
pub mod audit;
pub mod auth;
mod autonomy;
pub mod build;
pub mod clock;
mod evidence;
pub mod health;
mod http;
mod metrics;
pub mod outbox;
mod problem;
pub mod reports;
pub mod review;
pub mod ship;
pub mod signed;
pub mod sns;
pub mod storm;
pub mod ui;
pub mod worker;

use std::sync::Arc;

use tokio::sync::Notify;

pub use build::{Pipeline, build_pipeline, build_pipeline_with_clock};
pub use clock::{Clock, GuardClockAdapter, ManualClock, SystemClock};
pub use http::{accept_in_order, app};
pub use problem::Problem;

/// Everything the HTTP handlers and workers share.
#[derive(Clone)]
pub struct AppState {
    pub store: tg_store::Store,
    pub pipeline: Arc<Pipeline>,
    pub clock: Arc<dyn Clock>,
    /// Wakes workers when runs are accepted.
    pub work: Arc<Notify>,
    /// Wakes the audit-file writer when runs complete.
    pub audited: Arc<Notify>,
    /// Wakes every task waiting for runs to complete (`notify_waiters` on
    /// each run audited): the simulator's drain waits on it, not on a poll.
    pub completed: Arc<Notify>,
    /// Wakes the outbox when actions are committed or an operator retries one.
    pub outbox: Arc<Notify>,
    pub audit_file: Option<std::path::PathBuf>,
    pub limits: Limits,
    /// This process among replicas (`<host>-<pid>-<uuid>`): the owner of its claims.
    pub instance: Arc<str>,
}

/// HTTP-edge and queue limits (from `server` config).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub body_bytes_max: usize,
    pub backlog_max: i64,
    pub request_timeout_ms: u64,
    pub concurrency_max: usize,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// A running server: its address and a way to stop it.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Running {
    /// Stops accepting, lets in-flight work finish (bounded), and waits.
    pub async fn shutdown(mut self, grace: std::time::Duration) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }

    /// The cancellation token; cancelling it starts a graceful shutdown.
    pub fn token(&self) -> tokio_util::sync::CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until every task has ended (after the token is cancelled).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Opens the configured store (running its migrations).
pub async fn open_store(
    data_dir: &std::path::Path,
    selection: &crate::build::StoreSelection,
) -> anyhow::Result<tg_store::Store> {
    use anyhow::Context as _;
    match selection {
        crate::build::StoreSelection::Sqlite => {
            let db = data_dir.join("triage-gate.sqlite");
            tg_store::Store::open(&db)
                .await
                .with_context(|| format!("cannot open store {}", db.display()))
        }
        crate::build::StoreSelection::Postgres(opts) => tg_store::Store::connect(opts)
            .await
            .with_context(|| format!("cannot open store {}", opts.url)),
    }
}

/// Opens the store, recovers interrupted work, and starts the HTTP server,
/// `workers` processing workers and the audit-file writer.
pub async fn start(
    listener: tokio::net::TcpListener,
    data_dir: &std::path::Path,
    pipeline: Pipeline,
    clock: Arc<dyn Clock>,
    server: &tg_config::ServerConfig,
) -> anyhow::Result<Running> {
    use anyhow::Context as _;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let store = open_store(data_dir, &pipeline.store).await?;
    metrics::handle();
    let requeued = store.requeue_interrupted().await?;
    // Deliveries the previous process had in flight are claimed again.
    let grace = chrono::Duration::milliseconds(
        i64::try_from(pipeline.outbox.restart_grace_ms).unwrap_or(i64::MAX / 2),
    );
    let released = store.release_claims(clock.now(), grace).await?;
    if released > 0 {
        tracing::warn!(
            released,
            "deliveries interrupted by a restart are queued again"
        );
    }
    if requeued > 0 {
        tracing::warn!(requeued, "runs interrupted by a restart are queued again");
    }
    let state = AppState {
        store,
        pipeline: Arc::new(pipeline),
        clock,
        work: Arc::new(Notify::new()),
        audited: Arc::new(Notify::new()),
        completed: Arc::new(Notify::new()),
        outbox: Arc::new(Notify::new()),
        audit_file: Some(data_dir.join("audit.jsonl")),
        instance: instance_id().into(),
        limits: Limits {
            body_bytes_max: server.body_bytes_max,
            backlog_max: server.backlog_max,
            request_timeout_ms: server.request_timeout_ms,
            concurrency_max: server.concurrency_max,
        },
    };
    // The low-disk guard watches the SQLite database's file system and the
    // audit file's; the first measurement is taken before the first request.
    let watched = health::Watched {
        paths: {
            let mut p = Vec::new();
            if matches!(state.pipeline.store, build::StoreSelection::Sqlite) {
                p.push(("store", data_dir.to_path_buf()));
            }
            if let Some(dir) = state
                .audit_file
                .as_deref()
                .and_then(std::path::Path::parent)
            {
                p.push(("audit file", dir.to_path_buf()));
            }
            p
        },
        floor_bytes: state.pipeline.disk_free_min_bytes,
    };
    health::check_disk(&state, &watched);
    // A policy or configuration change is on the chain from the moment it took effect.
    audit::record_config_loaded(&state).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    // Runs decided before a crash are delivered and audited first.
    {
        let st = state.clone();
        let token = shutdown.clone();
        tasks.spawn(async move { worker::resume_decided(&st, &token).await });
    }
    for id in 0..server.workers {
        let st = state.clone();
        let token = shutdown.clone();
        tasks.spawn(async move { worker::run(id, st, token).await });
    }
    {
        let st = state.clone();
        let token = shutdown.clone();
        tasks.spawn(async move { worker::sweeper(st, token).await });
    }
    {
        let st = state.clone();
        let token = shutdown.clone();
        tasks.spawn(async move { worker::audit_file_writer(st, token).await });
    }
    {
        let st = state.clone();
        let token = shutdown.clone();
        tasks.spawn(async move { audit::checkpoint_task(st, token).await });
    }
    {
        let st = state.clone();
        let token = shutdown.clone();
        tasks.spawn(async move { review::expiry_task(st, token).await });
    }
    {
        let st = state.clone();
        let token = shutdown.clone();
        tasks.spawn(async move { review::notify_task(st, token).await });
    }
    {
        let st = state.clone();
        let token = shutdown.clone();
        tasks.spawn(async move { health::task(st, watched, token).await });
    }
    // The issuer's key set is fetched ahead of the first request and kept
    // current, rate-limited (a readiness probe never fetches).
    if let crate::auth::Inbound::Jwt(auth) = &state.pipeline.inbound {
        let auth = auth.clone();
        let clock = state.clock.clone();
        let token = shutdown.clone();
        tasks.spawn(async move {
            let every = std::time::Duration::from_secs(
                u64::try_from(tg_identity::jwks::NO_KEYS_RETRY_SECS).unwrap_or(5),
            );
            loop {
                auth.warm(clock.now().timestamp()).await;
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }
    // The store is the sinks' spool: each ships from its own cursor.
    ship::spawn_all(&state, &shutdown, &mut tasks);
    // Actions are delivered by the outbox, never by the processing workers.
    {
        let st = state.clone();
        let token = shutdown.clone();
        tasks.spawn(async move { outbox::run(st, token).await });
    }
    {
        let st = state.clone();
        let token = shutdown.clone();
        tasks.spawn(async move { storm::summary_task(st, token).await });
    }
    {
        let st = state.clone();
        let token = shutdown.clone();
        tasks.spawn(async move { storm::breaker_task(st, token).await });
    }
    let addr = listener.local_addr()?;
    {
        let router = app(state.clone());
        let token = shutdown.clone();
        tasks.spawn(async move {
            // The peer address is kept for the console's trusted-proxy check.
            let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let res = axum::serve(listener, service)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "http server stopped");
            }
        });
    }
    state.work.notify_waiters();
    tracing::info!(%addr, "triage-gate listening");
    Ok(Running {
        addr,
        state,
        shutdown,
        tasks,
    })
}

/// This process's name among replicas: host, pid and a random suffix (a
/// restarted process with a recycled pid is still someone else).
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        uuid.get(..8).unwrap_or("0")
    )
}

/// Hot reload of the policy and the catalog (teams, services, thresholds,
/// autonomy levels) without a restart: `config` is validated and the gates
/// are loaded against its catalog first; only then is the new policy swapped
/// in, whole, and the change recorded on the audit chain (`config_loaded`).
/// On any error the policy in force stays. Runs decided from then on carry
/// the new `policy_version`; a decision in flight finishes with the old one.
/// Other sections (server, store, storm, actions, identity) are read at start
/// only: a change to them waits for a restart, and the reload says so.
pub async fn reload(
    state: &AppState,
    config: &tg_config::Config,
    policy_text: Option<&str>,
) -> anyhow::Result<Reloaded> {
    let problems = config.validate();
    if !problems.is_empty() {
        anyhow::bail!(
            "the configuration is invalid; the policy in force stays:\n{}",
            problems
                .iter()
                .map(|(f, why)| format!("{f}: {why}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let policy = build::load_policy(config, policy_text)
        .map_err(|e| anyhow::anyhow!("{e:#}\nthe policy in force stays"))?;
    let version = policy.gates.version().to_owned();
    let old = state.pipeline.policy.replace(policy);
    let changed = old.gates.version() != version
        || old.config_sha256 != state.pipeline.policy().config_sha256;
    if changed {
        audit::record_config_loaded(state).await?;
    }
    tracing::info!(
        policy_version = %version,
        previous = %old.gates.version(),
        changed,
        "policy reloaded"
    );
    Ok(Reloaded {
        policy_version: version,
        previous_policy_version: old.gates.version().to_owned(),
        changed,
    })
}

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    pub policy_version: String,
    pub previous_policy_version: String,
    /// False when the files were unchanged (nothing recorded).
    pub changed: bool,
}
