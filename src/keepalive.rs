//! When a keep-alive connection is closed after its current answer: once
//! draining (so producers reconnect to another pod instead of collecting 503s
//! for the whole grace period), and past `max_connection_age` or
//! `max_connection_requests` (so pods added by an autoscaler get traffic
//! from producers that are already connected). Such an answer carries
//! `Connection: close`, which also makes hyper close the connection once it is
//! written; the producer's next request opens a new one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What ends a listener's connections after an answer.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Cancelled when shutdown begins; `None` for a listener that keeps its
    /// connections through the drain (the admin one: probes and scrapes).
    pub draining: Option<CancellationToken>,
    /// A connection older than this is closed after its next answer.
    pub max_age: Option<Duration>,
    /// A connection is closed after this many answers.
    pub max_requests: Option<u64>,
}

impl Policy {
    /// A policy from the configuration's keys, where 0 means "no limit".
    pub fn new(draining: Option<CancellationToken>, max_age: Duration, max_requests: u64) -> Self {
        Policy {
            draining,
            max_age: (!max_age.is_zero()).then_some(max_age),
            max_requests: (max_requests != 0).then_some(max_requests),
        }
    }

    /// Whether an answer on a connection of `age` that is its `answered`th
    /// (counting this one) is the last.
    pub fn is_last(&self, age: Duration, answered: u64) -> bool {
        self.draining.as_ref().is_some_and(|d| d.is_cancelled())
            || self.max_age.is_some_and(|max| age >= max)
            || self.max_requests.is_some_and(|max| answered >= max)
    }

    /// The state of one new connection.
    pub fn connection(&self) -> Connection {
        Connection {
            policy: self.clone(),
            opened: Instant::now(),
            answered: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// One connection's age and answer count. Clones share the count.
#[derive(Clone, Debug)]
pub struct Connection {
    policy: Policy,
    opened: Instant,
    answered: Arc<AtomicU64>,
}

impl Connection {
    /// Counts `answer` and marks it `Connection: close` when it is the last.
    pub fn answer(&self, mut answer: Response) -> Response {
        let answered = self.answered.fetch_add(1, Ordering::Relaxed) + 1;
        if self.policy.is_last(self.opened.elapsed(), answered) {
            answer
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closes(answer: &Response) -> bool {
        answer.headers().get(header::CONNECTION) == Some(&HeaderValue::from_static("close"))
    }

    #[test]
    fn zero_means_no_limit() {
        let policy = Policy::new(None, Duration::ZERO, 0);
        assert!(!policy.is_last(Duration::from_secs(86_400 * 365), u64::MAX));
    }

    #[test]
    fn age_and_count_each_end_a_connection() {
        let policy = Policy::new(None, Duration::from_secs(300), 100);
        assert!(!policy.is_last(Duration::from_secs(299), 99));
        assert!(policy.is_last(Duration::from_secs(300), 1));
        assert!(policy.is_last(Duration::from_secs(1), 100));
    }

    #[test]
    fn draining_ends_every_connection_of_its_listener() {
        let draining = CancellationToken::new();
        let policy = Policy::new(Some(draining.clone()), Duration::ZERO, 0);
        assert!(!policy.is_last(Duration::ZERO, 1));
        draining.cancel();
        assert!(policy.is_last(Duration::ZERO, 1));
        assert!(!Policy::new(None, Duration::ZERO, 0).is_last(Duration::ZERO, 1));
    }

    #[test]
    fn the_last_answer_is_marked_and_counted_per_connection() {
        let policy = Policy::new(None, Duration::ZERO, 2);
        let (first, second) = (policy.connection(), policy.connection());
        assert!(!closes(&first.answer(Response::default())));
        assert!(!closes(&second.answer(Response::default())));
        assert!(closes(&first.answer(Response::default())));
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_connection_gets_close_on_its_next_answer() {
        let connection = Policy::new(None, Duration::from_secs(300), 0).connection();
        assert!(!closes(&connection.answer(Response::default())));
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(closes(&connection.answer(Response::default())));
    }
}
