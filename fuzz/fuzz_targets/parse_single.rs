//! `POST /collection/{id}` body check (`ingest::parse::single`) on any bytes.
//!
//! Properties: an accepted message is a slice of the request body (bytes kept as
//! received, not re-serialised) that is itself one JSON object, and it is the
//! body minus surrounding whitespace; a body that is one JSON object is accepted.
#![no_main]

use bytes::Bytes;
use inletd::ingest::parse;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let as_value: Option<Value> = serde_json::from_slice(data).ok();
    match parse::single(&body) {
        Ok(message) => {
            let start = message.as_ptr() as usize - body.as_ptr() as usize;
            assert!(
                start + message.len() <= body.len(),
                "not a slice of the body"
            );
            assert_eq!(&body[start..start + message.len()], &message[..]);
            assert_eq!(
                &message[..],
                data.trim_ascii(),
                "the message is the body without surrounding whitespace"
            );
            // A `Value` refuses some JSON the grammar allows: objects deeper than
            // 128 levels, numbers beyond an f64 (`1e400`) and escapes such as a
            // lone surrogate (`"\ud800"`, which even `RawValue` refuses in a key).
            // The parser skips rather than decodes, and the upstream judges values,
            // so those are checked only for being well-formed and an object.
            if let Err(e) = serde_json::from_slice::<Map<String, Value>>(&message) {
                match serde_json::from_slice::<&RawValue>(&message) {
                    Ok(raw) => assert!(raw.get().starts_with('{'), "not an object: {e}"),
                    Err(raw) if raw.to_string().contains("unicode code point") => {
                        assert!(message.starts_with(b"{"), "not an object: {e}")
                    }
                    Err(raw) => panic!("accepted message is not JSON: {e}; {raw}"),
                }
            }
        }
        Err(e) => {
            assert!(
                !matches!(as_value, Some(Value::Object(_))),
                "a JSON object body was refused: {e}"
            );
            assert_eq!(e.status().as_u16(), 400);
        }
    }
});
