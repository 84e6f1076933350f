//! Every command the README and docs/ show exists as written: the
//! subcommand path and each flag, checked against the binary's `--help`;
//! and `cargo run` resolves to this binary (a test that runs the built
//! binary cannot notice that on its own).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{BIN, repo};

/// A documented command line: where it is, and the words after `triage-gate`.
#[derive(Debug)]
struct Documented {
    at: String,
    args: Vec<String>,
}

/// The shell-ish words of a line, quotes removed, a `#` comment dropped.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None if c == '#' && !in_word => break,
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// The arguments given to triage-gate on this line, if it runs it:
/// `triage-gate ARGS`, `cargo run [...] -- ARGS`, `$ ` prompts allowed.
fn triage_gate_args(line: &str) -> Option<Vec<String>> {
    let mut w = words(line.trim().trim_start_matches("$ "));
    if w.first().is_some_and(|c| c == "cargo") && w.get(1).is_some_and(|c| c == "run") {
        let dash = w.iter().position(|x| x == "--")?;
        return Some(w.split_off(dash + 1));
    }
    let first = w.first()?;
    if first == "triage-gate" || first.ends_with("/triage-gate") {
        return Some(w.split_off(1));
    }
    None
}

/// Every `triage-gate` / `cargo run -- ` line of the fenced shell blocks
/// (and indented code blocks) of README.md and docs/*.md; and, from the
/// prose, inline code spans that start with `triage-gate `.
fn documented() -> Vec<Documented> {
    let mut files: Vec<PathBuf> = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut out = Vec::new();
    for file in files {
        let name = file
            .strip_prefix(repo())
            .unwrap_or(&file)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let mut fence: Option<String> = None;
        for (i, line) in text.lines().enumerate() {
            let at = format!("{name}:{}", i + 1);
            let trimmed = line.trim_start();
            if let Some(info) = trimmed.strip_prefix("```") {
                fence = match fence {
                    Some(_) => None,
                    None => Some(info.trim().to_owned()),
                };
                continue;
            }
            let shell = |info: &str| matches!(info, "" | "sh" | "shell" | "bash" | "console");
            let candidate = match &fence {
                Some(info) if shell(info) => Some(line),
                Some(_) => None,
                None if line.starts_with("    ") => Some(line),
                None => None,
            };
            if let Some(args) = candidate.and_then(triage_gate_args) {
                out.push(Documented { at, args });
                continue;
            }
        }
        // Inline spans of the prose (which may wrap across lines):
        // `triage-gate actions list [--status dead|pending]`.
        let mut fence = false;
        let prose: Vec<&str> = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("```") {
                    fence = !fence;
                    ""
                } else if fence {
                    ""
                } else {
                    l
                }
            })
            .collect();
        let prose = prose.join("\n");
        let mut offset = 0;
        for (i, part) in prose.split('`').enumerate() {
            if i % 2 == 1
                && let Some(rest) = part.strip_prefix("triage-gate ")
            {
                let line = prose[..offset].matches('\n').count() + 1;
                let args = rest
                    .split_whitespace()
                    .flat_map(|w| w.trim_matches(['[', ']']).split('|'))
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned)
                    .collect();
                out.push(Documented {
                    at: format!("{name}:{line}"),
                    args,
                });
            }
            offset += part.len() + 1;
        }
    }
    out
}

/// `--help` of a subcommand path, cached.
struct Help(BTreeMap<Vec<String>, Result<String, String>>);

impl Help {
    fn of(&mut self, path: &[String]) -> Result<String, String> {
        self.0
            .entry(path.to_vec())
            .or_insert_with(|| {
                let out = std::process::Command::new(BIN)
                    .args(path)
                    .arg("--help")
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if out.status.success() {
                    Ok(text)
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            })
            .clone()
    }
}

/// The subcommands a `--help` lists.
fn subcommands(help: &str) -> Vec<String> {
    let Some(start) = help.find("Commands:") else {
        return Vec::new();
    };
    help[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// What is wrong with one documented command, if anything.
fn check(doc: &Documented, help: &mut Help) -> Option<String> {
    let mut path: Vec<String> = Vec::new();
    let mut rest = doc.args.iter().peekable();
    // The subcommand path: words that name a subcommand of the path so far.
    while let Some(w) = rest.peek() {
        if w.starts_with('-') {
            break;
        }
        let h = match help.of(&path) {
            Ok(h) => h,
            Err(e) => return Some(format!("`triage-gate {}` fails: {e}", path.join(" "))),
        };
        let subs = subcommands(&h);
        if subs.is_empty() {
            break;
        }
        if !subs.iter().any(|s| s == *w) {
            return Some(format!(
                "`triage-gate {}` has no subcommand {w:?} (it has: {})",
                path.join(" "),
                subs.join(", ")
            ));
        }
        path.push((*w).clone());
        rest.next();
    }
    let h = match help.of(&path) {
        Ok(h) => h,
        Err(e) => {
            return Some(format!(
                "`triage-gate {} --help` fails: {e}",
                path.join(" ")
            ));
        }
    };
    if !subcommands(&h).is_empty() {
        return Some(format!(
            "`triage-gate {}` needs a subcommand",
            path.join(" ")
        ));
    }
    for w in rest.filter(|w| w.starts_with("--")) {
        let flag = w.split('=').next().unwrap_or(w);
        let listed = h
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .any(|t| t == flag);
        if !listed {
            return Some(format!(
                "`triage-gate {}` has no flag {flag}",
                path.join(" ")
            ));
        }
    }
    None
}

#[test]
fn every_documented_command_and_flag_exists() {
    let docs = documented();
    // The README's main commands are among them (the scan itself works).
    assert!(
        docs.iter()
            .any(|d| d.at.starts_with("README.md") && d.args == ["demo"]),
        "{docs:?}"
    );
    assert!(
        docs.len() >= 20,
        "only {} commands found: {docs:?}",
        docs.len()
    );
    let mut help = Help(BTreeMap::new());
    let problems: Vec<String> = docs
        .iter()
        .filter_map(|d| check(d, &mut help).map(|p| format!("{}: {p}", d.at)))
        .collect();
    assert!(
        problems.is_empty(),
        "documented commands that do not work as written:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_renamed_flag_or_subcommand_is_caught() {
    let mut help = Help(BTreeMap::new());
    let doc = |line: &str| Documented {
        at: "t".into(),
        args: triage_gate_args(line).unwrap(),
    };
    assert_eq!(
        check(
            &doc("cargo run --release -- audit verify f --public-key k"),
            &mut help
        ),
        None
    );
    let flag = check(
        &doc("cargo run --release -- audit verify f --pub-key k"),
        &mut help,
    );
    assert!(flag.is_some_and(|p| p.contains("--pub-key")));
    let sub = check(&doc("triage-gate audit verfy f"), &mut help);
    assert!(sub.is_some_and(|p| p.contains("\"verfy\"")));
    assert_eq!(words("a \"b c\" # d"), ["a", "b c"]);
}

/// What `cargo run` (no `-p`, no `--bin`) runs from the repository root,
/// worked out from `cargo metadata` as cargo does: the binaries of the
/// default members; with several, only a single package's `default-run`.
#[test]
fn cargo_run_at_the_root_runs_triage_gate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let defaults: Vec<&str> = meta["workspace_default_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let packages: Vec<&serde_json::Value> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| defaults.contains(&p["id"].as_str().unwrap()))
        .collect();
    let bins: Vec<&str> = packages
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let runs = match (bins.as_slice(), packages.as_slice()) {
        ([one], _) => Some(*one),
        (_, [package]) => package["default_run"].as_str(),
        _ => None,
    };
    assert_eq!(
        runs,
        Some("triage-gate"),
        "`cargo run` would not know what to run: default members {defaults:?}, binaries {bins:?}"
    );
    // The load tools stay buildable by name (bench/run, bench/soak).
    let bench = std::fs::read_to_string(repo().join("bench/run")).unwrap();
    assert!(bench.contains("-p triage-gate-loadgen"));
}
