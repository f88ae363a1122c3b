//! The HTTP exchange of one-to-one forwarding (`syncValidation=true`, raw data
//! with `x-adobe-flow-id`): `POST {upstream}/collection/{id}?{query}` with the
//! producer's end-to-end headers and body, and the upstream's answer with its
//! end-to-end headers. Whether to forward, and the producer's answer, are the
//! ingest side's business (`ingest::forward`).

use axum::http::header::CONNECTION;
use axum::http::{HeaderMap, HeaderName};
use bytes::Bytes;
use tokio::time::Instant;

use super::{Exchange, Silence, Upstream};
use crate::batcher::CREDENTIAL_HEADERS;

/// What came of a forwarded request.
#[derive(Debug)]
pub enum Forwarded {
    /// The upstream answered; `headers` are only those that may cross this hop.
    Answer {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
    },
    /// No answer before the producer's deadline: it may still arrive.
    TimedOut,
    /// Sent, but the answer was lost or unreadable: why. It may or may not
    /// have arrived, so it is never resent.
    NotConfirmed(String),
    /// Never sent: why (never holding the URL or a credential).
    Unreachable(String),
    /// Never sent: inletd holds IMS credentials but could get no token.
    /// `status` is 401/403 (refused credentials) or 503, `message` says why.
    NoToken { status: u16, message: String },
}

/// Headers that belong to one hop and are never forwarded (RFC 9110 §7.6.1),
/// plus those the client recomputes (`host`, `content-length`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// The headers of `from` that may cross this hop: not hop-by-hop, and not
/// named in its `Connection` header (which makes them hop-by-hop too).
/// Credential values are marked sensitive, so no HTTP library's debug output shows them.
pub fn end_to_end(from: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = from
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect();
    from.iter()
        .filter(|(name, _)| !is_hop_by_hop(name) && !named.iter().any(|n| n == name.as_str()))
        .map(|(name, value)| {
            let mut value = value.clone();
            if CREDENTIAL_HEADERS.contains(name) {
                value.set_sensitive(true);
            }
            (name.clone(), value)
        })
        .collect()
}

impl Upstream {
    /// Sends `POST {upstream}/collection/{connection_id}?{query}` with the
    /// producer's end-to-end headers and body. The id becomes exactly one
    /// encoded path segment; nothing else of the producer's path is used.
    pub async fn forward(
        &self,
        connection_id: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Bytes,
        deadline: Instant,
    ) -> Forwarded {
        let url = self.base.endpoint(&["collection", connection_id], query);
        let request = || {
            self.client
                .post(url.clone())
                .headers(end_to_end(headers))
                .body(body.clone())
        };
        // No `Authorization` of the producer's own: inletd's token, if it has credentials.
        let managed = !headers.contains_key(axum::http::header::AUTHORIZATION);
        match self.exchange_for(managed, request, deadline).await {
            Exchange::Answered {
                status,
                headers,
                body: Ok(body),
            } => Forwarded::Answer {
                status,
                headers: end_to_end(&headers),
                body,
            },
            Exchange::Answered {
                status,
                body: Err(reason),
                ..
            } => Forwarded::NotConfirmed(format!("upstream answered {status} but {reason}")),
            Exchange::Unanswered {
                why: Silence::DeadlinePassed,
                ..
            } => Forwarded::TimedOut,
            Exchange::Unanswered { reason, .. } => {
                Forwarded::NotConfirmed(format!("upstream connection failed: {reason}"))
            }
            Exchange::NotSent { reason } => Forwarded::Unreachable(reason),
            Exchange::NoToken { status, message } => Forwarded::NoToken { status, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive"));
        h.insert("host", HeaderValue::from_static("localhost:8080"));
        h.insert("x-adobe-flow-id", HeaderValue::from_static("f"));
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        let out = end_to_end(&h);
        assert_eq!(out.len(), 2);
        assert!(out.contains_key("x-adobe-flow-id") && out.contains_key("authorization"));
        assert!(out["authorization"].is_sensitive());
        assert!(!format!("{out:?}").contains("Bearer t"));
    }

    #[test]
    fn headers_named_in_connection_stay_behind() {
        let mut h = HeaderMap::new();
        h.append(
            "connection",
            HeaderValue::from_static("X-Secret-Hop, close"),
        );
        h.append("connection", HeaderValue::from_static(" x-other ,"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("2"));
        h.insert("x-kept", HeaderValue::from_static("3"));
        let out = end_to_end(&h);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out.contains_key("x-kept"));
    }
}
