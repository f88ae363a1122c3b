//! One-to-one forwarding of the requests the batch endpoint cannot carry:
//! `syncValidation=true` and raw data (`x-adobe-flow-id`). Headers and body go
//! as they came; the answer comes back as it came.

use axum::http::{HeaderMap, HeaderName};
use bytes::Bytes;

use super::{Exchange, Upstream};

/// Headers that belong to one hop and are never forwarded (RFC 9110 §7.6.1).
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

/// The headers of `from` that may cross this hop.
pub fn end_to_end(from: &HeaderMap) -> HeaderMap {
    from.iter()
        .filter(|(name, _)| !is_hop_by_hop(name))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

impl Upstream {
    /// Sends `POST {upstream}{path_and_query}` with the producer's headers and body.
    pub async fn forward(
        &self,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
        deadline: tokio::time::Instant,
    ) -> Exchange {
        let url = format!("{}{}", self.base, path_and_query);
        let request = || {
            self.client
                .post(url)
                .headers(end_to_end(headers))
                .body(body)
        };
        self.exchange(request, deadline).await
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
    }
}
