//! The flush policy: a pure decision over a buffer's size, with no I/O.
//!
//! As in Vector's batcher: the first message always fits (ingest already
//! refused any message that cannot fit alone); a message that would push the
//! request body past `max_bytes` flushes the buffer first; a buffer holding
//! `max_messages` flushes at once; the linger timer starts with the first
//! message.

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
}
