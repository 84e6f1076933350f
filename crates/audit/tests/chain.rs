//! Hash-chain verification and the JSON Lines sink, over real files.

// Helpers below are test setup: a panic there is a broken test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use tg_model::{
    ActionKind, ActionResult, ActionStatus, AlertStatus, AuditRecord, AutonomyLevel,
    ClassifierInfo, Decision, Environment, EventMeta, Sha256Hex, Source,
};
use triage_gate_audit::{JsonlSink, VerifyReport, verify_file, verify_records};

fn record(n: u64) -> AuditRecord {
    let t =
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(n as i64);
    AuditRecord {
        schema_version: 1,
        seq: 0,
        run_id: format!("run_{n:04}").into(),
        correlation_id: format!("corr-{n}").into(),
        event: EventMeta {
            source: Source::Alertmanager,
            origin: "prometheus".into(),
            status: AlertStatus::Firing,
            environment: Environment::Production,
            service: "checkout".into(),
            alert_name: "HighLatency".into(),
            fingerprint: "0123456789abcdef0123456789abcdef".into(),
            occurred_at: t,
            submitted_by: None,
            correlation_ids: Default::default(),
        },
        classifier: ClassifierInfo {
            classifier: "rules".into(),
            model: None,
        },
        model_output: Some(format!("{{\"classification\":\"high\",\"n\":{n}}}")),
        model_output_sha256: None,
        classification: None,
        rejection: None,
        model_latency_ms: None,
        prompt_sha256: None,
        model_usage: None,
        policy_version: "pv1".into(),
        decision: Decision {
            policy_version: "pv1".into(),
            autonomy: AutonomyLevel::Paging,
            actions: vec![],
            duplicate_of: None,
            resolves: None,
            group: None,
            errors: vec![],
        },
        actions: vec![ActionResult {
            action: ActionKind::Ticket,
            status: ActionStatus::Delivered,
            target: Some("servicenow".into()),
            external_ids: [("servicenow_number".to_owned(), format!("INC00{n}"))].into(),
            attempts: 1,
            error: None,
        }],
        timestamps: tg_model::RunTimestamps {
            received_at: t,
            classified_at: t,
            decided_at: t,
            completed_at: t,
        },
        prev_hash: Sha256Hex::zero(),
        hash: Sha256Hex::zero(),
    }
}

fn chain(len: u64) -> Vec<AuditRecord> {
    let mut prev = Sha256Hex::zero();
    (1..=len)
        .map(|n| {
            let mut r = record(n);
            r.seal(n, prev.clone());
            prev = r.hash.clone();
            r
        })
        .collect()
}

fn lines(records: &[AuditRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect()
}

fn verify_lines(lines: &[String]) -> VerifyReport {
    verify_records(lines.iter().enumerate().map(|(i, l)| {
        (
            i + 1,
            serde_json::from_str(l).map_err(|e| format!("bad json: {e}")),
        )
    }))
}

fn bad(report: &VerifyReport) -> (usize, Option<u64>, String) {
    assert!(!report.ok, "expected a broken chain, got {report}");
    let b = report.first_bad.clone().unwrap();
    (b.line, b.seq, b.reason)
}

#[test]
fn a_sealed_chain_verifies() {
    let records = chain(5);
    let report = verify_lines(&lines(&records));
    assert!(report.ok, "{report}");
    assert_eq!(report.records, 5);
    assert_eq!(report.last_hash, Some(records[4].hash.clone()));
    assert!(report.to_string().starts_with("ok: 5 records"));
}

#[test]
fn an_empty_chain_verifies() {
    let report = verify_lines(&[]);
    assert!(report.ok);
    assert_eq!(report.records, 0);
    assert_eq!(report.last_hash, None);
}

#[test]
fn an_edited_field_is_caught_at_its_line() {
    let mut l = lines(&chain(5));
    l[2] = l[2].replace("INC003", "INC999");
    let report = verify_lines(&l);
    let (line, seq, reason) = bad(&report);
    assert_eq!((line, seq), (3, Some(3)));
    assert!(reason.starts_with("edited"), "{reason}");
    assert_eq!(report.records, 2);
    let shown = report.to_string();
    assert!(
        shown.contains("line 3") && shown.contains("seq 3") && shown.contains("edited"),
        "{shown}"
    );
}

#[test]
fn an_added_field_is_caught_as_an_edit() {
    let mut l = lines(&chain(3));
    let mut v: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
    v["approved_by"] = "mallory".into();
    l[1] = serde_json::to_string(&v).unwrap();
    let (line, _, reason) = bad(&verify_lines(&l));
    assert_eq!(line, 2);
    assert!(reason.starts_with("edited"), "{reason}");
}

#[test]
fn an_added_field_with_a_recomputed_hash_is_not_an_audit_record() {
    let mut l = lines(&chain(3));
    let mut v: serde_json::Value = serde_json::from_str(&l[2]).unwrap();
    let obj = v.as_object_mut().unwrap();
    obj.insert("approved_by".into(), "mallory".into());
    obj.remove("hash");
    let hash = tg_model::sha256_hex(&tg_model::hash::canonical_json(&v));
    v["hash"] = hash.0.into();
    l[2] = serde_json::to_string(&v).unwrap();
    let (line, seq, reason) = bad(&verify_lines(&l));
    assert_eq!((line, seq), (3, Some(3)));
    assert!(
        reason.starts_with("malformed") && reason.contains("approved_by"),
        "{reason}"
    );
}

#[test]
fn a_deleted_line_is_caught_where_the_gap_is() {
    let mut l = lines(&chain(5));
    l.remove(2); // seq 3
    let (line, seq, reason) = bad(&verify_lines(&l));
    assert_eq!((line, seq), (3, Some(4)));
    assert!(
        reason.starts_with("deleted") && reason.contains("seq 3"),
        "{reason}"
    );
}

#[test]
fn a_deleted_first_line_is_caught() {
    let mut l = lines(&chain(3));
    l.remove(0);
    let (line, seq, reason) = bad(&verify_lines(&l));
    assert_eq!((line, seq), (1, Some(2)));
    assert!(reason.starts_with("deleted"), "{reason}");
}

#[test]
fn swapped_lines_are_reported_as_reordered() {
    let mut l = lines(&chain(5));
    l.swap(1, 2);
    let (line, seq, reason) = bad(&verify_lines(&l));
    assert_eq!((line, seq), (2, Some(3)));
    assert!(reason.starts_with("reordered"), "{reason}");
}

#[test]
fn a_forged_line_with_its_own_hash_recomputed_is_caught() {
    let records = chain(4);
    // The forger copies record 3, edits it, and seals it after record 2.
    let mut forged = records[2].clone();
    forged.actions.clear();
    forged.seal(3, records[1].hash.clone());
    let mut l = lines(&records);
    l.insert(2, serde_json::to_string(&forged).unwrap());
    let report = verify_lines(&l);
    let (line, seq, reason) = bad(&report);
    // The forged line fits alone; the genuine seq 3 after it cannot follow.
    assert_eq!((line, seq), (4, Some(3)));
    assert!(
        reason.starts_with("inserted") && reason.contains("line 3"),
        "{reason}"
    );
}

#[test]
fn a_forged_line_with_a_wrong_prev_hash_is_caught_at_its_line() {
    let records = chain(3);
    let mut forged = record(9);
    forged.seal(3, Sha256Hex("ab".repeat(32)));
    let mut l = lines(&records[..2]);
    l.push(serde_json::to_string(&forged).unwrap());
    let (line, seq, reason) = bad(&verify_lines(&l));
    assert_eq!((line, seq), (3, Some(3)));
    assert!(
        reason.starts_with("inserted") && reason.contains("line 2"),
        "{reason}"
    );
}

#[test]
fn bad_json_is_reported_with_its_line() {
    let mut l = lines(&chain(3));
    l[1] = "{not json".into();
    let (line, seq, reason) = bad(&verify_lines(&l));
    assert_eq!((line, seq), (2, None));
    assert!(reason.starts_with("bad json"), "{reason}");
}

fn write_file(dir: &tempfile::TempDir, content: &str) -> std::path::PathBuf {
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn a_torn_last_line_fails_verification_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let l = lines(&chain(3));
    let full = format!("{}\n{}\n", l[0], l[1]);
    let torn = &l[2][..l[2].len() / 2];
    let path = write_file(&dir, &format!("{full}{torn}"));
    let report = verify_file(&path).unwrap();
    let (line, seq, reason) = bad(&report);
    assert_eq!((line, seq), (3, None));
    assert!(reason.starts_with("torn"), "{reason}");
    assert_eq!(report.records, 2);
}

#[test]
fn a_whole_record_without_its_newline_is_still_torn() {
    let dir = tempfile::tempdir().unwrap();
    let l = lines(&chain(2));
    let path = write_file(&dir, &format!("{}\n{}", l[0], l[1]));
    let (line, _, reason) = bad(&verify_file(&path).unwrap());
    assert_eq!(line, 2);
    assert!(reason.starts_with("torn"), "{reason}");
}

#[test]
fn sink_append_and_last_seq_round_trip_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/audit.jsonl");
    let records = chain(5);
    {
        let mut sink = JsonlSink::open(&path).unwrap();
        assert_eq!(sink.last_seq().unwrap(), None);
        sink.append(&records[..2]).unwrap();
        assert_eq!(sink.last_seq().unwrap(), Some(2));
        sink.append::<AuditRecord>(&[]).unwrap();
        assert_eq!(sink.last_seq().unwrap(), Some(2));
    }
    // Reopened, it carries on where it stopped.
    let mut sink = JsonlSink::open(&path).unwrap();
    assert_eq!(sink.last_seq().unwrap(), Some(2));
    sink.append(&records[2..]).unwrap();
    assert_eq!(sink.last_seq().unwrap(), Some(5));
    let report = verify_file(&path).unwrap();
    assert!(report.ok, "{report}");
    assert_eq!(report.records, 5);
    assert_eq!(report.last_hash, Some(records[4].hash.clone()));
    // Each line is exactly the record.
    let text = std::fs::read_to_string(&path).unwrap();
    let back: Vec<tg_model::AuditRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, records);
}

#[test]
fn sink_refuses_gaps_and_repeats_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let records = chain(4);
    let mut sink = JsonlSink::open(&path).unwrap();
    sink.append(&records[..2]).unwrap();
    let before = std::fs::read(&path).unwrap();
    let repeat = sink.append(&records[1..3]).unwrap_err();
    assert_eq!(repeat.kind(), std::io::ErrorKind::InvalidInput);
    let gap = sink.append(&records[3..]).unwrap_err();
    assert!(gap.to_string().contains("seq 4"), "{gap}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    sink.append(&records[2..]).unwrap();
    assert!(verify_file(&path).unwrap().ok);
}

#[test]
fn sink_cuts_a_torn_last_line_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let records = chain(3);
    let l = lines(&records);
    let path = write_file(&dir, &format!("{}\n{}\n{}", l[0], l[1], &l[2][..40]));
    let mut sink = JsonlSink::open(&path).unwrap();
    assert_eq!(sink.last_seq().unwrap(), Some(2));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n{}\n", l[0], l[1])
    );
    // The server re-appends what the store holds beyond last_seq.
    sink.append(&records[2..]).unwrap();
    let report = verify_file(&path).unwrap();
    assert!(report.ok, "{report}");
    assert_eq!(report.records, 3);
}

#[test]
fn sink_on_a_file_that_is_only_a_torn_line_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(&dir, "{\"seq\":1,\"ha");
    let sink = JsonlSink::open(&path).unwrap();
    assert_eq!(sink.last_seq().unwrap(), None);
    assert_eq!(std::fs::read(&path).unwrap().len(), 0);
}

#[test]
fn sink_finds_the_last_line_across_scan_chunks() {
    // Records bigger than the backwards-scan chunk.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut prev = Sha256Hex::zero();
    let records: Vec<AuditRecord> = (1..=3)
        .map(|n| {
            let mut r = record(n);
            r.model_output = Some("x".repeat(100_000));
            r.seal(n, prev.clone());
            prev = r.hash.clone();
            r
        })
        .collect();
    let mut sink = JsonlSink::open(&path).unwrap();
    sink.append(&records).unwrap();
    drop(sink);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&vec![b'y'; 70_000]).unwrap();
    drop(f);
    let sink = JsonlSink::open(&path).unwrap();
    assert_eq!(sink.last_seq().unwrap(), Some(3));
    assert!(verify_file(&path).unwrap().ok);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_single_byte_change_is_detected(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let text: String = lines(&chain(4)).iter().map(|l| format!("{l}\n")).collect();
        let mut bytes = text.into_bytes();
        let i = pos.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, &bytes).unwrap();
        let report = verify_file(&path).unwrap();
        prop_assert!(!report.ok, "byte {} changed to {:#04x} went unnoticed", i, byte);
    }
}
