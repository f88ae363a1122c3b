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
            // serde_json stops building a `Value` 128 levels deep; skipping it (as
            // the parser does) has no such limit, so deeper objects are only checked
            // for being well-formed and an object.
            match serde_json::from_slice::<Map<String, Value>>(&message) {
                Ok(_) => {}
                Err(e) if e.to_string().contains("recursion limit") => {
                    let raw: &RawValue =
                        serde_json::from_slice(&message).expect("accepted message is JSON");
                    assert!(
                        raw.get().starts_with('{'),
                        "accepted message is not an object"
                    );
                }
                // Escapes a `Value` refuses although the JSON grammar has them (a
                // lone surrogate such as `"\ud800"`): the message is skipped, not
                // decoded, and the upstream judges its strings.
                Err(e) if e.to_string().contains("unicode code point") => {
                    assert!(message.starts_with(b"{"), "accepted message is not an object");
                }
                Err(e) => panic!("accepted message is not a JSON object: {e}"),
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
