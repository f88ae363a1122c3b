//! The checks made on a producer's body before anything is buffered: it must
//! be JSON, a message must be an object, a batch must be `{"messages":[...]}`.
//! Messages keep their bytes as received (slices of the request body).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::Error;

/// One message: its exact bytes (the JSON object as sent, surrounding whitespace trimmed).
pub fn single(body: &Bytes) -> Result<Bytes, Error> {
    let raw: &RawValue = serde_json::from_slice(body).map_err(|e| Error::NotJson(e.to_string()))?;
    object(body, raw).ok_or(Error::BadShape(
        "the body must be one JSON object: {\"header\":{...},\"body\":{...}}",
    ))
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

/// A producer's batch: each message's bytes, or why that one message is refused.
pub fn batch(body: &Bytes) -> Result<Vec<Result<Bytes, Error>>, Error> {
    let parsed: BatchBody<'_> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            Error::BadShape("the body must be {\"messages\":[...]} with a list of messages")
        }
        _ => Error::NotJson(e.to_string()),
    })?;
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
    fn batch_refuses_wrong_shapes() {
        for bad in [
            &br#"{"messages":{}}"#[..],
            br#"{"msgs":[]}"#,
            br#"[]"#,
            b"nope",
            br#"{"messages":[]}"#,
        ] {
            assert!(
                batch(&Bytes::copy_from_slice(bad)).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
