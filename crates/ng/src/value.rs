//! The document tree both wire encodings share: bencode (byte strings, integers, lists,
//! dictionaries) and the JSON subset rtpengine accepts.
//!
//! Requests are first decoded into a [`Value`] and only then interpreted, because the same
//! key may carry a string or a list, an integer or a numeric string, and its name may be
//! spelled with `-`, `_` or a space (see [`crate::flags`]). A fixed serde struct cannot
//! express that tolerance; a tree can.

use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How deep lists and dictionaries may nest in a document we decode. Real ng messages nest
/// three levels at most (`codec` → `strip` → item; query replies five); the bound keeps a
/// hostile datagram from exhausting the stack.
pub const MAX_DEPTH: usize = 32;

/// One node of an ng document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A bencode integer or a JSON integer (JSON booleans decode as 0/1).
    Int(i64),
    /// A bencode byte string or a JSON string. Not necessarily UTF-8 (SDP bodies are bytes).
    Bytes(Bytes),
    /// A bencode list or JSON array.
    List(Vec<Value>),
    /// A dictionary, keys in arrival order (Kamailio and OpenSIPS do not sort them).
    Dict(Dict),
}

/// A dictionary: keys in arrival order. Keys are text; a non-UTF-8 key is decoded lossily
/// (it can only ever be an unknown key).
pub type Dict = Vec<(String, Value)>;

impl Value {
    /// A byte-string value from text.
    pub fn text(s: impl Into<String>) -> Value {
        Value::Bytes(Bytes::from(s.into()))
    }

    /// The bytes of a byte-string value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The value as text: a UTF-8 byte string, or an integer's decimal form.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_owned),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }

    /// The value as an integer: a bencode integer or a decimal string (rtpengine accepts both).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
            _ => None,
        }
    }

    /// The dictionary of a dictionary value.
    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// A short human description of the value's type, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "integer",
            Value::Bytes(_) => "string",
            Value::List(_) => "list",
            Value::Dict(_) => "dictionary",
        }
    }
}

/// The first value under `key` (exact match) in a dictionary.
pub fn get<'a>(dict: &'a Dict, key: &str) -> Option<&'a Value> {
    dict.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Bytes(b) => {
                if serializer.is_human_readable() {
                    // JSON strings are Unicode: bytes that are not UTF-8 cannot be carried.
                    match std::str::from_utf8(b) {
                        Ok(s) => serializer.serialize_str(s),
                        Err(_) => Err(serde::ser::Error::custom(
                            "byte string is not UTF-8 and cannot be sent as JSON",
                        )),
                    }
                } else {
                    serializer.serialize_bytes(b)
                }
            }
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Dict(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        ValueSeed { depth: 0 }.deserialize(deserializer)
    }
}

/// Deserialises a [`Value`] at a known nesting depth so that the depth can be bounded.
struct ValueSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor { depth: self.depth })
    }
}

struct ValueVisitor {
    depth: usize,
}

impl ValueVisitor {
    fn nested<E: de::Error>(&self) -> Result<ValueSeed, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "document nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(ValueSeed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an ng value (string, integer, list or dictionary)")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Int(i64::from(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format_args!("integer {v} is out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // ng has no floats; keep the JSON text so a numeric key can still read it.
        Ok(Value::text(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Bytes(Bytes::copy_from_slice(v.as_bytes())))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(Bytes::copy_from_slice(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        // JSON null: treated as an empty string, i.e. "not given" for every key.
        Ok(Value::Bytes(Bytes::new()))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.nested()?)? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<KeyText>()? {
            let value = map.next_value_seed(self.nested()?)?;
            entries.push((key.0, value));
        }
        Ok(Value::Dict(entries))
    }
}

/// A dictionary key: text in JSON, bytes in bencode (decoded lossily; see [`Dict`]).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KeyText, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a dictionary key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<KeyText, E> {
                Ok(KeyText(String::from_utf8_lossy(v).into_owned()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}
