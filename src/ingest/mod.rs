//! The producers' side: routes, the checks made before anything is buffered
//! (400, 413), admission against the memory bound (429 + `Retry-After`), and
//! waiting for each message's outcome within `request_timeout`.
//!
//! Layout: [`parse`] checks bodies, [`routes`] holds the handlers,
//! [`respond`] turns outcomes into AEP-shaped answers, [`forward`] carries
//! the requests that go one-to-one.

mod forward;
mod parse;
mod respond;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batcher::{BatcherHandle, Limits, Message};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::reply::{Outcome, Reply};
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
        .with_state(ingest)
}

/// A message accepted into the memory bound, not yet handed to the batcher.
pub struct Admitted {
    pub message: Message,
    pub outcome: tokio::sync::oneshot::Receiver<Outcome>,
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

    /// Reads the request body, refusing more than `max` bytes or a stalled upload.
    async fn read_body(&self, body: Body, max: usize) -> Result<Bytes, Error> {
        let read = axum::body::to_bytes(body, max);
        match tokio::time::timeout(self.request_timeout, read).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(_)) => Err(Error::BodyTooLarge { max }),
            Err(_) => Err(Error::SlowBody),
        }
    }

    /// Reserves room for messages of these sizes, all or none: 429 when full.
    fn admit(&self, bodies: Vec<Bytes>) -> Result<Vec<Admitted>, Error> {
        let total: usize = bodies.iter().map(Bytes::len).sum();
        let weight = u32::try_from(total).map_err(|_| Error::BodyTooLarge {
            max: MAX_REQUEST_BYTES,
        })?;
        let mut permit = match self.permits.clone().try_acquire_many_owned(weight) {
            Ok(p) => p,
            Err(_) => {
                self.metrics.shed.increment(1);
                return Err(Error::BufferFull);
            }
        };
        let accepted = Instant::now();
        let deadline = accepted + self.request_timeout;
        Ok(bodies
            .into_iter()
            .map(|body| {
                // Each message carries its own share, released when it is answered.
                let share = permit
                    .split(body.len())
                    .expect("the permit was sized as the sum of the shares");
                let (reply, outcome) = Reply::new(
                    accepted,
                    deadline,
                    body.len(),
                    self.metrics.clone(),
                    share,
                    self.drain.token(),
                );
                Admitted {
                    message: Message { body, reply },
                    outcome,
                }
            })
            .collect())
    }
}
