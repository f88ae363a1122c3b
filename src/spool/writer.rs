//! The writer thread: the only code that writes or deletes spool files.
//! Group commit: it blocks for one command, drains everything else already
//! queued and writes all appends with one `write`; the `fdatasync` of that
//! group then runs on a sync thread (`syncer.rs`) while the writer goes on
//! writing the next group and starting its sync, so syncs overlap. Callers
//! are answered in write order, each only after a sync that started after
//! its write returned `Ok` (`pipeline.rs`). Each answer also says whether the
//! caller delivers the record now or leaves it to the feed (`tail.rs`,
//! decided in file order). Acks are grouped the same way: written to the
//! ledger here, synced on the pool too and answered when that returns
//! (`acks.rs`); dead letters are written and synced here.
//!
//! After a failed write or sync the segment is never written again (after a
//! failed fsync the page cache cannot be trusted, PostgreSQL's "fsyncgate"):
//! every group of it not yet durable fails, it is cut back to its durable
//! length once no sync on it runs, and the next append starts a new segment.
//! A segment is deleted only once it is closed, no group or sync of it is in
//! flight and the acks of all its records are synced in the ledger; the
//! directory is synced after.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use tokio::sync::oneshot;

use super::ack_queue::{AckQueue, Keep, Queued};
use super::acks::AckGroup;
use super::dead_letter;
use super::ledger::{rewrite_ledger, Ledger};
use super::record::RecordId;
use super::storage::{self, segment_path, FileKind};
use super::syncer::{SyncState, Syncer};
use super::tail::Tail;
use super::{Appended, Command, Reply, SpoolOptions, SpoolStats};

/// An append waiting for its group's sync: the frame, whether the caller
/// holds the memory to deliver it now, and where the answer goes.
pub(crate) type Pending = (Vec<u8>, bool, Reply<Appended>);

/// One segment the writer knows about.
pub(crate) struct Segment {
    pub path: PathBuf,
    /// Bytes of the groups answered `Ok` (recovered segments: the file's length).
    pub bytes: u64,
    /// Offsets of records not yet acknowledged.
    pub live: HashSet<u64>,
    /// Offsets whose ack is durable (rewritten into a fresh ledger).
    pub acked: Vec<u64>,
    /// No more appends go here; once `live` is empty and nothing of it is in
    /// flight it may be deleted.
    pub sealed: bool,
    /// Written, synced and durable ends while appends go here.
    pub sync: SyncState,
}

/// A group written to segment `seq` from `start`, waiting for a sync that
/// covers it (or for its segment's failure) to be answered.
pub(crate) struct Written {
    pub seq: u64,
    pub start: u64,
    pub len: u64,
    pub appends: Vec<Pending>,
}

pub(crate) struct Writer {
    pub options: SpoolOptions,
    pub stats: Arc<SpoolStats>,
    pub segments: BTreeMap<u64, Segment>,
    /// The segment appends go to, with its open file; `None` until the first
    /// append and after a failure.
    pub active: Option<(u64, File)>,
    pub next_seq: u64,
    /// `None` after a failed ack write: rewritten before the next use.
    pub ledger: Option<Ledger>,
    /// Acks of segments present but unreadable at open: kept in every rewrite.
    pub foreign_acks: Vec<RecordId>,
    pub dead_letters: dead_letter::DeadLetterFile,
    /// Told the durable end after each group; decides which records wait on disk.
    pub tail: Arc<Tail>,
    pub syncer: Syncer,
    /// Groups written and not answered, in write order (the answer order).
    pub written: VecDeque<Written>,
    /// Acks written to the ledger and waiting for its sync, in order.
    pub ack_groups: VecDeque<AckGroup>,
    /// Acks of `Spool::ack_soon`, taken whole at each `AcksQueued`.
    pub ack_queue: Arc<AckQueue>,
}

/// Stop draining once a group holds this many bytes of appends, so one sync
/// never waits behind an unbounded write.
const GROUP_BYTES: usize = 4 << 20;

impl Writer {
    pub(crate) fn run(mut self, rx: Receiver<Command>) {
        let done = self.syncer.done.clone();
        // `Some` once closing: the close's reply, if it was asked for (all
        // handles dropped closes too, with no one to tell).
        let mut closing: Option<Option<oneshot::Sender<()>>> = None;
        loop {
            if closing.is_some() {
                // Close waits for the syncs in flight and answers everyone.
                if self.syncer.idle() && self.written.is_empty() && self.ack_groups.is_empty() {
                    break;
                }
                match done.recv() {
                    Ok(synced) => self.synced(synced),
                    Err(_) => break,
                }
                continue;
            }
            if !self.syncer.has_room() {
                // Every sync thread is busy: nothing written now could start
                // its sync before one returns, so commands wait in the
                // channel (without waking this thread) and are then written
                // as one group with one `write`.
                match done.recv() {
                    Ok(synced) => self.synced(synced),
                    Err(_) => closing = Some(None),
                }
                continue;
            }
            crossbeam_channel::select! {
                recv(rx) -> command => match command {
                    Ok(first) => closing = self.group(first, &rx).map(Some),
                    Err(_) => closing = Some(None),
                },
                recv(done) -> synced => {
                    if let Ok(synced) = synced {
                        self.synced(synced);
                    }
                }
            }
        }
        // Whatever else was queued is answered `Closed` as its reply drops.
        drop(rx);
        drop(self.ack_queue.take());
        self.fail_unanswered();
        if let Some(Some(reply)) = closing {
            let _ = reply.send(());
        }
        tracing::debug!(dir = %self.options.dir.display(), "spool writer stopped");
    }

    /// Takes `first` and everything else already queued as one group and
    /// writes it. Returns the reply of a close found among them.
    fn group(&mut self, first: Command, rx: &Receiver<Command>) -> Option<oneshot::Sender<()>> {
        let mut appends = Vec::new();
        let mut acks = Vec::new();
        let mut queued = false;
        let mut letters = Vec::new();
        let mut close = None;
        let mut group_bytes = 0;
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Append {
                    frame,
                    memory,
                    reply,
                } => {
                    group_bytes += frame.len();
                    appends.push((frame, memory, reply));
                }
                Command::Ack { id, reply } => acks.push((id, reply)),
                Command::AcksQueued => queued = true,
                Command::DeadLetter { line, reply } => letters.push((line, reply)),
                Command::Close { reply } => close = Some(reply),
            }
            if close.is_none() && group_bytes < GROUP_BYTES {
                next = rx.try_recv().ok();
            }
        }
        // At a close too: the acks queued before it are finished by it.
        let Queued { ids, keeps } = if queued || close.is_some() {
            self.ack_queue.take()
        } else {
            Queued::default()
        };
        self.commit(appends, acks, ids, keeps);
        self.commit_dead_letters(letters);
        close
    }

    /// One group: the appends are written and their sync started, the
    /// acks written to the ledger and its sync started; neither waits for
    /// a sync here (`pipeline.rs` and `acks.rs` answer once they return).
    fn commit(
        &mut self,
        appends: Vec<Pending>,
        acks: Vec<(RecordId, Reply<()>)>,
        ids: Vec<RecordId>,
        keeps: Vec<Keep>,
    ) {
        if !acks.is_empty() || !ids.is_empty() {
            self.queue_acks(acks, ids, keeps);
        }
        if appends.is_empty() {
            return;
        }
        let group = self.prepare_group(&appends);
        let storage = Arc::clone(&self.options.storage);
        let result = group.and_then(|group| match self.active.as_mut() {
            Some((_, file)) => storage
                .write_all(FileKind::Segment, file, &group.buf)
                .map(|()| group),
            None => Err(io::Error::other("no active segment")),
        });
        self.wrote(appends, result);
    }

    /// Rolls if needed and joins the frames; the offsets start at `start`.
    fn prepare_group(&mut self, appends: &[Pending]) -> io::Result<Group> {
        let full = self
            .active
            .as_ref()
            .and_then(|(seq, _)| self.segments.get(seq))
            .is_none_or(|s| s.sync.written >= self.options.segment_bytes);
        if full {
            self.roll()?;
        }
        let Some((seq, _)) = self.active.as_ref() else {
            return Err(io::Error::other("no active segment"));
        };
        let start = self.segments.get(seq).map_or(0, |s| s.sync.written);
        // Whole frames with one copy each (a `flat_map` over their bytes
        // cost ~10 instructions a byte: most of the writer's time).
        let mut buf = Vec::with_capacity(appends.iter().map(|(f, _, _)| f.len()).sum());
        for (frame, _, _) in appends {
            buf.extend_from_slice(frame);
        }
        Ok(Group {
            seq: *seq,
            start,
            buf,
        })
    }

    /// Closes the active segment (if any) and creates the next one durably.
    fn roll(&mut self) -> io::Result<()> {
        self.seal_active();
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = segment_path(&self.options.dir, seq);
        let file = storage::create_new(&path)?;
        self.segments.insert(
            seq,
            Segment {
                path,
                bytes: 0,
                live: HashSet::new(),
                acked: Vec::new(),
                sealed: false,
                sync: SyncState::default(),
            },
        );
        self.active = Some((seq, file));
        // The new entry must be durable before a 202 can rest on it; if that
        // fails, the segment is given up (and removed, being empty).
        let synced = storage::sync_dir(&self.options.dir);
        if synced.is_err() {
            self.seal_active();
        }
        synced
    }

    pub(crate) fn seal_active(&mut self) {
        if let Some((seq, _)) = self.active.take() {
            if let Some(segment) = self.segments.get_mut(&seq) {
                segment.sealed = true;
            }
            self.delete_finished();
        }
    }

    pub(crate) fn rewrite_ledger(&self) -> io::Result<Ledger> {
        rewrite_ledger(&self.segments, &self.foreign_acks, &self.options)
    }

    /// Deletes sealed segments with nothing left to deliver. Only reached
    /// once their acks are synced; the directory is synced after.
    pub(crate) fn delete_finished(&mut self) {
        let done: Vec<u64> = self
            .segments
            .iter()
            .filter(|(_, s)| s.sealed && s.live.is_empty() && s.sync.idle())
            .map(|(seq, _)| *seq)
            .collect();
        if done.is_empty() {
            return;
        }
        for seq in done {
            let Some(segment) = self.segments.get(&seq) else {
                continue;
            };
            match std::fs::remove_file(&segment.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(path = %segment.path.display(), error = %e, "cannot delete a delivered spool segment; retried later");
                    continue;
                }
                _ => {}
            }
            self.stats.bytes.fetch_sub(segment.bytes, Ordering::AcqRel);
            self.segments.remove(&seq);
        }
        if let Err(e) = storage::sync_dir(&self.options.dir) {
            tracing::warn!(dir = %self.options.dir.display(), error = %e, "cannot sync the spool directory");
        }
    }
}

/// A group of appends about to be written: its segment, where it starts,
/// and its frames joined.
pub(crate) struct Group {
    pub seq: u64,
    pub start: u64,
    pub buf: Vec<u8>,
}
