//! The faults a test (or `POST /standin/faults`) can queue, and the whole-request
//! answers they produce. Each ingestion request pops at most one fault, in order.
//! Faults that only bend the normal answer (`ShortResponses`, `LongResponses`,
//! `OddCodes`, `Delay`) are applied by the endpoints themselves; `ResetMidRequest`
//! by the request path (it needs the connection); `CutBody` and `SlowBody` take the
//! finished answer and spoil how its body is sent ([`spoil_body`]).

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::wire::error_response;

/// Something for the stand-in to do wrong with one request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer the whole request with this status (e.g. 503, 429, 500, 400) and an
    /// error body `{"statusCode","message"}`, plus `Retry-After: <seconds>` if given.
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// A 207 whose `responses` has one entry fewer than the messages; nothing is
    /// recorded as delivered. On the single endpoint: a 200 without `xactionId`.
    ShortResponses,
    /// A 207 with one extra entry; the messages *are* recorded as delivered.
    /// On the single endpoint the answer is normal.
    LongResponses,
    /// A 207 (200 on the single endpoint) whose body is not JSON.
    Garbage,
    /// `200 {"ok":true}`: not the answer the client asked for.
    PlainOk,
    /// Answer normally after this extra delay.
    Delay { ms: u64 },
    /// Never answer; the request is released (503) only when the stand-in stops.
    Hang,
    /// The normal answer (messages *are* delivered), but the connection closes
    /// halfway through its body, after a `Content-Length` for all of it.
    CutBody,
    /// `307` with a `Location` on the stand-in's redirect target (a second
    /// listener, see [`crate::StandInHandle::redirected`]); nothing is delivered.
    Redirect,
    /// The connection is closed while the request body is being read, before
    /// anything is processed or answered; nothing is delivered.
    ResetMidRequest,
    /// The normal answer (messages *are* delivered): headers at once, then the
    /// body one byte every `ms` milliseconds.
    SlowBody { ms: u64 },
    /// A 207 whose entries carry codes no client should read as success
    /// (`"abc"`, `400.0`, `0`, `199`, `302`, and an `xactionId` next to an
    /// unreadable code), cycling over the messages; nothing is delivered. On the
    /// single endpoint the answer is normal.
    OddCodes,
}

/// The entries [`Fault::OddCodes`] cycles through, one per message.
pub(super) fn odd_entry(index: usize, xaction_id: String) -> serde_json::Value {
    use serde_json::json;
    match index % 6 {
        0 => json!({"statusCode": "abc", "message": "aep-standin fault: odd code"}),
        1 => json!({"statusCode": 400.0, "message": "aep-standin fault: odd code"}),
        2 => json!({"statusCode": 0, "message": "aep-standin fault: odd code"}),
        3 => json!({"statusCode": 199, "message": "aep-standin fault: odd code"}),
        4 => json!({"statusCode": 302, "message": "aep-standin fault: odd code"}),
        _ => json!({"xactionId": xaction_id, "statusCode": "n/a"}),
    }
}

/// The 307 of [`Fault::Redirect`], to the same path and query on `base`.
pub(super) fn redirect(base: &str, path_and_query: &str) -> Response {
    let location = format!("{base}{path_and_query}");
    match HeaderValue::from_str(&location) {
        Ok(value) => (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, value)]).into_response(),
        Err(_) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "bad redirect location"),
    }
}

/// Sends `response`'s body as [`Fault::CutBody`] or [`Fault::SlowBody`] say;
/// any other fault leaves it alone.
pub(super) async fn spoil_body(fault: Option<&Fault>, response: Response) -> Response {
    let cut = match fault {
        Some(Fault::CutBody) => None,
        Some(Fault::SlowBody { ms }) => Some(Duration::from_millis(*ms)),
        _ => return response,
    };
    let (mut parts, body) = response.into_parts();
    // The answers are small and already in memory.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let body = match cut {
        None => {
            let half = bytes.slice(..bytes.len() / 2);
            // The pause lets hyper flush the head and the half before the error
            // makes it drop the connection.
            let broken = async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(std::io::Error::other("aep-standin fault: body cut"))
            };
            let half = futures_util::stream::iter([Ok(half)]);
            Body::from_stream(half.chain(futures_util::stream::once(broken)))
        }
        Some(every) => Body::from_stream(futures_util::stream::unfold(
            (bytes, true),
            move |(rest, first): (Bytes, bool)| async move {
                if rest.is_empty() {
                    return None;
                }
                if !first {
                    tokio::time::sleep(every).await;
                }
                let byte = rest.slice(..1);
                Some((Ok::<_, std::io::Error>(byte), (rest.slice(1..), false)))
            },
        )),
    };
    Response::from_parts(parts, body)
}

/// Body sent by [`Fault::Garbage`]: a truncated answer under a JSON content type.
pub(super) const GARBAGE_BODY: &str = "{\"inletId\":\"standin\",\"responses\":[{\"xactio";

/// The answer for faults that replace the whole answer, or `None` for faults the
/// endpoint applies itself (or that were already applied: `Delay`, `Hang`).
pub(super) fn whole_request_answer(fault: &Fault, batch: bool) -> Option<Response> {
    match fault {
        Fault::Status {
            status,
            retry_after,
        } => {
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = error_response(
                code,
                &format!("aep-standin injected fault: status {}", code.as_u16()),
            );
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            Some(response)
        }
        Fault::Garbage => {
            let code = if batch {
                StatusCode::MULTI_STATUS
            } else {
                StatusCode::OK
            };
            Some(
                (
                    code,
                    [(header::CONTENT_TYPE, "application/json")],
                    GARBAGE_BODY,
                )
                    .into_response(),
            )
        }
        Fault::PlainOk => Some(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"ok\":true}",
            )
                .into_response(),
        ),
        Fault::ShortResponses
        | Fault::LongResponses
        | Fault::Delay { .. }
        | Fault::Hang
        | Fault::CutBody
        | Fault::Redirect
        | Fault::ResetMidRequest
        | Fault::SlowBody { .. }
        | Fault::OddCodes => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_the_control_endpoint_format() {
        let faults: Vec<Fault> = serde_json::from_str(
            r#"[{"kind":"status","status":503,"retry_after":1},
                {"kind":"status","status":429},
                {"kind":"short_responses"},{"kind":"long_responses"},
                {"kind":"garbage"},{"kind":"plain_ok"},
                {"kind":"delay","ms":25},{"kind":"hang"},
                {"kind":"cut_body"},{"kind":"redirect"},{"kind":"reset_mid_request"},
                {"kind":"slow_body","ms":200},{"kind":"odd_codes"}]"#,
        )
        .expect("valid faults");
        assert_eq!(
            faults,
            vec![
                Fault::Status {
                    status: 503,
                    retry_after: Some(1)
                },
                Fault::Status {
                    status: 429,
                    retry_after: None
                },
                Fault::ShortResponses,
                Fault::LongResponses,
                Fault::Garbage,
                Fault::PlainOk,
                Fault::Delay { ms: 25 },
                Fault::Hang,
                Fault::CutBody,
                Fault::Redirect,
                Fault::ResetMidRequest,
                Fault::SlowBody { ms: 200 },
                Fault::OddCodes,
            ]
        );
        assert!(serde_json::from_str::<Vec<Fault>>(r#"[{"kind":"nope"}]"#).is_err());
    }

    #[test]
    fn status_fault_sets_retry_after_and_garbage_is_not_json() {
        let fault = Fault::Status {
            status: 503,
            retry_after: Some(2),
        };
        let response = whole_request_answer(&fault, true).expect("replaces the answer");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");

        let bad = Fault::Status {
            status: 42,
            retry_after: None,
        };
        let response = whole_request_answer(&bad, true).expect("replaces the answer");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

        assert!(serde_json::from_str::<serde_json::Value>(GARBAGE_BODY).is_err());
        assert!(whole_request_answer(&Fault::ShortResponses, true).is_none());
    }
}
