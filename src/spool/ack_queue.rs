//! Acks that nobody awaits one by one ([`Spool::ack_soon`](super::Spool::ack_soon)):
//! a delivered batch's messages are acked together, so the writer gets one
//! wake-up and writes one ledger append per batch instead of one per message.
//!
//! The queue is shared by the handles and the writer thread. Whoever pushes
//! into an empty queue sends one [`Command::AcksQueued`](super::Command) to the
//! writer; later pushes ride along until the writer takes the whole queue
//! (under the same lock, so no id is pushed after a take without its own
//! command following). Each id comes with a value the caller wants kept
//! until the ack is durable (or has failed): inletd's drain token, so a
//! shutdown waits for the acks of what was delivered.

use std::sync::{Mutex, MutexGuard, PoisonError};

use super::record::RecordId;

/// Kept alive until its ack is durable or failed, then dropped.
pub type Keep = Box<dyn Send + 'static>;

#[derive(Default)]
pub(crate) struct AckQueue {
    queued: Mutex<Queued>,
}

#[derive(Default)]
pub(crate) struct Queued {
    pub ids: Vec<RecordId>,
    pub keeps: Vec<Keep>,
}

impl AckQueue {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        // Two plain vectors: a panic elsewhere cannot leave them torn.
        self.queued.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `id`; true when the queue was empty (the caller then tells
    /// the writer).
    pub(crate) fn push(&self, id: RecordId, keep: Keep) -> bool {
        let mut queued = self.lock();
        let first = queued.ids.is_empty();
        queued.ids.push(id);
        queued.keeps.push(keep);
        first
    }

    /// Everything queued, leaving the queue empty.
    pub(crate) fn take(&self) -> Queued {
        std::mem::take(&mut *self.lock())
    }
}
