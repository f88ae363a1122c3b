//! The writer thread: the only code that writes or deletes spool files.
//! Group commit: it blocks for one command, drains everything else already
//! queued and writes all appends with one `write`; the `fdatasync` of that
//! group then runs on a sync thread (`syncer.rs`) while the writer goes on
//! writing the next group and starting its sync, so syncs overlap. Callers
//! are answered in write order, each only after a sync that started after
//! its write returned `Ok` (`pipeline.rs`). Each answer also says whether the
//! caller delivers the record now or leaves it to the feed (`tail.rs`,
//! decided in file order). Acks and dead letters are grouped the same way; a
//! group's acks go to the ledger on a scoped second thread while its appends
//! are written.
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

use super::dead_letter;
use super::ledger::{rewrite_ledger, sync_acks, Ledger};
use super::record::RecordId;
use super::storage::{self, segment_path, FileKind};
use super::syncer::{SyncState, Syncer};
use super::tail::Tail;
use super::{Appended, Command, Reply, SpoolError, SpoolOptions, SpoolStats};

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
                if self.syncer.in_flight == 0 && self.written.is_empty() {
                    break;
                }
                match done.recv() {
                    Ok(synced) => self.synced(synced),
                    Err(_) => break,
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
        close
    }

    /// One group: appends and acks are prepared here, then the appends are
    /// written (and their sync started) while the acks are written and
    /// synced in the ledger on a second thread, so an append never waits for
    /// an ack's sync.
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
        let (write_io, ack_io) = std::thread::scope(|scope| {
            let ack_io = |ledger: &mut Option<Ledger>| {
                (!fresh.is_empty())
                    .then(|| sync_acks(ledger, segments, foreign_acks, options, &fresh))
            };
            let write_io = |active: &mut Option<(u64, File)>| {
                let (Some(Ok(group)), Some((_, file))) = (&group, active.as_mut()) else {
                    return None;
                };
                Some(storage.write_all(FileKind::Segment, file, &group.buf))
            };
            if group.is_some() && !fresh.is_empty() {
                let acks = scope.spawn(move || ack_io(ledger));
                let written = write_io(active);
                let acks = acks
                    .join()
                    .unwrap_or_else(|_| Some(Err(io::Error::other("the ledger thread panicked"))));
                (written, acks)
            } else {
                (write_io(active), ack_io(ledger))
            }
        });
        // Acks settle first: a failed append below may seal (and delete) a segment.
        self.finish_acks(acks, fresh, ack_io.unwrap_or(Ok(())));
        if let Some(group) = group {
            let result = match (group, write_io) {
                (Ok(group), Some(io)) => io.map(|()| group),
                (Ok(_), None) => Err(io::Error::other("no active segment")),
                (Err(e), _) => Err(e),
            };
            self.wrote(appends, result);
        }
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
        Ok(Group {
            seq: *seq,
            start,
            buf: appends
                .iter()
                .flat_map(|(f, _, _)| f.iter().copied())
                .collect(),
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
