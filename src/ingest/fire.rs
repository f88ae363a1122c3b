//! Fire-and-forget (`Prefer: respond-async`, or `async_default`): the
//! producer gets `202 Accepted` without waiting for the upstream.
//!
//! - Without `spool_dir`, once the messages are in the batcher (memory only:
//!   lost if the process dies). They are delivered like waiting ones, within
//!   `request_timeout`; their outcome is counted and a failure logged.
//! - With `spool_dir`, only once every message of the request is appended and
//!   `fdatasync`ed ([`Spool::append_for`]): the 202 depends on the disk (and
//!   `max_spool_bytes`), not on memory. If the request's messages can take
//!   their part of the spooled messages' half of the bound at once and none
//!   waits on disk before them, each goes to the batcher with a spooled reply
//!   (acked when delivered, dead-lettered when failed for good); otherwise
//!   they are left on disk, their memory let go, and the feeder
//!   (`replay.rs`) brings them in, in order, as memory frees up.
//!   A request is all-or-nothing for the 202: if one append fails, the
//!   producer gets that error (429 full, 503 write failure) — but the records
//!   already appended are delivered all the same (a retrying producer may send
//!   those twice). The wait for the sync is in the handler (`spooling.rs`),
//!   finished in a task only if the producer hangs up meanwhile.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::admission::Received;
use super::prefer::{PREFERENCE_APPLIED, RESPOND_ASYNC};
use super::spooling::{SpoolJob, Unfinished};
use super::{Arrival, ConnectionId, Ingest, MESSAGE_OVERHEAD};
use crate::batcher::{BatchKey, Message};
use crate::error::Error;
use crate::reply::{Held, Reply};

/// How far ahead "never" is for a deadline that cannot be represented.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `now + age`, saturating far in the future.
pub(super) fn deadline_after(now: Instant, age: Duration) -> Instant {
    now.checked_add(age)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

impl Ingest {
    /// Whether this request is answered 202 without waiting.
    pub(super) fn wants_async(&self, headers: &axum::http::HeaderMap) -> bool {
        self.async_default || super::prefer::respond_async(headers)
    }

    /// Accepts `bodies` (checked and charged) fire-and-forget and answers 202.
    pub(super) async fn fire(
        &self,
        arrival: &Arrival,
        connection_id: &ConnectionId,
        key: BatchKey,
        received: Received,
        bodies: Vec<Bytes>,
    ) -> Result<Response, Error> {
        // No answer entries to build: nothing of the bound is kept for one.
        let (_, shares) = self.shares(received, bodies, 0)?;
        let n = shares.len();
        let durable = self.spool.is_some();
        match &self.spool {
            None => {
                let messages = self.in_memory(arrival, connection_id, shares);
                self.batcher
                    .submit(key, messages)
                    .map_err(|_| Error::Draining)?;
            }
            Some(spool) => {
                // Not a task of its own: `Unfinished` finishes the job in one
                // only if the producer hangs up during the sync.
                let job = SpoolJob::start(self, spool, connection_id.as_str(), key, shares);
                Unfinished(Some(job)).run().await?;
            }
        }
        self.metrics.spool.accepted(durable, n);
        let body = json!({ "accepted": n, "durable": durable });
        let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert(PREFERENCE_APPLIED, HeaderValue::from_static(RESPOND_ASYNC));
        Ok(response)
    }

    pub(super) fn held(
        &self,
        deadline: Instant,
        bytes: usize,
        permit: OwnedSemaphorePermit,
    ) -> Held {
        Held {
            accepted: Instant::now(),
            deadline,
            bytes,
            metrics: self.metrics.clone(),
            permit,
            drain: self.work.token(),
        }
    }

    fn in_memory(
        &self,
        arrival: &Arrival,
        connection_id: &ConnectionId,
        shares: Vec<(Bytes, OwnedSemaphorePermit)>,
    ) -> Vec<Message> {
        let connection: Arc<str> = connection_id.as_str().into();
        shares
            .into_iter()
            .map(|(body, share)| {
                let held = self.held(arrival.deadline, body.len(), share);
                let reply = Reply::in_memory(held, connection.clone());
                Message { body, reply }
            })
            .collect()
    }

    /// The spooled part of the bound for every message of a request, if it
    /// can be had at once.
    pub(super) fn spooled_quota(
        &self,
        shares: &[(Bytes, OwnedSemaphorePermit)],
    ) -> Option<OwnedSemaphorePermit> {
        let total: usize = shares
            .iter()
            .map(|(body, _)| spooled_cost(body.len(), self.spooled_bound))
            .sum();
        let weight = u32::try_from(total).ok()?;
        self.spooled_memory
            .clone()
            .try_acquire_many_owned(weight)
            .ok()
    }
}

/// A spooled message's share of the spooled part of the bound (`bound`):
/// what it costs in memory, at most all of it.
pub(super) fn spooled_cost(len: usize, bound: usize) -> usize {
    len.saturating_add(MESSAGE_OVERHEAD).min(bound)
}
