//! One HTTP exchange with the upstream, and what came of it.
//!
//! The three outcomes are kept apart because they mean different things for a
//! message: a request that was **not sent** cannot have arrived (resend it); one
//! **sent without an answer** may have arrived (resend only on a connection
//! error; a passed deadline is a 504 "may still be delivered");
//! an **answered** one surely reached the upstream, so even an unreadable body
//! never leads to a blind resend.
//!
//! A managed request (the producer sent no `Authorization` and inletd holds
//! IMS credentials, see [`Upstream::exchange_for`]) takes its token at send
//! time: without one it is **not sent** at all and its callers learn why
//! ([`Exchange::NoToken`]). A whole-request 401 to it (nothing was accepted)
//! marks the token rejected; a different token from the provider is sent
//! once more, the same one back means no refresh is allowed yet and the 401
//! stands, so a token that keeps being refused causes no storm.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::Upstream;
use crate::ims::{Token, TokenError, TokenProvider};

/// Why a sent request got no status line back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silence {
    /// The callers' deadline passed while waiting.
    DeadlinePassed,
    /// The connection failed after the request was written (reset, closed).
    ConnectionLost,
}

/// The body of an answer whose status line arrived.
pub type AnswerBody = Result<Bytes, String>;

/// What came of one HTTP exchange with the upstream.
#[derive(Debug)]
pub enum Exchange {
    /// The request never left inletd (no slot before the deadline, connect
    /// refused or timed out, DNS, TLS handshake): it cannot have arrived.
    NotSent { reason: String },
    /// The request was sent but no status line came back.
    Unanswered { why: Silence, reason: String },
    /// A status line came back. `body` is `Err` when it could not be read
    /// whole (cut, timed out, larger than the limit).
    Answered {
        status: u16,
        headers: reqwest::header::HeaderMap,
        body: AnswerBody,
    },
    /// A managed request never sent because no IMS token could be had:
    /// `status` (401/403 for refused credentials, else 503) and a message
    /// saying why, fit for the producers (never a secret or a token).
    NoToken { status: u16, message: String },
}

/// When a producer told "no token" (503: IMS unavailable) may try again: the
/// token provider retries IMS on its own with back-off, and a retry sooner
/// than a few seconds would get the same answer. Refused credentials (401,
/// 403) need a person, so no hint is given for them.
pub fn no_token_retry_after(status: u16) -> Option<Duration> {
    (status == 503).then_some(Duration::from_secs(5))
}

/// The producers' status when no token could be had.
fn no_token(error: &TokenError) -> Exchange {
    let status = match error {
        TokenError::Refused { status: 403, .. } => 403,
        TokenError::Refused { .. } => 401,
        TokenError::Unavailable(_) | TokenError::BadAnswer(_) => 503,
    };
    Exchange::NoToken {
        status,
        message: error.to_string(),
    }
}

/// The most an upstream answer body may take: a 207 for `max_batch_messages`
/// tiny messages carries one entry each (about 100 bytes, more with a
/// failure text), plus room for a verbose error page.
pub fn body_limit(max_batch_messages: usize) -> usize {
    const BASE: usize = 4 << 20;
    const PER_ENTRY: usize = 1 << 10;
    BASE.saturating_add(max_batch_messages.saturating_mul(PER_ENTRY))
}

impl Upstream {
    /// Sends one request under the in-flight limit, recording its metrics. The
    /// wait for a slot counts against `deadline`; nothing is sent once it passed.
    /// The request is built only once a slot is held, so batches waiting for a
    /// slot do not also hold a copy of their body.
    pub(super) async fn exchange(
        &self,
        request: impl FnOnce() -> reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Exchange {
        let permit = tokio::time::timeout_at(deadline, self.in_flight.acquire()).await;
        let Ok(Ok(_permit)) = permit else {
            return Exchange::NotSent {
                reason: "no upstream slot became free before the deadline".into(),
            };
        };
        if Instant::now() >= deadline {
            return Exchange::NotSent {
                reason: "the deadline passed while waiting for an upstream slot".into(),
            };
        }
        let request = request();
        self.metrics.in_flight.increment(1.0);
        let started = Instant::now();
        let exchange = self.send(request, deadline).await;
        self.metrics.in_flight.decrement(1.0);
        self.metrics.upstream_latency(started.elapsed());
        match &exchange {
            Exchange::Answered { status, .. } => self.metrics.upstream_request(*status),
            Exchange::Unanswered {
                why: Silence::DeadlinePassed,
                ..
            } => self.metrics.upstream_failure("timeout"),
            Exchange::NotSent { .. } | Exchange::Unanswered { .. } => {
                self.metrics.upstream_failure("error")
            }
            // Decided before a request exists; `send` never gives it.
            Exchange::NoToken { .. } => {}
        }
        exchange
    }

    /// [`Upstream::exchange`], with inletd's IMS token added when `managed`
    /// and inletd holds credentials (else exactly `exchange`). `request` may
    /// be built twice: once more after a 401, with a fresh token.
    pub(super) async fn exchange_for(
        &self,
        managed: bool,
        request: impl Fn() -> reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Exchange {
        let Some(ims) = self.ims.as_ref().filter(|_| managed) else {
            return self.exchange(request, deadline).await;
        };
        let sent = match token_before(ims, deadline).await {
            Ok(token) => token,
            Err(exchange) => return exchange,
        };
        // `headers` replaces any org id or API key of the producer's own.
        let exchange = self
            .exchange(|| request().headers(ims.headers(&sent)), deadline)
            .await;
        if !matches!(exchange, Exchange::Answered { status: 401, .. }) {
            return exchange;
        }
        ims.invalidate(&sent);
        match token_before(ims, deadline).await {
            Ok(fresh) if !fresh.same_as(&sent) => {
                tracing::info!(
                    generation = fresh.generation(),
                    "upstream refused the IMS token (401); sending once more with a new one"
                );
                self.exchange(|| request().headers(ims.headers(&fresh)), deadline)
                    .await
            }
            // The same token: a refresh for a rejection is not allowed yet.
            Ok(_) => exchange,
            Err(no_token) => no_token,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, deadline: Instant) -> Exchange {
        let response = match tokio::time::timeout_at(deadline, request.send()).await {
            Ok(Ok(response)) => response,
            // Connect errors (refused, connect timeout, DNS, TLS) come before
            // anything was written.
            Ok(Err(e)) if e.is_connect() => {
                return Exchange::NotSent {
                    reason: error_chain(&e.without_url()),
                }
            }
            Ok(Err(e)) => {
                return Exchange::Unanswered {
                    why: Silence::ConnectionLost,
                    // Without the URL: it may carry credentials, and the key is logged anyway.
                    reason: error_chain(&e.without_url()),
                };
            }
            Err(_) => {
                return Exchange::Unanswered {
                    why: Silence::DeadlinePassed,
                    reason: "no answer before the callers' deadline".into(),
                }
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = match tokio::time::timeout_at(deadline, read_limited(response, self.body_limit))
            .await
        {
            Ok(body) => body,
            Err(_) => Err("its body did not arrive before the callers' deadline".into()),
        };
        Exchange::Answered {
            status,
            headers,
            body,
        }
    }
}

/// The provider's token, or the exchange that ends the request without one;
/// the wait for a fetch counts against `deadline`.
async fn token_before(ims: &TokenProvider, deadline: Instant) -> Result<Token, Exchange> {
    match tokio::time::timeout_at(deadline, ims.token()).await {
        Ok(Ok(token)) => Ok(token),
        Ok(Err(error)) => {
            tracing::debug!(%error, "no IMS token for a managed request");
            Err(no_token(&error))
        }
        Err(_) => Err(Exchange::NotSent {
            reason: "no IMS token came before the callers' deadline".into(),
        }),
    }
}

/// Reads a body of at most `limit` bytes; a larger or cut body is an error.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> AnswerBody {
    let too_large = || format!("its body is larger than {limit} bytes");
    if response
        .content_length()
        .is_some_and(|len| len > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len().saturating_add(chunk.len()) > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => {
                return Err(format!(
                    "its body could not be read ({})",
                    error_chain(&e.without_url())
                ))
            }
        }
    }
}

/// The error and its causes on one line (reqwest hides the useful part in `source`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_token_is_401_or_403_for_refused_credentials_else_503_saying_why() {
        let refused = |status| TokenError::Refused {
            status,
            error: "invalid_client".into(),
        };
        for (error, expected) in [
            (refused(400), 401),
            (refused(401), 401),
            (refused(403), 403),
            (TokenError::Unavailable("HTTP 503".into()), 503),
            (
                TokenError::BadAnswer("expires_in is out of range".into()),
                503,
            ),
        ] {
            match no_token(&error) {
                Exchange::NoToken { status, message } => {
                    assert_eq!(status, expected, "{error}");
                    assert!(message.contains("could not be obtained"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_body_limit_grows_with_the_batch_and_never_overflows() {
        assert!(body_limit(1) >= 4 << 20);
        assert!(body_limit(10_000) > body_limit(500));
        assert_eq!(body_limit(usize::MAX), usize::MAX);
    }
}
