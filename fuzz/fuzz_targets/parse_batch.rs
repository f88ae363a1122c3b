//! `POST /collection/batch/{id}` body check (`ingest::parse::batch`) on any bytes.
//!
//! Properties: an accepted batch has one entry per element of `messages`, in
//! order; each accepted entry is a slice of the body that parses as a JSON object
//! equal to that element; each refused entry is an element that is not an object.
#![no_main]

use bytes::Bytes;
use inletd::ingest::parse;
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// How many top-level keys are `messages` (a `Value` keeps only the last).
fn messages_keys(data: &[u8]) -> usize {
    struct Count;
    impl<'de> Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while let Some(key) = map.next_key::<String>()? {
                n += usize::from(key == "messages");
                map.next_value::<IgnoredAny>()?;
            }
            Ok(n)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(data);
    de.deserialize_map(Count).unwrap_or(0)
}

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let as_value = match serde_json::from_slice::<Value>(data) {
        Ok(v) => Some(v),
        // JSON the grammar allows but a `Value` refuses: deeper than 128 levels,
        // a number beyond an f64 (`1e400`), a lone surrogate escape (only "no
        // panic" is checked for those: even `RawValue` refuses some). The parser
        // skips values rather than decoding them and the upstream judges them, so
        // here each accepted entry is only checked for being a well-formed object.
        Err(e) if e.to_string().contains("unicode code point") => {
            let _ = parse::batch(&body);
            return;
        }
        Err(e) if serde_json::from_slice::<&RawValue>(data).is_ok() => {
            if let Ok(entries) = parse::batch(&body) {
                for message in entries.iter().flatten() {
                    let raw: &RawValue = serde_json::from_slice(message)
                        .unwrap_or_else(|raw| panic!("accepted entry is not JSON: {e}; {raw}"));
                    assert!(raw.get().starts_with('{'), "accepted entry is not an object");
                }
            }
            return;
        }
        Err(_) => None,
    };
    let elements = match &as_value {
        Some(Value::Object(o)) => o.get("messages").and_then(Value::as_array),
        _ => None,
    };
    match parse::batch(&body) {
        Ok(entries) => {
            assert!(!entries.is_empty(), "an empty batch was accepted");
            let elements = elements.expect("accepted a body without a `messages` array");
            assert_eq!(entries.len(), elements.len(), "one entry per message");
            for (entry, element) in entries.iter().zip(elements) {
                match entry {
                    Ok(message) => {
                        let start = message.as_ptr() as usize - body.as_ptr() as usize;
                        assert!(
                            start + message.len() <= body.len(),
                            "not a slice of the body"
                        );
                        let parsed: Value =
                            serde_json::from_slice(message).expect("accepted message is JSON");
                        assert!(parsed.is_object(), "accepted message is not an object");
                        assert_eq!(&parsed, element, "entries are out of order");
                    }
                    Err(e) => {
                        assert!(!element.is_object(), "an object message was refused: {e}");
                        assert_eq!(e.status().as_u16(), 400);
                    }
                }
            }
        }
        Err(e) => {
            assert_eq!(e.status().as_u16(), 400);
            // A body that is an object with one non-empty `messages` array must pass
            // (a repeated `messages` key is ambiguous and rightly refused).
            if let (Some(Value::Object(_)), Some(list)) = (&as_value, elements) {
                if messages_keys(data) == 1 {
                    assert!(list.is_empty(), "a well-formed batch was refused: {e}");
                }
            }
        }
    }
});
