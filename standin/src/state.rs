//! What the stand-in remembers: recorded requests, delivered messages, the fault
//! queue, how often each directive message was seen, counters and id minting.
//! Everything sits behind one std `Mutex` held only for short, allocation-light
//! sections; [`StandInHandle`] is the outside view of it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{Fault, StandInConfig};

/// One ingestion request as it arrived, and the status it was answered with.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The request path, e.g. `/collection/batch/{id}`.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// Header names are lower-case; values that are not UTF-8 are converted lossily.
    pub headers: Vec<(String, String)>,
    /// The body as received (empty if it was too large to read at all).
    pub body: Bytes,
    /// The status answered; 0 while no answer has been sent (still waiting,
    /// held by [`Fault::Hang`], or the client went away first).
    pub status: u16,
    /// Messages found in the body (0 when it could not be read as messages).
    pub message_count: usize,
    /// The HTTP version it came with: `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
}

/// One message the stand-in accepted and gave an `xactionId`.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// The `{id}` of the request path.
    pub connection_id: String,
    /// The `xactionId` answered for this message.
    pub xaction_id: String,
    /// The message's raw JSON text exactly as received (raw bytes, lossily
    /// decoded, for `x-adobe-flow-id` data).
    pub message: String,
    /// The request's `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// Counters kept even when recording is off.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counters {
    pub requests: u64,
    pub batch_requests: u64,
    pub delivered: u64,
}

#[derive(Default)]
struct Inner {
    /// `requests[i]` has sequence number `first_seq + i`.
    requests: Vec<RecordedRequest>,
    first_seq: u64,
    next_seq: u64,
    delivered: Vec<Delivered>,
    faults: VecDeque<Fault>,
    /// Directive messages (raw text) -> times seen so far.
    seen: HashMap<String, u64>,
    /// Message id (`body.xdmEntity._id`) -> the `xactionId` of each delivery.
    by_id: HashMap<String, Vec<String>>,
    /// Requests that reached the redirect target.
    redirected: Vec<RecordedRequest>,
    counters: Counters,
}

/// Counts requests in progress; the high-water mark shows a client's concurrency limit.
#[derive(Default)]
pub(super) struct Concurrency {
    now: AtomicU64,
    max: AtomicU64,
    connections: AtomicU64,
}

impl Concurrency {
    /// Counts one accepted TCP connection (a client that pools keep-alive
    /// connections opens few).
    pub fn connection_accepted(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts one request until the guard drops (answered, or abandoned by the client).
    pub fn enter(&self) -> ConcurrencyGuard<'_> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        ConcurrencyGuard(self)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }
}

pub(super) struct ConcurrencyGuard<'a>(&'a Concurrency);

impl Drop for ConcurrencyGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) struct Shared {
    pub config: StandInConfig,
    /// Cancelled when `run`'s shutdown future resolves.
    pub shutdown: CancellationToken,
    /// Ingestion requests being answered right now, and the most ever at once.
    pub concurrency: Concurrency,
    /// `http://host:port` of the redirect target ([`Fault::Redirect`]).
    pub redirect_base: String,
    /// The IMS token endpoint's memory (see `ims.rs`).
    pub issuer: crate::ims::Issuer,
    salt: u32,
    next_id: AtomicU64,
    inner: Mutex<Inner>,
}

impl Shared {
    pub fn new(config: StandInConfig) -> Self {
        Shared {
            config,
            shutdown: CancellationToken::new(),
            concurrency: Concurrency::default(),
            redirect_base: String::new(),
            issuer: crate::ims::Issuer::default(),
            salt: rand::random(),
            next_id: AtomicU64::new(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not make the stand-in useless.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh `xactionId`; it deliberately does not share the `batchId` prefix.
    pub fn next_xaction_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{n:010x}", self.salt)
    }

    pub fn next_batch_id(&self, received_ms: u64) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{received_ms}:{n}:{:08x}", self.salt.rotate_left(16))
    }

    /// The fault the arriving request must suffer, if any is queued (taken
    /// before its body is read, so a fault can act while it is being read).
    pub fn take_fault(&self) -> Option<Fault> {
        self.lock().faults.pop_front()
    }

    /// Registers an ingestion request; returns its sequence number.
    pub fn arrive(&self, batch: bool, record: Option<RecordedRequest>) -> u64 {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.counters.requests += 1;
        if batch {
            inner.counters.batch_requests += 1;
        }
        if let Some(record) = record {
            inner.requests.push(record);
        } else {
            // Nothing recorded: keep `requests[i] <-> first_seq + i` true.
            inner.first_seq = inner.next_seq;
        }
        seq
    }

    pub fn record_redirected(&self, record: RecordedRequest) {
        self.lock().redirected.push(record);
    }

    /// Fills in the answer of request `seq` (ignored if it was reset away).
    pub fn finish(&self, seq: u64, status: u16, message_count: usize) {
        let mut inner = self.lock();
        let Some(index) = seq.checked_sub(inner.first_seq) else {
            return;
        };
        if let Some(rec) = usize::try_from(index)
            .ok()
            .and_then(|i| inner.requests.get_mut(i))
        {
            rec.status = status;
            rec.message_count = message_count;
        }
    }

    /// For each directive `(raw message, times)`: should it fail this time?
    /// `times: None` always fails. With `commit` the sighting is counted.
    pub fn directive_fails<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a str, Option<u64>)>,
        commit: bool,
    ) -> Vec<bool> {
        let mut inner = self.lock();
        let mut pending: HashMap<&str, u64> = HashMap::new();
        items
            .into_iter()
            .map(|(raw, times)| {
                let Some(times) = times else { return true };
                let stored = inner.seen.get(raw).copied().unwrap_or(0);
                let extra = pending.entry(raw).or_insert(0);
                let seen = stored + *extra;
                let fails = seen < times;
                if fails {
                    if commit {
                        *inner.seen.entry(raw.to_owned()).or_insert(0) += 1;
                    } else {
                        // Dry run: count repeats within this request only.
                        *extra += 1;
                    }
                }
                fails
            })
            .collect()
    }

    /// Counts `count` delivered messages and keeps `records` (empty when not recording).
    pub fn deliver(&self, count: usize, records: Vec<Delivered>) {
        let mut inner = self.lock();
        inner.counters.delivered += count as u64;
        for record in &records {
            if let Some(id) = message_id(&record.message) {
                let ids = inner.by_id.entry(id).or_default();
                ids.push(record.xaction_id.clone());
            }
        }
        inner.delivered.extend(records);
    }

    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) -> usize {
        let mut inner = self.lock();
        inner.faults.extend(faults);
        inner.faults.len()
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    pub fn reset(&self) {
        let mut inner = self.lock();
        let next_seq = inner.next_seq;
        *inner = Inner {
            first_seq: next_seq,
            next_seq,
            ..Inner::default()
        };
    }
}

/// A message's `body.xdmEntity._id`, if it has a string one.
pub(crate) fn message_id(raw: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(raw).ok()?;
    let id = value.get("body")?.get("xdmEntity")?.get("_id")?;
    id.as_str().map(str::to_owned)
}

/// A cheap, cloneable view of a stand-in: inject faults, read what it received.
#[derive(Clone)]
pub struct StandInHandle {
    shared: Arc<Shared>,
}

impl StandInHandle {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        StandInHandle { shared }
    }

    /// The IMS token endpoint: its records and faults on demand.
    pub fn ims(&self) -> crate::ImsHandle<'_> {
        crate::ImsHandle(&self.shared.issuer)
    }

    /// Queues faults; each ingestion request (batch or single) pops one, in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.push_faults(faults);
    }

    /// Every ingestion request received, in arrival order (empty when not recording).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Every message accepted with an `xactionId`, in order (empty when not recording).
    pub fn delivered(&self) -> Vec<Delivered> {
        self.shared.lock().delivered.clone()
    }

    /// Per message id (`body.xdmEntity._id`), the `xactionId` of each time it
    /// was delivered (empty when not recording).
    pub fn deliveries_by_id(&self) -> HashMap<String, Vec<String>> {
        self.shared.lock().by_id.clone()
    }

    /// Every request that reached the redirect target of [`Fault::Redirect`].
    pub fn redirected(&self) -> Vec<RecordedRequest> {
        self.shared.lock().redirected.clone()
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.shared.concurrency.connections.load(Ordering::SeqCst) as usize
    }

    /// The most ingestion requests the stand-in was answering at once.
    pub fn max_concurrent_requests(&self) -> usize {
        self.shared.concurrency.max() as usize
    }

    /// Number of `POST /collection/batch/*` received (counted even when not recording).
    pub fn batch_requests(&self) -> usize {
        self.shared.lock().counters.batch_requests as usize
    }

    /// Clears records, counters, queued faults and directive sightings.
    pub fn reset(&self) {
        self.shared.reset();
    }
}
