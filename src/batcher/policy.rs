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
//! capacity, so its buffer leaves at once (reason `idle`); beyond that its
//! batches are paced over the round trip, and at `max_in_flight` messages
//! gather until a batch comes back (or linger, count, bytes). Under load
//! batches fill by themselves — natural batching, as in Nagle's algorithm
//! generalised to several outstanding batches.

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
    /// Batches a key may have in flight and still send at once. More than
    /// one, so that after an idle spell the first message leaving alone does
    /// not make everything behind it wait a whole round trip.
    pub eager_in_flight: usize,
    /// Most batches of one key in flight before its messages wait for one to
    /// come back (or for linger, count, bytes). Between the two, a key sends
    /// at most once per `round trip / max_in_flight`: its batches are spread
    /// over the round trip instead of leaving in a clump and all coming back
    /// together, so nobody waits long for the next slot.
    pub max_in_flight: usize,
}

/// What to do with a non-empty buffer now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Flush(FlushReason),
    /// Decide again once the oldest message has waited this long (or when a batch comes back).
    Hold(Duration),
}

impl Pacing {
    /// A quarter of `max_in_flight` sends at once, up to all of it when paced
    /// (at least one each). With closed-loop producers a loaded key's batches
    /// hold about `producers / eager_in_flight` messages (512 producers: ~100
    /// with the default 16), while 16 producers wait at most about a
    /// sixteenth of a round trip.
    pub fn new(linger: Duration, max_in_flight: usize) -> Pacing {
        Pacing {
            linger,
            eager_in_flight: (max_in_flight / 4).max(1),
            max_in_flight: max_in_flight.max(1),
        }
    }

    /// The pacing of each key in front of an upstream with `max_in_flight`
    /// slots: eager over a quarter of them, paced over half. Spreading one
    /// key's batches over *all* the slots cut it into `max_in_flight` batches
    /// per round trip whatever the load; on a CPU-bound host, where the round
    /// trip itself stretches (~80 ms for a 20 ms upstream), 2048 closed-loop
    /// producers got ~120 messages per request, every batch paying its own
    /// request and 207 for less. Half the slots doubles that while a lone or
    /// light key still leaves at once (the eager quarter is unchanged), and
    /// `linger` still caps every wait. The other half serves other keys.
    /// See `closed_loop` in the tests below.
    pub fn for_upstream(linger: Duration, max_in_flight: usize) -> Pacing {
        let paced = (max_in_flight / 2).max(1);
        Pacing {
            linger,
            eager_in_flight: (max_in_flight / 4).clamp(1, paced),
            max_in_flight: paced,
        }
    }

    /// The decision for a buffer whose oldest message has `waited`, its key
    /// having `in_flight` batches on their way and an estimated round trip of
    /// `rtt` (none yet: `linger` stands in). Count and bytes are [`Limits`]'.
    pub fn decide(&self, in_flight: usize, waited: Duration, rtt: Option<Duration>) -> Decision {
        if waited >= self.linger {
            return Decision::Flush(FlushReason::Linger);
        }
        if in_flight < self.eager_in_flight {
            return Decision::Flush(FlushReason::Idle);
        }
        if in_flight < self.max_in_flight {
            let spacing = rtt.unwrap_or(self.linger) / self.max_in_flight as u32;
            if waited >= spacing {
                return Decision::Flush(FlushReason::Idle);
            }
            return Decision::Hold(spacing.min(self.linger));
        }
        Decision::Hold(self.linger)
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

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_key_with_spare_capacity_sends_at_once() {
        let p = Pacing::new(20 * MS, 16);
        assert_eq!((p.eager_in_flight, p.max_in_flight), (4, 16));
        let idle = Decision::Flush(FlushReason::Idle);
        assert_eq!(p.decide(0, Duration::ZERO, None), idle);
        assert_eq!(p.decide(3, Duration::ZERO, Some(20 * MS)), idle);
    }

    #[test]
    fn a_loaded_key_spreads_its_batches_over_the_round_trip() {
        let p = Pacing::new(20 * MS, 16);
        let rtt = Some(32 * MS);
        // 32 ms / 16 slots: one batch every 2 ms at most.
        assert_eq!(p.decide(4, Duration::ZERO, rtt), Decision::Hold(2 * MS));
        assert_eq!(p.decide(15, MS, rtt), Decision::Hold(2 * MS));
        assert_eq!(
            p.decide(15, 2 * MS, rtt),
            Decision::Flush(FlushReason::Idle)
        );
        // No round trip measured yet: linger stands in for it.
        assert_eq!(
            p.decide(4, Duration::ZERO, None),
            Decision::Hold(20 * MS / 16)
        );
        // A slow upstream never stretches the wait past linger.
        assert_eq!(
            p.decide(4, Duration::ZERO, Some(MS * 1000)),
            Decision::Hold(20 * MS)
        );
    }

    #[test]
    fn a_full_key_waits_for_a_batch_to_come_back_or_linger() {
        let p = Pacing::new(20 * MS, 16);
        assert_eq!(p.decide(16, 19 * MS, Some(MS)), Decision::Hold(20 * MS));
        assert_eq!(
            p.decide(16, 20 * MS, Some(MS)),
            Decision::Flush(FlushReason::Linger)
        );
    }

    /// A closed loop on a virtual clock (0.1 ms steps): `producers` each
    /// send a message, wait for its batch to come back after `rtt`, and send
    /// again; at most `per_ms` messages a millisecond get into the buffer (a
    /// CPU-bound host; `None`: no limit). The buffer is reviewed every step,
    /// as the worker's timers would. Returns the average batch size over the
    /// second half of `run` and the longest a message waited in the buffer.
    fn closed_loop(
        pacing: Pacing,
        producers: usize,
        per_ms: Option<usize>,
        rtt: Duration,
    ) -> (usize, Duration) {
        const STEP: Duration = Duration::from_micros(100);
        let run = Duration::from_secs(3);
        let max_messages = 500;
        let (mut now, mut ready, mut credit) = (Duration::ZERO, producers, 0);
        let (mut buffered, mut since) = (0, Duration::ZERO);
        let mut flying: Vec<(Duration, usize)> = Vec::new();
        let (mut smoothed, mut sent, mut batches, mut longest) = (None, 0, 0, Duration::ZERO);
        while now < run {
            flying.retain(|&(lands, n)| {
                let landed = lands <= now;
                if landed {
                    ready += n;
                    smoothed = Some(smoothed.map_or(rtt, |s: Duration| (s * 7 + rtt) / 8));
                }
                !landed
            });
            // `per_ms` a millisecond is per_ms / 10 a step (tenths carried over).
            credit = (credit + per_ms.unwrap_or(ready * 10)).min(ready * 10);
            let n = ready.min(credit / 10);
            (ready, credit) = (ready - n, credit - n * 10);
            if n > 0 && buffered == 0 {
                since = now;
            }
            buffered += n;
            while buffered > 0 {
                let waited = now - since;
                let full = buffered >= max_messages;
                let flush = matches!(
                    pacing.decide(flying.len(), waited, smoothed),
                    Decision::Flush(_)
                );
                if !full && !flush {
                    break;
                }
                let n = buffered.min(max_messages);
                flying.push((now + rtt, n));
                buffered -= n;
                longest = longest.max(waited);
                if now >= run / 2 {
                    (sent, batches) = (sent + n, batches + 1);
                }
            }
            now += STEP;
        }
        (sent / batches.max(1), longest)
    }

    #[test]
    fn a_cpu_bound_key_sends_fuller_batches_over_half_the_slots() {
        // The bench's CPU-bound phase: 2048 producers, ~23 000 messages/s, a
        // 20 ms upstream whose round trip stretched to ~80 ms under load.
        let old = Pacing::new(20 * MS, 16);
        let (size, _) = closed_loop(old, 2048, Some(23), 80 * MS);
        assert!(
            (100..=130).contains(&size),
            "all 16 slots: {size}, as measured (119)"
        );
        let paced = Pacing::for_upstream(20 * MS, 16);
        assert_eq!((paced.eager_in_flight, paced.max_in_flight), (4, 8));
        let (size, waited) = closed_loop(paced, 2048, Some(23), 80 * MS);
        assert!(size >= 200, "half the slots: {size}");
        assert!(waited <= 20 * MS, "linger still caps the wait: {waited:?}");
    }

    #[test]
    fn few_producers_still_leave_at_once() {
        let paced = Pacing::for_upstream(20 * MS, 16);
        let (size, waited) = closed_loop(paced, 16, None, 20 * MS);
        assert_eq!((size, waited), (16, Duration::ZERO));
        // Trickling in one a millisecond: at most one pacing gap (20 ms / 8).
        let (_, waited) = closed_loop(paced, 16, Some(1), 20 * MS);
        assert!(waited <= 3 * MS, "{waited:?}");
    }

    #[test]
    fn upstream_pacing_keeps_at_least_one_slot() {
        for (slots, eager, paced) in [
            (0, 1, 1),
            (1, 1, 1),
            (2, 1, 1),
            (3, 1, 1),
            (4, 1, 2),
            (16, 4, 8),
            (64, 16, 32),
        ] {
            let p = Pacing::for_upstream(20 * MS, slots);
            assert_eq!(
                (p.eager_in_flight, p.max_in_flight),
                (eager, paced),
                "{slots}"
            );
        }
    }

    #[test]
    fn one_slot_is_nagle() {
        let p = Pacing::new(20 * MS, 1);
        assert_eq!((p.eager_in_flight, p.max_in_flight), (1, 1));
        assert_eq!(
            p.decide(0, Duration::ZERO, None),
            Decision::Flush(FlushReason::Idle)
        );
        assert_eq!(p.decide(1, Duration::ZERO, None), Decision::Hold(20 * MS));
        let none = Pacing::new(20 * MS, 0);
        assert_eq!((none.eager_in_flight, none.max_in_flight), (1, 1));
    }
}
