//! Pure verification of a hash chain of audit records given as parsed JSON values.

use std::fmt;
use std::iter::Peekable;

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
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.first_bad {
            None => {
                write!(f, "ok: {} records", self.records)?;
                if let Some(h) = &self.last_hash {
                    write!(f, ", last hash {h}")?;
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
}

/// Verifies a chain of audit records, given as `(line number, parsed JSON or
/// parse error)` in file order. Stops at the first broken record.
///
/// Each record's hash is recomputed over the parsed value minus its `hash` key
/// (not over a re-serialized `AuditRecord`), so added or edited fields are caught.
pub fn verify_records(
    records: impl Iterator<Item = (usize, Result<Value, String>)>,
) -> VerifyReport {
    let mut iter = records.peekable();
    let mut count: u64 = 0;
    let mut prev: Option<Link> = None;
    while let Some((line, item)) = iter.next() {
        match check_one(line, item, prev.as_ref(), &mut iter) {
            Ok(parsed) => {
                count = count.saturating_add(1);
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
                };
            }
        }
    }
    VerifyReport {
        records: count,
        ok: true,
        first_bad: None,
        last_hash: prev.map(|p| p.hash),
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
        serde_json::from_value::<StepRecord>(value.clone()).map(|_| ())
    } else {
        serde_json::from_value::<AuditRecord>(value.clone()).map(|_| ())
    };
    if let Err(e) = parsed {
        return Err(bad(
            Some(seq),
            format!("malformed: not an audit record: {e}"),
        ));
    }

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
    })
}

fn hex_field(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Sha256Hex, String> {
    match obj.get(key).and_then(Value::as_str) {
        Some(s) => Ok(Sha256Hex(s.to_owned())),
        None => Err(format!("malformed: no string `{key}`")),
    }
}
