//! [`InFlight`]: the ticket a flushed [`Batch`](super::Batch) carries upstream.
//! Its drop, when the delivery of that batch ends (answered, failed, or
//! aborted at the drain deadline), tells the worker that the key has one batch
//! fewer on its way, and how long the delivery took — the feedback adaptive
//! flushing runs on.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::BatchKey;

/// One batch of `key` on its way upstream; see the module doc.
pub struct InFlight {
    key: Arc<BatchKey>,
    sent: Instant,
    done: mpsc::UnboundedSender<Landed>,
}

/// A batch's delivery ended: its key and how long it took.
pub(super) type Landed = (Arc<BatchKey>, Duration);

impl InFlight {
    pub(super) fn new(key: Arc<BatchKey>, done: mpsc::UnboundedSender<Landed>) -> InFlight {
        InFlight {
            key,
            sent: Instant::now(),
            done,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // A stopped worker has nothing left to pace.
        let _ = self.done.send((self.key.clone(), self.sent.elapsed()));
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight").field("key", &self.key).finish()
    }
}
