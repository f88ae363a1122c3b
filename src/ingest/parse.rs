//! The checks made on a producer's body before anything is buffered: it must
//! be JSON, a message must be an object, a batch must be `{"messages":[...]}`.
//! Messages keep their bytes as received (slices of the request body).

use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::Error;

/// One message: its exact bytes (the JSON object as sent, surrounding whitespace trimmed).
/// Checked in one pass that builds nothing (`IgnoredAny`): this runs once per
/// message, and the `RawValue` it replaces cost a second look at the bytes.
pub fn single(body: &Bytes) -> Result<Bytes, Error> {
    serde_json::from_slice::<IgnoredAny>(body).map_err(|e| Error::NotJson(e.to_string()))?;
    // Valid JSON: only JSON whitespace (all ASCII) surrounds the value.
    let text = body.trim_ascii();
    if text.first() != Some(&b'{') {
        return Err(Error::BadShape(
            "the body must be one JSON object: {\"header\":{...},\"body\":{...}}",
        ));
    }
    Ok(body.slice_ref(text))
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

fn batch_error(e: serde_json::Error) -> Error {
    match e.classify() {
        serde_json::error::Category::Data => {
            Error::BadShape("the body must be {\"messages\":[...]} with a list of messages")
        }
        _ => Error::NotJson(e.to_string()),
    }
}

/// How many entries a batch body's `messages` holds, found without allocating
/// per entry, so the body can be charged for them before anything is built.
pub fn count_messages(body: &[u8]) -> Result<usize, Error> {
    let Count(n) = serde_json::from_slice(body).map_err(batch_error)?;
    Ok(n)
}

/// The number of entries in `{"messages":[...]}` (other keys skipped).
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{\"messages\":[...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
        let mut count = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "messages" {
                let Count(n) = map.next_value::<Entries>()?.0;
                // A repeated key is refused by the real parse; charge for the larger.
                count = Some(count.map_or(n, |c: usize| c.max(n)));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        count
            .map(Count)
            .ok_or_else(|| de::Error::missing_field("messages"))
    }
}

/// A JSON array, counted.
struct Entries(Count);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries, A::Error> {
        let mut n = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(Entries(Count(n)))
    }
}

/// A producer's batch: each message's bytes, or why that one message is refused.
pub fn batch(body: &Bytes) -> Result<Vec<Result<Bytes, Error>>, Error> {
    // serde reads a struct from a JSON array of its fields too (`[[...]]`);
    // a batch is an object and nothing else.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(Error::BadShape(
            "the body must be {\"messages\":[...]} with a list of messages",
        ));
    }
    let parsed: BatchBody<'_> = serde_json::from_slice(body).map_err(batch_error)?;
    if parsed.messages.is_empty() {
        return Err(Error::BadShape("`messages` is empty"));
    }
    Ok(parsed
        .messages
        .into_iter()
        .map(|raw| object(body, raw).ok_or(Error::BadShape("this message is not a JSON object")))
        .collect())
}

/// The slice of `body` holding `raw`, if `raw` is an object.
fn object(body: &Bytes, raw: &RawValue) -> Option<Bytes> {
    let text = raw.get().trim();
    text.starts_with('{')
        .then(|| body.slice_ref(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_keeps_bytes_as_received() {
        let body = Bytes::from_static(b"  {\"body\" : {\"a\":1.50}, \"header\":{}}\n");
        let m = single(&body).unwrap();
        assert_eq!(&m[..], b"{\"body\" : {\"a\":1.50}, \"header\":{}}");
    }

    /// Values are skipped, not decoded: a number beyond an f64 is grammatical
    /// JSON, kept byte for byte, and left for the upstream to judge.
    #[test]
    fn numbers_beyond_an_f64_pass_as_received() {
        let body = Bytes::from_static(br#"{"n":64444e4444444444444444444444442}"#);
        assert_eq!(single(&body).unwrap(), body);
        let body = Bytes::from_static(br#"{"messages":[{"a":1e400},{"b":-1e999}]}"#);
        let entries = batch(&body).unwrap();
        assert_eq!(&entries[0].as_ref().unwrap()[..], br#"{"a":1e400}"#);
        assert_eq!(&entries[1].as_ref().unwrap()[..], br#"{"b":-1e999}"#);
    }

    #[test]
    fn single_refuses_non_objects_and_garbage() {
        for bad in [&b"[1]"[..], b"\"x\"", b"{", b"", b"{} {}"] {
            assert!(single(&Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn batch_slices_each_message_and_flags_bad_ones() {
        let body = Bytes::from_static(br#"{"messages":[ {"a":1} ,7,{"b":"}"}]}"#);
        let out = batch(&body).unwrap();
        assert_eq!(&out[0].as_ref().unwrap()[..], br#"{"a":1}"#);
        assert!(out[1].is_err());
        assert_eq!(&out[2].as_ref().unwrap()[..], br#"{"b":"}"}"#);
    }

    #[test]
    fn count_matches_the_entries_the_parse_finds() {
        for (body, n) in [
            (&br#"{"messages":[ {"a":1} ,7,{"b":"}"}]}"#[..], 3),
            (br#"{"x":[1,2],"messages":[{},{}],"y":{"messages":[1]}}"#, 2),
            (br#"{"messages":[]}"#, 0),
        ] {
            assert_eq!(count_messages(body).unwrap(), n);
        }
        let body = Bytes::from(format!(r#"{{"messages":[{}{{}}]}}"#, "{},".repeat(999)));
        assert_eq!(count_messages(&body).unwrap(), 1000);
        assert_eq!(batch(&body).unwrap().len(), 1000);
        for bad in [
            &br#"{"messages":{}}"#[..],
            br#"{"msgs":[]}"#,
            b"[]",
            b"nope",
            b"{",
        ] {
            let err = count_messages(bad).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{err}");
        }
    }

    #[test]
    fn batch_refuses_wrong_shapes() {
        for bad in [
            &br#"{"messages":{}}"#[..],
            br#"{"msgs":[]}"#,
            br#"[]"#,
            b"nope",
            br#"{"messages":[]}"#,
            // The array form serde would accept for a struct (found by fuzzing).
            br#"[[{"a":1}]]"#,
            br#" [[]]"#,
        ] {
            assert!(
                batch(&Bytes::copy_from_slice(bad)).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
