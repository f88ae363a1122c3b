//! What the endpoints share: the request an endpoint is handed ([`Incoming`]),
//! what it answers ([`Answer`]), and the small HTTP/JSON helpers (AEP's error
//! shape, query and header reading, the clock). No routing and no state, so the
//! request path (`ingest.rs`), the endpoints and the faults all stand on it.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// A request that passed the whole-request checks, handed to an endpoint.
pub(crate) struct Incoming {
    pub connection_id: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub authorization: Option<String>,
    /// How the endpoint must bend its answer (from the fault the request popped).
    pub bend: Bend,
}

/// The faults an endpoint applies itself, to its own answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Bend {
    #[default]
    None,
    ShortResponses,
    LongResponses,
    OddCodes,
}

/// What an endpoint answered, and how many messages it found.
pub(crate) struct Answer {
    pub response: Response,
    pub message_count: usize,
}

/// Headers as recorded: lower-case names, values decoded lossily.
pub(crate) fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect()
}

pub(crate) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The value of query parameter `key` (no percent-decoding: the keys and values
/// the stand-in looks at are plain ASCII).
pub(crate) fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k.eq_ignore_ascii_case(key).then_some(v)
    })
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// AEP's error shape: `{"statusCode":N,"message":"…"}` (`statusCode` may be a string).
#[derive(serde::Serialize)]
pub(crate) struct ErrorBody<'a, C> {
    #[serde(rename = "statusCode")]
    pub status_code: C,
    pub message: &'a str,
}

/// A whole-request error answer.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    let body = ErrorBody {
        status_code: status.as_u16(),
        message,
    };
    json_response(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_case_insensitively() {
        let q = Some("a=1&syncValidation=True&x-adobe-flow-id=f1&flag");
        assert_eq!(query_param(q, "syncvalidation"), Some("True"));
        assert_eq!(query_param(q, "x-adobe-flow-id"), Some("f1"));
        assert_eq!(query_param(q, "flag"), Some(""));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(None, "a"), None);
    }
}
