//! Strict JSON: the one parser of every JSON body the API reads.
//!
//! `serde_json` keeps the last of two equal keys (`{"by": "kari", "by": null}` reads as
//! `{"by": null}`), so a body could say one thing to a proxy or a log and another to the
//! engine. Here a duplicate key anywhere in the document is refused, naming the key; the
//! nesting depth is bounded before parsing ([`super::limits::json_depth`]); the text
//! must be UTF-8. Error messages quote at most a short prefix of the input.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::limits::json_depth;
use super::problem::Problem;
use crate::model::quote;

/// Parses `body` as one JSON document: at most `max_depth` levels of arrays and objects,
/// no key twice in an object. Every failure is an `invalid_input` problem.
pub fn parse(body: &[u8], max_depth: usize) -> Result<Value, Problem> {
    let depth = json_depth(body);
    if depth > max_depth {
        return Err(Problem::invalid(format!(
            "the JSON body nests {depth} levels deep, more than the limit of {max_depth}"
        )));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        Problem::invalid(format!(
            "the body is not UTF-8 text (byte {} is not valid)",
            e.valid_up_to()
        ))
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let v = de
        .deserialize_any(StrictVisitor)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| Problem::invalid(format!("the body is not valid JSON: {e}")))?;
    Ok(v)
}

/// Builds a [`Value`] like `serde_json`'s own, refusing duplicate keys.
struct StrictVisitor;

struct Strict(Value);

impl<'de> de::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(Strict(x)) = seq.next_element()? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if m.contains_key(&k) {
                return Err(de::Error::custom(format!(
                    "the key `{}` appears twice in one object",
                    quote(&k)
                )));
            }
            let Strict(x) = map.next_value()?;
            m.insert(k, x);
        }
        Ok(Value::Object(m))
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth_and_named() {
        let e = parse(br#"[{"grant": {"by": "person-999", "by": null}}]"#, 32).err();
        assert!(e.is_some_and(|e| e.detail.contains("`by` appears twice")));
        assert!(parse(br#"{"a": {"b": 1}, "b": {"b": 2}}"#, 32).is_ok());
    }

    #[test]
    fn it_reads_what_serde_json_reads() {
        let text = br#"{"a": [1, -2, 3.5, "x\u0041", true, null, {}], "b": {"c": []}}"#;
        let strict = parse(text, 32).ok();
        let loose: Option<serde_json::Value> = serde_json::from_slice(text).ok();
        assert!(strict.is_some());
        assert_eq!(strict, loose);
        assert!(parse(b"{} {}", 32).is_err());
        assert!(parse(b"[[[1]]]", 2).is_err());
        assert!(parse(b"\"\xff\"", 32).is_err());
    }
}
