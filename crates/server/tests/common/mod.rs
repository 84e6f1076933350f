//! Shared harness for the end-to-end tests: the real sandbox emulators, a real
//! gate (`tg_server::start`) on 127.0.0.1:0 with a tempdir data dir and SQLite,
//! a `ManualClock`, and a reqwest client speaking real HTTP to the gate.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone as _;
use serde_json::{Value, json};
use tg_config::{Config, MapSecrets, SecretRef};
use tg_sandbox::{AnthropicScript, Sandbox, SandboxConfig, ScriptReply, Target};
/// The crate under test, by the name the rest of the workspace uses.
pub use triage_gate_server as tg_server;

/// How long a test waits for one run to complete.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(15);

/// ServiceNow assignment groups of the test configuration, by team.
pub const GROUP_PAYMENTS: &str = "1c832706732023002728660c4cf6a7b9";
pub const GROUP_DBA: &str = "8a4dde73c6112278017a6a4baf547aa7";

/// The test configuration. `${SANDBOX}` is replaced with the sandbox's URL.
/// Small retry backoffs keep fault tests fast; the team paging burst is 2 and
/// refills one token every 600 s (per_hour 6).
pub const CONFIG: &str = r#"
server:
  workers: 2
  body_bytes_max: 65536
classifier:
  provider: anthropic
  anthropic:
    base_url: ${SANDBOX}/anthropic
    model: claude-sonnet-4-5
    api_key: { env: ANTHROPIC_API_KEY }
    timeout_ms: 5000
    retries_max: 0
catalog:
  defaults:
    thresholds: { ticket: 0.70, page: 0.80, mim: 0.85 }
    autonomy: shadow
  teams:
    platform-ops: { description: "Platform operations" }
    dba: { description: "Database reliability" }
    payments: { description: "Payments SRE" }
    search: { description: "Search" }
  services:
    orders-db: { team: dba, autonomy: mim, tier: 0 }
    checkout: { team: payments, autonomy: paging, tier: 1 }
    payments-api: { team: payments, autonomy: limited, tier: 1 }
    legacy-billing: { team: payments, autonomy: assist, tier: 2 }
    search: { team: search, autonomy: shadow, tier: 2 }
storm:
  dedup_window_secs: 600
  signal_window_secs: 900
  mim_window_secs: 3600
  paging:
    team: { burst: 2, per_hour: 6 }
    global: { burst: 100, per_hour: 600 }
    service: { burst: 5, per_hour: 6 }
actions:
  servicenow:
    base_url: ${SANDBOX}/servicenow
    token: { env: SERVICENOW_TOKEN }
    assignment_groups:
      platform-ops: 287ebd7da9fe198100f92cc8d1d2154e
      dba: 8a4dde73c6112278017a6a4baf547aa7
      payments: 1c832706732023002728660c4cf6a7b9
      search: 679434f053231300e321ddeeff7b12d8
    timeout_ms: 5000
  pagerduty:
    base_url: ${SANDBOX}/pagerduty
    routing_keys:
      platform-ops: { env: PD_KEY_PLATFORM_OPS }
      dba: { env: PD_KEY_DBA }
      payments: { env: PD_KEY_PAYMENTS }
      search: { env: PD_KEY_SEARCH }
    timeout_ms: 5000
  bridge:
    webhook_url: { env: MIM_BRIDGE_WEBHOOK }
    format: slack
    conference_url: https://meet.example.com/mim-test
    timeout_ms: 5000
  retry:
    attempts_max: 4
    backoff_base_ms: 5
    backoff_max_ms: 20
    retry_after_max_secs: 2
"#;

/// A running sandbox + gate pair.
pub struct Harness {
    pub sandbox: Sandbox,
    pub gate: Option<tg_server::Running>,
    pub clock: Arc<tg_server::ManualClock>,
    pub data: tempfile::TempDir,
    pub http: reqwest::Client,
    pub base: String,
    /// The PostgreSQL database of this gate (`TG_TEST_STORE=postgres`); `None`: SQLite in `data`.
    #[allow(dead_code)]
    pub store_url: Option<String>,
}

/// The secrets every test config references, with the sandbox's default values.
#[allow(dead_code)]
pub fn test_secrets(sandbox: &Sandbox) -> MapSecrets {
    let webhook = sandbox.slack_webhook_url("test-mim-channel");
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
            &SecretRef::Env("INBOUND_WEBHOOK_SECRET".into()),
            INBOUND_WEBHOOK_SECRET,
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
        let key = format!("{i:0>2}{}", "t3stk3y0".repeat(4));
        secrets = secrets.with(&SecretRef::Env((*name).into()), &key[..32]);
    }
    secrets.with(
        &SecretRef::Env("OPENAI_API_KEY".into()),
        tg_sandbox::DEFAULT_OPENAI_API_KEY,
    )
}

/// The value of `{ env: INBOUND_WEBHOOK_SECRET }` (a signed sender's secret).
#[allow(dead_code)]
pub const INBOUND_WEBHOOK_SECRET: &str = "inbound-webhook-secret-0123456789abcdef";

/// `yaml` with grouping off (`storm.group.by: []`): each fingerprint its own
/// incident, for tests of dedup windows, buckets and the breaker alone.
#[allow(dead_code)]
pub fn ungrouped(yaml: &str) -> String {
    assert!(yaml.contains("storm:\n"), "the config has a storm section");
    yaml.replacen("storm:\n", "storm:\n  group: { by: [] }\n", 1)
}

/// The clock's starting point: fixed, so runs are reproducible.
pub fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 24, 3, 0, 0)
        .single()
        .expect("valid start time")
}

impl Harness {
    /// Starts with [`CONFIG`].
    pub async fn start() -> Harness {
        Harness::start_with(CONFIG).await
    }

    /// Starts the sandbox and a gate configured by `yaml` (with `${SANDBOX}`).
    pub async fn start_with(yaml: &str) -> Harness {
        Harness::start_with_at(yaml, t0()).await
    }

    /// As [`Harness::start_with`], with the gate's clock starting at `start`
    /// (a test against a real token issuer starts it at the wall clock's time).
    pub async fn start_with_at(yaml: &str, start: chrono::DateTime<chrono::Utc>) -> Harness {
        let sandbox = Sandbox::start(SandboxConfig::default())
            .await
            .expect("sandbox starts");
        let config = Config::from_yaml(&yaml.replace("${SANDBOX}", &sandbox.base_url()), "test")
            .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        let secrets = test_secrets(&sandbox);
        Harness::launch_at(sandbox, &config, &secrets, start).await
    }

    /// Starts a gate for `config` (already resolved against `sandbox`) with `secrets`.
    #[allow(dead_code)]
    pub async fn launch(sandbox: Sandbox, config: &Config, secrets: &MapSecrets) -> Harness {
        Harness::launch_at(sandbox, config, secrets, t0()).await
    }

    /// As [`Harness::launch`], with the gate's clock starting at `start`.
    pub async fn launch_at(
        sandbox: Sandbox,
        config: &Config,
        secrets: &MapSecrets,
        start: chrono::DateTime<chrono::Utc>,
    ) -> Harness {
        // TG_TEST_STORE=postgres runs the same suite on a fresh PostgreSQL database.
        let mut config = config.clone();
        if tg_store::testing::postgres_selected() {
            config.store.url = Some(
                tg_store::testing::fresh_postgres_database()
                    .await
                    .expect("test database"),
            );
        }
        let config = &config;
        let clock = Arc::new(tg_server::ManualClock::new(start));
        let pipeline = tg_server::build_pipeline_with_clock(config, None, secrets, clock.clone())
            .expect("pipeline builds");
        let data = tempfile::Builder::new()
            .prefix("tg-server-e2e-")
            .tempdir()
            .expect("tempdir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let gate = tg_server::start(
            listener,
            data.path(),
            pipeline,
            clock.clone(),
            &config.server,
        )
        .await
        .expect("gate starts");
        let base = format!("http://{}", gate.addr);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Harness {
            sandbox,
            gate: Some(gate),
            clock,
            data,
            http,
            base,
            store_url: config.store.url.clone(),
        }
    }

    /// A second gate configured by `yaml` on this harness's store, data
    /// directory and clock: another replica, or the same gate after a
    /// restart (what lives in the store survives; what a process kept does
    /// not).
    #[allow(dead_code)]
    pub async fn second_gate(&self, yaml: &str) -> tg_server::Running {
        let mut config = Config::from_yaml(
            &yaml.replace("${SANDBOX}", &self.sandbox.base_url()),
            "test",
        )
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        config.store.url = self.store_url.clone();
        let secrets = test_secrets(&self.sandbox);
        let pipeline =
            tg_server::build_pipeline_with_clock(&config, None, &secrets, self.clock.clone())
                .expect("pipeline builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        tg_server::start(
            listener,
            self.data.path(),
            pipeline,
            self.clock.clone(),
            &config.server,
        )
        .await
        .expect("second gate starts")
    }

    /// Runs in the gate's store, any status.
    #[allow(dead_code)]
    pub async fn runs_total(&self) -> i64 {
        let gate = self.gate.as_ref().expect("gate running");
        gate.state.store.count_runs().await.expect("store readable")
    }

    /// A page draft for `search` (autonomy `shadow`): the model asks for a
    /// page at 0.75, below the paging threshold, so the gates refuse it and
    /// it waits for review. Returns (run id, review item id).
    #[allow(dead_code)]
    pub async fn shadow_page_draft(&self, marker: &str) -> (String, i64) {
        self.script_tool(marker, answer("high", 0.75, false, true, false, "search"));
        let run = self
            .run_generic(&event(
                "search",
                "QueryLatency",
                "prod",
                "prometheus",
                marker,
            ))
            .await;
        assert_eq!(outcome(&run, "page"), "review", "{run}");
        let run_id = run["run_id"].as_str().expect("run id").to_owned();
        let id = self
            .review()
            .await
            .into_iter()
            .find(|i| i["run_id"] == run_id.as_str() && i["action"] == "page")
            .unwrap_or_else(|| panic!("no page draft for {run_id}"))["id"]
            .as_i64()
            .expect("item id");
        (run_id, id)
    }

    pub fn state(&self) -> &tg_sandbox::SandboxState {
        self.sandbox.state()
    }

    /// Requests the emulator of `target` received.
    pub fn received(&self, target: Target) -> usize {
        self.state().requests(target).len()
    }

    /// Calls made to the model.
    pub fn model_calls(&self) -> usize {
        self.received(Target::Anthropic)
    }

    /// Asserts ServiceNow, PagerDuty and the bridge received nothing at all.
    pub fn assert_no_action_traffic(&self) {
        for t in [Target::Servicenow, Target::Pagerduty, Target::Bridge] {
            assert_eq!(
                self.state().requests(t),
                Vec::new(),
                "{t} must receive nothing"
            );
        }
        assert!(self.state().incidents().is_empty());
        assert!(self.state().pagerduty_alerts().is_empty());
        assert!(self.state().bridge_posts().is_empty());
    }

    /// Scripts the model to call the tool with `tool_input` whenever the prompt contains `marker`.
    pub fn script_tool(&self, marker: &str, tool_input: Value) {
        self.script(marker, ScriptReply::ToolInput { tool_input });
    }

    pub fn script(&self, marker: &str, reply: ScriptReply) {
        self.state()
            .script_anthropic(AnthropicScript {
                when_contains: marker.to_owned(),
                reply,
                stop_reason: None,
                times: None,
            })
            .expect("script accepted");
    }

    /// POSTs a raw body to `/v1/events/{source}`.
    pub async fn post_raw(
        &self,
        source: &str,
        body: Vec<u8>,
        correlation: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/v1/events/{source}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(c) = correlation {
            req = req.header("x-correlation-id", c);
        }
        req.send().await.expect("gate answers")
    }

    /// POSTs `body`, expects 202, returns the run IDs.
    pub async fn submit(
        &self,
        source: &str,
        body: &Value,
        correlation: Option<&str>,
    ) -> Vec<String> {
        let resp = self
            .post_raw(source, serde_json::to_vec(body).expect("json"), correlation)
            .await;
        let status = resp.status();
        let answer: Value = resp.json().await.expect("json answer");
        assert_eq!(status.as_u16(), 202, "event refused: {answer}");
        answer["runs"]
            .as_array()
            .expect("runs array")
            .iter()
            .map(|r| r["run_id"].as_str().expect("run_id").to_owned())
            .collect()
    }

    /// Sends one generic event and waits for its single run to complete.
    pub async fn run_generic(&self, body: &Value) -> Value {
        self.run_generic_with(body, None).await
    }

    pub async fn run_generic_with(&self, body: &Value, correlation: Option<&str>) -> Value {
        let ids = self.submit("generic", body, correlation).await;
        assert_eq!(ids.len(), 1, "one event gives one run");
        self.wait_completed(&ids[0]).await
    }

    /// GET /v1/runs/{id}.
    pub async fn get_run(&self, run_id: &str) -> Value {
        self.get_json(&format!("/v1/runs/{run_id}")).await
    }

    /// Polls GET /v1/runs/{id} until `status == "completed"` (bounded by [`RUN_TIMEOUT`]).
    pub async fn wait_completed(&self, run_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
        loop {
            let run = self.get_run(run_id).await;
            if run["status"] == "completed" {
                return run;
            }
            if run["status"] == "decided" {
                self.advance_to_next_attempt().await;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run_id} did not complete within {RUN_TIMEOUT:?}: {run}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("gate answers");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert!(status.is_success(), "GET {path}: {status} {text}");
        serde_json::from_str(&text).expect("json")
    }

    /// Items of GET /v1/review.
    pub async fn review(&self) -> Vec<Value> {
        self.get_json("/v1/review").await["items"]
            .as_array()
            .expect("items")
            .clone()
    }

    /// When no delivery is in flight and an outbox retry is scheduled later,
    /// moves the clock to it (simulated time, like the simulator) and wakes the outbox.
    pub async fn advance_to_next_attempt(&self) {
        use tg_server::Clock as _;
        let Some(g) = &self.gate else { return };
        let now = self.clock.now();
        let Ok(c) = g.state.store.outbox_counts(now).await else {
            return;
        };
        if c.in_flight == 0
            && let Some(due) = c.next_due
        {
            if due > now {
                self.clock.advance(due - now);
            }
            g.state.outbox.notify_one();
        }
    }

    /// Advances the gate's clock.
    pub fn advance_secs(&self, secs: i64) {
        self.clock.advance(chrono::Duration::seconds(secs));
    }

    /// Stops the gate gracefully (the audit file is complete afterwards).
    pub async fn stop_gate(&mut self) {
        if let Some(g) = self.gate.take() {
            g.shutdown(Duration::from_secs(5)).await;
        }
    }

    pub fn audit_path(&self) -> std::path::PathBuf {
        self.data.path().join("audit.jsonl")
    }

    /// The runs' records in the audit file (step records, which have a `kind`, left out).
    pub fn run_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r.get("kind").is_none())
            .collect()
    }
}

/// A generic event. `marker` goes into the summary so model scripts can match it.
pub fn event(service: &str, alert: &str, env: &str, origin: &str, marker: &str) -> Value {
    json!({
        "service": service,
        "alert_name": alert,
        "summary": format!("{marker} {alert} on {service}"),
        "message": format!("{alert} errors rising on {service}"),
        "source_system": origin,
        "environment": env,
        "severity": "high",
    })
}

/// A classification tool input.
pub fn answer(
    class: &str,
    confidence: f64,
    ticket: bool,
    page: bool,
    mim: bool,
    team: &str,
) -> Value {
    json!({
        "classification": class,
        "confidence": confidence,
        "requires_ticket": ticket,
        "requires_paging": page,
        "requires_mim": mim,
        "recommended_team": team,
        "rationale": "scripted by the end-to-end test",
    })
}

/// The decision entry of one action (`ticket`, `page`, `mim`).
pub fn action<'a>(run: &'a Value, kind: &str) -> &'a Value {
    run["decision"]["actions"]
        .as_array()
        .expect("decision.actions")
        .iter()
        .find(|a| a["action"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in decision: {}", run["decision"]))
}

pub fn outcome<'a>(run: &'a Value, kind: &str) -> &'a str {
    action(run, kind)["outcome"].as_str().expect("outcome")
}

/// Outcomes of ticket, page and mim, in that order.
pub fn outcomes(run: &Value) -> [String; 3] {
    ["ticket", "page", "mim"].map(|k| outcome(run, k).to_owned())
}

/// The failed condition `id` of action `kind`.
pub fn failed_condition<'a>(run: &'a Value, kind: &str, id: &str) -> &'a Value {
    let c = action(run, kind)["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no condition {id} on {kind}: {}", action(run, kind)));
    assert_eq!(c["passed"], false, "condition {id} should have failed: {c}");
    c
}

/// The stored result of action `kind` (from GET /v1/runs `actions`).
pub fn action_result<'a>(run: &'a Value, kind: &str) -> &'a Value {
    run["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .find(|a| a["action"] == kind)
        .unwrap_or_else(|| panic!("no stored {kind} action: {}", run["actions"]))
}
