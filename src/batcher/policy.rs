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
//! batches are paced over the round trip (at most one per gap, counted from
//! the key's previous batch), and at `max_in_flight` messages gather until a
//! batch comes back (or linger, count, bytes). Under load
//! batches fill by themselves — natural batching, as in Nagle's algorithm
//! generalised to several outstanding batches. A paced buffer that already
//! holds more than a gap's arrivals leaves without waiting out the gap
//! ([`Pacing::gap_filled`]).

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

    /// The decision for a buffer whose oldest message has `waited`, its key
    /// having `in_flight` batches on their way, its previous batch sent
    /// `since_flush` ago (none: never) and an estimated round trip of `rtt`
    /// (none yet: `linger` stands in). Count and bytes are [`Limits`]'.
    ///
    /// Between `eager_in_flight` and `max_in_flight` the key sends at most one
    /// batch per gap of `rtt / max_in_flight`, counted from its previous batch,
    /// not from the oldest message's arrival: a message that arrives when a gap
    /// has already passed leaves at once (at 16 producers, a fixed wait of one
    /// gap per batch cost ~2 ms of p50 in bench/run.sh phase inletd16), while a
    /// loaded key still sends no more than `max_in_flight` batches per round trip,
    /// and a busy one fewer (see [`Pacing::paced_slots`]; `batch` is the key's
    /// smoothed messages per batch).
    pub fn decide(
        &self,
        in_flight: usize,
        waited: Duration,
        since_flush: Option<Duration>,
        rtt: Option<Duration>,
        batch: f64,
    ) -> Decision {
        if waited >= self.linger {
            return Decision::Flush(FlushReason::Linger);
        }
        if in_flight < self.eager_in_flight {
            return Decision::Flush(FlushReason::Idle);
        }
        if in_flight < self.max_in_flight {
            let gap = rtt.unwrap_or(self.linger) / self.paced_slots(batch) as u32;
            let left = gap.saturating_sub(since_flush.unwrap_or(Duration::MAX));
            if left.is_zero() {
                return Decision::Flush(FlushReason::Idle);
            }
            return Decision::Hold((waited + left).min(self.linger));
        }
        Decision::Hold(self.linger)
    }

    /// The batches per round trip a key's pacing allows: `max_in_flight`, half
    /// of it once the key's batches hold [`BUSY`]`[0]` messages, a quarter from
    /// `BUSY[1]`. Why: with few messages per round trip, every message should
    /// leave at once (16 producers: ~2 a batch); a busy key gains little latency
    /// from more, smaller batches, but each costs a request, a 207 to read and
    /// CPU on both sides (512 producers got ~46 a request over 16 slots, the
    /// target is 50; 2048 CPU-bound ones ~170, the target 200). The bands
    /// overlap by a factor of two, so a key does not flip between them.
    pub fn paced_slots(&self, batch: f64) -> usize {
        let level = BUSY.iter().filter(|&&from| batch >= from).count();
        (self.max_in_flight >> level).max(1)
    }
    /// Whether a paced key's buffer, holding `held` messages, already holds
    /// [`FILL`] times what one pacing gap brings, so it may leave before its
    /// gap is over. The key's arrival rate is its smoothed `batch` over its
    /// smoothed `spacing` between batches; a gap is `rtt / paced_slots`.
    ///
    /// Why: with closed-loop producers a batch's answers come back together,
    /// and their producers' next messages arrive together just after the key's
    /// previous batch left (its round trip is a whole number of gaps), so a
    /// gap's worth of messages sat out nearly a whole gap: ~3.7 ms of each
    /// message's wait at 512 producers in bench/run.sh, ~1.8 ms with this.
    /// Batches stay about as large (a gap's arrivals or more: the threshold
    /// comes from the arrival rate, not from the batches it makes, so it does
    /// not drift down).
    ///
    /// Not at `max_in_flight`, nor before a round trip and a spacing are
    /// known, nor for a key getting less than half a message per gap, nor
    /// for a key whose batches, at `FILL` times their size, reach
    /// [`BUSY`]`[1]`: near the CPU-bound end fewer, fuller requests matter more
    /// than a millisecond, and sending early there would keep a key's batches
    /// below `BUSY[1]` for good (paced over twice the slots, a gap's worth is
    /// half as large; at 2048 producers 121 messages a request instead of 157).
    pub fn gap_filled(
        &self,
        in_flight: usize,
        held: usize,
        rtt: Option<Duration>,
        batch: f64,
        spacing: Option<Duration>,
    ) -> bool {
        let (Some(rtt), Some(spacing)) = (rtt, spacing) else {
            return false;
        };
        if in_flight >= self.max_in_flight || spacing.is_zero() || batch * FILL >= BUSY[1] {
            return false;
        }
        let gap = rtt.as_secs_f64() / self.paced_slots(batch) as f64;
        let per_gap = batch * gap / spacing.as_secs_f64();
        // Less than half a message per gap is a trickle: holding it keeps no
        // crowd waiting. From half a message on (16 producers: about one a
        // gap) the threshold counts, whatever it is: with a floor of one
        // message instead, their message wait over the upstream request was
        // 1.9 ms, without it 0.3 ms (bench/run.sh, loaded machine).
        per_gap >= TRICKLE && held as f64 >= FILL * per_gap
    }
}

/// How many gaps' worth of arrivals let a paced key's buffer leave early
/// (see [`Pacing::gap_filled`]): with 1.0 bench/run.sh's 512 producers got
/// 49-52 messages a request (target 50), with 1.5 56-60 and the same wait,
/// with 2.0 their wait grew again.
pub const FILL: f64 = 1.5;

/// Arrivals per gap below which a paced key never sends early.
const TRICKLE: f64 = 0.5;

/// Smoothed messages per batch from which a key paces over half, then a
/// quarter, of `max_in_flight` (see [`Pacing::paced_slots`]).
pub const BUSY: [f64; 2] = [16.0, 128.0];

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
        assert_eq!(p.decide(0, Duration::ZERO, None, None, 1.0), idle);
        assert_eq!(
            p.decide(3, Duration::ZERO, Some(MS), Some(20 * MS), 1.0),
            idle
        );
    }

    #[test]
    fn a_loaded_key_spreads_its_batches_over_the_round_trip() {
        let p = Pacing::new(20 * MS, 16);
        let rtt = Some(32 * MS);
        let just_sent = Some(Duration::ZERO);
        // 32 ms / 16 slots: one batch every 2 ms at most.
        assert_eq!(
            p.decide(4, Duration::ZERO, just_sent, rtt, 1.0),
            Decision::Hold(2 * MS)
        );
        assert_eq!(p.decide(15, MS, Some(MS), rtt, 1.0), Decision::Hold(2 * MS));
        assert_eq!(
            p.decide(15, 2 * MS, Some(2 * MS), rtt, 1.0),
            Decision::Flush(FlushReason::Idle)
        );
        // The gap counts from the previous batch: half of it gone before this
        // message came, half is left to wait.
        assert_eq!(
            p.decide(8, Duration::ZERO, Some(MS), rtt, 1.0),
            Decision::Hold(MS)
        );
        // No round trip measured yet: linger stands in for it.
        assert_eq!(
            p.decide(4, Duration::ZERO, just_sent, None, 1.0),
            Decision::Hold(20 * MS / 16)
        );
        // A slow upstream never stretches the wait past linger.
        assert_eq!(
            p.decide(4, Duration::ZERO, just_sent, Some(MS * 1000), 1.0),
            Decision::Hold(20 * MS)
        );
    }

    #[test]
    fn a_paced_key_sends_at_once_when_a_gap_has_passed_since_its_last_batch() {
        let p = Pacing::new(20 * MS, 16);
        let idle = Decision::Flush(FlushReason::Idle);
        // 32 ms / 16: a batch 3 ms ago, the gap of 2 ms is over.
        assert_eq!(
            p.decide(8, Duration::ZERO, Some(3 * MS), Some(32 * MS), 1.0),
            idle
        );
        // Never sent before (its batches in flight came from elsewhere).
        assert_eq!(p.decide(8, Duration::ZERO, None, Some(32 * MS), 1.0), idle);
    }

    #[test]
    fn a_busy_key_paces_over_fewer_slots() {
        let p = Pacing::new(20 * MS, 16);
        assert_eq!(p.paced_slots(0.0), 16);
        assert_eq!(p.paced_slots(15.9), 16);
        assert_eq!(p.paced_slots(16.0), 8);
        assert_eq!(p.paced_slots(128.0), 4);
        let rtt = Some(32 * MS);
        let just_sent = Some(Duration::ZERO);
        assert_eq!(
            p.decide(8, Duration::ZERO, just_sent, rtt, 2.0),
            Decision::Hold(2 * MS)
        );
        assert_eq!(
            p.decide(8, Duration::ZERO, just_sent, rtt, 40.0),
            Decision::Hold(4 * MS)
        );
        assert_eq!(
            p.decide(8, Duration::ZERO, just_sent, rtt, 300.0),
            Decision::Hold(8 * MS)
        );
        // Never fewer than one slot, and eager sends are unaffected.
        assert_eq!(Pacing::new(20 * MS, 2).paced_slots(1000.0), 1);
        assert_eq!(
            p.decide(0, Duration::ZERO, just_sent, rtt, 300.0),
            Decision::Flush(FlushReason::Idle)
        );
    }

    #[test]
    fn a_paced_key_sends_early_once_it_holds_more_than_a_gap_brings() {
        let p = Pacing::new(20 * MS, 16);
        // 40 messages a batch, one batch every 4 ms: 10 messages per ms. A
        // 32 ms round trip over 8 slots: a gap of 4 ms brings 40 messages.
        let (rtt, spacing) = (Some(32 * MS), Some(4 * MS));
        assert!(!p.gap_filled(8, 59, rtt, 40.0, spacing));
        assert!(p.gap_filled(8, 60, rtt, 40.0, spacing), "1.5 gaps' worth");
        // Twice as fast arrivals: a gap brings twice as many.
        assert!(!p.gap_filled(8, 60, rtt, 40.0, Some(2 * MS)));
        assert!(p.gap_filled(8, 120, rtt, 40.0, Some(2 * MS)));
        // The same rate in larger, rarer batches: the same threshold.
        assert!(!p.gap_filled(8, 59, rtt, 80.0, Some(8 * MS)));
        assert!(p.gap_filled(8, 60, rtt, 80.0, Some(8 * MS)));
    }

    #[test]
    fn no_early_send_without_a_measure_or_a_slot_or_near_the_busy_band() {
        let p = Pacing::new(20 * MS, 16);
        let (rtt, spacing) = (Some(32 * MS), Some(4 * MS));
        assert!(
            !p.gap_filled(8, 1000, None, 40.0, spacing),
            "no round trip yet"
        );
        assert!(!p.gap_filled(8, 1000, rtt, 40.0, None), "no spacing yet");
        assert!(!p.gap_filled(8, 1000, rtt, 40.0, Some(Duration::ZERO)));
        assert!(
            !p.gap_filled(16, 1000, rtt, 40.0, spacing),
            "at max_in_flight"
        );
        // Batches of 86 aim at 129 (>= BUSY[1]): left to the gap.
        assert!(p.gap_filled(8, 1000, rtt, 85.0, spacing));
        assert!(!p.gap_filled(8, 1000, rtt, 86.0, spacing));
        // A trickle (less than half a message per gap) is paced as before.
        assert!(!p.gap_filled(8, 1000, rtt, 1.0, Some(1000 * MS)));
        assert!(!p.gap_filled(8, 1000, rtt, 1.0, Some(5 * MS)));
        // Half a message per gap (2 ms over 4 ms): one message is enough.
        assert!(p.gap_filled(8, 1, rtt, 1.0, Some(4 * MS)));
    }

    #[test]
    fn a_full_key_waits_for_a_batch_to_come_back_or_linger() {
        let p = Pacing::new(20 * MS, 16);
        let long_ago = Some(100 * MS);
        assert_eq!(
            p.decide(16, 19 * MS, long_ago, Some(MS), 1.0),
            Decision::Hold(20 * MS)
        );
        assert_eq!(
            p.decide(16, 20 * MS, long_ago, Some(MS), 1.0),
            Decision::Flush(FlushReason::Linger)
        );
    }

    #[test]
    fn one_slot_is_nagle() {
        let p = Pacing::new(20 * MS, 1);
        assert_eq!((p.eager_in_flight, p.max_in_flight), (1, 1));
        assert_eq!(
            p.decide(0, Duration::ZERO, None, None, 1.0),
            Decision::Flush(FlushReason::Idle)
        );
        assert_eq!(
            p.decide(1, Duration::ZERO, None, None, 1.0),
            Decision::Hold(20 * MS)
        );
        let none = Pacing::new(20 * MS, 0);
        assert_eq!((none.eager_in_flight, none.max_in_flight), (1, 1));
    }
}
