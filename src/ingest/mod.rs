//! The producers' side: routes, the checks made before anything is buffered
//! (400, 413), admission against the memory bound (429 + `Retry-After`), and
//! waiting for each message's outcome within `request_timeout`.
//!
//! Layout: [`connection`] checks the connection id in the path, [`parse`]
//! checks bodies, [`admission`] reads bodies and charges the memory bound,
//! [`routes`] holds the handlers, [`respond`] turns outcomes into AEP-shaped
//! answers, [`forward`] answers the requests that go one-to-one, and
//! [`outcome_log`] logs answers that are not a success (rate-limited).
//! Fire-and-forget: [`prefer`] reads `Prefer: respond-async`, `fire` answers
//! 202 (after the spool's sync where there is one), `replay` queues what the
//! spool held at start.
//! Every producer handler begins with [`Ingest::arrive`]: it refuses new work
//! while draining and starts the request's clock.

mod admission;
mod connection;
mod fire;
mod forward;
pub mod outcome_log;
pub mod parse;
pub mod prefer;
mod replay;
mod respond;
mod routes;
mod spooling;

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};

pub use admission::MESSAGE_OVERHEAD;
pub use connection::ConnectionId;

use crate::batcher::{BatcherHandle, Limits};
use crate::config::Config;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::shutdown::Phases;
use crate::spool::Spool;
use crate::upstream::Upstream;
use outcome_log::OutcomeLog;

/// What every producer request handler shares: one pointer, because axum
/// clones the state for the middleware and each handler of every request, and
/// cloning the parts (a channel sender, a cancellation token, several `Arc`s)
/// showed in the per-message profile.
#[derive(Clone)]
pub struct Ingest(Arc<Shared>);

impl std::ops::Deref for Ingest {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields behind [`Ingest`].
pub struct Shared {
    batcher: BatcherHandle,
    upstream: Arc<Upstream>,
    /// One permit per byte of `max_buffered_bytes`.
    permits: Arc<Semaphore>,
    /// The number of those permits: a request costing more could never be admitted.
    bound: usize,
    limits: Limits,
    request_timeout: Duration,
    body_read_timeout: Duration,
    metrics: Arc<Metrics>,
    /// Shutdown waits for every token: each request from arrival to answer,
    /// and each accepted message until it is answered.
    work: TaskTracker,
    /// Cancelled when shutdown begins: new requests get 503.
    draining: CancellationToken,
    /// Names the producer of every answer that is not a success, rate-limited.
    outcomes: OutcomeLog,
    /// `async_default`: every producer is answered 202 without waiting.
    async_default: bool,
    /// `spool_dir` opened: fire-and-forget 202s wait for the disk.
    spool: Option<Spool>,
    spool_max_age: Duration,
    /// The part of the bound spooled messages may hold in memory (half of
    /// it, one permit per byte, taken beside their share of `permits`): the
    /// rest stays for reading requests, so spooled producers get their 202
    /// from the disk while delivery is slow.
    spooled_memory: Arc<Semaphore>,
    spooled_bound: usize,
}

impl Ingest {
    pub fn new(
        config: &Config,
        limits: Limits,
        batcher: BatcherHandle,
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        phases: &Phases,
        spool: Option<Spool>,
    ) -> Ingest {
        let bound = usize::try_from(config.max_buffered_bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Ingest(Arc::new(Shared {
            batcher,
            upstream,
            permits: Arc::new(Semaphore::new(bound)),
            bound,
            limits,
            request_timeout: config.request_timeout.0,
            body_read_timeout: config.body_read_timeout.0,
            metrics,
            work: phases.work.clone(),
            draining: phases.draining.clone(),
            outcomes: OutcomeLog::new(outcome_log::LOG_EVERY),
            async_default: config.async_default.0,
            spool,
            spool_max_age: config.spool_max_age.0,
            spooled_memory: Arc::new(Semaphore::new(bound / 2)),
            spooled_bound: bound / 2,
        }))
    }

    /// Bytes of the memory bound held by requests and messages not yet answered.
    pub fn held_bytes(&self) -> usize {
        self.bound.saturating_sub(self.permits.available_permits())
    }

    /// Answers an error. Refusals at the door (400, 408, 413, 429, 503) are counted
    /// in the results here; outcomes that came through a reply were counted there.
    fn refuse(&self, error: Error) -> Response {
        self.count_refused(&error);
        axum::response::IntoResponse::into_response(error)
    }

    /// [`Ingest::refuse`], logged under the producer's connection id.
    fn refuse_for(&self, connection_id: &ConnectionId, error: Error) -> Response {
        self.outcomes.error(connection_id.as_str(), &error);
        self.refuse(error)
    }

    fn count_refused(&self, error: &Error) {
        if !matches!(error, Error::Upstream { .. } | Error::Timeout) {
            self.metrics.message_result(error.status().as_u16());
        }
    }
}

/// When a producer's request arrived: its deadline runs from here, not from
/// the end of its body.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    pub at: Instant,
    /// `at` + `request_timeout`: the producer's answer is due by then.
    pub deadline: Instant,
}

/// The producer routes: [`routes::dispatch`] matches them itself (see there
/// why), after [`Ingest::arrive`] refuses new work while draining. A bare
/// handler, not a `Router`: even a router's fallback decodes path parameters.
pub fn router(ingest: Ingest) -> impl crate::server::App {
    axum::handler::Handler::with_state(routes::dispatch, ingest)
}

impl Ingest {
    /// First thing in every producer handler, before its path or body is
    /// looked at: takes the request's shutdown token *before* looking whether
    /// shutdown began, so a drain can never miss a request that was let in;
    /// refuses with 503 once draining (the caller answers with [`Ingest::refuse`]); stamps the arrival. The caller holds
    /// the token until its answer is built.
    fn arrive(&self) -> Result<(TaskTrackerToken, Arrival), Error> {
        let work = self.work.token();
        if self.draining.is_cancelled() {
            return Err(Error::Draining);
        }
        let at = Instant::now();
        let arrival = Arrival {
            at,
            deadline: at + self.request_timeout,
        };
        Ok((work, arrival))
    }
}
