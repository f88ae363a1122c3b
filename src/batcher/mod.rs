//! The batcher: per-key buffers of accepted messages (each with its reply
//! handle), flushed by count, bytes, linger, idle or shutdown into [`Batch`]es.
//!
//! Each batch carries an [`InFlight`] ticket; the worker counts each key's
//! tickets to flush adaptively (see [`Pacing`]): a key with spare upstream
//! capacity sends at once, a loaded key's messages gather until a batch comes
//! back. Input is taken in whole runs of what is already queued before any
//! such decision, so a burst after an idle spell leaves as one batch.
//!
//! One worker task owns every buffer, so there is no lock on the hot path.
//! [`batcher`] returns the handle, the worker (unspawned, so tests can drive it
//! under paused time) and the receiver of flushed batches — what happens to a
//! batch next (HTTP, retries) is the upstream's business.

mod in_flight;
mod key;
mod policy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{delay_queue, DelayQueue};

pub use in_flight::InFlight;
use in_flight::Landed;
pub use key::{BatchKey, CREDENTIAL_HEADERS};
pub use policy::{body_len, Decision, Limits, Pacing};

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
    /// Held until the delivery of this batch ends; see [`InFlight`].
    pub in_flight: InFlight,
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

/// Queued submissions taken in one turn before the flush decisions, so that
/// timers and returning batches are still served under a flood of input.
const INPUT_RUN: usize = 1024;

/// A key's buffer and its batches on their way upstream. Kept while either is
/// non-empty, removed when both are.
struct KeyState {
    /// The key this state is filed under (batches carry it).
    key: Arc<BatchKey>,
    messages: Vec<Message>,
    payload: usize,
    /// When the oldest buffered message arrived.
    since: Instant,
    /// When this key's previous batch left (pacing counts its gap from there).
    flushed: Option<Instant>,
    /// Smoothed messages per batch of this key (0 before its first).
    batch: f64,
    /// Smoothed time between this key's batches (none before its second).
    spacing: Option<Duration>,
    /// Wakes the worker to decide again (linger, or the pacing gap).
    timer: Option<delay_queue::Key>,
    in_flight: usize,
    /// Smoothed duration of this key's deliveries (none until one ended).
    rtt: Option<Duration>,
    /// Received in the current input run; its idle decision is pending.
    touched: bool,
}

impl KeyState {
    fn new(key: Arc<BatchKey>) -> KeyState {
        KeyState {
            key,
            messages: Vec::new(),
            payload: 0,
            since: Instant::now(),
            flushed: None,
            batch: 0.0,
            spacing: None,
            timer: None,
            in_flight: 0,
            rtt: None,
            touched: false,
        }
    }
}

/// Where flushed batches go, apart from the buffers so a key's state and the
/// way out can be borrowed together.
struct Outlet {
    out: mpsc::UnboundedSender<Batch>,
    done_tx: mpsc::UnboundedSender<Landed>,
    metrics: Arc<Metrics>,
}

/// Owns the buffers; see the module doc.
pub struct Worker {
    rx: mpsc::UnboundedReceiver<(BatchKey, Vec<Message>)>,
    outlet: Outlet,
    done_rx: mpsc::UnboundedReceiver<Landed>,
    keys: HashMap<Arc<BatchKey>, KeyState>,
    touched: Vec<Arc<BatchKey>>,
    timers: DelayQueue<Arc<BatchKey>>,
    limits: Limits,
    pacing: Pacing,
    shutdown: CancellationToken,
}

/// Builds the batcher: the handle for producers, the worker to spawn, and the
/// receiver of flushed batches.
pub fn batcher(
    limits: Limits,
    pacing: Pacing,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> (BatcherHandle, Worker, mpsc::UnboundedReceiver<Batch>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (out, batches) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let worker = Worker {
        rx,
        outlet: Outlet {
            out,
            done_tx,
            metrics,
        },
        done_rx,
        keys: HashMap::new(),
        touched: Vec::new(),
        timers: DelayQueue::new(),
        limits,
        pacing,
        shutdown,
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
                // Timers before input, so a busy key cannot starve another key's linger;
                // returning batches before input, so freed capacity is used by what waits.
                biased;
                _ = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    let n = self.keys.len();
                    self.flush_all(FlushReason::Shutdown);
                    tracing::info!(keys = n, "shutdown: flushed every buffer");
                }
                Some(expired) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)) => {
                    let key = expired.into_inner();
                    if let Some(state) = self.keys.get_mut(&key) {
                        state.timer = None;
                    }
                    self.review(&key);
                }
                Some((key, took)) = self.done_rx.recv() => self.landed(key, took),
                item = self.rx.recv() => {
                    let Some((key, messages)) = item else { break };
                    self.push(key, messages);
                    for _ in 1..INPUT_RUN {
                        let Ok((key, messages)) = self.rx.try_recv() else { break };
                        self.push(key, messages);
                    }
                    self.settle();
                    if draining {
                        self.flush_all(FlushReason::Shutdown);
                    }
                }
            }
        }
        self.flush_all(FlushReason::Shutdown);
    }

    fn push(&mut self, key: BatchKey, messages: Vec<Message>) {
        // One lookup per submission, not several per message (hashing the key
        // showed in the per-message profile); a new key costs one Arc.
        let state = self
            .keys
            .entry(Arc::new(key))
            .or_insert_with_key(|key| KeyState::new(key.clone()));
        for message in messages {
            let len = message.body.len();
            let count = state.messages.len();
            if let Some(reason) = self.limits.before_push(count, state.payload, len) {
                state.flush(&mut self.timers, &self.outlet, reason);
            }
            if state.messages.is_empty() {
                state.since = Instant::now();
            }
            state.messages.push(message);
            state.payload += len;
            if !state.touched {
                state.touched = true;
                self.touched.push(state.key.clone());
            }
            if let Some(reason) = self.limits.after_push(state.messages.len()) {
                state.flush(&mut self.timers, &self.outlet, reason);
            }
        }
    }

    /// After an input run: each key it touched is reviewed once.
    fn settle(&mut self) {
        for key in std::mem::take(&mut self.touched) {
            if let Some(state) = self.keys.get_mut(&key) {
                state.touched = false;
                self.review(&key);
            }
        }
    }

    /// A batch of `key` finished its delivery after `took`: the key has a slot
    /// more and a fresher round trip; what waits may leave.
    fn landed(&mut self, key: Arc<BatchKey>, took: Duration) {
        let Some(state) = self.keys.get_mut(&key) else {
            return;
        };
        state.in_flight = state.in_flight.saturating_sub(1);
        // Smoothed like TCP's SRTT (7/8 old, 1/8 new).
        state.rtt = Some(state.rtt.map_or(took, |rtt| (rtt * 7 + took) / 8));
        if !state.messages.is_empty() {
            self.review(&key);
        } else if state.in_flight == 0 && !state.touched {
            self.keys.remove(&key);
        }
    }

    /// Applies the pacing decision to a key's buffer: flush it, or set its
    /// timer to when the decision should be made again.
    fn review(&mut self, key: &Arc<BatchKey>) {
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        if state.messages.is_empty() {
            return;
        }
        let since_flush = state.flushed.map(|at| at.elapsed());
        let decision = match self.pacing.decide(
            state.in_flight,
            state.since.elapsed(),
            since_flush,
            state.rtt,
            state.batch,
        ) {
            Decision::Hold(_)
                if self.pacing.gap_filled(
                    state.in_flight,
                    state.messages.len(),
                    state.rtt,
                    state.batch,
                    state.spacing,
                ) =>
            {
                Decision::Flush(FlushReason::Idle)
            }
            decision => decision,
        };
        match decision {
            Decision::Flush(reason) => self.flush(key, reason),
            Decision::Hold(after) => {
                let at = state.since + after;
                match state.timer {
                    Some(ref timer) => self.timers.reset_at(timer, at),
                    None => state.timer = Some(self.timers.insert_at(key.clone(), at)),
                }
            }
        }
    }

    fn flush(&mut self, key: &Arc<BatchKey>, reason: FlushReason) {
        if let Some(state) = self.keys.get_mut(key) {
            state.flush(&mut self.timers, &self.outlet, reason);
        }
    }

    fn flush_all(&mut self, reason: FlushReason) {
        let waiting: Vec<Arc<BatchKey>> = self
            .keys
            .iter()
            .filter(|(_, state)| !state.messages.is_empty())
            .map(|(key, _)| key.clone())
            .collect();
        for key in waiting {
            self.flush(&key, reason);
        }
    }
}

impl KeyState {
    /// Sends what the buffer holds (if anything) as one batch.
    fn flush(
        &mut self,
        timers: &mut DelayQueue<Arc<BatchKey>>,
        outlet: &Outlet,
        reason: FlushReason,
    ) {
        if self.messages.is_empty() {
            return;
        }
        if let Some(timer) = self.timer.take() {
            timers.remove(&timer);
        }
        let messages = std::mem::take(&mut self.messages);
        let payload = std::mem::take(&mut self.payload);
        self.in_flight += 1;
        let now = Instant::now();
        if let Some(previous) = self.flushed {
            let took = now - previous;
            self.spacing = Some(self.spacing.map_or(took, |s| (s * 7 + took) / 8));
        }
        self.flushed = Some(now);
        let n = messages.len() as f64;
        // Smoothed like the round trip; the first batch stands alone.
        self.batch = if self.batch == 0.0 {
            n
        } else {
            (self.batch * 7.0 + n) / 8.0
        };
        outlet.emit(self.key.clone(), messages, payload, reason);
    }
}

impl Outlet {
    fn emit(
        &self,
        key: Arc<BatchKey>,
        messages: Vec<Message>,
        payload: usize,
        reason: FlushReason,
    ) {
        let bytes = body_len(messages.len(), payload);
        self.metrics.batch_sent(reason, messages.len(), bytes);
        tracing::debug!(
            ?key,
            messages = messages.len(),
            bytes,
            reason = reason.as_str(),
            "flush"
        );
        let in_flight = InFlight::new(key.clone(), self.done_tx.clone());
        // If the upstream side is gone the batch is dropped: every Reply answers
        // "not confirmed" and the ticket comes straight back.
        let _ = self.out.send(Batch {
            key,
            messages,
            reason,
            in_flight,
        });
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_adaptive;
