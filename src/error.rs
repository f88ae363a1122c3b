//! The errors producers can get from inletd itself, and their one mapping to
//! HTTP: `{"statusCode":N,"message":"…"}` (plus `Retry-After` where it helps).
//! Messages never carry tokens, bodies or internals.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a producer's request was refused or not answered with a result.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    BadShape(&'static str),
    #[error(
        "a message of {len} bytes cannot fit in one upstream request (max_batch_bytes is {max})"
    )]
    TooLarge { len: usize, max: usize },
    #[error("the request body is larger than {max} bytes")]
    BodyTooLarge { max: usize },
    #[error("inletd's buffer is full (max_buffered_bytes); retry after a moment")]
    BufferFull,
    #[error("inletd is shutting down; retry against another instance or after restart")]
    Draining,
    #[error("no result within request_timeout; {}", crate::reply::MAY_STILL_ARRIVE)]
    Timeout,
    #[error("the request body did not arrive in time (body_read_timeout, or request_timeout if shorter)")]
    SlowBody,
    #[error("the connection id in the path {0}: it must be one path segment of letters, digits and . _ ~ - (at most 256)")]
    BadConnectionId(&'static str),
    #[error("this body's {messages} messages would take {cost} bytes of the memory bound (max_buffered_bytes is {bound}); send fewer messages per request")]
    TooCostly {
        messages: usize,
        cost: usize,
        bound: usize,
    },
    #[error("no route for {0}: inletd serves POST /collection/{{CONNECTION_ID}} and POST /collection/batch/{{CONNECTION_ID}}")]
    NoRoute(String),
    #[error("{0} is not supported here: send messages with POST")]
    MethodNotAllowed(axum::http::Method),
    /// Fire-and-forget with `spool_dir`: the spool refused the message
    /// (full: 429; a failed write or a closed spool: 503).
    #[error("the message was not accepted: {0}")]
    Spool(#[from] crate::spool::SpoolError),
    #[error("the message was not delivered: {message}")]
    Upstream {
        status: u16,
        message: String,
        /// When the producer may try again (a final 429 passes it on).
        retry_after: Option<Duration>,
    },
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotJson(_) | Error::BadShape(_) | Error::BadConnectionId(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::TooLarge { .. } | Error::BodyTooLarge { .. } | Error::TooCostly { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::BufferFull => StatusCode::TOO_MANY_REQUESTS,
            Error::NoRoute(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Error::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Error::SlowBody => StatusCode::REQUEST_TIMEOUT,
            Error::Upstream { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            Error::Spool(e) => match e {
                crate::spool::SpoolError::Full { .. } => StatusCode::TOO_MANY_REQUESTS,
                crate::spool::SpoolError::Encode(_) => StatusCode::PAYLOAD_TOO_LARGE,
                crate::spool::SpoolError::Io(_) | crate::spool::SpoolError::Closed => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
        }
    }

    /// Seconds a client should wait before trying again, where that is known.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Error::BufferFull => Some(1),
            Error::Draining => Some(5),
            // A full spool empties as the upstream takes messages; a failed write may need space freed.
            Error::Spool(crate::spool::SpoolError::Encode(_)) => None,
            Error::Spool(_) => Some(5),
            // Whole seconds, rounded up: "0" would invite an instant retry.
            Error::Upstream {
                retry_after: Some(after),
                ..
            } => Some(
                after
                    .as_secs()
                    .saturating_add(u64::from(after.subsec_nanos() > 0)),
            ),
            _ => None,
        }
    }

    /// The message of the JSON error body: upstream messages are passed on as they came.
    pub fn message(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Error::Upstream { message, .. } => message.into(),
            other => other.to_string().into(),
        }
    }

    /// The JSON error body.
    pub fn body(&self) -> serde_json::Value {
        json!({ "statusCode": self.status().as_u16(), "message": self.message() })
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Error::MethodNotAllowed(_) = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_a_status_and_json_body() {
        let cases = [
            (Error::NotJson("x".into()), 400),
            (Error::TooLarge { len: 2, max: 1 }, 413),
            (Error::BufferFull, 429),
            (Error::Draining, 503),
            (Error::Timeout, 504),
            (Error::SlowBody, 408),
            (Error::BadConnectionId("is empty"), 400),
            (
                Error::TooCostly {
                    messages: 3,
                    cost: 9,
                    bound: 8,
                },
                413,
            ),
            (
                Error::Upstream {
                    status: 401,
                    message: "expired".into(),
                    retry_after: None,
                },
                401,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.status().as_u16(), code);
            assert_eq!(err.body()["statusCode"], code);
        }
        assert!(Error::Timeout
            .to_string()
            .contains("may still be delivered"));
        let r = Error::BufferFull.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn spool_refusals_are_429_or_503_with_retry_after() {
        use crate::spool::SpoolError;
        let full = Error::Spool(SpoolError::Full { max: 10 }).into_response();
        assert_eq!(full.status(), 429);
        assert_eq!(full.headers()[header::RETRY_AFTER], "5");
        let disk = std::sync::Arc::new(std::io::Error::from_raw_os_error(28));
        for e in [SpoolError::Io(disk), SpoolError::Closed] {
            let r = Error::Spool(e).into_response();
            assert_eq!(r.status(), 503);
            assert!(r.headers().contains_key(header::RETRY_AFTER));
        }
    }

    #[test]
    fn an_upstream_429_carries_its_retry_after_rounded_up() {
        let busy = |after| Error::Upstream {
            status: 429,
            message: "busy".into(),
            retry_after: after,
        };
        let r = busy(Some(Duration::from_millis(1500))).into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = busy(Some(Duration::from_secs(3))).into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        assert!(!busy(None)
            .into_response()
            .headers()
            .contains_key(header::RETRY_AFTER));
    }
}
