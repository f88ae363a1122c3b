//! The path every ingestion request takes before an endpoint answers it: read
//! the body, record the request and pop its fault, wait the configured latency,
//! then the whole-request checks in the order a gateway makes them (fault,
//! auth 401/403, size 413). Also the JSON answer helpers shared by the module.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::faults::{self, whole_request_answer, Fault};
use super::serve::KillSwitch;
use super::state::{RecordedRequest, Shared};
use crate::{batch, single};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    Batch,
    Single,
}

/// A request that passed the whole-request checks, handed to an endpoint.
pub(super) struct Incoming {
    pub connection_id: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub authorization: Option<String>,
    /// The queued fault this request popped, if the endpoint has to apply it.
    pub fault: Option<Fault>,
}

/// What an endpoint answered, and how many messages it found.
pub(super) struct Answer {
    pub response: Response,
    pub message_count: usize,
}

pub(super) async fn serve(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    connection_id: String,
    req: Request,
) -> Response {
    let fault = shared.take_fault();
    let (parts, mut body) = req.into_parts();
    if fault == Some(Fault::ResetMidRequest) {
        return reset_mid_request(&shared, endpoint, &parts, &mut body).await;
    }
    let max = shared.config.max_body_bytes;
    // Read well past the limit so an oversized body still gets its 413 rather
    // than a reset connection; beyond the hard cap the body is dropped unread.
    let hard_cap = max.saturating_mul(4).max(8 << 20);
    let (body, too_large) = match axum::body::to_bytes(body, hard_cap).await {
        Ok(bytes) => {
            let over = bytes.len() > max;
            (bytes, over)
        }
        Err(_) => (Bytes::new(), true),
    };

    let record = shared.config.record.then(|| RecordedRequest {
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: header_list(&parts.headers),
        body: body.clone(),
        status: 0,
        message_count: 0,
    });
    let seq = shared.arrive(endpoint == Endpoint::Batch, record);
    let _concurrent = shared.concurrency.enter();

    let delay = match fault {
        Some(Fault::Delay { ms }) => Duration::from_millis(ms),
        _ => Duration::ZERO,
    };
    let wait = shared.config.latency.saturating_add(delay);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }

    let answer = if fault == Some(Fault::Hang) {
        shared.shutdown.cancelled().await;
        plain(error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "aep-standin is shutting down",
        ))
    } else if fault == Some(Fault::Redirect) {
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        plain(faults::redirect(&shared.redirect_base, target))
    } else if let Some(response) = fault
        .as_ref()
        .and_then(|f| whole_request_answer(f, endpoint == Endpoint::Batch))
    {
        plain(response)
    } else if let Some(response) = check_auth(&shared, &parts.headers) {
        plain(response)
    } else if too_large {
        plain(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body is larger than {max} bytes"),
        ))
    } else {
        let incoming = Incoming {
            connection_id,
            query: parts.uri.query().map(str::to_owned),
            authorization: header_str(&parts.headers, header::AUTHORIZATION.as_str()),
            headers: parts.headers,
            body,
            fault: fault.clone(),
        };
        match endpoint {
            Endpoint::Batch => batch::answer(&shared, incoming),
            Endpoint::Single => single::answer(&shared, incoming),
        }
    };
    let status = answer.response.status().as_u16();
    tracing::debug!(
        ?endpoint,
        status,
        messages = answer.message_count,
        "answered"
    );
    shared.finish(seq, status, answer.message_count);
    faults::spoil_body(fault.as_ref(), answer.response).await
}

/// [`Fault::ResetMidRequest`]: read at most one chunk of the body, record the
/// request (status 0: never answered), then drop the connection.
async fn reset_mid_request(
    shared: &Shared,
    endpoint: Endpoint,
    parts: &axum::http::request::Parts,
    body: &mut axum::body::Body,
) -> Response {
    use http_body_util::BodyExt;
    let first = match body.frame().await {
        Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    };
    let record = shared.config.record.then(|| RecordedRequest {
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: header_list(&parts.headers),
        body: first,
        status: 0,
        message_count: 0,
    });
    shared.arrive(endpoint == Endpoint::Batch, record);
    let Some(KillSwitch(kill)) = parts.extensions.get::<KillSwitch>() else {
        // Not served by our accept loop: no connection to drop.
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "cannot reset here");
    };
    kill.cancel();
    // The connection task drops this future with the connection.
    std::future::pending().await
}

fn plain(response: Response) -> Answer {
    Answer {
        response,
        message_count: 0,
    }
}

/// 401 without a token, 403 with the wrong one, when a token is required.
fn check_auth(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let required = shared.config.required_token.as_deref()?;
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Some(error_response(
            StatusCode::UNAUTHORIZED,
            "missing Authorization header",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if token == Some(required) {
        None
    } else {
        Some(error_response(
            StatusCode::FORBIDDEN,
            "invalid or expired token",
        ))
    }
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

pub(super) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The value of query parameter `key` (no percent-decoding: the keys and values
/// the stand-in looks at are plain ASCII).
pub(super) fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k.eq_ignore_ascii_case(key).then_some(v)
    })
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// AEP's error shape: `{"statusCode":N,"message":"…"}` (`statusCode` may be a string).
#[derive(serde::Serialize)]
pub(super) struct ErrorBody<'a, C> {
    #[serde(rename = "statusCode")]
    pub status_code: C,
    pub message: &'a str,
}

/// A whole-request error answer.
pub(super) fn error_response(status: StatusCode, message: &str) -> Response {
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
