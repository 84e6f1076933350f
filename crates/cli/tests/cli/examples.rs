//! Every example configuration the repository ships passes `config check`
//! (issue 19), found rather than listed, so a new one is checked too: the
//! demo's (`${SANDBOX}` filled as the demo fills it), each gate
//! configuration in a YAML block of README.md and docs/*.md, the policy
//! tests' `gate.yaml`, bench/'s, and the scenarios' (their sections on the
//! simulator's base, as `simulate` builds them).

use std::path::PathBuf;

use super::{DRILL_IDENTITY, repo, run, text};

/// Whether `key` is a top-level section of a gate configuration, asked of
/// `Config` itself (it refuses unknown keys), so a section added later is
/// recognised without being listed here.
fn is_section(key: &str) -> bool {
    match tg_config::Config::from_yaml(&format!("{key}: {{}}\n"), "probe.yaml") {
        Ok(_) => true,
        Err(e) => !e.to_string().contains("unknown"),
    }
}

/// The info string of a YAML block that shows part of a configuration
/// (paths on the reader's machine, a section without the rest): parsed as
/// YAML, not checked as a whole configuration.
const FRAGMENT: &str = "yaml fragment";

/// What the demo puts for `${SANDBOX}`: its sandbox's base URL.
const SANDBOX: &str = "http://127.0.0.1:8701";

/// The examples, (where it comes from, YAML text), and where the YAML
/// fragments are (parsed, not checked).
fn examples() -> (Vec<(String, String)>, Vec<String>) {
    let mut out = Vec::new();
    let mut fragments = Vec::new();
    let demo = std::fs::read_to_string(repo().join("crates/cli/demo/config.yaml")).unwrap();
    out.push((
        "crates/cli/demo/config.yaml".into(),
        demo.replace("${SANDBOX}", SANDBOX),
    ));

    let mut md: Vec<PathBuf> = vec![repo().join("README.md")];
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            md.push(p);
        }
    }
    md.sort();
    for file in md {
        let name = file.strip_prefix(repo()).unwrap().display().to_string();
        let body = std::fs::read_to_string(&file).unwrap();
        let mut block: Option<(usize, String)> = None;
        for (i, line) in body.lines().enumerate() {
            let t = line.trim_start();
            match (&mut block, t.strip_prefix("```")) {
                (None, Some(info)) if info.trim() == "yaml" => block = Some((i + 1, String::new())),
                (None, Some(info)) if info.trim() == FRAGMENT => {
                    fragments.push(format!("{name}:{}", i + 1));
                    block = Some((0, String::new()));
                }
                (Some((0, yaml)), Some(_)) => {
                    // A fragment: valid YAML, and a gate configuration's sections.
                    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml)
                        .unwrap_or_else(|e| panic!("{name}: a {FRAGMENT} block is not YAML: {e}"));
                    assert!(
                        is_gate_config(yaml),
                        "{name}: {FRAGMENT} of no gate section: {doc:?}"
                    );
                    block = None;
                }
                (Some((start, yaml)), Some(_)) => {
                    if is_gate_config(yaml) {
                        // A fragment shows one section; `serve` also wants an
                        // explicit identity, which the fragment leaves to its page.
                        let text = if yaml.lines().any(|l| l.starts_with("identity:")) {
                            yaml.clone()
                        } else {
                            format!("{DRILL_IDENTITY}{yaml}")
                        };
                        out.push((format!("{name}:{start}"), text));
                    }
                    block = None;
                }
                (Some((_, yaml)), None) => {
                    yaml.push_str(line);
                    yaml.push('\n');
                }
                _ => {}
            }
        }
    }

    out.push((
        "policy-tests/gate.yaml".into(),
        std::fs::read_to_string(repo().join("policy-tests/gate.yaml")).unwrap(),
    ));

    for store in ["", "postgres://postgres@127.0.0.1:5432/tg_bench"] {
        let yaml = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source bench/lib.sh && gate_yaml 18700 /tmp/tg-bench-data {store}"
            ))
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(yaml.status.success(), "{}", text(&yaml));
        out.push((
            format!("bench/lib.sh gate_yaml {store}"),
            String::from_utf8(yaml.stdout).unwrap(),
        ));
    }

    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(repo().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    scenarios.sort();
    for s in scenarios {
        let scenario = tg_sim::Scenario::from_yaml(&std::fs::read_to_string(&s).unwrap()).unwrap();
        out.push((
            s.strip_prefix(repo()).unwrap().display().to_string(),
            scenario
                .config_text()
                .unwrap()
                .replace("${SANDBOX}", SANDBOX),
        ));
    }
    (out, fragments)
}

/// A YAML block whose top-level keys are all sections of a gate configuration.
fn is_gate_config(yaml: &str) -> bool {
    let keys: Vec<&str> = yaml
        .lines()
        .filter(|l| !l.starts_with([' ', '#', '-']) && !l.trim().is_empty())
        .filter_map(|l| l.split(':').next())
        .collect();
    !keys.is_empty() && keys.iter().all(|k| is_section(k))
}

#[test]
fn every_shipped_example_configuration_passes_config_check() {
    let (all, fragments) = examples();
    // Few, and each marked where it is written (docs/configuration.md's
    // private-CA example names files on the reader's machine).
    assert!(fragments.len() <= 2, "{fragments:?}");
    assert!(is_section("tls") && is_section("catalog") && !is_section("tlss"));
    let from = |prefix: &str| all.iter().filter(|(n, _)| n.starts_with(prefix)).count();
    // The enumeration finds each kind (so the test cannot pass by finding nothing).
    assert_eq!(from("crates/cli/demo"), 1);
    assert!(
        from("README.md") >= 1 && from("docs/configuration.md") >= 4,
        "{:?}",
        names(&all)
    );
    assert_eq!(from("bench/"), 2);
    assert!(from("scenarios/") >= 7, "{:?}", names(&all));
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, (name, yaml)) in all.iter().enumerate() {
        let file = dir.path().join(format!("example-{i}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        // The policy tests' gate.yaml names its policy relative to itself.
        let file = if name == "policy-tests/gate.yaml" {
            repo().join(name)
        } else {
            file
        };
        let out = run(&["config", "check", file.to_str().unwrap()], &[]);
        if !out.status.success() {
            failures.push(format!("{name}:\n{}", text(&out)));
        }
    }
    assert!(
        failures.is_empty(),
        "examples that fail config check:\n{}",
        failures.join("\n")
    );
}

fn names(all: &[(String, String)]) -> Vec<&str> {
    all.iter().map(|(n, _)| n.as_str()).collect()
}
