//! Requests the batch endpoint cannot carry — `syncValidation=true` and raw
//! data (`x-adobe-flow-id`) — go one-to-one to the upstream's single endpoint.
//! They still count in the metrics and still wait inside the memory bound.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{Ingest, MAX_REQUEST_BYTES};
use crate::error::Error;
use crate::reply::NOT_CONFIRMED;
use crate::upstream::forward::end_to_end;
use crate::upstream::{Exchange, Silence};

const FLOW_ID: &str = "x-adobe-flow-id";

/// Whether this single-endpoint request must bypass batching.
pub fn goes_one_to_one(query: Option<&str>, headers: &HeaderMap) -> bool {
    if headers.contains_key(FLOW_ID) {
        return true;
    }
    query.unwrap_or_default().split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        name.eq_ignore_ascii_case(FLOW_ID)
            || (name.eq_ignore_ascii_case("syncValidation") && value.eq_ignore_ascii_case("true"))
    })
}

/// Forwards the request as it came and returns the upstream's answer as it came.
pub async fn forward(ingest: &Ingest, uri: &Uri, headers: &HeaderMap, body: Body) -> Response {
    let received = match ingest.receive(headers, body, MAX_REQUEST_BYTES).await {
        Ok(r) => r,
        Err(e) => return ingest.refuse(e),
    };
    let whole = received.body.clone();
    let (message, deadline) = match ingest.admit(received, vec![whole]) {
        Ok((mut messages, pending)) => match messages.pop() {
            Some(message) => (message, pending.deadline),
            None => return Error::BadShape("empty request").into_response(),
        },
        Err(e) => return ingest.refuse(e),
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let exchange = ingest
        .upstream
        .forward(path, headers, message.body.clone(), deadline)
        .await;
    let response = match exchange {
        Exchange::Answered {
            status,
            headers,
            body: Ok(body),
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = (status, body).into_response();
            response.headers_mut().extend(end_to_end(&headers));
            response
        }
        Exchange::Answered {
            status,
            body: Err(reason),
            ..
        } => Error::Upstream {
            status: 502,
            message: format!("upstream answered {status} but {reason}; {NOT_CONFIRMED}"),
            retry_after: None,
        }
        .into_response(),
        Exchange::Unanswered {
            why: Silence::DeadlinePassed,
            ..
        } => Error::Timeout.into_response(),
        Exchange::Unanswered { reason, .. } => Error::Upstream {
            status: 502,
            message: format!("upstream connection failed: {reason}; {NOT_CONFIRMED}"),
            retry_after: None,
        }
        .into_response(),
        Exchange::NotSent { reason } => Error::Upstream {
            status: 502,
            message: format!("upstream unreachable: {reason}"),
            retry_after: None,
        }
        .into_response(),
    };
    message.reply.complete(response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    #[test]
    fn decides_which_requests_go_one_to_one() {
        let none = HeaderMap::new();
        assert!(goes_one_to_one(Some("syncValidation=true"), &none));
        assert!(goes_one_to_one(Some("a=1&syncValidation=True"), &none));
        assert!(!goes_one_to_one(Some("syncValidation=False"), &none));
        assert!(!goes_one_to_one(Some("syncValidation=false"), &none));
        assert!(goes_one_to_one(Some("x-adobe-flow-id=abc"), &none));
        assert!(!goes_one_to_one(None, &none));
        let mut flow = HeaderMap::new();
        flow.insert(
            HeaderName::from_static(FLOW_ID),
            HeaderValue::from_static("f"),
        );
        assert!(goes_one_to_one(None, &flow));
    }
}
