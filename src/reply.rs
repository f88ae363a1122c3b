//! The per-message outcome and the reply handle that carries it back to the
//! waiting producer.
//!
//! A [`Reply`] travels with its message through the batcher and the upstream.
//! It holds the message's share of the memory bound and its place in the drain
//! tracker, so both are released exactly when the message is answered. If a
//! `Reply` is dropped unanswered (a bug, a panic, a drain deadline), its `Drop`
//! answers 503 "not confirmed" — a caller is never left hanging and never told
//! "delivered" by accident.
//!
//! Fire-and-forget messages have no waiting producer: a reply held in memory
//! counts its outcome (and logs a failure); a spooled reply acks its record
//! once delivered, or dead-letters then acks it once failed for good. A
//! spooled reply dropped unanswered (shutdown, abort) touches nothing on
//! disk: the record is replayed at the next start.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::metrics::Metrics;
use crate::spool::{Record, RecordId, Spool};

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

    /// A spooled message still undelivered at the end of `spool_max_age`.
    pub fn expired() -> Outcome {
        Outcome::failed(
            504,
            "not delivered within spool_max_age: the upstream kept failing or could not be reached",
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

/// Who learns a message's outcome.
enum Sink {
    /// A producer waiting for its answer.
    Waiting(oneshot::Sender<Outcome>),
    /// Fire-and-forget held in memory: the outcome is counted, a failure logged.
    Memory { connection_id: Arc<str> },
    /// Fire-and-forget on disk: delivered → ack; failed for good → dead
    /// letter, then ack. Dropped unanswered → neither (it is replayed at the next start).
    /// Boxed: every message in memory carries a `Reply`, most of them not spooled.
    Spooled(Box<Spooled>),
}

/// A spooled message's place on disk and what its dead letter would say.
pub struct Spooled {
    pub id: RecordId,
    pub spool: Spool,
    /// The record as spooled, without its credentials (a dead letter never has them).
    pub record: Record,
    /// Its share of the part of the bound spooled messages may hold, if it
    /// took one (released when the outcome is known).
    pub quota: Option<OwnedSemaphorePermit>,
}

/// Every message in memory carries one, so its size is part of the real cost
/// `ingest::MESSAGE_OVERHEAD` charges per message (measured with it at 96
/// bytes); a larger `Reply` would let the tiniest messages pass the bound.
const _: () = assert!(std::mem::size_of::<Reply>() <= 96);

/// The reply side of one accepted message.
pub struct Reply {
    sink: Option<Sink>,
    accepted: Instant,
    deadline: Instant,
    bytes: usize,
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
    drain: Option<TaskTrackerToken>,
}

/// What every kind of reply holds: its clock, its size and its share of the bounds.
pub struct Held {
    pub accepted: Instant,
    /// When the outcome is due: the producer's `request_timeout`, or for a
    /// spooled message the end of `spool_max_age`.
    pub deadline: Instant,
    pub bytes: usize,
    pub metrics: Arc<Metrics>,
    /// The message's share of `max_buffered_bytes`.
    pub permit: OwnedSemaphorePermit,
    /// Keeps shutdown waiting for the message.
    pub drain: TaskTrackerToken,
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
        let held = Held {
            accepted,
            deadline,
            bytes,
            metrics,
            permit,
            drain,
        };
        (Reply::with_sink(held, Sink::Waiting(tx)), rx)
    }

    /// A fire-and-forget message held in memory only.
    pub fn in_memory(held: Held, connection_id: Arc<str>) -> Reply {
        Reply::with_sink(held, Sink::Memory { connection_id })
    }

    /// A fire-and-forget message already durable in the spool.
    pub fn spooled(held: Held, spooled: Spooled) -> Reply {
        Reply::with_sink(held, Sink::Spooled(Box::new(spooled)))
    }

    fn with_sink(held: Held, sink: Sink) -> Reply {
        let metrics = held.metrics;
        metrics.messages_received.increment(1);
        metrics.buffered_messages.increment(1.0);
        metrics.buffered_bytes.increment(held.bytes as f64);
        Reply {
            sink: Some(sink),
            accepted: held.accepted,
            deadline: held.deadline,
            bytes: held.bytes,
            metrics,
            _permit: held.permit,
            drain: Some(held.drain),
        }
    }

    /// When the outcome is due (the producer stops waiting, or a spooled
    /// message is too old to deliver).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// A spooled message: delivered at least once, so it may be resent after
    /// a send without a usable answer, and retried until its deadline rather
    /// than `max_retries` times.
    pub fn is_spooled(&self) -> bool {
        matches!(self.sink, Some(Sink::Spooled(_)))
    }

    /// Answers the producer (if it still waits) and records the result.
    pub fn send(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    /// Records the result of a message answered outside the batch path
    /// (forwarded one-to-one), releasing its share of the bound.
    pub fn complete(mut self, status: u16) {
        if self.sink.take().is_some() {
            self.record(status);
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        let Some(sink) = self.sink.take() else { return };
        self.record(outcome.status());
        let delivered = matches!(outcome, Outcome::Delivered(_));
        match sink {
            // The producer may have gone (timeout, disconnect); its message's fate is still counted.
            Sink::Waiting(tx) => {
                let _ = tx.send(outcome);
            }
            Sink::Memory { connection_id } => {
                self.metrics.spool.result(false, delivered);
                if let Outcome::Failed { status, .. } = outcome {
                    tracing::warn!(%connection_id, status, "a fire-and-forget message was not delivered");
                }
            }
            Sink::Spooled(spooled) => {
                self.metrics.spool.result(true, delivered);
                // The ack (and dead letter) are written after the answer;
                // shutdown waits for them (the drain token goes with them).
                let drain = self.drain.take();
                if delivered {
                    // Not awaited here: a delivered batch's acks go to the
                    // spool together (one ledger append), no task per message.
                    spooled.spool.ack_soon(spooled.id, Box::new(drain));
                } else {
                    tokio::spawn(settle(*spooled, outcome, drain));
                }
            }
        }
    }

    fn record(&self, status: u16) {
        self.metrics.message_result(status);
        self.metrics
            .message_wait
            .record(self.accepted.elapsed().as_secs_f64());
        self.release_gauges();
    }

    fn release_gauges(&self) {
        self.metrics.buffered_messages.decrement(1.0);
        self.metrics.buffered_bytes.decrement(self.bytes as f64);
    }
}

/// Makes a spooled message's final outcome durable: a failure is
/// dead-lettered first, and only once that is on disk is the record acked (a
/// failed dead letter leaves it spooled, to be tried again after a restart).
async fn settle(spooled: Spooled, outcome: Outcome, _drain: Option<TaskTrackerToken>) {
    let Spooled {
        id, spool, record, ..
    } = spooled;
    if let Outcome::Failed {
        status, message, ..
    } = &outcome
    {
        let connection_id = &record.connection_id;
        tracing::warn!(%connection_id, status, "a spooled message failed for good; written to the dead-letter file");
        if let Err(e) = spool.dead_letter(&record, *status, message).await {
            tracing::error!(%connection_id, error = %e, "cannot write a dead letter; the message stays spooled and is tried again after a restart");
            return;
        }
    }
    if let Err(e) = spool.ack(id).await {
        // Only a duplicate at the next start: the message was already settled.
        tracing::warn!(error = %e, "cannot record a spooled message as settled; it may be delivered again after a restart");
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        match self.sink.take() {
            None => {}
            // Neither acked nor dead-lettered: it stays on disk for the next start.
            Some(Sink::Spooled(_)) => self.release_gauges(),
            Some(sink) => {
                self.sink = Some(sink);
                tracing::warn!("a message was dropped without an outcome; answering 503");
                // 503 rather than 502: inletd itself, not the upstream, lost track.
                self.finish(Outcome::failed(
                    503,
                    format!("inletd stopped tracking this message before the upstream confirmed it; {NOT_CONFIRMED}"),
                ));
            }
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("bytes", &self.bytes)
            .field("answered", &self.sink.is_none())
            .field("spooled", &self.is_spooled())
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

#[cfg(test)]
mod sink_tests;
