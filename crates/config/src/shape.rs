//! Shape errors (unknown keys, wrong types) of a configuration file, one at a
//! time: where each one is, what a user should write instead, and how to set
//! the offending key aside so that the next error shows too.

use serde_yaml_ng::Value;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// The path serde reached when it failed.
pub fn segments(path: &serde_path_to_error::Path) -> Vec<Segment> {
    path.iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
            // An externally tagged enum's variant is a key in the file.
            serde_path_to_error::Segment::Enum { variant } => Some(Segment::Key(variant.clone())),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect()
}

/// `catalog.services.checkout.team`, `normalize.redact_patterns[1]`: the
/// form [`crate::locate`] and every other message use.
pub fn dotted(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The key named by serde's `unknown field` error (serde reports it at the
/// map that holds it; the key itself is where the user must look).
pub fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    rest.get(..end).map(str::to_owned)
}

/// serde's type names (`u64`, `usize`, `f64`) in words, with the unit the
/// key's suffix gives (`_secs`, `_ms`, `_bytes`).
pub fn humanize(message: &str, path: &str) -> String {
    let key = path.rsplit(['.', '[']).next().unwrap_or(path);
    let unit = if key.ends_with("_secs") || key.contains("_secs_") {
        " of seconds"
    } else if key.ends_with("_ms") || key.contains("_ms_") {
        " of milliseconds"
    } else if key.contains("bytes") {
        " of bytes"
    } else if key.ends_with("_percent") {
        " (a percentage)"
    } else {
        ""
    };
    let whole = format!("a whole number{unit}");
    let Some(at) = message.find("expected ") else {
        return message.to_owned();
    };
    let (head, tail) = message.split_at(at + "expected ".len());
    // The expected type runs to the end of serde's message (or to the
    // location serde_yaml_ng appends).
    let end = tail.find(" at line ").unwrap_or(tail.len());
    let (ty, after) = tail.split_at(end);
    let words = match ty.trim() {
        "u8" | "u16" | "u32" | "u64" | "usize" => format!("{whole} (0 or more)"),
        "i8" | "i16" | "i32" | "i64" | "isize" => whole,
        "f32" | "f64" => "a number (such as 0.8)".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a sequence" => "a list (`[a, b]` or one `- item` per line)".to_owned(),
        "a string" => "text".to_owned(),
        t if t.starts_with("struct ") || t == "a map" => {
            "a mapping of keys to values (`key: value`)".to_owned()
        }
        _ => return message.to_owned(),
    };
    format!("{head}{words}{after}")
}

/// Drops the value at `path` (the key from its map, the item from its list),
/// so that deserializing again gets past it. False when nothing was removed.
pub fn remove(root: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = root;
    for s in parents {
        let next = match (s, node) {
            (Segment::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str()),
            (Segment::Index(i), Value::Sequence(v)) => v.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    // Tagged values (`!Tag`) hold their content one level down.
    if let Value::Tagged(t) = node {
        node = &mut t.value;
    }
    match (last, node) {
        (Segment::Key(k), Value::Mapping(m)) => m.remove(k.as_str()).is_some(),
        (Segment::Index(i), Value::Sequence(v)) if *i < v.len() => {
            v.remove(*i);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humanize_names_the_unit() {
        assert_eq!(
            humanize(
                "invalid type: string \"ten\", expected u64",
                "storm.dedup_window_secs"
            ),
            "invalid type: string \"ten\", expected a whole number of seconds (0 or more)"
        );
        assert_eq!(
            humanize(
                "invalid type: string \"x\", expected f64",
                "catalog.defaults.thresholds.page"
            ),
            "invalid type: string \"x\", expected a number (such as 0.8)"
        );
        assert_eq!(
            humanize("missing field `team`", "catalog.services.x"),
            "missing field `team`"
        );
    }

    #[test]
    fn unknown_field_is_found() {
        assert_eq!(
            unknown_field("unknown field `dedup_window`, expected one of `a`, `b`").as_deref(),
            Some("dedup_window")
        );
        assert_eq!(unknown_field("invalid type"), None);
    }
}
