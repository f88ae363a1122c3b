//! The connection id a producer names in its path: checked at the door to be
//! exactly one safe path segment, so no producer input can reach another
//! upstream path than `/collection/batch/{id}` or `/collection/{id}`
//! (the segment is percent-decoded first, so `..%2F..%2Fstats` is checked as `../../stats`).

use percent_encoding::percent_decode_str;

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

impl ConnectionId {
    /// Decodes and checks the path's raw `{connection_id}` segment as axum's
    /// `Path` would (percent-decoded, UTF-8); a bad one is refused (400) and
    /// logged as far as it can be printed safely. The caller answers the
    /// error with [`Ingest::refuse`].
    pub(super) fn from_segment(raw: &str, ingest: &Ingest) -> Result<Self, Error> {
        let Ok(id) = percent_decode_str(raw).decode_utf8() else {
            return Err(Error::BadConnectionId("is not valid UTF-8"));
        };
        match ConnectionId::check(&id) {
            Ok(()) => Ok(ConnectionId(id.into_owned())),
            Err(e) => {
                // A producer's id may hold anything, newlines included.
                ingest
                    .outcomes
                    .error(&super::outcome_log::printable(&id), &e);
                Err(e)
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

    #[test]
    fn the_raw_segment_is_percent_decoded_before_the_check() {
        let decode = |raw: &str| {
            percent_decode_str(raw)
                .decode_utf8()
                .map(|id| ConnectionId::check(&id).map(|()| id.into_owned()))
        };
        assert_eq!(decode("c%31").unwrap().unwrap(), "c1");
        assert!(decode("..%2F..%2Fstats").unwrap().is_err());
        assert!(decode("%2E%2E").unwrap().is_err());
        assert!(decode("a%FFb").is_err(), "not UTF-8 once decoded");
    }
}
