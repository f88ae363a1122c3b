//! A fire-and-forget request's spooled messages between their appends and
//! delivery, in the producer's handler and without a task of its own.
//!
//! The handler queues the appends ([`SpoolJob::start`]), waits for their
//! sync, then hands the durable records to the batcher ([`SpoolJob::deliver`]).
//! A producer that hangs up during the sync cancels the handler; the
//! records may already be written, and must not wait for the next start
//! without a reply. So the job is held by [`Unfinished`], whose `Drop` hands
//! a job still waiting to a task that finishes it: the common path costs no
//! task, the hang-up keeps the guarantee the per-request task gave.

use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::fire::{deadline_after, spooled_cost};
use super::Ingest;
use crate::batcher::{BatchKey, Message};
use crate::error::Error;
use crate::reply::{Reply, Spooled};
use crate::spool::{Appended, Appending, Record, Spool, SpoolError};

/// One request's spooled messages: their appends, and what delivery needs.
pub(super) struct SpoolJob {
    ingest: Ingest,
    spool: Spool,
    key: BatchKey,
    shares: Vec<(Bytes, OwnedSemaphorePermit)>,
    records: Vec<Record>,
    /// Their part of the spooled messages' half of the bound, if it could
    /// be had for all of them at once.
    quota: Option<OwnedSemaphorePermit>,
    appends: Vec<Appending>,
}

impl SpoolJob {
    /// Queues every message's append (back to back: one group commit
    /// covers them, and they are all delivered now or all left on disk).
    pub(super) fn start(
        ingest: &Ingest,
        spool: &Spool,
        connection_id: &str,
        key: BatchKey,
        shares: Vec<(Bytes, OwnedSemaphorePermit)>,
    ) -> SpoolJob {
        let accepted_at = SystemTime::now();
        let records: Vec<Record> = shares
            .iter()
            .map(|(body, _)| Record {
                connection_id: connection_id.to_owned(),
                credentials: key.credentials().to_vec(),
                body: body.clone(),
                accepted_at,
            })
            .collect();
        let quota = ingest.spooled_quota(&shares);
        let appends = spool.append_all(&records, quota.is_some());
        SpoolJob {
            ingest: ingest.clone(),
            spool: spool.clone(),
            key,
            shares,
            records,
            quota,
            appends,
        }
    }

    /// Waits until every append is durable or failed. Cancel-safe: the
    /// appends keep their state, so another task can wait again.
    async fn wait(&mut self) -> Vec<Result<Appended, SpoolError>> {
        futures_util::future::join_all(self.appends.iter_mut()).await
    }

    /// Hands the durable records to delivery (those told to wait on disk are
    /// left to the feeder, their share let go here) and returns the first
    /// failure, if any.
    fn deliver(self, appended: Vec<Result<Appended, SpoolError>>) -> Result<(), Error> {
        let SpoolJob {
            ingest,
            spool,
            key,
            shares,
            records,
            mut quota,
            ..
        } = self;
        let deadline = deadline_after(Instant::now(), ingest.spool_max_age);
        let mut failed = None;
        let mut messages = Vec::with_capacity(shares.len());
        for (((body, share), mut record), appended) in shares.into_iter().zip(records).zip(appended)
        {
            match appended {
                Ok(Appended {
                    id,
                    deliver_now: true,
                }) => {
                    // The reply keeps what a dead letter needs, never the credentials.
                    record.credentials = Vec::new();
                    let cost = spooled_cost(body.len(), ingest.spooled_bound);
                    let quota = quota.as_mut().and_then(|q| q.split(cost));
                    let held = ingest.held(deadline, body.len(), share);
                    let spooled = Spooled {
                        id,
                        spool: spool.clone(),
                        record,
                        quota,
                    };
                    let reply = Reply::spooled(held, spooled);
                    messages.push(Message { body, reply });
                }
                // On disk only, its share dropped here: the feeder brings it in.
                Ok(_) => {}
                Err(e) => {
                    if failed.is_none() {
                        let connection_id = &record.connection_id;
                        tracing::warn!(%connection_id, error = %e, "cannot spool a message");
                        failed = Some(Error::Spool(e));
                    }
                }
            }
        }
        if !messages.is_empty() {
            // Refused only once draining: the records are replayed at the next start.
            ingest
                .batcher
                .submit(key, messages)
                .map_err(|_| Error::Draining)?;
        }
        failed.map_or(Ok(()), Err)
    }
}

/// A [`SpoolJob`] that must be finished even if its handler is not.
pub(super) struct Unfinished(pub(super) Option<SpoolJob>);

impl Unfinished {
    /// Waits for the appends and delivers; what the producer is told.
    pub(super) async fn run(mut self) -> Result<(), Error> {
        let appended = match self.0.as_mut() {
            Some(job) => job.wait().await,
            None => return Ok(()),
        };
        match self.0.take() {
            Some(job) => job.deliver(appended),
            None => Ok(()),
        }
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(mut job) = self.0.take() else {
            return;
        };
        // Cancelled mid-sync (the producer hung up): finish in a task. Outside
        // a runtime (it is shutting down) the records wait for the next start.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let appended = job.wait().await;
                // The producer is gone: a failure was logged by deliver.
                let _ = job.deliver(appended);
            });
        }
    }
}
