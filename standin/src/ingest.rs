//! The path every ingestion request takes before an endpoint answers it: read
//! the body, record the request and pop its fault, wait the configured latency,
//! then the whole-request checks in the order a gateway makes them (fault,
//! auth 401/403, size 413), or the connection dropped for `ResetMidRequest`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use super::faults::{self, whole_request_answer, Fault};
use super::serve::KillSwitch;
use super::state::{RecordedRequest, Shared};
use crate::wire::{error_response, header_list, header_str, Answer, Bend, Incoming};
use crate::{batch, single};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    Batch,
    Single,
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
        version: format!("{:?}", parts.version),
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
            bend: match fault {
                Some(Fault::ShortResponses) => Bend::ShortResponses,
                Some(Fault::LongResponses) => Bend::LongResponses,
                Some(Fault::OddCodes) => Bend::OddCodes,
                _ => Bend::None,
            },
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
        version: format!("{:?}", parts.version),
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

/// 401 without a token, 403 with the wrong one, when a token is required;
/// 401 without a good token issued by the IMS stand-in, when that is required.
fn check_auth(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    if shared
        .config
        .ims
        .as_ref()
        .is_some_and(|ims| ims.require_token)
    {
        if let Some(refusal) = shared.issuer.check(headers) {
            return Some(refusal);
        }
    }
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
