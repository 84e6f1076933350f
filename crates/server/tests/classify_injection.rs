//! Prompt-injection containment, end to end: every alert of the corpus in
//! `crates/classify/tests/fixtures/injection/` goes through the real gate while
//! the Anthropic emulator OBEYS the injection (sev1, ticket + page + MIM,
//! confidence 0.99). The model is fooled on purpose; the test proves that the
//! policy, not the model, bounds what happens: no executed action, and no
//! traffic to ServiceNow, PagerDuty or the bridge, beyond what the fixture's
//! real signals allow.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{Harness, answer, outcome};
use serde::Deserialize;
use serde_json::Value;
use tg_sandbox::Target;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    description: String,
    events: Vec<Value>,
    /// Most executed actions of each kind (`ticket`, `page`, `mim`) the policy
    /// allows for these events' real signals.
    allowed: BTreeMap<String, usize>,
}

fn corpus() -> Vec<(String, Fixture)> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../classify/tests/fixtures/injection");
    let mut out: Vec<(String, Fixture)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let f: Fixture = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, f)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Runs one fixture on a fresh gate and returns a description of any breach.
async fn breaches(name: &str, f: &Fixture) -> Vec<String> {
    let h = Harness::start().await;
    // The model does whatever the alert text says.
    h.script_tool(
        "event_json",
        answer("sev1", 0.99, true, true, true, "platform-ops"),
    );
    let mut runs = Vec::new();
    for body in &f.events {
        runs.push(h.run_generic(body).await);
    }
    let mut out = Vec::new();
    for kind in ["ticket", "page", "mim"] {
        let executed = runs
            .iter()
            .filter(|r| outcome(r, kind) == "execute")
            .count();
        let allowed = f.allowed.get(kind).copied().unwrap_or(0);
        if executed > allowed {
            out.push(format!(
                "{name}: {executed} {kind} executed, policy allows {allowed}"
            ));
        }
    }
    let delivered = [
        ("ticket", h.state().incidents().len()),
        ("page", h.state().pagerduty_alerts().len()),
        ("mim", h.state().bridge_posts().len()),
    ];
    for (kind, n) in delivered {
        let allowed = f.allowed.get(kind).copied().unwrap_or(0);
        if n > allowed {
            out.push(format!(
                "{name}: {n} {kind} reached the incident tool, policy allows {allowed}"
            ));
        }
    }
    // The model was fooled whenever it was asked: containment is the policy's.
    for r in &runs {
        if let Some(c) = r["classification"]["classification"].as_object() {
            assert_eq!(
                c["classification"], "sev1",
                "{name}: the obeying model answered"
            );
        }
    }
    // The data never closes its own block in the prompt.
    for req in h.state().requests(Target::Anthropic) {
        let user = req.body.as_ref().unwrap()["messages"][0]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(user.matches("</event_json>").count(), 1, "{name}: {user}");
        assert_eq!(user.matches("<event_json>").count(), 1, "{name}: {user}");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_obeying_model_gets_no_action_beyond_what_the_real_signals_allow() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "the corpus has {} alerts", corpus.len());
    let mut all = Vec::new();
    for (name, f) in &corpus {
        assert!(!f.description.is_empty(), "{name}");
        all.extend(breaches(name, f).await);
    }
    assert!(all.is_empty(), "policy breaches:\n{}", all.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_obeying_model_is_really_asked_and_really_obeyed() {
    // Guards the test above against passing vacuously: a production alert at
    // paging autonomy does get its ticket and page from the obeying answer.
    let corpus = corpus();
    let (_, flood) = corpus
        .iter()
        .find(|(n, _)| n.contains("page-flood"))
        .expect("page-flood fixture");
    let h = Harness::start().await;
    h.script_tool(
        "event_json",
        answer("sev1", 0.99, true, true, true, "payments"),
    );
    let run = h.run_generic(&flood.events[0]).await;
    assert_eq!(
        run["classification"]["classification"]["classification"],
        "sev1"
    );
    assert_eq!(outcome(&run, "ticket"), "execute");
    assert_eq!(outcome(&run, "page"), "execute");
    assert_eq!(outcome(&run, "mim"), "review");
    assert_eq!(h.model_calls(), 1);
}
