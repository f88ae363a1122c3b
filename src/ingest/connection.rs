//! The connection id a producer names in its path: checked at the door to be
//! exactly one safe path segment, so no producer input can reach another
//! upstream path than `/collection/batch/{id}` or `/collection/{id}`
//! (axum's `Path` percent-decodes, so `..%2F..%2Fstats` arrives as `../../stats`).

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::Response;

use super::Ingest;
use crate::error::Error;

/// Longest connection id accepted. AEP's are UUIDs or 64 hex digits; this
/// leaves room without letting a path grow without limit.
pub const MAX_CONNECTION_ID_LEN: usize = 256;

/// A validated connection id: 1 to [`MAX_CONNECTION_ID_LEN`] characters of
/// `[A-Za-z0-9._~-]` (RFC 3986 unreserved, so it never needs encoding), not `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionId(String);

impl ConnectionId {
    /// Checks a decoded path segment; the error says what is wrong with it.
    pub fn parse(id: &str) -> Result<ConnectionId, Error> {
        ConnectionId::check(id)?;
        Ok(ConnectionId(id.to_owned()))
    }

    fn check(id: &str) -> Result<(), Error> {
        let unreserved = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-');
        let reason = if id.is_empty() {
            "is empty"
        } else if id.len() > MAX_CONNECTION_ID_LEN {
            "is longer than 256 characters"
        } else if id == "." || id == ".." {
            "is a relative path segment"
        } else if !id.chars().all(unreserved) {
            "may only hold letters, digits and . _ ~ -"
        } else {
            return Ok(());
        };
        Err(Error::BadConnectionId(reason))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Extracts and checks `{connection_id}`; a bad one is refused (400) and counted.
impl FromRequestParts<Ingest> for ConnectionId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ingest: &Ingest) -> Result<Self, Response> {
        let id = Path::<String>::from_request_parts(parts, ingest)
            .await
            .map_err(|_| ingest.refuse(Error::BadConnectionId("is not valid UTF-8")))?;
        match ConnectionId::check(&id.0) {
            Ok(()) => Ok(ConnectionId(id.0)),
            Err(e) => {
                // Logged as far as it can be printed safely: a producer's id may
                // hold anything, newlines included.
                ingest
                    .outcomes
                    .error(&super::outcome_log::printable(&id.0), &e);
                Err(ingest.refuse(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ids_aep_hands_out() {
        for ok in [
            "c1",
            "6f1c4e2b-8a0d-4a9e-9d3c-2f7b5e1a0c44",
            "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
            "my.conn_1~x",
        ] {
            assert_eq!(ConnectionId::parse(ok).unwrap().as_str(), ok);
        }
        assert!(ConnectionId::parse(&"a".repeat(MAX_CONNECTION_ID_LEN)).is_ok());
    }

    #[test]
    fn refuses_anything_that_could_leave_its_segment() {
        for bad in [
            "",
            ".",
            "..",
            "../../stats",
            "x/../../admin?a=b",
            "a?b=c",
            "a#b",
            "a%2Fb",
            "a b",
            "a\\b",
            "ünïcode",
        ] {
            let err = ConnectionId::parse(bad).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{bad:?}");
            assert!(err.to_string().contains("connection id"), "{err}");
        }
        assert!(ConnectionId::parse(&"a".repeat(MAX_CONNECTION_ID_LEN + 1)).is_err());
    }
}
