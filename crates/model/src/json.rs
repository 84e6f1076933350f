//! Strict JSON parsing, shared by every parser of outside input (source
//! payloads, model answers): one document, and no object with a repeated key
//! at any depth. serde_json's own `Value` keeps the last of two equal keys,
//! so two parsers reading one payload could see different values; here that
//! payload is refused, naming the key.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

/// Why a document was refused.
#[derive(Debug, thiserror::Error)]
pub enum StrictJsonError {
    /// An object holds `key` twice.
    #[error("duplicate key {key:?} at line {line} column {column}")]
    DuplicateKey {
        key: String,
        line: usize,
        column: usize,
    },
    /// Not one JSON document (syntax, trailing characters, nesting).
    #[error("{0}")]
    Syntax(serde_json::Error),
}

/// Parses `bytes` as one JSON document, refusing a repeated object key at any
/// depth (the first one found).
pub fn from_slice_strict(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict {
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    parsed.map_err(|e| match duplicate.into_inner() {
        Some(key) => StrictJsonError::DuplicateKey {
            key,
            line: e.line(),
            column: e.column(),
        },
        None => StrictJsonError::Syntax(e),
    })
}

/// [`from_slice_strict`] on text.
pub fn from_str_strict(text: &str) -> Result<Value, StrictJsonError> {
    from_slice_strict(text.as_bytes())
}

/// A `Value` seed whose maps fail on a repeated key and say which one in
/// `duplicate` (the error itself is serde's, so the key is not parsed back
/// out of its text).
#[derive(Clone, Copy)]
struct Strict<'a> {
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("number {v} is not finite")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match out.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(map.next_value_seed(self)?);
                }
                Entry::Occupied(first) => {
                    let key = first.key().clone();
                    let message = format!("duplicate key {key:?}");
                    *self.duplicate.borrow_mut() = Some(key);
                    return Err(de::Error::custom(message));
                }
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_any_depth_and_named() {
        for (doc, key) in [
            (r#"{"a": 1, "a": 2}"#, "a"),
            (r#"{"x": {"b": [1, {"k": 1, "k": 1}]}}"#, "k"),
            (r#"[{"service": "a", "service": "b"}]"#, "service"),
        ] {
            match from_str_strict(doc) {
                Err(StrictJsonError::DuplicateKey { key: k, line, .. }) => {
                    assert_eq!(k, key, "{doc}");
                    assert_eq!(line, 1);
                }
                other => panic!("{doc}: {other:?}"),
            }
        }
    }

    #[test]
    fn everything_else_parses_like_serde_json() {
        for doc in [
            r#"{"a": 1, "b": {"a": 2}, "c": [{"a": 3}, {"a": 4}]}"#,
            r#"[1, -2, 3.5, 1e300, "s\u0000\b", null, true, {}]"#,
            "18446744073709551615",
        ] {
            let ours = from_str_strict(doc).unwrap();
            let theirs: Value = serde_json::from_str(doc).unwrap();
            assert_eq!(ours, theirs, "{doc}");
        }
        for doc in ["", "{", r#"{"a": 1} x"#, "[1,]", r#"{"a" 1}"#] {
            assert!(
                matches!(from_str_strict(doc), Err(StrictJsonError::Syntax(_))),
                "{doc}"
            );
        }
    }
}
