//! Segment syncs that overlap: a small pool of threads running the
//! `fdatasync`s the writer thread asks for, so the writer can write (and
//! start the sync of) the next group while earlier syncs still run. On NVMe
//! and virtual disks concurrent syncs of one file cost little more than one,
//! so a message waits about one sync instead of the rest of one plus a whole
//! next one.
//!
//! This module owns the per-segment bookkeeping of what is written, what a
//! started sync covers and what is durable; the writer owns the decisions
//! (answers in write order, failures, cuts). Each sync runs on its own open
//! file description of the segment (not a `dup` of the writer's): Linux
//! reports a writeback error once per open file description, so two
//! concurrent syncs on one description could hand an error to the other one
//! and let a sync return `Ok` over lost pages. With its own description, a
//! sync that returns `Ok` saw every writeback error since it was last used,
//! and it is only reused after its previous sync returned.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::storage::{FileKind, Storage};

/// How many segment syncs may run at once. Two already halve the wait; more
/// mostly help when a sync stalls behind the device's own flushes.
pub(crate) const SYNC_DEPTH: usize = 3;

/// Where a segment's syncs stand. Offsets are bytes from the segment's start.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    /// The end of what was written to the file (the next group starts here).
    pub written: u64,
    /// The end covered by the latest sync started.
    pub started: u64,
    /// The end covered by a sync that returned `Ok` (it started after those
    /// bytes were written); only ever grows, and stops at the first failure.
    pub durable: u64,
    /// Syncs of this segment running now.
    pub in_flight: usize,
    /// Groups written here and not answered yet: the segment is kept for them.
    pub pending: usize,
    /// Set by the first failed write or sync: nothing beyond `durable` is
    /// ever answered `Ok`, and the file is cut back to `durable`.
    pub failed: Option<Arc<io::Error>>,
    /// Whether the cut after a failure was done.
    pub cut: bool,
    /// Open file descriptions of the segment for syncs, idle now.
    pub handles: Vec<Arc<File>>,
}

impl SyncState {
    /// A sync should start: bytes were written past what the last one covers.
    pub(crate) fn wants_sync(&self) -> bool {
        self.failed.is_none() && self.written > self.started
    }

    /// Nothing of this segment is waiting on a sync or an answer.
    pub(crate) fn idle(&self) -> bool {
        self.in_flight == 0 && self.pending == 0
    }

    /// An idle handle, or a new open file description of `path`.
    pub(crate) fn handle(&mut self, path: &Path) -> io::Result<Arc<File>> {
        match self.handles.pop() {
            Some(file) => Ok(file),
            None => Ok(Arc::new(File::open(path)?)),
        }
    }
}

/// What a sync is of: a segment (by sequence number) or the ack ledger
/// (by generation: a ledger rewritten since the sync began is another file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Segment(u64),
    Ledger(u64),
}

/// A sync the writer asked for: `target` up to `end`.
struct Job {
    target: Target,
    end: u64,
    file: Arc<File>,
}

/// A sync that returned: how long it took, or why it failed. The handle
/// comes back so the writer can reuse it (only after an `Ok`).
pub(crate) struct Done {
    pub target: Target,
    pub end: u64,
    pub file: Arc<File>,
    pub result: io::Result<Duration>,
}

/// The syncs asked for and not yet taken by a sync thread. A mutex and a
/// condition variable rather than a channel: an idle sync thread sleeps on a
/// futex at once, where a channel's receiver spins and calls `sched_yield`
/// several times first (measured: 0.6 `sched_yield` per spooled message,
/// on a machine whose CPUs the producers keep busy).
#[derive(Default)]
struct Jobs {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// The writer is gone: the threads stop once the queue is empty.
    closed: bool,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A queue of plain values: a panic elsewhere cannot leave it torn.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next job, waiting for one; `None` once closed and empty.
    fn next(&self) -> Option<Job> {
        let mut queue = self.lock();
        loop {
            if let Some(job) = queue.jobs.pop_front() {
                return Some(job);
            }
            if queue.closed {
                return None;
            }
            queue = self
                .ready
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The sync threads. They stop once the writer drops this.
pub(crate) struct Syncer {
    jobs: Arc<Jobs>,
    pub done: Receiver<Done>,
    /// Segment syncs started and not yet seen back by the writer.
    pub in_flight: usize,
    /// A ledger sync is running (at most one: acks are not in a hurry, they
    /// only must not hold up appends).
    pub ledger_in_flight: bool,
}

impl Syncer {
    pub(crate) fn start(storage: &Arc<dyn Storage>) -> io::Result<Syncer> {
        let jobs = Arc::new(Jobs::default());
        let (done_tx, done) = crossbeam_channel::unbounded();
        // One more thread than segment syncs: the ledger's never waits for them.
        for n in 0..=SYNC_DEPTH {
            let queue = Arc::clone(&jobs);
            let done_tx = done_tx.clone();
            let storage = Arc::clone(storage);
            std::thread::Builder::new()
                .name(format!("inletd-spool-sync-{n}"))
                .spawn(move || {
                    while let Some(Job { target, end, file }) = queue.next() {
                        let began = Instant::now();
                        let kind = match target {
                            Target::Segment(_) => FileKind::Segment,
                            Target::Ledger(_) => FileKind::Ledger,
                        };
                        let result = storage.sync_data(kind, &file).map(|()| began.elapsed());
                        let done = Done {
                            target,
                            end,
                            file,
                            result,
                        };
                        if done_tx.send(done).is_err() {
                            break;
                        }
                    }
                })?;
        }
        Ok(Syncer {
            jobs,
            done,
            in_flight: 0,
            ledger_in_flight: false,
        })
    }

    /// Whether another segment sync may start now.
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight < SYNC_DEPTH
    }

    /// Starts a sync of `target` covering everything written up to `end`.
    pub(crate) fn start_sync(
        &mut self,
        target: Target,
        end: u64,
        file: Arc<File>,
    ) -> io::Result<()> {
        {
            let mut queue = self.jobs.lock();
            if queue.closed {
                return Err(io::Error::other("the spool sync threads stopped"));
            }
            queue.jobs.push_back(Job { target, end, file });
        }
        self.jobs.ready.notify_one();
        match target {
            Target::Segment(_) => self.in_flight += 1,
            Target::Ledger(_) => self.ledger_in_flight = true,
        }
        Ok(())
    }

    /// Nothing is being synced.
    pub(crate) fn idle(&self) -> bool {
        self.in_flight == 0 && !self.ledger_in_flight
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.jobs.lock().closed = true;
        self.jobs.ready.notify_all();
    }
}
