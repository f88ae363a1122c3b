//! The producers' side: routes, the checks made before anything is buffered
//! (400, 413), admission against the memory bound (429 + `Retry-After`), and
//! waiting for each message's outcome within `request_timeout`.
//!
//! Layout: [`parse`] checks bodies, [`routes`] holds the handlers,
//! [`respond`] turns outcomes into AEP-shaped answers, [`forward`] carries
//! the requests that go one-to-one.

mod forward;
pub mod parse;
mod respond;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::CONTENT_LENGTH;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batcher::{BatchKey, BatcherHandle, Limits, Message};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::reply::{Delivery, Outcome, Reply};
use crate::upstream::Upstream;

/// Largest producer request body: the upstream's own 1 MB batch limit.
pub const MAX_REQUEST_BYTES: usize = 1_048_576;

/// What every producer request handler shares.
#[derive(Clone)]
pub struct Ingest {
    pub batcher: BatcherHandle,
    pub upstream: Arc<Upstream>,
    /// One permit per byte of `max_buffered_bytes`.
    pub permits: Arc<Semaphore>,
    /// The number of those permits: a body larger than this could never be admitted.
    pub bound: usize,
    pub limits: Limits,
    pub request_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Every accepted message holds a token, so shutdown can wait for them.
    pub drain: TaskTracker,
    /// Cancelled when shutdown begins.
    pub draining: CancellationToken,
}

/// The producer routes.
pub fn router(ingest: Ingest) -> Router {
    Router::new()
        .route("/collection/batch/{connection_id}", post(routes::batch))
        .route("/collection/{connection_id}", post(routes::single))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(ingest)
}

/// The outcomes that accepted messages' producers wait for, and their shared deadline.
pub struct Pending {
    outcomes: Vec<oneshot::Receiver<Outcome>>,
    deadline: Instant,
}

impl Pending {
    /// Each message's result in order (504 for those not answered by the deadline).
    async fn wait_all(self) -> Vec<Result<Delivery, Error>> {
        let mut results = Vec::with_capacity(self.outcomes.len());
        for outcome in self.outcomes {
            results.push(respond::wait(outcome, self.deadline).await);
        }
        results
    }
}

impl Ingest {
    /// Refuses new work once shutdown has begun.
    fn check_open(&self) -> Result<(), Error> {
        if self.draining.is_cancelled() {
            return Err(Error::Draining);
        }
        Ok(())
    }

    /// Answers an error. Refusals at the door (400, 413, 429, 503) are counted
    /// in the results here; outcomes that came through a reply were counted there.
    fn refuse(&self, error: Error) -> axum::response::Response {
        self.count_refused(&error);
        axum::response::IntoResponse::into_response(error)
    }

    fn count_refused(&self, error: &Error) {
        if !matches!(error, Error::Upstream { .. } | Error::Timeout) {
            self.metrics.message_result(error.status().as_u16());
        }
    }

    /// Reserves room for the body in the memory bound *before* reading it (by
    /// its `Content-Length`, or `max` when it has none), so a refused body is
    /// never read: 429 at once when full. Then reads it into one buffer of that
    /// size, refusing more than `max` bytes or a stalled upload.
    async fn receive(
        &self,
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
        let body = match tokio::time::timeout(self.request_timeout, read).await {
            Ok(result) => result?,
            Err(_) => return Err(Error::SlowBody),
        };
        Ok(Received { body, permit })
    }

    /// A message that can travel in one upstream request, or 413.
    fn fits(&self, message: Bytes) -> Result<Bytes, Error> {
        if !self.limits.fits_alone(message.len()) {
            let (len, max) = (message.len(), self.limits.max_bytes);
            return Err(Error::TooLarge { len, max });
        }
        Ok(message)
    }

    /// Admits messages (slices of `received`) and queues them under `key`, in order.
    fn enqueue(
        &self,
        key: BatchKey,
        received: Received,
        bodies: Vec<Bytes>,
    ) -> Result<Pending, Error> {
        let (messages, pending) = self.admit(received, bodies)?;
        self.batcher
            .submit(key, messages)
            .map_err(|_| Error::Draining)?;
        Ok(pending)
    }

    /// Turns messages (slices of a received body) into accepted messages, each
    /// with its share of the body's permit; the rest of the permit and the body
    /// buffer are released. A message much smaller than the body is copied out,
    /// so it never pins the larger buffer: memory held stays what is counted.
    fn admit(
        &self,
        received: Received,
        bodies: Vec<Bytes>,
    ) -> Result<(Vec<Message>, Pending), Error> {
        let Received {
            body: whole,
            mut permit,
        } = received;
        let accepted = Instant::now();
        let deadline = accepted + self.request_timeout;
        let mut messages = Vec::with_capacity(bodies.len());
        let mut outcomes = Vec::with_capacity(bodies.len());
        for slice in bodies {
            // Messages are slices of the body; their shares always fit in its permit.
            let share = permit.split(slice.len()).ok_or(Error::BufferFull)?;
            let body = if slice.len() * 2 < whole.len() {
                Bytes::copy_from_slice(&slice)
            } else {
                slice
            };
            let (reply, outcome) = Reply::new(
                accepted,
                deadline,
                body.len(),
                self.metrics.clone(),
                share,
                self.drain.token(),
            );
            messages.push(Message { body, reply });
            outcomes.push(outcome);
        }
        Ok((messages, Pending { outcomes, deadline }))
    }
}

/// A request body read inside the memory bound.
pub struct Received {
    pub body: Bytes,
    pub permit: OwnedSemaphorePermit,
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
