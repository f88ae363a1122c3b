//! Requests the batch endpoint cannot carry — `syncValidation=true` and raw
//! data (`x-adobe-flow-id`) — go one-to-one to the upstream's single endpoint.
//! Here: deciding which requests those are, admitting them inside the memory
//! bound and the metrics like any message, and the producer's answer. The
//! HTTP exchange itself is `upstream::forward`'s.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Arrival, ConnectionId, Ingest};
use crate::config::MAX_REQUEST_BYTES;
use crate::error::Error;
use crate::reply::NOT_CONFIRMED;
use crate::upstream::forward::Forwarded;

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

/// Forwards the body as it came to `/collection/{id}?{query}` (nothing else of
/// the producer's path) and returns the upstream's answer as it came.
pub async fn forward(
    ingest: &Ingest,
    arrival: &Arrival,
    connection_id: &ConnectionId,
    query: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let admitted = async {
        let mut received = ingest
            .receive(arrival, headers, body, MAX_REQUEST_BYTES)
            .await?;
        ingest.charge(&mut received, 1)?;
        let whole = received.body.clone();
        let (mut messages, pending) = ingest.admit(arrival, received, vec![whole], 1)?;
        let message = messages.pop().ok_or(Error::BadShape("empty request"))?;
        Ok::<_, Error>((message, pending))
    }
    .await;
    let (message, pending) = match admitted {
        Ok(pair) => pair,
        Err(e) => return ingest.refuse_for(connection_id, e),
    };
    let forwarded = ingest
        .upstream
        .forward(
            connection_id.as_str(),
            query.as_deref(),
            headers,
            message.body.clone(),
            pending.deadline(),
        )
        .await;
    let failed = match forwarded {
        Forwarded::Answer {
            status,
            headers,
            body,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            if !status.is_success() {
                let reason = "the upstream's own answer, passed on as it came";
                let log = &ingest.outcomes;
                log.record(connection_id.as_str(), status.as_u16(), reason, 1, 1);
            }
            let mut response = (status, body).into_response();
            response.headers_mut().extend(headers);
            Ok(response)
        }
        Forwarded::TimedOut => Err(Error::Timeout),
        Forwarded::NoToken { status, message } => Err(Error::Upstream {
            status,
            message,
            retry_after: crate::upstream::no_token_retry_after(status),
        }),
        Forwarded::NotConfirmed(reason) => Err(Error::Upstream {
            status: 502,
            message: format!("{reason}; {NOT_CONFIRMED}"),
            retry_after: None,
        }),
        Forwarded::Unreachable(reason) => Err(Error::Upstream {
            status: 502,
            message: format!("upstream unreachable: {reason}"),
            retry_after: None,
        }),
    };
    let response = failed.unwrap_or_else(|e| {
        ingest.outcomes.error(connection_id.as_str(), &e);
        e.into_response()
    });
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
