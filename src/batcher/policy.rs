//! The flush policy: a pure decision over a buffer's size, with no I/O.
//!
//! As in Vector's batcher: the first message always fits (ingest already
//! refused any message that cannot fit alone); a message that would push the
//! request body past `max_bytes` flushes the buffer first; a buffer holding
//! `max_messages` flushes at once; the linger timer starts with the first
//! message.
//!
//! Adaptive flushing ([`Pacing`]): `linger` is a cap, not a delay. A key with
//! fewer than `eager_in_flight` batches on their way upstream has spare
//! capacity, so its buffer leaves at once (reason `idle`); once that many are
//! in flight, messages gather until one of them comes back (or linger, count,
//! bytes), so under load batches fill by themselves — natural batching, as in
//! Nagle's algorithm generalised to several outstanding batches.

use std::time::Duration;

use crate::config::ENVELOPE_OVERHEAD;
use crate::metrics::FlushReason;

/// The request body length of a batch of `count` messages totalling `payload` bytes:
/// the envelope, the messages and the commas between them.
pub fn body_len(count: usize, payload: usize) -> usize {
    ENVELOPE_OVERHEAD + payload + count.saturating_sub(1)
}

/// Size limits of one upstream request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

impl Limits {
    /// Whether a single message of `len` bytes can ever be sent.
    pub fn fits_alone(&self, len: usize) -> bool {
        body_len(1, len) <= self.max_bytes
    }

    /// Before appending `len` bytes to a buffer of `count` messages and `payload`
    /// bytes: `Some(Bytes)` if the buffer must be flushed first.
    pub fn before_push(&self, count: usize, payload: usize, len: usize) -> Option<FlushReason> {
        (count > 0 && body_len(count + 1, payload + len) > self.max_bytes)
            .then_some(FlushReason::Bytes)
    }

    /// After appending: `Some(Count)` if the buffer is full.
    pub fn after_push(&self, count: usize) -> Option<FlushReason> {
        (count >= self.max_messages).then_some(FlushReason::Count)
    }
}

/// When a key's buffer leaves before it is full.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// Longest a message waits in the buffer.
    pub linger: Duration,
    /// Batches a key may have in flight before its messages are held back to
    /// fill a batch (0: never, linger is then a fixed delay). More than one, so that after an idle spell the first
    /// message leaving alone does not make everything behind it wait a whole
    /// round trip.
    pub eager_in_flight: usize,
}

impl Pacing {
    /// Half of `max_in_flight` (at least one). With closed-loop producers a
    /// loaded key's batches hold about `producers / eager_in_flight` messages,
    /// so this keeps batches large under load (512 producers: ~64 a batch with
    /// the default 16), leaves a few producers unhindered, and leaves the other
    /// half of the upstream slots to other keys and to retries.
    pub fn new(linger: Duration, max_in_flight: usize) -> Pacing {
        Pacing {
            linger,
            eager_in_flight: (max_in_flight / 2).max(1),
        }
    }

    /// Whether a buffer of `buffered` messages leaves now because its key has
    /// only `in_flight` batches on their way upstream.
    pub fn idle(&self, buffered: usize, in_flight: usize) -> Option<FlushReason> {
        (buffered > 0 && in_flight < self.eager_in_flight).then_some(FlushReason::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_messages: 3,
        max_bytes: 100,
    };

    #[test]
    fn body_len_counts_envelope_and_commas() {
        // {"messages":[a,bb]}
        assert_eq!(body_len(2, 3), r#"{"messages":[a,bb]}"#.len());
        assert_eq!(body_len(1, 1), r#"{"messages":[a]}"#.len());
        assert_eq!(body_len(0, 0), r#"{"messages":[]}"#.len());
    }

    #[test]
    fn first_message_always_fits() {
        assert_eq!(L.before_push(0, 0, 1000), None);
        assert!(L.fits_alone(100 - ENVELOPE_OVERHEAD));
        assert!(!L.fits_alone(100 - ENVELOPE_OVERHEAD + 1));
    }

    #[test]
    fn a_message_that_would_not_fit_flushes_first() {
        // one message of 40 bytes: body 55; adding 40 more: 55 + 41 = 96 fits; adding 45 = 101 does not.
        assert_eq!(L.before_push(1, 40, 40), None);
        assert_eq!(L.before_push(1, 40, 45), Some(FlushReason::Bytes));
        // exactly max_bytes still fits
        assert_eq!(L.before_push(1, 40, 44), None);
    }

    #[test]
    fn count_flushes_when_full() {
        assert_eq!(L.after_push(2), None);
        assert_eq!(L.after_push(3), Some(FlushReason::Count));
    }

    #[test]
    fn a_key_with_spare_capacity_sends_at_once() {
        let p = Pacing::new(Duration::from_millis(20), 16);
        assert_eq!(p.eager_in_flight, 8);
        assert_eq!(p.idle(1, 0), Some(FlushReason::Idle));
        assert_eq!(p.idle(3, 7), Some(FlushReason::Idle));
        assert_eq!(p.idle(3, 8), None, "enough in flight: fill the batch");
        assert_eq!(p.idle(0, 0), None, "nothing to send");
    }

    #[test]
    fn one_slot_is_nagle() {
        let p = Pacing::new(Duration::from_millis(20), 1);
        assert_eq!(p.eager_in_flight, 1);
        assert_eq!(p.idle(1, 0), Some(FlushReason::Idle));
        assert_eq!(p.idle(1, 1), None);
        assert_eq!(Pacing::new(Duration::ZERO, 0).eager_in_flight, 1);
    }
}
