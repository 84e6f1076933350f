//! Deterministic storm simulation through the real gate.
//!
//! A [`Scenario`] is a timeline of source payloads (streams of templated events
//! with offsets in seconds, optional repeats and seeded jitter) plus the gate
//! configuration to use. [`run`] starts the sandbox emulators and the real gate
//! (`tg_server::start`, real SQLite in a temporary directory, a
//! `ManualClock`), hands each time step's events to the gate's intake in time
//! order as one commit ([`tg_server::accept_in_order`]: what
//! `POST /v1/events/{source}` does after the HTTP layer), advancing the clock
//! to each step's offset and waiting for the step's runs to be audited before
//! advancing again. Time never sleeps, so a 30-minute storm runs in seconds.
//!
//! After the run, [`Report::violations`] lists every broken storm invariant
//! (see [`check`]); the CLI exits non-zero with the seed when any is broken.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, TimeZone as _, Utc};
use rand::{Rng as _, SeedableRng as _};
use serde::Deserialize;
use serde_json::Value;
use tg_config::{Config, MapSecrets, SecretRef};
use tg_model::{ActionKind, ActionOp, AlertStatus, AuditRecord, Outcome};

/// Events one scenario may generate (after scaling).
pub const EVENTS_MAX: usize = 200_000;
/// Streams one scenario may declare.
pub const STREAMS_MAX: usize = 64;
/// How long the simulator waits for one time step's runs to complete.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait between two checks while a step drains (wall time); a run's
/// completion wakes the check sooner.
const DRAIN_POLL: Duration = Duration::from_millis(2);
/// Per-request timeout of the simulator's HTTP client.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace for the gate's shutdown (final audit-file catch-up).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The gate configuration every scenario starts from; a scenario's `config`
/// replaces whole top-level sections of it. `${SANDBOX}` is the sandbox URL.
pub const BASE_CONFIG: &str = include_str!("base_config.yaml");

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The simulated start time (default 2026-11-24T03:00:00Z).
    #[serde(default = "default_start")]
    pub start: DateTime<Utc>,
    /// Config merged into [`BASE_CONFIG`] (mappings key by key, other values replaced).
    #[serde(default)]
    pub config: serde_yaml_ng::Mapping,
    pub streams: Vec<Stream>,
    #[serde(default)]
    pub expect: Expect,
    /// Faults injected into the action emulators for the whole run: each fails a
    /// seeded fraction of its target's calls (500, 429, timeout, reset). The
    /// outbox must still deliver every executed action exactly once.
    #[serde(default)]
    pub chaos: Vec<tg_sandbox::ChaosSpec>,
    /// Emulators taken down at a simulated moment for a simulated while (an
    /// audit sink, an incident tool). Nothing may be lost or duplicated.
    #[serde(default)]
    pub outages: Vec<ScenarioOutage>,
}

/// One emulator down from `at_secs` for `for_secs` of simulated time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioOutage {
    /// A sandbox fault target: `splunk`, `cloudwatch`, `otlp`, `servicenow`, ...
    pub target: String,
    pub at_secs: u64,
    pub for_secs: u64,
    /// Drop connections instead of answering 503.
    #[serde(default)]
    pub reset: bool,
}

/// How long, in wall time, the end of a run waits for the audit sinks to catch up.
pub const SINK_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

fn default_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// One source repeatedly sending a templated payload for a list of services.
///
/// Service `k` starts at `start_secs + k * stagger_secs` and repeats every
/// `every_secs` until `until_secs` (once when `every_secs` is absent), each
/// occurrence shifted by a seeded jitter in `0..=jitter_secs`. Strings in
/// `payload` may contain `{{service}}`, `{{status}}`, `{{severity}}`, `{{n}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    pub name: String,
    /// The ingest path segment: `generic`, `alertmanager`, `cloudevents`, ...
    pub source: String,
    pub services: Vec<String>,
    #[serde(default)]
    pub start_secs: u64,
    #[serde(default)]
    pub stagger_secs: u64,
    #[serde(default)]
    pub every_secs: Option<u64>,
    #[serde(default)]
    pub until_secs: Option<u64>,
    #[serde(default)]
    pub jitter_secs: u64,
    /// `{{status}}` of occurrence `n` is `status_cycle[n % len]` (default `firing`).
    #[serde(default)]
    pub status_cycle: Vec<String>,
    /// `{{severity}}` from each step's offset on (default `high`).
    #[serde(default)]
    pub severity_steps: Vec<SeverityStep>,
    pub payload: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityStep {
    pub at_secs: u64,
    pub severity: String,
}

/// What the scenario must produce, besides the generic invariants.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Exactly this many executed MIMs.
    #[serde(default)]
    pub mims: Option<usize>,
    /// Exactly this many executed pages.
    #[serde(default)]
    pub pages: Option<usize>,
    /// At least this many events (checks a scenario's size; scaled with `--scale`).
    #[serde(default)]
    pub events_min: Option<usize>,
    /// Per environment: whether its storm breaker must open (`true`) or must
    /// stay closed (`false`) during the run.
    #[serde(default)]
    pub breaker_opens: BTreeMap<String, bool>,
    /// Exactly this many executed umbrella tickets (all environments).
    #[serde(default)]
    pub umbrella_tickets: Option<usize>,
    /// Exactly this many tickets opened (work notes and resolutions not counted).
    #[serde(default)]
    pub tickets: Option<usize>,
    /// Exactly this many work notes added to a group's ticket.
    #[serde(default)]
    pub notes: Option<usize>,
    /// Exactly this many resolutions (pages and tickets) executed.
    #[serde(default)]
    pub resolves: Option<usize>,
}

impl Scenario {
    pub fn from_yaml(text: &str) -> anyhow::Result<Scenario> {
        let s: Scenario = serde_yaml_ng::from_str(text).context("scenario is invalid")?;
        if s.streams.is_empty() || s.streams.len() > STREAMS_MAX {
            bail!("a scenario has 1..={STREAMS_MAX} streams");
        }
        Ok(s)
    }

    /// The gate configuration text: [`BASE_CONFIG`] with the scenario's sections.
    pub fn config_text(&self) -> anyhow::Result<String> {
        let mut base: serde_yaml_ng::Mapping =
            serde_yaml_ng::from_str(BASE_CONFIG).context("base config")?;
        merge(&mut base, &self.config);
        Ok(serde_yaml_ng::to_string(&base)?)
    }

    /// Every action emulator (ServiceNow, PagerDuty, the chat bridge) fails a
    /// seeded `fraction` of its calls in all four ways (500, 429 with
    /// Retry-After, a stalled call, a reset connection), and the outbox gets
    /// settings that ride that out quickly in wall time: 300 ms client
    /// timeouts (a stalled call lasts 700 ms), up to 15 attempts with short
    /// backoff, and a fast idle poll. The issue 6 chaos acceptance.
    pub fn with_action_chaos(&mut self, fraction: f64, seed: u64) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&fraction) {
            bail!("chaos fraction {fraction} is not in 0..=1");
        }
        for (i, target) in CHAOS_TARGETS.iter().enumerate() {
            self.chaos.push(tg_sandbox::ChaosSpec {
                target: (*target).into(),
                fraction,
                seed: seed.wrapping_add(i as u64),
                kinds: vec![
                    tg_sandbox::ChaosKind::ServerError,
                    tg_sandbox::ChaosKind::Throttled,
                    tg_sandbox::ChaosKind::Timeout,
                    tg_sandbox::ChaosKind::Reset,
                ],
                timeout_ms: 700,
                retry_after_secs: 1,
                count: None,
            });
        }
        let actions: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(
            "servicenow: { timeout_ms: 300 }\n\
             pagerduty: { timeout_ms: 300 }\n\
             bridge: { timeout_ms: 300 }\n\
             retry: { attempts_max: 15, backoff_base_ms: 50, backoff_max_ms: 1000, retry_after_max_secs: 1, jitter_seed: 7 }\n\
             concurrency: { servicenow: 4, pagerduty: 4, bridge: 1 }\n\
             outbox: { lease_ms: 60000, idle_poll_ms: 20 }\n",
        )?;
        let mut over = serde_yaml_ng::Mapping::new();
        over.insert("actions".into(), serde_yaml_ng::Value::Mapping(actions));
        merge(&mut self.config, &over);
        Ok(())
    }
}

/// The emulators [`Scenario::with_action_chaos`] makes fail.
pub const CHAOS_TARGETS: [&str; 3] = ["servicenow", "pagerduty", "bridge"];

/// Deep-merges `over` into `base`: mappings key by key, anything else replaced.
pub fn merge(base: &mut serde_yaml_ng::Mapping, over: &serde_yaml_ng::Mapping) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(serde_yaml_ng::Value::Mapping(b)), serde_yaml_ng::Value::Mapping(o)) => {
                merge(b, o);
            }
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seeds the jitter; the same seed gives the same timeline and decisions.
    pub seed: u64,
    /// `0 < scale <= 1`: repeat intervals are divided by it (fewer repeats,
    /// same services and timeline), for quick CI runs of big storms.
    pub scale: f64,
    /// Gate replicas sharing one store; events are posted to them round-robin.
    /// More than one needs `store_url` (PostgreSQL).
    pub replicas: usize,
    /// `postgres://...`: the store of every replica; `None`: SQLite in a temp dir.
    pub store_url: Option<String>,
    /// Wait for each event to be decided and delivered before posting the
    /// next: decisions then follow acceptance order whatever the workers and
    /// replicas, so two runs can be compared decision by decision.
    pub serial: bool,
}

/// Most replicas a simulation starts.
pub const REPLICAS_MAX: usize = 8;

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 1,
            scale: 1.0,
            replicas: 1,
            store_url: None,
            serial: false,
        }
    }
}

/// One generated event.
#[derive(Debug, Clone)]
pub struct TimedEvent {
    pub at_secs: u64,
    pub stream: usize,
    pub source: String,
    pub body: Value,
}

/// The scenario's timeline, sorted by time (stable: stream, then service, then occurrence).
pub fn timeline(s: &Scenario, opts: &Options) -> anyhow::Result<Vec<TimedEvent>> {
    if !(opts.scale > 0.0 && opts.scale <= 1.0) {
        bail!("scale must be in (0, 1], got {}", opts.scale);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let mut out: Vec<(u64, usize, usize, u64, TimedEvent)> = Vec::new();
    for (si, st) in s.streams.iter().enumerate() {
        let every = st.every_secs.map(|e| {
            // Fewer repeats when scaled down; never more often than the file says.
            let scaled = (e.max(1) as f64 / opts.scale).ceil();
            if scaled >= u64::MAX as f64 {
                u64::MAX
            } else {
                scaled as u64
            }
        });
        for (k, service) in st.services.iter().enumerate() {
            let k64 = u64::try_from(k).unwrap_or(u64::MAX);
            let mut t = st
                .start_secs
                .saturating_add(k64.saturating_mul(st.stagger_secs));
            let until = st.until_secs.unwrap_or(t);
            let mut n: u64 = 0;
            while t <= until {
                let jitter = if st.jitter_secs > 0 {
                    rng.random_range(0..=st.jitter_secs)
                } else {
                    0
                };
                let at = t.saturating_add(jitter);
                let status = if st.status_cycle.is_empty() {
                    "firing".to_owned()
                } else {
                    let len = u64::try_from(st.status_cycle.len()).unwrap_or(1);
                    st.status_cycle
                        .get(usize::try_from(n % len).unwrap_or(0))
                        .cloned()
                        .unwrap_or_else(|| "firing".to_owned())
                };
                let severity = st
                    .severity_steps
                    .iter()
                    .filter(|s| s.at_secs <= t)
                    .max_by_key(|s| s.at_secs)
                    .map(|s| s.severity.clone())
                    .unwrap_or_else(|| "high".to_owned());
                let vars = [
                    ("{{service}}", service.clone()),
                    ("{{status}}", status),
                    ("{{severity}}", severity),
                    ("{{n}}", n.to_string()),
                ];
                let body = render(&st.payload, &vars);
                out.push((
                    at,
                    si,
                    k,
                    n,
                    TimedEvent {
                        at_secs: at,
                        stream: si,
                        source: st.source.clone(),
                        body,
                    },
                ));
                if out.len() > EVENTS_MAX {
                    bail!("the scenario generates more than {EVENTS_MAX} events");
                }
                n += 1;
                match every {
                    Some(e) => t = t.saturating_add(e),
                    None => break,
                }
            }
        }
    }
    out.sort_by_key(|(at, si, k, n, _)| (*at, *si, *k, *n));
    Ok(out.into_iter().map(|(.., e)| e).collect())
}

fn render(v: &Value, vars: &[(&str, String)]) -> Value {
    match v {
        Value::String(s) => {
            let mut s = s.clone();
            for (k, val) in vars {
                if s.contains(k) {
                    s = s.replace(k, val);
                }
            }
            Value::String(s)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| render(x, vars)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), render(x, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Executed actions and held-back decisions in one simulated minute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Minute {
    pub events: usize,
    pub tickets: usize,
    /// Work notes added to a group's open ticket.
    pub notes: usize,
    pub pages: usize,
    pub mims: usize,
    /// Incidents resolved because their group's last alert resolved.
    pub resolves: usize,
    pub suppressed: usize,
    pub review: usize,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub scale: f64,
    pub events: usize,
    pub audit_records: usize,
    pub simulated_secs: u64,
    pub wall: Duration,
    pub minutes: BTreeMap<u64, Minute>,
    /// `action outcome: condition` -> count, for everything not executed that was asked for or suppressed.
    pub held: BTreeMap<String, usize>,
    pub totals: Minute,
    pub incidents: usize,
    /// ServiceNow work notes and resolutions the emulator accepted.
    pub work_notes: usize,
    pub ticket_resolves: usize,
    pub pagerduty_triggers: usize,
    /// PagerDuty alerts the emulator holds resolved.
    pub pagerduty_resolved: usize,
    pub bridge_posts: usize,
    /// Calls to the action emulators that an injected fault (`chaos`) failed.
    pub faulted_action_calls: usize,
    /// Storm breaker transitions, in order (`<time> <environment> <to> (<n> services)`).
    pub breaker_transitions: Vec<String>,
    /// Executed umbrella tickets (storm mode).
    pub umbrella_tickets: usize,
    /// The postmortem query for the busiest service (`GET /v1/audit?service=`).
    pub postmortem: Option<Postmortem>,
    /// Every run's decision, in acceptance order (for `policy diff`).
    pub decisions: Vec<DecisionLine>,
    /// Records each audit sink's emulator holds at the end (by sink name).
    pub shipped: BTreeMap<String, usize>,
    /// Calls to the audit-sink emulators refused by a scenario outage.
    pub sink_calls_refused: usize,
    pub violations: Vec<String>,
}

/// One run's decision, as `policy diff` compares it.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionLine {
    /// Position in acceptance order, from 1.
    pub index: usize,
    pub received_at: DateTime<Utc>,
    pub service: String,
    pub alert_name: String,
    pub status: String,
    /// `ticket`, `page`, `mim` outcomes.
    pub outcomes: [String; 3],
    /// Per action, the first failed condition (`id: actual vs threshold`).
    pub failed: [Option<String>; 3],
}

/// How long the postmortem query took, over HTTP, on the scenario's store.
#[derive(Debug, Clone)]
pub struct Postmortem {
    pub service: String,
    pub records: usize,
    pub story_lines: usize,
    pub took: Duration,
}

impl Report {
    /// Simulated time over wall time.
    pub fn speedup(&self) -> f64 {
        let wall = self.wall.as_secs_f64();
        if wall <= 0.0 {
            0.0
        } else {
            self.simulated_secs as f64 / wall
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {}  seed {}  scale {}",
            self.scenario, self.seed, self.scale
        );
        let _ = writeln!(
            s,
            "\nminute  events  tickets  notes  pages  mims  resolves  suppressed  review"
        );
        let row = |r: &Minute| {
            format!(
                "{:>6}  {:>7}  {:>5}  {:>5}  {:>4}  {:>8}  {:>10}  {:>6}",
                r.events, r.tickets, r.notes, r.pages, r.mims, r.resolves, r.suppressed, r.review
            )
        };
        for (m, r) in &self.minutes {
            let _ = writeln!(s, "{m:>6}  {}", row(r));
        }
        let _ = writeln!(s, " total  {}", row(&self.totals));
        let _ = writeln!(s, "\nheld back (action outcome: first failed condition):");
        for (k, n) in &self.held {
            let _ = writeln!(s, "  {n:>7}  {k}");
        }
        let _ = writeln!(
            s,
            "\nemulators: {} ServiceNow incidents ({} work notes, {} resolved), {} PagerDuty triggers ({} resolved), {} bridge posts",
            self.incidents,
            self.work_notes,
            self.ticket_resolves,
            self.pagerduty_triggers,
            self.pagerduty_resolved,
            self.bridge_posts
        );
        if self.faulted_action_calls > 0 {
            let _ = writeln!(
                s,
                "chaos: {} action calls failed by injected faults (retried; exactly-once is an invariant below)",
                self.faulted_action_calls
            );
        }
        let _ = writeln!(
            s,
            "storm breaker: {} transition(s), {} umbrella ticket(s)",
            self.breaker_transitions.len(),
            self.umbrella_tickets
        );
        for t in &self.breaker_transitions {
            let _ = writeln!(s, "  {t}");
        }
        let _ = writeln!(
            s,
            "audit: {} records for {} events",
            self.audit_records, self.events
        );
        for (sink, n) in &self.shipped {
            let _ = writeln!(s, "audit sink {sink}: {n} records shipped");
        }
        if self.sink_calls_refused > 0 {
            let _ = writeln!(
                s,
                "audit sinks: {} calls refused during outages, nothing lost",
                self.sink_calls_refused
            );
        }
        if let Some(p) = &self.postmortem {
            let _ = writeln!(
                s,
                "postmortem: GET /v1/audit?service={} -> {} records, {} story lines in {:.1} ms",
                p.service,
                p.records,
                p.story_lines,
                p.took.as_secs_f64() * 1000.0
            );
        }
        let _ = writeln!(
            s,
            "time: {} s simulated in {:.2} s (x{:.0})",
            self.simulated_secs,
            self.wall.as_secs_f64(),
            self.speedup()
        );
        if self.violations.is_empty() {
            let _ = writeln!(s, "invariants: all hold (seed {})", self.seed);
        } else {
            let _ = writeln!(
                s,
                "invariants: {} BROKEN (seed {}):",
                self.violations.len(),
                self.seed
            );
            for v in &self.violations {
                let _ = writeln!(s, "  - {v}");
            }
        }
        s
    }
}

/// The secrets the shipped demo and scenario configs name (`ANTHROPIC_API_KEY`,
/// `SERVICENOW_TOKEN`, `MIM_BRIDGE_WEBHOOK`, `PD_KEY_<TEAM>`), pointing at `sandbox`.
pub fn sandbox_secrets(sandbox: &tg_sandbox::Sandbox, mim_channel: &str) -> MapSecrets {
    let webhook = sandbox.slack_webhook_url(mim_channel);
    let mut secrets = MapSecrets::default()
        .with(
            &SecretRef::Env("ANTHROPIC_API_KEY".into()),
            tg_sandbox::DEFAULT_ANTHROPIC_API_KEY,
        )
        .with(
            &SecretRef::Env("SERVICENOW_TOKEN".into()),
            tg_sandbox::DEFAULT_SERVICENOW_TOKEN,
        )
        .with(&SecretRef::Env("MIM_BRIDGE_WEBHOOK".into()), &webhook)
        .with(
            &SecretRef::Env("SPLUNK_HEC_TOKEN".into()),
            tg_sandbox::DEFAULT_SPLUNK_HEC_TOKEN,
        )
        .with(
            &SecretRef::Env("AWS_ACCESS_KEY_ID".into()),
            tg_sandbox::DEFAULT_BEDROCK_ACCESS_KEY_ID,
        )
        .with(
            &SecretRef::Env("AWS_SECRET_ACCESS_KEY".into()),
            tg_sandbox::DEFAULT_BEDROCK_SECRET_ACCESS_KEY,
        );
    for (i, name) in [
        "PD_KEY_PLATFORM_OPS",
        "PD_KEY_DBA",
        "PD_KEY_PAYMENTS",
        "PD_KEY_SEARCH",
    ]
    .iter()
    .enumerate()
    {
        // PagerDuty integration keys are 32 characters.
        let key = format!("{i:0>2}{}", "s1mk3y00".repeat(4));
        secrets = secrets.with(
            &SecretRef::Env((*name).into()),
            key.get(..32).unwrap_or_default(),
        );
    }
    secrets
}

/// Runs a scenario through the real gate and checks the invariants.
pub async fn run(scenario: &Scenario, opts: &Options) -> anyhow::Result<Report> {
    run_inner(scenario, opts, None).await
}

/// Like [`run`], but stops the gate once the first `restart_after` events are
/// processed and starts a new gate on the same data directory (same store,
/// same audit file, same sandbox) for the rest: state must come back from the store.
pub async fn run_with_restart(
    scenario: &Scenario,
    opts: &Options,
    restart_after: usize,
) -> anyhow::Result<Report> {
    run_inner(scenario, opts, Some(restart_after)).await
}

async fn start_gate(
    config: &Config,
    sandbox: &tg_sandbox::Sandbox,
    data: &std::path::Path,
    clock: Arc<tg_server::ManualClock>,
) -> anyhow::Result<tg_server::Running> {
    // The classifier guard (cache TTL, breaker, budget) runs on the same manual clock.
    let pipeline = tg_server::build_pipeline_with_clock(
        config,
        None,
        &sandbox_secrets(sandbox, "sim-mim-channel"),
        clock.clone(),
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    tg_server::start(listener, data, pipeline, clock, &config.server).await
}

async fn run_inner(
    scenario: &Scenario,
    opts: &Options,
    restart_after: Option<usize>,
) -> anyhow::Result<Report> {
    let events = timeline(scenario, opts)?;
    let sandbox = tg_sandbox::Sandbox::start(tg_sandbox::SandboxConfig::default())
        .await
        .context("cannot start the sandbox")?;
    for spec in &scenario.chaos {
        sandbox
            .state()
            .inject_chaos(spec.clone())
            .map_err(|e| anyhow!("scenario chaos: {e}"))?;
    }
    let text = scenario
        .config_text()?
        .replace("${SANDBOX}", &sandbox.base_url());
    let mut config = Config::from_yaml(&text, &format!("scenario {}", scenario.name))
        .map_err(|e| anyhow!("{e}"))?;
    // The breaker's timer would read the manual clock at wall-clock moments;
    // the simulation checks breakers itself, at each time step (deterministic).
    config.storm.breaker.tick_ms = 0;
    if let Some(url) = &opts.store_url {
        config.store.url = Some(url.clone());
    }
    if !(1..=REPLICAS_MAX).contains(&opts.replicas) {
        bail!("replicas must be 1..={REPLICAS_MAX}");
    }
    if opts.replicas > 1 && (opts.store_url.is_none() || restart_after.is_some()) {
        bail!("several replicas share a PostgreSQL store (store_url) and are not restarted");
    }
    let data = tempfile::Builder::new().prefix("tg-sim-").tempdir()?;
    let clock = Arc::new(tg_server::ManualClock::new(scenario.start));
    {
        // Outages last simulated time.
        use tg_server::Clock as _;
        let c = clock.clone();
        sandbox.state().set_clock(Arc::new(move || c.now()));
    }
    // The log groups and streams an operator would have created for the CloudWatch sinks.
    for sink in &config.audit.sinks {
        if let tg_config::AuditSinkConfig::Cloudwatch(c) = sink {
            sandbox
                .state()
                .cloudwatch_create_log_stream(&c.log_group_name, &c.log_stream_name);
        }
    }
    let mut outages: Vec<&ScenarioOutage> = scenario.outages.iter().collect();
    outages.sort_by_key(|o| o.at_secs);
    let mut next_outage = 0usize;
    let mut gate = start_gate(&config, &sandbox, data.path(), clock.clone()).await?;
    let mut base = format!("http://{}", gate.addr);
    // Replicas beyond the first: the same store and clock, their own audit file.
    let mut others = Vec::new();
    for r in 1..opts.replicas {
        let dir = data.path().join(format!("replica-{r}"));
        std::fs::create_dir_all(&dir)?;
        others.push(start_gate(&config, &sandbox, &dir, clock.clone()).await?);
    }
    let http = reqwest::Client::builder().timeout(HTTP_TIMEOUT).build()?;
    let mut store = gate.state.store.clone();

    let started = Instant::now();
    let mut now_secs: u64 = 0;
    let mut accepted: usize = 0;
    let mut i = 0;
    let mut restarted = false;
    while i < events.len() {
        if !restarted && restart_after.is_some_and(|n| i >= n) {
            // Stop the gate between two time steps (everything accepted is
            // processed), then a new gate on the same data directory.
            restarted = true;
            gate.shutdown(SHUTDOWN_GRACE).await;
            gate = start_gate(&config, &sandbox, data.path(), clock.clone()).await?;
            base = format!("http://{}", gate.addr);
            store = gate.state.store.clone();
        }
        let at = events.get(i).map(|e| e.at_secs).unwrap_or(now_secs);
        // An outage starts at its moment (events at the same second see it).
        while let Some(o) = outages.get(next_outage).filter(|o| o.at_secs <= at) {
            if o.at_secs > now_secs {
                clock.advance(chrono::Duration::seconds(
                    i64::try_from(o.at_secs - now_secs).unwrap_or(i64::MAX),
                ));
                now_secs = o.at_secs;
                tg_server::storm::tick_breakers(&gate.state).await?;
            }
            sandbox
                .state()
                .inject_outage(tg_sandbox::OutageSpec {
                    target: o.target.clone(),
                    down_for_ms: o.for_secs.saturating_mul(1000),
                    status: None,
                    reset: o.reset,
                    retry_after_secs: None,
                })
                .map_err(|e| anyhow!("scenario outage: {e}"))?;
            next_outage += 1;
        }
        if at > now_secs {
            clock.advance(chrono::Duration::seconds(
                i64::try_from(at - now_secs).unwrap_or(i64::MAX),
            ));
            now_secs = at;
            // What the breaker timer would have done before this moment.
            tg_server::storm::tick_breakers(&gate.state).await?;
        }
        // The time step's events, in timeline order, handed to the intake as
        // one batch per replica (round-robin, like a load balancer): one
        // commit each, then the step is drained. `serial` hands them one at a
        // time and drains after each.
        let rest = events.get(i..).unwrap_or_default();
        let step_len = rest.iter().take_while(|e| e.at_secs == at).count().max(1);
        let step = rest.get(..step_len).unwrap_or_default();
        // (index of its first event, its events)
        let chunks: Vec<(usize, &[TimedEvent])> = if opts.serial {
            step.chunks(1)
                .enumerate()
                .map(|(k, c)| (i + k, c))
                .collect()
        } else {
            vec![(i, step)]
        };
        for (first, chunk) in chunks {
            let gates: Vec<&tg_server::AppState> = std::iter::once(&gate.state)
                .chain(others.iter().map(|g| &g.state))
                .collect();
            for (r, to) in gates.iter().enumerate() {
                let mut bodies = Vec::new();
                for (k, e) in chunk.iter().enumerate() {
                    if (first + k) % opts.replicas == r {
                        bodies.push((source_of(&e.source)?, serde_json::to_vec(&e.body)?));
                    }
                }
                if bodies.is_empty() {
                    continue;
                }
                let batch: Vec<(tg_model::Source, &[u8])> =
                    bodies.iter().map(|(s, b)| (*s, b.as_slice())).collect();
                accepted += tg_server::accept_in_order(to, &batch).await.map_err(|p| {
                    anyhow!(
                        "events {first}.. at +{at}s were refused: {} {}: {}",
                        p.status,
                        p.title,
                        p.detail
                    )
                })?;
            }
            drain(&store, &clock, &gates).await?;
        }
        i += step_len;
    }
    // After the last alert, quiet time: an open breaker closes once its
    // window has emptied and the cool-down has passed, with no event needed.
    let quiet = config.storm.breaker.window_secs + config.storm.breaker.cooldown_secs + 1;
    clock.advance(chrono::Duration::seconds(
        i64::try_from(quiet).unwrap_or(i64::MAX),
    ));
    tg_server::storm::tick_breakers(&gate.state).await?;
    let wall = started.elapsed();

    let transitions = store
        .storm_transitions(tg_store::TRANSITIONS_LIST_MAX)
        .await?;
    let lines = store.audit_lines().await?;
    let chain: Vec<tg_model::ChainRecord> = lines
        .iter()
        .map(|l| serde_json::from_str(l))
        .collect::<Result<_, _>>()
        .context("stored audit record")?;
    let records: Vec<AuditRecord> = chain.iter().filter_map(|r| r.run().cloned()).collect();
    let audit_steps = chain.len() - records.len();
    let step_kinds = |kind: tg_model::StepKind, outcome: Option<&str>| {
        chain
            .iter()
            .filter(|r| match r {
                tg_model::ChainRecord::Step(s) => {
                    s.kind == kind
                        && outcome
                            .is_none_or(|o| s.attempt.as_ref().is_some_and(|a| a.outcome == o))
                }
                tg_model::ChainRecord::Run(_) => false,
            })
            .count()
    };
    let breaker_steps = step_kinds(tg_model::StepKind::BreakerTransition, None);
    let delivered_steps = step_kinds(tg_model::StepKind::ActionAttempt, Some("delivered"));
    let postmortem = postmortem_query(&http, &base, &records).await?;
    let decisions = decision_lines(&store).await?;
    let sinks_behind = sinks_catch_up(&gate.state, &config).await?;
    for g in others {
        g.shutdown(SHUTDOWN_GRACE).await;
    }
    gate.shutdown(SHUTDOWN_GRACE).await;
    let file = tg_audit::verify_file(data.path().join("audit.jsonl"))?;

    let mut report = Report {
        scenario: scenario.name.clone(),
        seed: opts.seed,
        scale: opts.scale,
        events: accepted,
        audit_records: records.len(),
        simulated_secs: now_secs,
        wall,
        minutes: BTreeMap::new(),
        held: BTreeMap::new(),
        totals: Minute::default(),
        incidents: sandbox.state().incidents().len(),
        pagerduty_triggers: sandbox
            .state()
            .pagerduty_alerts()
            .iter()
            .map(|a| usize::try_from(a.trigger_count).unwrap_or(usize::MAX))
            .sum(),
        bridge_posts: sandbox.state().bridge_posts().len(),
        work_notes: 0,
        ticket_resolves: 0,
        pagerduty_resolved: 0,
        faulted_action_calls: faulted_calls(
            &sandbox,
            &[
                tg_sandbox::Target::Servicenow,
                tg_sandbox::Target::Pagerduty,
                tg_sandbox::Target::Bridge,
            ],
        ),
        breaker_transitions: Vec::new(),
        umbrella_tickets: records.iter().filter(|r| umbrella_ticket(r)).count(),
        postmortem,
        decisions,
        shipped: BTreeMap::new(),
        sink_calls_refused: faulted_calls(
            &sandbox,
            &[
                tg_sandbox::Target::Splunk,
                tg_sandbox::Target::Cloudwatch,
                tg_sandbox::Target::Otlp,
            ],
        ),
        violations: Vec::new(),
    };
    tally(&mut report, &records, scenario.start);
    let emulated = Emulated {
        incident_keys: sandbox
            .state()
            .incidents()
            .iter()
            .filter_map(|i| i.field("correlation_id").map(str::to_owned))
            .collect(),
        pagerduty_triggers: report.pagerduty_triggers,
        work_notes: sandbox
            .state()
            .servicenow_updates()
            .iter()
            .filter(|u| u.adds_work_note())
            .count(),
        ticket_resolves: sandbox
            .state()
            .servicenow_updates()
            .iter()
            .filter(|u| u.resolves())
            .count(),
        pagerduty_resolved: sandbox
            .state()
            .pagerduty_alerts()
            .iter()
            .filter(|a| a.status == tg_sandbox::AlertStatus::Resolved)
            .count(),
        bridge_posts: report.bridge_posts,
        transitions,
        audit_steps,
        breaker_steps,
        delivered_steps,
    };
    report.work_notes = emulated.work_notes;
    report.ticket_resolves = emulated.ticket_resolves;
    report.pagerduty_resolved = emulated.pagerduty_resolved;
    report.breaker_transitions = emulated
        .transitions
        .iter()
        .map(|t| {
            format!(
                "{} {} {} ({} services)",
                t.at.to_rfc3339(),
                t.environment,
                t.to,
                t.services
            )
        })
        .collect();
    report.violations = check(&config, scenario, &records, &emulated, accepted, &file);
    report
        .violations
        .extend(check_sinks(&config, &sandbox, &sinks_behind, chain.len()));
    report.shipped = config
        .audit
        .sinks
        .iter()
        .map(|s| {
            (
                s.name().to_owned(),
                shipped_seqs(s, &sandbox).map_or(0, |v| v.len()),
            )
        })
        .collect();
    sandbox.shutdown().await;
    Ok(report)
}

/// The chain positions an audit sink's emulator holds, in arrival order
/// (`None` for a sink without an emulator to read back: file, stdout).
fn shipped_seqs(
    sink: &tg_config::AuditSinkConfig,
    sandbox: &tg_sandbox::Sandbox,
) -> Option<Vec<u64>> {
    use tg_config::AuditSinkConfig as S;
    let seq_of = |v: &Value| v.get("seq").and_then(Value::as_u64).unwrap_or(0);
    match sink {
        S::SplunkHec(_) => Some(
            sandbox
                .state()
                .splunk_events()
                .iter()
                .map(|e| seq_of(&e.event))
                .collect(),
        ),
        S::Cloudwatch(_) => Some(
            sandbox
                .state()
                .cloudwatch_events()
                .iter()
                .map(|e| serde_json::from_str::<Value>(&e.message).map_or(0, |v| seq_of(&v)))
                .collect(),
        ),
        S::Otlp(_) => Some(
            sandbox
                .state()
                .otlp_records()
                .iter()
                .map(|r| {
                    r.body
                        .get("stringValue")
                        .and_then(Value::as_str)
                        .and_then(|t| serde_json::from_str::<Value>(t).ok())
                        .map_or(0, |v| seq_of(&v))
                })
                .collect(),
        ),
        S::File(_) | S::Stdout(_) => None,
    }
}

/// Every audit sink caught up, and each emulator holds the chain exactly once, in order.
fn check_sinks(
    config: &Config,
    sandbox: &tg_sandbox::Sandbox,
    behind: &[(String, u64, u64)],
    chain_len: usize,
) -> Vec<String> {
    let mut v = Vec::new();
    for (name, cursor, head) in behind {
        v.push(format!(
            "audit sink {name}: shipped up to seq {cursor} of {head} after {SINK_CATCH_UP_TIMEOUT:?}"
        ));
    }
    let want: Vec<u64> = (1..=u64::try_from(chain_len).unwrap_or(0)).collect();
    for sink in &config.audit.sinks {
        let Some(got) = shipped_seqs(sink, sandbox) else {
            continue;
        };
        if got != want {
            let dups = got.len() - got.iter().collect::<std::collections::BTreeSet<_>>().len();
            let first_off = got
                .iter()
                .zip(&want)
                .position(|(g, w)| g != w)
                .unwrap_or(got.len().min(want.len()));
            v.push(format!(
                "audit sink {}: the emulator holds {} records ({dups} repeated) for a chain of {}; first difference at position {}",
                sink.name(),
                got.len(),
                want.len(),
                first_off + 1
            ));
        }
    }
    v
}

/// Waits (wall time, bounded) until every audit sink has shipped the whole
/// chain; returns the sinks still behind, with their cursor and the head.
async fn sinks_catch_up(
    state: &tg_server::AppState,
    config: &Config,
) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let deadline = Instant::now() + SINK_CATCH_UP_TIMEOUT;
    loop {
        let head = state.store.audit_head().await?.map_or(0, |(s, _)| s);
        let mut behind = Vec::new();
        for sink in &config.audit.sinks {
            let cursor = state.store.sink_cursor(sink.name()).await?;
            if cursor < head {
                behind.push((sink.name().to_owned(), cursor, head));
            }
        }
        if behind.is_empty() || Instant::now() >= deadline {
            return Ok(behind);
        }
        state.audited.notify_waiters();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Calls to `targets` that an injected fault or outage failed.
fn faulted_calls(sandbox: &tg_sandbox::Sandbox, targets: &[tg_sandbox::Target]) -> usize {
    targets
        .iter()
        .map(|t| {
            sandbox
                .state()
                .requests(*t)
                .iter()
                .filter(|r| r.faulted)
                .count()
        })
        .sum()
}

/// Every run's decision in acceptance order.
async fn decision_lines(store: &tg_store::Store) -> anyhow::Result<Vec<DecisionLine>> {
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let page = store.runs_in_order(after, tg_store::LIST_ROWS_MAX).await?;
        let Some((last, _)) = page.last() else {
            return Ok(out);
        };
        after = *last;
        for (_, run) in page {
            let mut outcomes: [String; 3] = Default::default();
            let mut failed: [Option<String>; 3] = Default::default();
            for (i, kind) in [ActionKind::Ticket, ActionKind::Page, ActionKind::Mim]
                .iter()
                .enumerate()
            {
                let a = run.decision.as_ref().and_then(|d| d.get(*kind));
                if let (Some(o), Some(a)) = (outcomes.get_mut(i), a) {
                    *o = a.outcome.as_str().to_owned();
                }
                if let (Some(f), Some(a)) = (failed.get_mut(i), a) {
                    *f = a
                        .conditions
                        .iter()
                        .find(|c| !c.passed)
                        .map(|c| format!("{}: {} vs {}", c.id, c.actual, c.threshold));
                }
            }
            out.push(DecisionLine {
                index: out.len() + 1,
                received_at: run.received_at,
                service: run.event.service.clone(),
                alert_name: run.event.alert_name.clone(),
                status: serde_json::to_value(run.event.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                outcomes,
                failed,
            });
        }
    }
}

/// Asks the gate for the whole story of the service with the most runs, as a
/// postmortem would, and times it.
async fn postmortem_query(
    http: &reqwest::Client,
    base: &str,
    records: &[AuditRecord],
) -> anyhow::Result<Option<Postmortem>> {
    let mut by_service: BTreeMap<&str, usize> = BTreeMap::new();
    for r in records {
        *by_service.entry(r.event.service.as_str()).or_default() += 1;
    }
    let Some((service, _)) = by_service.into_iter().max_by_key(|(_, n)| *n) else {
        return Ok(None);
    };
    let started = Instant::now();
    let resp = http
        .get(format!("{base}/v1/audit"))
        .query(&[("service", service), ("limit", "20000")])
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let took = started.elapsed();
    if !status.is_success() {
        bail!("GET /v1/audit?service={service}: {status} {body}");
    }
    if body.get("hashes_ok") != Some(&Value::Bool(true)) {
        bail!("GET /v1/audit?service={service}: a record does not match its hash");
    }
    Ok(Some(Postmortem {
        service: service.to_owned(),
        records: body
            .get("records")
            .and_then(Value::as_u64)
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        story_lines: body
            .get("story")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
        took,
    }))
}

/// Waits until every accepted run is completed (audited): woken by the
/// gates' completions, checked at least every [`DRAIN_POLL`]. When processing
/// is done and only outbox retries are waiting (nothing in flight), simulated
/// time moves to the next due attempt, as a discrete-event simulator does.
async fn drain(
    store: &tg_store::Store,
    clock: &tg_server::ManualClock,
    gates: &[&tg_server::AppState],
) -> anyhow::Result<()> {
    use tg_server::Clock as _;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let completed = gates.first().map(|g| g.completed.clone());
    loop {
        // Created before the check, so a completion in between wakes it
        // (`Notify::notify_waiters` reaches every `Notified` already created).
        let woken = completed.as_deref().map(tokio::sync::Notify::notified);
        let open = store.open_runs().await?;
        if open.total() == 0 {
            return Ok(());
        }
        if open.processing() == 0 {
            let now = clock.now();
            let ob = store.outbox_counts(now).await?;
            if ob.in_flight == 0
                && let Some(due) = ob.next_due
            {
                if due > now {
                    clock.advance(due - now);
                }
                for g in gates {
                    g.outbox.notify_one();
                }
            }
        }
        if Instant::now() > deadline {
            bail!("{} runs still open after {DRAIN_TIMEOUT:?}", open.total());
        }
        match woken {
            Some(woken) => tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(DRAIN_POLL) => {}
            },
            None => tokio::time::sleep(DRAIN_POLL).await,
        }
    }
}

/// The tg_model source a scenario stream names (`source:`), as
/// `POST /v1/events/{source}` spells it.
fn source_of(name: &str) -> anyhow::Result<tg_model::Source> {
    tg_model::Source::ALL
        .into_iter()
        .filter(|s| *s != tg_model::Source::CloudwatchSns)
        .find(|s| s.as_str() == name)
        .ok_or_else(|| anyhow!("unknown source {name:?}"))
}

fn minute_of(t: DateTime<Utc>, start: DateTime<Utc>) -> u64 {
    u64::try_from((t - start).num_minutes()).unwrap_or(0)
}

fn tally(report: &mut Report, records: &[AuditRecord], start: DateTime<Utc>) {
    for r in records {
        let m = report
            .minutes
            .entry(minute_of(r.timestamps.decided_at, start))
            .or_default();
        m.events += 1;
        report.totals.events += 1;
        for a in &r.decision.actions {
            let (row_n, total_n) = match (a.outcome, a.action) {
                (Outcome::Execute, _) if a.op == ActionOp::Resolve => {
                    (&mut m.resolves, &mut report.totals.resolves)
                }
                (Outcome::Execute, ActionKind::Ticket) if a.op == ActionOp::Update => {
                    (&mut m.notes, &mut report.totals.notes)
                }
                (Outcome::Execute, ActionKind::Ticket) => {
                    (&mut m.tickets, &mut report.totals.tickets)
                }
                (Outcome::Execute, ActionKind::Page) => (&mut m.pages, &mut report.totals.pages),
                (Outcome::Execute, ActionKind::Mim) => (&mut m.mims, &mut report.totals.mims),
                (Outcome::Suppressed, _) => (&mut m.suppressed, &mut report.totals.suppressed),
                (Outcome::Review, _) => (&mut m.review, &mut report.totals.review),
                (Outcome::Skip, _) => {
                    if a.requested || a.gate_outcome != Outcome::Skip {
                        let why = first_failed(a);
                        *report
                            .held
                            .entry(format!("{} skip: {why}", a.action))
                            .or_default() += 1;
                    }
                    continue;
                }
            };
            *row_n += 1;
            *total_n += 1;
            if a.outcome != Outcome::Execute {
                let why = first_failed(a);
                *report
                    .held
                    .entry(format!("{} {}: {why}", a.action, a.outcome.as_str()))
                    .or_default() += 1;
            }
        }
    }
}

fn first_failed(a: &tg_model::ActionDecision) -> String {
    a.conditions
        .iter()
        .find(|c| !c.passed)
        .map(|c| c.id.clone())
        .or_else(|| a.capped_by.as_ref().map(|c| format!("autonomy ({c})")))
        .unwrap_or_else(|| "-".into())
}

/// What the emulators received.
#[derive(Debug, Clone, Default)]
pub struct Emulated {
    /// `correlation_id` of every ServiceNow incident (`tg:<run>:ticket`).
    pub incident_keys: Vec<String>,
    pub pagerduty_triggers: usize,
    /// ServiceNow work notes the emulator accepted.
    pub work_notes: usize,
    /// ServiceNow updates that set an incident Resolved.
    pub ticket_resolves: usize,
    /// PagerDuty alerts the emulator holds as resolved.
    pub pagerduty_resolved: usize,
    pub bridge_posts: usize,
    /// Step records on the audit chain (every kind).
    pub audit_steps: usize,
    /// Of those, breaker transitions.
    pub breaker_steps: usize,
    /// Of those, attempts that delivered an action.
    pub delivered_steps: usize,
    /// The store's breaker transitions (read after the run).
    pub transitions: Vec<tg_store::TransitionRow>,
}

/// Whether the run executed the storm's umbrella ticket.
fn umbrella_ticket(r: &AuditRecord) -> bool {
    r.decision.get(ActionKind::Ticket).is_some_and(|a| {
        a.outcome == Outcome::Execute && a.conditions.iter().any(|c| c.id == "storm.umbrella")
    })
}

/// Whether the run opened a new incident of `kind` (not a work note or a resolution).
fn executed(r: &AuditRecord, kind: ActionKind) -> bool {
    r.decision.creates(kind)
}

/// Whether the run executed `op` on an incident of `kind`.
fn executed_op(r: &AuditRecord, kind: ActionKind, op: ActionOp) -> bool {
    r.decision
        .get(kind)
        .is_some_and(|a| a.outcome == Outcome::Execute && a.op == op)
}

/// The storm invariants; each broken one is a line naming what broke.
///
/// - pages per team (and globally) never exceed the token bucket's envelope:
///   in any interval of length `d`, at most `burst + per_hour * d / 3600` pages;
/// - a fingerprint pages at most once per dedup window (flapping included);
/// - no two open tickets share a fingerprint (a ticket is open until the source
///   resolves its alert);
/// - every accepted event has exactly one audit record, and `audit.jsonl` verifies
///   with as many records;
/// - every action the emulators received corresponds to an `execute` decision;
/// - the scenario's expectations (`expect.mims`, `expect.pages`, `expect.events_min`).
pub fn check(
    config: &Config,
    scenario: &Scenario,
    records: &[AuditRecord],
    emulated: &Emulated,
    accepted: usize,
    file: &tg_audit::VerifyReport,
) -> Vec<String> {
    let mut v = Vec::new();

    // Exactly one audit record per event.
    let ids: BTreeSet<&str> = records.iter().map(|r| r.run_id.as_str()).collect();
    if records.len() != accepted || ids.len() != accepted {
        v.push(format!(
            "audit: {} records ({} distinct runs) for {accepted} accepted events",
            records.len(),
            ids.len()
        ));
    }
    // ... and every breaker transition one step record on the same chain.
    if emulated.breaker_steps != emulated.transitions.len() {
        v.push(format!(
            "audit: {} breaker step records for {} breaker transitions",
            emulated.breaker_steps,
            emulated.transitions.len()
        ));
    }
    // ... and every delivered action one attempt record that says so.
    let delivered = records
        .iter()
        .flat_map(|r| r.actions.iter())
        .filter(|a| a.status == tg_model::ActionStatus::Delivered)
        .count();
    if emulated.delivered_steps != delivered {
        v.push(format!(
            "audit: {} delivered-attempt records for {delivered} delivered actions",
            emulated.delivered_steps
        ));
    }
    let chained = accepted + emulated.audit_steps;
    if !file.ok || usize::try_from(file.records).unwrap_or(0) != chained {
        v.push(format!(
            "audit.jsonl: {} records, ok={} (expected {chained})",
            file.records, file.ok
        ));
    }

    // Paging envelope per team and global.
    let mut by_team: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    let mut all_pages = Vec::new();
    for r in records.iter().filter(|r| executed(r, ActionKind::Page)) {
        // The team a page is charged to: the owner, never the model's pick.
        let team = r
            .classification
            .as_ref()
            .map(|c| tg_engine::routing_team(&config.catalog, &r.event.service, c).to_owned())
            .unwrap_or_default();
        by_team
            .entry(team)
            .or_default()
            .push(r.timestamps.decided_at);
        all_pages.push(r.timestamps.decided_at);
    }
    let p = &config.storm.paging;
    for (team, times) in &by_team {
        if let Some(msg) = envelope(times, p.team.burst, p.team.per_hour) {
            v.push(format!("team {team}: {msg}"));
        }
    }
    all_pages.sort();
    if let Some(msg) = envelope(&all_pages, p.global.burst, p.global.per_hour) {
        v.push(format!("global: {msg}"));
    }
    let mut by_service: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for r in records.iter().filter(|r| executed(r, ActionKind::Page)) {
        by_service
            .entry(r.event.service.as_str())
            .or_default()
            .push(r.timestamps.decided_at);
    }
    for (service, times) in &by_service {
        let b = p.services.get(*service).copied().unwrap_or(p.service);
        if let Some(msg) = envelope(times, b.burst, b.per_hour) {
            v.push(format!("service {service}: {msg}"));
        }
    }

    // One page per fingerprint per dedup window; one open ticket per fingerprint.
    let window_of =
        |r: &AuditRecord| config.dedup_window_for(&r.event.service, r.event.source.as_str());
    let mut last_page: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    let mut open_ticket: BTreeMap<&str, &str> = BTreeMap::new();
    for r in records {
        let fp = r.event.fingerprint.as_str();
        if r.event.status == AlertStatus::Resolved {
            open_ticket.remove(fp);
            continue;
        }
        if executed(r, ActionKind::Page) {
            let t = r.timestamps.decided_at;
            if let Some(prev) = last_page.get(fp)
                && t - *prev < window_of(r)
            {
                v.push(format!(
                    "fingerprint {fp} ({}) paged at {prev} and again at {t}, inside {}s",
                    r.event.service,
                    window_of(r).num_seconds()
                ));
            }
            last_page.insert(fp, t);
        }
        if executed(r, ActionKind::Ticket) {
            if let Some(first) = open_ticket.get(fp) {
                v.push(format!(
                    "fingerprint {fp} ({}): ticket of run {} while run {first}'s is open",
                    r.event.service, r.run_id
                ));
            }
            open_ticket.insert(fp, r.run_id.as_str());
        }
    }

    // One open ticket per group: a second ticket in a group needs the group to
    // have resolved or to have been idle for the group window first (a group
    // stays open while new alerts arrive, so two creates closer than the
    // window with no resolution between them break the invariant).
    let group_window = chrono::Duration::seconds(
        i64::try_from(config.storm.group.window_secs).unwrap_or(i64::MAX),
    );
    let mut group_ticket: BTreeMap<&str, (&str, DateTime<Utc>)> = BTreeMap::new();
    for r in records {
        let Some(g) = r.decision.group.as_deref() else {
            continue;
        };
        let group_resolved = r
            .decision
            .actions
            .iter()
            .any(|a| a.conditions.iter().any(|c| c.id == "group.resolved"));
        if group_resolved {
            group_ticket.remove(g);
            continue;
        }
        if executed(r, ActionKind::Ticket) && !umbrella_ticket(r) {
            let t = r.timestamps.decided_at;
            if let Some((first, at)) = group_ticket.get(g)
                && t - *at < group_window
            {
                v.push(format!(
                    "group {g}: ticket of run {} while run {first}'s is open (opened {at})",
                    r.run_id
                ));
            }
            group_ticket.insert(g, (r.run_id.as_str(), t));
        }
    }

    // The emulators saw exactly what was executed.
    // A MIM opens a major incident in ServiceNow too (`tg:<run>:mim`).
    let ticket_keys: BTreeSet<String> = records
        .iter()
        .flat_map(|r| {
            [ActionKind::Ticket, ActionKind::Mim]
                .into_iter()
                .filter(|k| executed(r, *k))
                .map(|k| format!("tg:{}:{}", r.run_id, k.as_str()))
        })
        .collect();
    for k in &emulated.incident_keys {
        if !ticket_keys.contains(k) {
            v.push(format!("ServiceNow incident {k} has no execute decision"));
        }
    }
    if emulated.incident_keys.len() != ticket_keys.len() {
        v.push(format!(
            "{} ServiceNow incidents for {} executed tickets and MIMs",
            emulated.incident_keys.len(),
            ticket_keys.len()
        ));
    }
    let pages = records
        .iter()
        .filter(|r| executed(r, ActionKind::Page))
        .count();
    if emulated.pagerduty_triggers != pages {
        v.push(format!(
            "{} PagerDuty triggers for {pages} executed pages",
            emulated.pagerduty_triggers
        ));
    }
    // Each executed work note reached its ticket exactly once; each ticket
    // resolution set one incident Resolved.
    let notes = records
        .iter()
        .filter(|r| executed_op(r, ActionKind::Ticket, ActionOp::Update))
        .count();
    if emulated.work_notes != notes {
        v.push(format!(
            "{} ServiceNow work notes for {notes} executed work notes",
            emulated.work_notes
        ));
    }
    let ticket_resolves = records
        .iter()
        .filter(|r| executed_op(r, ActionKind::Ticket, ActionOp::Resolve))
        .count();
    if emulated.ticket_resolves != ticket_resolves {
        v.push(format!(
            "{} ServiceNow resolutions for {ticket_resolves} executed ticket resolutions",
            emulated.ticket_resolves
        ));
    }
    // Each executed page resolution resolved exactly one open PagerDuty alert.
    let page_resolves = records
        .iter()
        .filter(|r| executed_op(r, ActionKind::Page, ActionOp::Resolve))
        .count();
    if emulated.pagerduty_resolved != page_resolves {
        v.push(format!(
            "{} resolved PagerDuty alerts for {page_resolves} executed page resolutions",
            emulated.pagerduty_resolved
        ));
    }
    let mims = records
        .iter()
        .filter(|r| executed(r, ActionKind::Mim))
        .count();
    if emulated.bridge_posts != mims {
        v.push(format!(
            "{} bridge posts for {mims} executed MIMs",
            emulated.bridge_posts
        ));
    }

    // Storm breaker: no page while an environment's breaker is open; one
    // umbrella ticket per storm; expectations per environment.
    let mut open_since: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    // (environment, opened, closed; None = still open at the end)
    type OpenInterval<'a> = (&'a str, DateTime<Utc>, Option<DateTime<Utc>>);
    let mut intervals: Vec<OpenInterval<'_>> = Vec::new();
    for t in &emulated.transitions {
        if t.to == "open" {
            open_since.insert(t.environment.as_str(), t.at);
        } else if let Some(from) = open_since.remove(t.environment.as_str()) {
            intervals.push((t.environment.as_str(), from, Some(t.at)));
        }
    }
    // The run ends with a quiet period longer than the window plus the
    // cool-down: every breaker must have closed by then, without an event.
    for (env, from) in &open_since {
        v.push(format!(
            "the {env} breaker opened at {from} and was still open after the quiet period"
        ));
    }
    intervals.extend(open_since.iter().map(|(env, from)| (*env, *from, None)));
    for r in records.iter().filter(|r| executed(r, ActionKind::Page)) {
        let t = r.timestamps.decided_at;
        let env = r.event.environment.as_str();
        // The breaker opens *at* an event: pages at that instant were decided before it.
        if let Some((_, from, _)) = intervals
            .iter()
            .find(|(e, from, to)| *e == env && t > *from && to.is_none_or(|to| t < to))
        {
            v.push(format!(
                "run {} paged at {t} while the {env} breaker was open (since {from})",
                r.run_id
            ));
        }
    }
    let storms = intervals.len();
    let umbrellas = records.iter().filter(|r| umbrella_ticket(r)).count();
    if umbrellas > storms {
        v.push(format!(
            "{umbrellas} umbrella tickets for {storms} storm(s)"
        ));
    }
    let e = &scenario.expect;
    for (env, want) in &e.breaker_opens {
        let opened = emulated
            .transitions
            .iter()
            .any(|t| t.environment == *env && t.to == "open");
        if opened != *want {
            v.push(format!(
                "the {env} breaker {} but the scenario expects it {}",
                if opened { "opened" } else { "never opened" },
                if *want { "to open" } else { "to stay closed" }
            ));
        }
    }
    if let Some(want) = e.umbrella_tickets
        && want != umbrellas
    {
        v.push(format!("expected {want} umbrella tickets, got {umbrellas}"));
    }
    let tickets = records
        .iter()
        .filter(|r| executed(r, ActionKind::Ticket))
        .count();
    let resolves = ticket_resolves + page_resolves;
    for (what, want, got) in [
        ("tickets", e.tickets, tickets),
        ("work notes", e.notes, notes),
        ("resolutions", e.resolves, resolves),
    ] {
        if let Some(want) = want
            && want != got
        {
            v.push(format!("expected {want} {what}, got {got}"));
        }
    }
    if let Some(want) = e.mims
        && want != mims
    {
        v.push(format!("expected {want} MIMs, got {mims}"));
    }
    if let Some(want) = e.pages
        && want != pages
    {
        v.push(format!("expected {want} pages, got {pages}"));
    }
    if let Some(min) = e.events_min
        && accepted < min
    {
        v.push(format!("expected at least {min} events, got {accepted}"));
    }
    v
}

/// Token-bucket envelope: in every interval `[t_i, t_j]`, at most
/// `burst + floor(per_hour * (t_j - t_i) / 1h)` pages. `times` sorted.
fn envelope(times: &[DateTime<Utc>], burst: u32, per_hour: u32) -> Option<String> {
    let mut sorted = times.to_vec();
    sorted.sort();
    for (i, a) in sorted.iter().enumerate() {
        for (j, b) in sorted.iter().enumerate().skip(i) {
            let count = j - i + 1;
            let ms = (*b - *a).num_milliseconds().max(0);
            let allowed = u64::from(burst)
                + u64::try_from(i128::from(ms) * i128::from(per_hour) / 3_600_000).unwrap_or(0);
            if u64::try_from(count).unwrap_or(u64::MAX) > allowed {
                return Some(format!(
                    "{count} pages between {a} and {b}, the bucket allows {allowed} (burst {burst}, {per_hour}/h)"
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_allows_burst_then_refill_only() {
        let t = |s: i64| default_start() + chrono::Duration::seconds(s);
        assert!(envelope(&[t(0), t(1)], 2, 6).is_none());
        assert!(envelope(&[t(0), t(1), t(2)], 2, 6).is_some());
        assert!(envelope(&[t(0), t(1), t(600)], 2, 6).is_none());
    }

    #[test]
    fn timeline_is_reproducible_and_sorted() {
        let s = Scenario::from_yaml(
            r#"
name: t
streams:
  - name: a
    source: generic
    services: [x, y]
    every_secs: 10
    until_secs: 100
    jitter_secs: 5
    payload: { service: "{{service}}", alert_name: "A{{n}}" }
"#,
        )
        .unwrap();
        let a = timeline(
            &s,
            &Options {
                seed: 7,
                scale: 1.0,
                ..Options::default()
            },
        )
        .unwrap();
        let b = timeline(
            &s,
            &Options {
                seed: 7,
                scale: 1.0,
                ..Options::default()
            },
        )
        .unwrap();
        let c = timeline(
            &s,
            &Options {
                seed: 8,
                scale: 1.0,
                ..Options::default()
            },
        )
        .unwrap();
        let key = |v: &[TimedEvent]| {
            v.iter()
                .map(|e| (e.at_secs, e.body.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
        assert_eq!(a.len(), 22);
        assert!(a.windows(2).all(|w| w[0].at_secs <= w[1].at_secs));
        let half = timeline(
            &s,
            &Options {
                seed: 7,
                scale: 0.5,
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(half.len(), 12);
    }
}

/// One decision a configuration change moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    pub before: DecisionLine,
    pub after: DecisionLine,
}

impl Moved {
    /// `page execute -> review (page.confidence: 0.86 vs >= 0.9)`, per action that moved.
    pub fn changes(&self) -> Vec<String> {
        let kinds = ["ticket", "page", "mim"];
        kinds
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let (a, b) = (self.before.outcomes.get(i)?, self.after.outcomes.get(i)?);
                if a == b {
                    return None;
                }
                let why = self
                    .after
                    .failed
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| self.before.failed.get(i).cloned().flatten())
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default();
                Some(format!("{k} {a} -> {b}{why}"))
            })
            .collect()
    }
}

/// The decisions that differ between two runs of the same scenario (same
/// seed, so the same events in the same order). Errors when the runs did not
/// see the same events.
pub fn diff_decisions(a: &[DecisionLine], b: &[DecisionLine]) -> Result<Vec<Moved>, String> {
    if a.len() != b.len() {
        return Err(format!("the runs saw {} and {} events", a.len(), b.len()));
    }
    let mut out = Vec::new();
    for (x, y) in a.iter().zip(b) {
        if (x.received_at, &x.service, &x.alert_name, &x.status)
            != (y.received_at, &y.service, &y.alert_name, &y.status)
        {
            return Err(format!(
                "event {} differs between the runs ({} {} vs {} {})",
                x.index, x.service, x.alert_name, y.service, y.alert_name
            ));
        }
        if x.outcomes != y.outcomes {
            out.push(Moved {
                before: x.clone(),
                after: y.clone(),
            });
        }
    }
    Ok(out)
}

/// Runs `scenario` as shipped and with `overlay` merged into its
/// configuration, one worker each (decisions in acceptance order, so the two
/// runs are comparable), and returns what moved.
pub async fn policy_diff(
    scenario: &Scenario,
    overlay: &serde_yaml_ng::Mapping,
    opts: &Options,
) -> anyhow::Result<(Report, Report, Vec<Moved>)> {
    let one_worker: serde_yaml_ng::Mapping =
        serde_yaml_ng::from_str("server: { workers: 1 }").context("one worker")?;
    let mut a = scenario.clone();
    merge(&mut a.config, &one_worker);
    let mut b = a.clone();
    merge(&mut b.config, overlay);
    let ra = run(&a, opts).await?;
    let rb = run(&b, opts).await?;
    let moved = diff_decisions(&ra.decisions, &rb.decisions).map_err(|e| anyhow!(e))?;
    Ok((ra, rb, moved))
}
