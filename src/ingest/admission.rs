//! Admission against the memory bound (`max_buffered_bytes`, one semaphore
//! permit per byte). A request is charged twice over its life:
//!
//! 1. before its body is read: the body's bytes (its `Content-Length`, or the
//!    route's maximum), so a body that cannot fit is refused unread (429);
//! 2. once read and its messages counted (an allocation-free pass): topped up
//!    or trimmed to `len + n × MESSAGE_OVERHEAD`, the real cost of holding its
//!    `n` messages until they are answered, before anything per message is built.
//!
//! Each message's share then travels in its `Reply`; the waiting handler keeps
//! the share of the answer it will build.

use axum::body::Body;
use axum::http::header::CONTENT_LENGTH;
use axum::http::HeaderMap;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::{respond, Arrival, Ingest};
use crate::batcher::{BatchKey, Message};
use crate::error::Error;
use crate::reply::{Delivery, Outcome, Reply};

/// What holding one message costs beside its own bytes, from arrival to answer
/// (x86-64; heap blocks with glibc's 16-byte header and rounding; Vecs at
/// their worst-case doubling):
///
/// | where | what | bytes |
/// | --- | --- | ---: |
/// | parsing a batch | `&RawValue` 16, `Result<Bytes, Error>` 40, the kept `Bytes` 32, the entry's place 32 | 120 |
/// | admission | `Message` (`Bytes` 32 + `Reply` 96) in a growing Vec, its `oneshot::Receiver` 8 | 136 |
/// | `Reply` | the oneshot channel's heap block (`Outcome`, two wakers, state) | 128 |
/// | message bytes | a small message is copied out of the body: one heap block | 32 |
/// | batcher, upstream | the `Message` moved into a key's buffer, then a delivery's Vec | 128 |
/// | **sum** | | **544** |
///
/// Measured: with a stalled upstream, 120 000 `{}` messages admitted (12
/// bodies of 10 000) and answered raised the binary's peak RSS by 51.9 MB:
/// 432 bytes a message (less than the sum: the stages do not all hold a
/// message at once). Charged: 432 + ~20 % for allocator fragmentation = 512.
/// `tests/it/memory.rs` checks the bound with the real binary and `{}` messages.
pub const MESSAGE_OVERHEAD: usize = 512;

/// The part of [`MESSAGE_OVERHEAD`] the waiting handler holds until it has
/// built the answer (the `Reply` lets go of its share when the outcome
/// arrives): the result (48) and its serialised entry (≤ 110 for a 504).
const ANSWER_SHARE: usize = 160;

/// A request body read inside the memory bound, and the permit that covers it.
pub struct Received {
    pub body: Bytes,
    permit: OwnedSemaphorePermit,
}

/// The outcomes that accepted messages' producers wait for, their shared
/// deadline, and the share of the bound the answer will use.
pub struct Pending {
    outcomes: Vec<oneshot::Receiver<Outcome>>,
    deadline: Instant,
    answer: OwnedSemaphorePermit,
}

/// Every message's result, and the bound's share held while the answer is built.
pub struct Results {
    pub results: Vec<Result<Delivery, Error>>,
    pub _answer: OwnedSemaphorePermit,
}

impl Pending {
    /// Each message's result in order (504 for those not answered by the deadline).
    pub async fn wait_all(self) -> Results {
        let mut results = Vec::with_capacity(self.outcomes.len());
        for outcome in self.outcomes {
            results.push(respond::wait(outcome, self.deadline).await);
        }
        Results {
            results,
            _answer: self.answer,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Ingest {
    /// Reserves the body's bytes (its `Content-Length`, or `max` when it has
    /// none) *before* reading it, so a refused body is never read: 429 at once
    /// when full. Then reads it, refusing more than `max` bytes (413) or a body
    /// slower than `body_read_timeout` (408; the reservation goes with it).
    pub(super) async fn receive(
        &self,
        arrival: &Arrival,
        headers: &HeaderMap,
        body: Body,
        max: usize,
    ) -> Result<Received, Error> {
        // Larger than the whole bound: 413 (waiting would never help), not 429.
        let max = max.min(self.bound);
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(Error::BodyTooLarge { max });
        }
        let reserve = declared.unwrap_or(max);
        let weight = u32::try_from(reserve).map_err(|_| Error::BodyTooLarge { max })?;
        let Ok(permit) = self.permits.clone().try_acquire_many_owned(weight) else {
            self.metrics.shed.increment(1);
            return Err(Error::BufferFull);
        };
        // A declared length (reserved, at most `max`) is allocated at once; an unknown one grows.
        let read = read_limited(body, declared.unwrap_or(16 * 1024), max);
        let until = (arrival.at + self.body_read_timeout).min(arrival.deadline);
        let body = match tokio::time::timeout_at(until, read).await {
            Ok(result) => result?,
            Err(_) => return Err(Error::SlowBody),
        };
        Ok(Received { body, permit })
    }

    /// Brings the reservation to the real cost of `messages` messages in this
    /// body: 413 if that could never fit in the bound, 429 if it does not fit now.
    pub(super) fn charge(&self, received: &mut Received, messages: usize) -> Result<(), Error> {
        let cost = messages
            .checked_mul(MESSAGE_OVERHEAD)
            .and_then(|overhead| overhead.checked_add(received.body.len()))
            .unwrap_or(usize::MAX);
        let too_costly = Error::TooCostly {
            messages,
            cost,
            bound: self.bound,
        };
        if cost > self.bound {
            return Err(too_costly);
        }
        let held = received.permit.num_permits();
        if cost > held {
            let more = u32::try_from(cost - held).map_err(|_| too_costly)?;
            let Ok(extra) = self.permits.clone().try_acquire_many_owned(more) else {
                self.metrics.shed.increment(1);
                return Err(Error::BufferFull);
            };
            received.permit.merge(extra);
        } else {
            // Released at once: the body turned out cheaper than reserved.
            drop(received.permit.split(held - cost));
        }
        Ok(())
    }

    /// A message that can travel in one upstream request, or 413.
    pub(super) fn fits(&self, message: Bytes) -> Result<Bytes, Error> {
        if !self.limits.fits_alone(message.len()) {
            let (len, max) = (message.len(), self.limits.max_bytes);
            return Err(Error::TooLarge { len, max });
        }
        Ok(message)
    }

    /// Admits messages (slices of `received`) and queues them under `key`, in
    /// order. `entries` is the number of answer entries the caller will build.
    pub(super) fn enqueue(
        &self,
        arrival: &Arrival,
        key: BatchKey,
        received: Received,
        bodies: Vec<Bytes>,
        entries: usize,
    ) -> Result<Pending, Error> {
        let (messages, pending) = self.admit(arrival, received, bodies, entries)?;
        self.batcher
            .submit(key, messages)
            .map_err(|_| Error::Draining)?;
        Ok(pending)
    }

    /// Turns messages (slices of a received body, charged by [`Ingest::charge`])
    /// into accepted messages whose producer waits, each with its share of the
    /// permit (see [`Ingest::shares`]).
    pub(super) fn admit(
        &self,
        arrival: &Arrival,
        received: Received,
        bodies: Vec<Bytes>,
        entries: usize,
    ) -> Result<(Vec<Message>, Pending), Error> {
        let (answer, shares) = self.shares(received, bodies, entries)?;
        let accepted = Instant::now();
        let mut messages = Vec::with_capacity(shares.len());
        let mut outcomes = Vec::with_capacity(shares.len());
        for (body, share) in shares {
            let (reply, outcome) = Reply::new(
                accepted,
                arrival.deadline,
                body.len(),
                self.metrics.clone(),
                share,
                self.work.token(),
            );
            messages.push(Message { body, reply });
            outcomes.push(outcome);
        }
        let pending = Pending {
            outcomes,
            deadline: arrival.deadline,
            answer,
        };
        Ok((messages, pending))
    }
}

impl Ingest {
    /// Splits a charged permit: the share the answer will use (for `entries`
    /// entries), then each message with its own share. A message much smaller
    /// than the body is copied out, so it never pins the larger buffer; the
    /// rest of the permit and the body buffer are released.
    pub(super) fn shares(
        &self,
        received: Received,
        bodies: Vec<Bytes>,
        entries: usize,
    ) -> Result<(OwnedSemaphorePermit, Vec<(Bytes, OwnedSemaphorePermit)>), Error> {
        let Received {
            body: whole,
            mut permit,
        } = received;
        let answer = permit
            .split(entries.saturating_mul(ANSWER_SHARE))
            .ok_or(Error::BufferFull)?;
        let mut shares = Vec::with_capacity(bodies.len());
        for slice in bodies {
            // Charged for every entry; a share that does not fit means a miscount: refuse, never overrun.
            let share = permit
                .split(slice.len() + MESSAGE_OVERHEAD - ANSWER_SHARE)
                .ok_or(Error::BufferFull)?;
            let body = if slice.len() * 2 < whole.len() {
                Bytes::copy_from_slice(&slice)
            } else {
                slice
            };
            shares.push((body, share));
        }
        Ok((answer, shares))
    }
}

/// Reads `body` into a buffer of `capacity`, failing past `max` bytes.
async fn read_limited(mut body: Body, capacity: usize, max: usize) -> Result<Bytes, Error> {
    let mut buffer = BytesMut::with_capacity(capacity);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Error::BadShape("the request body could not be read"))?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > max {
                return Err(Error::BodyTooLarge { max });
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}
