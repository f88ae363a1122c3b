//! One `responses` entry of a batch answer as read off the wire: only the
//! three fields [`super::read_entry`] looks at, borrowed from the body where
//! they need no unescaping, every other key skipped without being built.
//!
//! It reads the same as looking the fields up in a `serde_json::Value`
//! (which it replaces, saving a map, its keys and its strings per message):
//! a repeated key keeps its last value, and an entry that is not an object
//! has none of the fields.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// One field's value, kept only as far as it matters.
#[derive(Debug, PartialEq)]
pub(super) enum Field<'a> {
    Str(Cow<'a, str>),
    /// A whole number ≥ 0 that fits a `u64` (what `Value::as_u64` accepts).
    Whole(u64),
    /// Anything else: negative or fractional numbers, booleans, null, lists, objects.
    Other,
}

impl Field<'_> {
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The fields of one entry that decide its message's fate.
#[derive(Debug, Default, PartialEq)]
pub(super) struct RawEntry<'a> {
    pub xaction_id: Option<Field<'a>>,
    pub status_code: Option<Field<'a>>,
    pub message: Option<Field<'a>>,
}

// For any `'a` the body outlives, so a containing struct can borrow too.
impl<'de: 'a, 'a> Deserialize<'de> for RawEntry<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntryVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

/// The key of an entry's field, matched without allocating.
enum Key {
    XactionId,
    StatusCode,
    Message,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "xactionId" => Key::XactionId,
            "statusCode" => Key::StatusCode,
            "message" => Key::Message,
            _ => Key::Other,
        })
    }
}

/// Accepts any JSON value: an object is read, anything else is an entry without fields.
struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = RawEntry<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entry = RawEntry::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::XactionId => entry.xaction_id = Some(map.next_value()?),
                Key::StatusCode => entry.status_code = Some(map.next_value()?),
                Key::Message => entry.message = Some(map.next_value()?),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(entry)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(RawEntry::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RawEntry::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RawEntry::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RawEntry::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RawEntry::default())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(RawEntry::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(RawEntry::default())
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(s)))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Field::Whole(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(n).map_or(Field::Other, Field::Whole))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Field::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Field::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The fields as the `Value` lookup they replace would see them.
    fn via_value(text: &str) -> RawEntry<'static> {
        let v: Value = serde_json::from_str(text).unwrap();
        let field = |k: &str| {
            v.get(k).map(|f| match f {
                Value::String(s) => Field::Str(Cow::Owned(s.clone())),
                Value::Number(n) => n.as_u64().map_or(Field::Other, Field::Whole),
                _ => Field::Other,
            })
        };
        RawEntry {
            xaction_id: field("xactionId"),
            status_code: field("statusCode"),
            message: field("message"),
        }
    }

    #[test]
    fn reads_as_a_value_lookup_would() {
        for text in [
            r#"{"xactionId":"x1"}"#,
            r#"{"xactionId":"a\"b\u00e9","statusCode":"400","message":"m\n"}"#,
            r#"{"statusCode":503,"message":"busy","other":{"xactionId":"no"},"list":[1,{"a":2}]}"#,
            r#"{"xactionId":"first","xactionId":"last","statusCode":1,"statusCode":null}"#,
            r#"{"statusCode":-1,"message":7}"#,
            r#"{"statusCode":400.0,"xactionId":true}"#,
            r#"{"statusCode":18446744073709551616,"xactionId":[]}"#,
            r#"{"x\u0061ctionId":"escaped key"}"#,
            r#"{}"#,
            "7",
            r#""s""#,
            "null",
            "true",
            "-2.5",
            "[1,[2]]",
        ] {
            let read: RawEntry<'_> = serde_json::from_str(text).unwrap();
            assert_eq!(read, via_value(text), "{text}");
        }
    }

    #[test]
    fn plain_strings_are_borrowed() {
        let text = r#"{"xactionId":"plain","message":"esc\"aped"}"#;
        let read: RawEntry<'_> = serde_json::from_str(text).unwrap();
        assert!(matches!(
            read.xaction_id,
            Some(Field::Str(Cow::Borrowed("plain")))
        ));
        assert!(matches!(read.message, Some(Field::Str(Cow::Owned(_)))));
    }

    #[test]
    fn bad_json_inside_an_entry_is_an_error() {
        assert!(serde_json::from_str::<RawEntry<'_>>(r#"{"xactionId":}"#).is_err());
        assert!(serde_json::from_str::<RawEntry<'_>>(r#"{"a":[1,}"#).is_err());
    }
}
