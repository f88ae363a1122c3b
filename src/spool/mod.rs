//! The durable spool: the storage engine behind fire-and-forget
//! with `spool_dir`. It owns the files in `spool_dir` and nothing else: no
//! HTTP, no delivery, no metrics registry (the caller reads [`SpoolStats`]).
//!
//! - `record`: a message, its frame on disk (length prefix + CRC) and the scan
//!   that skips damaged stretches.
//! - `writer`: one thread owns every file; it drains all queued commands and
//!   writes them as one group (group commit); `syncer` runs the group's
//!   `fdatasync` on a small pool, overlapping the next groups', and
//!   `pipeline` answers each group, in write order, only after a sync that
//!   started after its write returned.
//! - `ledger`: acks, synced before any segment is deleted; `ack_queue`: the
//!   acks of [`Spool::ack_soon`], taken by the writer in one go.
//! - `appending`: an append as a future another task can finish.
//! - `recovery`: [`Spool::open`], which also builds the [`Feed`].
//! - `tail` and `feed`: records left on disk (at open, and while memory is
//!   short) read back in order for delivery, without the writer's files.
//! - [`dead_letter`]: `dead-letter.jsonl`, written here and read back for resends.
//! - `storage`: the file operations tests replace to inject faults.
//!
//! Files: `segment-<seq>.log` (rolled past `segment_bytes`), `acks.log`,
//! `dead-letter.jsonl`, all `0600` in a `0700` directory.
//!
//! How a caller uses it:
//!
//! 1. At start, [`Spool::open`] (blocking). An [`OpenError`] names `spool_dir`
//!    and means the directory is unusable; damaged content never fails it.
//! 2. Run one feeder over the [`Feed`]: [`Feed::next_chunk`] from
//!    `spawn_blocking`, each record handed to delivery with its [`RecordId`]
//!    once its memory is had; an empty chunk means nothing waits on disk,
//!    then wait for [`FeedSignal::changed`]. It starts with what was
//!    undelivered at open.
//! 3. For a producer: [`Spool::append_all`] (or [`Spool::append_for`]),
//!    saying whether the caller holds the memory to deliver the messages
//!    now; the 202 waits for each `Ok(Appended)`. `deliver_now`: the caller hands it to delivery;
//!    otherwise it waits on disk for the feeder (so do all later ones until
//!    the feeder caught up, which keeps the order). `Full` → 429 with
//!    `Retry-After`, `Io` or `Closed` → 503, `Encode` → 413.
//! 4. Delivered: [`Spool::ack`], or [`Spool::ack_soon`] (not awaited; the
//!    acks made together go to the ledger as one group). Failed for good:
//!    [`Spool::dead_letter`], then `ack`. An ack that fails only means a
//!    duplicate after a restart.
//! 5. On SIGTERM: [`Spool::close`]; undelivered records stay for the next start.

mod ack_queue;
mod acks;
mod appending;
pub mod dead_letter;
mod feed;
mod ledger;
mod pipeline;
mod record;
mod recovery;
mod storage;
mod syncer;
mod tail;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

pub use ack_queue::Keep;
pub use appending::Appending;
pub use dead_letter::{DeadLetter, DeadLetterReader};
pub use feed::Feed;
pub use record::{EncodeError, Record, RecordId};
pub use storage::{FileKind, RealStorage, Storage};
pub use tail::FeedSignal;

/// A callback told how long each segment `fdatasync` took (for
/// `inletd_spool_sync_seconds`; several may overlap). Runs on the writer
/// thread: keep it cheap.
pub type SyncObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// How to open a spool.
#[derive(Clone)]
pub struct SpoolOptions {
    /// `spool_dir`: created `0700` if missing.
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// `max_spool_bytes`: appends that would pass it fail with [`SpoolError::Full`].
    pub max_spool_bytes: u64,
    /// Largest record payload accepted (and believed when reading a length back).
    pub max_record_bytes: usize,
    /// The ack ledger is rewritten (compacted) once it passes this size and
    /// holds mostly acks of deleted segments.
    pub ledger_rewrite_bytes: u64,
    pub storage: Arc<dyn Storage>,
    pub on_sync: Option<SyncObserver>,
}

impl SpoolOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolOptions {
            dir: dir.into(),
            segment_bytes: 8 << 20,
            max_spool_bytes: 1 << 30,
            max_record_bytes: 16 << 20,
            ledger_rewrite_bytes: 1 << 20,
            storage: Arc::new(RealStorage),
            on_sync: None,
        }
    }
}

impl fmt::Debug for SpoolOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpoolOptions")
            .field("dir", &self.dir)
            .field("segment_bytes", &self.segment_bytes)
            .field("max_spool_bytes", &self.max_spool_bytes)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("ledger_rewrite_bytes", &self.ledger_rewrite_bytes)
            .finish_non_exhaustive()
    }
}

/// Why an append, ack or dead letter did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// `max_spool_bytes` reached (the caller answers 429).
    #[error("the spool is full (max_spool_bytes is {max} bytes)")]
    Full { max: u64 },
    #[error("the message cannot be spooled: {0}")]
    Encode(#[from] EncodeError),
    /// A write or sync failed (disk full, EIO): nothing of this call is
    /// promised (the caller answers 503). Later calls try again.
    #[error("the spool could not write to disk: {0}")]
    Io(Arc<io::Error>),
    #[error("the spool is closed")]
    Closed,
}

/// Opening failed: the directory cannot be used at all (never because of
/// what the files in it hold).
#[derive(Debug, thiserror::Error)]
#[error("spool_dir {}: {what}: {source}", dir.display())]
pub struct OpenError {
    pub dir: PathBuf,
    pub what: &'static str,
    #[source]
    pub source: io::Error,
}

/// Gauges and counters for the caller to export. All reads are relaxed snapshots.
#[derive(Debug, Default)]
pub struct SpoolStats {
    pub(crate) bytes: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) synced_messages: AtomicU64,
    pub(crate) sync_nanos: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) waiting: AtomicU64,
}

impl SpoolStats {
    /// Bytes of segments on disk plus appends under way (`inletd_spool_bytes`).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// Records spooled and not yet acknowledged (`inletd_spool_messages`).
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }
    /// Damaged records and ledger entries seen since open
    /// (`inletd_spool_corrupt_records_total`).
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }
    /// Segment syncs that succeeded.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
    /// Records made durable by those syncs; divided by [`Self::syncs`] it is
    /// the group-commit factor (messages per fsync).
    pub fn synced_messages(&self) -> u64 {
        self.synced_messages.load(Ordering::Relaxed)
    }
    /// Total time spent in segment syncs (they overlap: this can pass the
    /// wall-clock time).
    pub fn sync_time(&self) -> Duration {
        Duration::from_nanos(self.sync_nanos.load(Ordering::Relaxed))
    }
    /// Records waiting on disk only for the feeder (not in memory); part of
    /// [`Self::messages`] (`inletd_spool_waiting_on_disk_messages`).
    pub fn waiting_on_disk(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }
    /// Dead letters written since open (`inletd_dead_letters_total`).
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.load(Ordering::Relaxed)
    }
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, SpoolError>>;

/// What the handle asks of the writer thread.
pub(crate) enum Command {
    Append {
        frame: Vec<u8>,
        memory: bool,
        reply: Reply<Appended>,
    },
    Ack {
        id: RecordId,
        reply: Reply<()>,
    },
    /// The [`ack_queue::AckQueue`] went from empty to not: take it.
    AcksQueued,
    DeadLetter {
        line: Vec<u8>,
        reply: Reply<()>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// A durable append: where the record is, and whether its caller hands it to
/// delivery now (`false`: it waits on disk; the feeder brings it in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub id: RecordId,
    pub deliver_now: bool,
}

/// A handle to an open spool; clones share the same writer.
#[derive(Clone)]
pub struct Spool {
    tx: crossbeam_channel::Sender<Command>,
    /// Held while one request's appends are queued, so they are contiguous
    /// in the file and all share one decision (delivered now, or on disk).
    queueing: Arc<std::sync::Mutex<()>>,
    /// Acks of [`Spool::ack_soon`], taken by the writer in one go.
    acks: Arc<ack_queue::AckQueue>,
    stats: Arc<SpoolStats>,
    max_spool_bytes: u64,
    max_record_bytes: usize,
}

impl fmt::Debug for Spool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spool")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens `spool_dir`: reads what is there, forgets what is acknowledged,
    /// and returns the handle plus the [`Feed`], which starts with everything
    /// undelivered. Blocking (it reads the segments once); call it before serving.
    pub fn open(options: SpoolOptions) -> Result<(Spool, Feed), OpenError> {
        recovery::open(options)
    }

    /// [`Spool::append_for`] by a caller holding the memory, that only needs
    /// the id (it ignores `deliver_now`: not for callers sharing delivery with a feeder).
    pub fn append(
        &self,
        record: &Record,
    ) -> impl Future<Output = Result<RecordId, SpoolError>> + Send + 'static {
        let appended = self.append_for(record, true);
        async move { appended.await.map(|a| a.id) }
    }

    /// Queues `record` at once (failing at once when full or too large) and
    /// resolves only after the sync covering it returned. `memory`: whether
    /// the caller holds the memory to deliver it now; the answer says if it
    /// should ([`Appended::deliver_now`]) or leave it to the feeder.
    /// Dropping the future does not withdraw the record: if it is written,
    /// it is replayed at the next open (at least once, never lost).
    pub fn append_for(
        &self,
        record: &Record,
        memory: bool,
    ) -> impl Future<Output = Result<Appended, SpoolError>> + Send + 'static {
        let queued = self.enqueue_append(record, memory);
        async move { queued?.await.unwrap_or(Err(SpoolError::Closed)) }
    }

    /// [`Spool::append_for`] for each of `records`, queued back to back (no
    /// other caller's record between them), so they are either all
    /// delivered now or all left to the feeder, and keep their order.
    pub fn append_all(&self, records: &[Record], memory: bool) -> Vec<Appending> {
        // Encoded before the lock: only the queueing is serialised.
        let frames: Vec<_> = records
            .iter()
            .map(|record| record.encode(self.max_record_bytes))
            .collect();
        let _queueing = self
            .queueing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        frames
            .into_iter()
            .map(|frame| {
                let queued = frame
                    .map_err(SpoolError::from)
                    .and_then(|frame| self.enqueue_frame(frame, memory));
                Appending::new(queued)
            })
            .collect()
    }

    fn enqueue_append(
        &self,
        record: &Record,
        memory: bool,
    ) -> Result<oneshot::Receiver<Result<Appended, SpoolError>>, SpoolError> {
        self.enqueue_frame(record.encode(self.max_record_bytes)?, memory)
    }

    fn enqueue_frame(
        &self,
        frame: Vec<u8>,
        memory: bool,
    ) -> Result<oneshot::Receiver<Result<Appended, SpoolError>>, SpoolError> {
        let len = frame.len() as u64;
        let max = self.max_spool_bytes;
        self.stats
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(len).filter(|after| *after <= max)
            })
            .map_err(|_| SpoolError::Full { max })?;
        let (reply, rx) = oneshot::channel();
        let append = Command::Append {
            frame,
            memory,
            reply,
        };
        if self.tx.send(append).is_err() {
            self.stats.bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(SpoolError::Closed);
        }
        Ok(rx)
    }

    /// Marks a record delivered (or dead-lettered). Resolves once the ack is
    /// durable; a segment whose records are all acked is then deleted.
    /// Acking twice, or an id from a deleted segment, is harmless.
    pub fn ack(&self, id: RecordId) -> impl Future<Output = Result<(), SpoolError>> + Send {
        self.request(move |reply| Command::Ack { id, reply })
    }

    /// Marks a record delivered without awaiting it: acks made at about the
    /// same time (a delivered batch's) reach the writer as one group, with
    /// one wake-up and one ledger append. `keep` is dropped once the ack is
    /// durable or has failed (a failure is logged by the writer and only
    /// means a duplicate after a restart). [`Spool::close`] finishes the
    /// acks queued before it.
    pub fn ack_soon(&self, id: RecordId, keep: Keep) {
        if self.acks.push(id, keep) && self.tx.send(Command::AcksQueued).is_err() {
            // Closed: nothing will take them; a duplicate after the next start.
            drop(self.acks.take());
        }
    }

    /// Appends `record` to `dead-letter.jsonl` (without its credentials) and
    /// resolves once that is synced. It does not ack the record: do both.
    pub fn dead_letter(
        &self,
        record: &Record,
        status: u16,
        upstream_message: &str,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send {
        let line = dead_letter::line(record, status, upstream_message, SystemTime::now());
        self.request(move |reply| Command::DeadLetter { line, reply })
    }

    fn request<T: Send + 'static>(
        &self,
        command: impl FnOnce(Reply<T>) -> Command,
    ) -> impl Future<Output = Result<T, SpoolError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(command(reply)).is_ok();
        async move {
            if !sent {
                return Err(SpoolError::Closed);
            }
            rx.await.unwrap_or(Err(SpoolError::Closed))
        }
    }

    /// The gauges and counters.
    pub fn stats(&self) -> Arc<SpoolStats> {
        Arc::clone(&self.stats)
    }

    /// Finishes what is queued, then stops the writer; later calls on any
    /// clone fail with [`SpoolError::Closed`]. Files stay for the next open.
    pub async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Close { reply }).is_ok() {
            let _ = rx.await;
        }
    }
}
