//! `BatchKey`: what decides which messages may travel in one upstream request.
//!
//! A key is the connection id plus the credential headers a producer sent.
//! Two producers with different tokens never share a batch, and the
//! key's `Debug` shows which headers are present, never their values.
//!
//! A producer that sent no `Authorization` makes a *managed* key: where
//! inletd holds IMS credentials, it adds its own token at send time. The key
//! says only "managed", never which token, so a token refresh neither splits
//! batches nor leaves buffered messages with a stale token; and since the
//! `Authorization` is part of the key, a producer's own token never shares a
//! batch with managed messages.

use std::fmt;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The headers forwarded upstream and made part of the batch key.
pub const CREDENTIAL_HEADERS: [HeaderName; 4] = [
    axum::http::header::AUTHORIZATION,
    HeaderName::from_static("x-gw-ims-org-id"),
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("x-sandbox-name"),
];

/// `AUTHORIZATION`'s place in [`CREDENTIAL_HEADERS`].
const AUTHORIZATION_RANK: usize = 0;

/// Connection id + credential headers.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    connection_id: String,
    credentials: Vec<(HeaderName, HeaderValue)>,
    /// No `Authorization` from the producer: inletd's own, if it holds IMS
    /// credentials, is added when a request leaves (without them: none).
    managed: bool,
}

impl BatchKey {
    /// Takes the credential headers (every value, in order) from a producer's
    /// request, marked sensitive so no HTTP library's debug output shows them.
    ///
    /// One pass over the request's few headers rather than a hashed lookup
    /// per credential name: this runs once per message, and the lookups cost
    /// ~1k instructions (`bench/profile.sh`). A request without credential
    /// headers allocates nothing here but the connection id.
    pub fn new(connection_id: &str, headers: &HeaderMap) -> BatchKey {
        let mut found: Vec<(usize, HeaderName, HeaderValue)> = Vec::new();
        for (name, value) in headers {
            if let Some(rank) = CREDENTIAL_HEADERS.iter().position(|c| c == name) {
                let mut value = value.clone();
                value.set_sensitive(true);
                found.push((rank, name.clone(), value));
            }
        }
        // In `CREDENTIAL_HEADERS` order; a stable sort keeps each name's values in order.
        found.sort_by_key(|(rank, _, _)| *rank);
        let managed = !found.iter().any(|(rank, _, _)| *rank == AUTHORIZATION_RANK);
        BatchKey {
            connection_id: connection_id.to_owned(),
            credentials: found
                .into_iter()
                .map(|(_, name, value)| (name, value))
                .collect(),
            managed,
        }
    }

    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    /// The headers to put on this key's upstream requests.
    pub fn credentials(&self) -> &[(HeaderName, HeaderValue)] {
        &self.credentials
    }

    /// The producer sent no `Authorization`: inletd's IMS token goes with
    /// these messages, if inletd holds credentials.
    pub fn managed(&self) -> bool {
        self.managed
    }
}

impl fmt::Debug for BatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.credentials.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("BatchKey")
            .field("connection_id", &self.connection_id)
            .field("credentials", &names)
            .field("managed", &self.managed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_separate_keys_and_never_show() {
        let mut a = HeaderMap::new();
        a.insert("authorization", HeaderValue::from_static("Bearer secret-a"));
        a.insert("content-type", HeaderValue::from_static("application/json"));
        let mut b = a.clone();
        b.insert("authorization", HeaderValue::from_static("Bearer secret-b"));
        let (ka, kb) = (BatchKey::new("c1", &a), BatchKey::new("c1", &b));
        assert_ne!(ka, kb);
        assert_ne!(ka, BatchKey::new("c2", &a));
        assert_eq!(
            ka.credentials().len(),
            1,
            "only credential headers are kept"
        );
        assert!(ka.credentials().iter().all(|(_, v)| v.is_sensitive()));
        assert!(!format!("{:?}", ka.credentials()).contains("secret-a"));
        let shown = format!("{ka:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
    }

    #[test]
    fn no_authorization_makes_a_managed_key_apart_from_any_token() {
        let mut own = HeaderMap::new();
        own.insert("authorization", HeaderValue::from_static("Bearer mine"));
        own.insert("x-sandbox-name", HeaderValue::from_static("dev"));
        let mut managed = own.clone();
        managed.remove("authorization");
        let (k_own, k_managed) = (BatchKey::new("c", &own), BatchKey::new("c", &managed));
        assert!(!k_own.managed());
        assert!(k_managed.managed());
        assert_ne!(
            k_own, k_managed,
            "own tokens never share a batch with managed ones"
        );
        let mut other_sandbox = managed.clone();
        other_sandbox.insert("x-sandbox-name", HeaderValue::from_static("prod"));
        assert_ne!(k_managed, BatchKey::new("c", &other_sandbox));
        assert_eq!(k_managed, BatchKey::new("c", &managed.clone()));
    }

    #[test]
    fn credentials_come_in_a_fixed_order_whatever_the_request_order() {
        let mut a = HeaderMap::new();
        a.insert("x-sandbox-name", HeaderValue::from_static("dev"));
        a.insert("content-type", HeaderValue::from_static("application/json"));
        a.append("x-api-key", HeaderValue::from_static("k1"));
        a.append("x-api-key", HeaderValue::from_static("k2"));
        a.insert("authorization", HeaderValue::from_static("Bearer t"));
        let mut b = HeaderMap::new();
        b.insert("authorization", HeaderValue::from_static("Bearer t"));
        b.append("x-api-key", HeaderValue::from_static("k1"));
        b.append("x-api-key", HeaderValue::from_static("k2"));
        b.insert("x-sandbox-name", HeaderValue::from_static("dev"));
        let (ka, kb) = (BatchKey::new("c", &a), BatchKey::new("c", &b));
        assert_eq!(ka, kb);
        let seen: Vec<(&str, &[u8])> = ka
            .credentials()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(
            seen,
            [
                ("authorization", &b"Bearer t"[..]),
                ("x-api-key", b"k1"),
                ("x-api-key", b"k2"),
                ("x-sandbox-name", b"dev"),
            ]
        );
        assert!(!ka.managed());
        let mut other_keys = b.clone();
        other_keys.remove("x-api-key");
        other_keys.append("x-api-key", HeaderValue::from_static("k2"));
        other_keys.append("x-api-key", HeaderValue::from_static("k1"));
        assert_ne!(kb, BatchKey::new("c", &other_keys), "value order counts");
        let bare = BatchKey::new("c", &HeaderMap::new());
        assert!(bare.credentials().is_empty() && bare.managed());
    }
}
