//! The rotated JSON Lines file sink and the stdout sink.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::io::Write;
use std::path::Path;

use common::{recs, sinks};
use tg_config::{AuditSinkConfig, MapSecrets};
use tg_ship::{FileSink, ShipError, Sink};

fn file_sink(path: &Path, extra: &str) -> FileSink {
    let yaml = format!(
        "audit:\n  sinks:\n    - name: archive\n      type: file\n      path: {}\n      rotate_bytes: 4096\n{extra}",
        path.display()
    );
    match sinks(&yaml).remove(0) {
        AuditSinkConfig::File(c) => FileSink::new(&c),
        other => panic!("{other:?}"),
    }
}

/// Every line of the rotated files (oldest first) then of the live file, as seqs.
fn all_seqs(path: &Path) -> (Vec<u64>, Vec<u64>) {
    let dir = path.parent().unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut rotated: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_prefix(&format!("{name}."))?.parse().ok()
        })
        .collect();
    rotated.sort_unstable();
    let mut files: Vec<_> = rotated
        .iter()
        .map(|n| dir.join(format!("{name}.{n}")))
        .collect();
    files.push(path.to_path_buf());
    let mut seqs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(text.is_empty() || text.ends_with('\n'));
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            seqs.push(v["seq"].as_u64().unwrap());
        }
        assert!(
            std::fs::metadata(&f).map_or(0, |m| m.len()) <= 4096,
            "{} over rotate_bytes",
            f.display()
        );
    }
    (rotated, seqs)
}

#[tokio::test]
async fn rotates_by_size_keeps_the_newest_and_never_loses_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ship").join("audit.jsonl");
    let s = file_sink(&path, "      keep: 100\n");
    for start in (1..=150).step_by(10) {
        s.send(&recs(start..=start + 9)).await.unwrap();
    }
    let (rotated, seqs) = all_seqs(&path);
    assert!(rotated.len() >= 2, "{rotated:?}");
    assert_eq!(rotated, (1..=rotated.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        seqs,
        (1..=150).collect::<Vec<_>>(),
        "every record once, in order"
    );

    let dir2 = tempfile::tempdir().unwrap();
    let path2 = dir2.path().join("audit.jsonl");
    let kept = file_sink(&path2, "      keep: 2\n");
    for start in (1..=150).step_by(10) {
        kept.send(&recs(start..=start + 9)).await.unwrap();
    }
    let (rotated, seqs) = all_seqs(&path2);
    assert_eq!(rotated.len(), 2, "{rotated:?}");
    assert_eq!(seqs.last(), Some(&150));
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test]
async fn a_replay_is_skipped_and_a_reopened_sink_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let s = file_sink(&path, "");
    s.send(&recs(1..=5)).await.unwrap();
    s.send(&recs(3..=8)).await.unwrap();
    assert_eq!(all_seqs(&path).1, (1..=8).collect::<Vec<_>>());
    drop(s);
    // A crash tore the last write.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(br#"{"seq":9,"kind":"ru"#).unwrap();
    drop(f);
    let again = file_sink(&path, "");
    assert_eq!(again.last_seq().await.unwrap(), Some(8));
    again.send(&recs(6..=10)).await.unwrap();
    assert_eq!(all_seqs(&path).1, (1..=10).collect::<Vec<_>>());
    // Resuming right after a rotation reads the newest rotated file.
    let s = file_sink(&path, "");
    s.send(&recs(11..=40)).await.unwrap();
    let (rotated, _) = all_seqs(&path);
    assert!(!rotated.is_empty());
    std::fs::write(&path, b"").unwrap();
    let resumed = file_sink(&path, "");
    let last = resumed.last_seq().await.unwrap().unwrap();
    assert!(last < 40, "the live file held the newest lines");
    resumed.send(&recs(1..=41)).await.unwrap();
    let seqs = all_seqs(&path).1;
    assert_eq!(seqs.last(), Some(&41));
    assert_eq!(
        seqs.iter().filter(|s| **s == last).count(),
        1,
        "no line written twice"
    );
}

#[tokio::test]
async fn a_multi_line_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = file_sink(&dir.path().join("a.jsonl"), "");
    let mut bad = recs(1..=2);
    bad[1].json = "{\"seq\":2,\n\"x\":1}".into();
    assert!(matches!(
        s.send(&bad).await.unwrap_err(),
        ShipError::Refused { seq: Some(2), .. }
    ));
}

#[tokio::test]
async fn stdout_takes_a_batch_and_built_sinks_keep_their_names() {
    let yaml = "audit:\n  sinks:\n    - name: console\n      type: stdout\n    - name: archive\n      type: file\n      path: /nonexistent-dir-for-test/a.jsonl\n";
    let built = common::build(yaml, &MapSecrets::default());
    let names: Vec<&str> = built.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["console", "archive"]);
    built[0].send(&recs(1..=2)).await.unwrap();
    assert_eq!(built[0].limits().records_max, 1_000);
}
