//! Replay at start: the records the spool held undelivered when it was
//! opened go to the batcher again, with spooled replies, under the batch key
//! rebuilt from each record's connection id and credential headers.
//!
//! Memory: each record's share of `max_buffered_bytes` is acquired (waiting)
//! before it is queued, so replay never breaks the bound. The semaphore is
//! fair: while replay waits, freed bytes go to it first, so producers get
//! 429 until the backlog is in the batcher rather than replay starving behind
//! them for ever. The chunk being read is the only thing held outside the
//! bound ([`CHUNK_BYTES`] of bodies at most, plus one record).

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use tokio::time::Instant;

use super::fire::deadline_after;
use super::{Ingest, MESSAGE_OVERHEAD};
use crate::batcher::{BatchKey, Message};
use crate::reply::{Held, Reply, Spooled};
use crate::spool::{Record, Replay, Spool};

/// Bodies read from disk per step.
pub const CHUNK_BYTES: usize = 256 * 1024;

impl Ingest {
    /// Queues every record of `replay` for delivery; stops early when
    /// shutdown begins (what is left stays on disk). Logs the counts.
    pub async fn replay(self, mut replay: Replay, spool: Spool, max_age: Duration) {
        let (mut queued, mut expired) = (0u64, 0u64);
        'chunks: while !self.draining.is_cancelled() {
            let read = tokio::task::spawn_blocking(move || {
                let chunk = replay.next_chunk(CHUNK_BYTES);
                (replay, chunk)
            })
            .await;
            let chunk = match read {
                Ok((back, chunk)) => {
                    replay = back;
                    chunk
                }
                Err(e) => {
                    tracing::error!(error = %e, "spool replay stopped; the rest is replayed at the next start");
                    break;
                }
            };
            if chunk.is_empty() {
                break;
            }
            for (id, mut record) in chunk {
                let cost = (record.body.len() + MESSAGE_OVERHEAD).min(self.bound);
                let weight = u32::try_from(cost).unwrap_or(u32::MAX);
                let permit = tokio::select! {
                    permit = self.permits.clone().acquire_many_owned(weight) => permit,
                    _ = self.draining.cancelled() => break 'chunks,
                };
                let Ok(permit) = permit else { break 'chunks };
                let age = SystemTime::now()
                    .duration_since(record.accepted_at)
                    .unwrap_or(Duration::ZERO);
                let left = max_age.saturating_sub(age);
                expired += u64::from(left.is_zero());
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
                };
                let reply = Reply::spooled(held, spooled);
                if self
                    .batcher
                    .submit(key, vec![Message { body, reply }])
                    .is_err()
                {
                    break 'chunks;
                }
                queued += 1;
                self.metrics.spool.replayed.increment(1);
            }
        }
        tracing::info!(
            queued,
            already_too_old = expired,
            "spool replay done: undelivered messages from before the start are queued for delivery"
        );
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
