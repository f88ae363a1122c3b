//! What the token provider hands out and how it fails: the [`Token`] (its
//! `Authorization` value marked sensitive, never printed), the [`TokenError`]
//! whose text says why no token could be had, and the fetch counters the
//! metrics module reads ([`Stats`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::HeaderValue;
use tokio::time::Instant;

/// An access token from IMS, ready to be sent. Cheap to clone; its `Debug`
/// shows only which fetch it came from and when it expires.
#[derive(Clone)]
pub struct Token {
    /// `Bearer <access_token>`, marked sensitive so no HTTP library prints it.
    pub(super) bearer: HeaderValue,
    /// Counts the tokens this provider has obtained: the first is 1. Two
    /// clones of one token share it; [`super::TokenProvider::invalidate`]
    /// compares it to know whether a rejected token is still the current one.
    pub(super) generation: u64,
    pub(super) expires_at: Instant,
}

impl Token {
    /// The `Authorization` header's value (`Bearer …`), marked sensitive.
    pub fn authorization(&self) -> &HeaderValue {
        &self.bearer
    }

    /// Which fetch this token came from (1 for the first).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When IMS said it stops being valid.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// Whether both are the same token (the same fetch).
    pub fn same_as(&self, other: &Token) -> bool {
        self.generation == other.generation
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("generation", &self.generation)
            .field(
                "expires_in",
                &self.expires_at.saturating_duration_since(Instant::now()),
            )
            .finish_non_exhaustive()
    }
}

/// Why no token could be had. The text is written for an operator and for
/// the producers' error bodies: it says why, never the secret or a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// IMS answered 400/401/403: the credentials (client id, secret, scopes)
    /// are wrong or revoked. Not retried until a cool-down passes.
    #[error(
        "the access token could not be obtained: IMS refused the credentials \
         (HTTP {status}, {error}); check ims_client_id, the client secret and ims_scopes"
    )]
    Refused {
        status: u16,
        /// IMS's `error` code (e.g. `invalid_client`) with its description if
        /// any; cut short and cleaned of the secret before it gets here.
        error: String,
    },
    /// IMS could not be reached or failed (5xx, 429, timeout, connection
    /// error), after the retries.
    #[error("the access token could not be obtained: IMS is unavailable ({0})")]
    Unavailable(String),
    /// IMS answered 2xx with something that is not a usable token.
    #[error("the access token could not be obtained: IMS's answer is unusable ({0})")]
    BadAnswer(String),
}

impl TokenError {
    /// Worth another attempt soon (IMS down or overloaded), as opposed to an
    /// answer that will be the same next time.
    pub fn is_transient(&self) -> bool {
        matches!(self, TokenError::Unavailable(_))
    }

    /// The result label this error is counted under.
    pub fn result(&self) -> FetchResult {
        match self {
            TokenError::Refused { .. } => FetchResult::Refused,
            TokenError::Unavailable(_) => FetchResult::Unavailable,
            TokenError::BadAnswer(_) => FetchResult::BadAnswer,
        }
    }
}

/// How one request to IMS ended: a closed set, fit for a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchResult {
    Ok,
    Refused,
    Unavailable,
    BadAnswer,
}

impl FetchResult {
    pub const ALL: [FetchResult; 4] = [
        FetchResult::Ok,
        FetchResult::Refused,
        FetchResult::Unavailable,
        FetchResult::BadAnswer,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchResult::Ok => "ok",
            FetchResult::Refused => "refused",
            FetchResult::Unavailable => "unavailable",
            FetchResult::BadAnswer => "bad_answer",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters for the metrics module: requests to IMS by result. Shared by the
/// provider's clones; reading never blocks the provider.
#[derive(Debug, Default)]
pub struct Stats {
    fetches: [AtomicU64; 4],
}

impl Stats {
    pub(super) fn record(&self, result: FetchResult) {
        self.fetches[result.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests to IMS that ended with `result`, since start.
    pub fn fetches(&self, result: FetchResult) -> u64 {
        self.fetches[result.index()].load(Ordering::Relaxed)
    }

    /// Requests to IMS, whatever their result.
    pub fn total_fetches(&self) -> u64 {
        FetchResult::ALL.iter().map(|r| self.fetches(*r)).sum()
    }
}

/// What one fetch from a [`super::TokenSource`] gives: the token and how long
/// IMS says it lives (already checked to be sane).
pub struct Grant {
    pub access_token: secrecy::SecretString,
    pub expires_in: Duration,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}
