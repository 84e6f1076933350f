//! Pure verification of a hash chain of audit records given as parsed JSON values.

use std::collections::VecDeque;
use std::fmt;
use std::iter::Peekable;

use ed25519_dalek::VerifyingKey;

use serde_json::Value;
use tg_model::hash::canonical_json;
use tg_model::{AuditRecord, Sha256Hex, StepRecord, sha256_hex};

/// The first record that breaks the chain, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// 1-based line number in the file.
    pub line: usize,
    /// The record's `seq`, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong: starts with `bad json`, `malformed`, `edited`, `deleted`,
    /// `reordered`, `inserted` or `torn`.
    pub reason: String,
}

/// The outcome of verifying a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records read and found valid before the first bad one (all of them when `ok`).
    pub records: u64,
    pub ok: bool,
    pub first_bad: Option<BadRecord>,
    /// The hash of the last valid record: compare it with the store's to detect a
    /// chain cut short at the end, which the chain alone cannot show.
    pub last_hash: Option<Sha256Hex>,
    /// Checkpoint records read (and found consistent with the chain).
    pub checkpoints: u64,
    /// Of those, how many had their signature checked against a public key.
    pub checkpoints_verified: u64,
    /// The last record a valid checkpoint covers: everything up to it is
    /// proven by a signature, when `checkpoints_verified > 0`.
    pub signed_upto: Option<u64>,
}

/// Records back a checkpoint may reach: the verifier keeps this many recent
/// hashes to check what a checkpoint signed (the gate checkpoints far more often).
pub const CHECKPOINT_REACH_MAX: usize = 100_000;

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.first_bad {
            None => {
                write!(f, "ok: {} records", self.records)?;
                if let Some(h) = &self.last_hash {
                    write!(f, ", last hash {h}")?;
                }
                if self.checkpoints > 0 {
                    write!(
                        f,
                        "; {} checkpoints, {} signatures verified",
                        self.checkpoints, self.checkpoints_verified
                    )?;
                    if let Some(upto) = self.signed_upto
                        && self.checkpoints_verified > 0
                    {
                        write!(f, ", signed up to seq {upto}")?;
                    }
                }
                Ok(())
            }
            Some(bad) => {
                write!(f, "broken at line {}", bad.line)?;
                match bad.seq {
                    Some(seq) => write!(f, " (seq {seq})")?,
                    None => write!(f, " (seq unknown)")?,
                }
                write!(
                    f,
                    ": {}; {} valid records before it",
                    bad.reason, self.records
                )
            }
        }
    }
}

/// What verification needs from the previous valid record.
struct Link {
    line: usize,
    seq: u64,
    hash: Sha256Hex,
    prev_hash: Sha256Hex,
}

/// The fields every record must carry, read from the raw value.
struct Parsed {
    seq: u64,
    hash: Sha256Hex,
    prev_hash: Sha256Hex,
    /// A checkpoint record's time and content.
    checkpoint: Option<(chrono::DateTime<chrono::Utc>, tg_model::CheckpointStep)>,
}

/// Verifies a chain of audit records, given as `(line number, parsed JSON or
/// parse error)` in file order. Stops at the first broken record. Checkpoints
/// are checked against the chain; their signatures only by [`verify_chain`]
/// with a public key.
///
/// Each record's hash is recomputed over the parsed value minus its `hash` key
/// (not over a re-serialized `AuditRecord`), so added or edited fields are caught.
pub fn verify_records(
    records: impl Iterator<Item = (usize, Result<Value, String>)>,
) -> VerifyReport {
    verify_chain(records, None)
}

/// [`verify_records`], and with `key` every checkpoint's signature must verify
/// with it (a checkpoint signed by another key is a bad record).
pub fn verify_chain(
    records: impl Iterator<Item = (usize, Result<Value, String>)>,
    key: Option<&VerifyingKey>,
) -> VerifyReport {
    let mut iter = records.peekable();
    let mut count: u64 = 0;
    let mut prev: Option<Link> = None;
    let mut marks = Checkpoints {
        key,
        recent: VecDeque::new(),
        seen: 0,
        verified: 0,
        signed_upto: None,
    };
    while let Some((line, item)) = iter.next() {
        let checked = check_one(line, item, prev.as_ref(), &mut iter)
            .and_then(|parsed| marks.check(line, &parsed).map(|()| parsed));
        match checked {
            Ok(parsed) => {
                count = count.saturating_add(1);
                marks.remember(parsed.seq, &parsed.hash);
                prev = Some(Link {
                    line,
                    seq: parsed.seq,
                    hash: parsed.hash,
                    prev_hash: parsed.prev_hash,
                });
            }
            Err(bad) => {
                return VerifyReport {
                    records: count,
                    ok: false,
                    first_bad: Some(bad),
                    last_hash: prev.map(|p| p.hash),
                    checkpoints: marks.seen,
                    checkpoints_verified: marks.verified,
                    signed_upto: marks.signed_upto,
                };
            }
        }
    }
    VerifyReport {
        records: count,
        ok: true,
        first_bad: None,
        last_hash: prev.map(|p| p.hash),
        checkpoints: marks.seen,
        checkpoints_verified: marks.verified,
        signed_upto: marks.signed_upto,
    }
}

/// Checkpoint state while walking the chain.
struct Checkpoints<'k> {
    key: Option<&'k VerifyingKey>,
    /// `(seq, hash)` of the records since the last checkpoint's `upto_seq`, at most [`CHECKPOINT_REACH_MAX`].
    recent: VecDeque<(u64, Sha256Hex)>,
    seen: u64,
    verified: u64,
    signed_upto: Option<u64>,
}

impl Checkpoints<'_> {
    fn remember(&mut self, seq: u64, hash: &Sha256Hex) {
        if self.recent.len() >= CHECKPOINT_REACH_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, hash.clone()));
    }

    /// A checkpoint record must name a record behind it (and not behind the
    /// previous checkpoint) whose hash it repeats, and with a key its signature must verify.
    fn check(&mut self, line: usize, parsed: &Parsed) -> Result<(), BadRecord> {
        let Some(cp) = &parsed.checkpoint else {
            return Ok(());
        };
        let bad = |reason: String| BadRecord {
            line,
            seq: Some(parsed.seq),
            reason: format!("bad checkpoint: {reason}"),
        };
        let (step_at, step) = cp;
        if step.upto_seq >= parsed.seq {
            return Err(bad(format!(
                "covers seq {}, not a record before it",
                step.upto_seq
            )));
        }
        if let Some(last) = self.signed_upto
            && step.upto_seq < last
        {
            return Err(bad(format!(
                "covers seq {}, behind the previous checkpoint's seq {last}",
                step.upto_seq
            )));
        }
        let Some((_, hash)) = self.recent.iter().find(|(s, _)| *s == step.upto_seq) else {
            return Err(bad(format!(
                "covers seq {}, more than {CHECKPOINT_REACH_MAX} records back",
                step.upto_seq
            )));
        };
        if *hash != step.upto_hash {
            return Err(bad(format!(
                "says seq {} hashes to {}, the chain has {hash}",
                step.upto_seq, step.upto_hash
            )));
        }
        if let Some(key) = self.key {
            crate::checkpoint::verify_checkpoint(key, step, step_at).map_err(bad)?;
            self.verified = self.verified.saturating_add(1);
        }
        self.seen = self.seen.saturating_add(1);
        self.signed_upto = Some(step.upto_seq);
        let upto = step.upto_seq;
        self.recent.retain(|(s, _)| *s >= upto);
        Ok(())
    }
}

fn check_one<I>(
    line: usize,
    item: Result<Value, String>,
    prev: Option<&Link>,
    rest: &mut Peekable<I>,
) -> Result<Parsed, BadRecord>
where
    I: Iterator<Item = (usize, Result<Value, String>)>,
{
    let bad = |seq: Option<u64>, reason: String| BadRecord { line, seq, reason };
    let value = item.map_err(|e| bad(None, e))?;
    let Some(obj) = value.as_object() else {
        return Err(bad(None, "malformed: not a json object".to_owned()));
    };
    let seq = obj.get("seq").and_then(Value::as_u64);
    let Some(seq) = seq else {
        return Err(bad(None, "malformed: no unsigned integer `seq`".to_owned()));
    };
    let hash = hex_field(obj, "hash").map_err(|r| bad(Some(seq), r))?;
    let prev_hash = hex_field(obj, "prev_hash").map_err(|r| bad(Some(seq), r))?;

    // Edited: the contents no longer match the record's own hash.
    let mut without_hash = obj.clone();
    without_hash.remove("hash");
    let actual = sha256_hex(&canonical_json(&Value::Object(without_hash)));
    if actual != hash {
        return Err(bad(
            Some(seq),
            format!("edited: contents hash to {actual}, record says {hash}"),
        ));
    }
    // A field added with a recomputed hash still has to be a run's or a step's record.
    // (Parsed as the kind it claims to be, so the error names the field.)
    let parsed = if obj.contains_key("kind") {
        serde_json::from_value::<StepRecord>(value.clone())
            .map(|s| s.checkpoint.clone().map(|c| (s.at, c)))
    } else {
        serde_json::from_value::<AuditRecord>(value.clone()).map(|_| None)
    };
    let checkpoint = match parsed {
        Ok(c) => c,
        Err(e) => {
            return Err(bad(
                Some(seq),
                format!("malformed: not an audit record: {e}"),
            ));
        }
    };

    let expected = prev.map_or(1, |p| p.seq.saturating_add(1));
    if seq > expected {
        // Tell a swap from a gap by looking at the next record's seq.
        let next_seq = rest
            .peek()
            .and_then(|(_, r)| r.as_ref().ok())
            .and_then(|v| v.get("seq"))
            .and_then(Value::as_u64);
        let reason = if next_seq == Some(expected) {
            format!("reordered: seq {seq} comes before seq {expected}")
        } else if seq == expected.saturating_add(1) {
            format!("deleted: seq {expected} is missing")
        } else {
            format!(
                "deleted: seqs {expected} to {} are missing",
                seq.saturating_sub(1)
            )
        };
        return Err(bad(Some(seq), reason));
    }
    if let Some(p) = prev
        && seq < expected
    {
        let reason = if seq == p.seq && prev_hash == p.prev_hash {
            format!(
                "inserted: line {} and line {line} both claim seq {seq} after the same record",
                p.line
            )
        } else {
            format!("reordered: seq {seq} comes after seq {}", p.seq)
        };
        return Err(bad(Some(seq), reason));
    }

    let want_prev = prev.map_or_else(Sha256Hex::zero, |p| p.hash.clone());
    if prev_hash != want_prev {
        let reason = match prev {
            Some(p) => format!(
                "inserted: prev_hash {prev_hash} does not match the hash of line {} (seq {})",
                p.line, p.seq
            ),
            None => format!("inserted: the first record's prev_hash {prev_hash} is not zero"),
        };
        return Err(bad(Some(seq), reason));
    }
    Ok(Parsed {
        seq,
        hash,
        prev_hash,
        checkpoint,
    })
}

fn hex_field(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Sha256Hex, String> {
    match obj.get(key).and_then(Value::as_str) {
        Some(s) => Ok(Sha256Hex(s.to_owned())),
        None => Err(format!("malformed: no string `{key}`")),
    }
}
