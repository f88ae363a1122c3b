//! The feeder: spooled records that wait on disk only go to the batcher,
//! in order, with spooled replies, under the batch key rebuilt from each
//! record's connection id and credential headers. At start that is
//! everything undelivered; afterwards, what producers' spooled messages left
//! on disk while memory was short (`fire.rs`). One task, for the spool's life.
//!
//! Memory: each record takes its share of the spooled messages' part of the
//! bound ([`Ingest::spooled_memory`], half of `max_buffered_bytes`), then its
//! share of the bound itself, waiting for both; so spooled messages never
//! take more than half of the bound and the rest stays for requests being
//! read (whose spooled messages get their 202 from the disk meanwhile) and
//! for waiting producers. The chunk being read is the only thing held
//! outside the bound ([`CHUNK_BYTES`] of bodies at most, plus one record).

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::fire::deadline_after;
use super::{Ingest, MESSAGE_OVERHEAD};
use crate::batcher::{BatchKey, Message};
use crate::reply::{Held, Reply, Spooled};
use crate::spool::{Feed, Record, RecordId, Spool};

/// Bodies read from disk per step.
pub const CHUNK_BYTES: usize = 256 * 1024;

impl Ingest {
    /// Feeds every record waiting on disk to delivery, for as long as the
    /// spool is open; stops when shutdown begins (what is left stays on disk).
    pub async fn feed(self, mut feed: Feed, spool: Spool, max_age: Duration) {
        let signal = feed.signal();
        let (mut queued, mut expired, mut first) = (0u64, 0u64, true);
        while !self.draining.is_cancelled() {
            let read = tokio::task::spawn_blocking(move || {
                let chunk = feed.next_chunk(CHUNK_BYTES);
                (feed, chunk)
            })
            .await;
            let chunk = match read {
                Ok((back, chunk)) => {
                    feed = back;
                    chunk
                }
                Err(e) => {
                    // Its end before the drain fails /healthz (it runs supervised).
                    tracing::error!(error = %e, "the spool feeder stopped; what waits on disk is delivered after the next start");
                    return;
                }
            };
            if chunk.is_empty() {
                if first || queued > 0 {
                    tracing::info!(
                        queued,
                        already_too_old = expired,
                        "spooled messages that waited on disk are all queued for delivery"
                    );
                }
                (queued, expired, first) = (0, 0, false);
                tokio::select! {
                    () = signal.changed() => continue,
                    () = self.draining.cancelled() => return,
                }
            }
            for (id, record) in chunk {
                let Some((quota, permit)) = self.memory_for(record.body.len()).await else {
                    return;
                };
                let age = SystemTime::now()
                    .duration_since(record.accepted_at)
                    .unwrap_or(Duration::ZERO);
                let left = max_age.saturating_sub(age);
                expired += u64::from(left.is_zero());
                if !self.hand_over(id, record, &spool, left, quota, permit) {
                    return;
                }
                queued += 1;
                self.metrics.spool.replayed.increment(1);
            }
        }
    }

    /// Waits for a record's share of the spooled part of the bound, then of
    /// the bound itself. `None` once draining.
    async fn memory_for(&self, len: usize) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let cost = (len + MESSAGE_OVERHEAD).min(self.bound);
        let weight = |cost: usize| u32::try_from(cost).unwrap_or(u32::MAX);
        let quota_cost = cost.min(self.spooled_bound);
        let quota = self
            .spooled_memory
            .clone()
            .acquire_many_owned(weight(quota_cost));
        let quota = tokio::select! {
            quota = quota => quota.ok()?,
            () = self.draining.cancelled() => return None,
        };
        let permit = tokio::select! {
            permit = self.permits.clone().acquire_many_owned(weight(cost)) => permit.ok()?,
            () = self.draining.cancelled() => return None,
        };
        Some((quota, permit))
    }

    /// Queues one record read from disk; false once the batcher refuses (draining).
    fn hand_over(
        &self,
        id: RecordId,
        mut record: Record,
        spool: &Spool,
        left: Duration,
        quota: OwnedSemaphorePermit,
        permit: OwnedSemaphorePermit,
    ) -> bool {
        let key = key_of(&record);
        // The reply keeps what a dead letter needs, never the credentials.
        record.credentials = Vec::new();
        let body = record.body.clone();
        let held = Held {
            accepted: Instant::now(),
            deadline: deadline_after(Instant::now(), left),
            bytes: body.len(),
            metrics: self.metrics.clone(),
            permit,
            drain: self.work.token(),
        };
        let spooled = Spooled {
            id,
            spool: spool.clone(),
            record,
            quota: Some(quota),
        };
        let reply = Reply::spooled(held, spooled);
        self.batcher
            .submit(key, vec![Message { body, reply }])
            .is_ok()
    }
}

/// The batch key a record was spooled under.
fn key_of(record: &Record) -> BatchKey {
    let mut headers = HeaderMap::with_capacity(record.credentials.len());
    for (name, value) in &record.credentials {
        headers.append(name.clone(), value.clone());
    }
    BatchKey::new(&record.connection_id, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    #[test]
    fn a_replayed_record_travels_under_its_original_key() {
        let mut headers = HeaderMap::new();
        headers.append("authorization", HeaderValue::from_static("Bearer a"));
        headers.append("x-api-key", HeaderValue::from_static("k1"));
        headers.append("x-api-key", HeaderValue::from_static("k2"));
        headers.append("x-sandbox-name", HeaderValue::from_static("prod"));
        let original = BatchKey::new("conn", &headers);
        let record = Record {
            connection_id: "conn".into(),
            credentials: original.credentials().to_vec(),
            body: bytes::Bytes::from_static(b"{}"),
            accepted_at: SystemTime::now(),
        };
        assert_eq!(key_of(&record), original);
        let other = vec![(
            HeaderName::from_static("authorization"),
            HeaderValue::from_static("Bearer b"),
        )];
        let record = Record {
            credentials: other,
            ..record
        };
        assert_ne!(key_of(&record), original);
    }
}
