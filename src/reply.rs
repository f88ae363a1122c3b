//! The per-message outcome and the reply handle that carries it back to the
//! waiting producer.
//!
//! A [`Reply`] travels with its message through the batcher and the upstream.
//! It holds the message's share of the memory bound and its place in the drain
//! tracker, so both are released exactly when the message is answered. If a
//! `Reply` is dropped unanswered (a bug, a panic, a drain deadline), its `Drop`
//! answers 503 "not confirmed" — a caller is never left hanging and never told
//! "delivered" by accident.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::metrics::Metrics;

/// What the upstream's batch answer says of the whole batch; shared by its messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    pub inlet_id: Option<String>,
    pub batch_id: Option<String>,
    pub received_time_ms: Option<serde_json::Number>,
}

/// A message the upstream confirmed: its own `xactionId` and its batch's receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub xaction_id: String,
    pub receipt: Arc<Receipt>,
}

/// What became of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream's own entry for this message carried an `xactionId`.
    Delivered(Delivery),
    /// Not delivered (or not confirmed): the status the producer gets and why,
    /// and when it may try again where that is known (a final 429).
    Failed {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
}

/// Said of a message whose request reached the upstream without a usable answer.
pub const NOT_CONFIRMED: &str = "not confirmed, the message may or may not have been delivered";

/// Said of a message whose callers' deadline passed while it was on its way.
pub const MAY_STILL_ARRIVE: &str = "the message may still be delivered";

impl Outcome {
    pub fn failed(status: u16, message: impl Into<String>) -> Outcome {
        Outcome::Failed {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The request reached the upstream but its answer for this message is
    /// unknown: 502, and never a resend.
    pub fn not_confirmed(reason: impl std::fmt::Display) -> Outcome {
        Outcome::failed(502, format!("{reason}; {NOT_CONFIRMED}"))
    }

    /// No confirmation before the callers' deadline: 504.
    pub fn timed_out() -> Outcome {
        Outcome::failed(
            504,
            format!("no confirmation from the upstream within request_timeout; {MAY_STILL_ARRIVE}"),
        )
    }

    /// The same failure, with a hint of when to try again.
    pub fn with_retry_after(self, after: Option<Duration>) -> Outcome {
        match self {
            Outcome::Failed {
                status, message, ..
            } => Outcome::Failed {
                status,
                message,
                retry_after: after,
            },
            delivered => delivered,
        }
    }

    /// The HTTP status a single-message producer gets for this outcome.
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Delivered(_) => 200,
            Outcome::Failed { status, .. } => *status,
        }
    }
}

/// The reply side of one accepted message.
pub struct Reply {
    tx: Option<oneshot::Sender<Outcome>>,
    accepted: Instant,
    deadline: Instant,
    bytes: usize,
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
    _drain: TaskTrackerToken,
}

impl Reply {
    /// Creates the pair for one accepted message. `permit` is the message's
    /// share of `max_buffered_bytes`; `drain` keeps shutdown waiting for it.
    pub fn new(
        accepted: Instant,
        deadline: Instant,
        bytes: usize,
        metrics: Arc<Metrics>,
        permit: OwnedSemaphorePermit,
        drain: TaskTrackerToken,
    ) -> (Reply, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        metrics.messages_received.increment(1);
        metrics.buffered_messages.increment(1.0);
        metrics.buffered_bytes.increment(bytes as f64);
        let reply = Reply {
            tx: Some(tx),
            accepted,
            deadline,
            bytes,
            metrics,
            _permit: permit,
            _drain: drain,
        };
        (reply, rx)
    }

    /// When the producer stops waiting (`request_timeout` after acceptance).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Answers the producer (if it still waits) and records the result.
    pub fn send(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    /// Records the result of a message answered outside the batch path
    /// (forwarded one-to-one), releasing its share of the bound.
    pub fn complete(mut self, status: u16) {
        if self.tx.take().is_some() {
            self.record(status);
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        let Some(tx) = self.tx.take() else { return };
        self.record(outcome.status());
        // The producer may have gone (timeout, disconnect); its message's fate is still counted.
        let _ = tx.send(outcome);
    }

    fn record(&self, status: u16) {
        self.metrics.message_result(status);
        self.metrics
            .message_wait
            .record(self.accepted.elapsed().as_secs_f64());
        self.metrics.buffered_messages.decrement(1.0);
        self.metrics.buffered_bytes.decrement(self.bytes as f64);
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if self.tx.is_some() {
            tracing::warn!("a message was dropped without an outcome; answering 503");
            // 503 rather than 502: inletd itself, not the upstream, lost track.
            self.finish(Outcome::failed(
                503,
                format!("inletd stopped tracking this message before the upstream confirmed it; {NOT_CONFIRMED}"),
            ));
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("bytes", &self.bytes)
            .field("answered", &self.tx.is_none())
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::Semaphore;
    use tokio_util::task::TaskTracker;

    /// A reply with its own permit and tracker, for unit tests of later stages.
    pub(crate) fn test_reply(metrics: &Arc<Metrics>) -> (Reply, oneshot::Receiver<Outcome>) {
        let permits = Arc::new(Semaphore::new(1 << 20));
        let permit = permits.try_acquire_many_owned(10).expect("permits");
        let now = Instant::now();
        Reply::new(
            now,
            now + Duration::from_secs(10),
            10,
            metrics.clone(),
            permit,
            TaskTracker::new().token(),
        )
    }

    #[tokio::test]
    async fn dropped_reply_answers_not_delivered() {
        let metrics = Metrics::new(1 << 20);
        let (reply, rx) = test_reply(&metrics);
        drop(reply);
        match rx.await.expect("an answer arrives") {
            Outcome::Failed {
                status, message, ..
            } => {
                assert_eq!(status, 503);
                assert!(message.contains("may or may not"), "{message}");
            }
            other => panic!("a dropped reply must never claim delivery: {other:?}"),
        }
        assert!(metrics
            .render()
            .contains(r#"inletd_message_results_total{status="503"} 1"#));
    }

    #[tokio::test]
    async fn answered_reply_releases_its_permit_and_gauges() {
        let metrics = Metrics::new(1 << 20);
        let permits = Arc::new(Semaphore::new(100));
        let permit = permits.clone().try_acquire_many_owned(40).unwrap();
        let now = Instant::now();
        let (reply, rx) = Reply::new(
            now,
            now,
            40,
            metrics.clone(),
            permit,
            TaskTracker::new().token(),
        );
        assert_eq!(permits.available_permits(), 60);
        reply.send(Outcome::failed(400, "bad"));
        assert_eq!(rx.await.unwrap().status(), 400);
        assert_eq!(permits.available_permits(), 100);
        assert!(metrics.render().contains("inletd_buffered_bytes 0"));
    }
}
