//! The token provider: one cached token for everyone, fetched one request at
//! a time, refreshed ahead of expiry by a background task, replaced once
//! when the upstream rejects it, and failures remembered for a while so
//! neither a crowd of producers nor a refusing IMS causes a storm.
//!
//! All fetching happens while holding `fetching` (an async mutex): whoever
//! waited for it first looks whether a fetch finished meanwhile and, if so,
//! takes that result instead of asking again. The cached state sits behind a
//! short synchronous lock that is never held across an `.await`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::ExposeSecret;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fetch::{TokenSource, MAX_LIFETIME};
use super::timing::{failure_cooldown, Timing, REFRESH_AT, USABLE_MARGIN_MAX, USABLE_MARGIN_SHARE};
use super::token::{FetchResult, Stats, Token, TokenError};
use super::ManagedHeaders;

/// Hands out the current IMS token. Cheap to clone; every clone shares the
/// cache, the single fetch in progress and the counters.
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<Inner>,
}

struct Inner {
    source: Box<dyn TokenSource>,
    headers: ManagedHeaders,
    timing: Timing,
    state: Mutex<State>,
    /// Held by whoever is fetching: one request to IMS at a time.
    fetching: Arc<tokio::sync::Mutex<()>>,
    stats: Stats,
}

#[derive(Default)]
struct State {
    current: Option<Current>,
    /// Tokens obtained so far (the last one's generation).
    generation: u64,
    /// Fetches finished so far, successful or not.
    completed: u64,
    /// The last fetch's failure, while no fetch has succeeded since.
    failure: Option<Failure>,
    /// When a refresh forced by an upstream rejection last finished.
    last_forced: Option<Instant>,
}

struct Current {
    token: Token,
    refresh_at: Instant,
    usable_until: Instant,
    /// The upstream answered 401 to it.
    rejected: bool,
}

struct Failure {
    error: TokenError,
    /// No new fetch before this.
    until: Instant,
    /// Failed fetches in a row.
    streak: u32,
}

enum Look {
    Ready(Token),
    Failed(TokenError),
    Fetch,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("TokenProvider")
            .field("generation", &state.generation)
            .field("has_token", &state.current.is_some())
            .field("failure", &state.failure.as_ref().map(|f| &f.error))
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    /// A provider fetching from `source`; nothing is fetched until
    /// [`TokenProvider::token`] is called or [`TokenProvider::run`] runs.
    pub fn new(source: impl TokenSource, headers: ManagedHeaders, timing: Timing) -> Self {
        TokenProvider {
            inner: Arc::new(Inner {
                source: Box::new(source),
                headers,
                timing,
                state: Mutex::new(State::default()),
                fetching: Arc::new(tokio::sync::Mutex::new(())),
                stats: Stats::default(),
            }),
        }
    }

    /// A usable token: the cached one, or one fetched now (one fetch shared
    /// by every caller waiting). After [`TokenProvider::invalidate`], getting
    /// the same token back (see [`Token::same_as`]) means no refresh is
    /// allowed yet: the upstream's 401 stands.
    pub async fn token(&self) -> Result<Token, TokenError> {
        let seen = {
            let state = self.state();
            match self.look(&state, Instant::now()) {
                Look::Ready(token) => return Ok(token),
                Look::Failed(error) => return Err(error),
                Look::Fetch => state.completed,
            }
        };
        let turn = self.inner.fetching.clone().lock_owned().await;
        let finished_meanwhile = self.state().completed != seen;
        if !finished_meanwhile {
            // In a task of its own: a caller that gives up (its producer's
            // deadline) does not cancel the fetch the others are waiting for.
            let provider = self.clone();
            let fetch = tokio::spawn(async move {
                let _turn = turn;
                provider.fetch_now().await;
            });
            if let Err(error) = fetch.await {
                tracing::error!(%error, "the IMS token fetch ended abnormally");
            }
        }
        let state = self.state();
        match self.look(&state, Instant::now()) {
            Look::Ready(token) => Ok(token),
            Look::Failed(error) => Err(error),
            // The fetch just done (ours or the one we waited for) is the answer.
            Look::Fetch => Err(match &state.failure {
                Some(failure) => failure.error.clone(),
                None => TokenError::Unavailable("no token yet".into()),
            }),
        }
    }

    /// The upstream rejected `token` (401). The first call for the current
    /// token marks it, and the next [`TokenProvider::token`] fetches a new one
    /// (once for everyone, at most once per `reject_cooldown`); a call for a
    /// token already replaced or already marked does nothing. Returns whether
    /// this call marked it.
    pub fn invalidate(&self, token: &Token) -> bool {
        let mut state = self.state();
        match &mut state.current {
            Some(current) if current.token.same_as(token) && !current.rejected => {
                current.rejected = true;
                tracing::info!(
                    generation = token.generation,
                    "the upstream rejected the IMS token"
                );
                true
            }
            _ => false,
        }
    }

    /// The headers for a managed request: `Authorization: Bearer …` (marked
    /// sensitive), `x-gw-ims-org-id` and `x-api-key`.
    pub fn headers(&self, token: &Token) -> HeaderMap {
        self.inner.headers.for_token(token)
    }

    /// Whether a usable token is at hand (for `/readyz`).
    pub fn has_token(&self) -> bool {
        let now = Instant::now();
        self.state()
            .current
            .as_ref()
            .is_some_and(|c| now < c.usable_until)
    }

    /// Seconds until the current token expires (0 once it has); `None`
    /// before the first token.
    pub fn seconds_until_expiry(&self) -> Option<f64> {
        let now = Instant::now();
        self.state().current.as_ref().map(|c| {
            c.token
                .expires_at
                .saturating_duration_since(now)
                .as_secs_f64()
        })
    }

    /// The last fetch's failure while none has succeeded since (for an alert).
    pub fn last_failure(&self) -> Option<TokenError> {
        self.state().failure.as_ref().map(|f| f.error.clone())
    }

    /// Requests to IMS by result.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Keeps a token at hand until `stop`: fetches one at once, refreshes it
    /// at 80 % of its lifetime, and after a failure tries again when the
    /// cool-down has passed, for as long as it runs.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let wake = self.next_scheduled();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
            let work = async {
                let _turn = self.inner.fetching.lock().await;
                // A caller may have fetched while this waited for its turn.
                if self.next_scheduled() <= Instant::now() {
                    self.fetch_now().await;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = work => {}
            }
        }
    }

    /// Spawns [`TokenProvider::run`] on the current runtime.
    pub fn spawn_refresher(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run(stop))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement; a panic elsewhere
        // while it was held leaves nothing half-done, so a poisoned lock is used as is.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn look(&self, state: &State, now: Instant) -> Look {
        let forced_allowed = state
            .last_forced
            .is_none_or(|at| now >= at + self.inner.timing.reject_cooldown);
        if let Some(current) = &state.current {
            if now < current.usable_until && (!current.rejected || !forced_allowed) {
                return Look::Ready(current.token.clone());
            }
        }
        match &state.failure {
            Some(failure) if now < failure.until => Look::Failed(failure.error.clone()),
            _ => Look::Fetch,
        }
    }

    /// When the background task should next fetch.
    fn next_scheduled(&self) -> Instant {
        let state = self.state();
        let due = state
            .current
            .as_ref()
            .map_or_else(Instant::now, |c| c.refresh_at);
        match &state.failure {
            Some(failure) => due.max(failure.until),
            None => due,
        }
    }

    /// One fetch (with its retries) and its result stored. Called only
    /// while holding `fetching`.
    async fn fetch_now(&self) {
        let forced = self.state().current.as_ref().is_some_and(|c| c.rejected);
        let timing = &self.inner.timing;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(timing.retry_min)
            .with_max_delay(timing.retry_max)
            .with_max_times(timing.retries)
            .with_jitter();
        let result = (|| self.attempt())
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(TokenError::is_transient)
            .notify(|error, wait| {
                tracing::debug!(%error, ?wait, "IMS token request failed; retrying");
            })
            .await;
        let now = Instant::now();
        let mut state = self.state();
        state.completed += 1;
        if forced {
            // Counted from the end: those who saw the rejection while this
            // fetch ran still wait for it instead of getting the old token.
            state.last_forced = Some(now);
        }
        match result {
            Ok((bearer, lifetime, sent_at)) => {
                state.generation += 1;
                let token = Token {
                    bearer,
                    generation: state.generation,
                    expires_at: sent_at + lifetime,
                };
                let margin = lifetime.mul_f64(USABLE_MARGIN_SHARE).min(USABLE_MARGIN_MAX);
                tracing::info!(
                    generation = state.generation,
                    expires_in = %humantime::format_duration(lifetime),
                    "IMS token obtained"
                );
                state.current = Some(Current {
                    token,
                    refresh_at: sent_at + lifetime.mul_f64(REFRESH_AT),
                    usable_until: sent_at + (lifetime - margin),
                    rejected: false,
                });
                state.failure = None;
            }
            Err(error) => {
                let streak = state.failure.as_ref().map_or(1, |f| f.streak + 1);
                let cooldown = match error {
                    TokenError::Refused { .. } => timing.refusal_cooldown,
                    _ => failure_cooldown(timing, streak),
                };
                tracing::warn!(%error, streak, retry_in = ?cooldown, "IMS token fetch failed");
                state.failure = Some(Failure {
                    error,
                    until: now + cooldown,
                    streak,
                });
            }
        }
    }

    /// One request to IMS, bounded by `attempt_timeout`, counted by result.
    /// `Ok` holds the `Authorization` value, the lifetime, and when the
    /// request left: the lifetime is counted from then, not from the answer.
    async fn attempt(&self) -> Result<(HeaderValue, Duration, Instant), TokenError> {
        let timeout = self.inner.timing.attempt_timeout;
        let sent_at = Instant::now();
        let result = match tokio::time::timeout(timeout, self.inner.source.fetch()).await {
            Ok(result) => result,
            Err(_) => Err(TokenError::Unavailable(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))),
        };
        let result = result.and_then(|grant| {
            // A source other than `HttpSource` may not have checked the lifetime.
            if grant.expires_in.is_zero() || grant.expires_in > MAX_LIFETIME {
                return Err(TokenError::BadAnswer("expires_in is out of range".into()));
            }
            let mut bearer =
                HeaderValue::from_str(&format!("Bearer {}", grant.access_token.expose_secret()))
                    .map_err(|_| {
                        TokenError::BadAnswer("the access_token is not a header value".into())
                    })?;
            bearer.set_sensitive(true);
            Ok((bearer, grant.expires_in, sent_at))
        });
        self.inner.stats.record(match &result {
            Ok(_) => FetchResult::Ok,
            Err(error) => error.result(),
        });
        result
    }
}
