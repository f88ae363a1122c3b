//! The faults a test (or `POST /standin/faults`) can queue, and the whole-request
//! answers they produce. Each ingestion request pops at most one fault, in order.
//! Faults that only bend the normal answer (`ShortResponses`, `LongResponses`,
//! `Delay`) are applied by the endpoints themselves.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ingest::error_response;

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
        Fault::ShortResponses | Fault::LongResponses | Fault::Delay { .. } | Fault::Hang => None,
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
                {"kind":"delay","ms":25},{"kind":"hang"}]"#,
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
