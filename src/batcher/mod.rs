//! The batcher: per-key buffers of accepted messages (each with its reply
//! handle), flushed by count, bytes, linger or shutdown into [`Batch`]es.
//!
//! One worker task owns every buffer, so there is no lock on the hot path.
//! [`batcher`] returns the handle, the worker (unspawned, so tests can drive it
//! under paused time) and the receiver of flushed batches — what happens to a
//! batch next (HTTP, retries) is the upstream's business.

mod key;
mod policy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{delay_queue, DelayQueue};

pub use key::{BatchKey, CREDENTIAL_HEADERS};
pub use policy::{body_len, Limits};

use crate::metrics::{FlushReason, Metrics};
use crate::reply::Reply;

/// One accepted message: its bytes exactly as received, and who waits for it.
#[derive(Debug)]
pub struct Message {
    pub body: Bytes,
    pub reply: Reply,
}

/// Messages of one key on their way upstream.
#[derive(Debug)]
pub struct Batch {
    pub key: Arc<BatchKey>,
    pub messages: Vec<Message>,
    pub reason: FlushReason,
}

/// The producers' side: hands accepted messages to the worker.
#[derive(Clone, Debug)]
pub struct BatcherHandle {
    tx: mpsc::UnboundedSender<(BatchKey, Vec<Message>)>,
}

impl BatcherHandle {
    /// Queues messages of one key, in order. Fails (handing them back) only
    /// when the worker has stopped.
    pub fn submit(&self, key: BatchKey, messages: Vec<Message>) -> Result<(), Vec<Message>> {
        self.tx.send((key, messages)).map_err(|e| e.0 .1)
    }
}

struct Buffer {
    messages: Vec<Message>,
    payload: usize,
    timer: Option<delay_queue::Key>,
}

/// Owns the buffers; see the module doc.
pub struct Worker {
    rx: mpsc::UnboundedReceiver<(BatchKey, Vec<Message>)>,
    out: mpsc::UnboundedSender<Batch>,
    buffers: HashMap<Arc<BatchKey>, Buffer>,
    timers: DelayQueue<Arc<BatchKey>>,
    limits: Limits,
    linger: Duration,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

/// Builds the batcher: the handle for producers, the worker to spawn, and the
/// receiver of flushed batches.
pub fn batcher(
    limits: Limits,
    linger: Duration,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> (BatcherHandle, Worker, mpsc::UnboundedReceiver<Batch>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (out, batches) = mpsc::unbounded_channel();
    let worker = Worker {
        rx,
        out,
        buffers: HashMap::new(),
        timers: DelayQueue::new(),
        limits,
        linger,
        shutdown,
        metrics,
    };
    (BatcherHandle { tx }, worker, batches)
}

impl Worker {
    /// Runs until every [`BatcherHandle`] is dropped. On shutdown it flushes
    /// every buffer at once, then sends whatever still arrives without waiting.
    pub async fn run(mut self) {
        let mut draining = false;
        loop {
            tokio::select! {
                // Timers before input, so a busy key cannot starve another key's linger.
                biased;
                _ = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    let n = self.buffers.len();
                    self.flush_all(FlushReason::Shutdown);
                    tracing::info!(keys = n, "shutdown: flushed every buffer");
                }
                Some(expired) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)) => {
                    let key = expired.into_inner();
                    if let Some(buffer) = self.buffers.get_mut(&key) {
                        buffer.timer = None;
                    }
                    self.flush(&key, FlushReason::Linger);
                }
                item = self.rx.recv() => match item {
                    Some((key, messages)) => {
                        self.push(key, messages);
                        if draining {
                            self.flush_all(FlushReason::Shutdown);
                        }
                    }
                    None => break,
                },
            }
        }
        self.flush_all(FlushReason::Shutdown);
    }

    fn push(&mut self, key: BatchKey, messages: Vec<Message>) {
        let key = match self.buffers.get_key_value(&key) {
            Some((k, _)) => k.clone(),
            None => Arc::new(key),
        };
        for message in messages {
            let len = message.body.len();
            let (count, payload) = self
                .buffers
                .get(&key)
                .map_or((0, 0), |b| (b.messages.len(), b.payload));
            if let Some(reason) = self.limits.before_push(count, payload, len) {
                self.flush(&key, reason);
            }
            let buffer = self.buffers.entry(key.clone()).or_insert_with(|| Buffer {
                messages: Vec::new(),
                payload: 0,
                timer: None,
            });
            if buffer.timer.is_none() {
                buffer.timer = Some(self.timers.insert(key.clone(), self.linger));
            }
            buffer.messages.push(message);
            buffer.payload += len;
            if let Some(reason) = self.limits.after_push(buffer.messages.len()) {
                self.flush(&key, reason);
            }
        }
    }

    fn flush(&mut self, key: &Arc<BatchKey>, reason: FlushReason) {
        let Some(buffer) = self.buffers.remove(key) else {
            return;
        };
        if let Some(timer) = buffer.timer {
            self.timers.remove(&timer);
        }
        self.emit(key.clone(), buffer, reason);
    }

    fn flush_all(&mut self, reason: FlushReason) {
        self.timers.clear();
        for (key, buffer) in std::mem::take(&mut self.buffers) {
            self.emit(key, buffer, reason);
        }
    }

    fn emit(&mut self, key: Arc<BatchKey>, buffer: Buffer, reason: FlushReason) {
        if buffer.messages.is_empty() {
            return;
        }
        let bytes = body_len(buffer.messages.len(), buffer.payload);
        self.metrics
            .batch_sent(reason, buffer.messages.len(), bytes);
        tracing::debug!(
            ?key,
            messages = buffer.messages.len(),
            bytes,
            reason = reason.as_str(),
            "flush"
        );
        // If the upstream side is gone the batch is dropped and every Reply answers "not confirmed".
        let _ = self.out.send(Batch {
            key,
            messages: buffer.messages,
            reason,
        });
    }
}

#[cfg(test)]
mod tests;
