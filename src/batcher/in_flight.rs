//! [`InFlight`]: the ticket a flushed [`Batch`](super::Batch) carries upstream.
//! Its drop, when the delivery of that batch ends (answered, failed, or
//! aborted at the drain deadline), tells the worker that the key has one batch
//! fewer on its way — the feedback adaptive flushing runs on.

use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::BatchKey;

/// One batch of `key` on its way upstream; see the module doc.
pub struct InFlight {
    key: Arc<BatchKey>,
    done: mpsc::UnboundedSender<Arc<BatchKey>>,
}

impl InFlight {
    pub(super) fn new(key: Arc<BatchKey>, done: mpsc::UnboundedSender<Arc<BatchKey>>) -> InFlight {
        InFlight { key, done }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // A stopped worker has nothing left to pace.
        let _ = self.done.send(self.key.clone());
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight").field("key", &self.key).finish()
    }
}
