//! The writer thread: the only code that writes, syncs or deletes spool
//! files. Group commit: it blocks for one command, drains everything else
//! already queued, writes all appends with one `write` and one `fdatasync`,
//! and only then answers their callers; whatever arrives during that sync
//! forms the next group. Each answer also says whether the caller delivers
//! the record now or leaves it to the feed (`tail.rs`, decided in file order).
//! Acks and dead letters are grouped the same way; a
//! group's acks go to the ledger on a scoped second thread while its appends
//! are synced, so neither waits for the other's fsync.
//!
//! After a failed write or sync the segment is never written again (after a
//! failed fsync the page cache cannot be trusted, PostgreSQL's "fsyncgate"):
//! it is cut back to its last durable length and the next append starts a new
//! segment. A segment is deleted only once it is closed and the acks of all
//! its records are synced in the ledger; the directory is synced after.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::dead_letter;
use super::ledger::{rewrite_ledger, sync_acks, Ledger};
use super::record::RecordId;
use super::storage::{self, segment_path, FileKind};
use super::tail::Tail;
use super::{Appended, Command, Reply, SpoolError, SpoolOptions, SpoolStats};

/// An append waiting for its group's sync: the frame, whether the caller
/// holds the memory to deliver it now, and where the answer goes.
type Pending = (Vec<u8>, bool, Reply<Appended>);

/// One segment the writer knows about.
pub(crate) struct Segment {
    pub path: PathBuf,
    pub bytes: u64,
    /// Offsets of records not yet acknowledged.
    pub live: HashSet<u64>,
    /// Offsets whose ack is durable (rewritten into a fresh ledger).
    pub acked: Vec<u64>,
    /// No more appends go here; once `live` is empty it may be deleted.
    pub sealed: bool,
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
}

/// Stop draining once a group holds this many bytes of appends, so one sync
/// never waits behind an unbounded write.
const GROUP_BYTES: usize = 4 << 20;

impl Writer {
    pub(crate) fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut appends = Vec::new();
            let mut acks = Vec::new();
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
                    Command::DeadLetter { line, reply } => letters.push((line, reply)),
                    Command::Close { reply } => close = Some(reply),
                }
                if close.is_none() && group_bytes < GROUP_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(appends, acks);
            self.commit_dead_letters(letters);
            if let Some(reply) = close {
                rx.close();
                let _: Result<(), ()> = reply.send(());
                break;
            }
        }
        tracing::debug!(dir = %self.options.dir.display(), "spool writer stopped");
    }

    /// One group: appends and acks are prepared here, then the segment and
    /// the ledger are written and synced at the same time (two threads), so
    /// an append never waits for an ack's sync on top of its own.
    fn commit(&mut self, appends: Vec<Pending>, acks: Vec<(RecordId, Reply<()>)>) {
        // Appends first: a roll may delete segments, which must happen
        // before any ack of this group leaves `live` ahead of the ledger.
        let group = (!appends.is_empty()).then(|| self.prepare_group(&appends));
        let fresh = self.take_acks(&acks);
        let Writer {
            active,
            ledger,
            segments,
            foreign_acks,
            options,
            ..
        } = self;
        let storage = options.storage.as_ref();
        let (segment_io, ack_io) = std::thread::scope(|scope| {
            let ack_io = |ledger: &mut Option<Ledger>| {
                (!fresh.is_empty())
                    .then(|| sync_acks(ledger, segments, foreign_acks, options, &fresh))
            };
            let segment_io = |active: &mut Option<(u64, File)>| {
                let (Some(Ok(group)), Some((_, file))) = (&group, active.as_mut()) else {
                    return None;
                };
                let began = Instant::now();
                let written = storage
                    .write_all(FileKind::Segment, file, &group.buf)
                    .and_then(|()| storage.sync_data(FileKind::Segment, file));
                Some(written.map(|()| began.elapsed()))
            };
            if group.is_some() && !fresh.is_empty() {
                let acks = scope.spawn(move || ack_io(ledger));
                let segment = segment_io(active);
                let acks = acks
                    .join()
                    .unwrap_or_else(|_| Some(Err(io::Error::other("the ledger thread panicked"))));
                (segment, acks)
            } else {
                (segment_io(active), ack_io(ledger))
            }
        });
        // Acks settle first: a failed append below may seal (and delete) a segment.
        self.finish_acks(acks, fresh, ack_io.unwrap_or(Ok(())));
        if let Some(group) = group {
            let result = match (group, segment_io) {
                (Ok(group), Some(io)) => io.map(|took| (group, took)),
                (Ok(_), None) => Err(io::Error::other("no active segment")),
                (Err(e), _) => Err(e),
            };
            self.finish_appends(appends, result);
        }
    }

    /// Rolls if needed and joins the frames; the offsets start at `start`.
    fn prepare_group(&mut self, appends: &[Pending]) -> io::Result<Group> {
        let full = self
            .active
            .as_ref()
            .and_then(|(seq, _)| self.segments.get(seq))
            .is_none_or(|s| s.bytes >= self.options.segment_bytes);
        if full {
            self.roll()?;
        }
        let Some((seq, _)) = self.active.as_ref() else {
            return Err(io::Error::other("no active segment"));
        };
        let start = self.segments.get(seq).map_or(0, |s| s.bytes);
        Ok(Group {
            seq: *seq,
            start,
            buf: appends
                .iter()
                .flat_map(|(f, _, _)| f.iter().copied())
                .collect(),
        })
    }

    fn finish_appends(
        &mut self,
        appends: Vec<Pending>,
        result: io::Result<(Group, std::time::Duration)>,
    ) {
        let total: u64 = appends.iter().map(|(f, _, _)| f.len() as u64).sum();
        let (group, took) = match result {
            Ok(done) => done,
            Err(e) => {
                // Cut what may have reached the file, so records answered 503
                // do not come back at the next start; never write there again.
                if let Some((seq, file)) = self.active.as_ref() {
                    let start = self.segments.get(seq).map_or(0, |s| s.bytes);
                    if let Err(cut) = file.set_len(start) {
                        tracing::warn!(segment = seq, error = %cut, "cannot cut a failed write off a spool segment; its records may be replayed");
                    }
                }
                self.seal_active();
                tracing::warn!(dir = %self.options.dir.display(), error = %e, records = appends.len(), "spool append failed; the next append starts a new segment");
                self.stats.bytes.fetch_sub(total, Ordering::AcqRel);
                let e = Arc::new(e);
                for (_, _, reply) in appends {
                    let _ = reply.send(Err(SpoolError::Io(Arc::clone(&e))));
                }
                return;
            }
        };
        let stats = &self.stats;
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        stats.sync_nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(observe) = &self.options.on_sync {
            observe(took);
        }
        // Gauges first: whoever gets an answer may read them at once.
        let n = appends.len() as u64;
        stats.messages.fetch_add(n, Ordering::Relaxed);
        stats.synced_messages.fetch_add(n, Ordering::Relaxed);
        let mut end = group.start;
        let placed: Vec<(u64, bool)> = appends
            .iter()
            .map(|(frame, memory, _)| {
                end += frame.len() as u64;
                (end - frame.len() as u64, *memory)
            })
            .collect();
        if let Some(segment) = self.segments.get_mut(&group.seq) {
            segment.bytes += total;
            segment
                .live
                .extend(placed.iter().map(|(offset, _)| *offset));
        }
        // Live before the feed can see them (and hand them to someone who acks).
        let now = self.tail.synced(group.seq, &placed, end);
        for (((_, _, reply), (offset, _)), deliver_now) in appends.into_iter().zip(placed).zip(now)
        {
            let id = RecordId {
                segment: group.seq,
                offset,
            };
            let _ = reply.send(Ok(Appended { id, deliver_now }));
        }
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

    fn seal_active(&mut self) {
        if let Some((seq, _)) = self.active.take() {
            if let Some(segment) = self.segments.get_mut(&seq) {
                segment.sealed = true;
            }
            self.delete_finished();
        }
    }

    /// Takes newly acked offsets out of `live` (put back if the ledger fails).
    fn take_acks(&mut self, acks: &[(RecordId, Reply<()>)]) -> Vec<RecordId> {
        let mut fresh = Vec::new();
        for (id, _) in acks {
            if let Some(segment) = self.segments.get_mut(&id.segment) {
                if segment.live.remove(&id.offset) {
                    fresh.push(*id);
                }
            }
        }
        fresh
    }

    fn finish_acks(
        &mut self,
        acks: Vec<(RecordId, Reply<()>)>,
        fresh: Vec<RecordId>,
        result: io::Result<()>,
    ) {
        match &result {
            Ok(()) => {
                for id in &fresh {
                    if let Some(segment) = self.segments.get_mut(&id.segment) {
                        segment.acked.push(id.offset);
                    }
                }
                let n = fresh.len() as u64;
                self.stats.messages.fetch_sub(n, Ordering::Relaxed);
                // Before answering, so an answered ack has also freed its segment.
                self.delete_finished();
                self.compact_ledger();
            }
            Err(e) => {
                tracing::warn!(dir = %self.options.dir.display(), error = %e, "spool ack failed; the ledger is rewritten before the next ack");
                self.ledger = None;
                for id in &fresh {
                    if let Some(segment) = self.segments.get_mut(&id.segment) {
                        segment.live.insert(id.offset);
                    }
                }
            }
        }
        let result = result.map_err(Arc::new);
        for (_, reply) in acks {
            let _ = reply.send(result.clone().map_err(SpoolError::Io));
        }
    }

    pub(crate) fn rewrite_ledger(&self) -> io::Result<Ledger> {
        rewrite_ledger(&self.segments, &self.foreign_acks, &self.options)
    }

    fn compact_ledger(&mut self) {
        let live_acks =
            self.segments.values().map(|s| s.acked.len()).sum::<usize>() + self.foreign_acks.len();
        if self
            .ledger
            .as_ref()
            .is_some_and(|l| l.wants_rewrite(live_acks, self.options.ledger_rewrite_bytes))
        {
            self.ledger = match self.rewrite_ledger() {
                Ok(ledger) => Some(ledger),
                Err(e) => {
                    tracing::warn!(error = %e, "spool ledger rewrite failed; retried at the next ack");
                    None
                }
            };
        }
    }

    /// Deletes sealed segments with nothing left to deliver. Only reached
    /// once their acks are synced; the directory is synced after.
    pub(crate) fn delete_finished(&mut self) {
        let done: Vec<u64> = self
            .segments
            .iter()
            .filter(|(_, s)| s.sealed && s.live.is_empty())
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
struct Group {
    seq: u64,
    start: u64,
    buf: Vec<u8>,
}
