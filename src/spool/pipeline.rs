//! The writer's side of overlapping syncs: what happens after a group is
//! written (its sync is started, or joins the next one when all sync threads
//! are busy), when a sync returns (the segment's durable end moves, or the
//! segment fails), and the answers, always in write order.
//!
//! The rules: a group is answered `Ok` only once a sync that started after
//! its write returned `Ok` (a later sync covers earlier writes of the same
//! segment), so the durable end of each segment only grows and the
//! [`Tail`](super::tail::Tail) is told about groups in file order. After the
//! first failed write or sync of a segment every group of it beyond the
//! durable end fails, even one whose own later sync returned `Ok` (the error
//! may have been about its pages), and the file is cut back to that end
//! once no sync on it runs.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::record::RecordId;
use super::syncer::{Done, Target};
use super::writer::{Group, Pending, Writer, Written};
use super::{Appended, SpoolError};

impl Writer {
    /// A group's write returned: on success its sync starts (or waits for a
    /// free sync thread); on failure its segment fails. Either way it is
    /// answered in order with the groups before it.
    pub(crate) fn wrote(&mut self, appends: Vec<Pending>, result: io::Result<Group>) {
        let len: u64 = appends.iter().map(|(f, _, _)| f.len() as u64).sum();
        let (seq, start, error) = match result {
            Ok(group) => (group.seq, group.start, None),
            Err(e) => match self.active.as_ref() {
                // Written in part perhaps: the segment is cut back and given up.
                Some((seq, _)) => {
                    let seq = *seq;
                    let start = self.segments.get(&seq).map_or(0, |s| s.sync.written);
                    (seq, start, Some(e))
                }
                // Nothing was written (no segment could be created).
                None => {
                    self.answer_err(appends, len, &Arc::new(e));
                    return;
                }
            },
        };
        if let Some(segment) = self.segments.get_mut(&seq) {
            segment.sync.pending += 1;
            match &error {
                None => segment.sync.written = start + len,
                Some(_) => segment.sync.written = segment.sync.written.max(start + len),
            }
        }
        self.written.push_back(Written {
            seq,
            start,
            len,
            appends,
        });
        if let Some(e) = error {
            self.segment_failed(seq, e);
            self.cut_if_idle(seq);
        }
        self.start_syncs();
        self.answer_ready();
    }

    /// A sync returned.
    pub(crate) fn synced(&mut self, done: Done) {
        let Done {
            target,
            end,
            file,
            result,
        } = done;
        let seq = match target {
            Target::Segment(seq) => seq,
            Target::Ledger(generation) => {
                return self.ledger_synced(generation, end, result.map(|_| ()));
            }
        };
        self.syncer.in_flight = self.syncer.in_flight.saturating_sub(1);
        match result {
            Ok(took) => {
                let stats = &self.stats;
                stats.syncs.fetch_add(1, Ordering::Relaxed);
                let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
                stats.sync_nanos.fetch_add(nanos, Ordering::Relaxed);
                if let Some(observe) = &self.options.on_sync {
                    observe(took);
                }
                if let Some(segment) = self.segments.get_mut(&seq) {
                    let sync = &mut segment.sync;
                    sync.in_flight = sync.in_flight.saturating_sub(1);
                    if sync.failed.is_none() {
                        sync.durable = sync.durable.max(end);
                        sync.handles.push(file);
                    }
                }
            }
            Err(e) => {
                if let Some(segment) = self.segments.get_mut(&seq) {
                    segment.sync.in_flight = segment.sync.in_flight.saturating_sub(1);
                }
                self.segment_failed(seq, e);
            }
        }
        self.cut_if_idle(seq);
        self.answer_ready();
        // A sealed segment whose last sync this was may be done with.
        if self
            .segments
            .get(&seq)
            .is_some_and(|s| s.sealed && s.sync.idle() && s.live.is_empty())
        {
            self.delete_finished();
        }
        self.start_syncs();
    }

    /// Starts syncs while sync threads are free: each covers everything its
    /// segment has written so far (older segments first, so a rolled
    /// segment's last groups are not left behind).
    fn start_syncs(&mut self) {
        while self.syncer.has_room() {
            let Some((&seq, segment)) = self.segments.iter_mut().find(|(_, s)| s.sync.wants_sync())
            else {
                return;
            };
            let sync = &mut segment.sync;
            let end = sync.written;
            let started = sync
                .handle(&segment.path)
                .and_then(|file| self.syncer.start_sync(Target::Segment(seq), end, file));
            match started {
                Ok(()) => {
                    sync.started = end;
                    sync.in_flight += 1;
                }
                Err(e) => {
                    self.segment_failed(seq, e);
                    self.cut_if_idle(seq);
                    self.answer_ready();
                }
            }
        }
    }

    /// The first failure of segment `seq`: nothing more is written or synced
    /// there; its groups beyond the durable end will fail.
    fn segment_failed(&mut self, seq: u64, e: io::Error) {
        let Some(segment) = self.segments.get_mut(&seq) else {
            return;
        };
        let sync = &mut segment.sync;
        if sync.failed.is_none() {
            tracing::warn!(dir = %self.options.dir.display(), segment = seq, error = %e, durable = sync.durable, "spool write or sync failed; the segment's undurable appends fail and the next append starts a new segment");
            sync.failed = Some(Arc::new(e));
        }
        sync.handles.clear();
        if self
            .active
            .as_ref()
            .is_some_and(|(active, _)| *active == seq)
        {
            self.seal_active();
        }
    }

    /// After a failure, once no sync of the segment runs: cut what may have
    /// reached the file past its durable end, so records answered 503 do
    /// not come back at the next start.
    fn cut_if_idle(&mut self, seq: u64) {
        let Some(segment) = self.segments.get_mut(&seq) else {
            return;
        };
        let sync = &mut segment.sync;
        if sync.failed.is_none() || sync.in_flight > 0 || sync.cut {
            if segment.sealed && sync.in_flight == 0 {
                // Sealed and quiet: no sync will need these again.
                sync.handles.clear();
            }
            return;
        }
        sync.cut = true;
        let cut = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment.path)
            .and_then(|file| file.set_len(sync.durable));
        if let Err(e) = cut {
            tracing::warn!(segment = seq, error = %e, "cannot cut a failed write off a spool segment; its records may be replayed");
        }
    }

    /// Answers the groups at the front of the queue that are decided.
    fn answer_ready(&mut self) {
        let mut freed = false;
        while let Some(front) = self.written.front() {
            let end = front.start + front.len;
            let verdict = match self.segments.get(&front.seq) {
                Some(s) if end <= s.sync.durable => Some(Ok(())),
                Some(s) => s.sync.failed.clone().map(Err),
                // Cannot happen (a segment with groups pending is kept); fail safe.
                None => Some(Err(Arc::new(io::Error::other("spool segment missing")))),
            };
            let Some(verdict) = verdict else {
                break;
            };
            let Some(group) = self.written.pop_front() else {
                break;
            };
            if let Some(segment) = self.segments.get_mut(&group.seq) {
                segment.sync.pending = segment.sync.pending.saturating_sub(1);
                freed |= segment.sealed && segment.sync.idle();
            }
            match verdict {
                Ok(()) => self.answer_ok(group),
                Err(e) => self.answer_err(group.appends, group.len, &e),
            }
        }
        if freed {
            self.delete_finished();
        }
    }

    fn answer_ok(&mut self, group: Written) {
        let Written {
            seq,
            start,
            len,
            appends,
        } = group;
        // Gauges first: whoever gets an answer may read them at once.
        let n = appends.len() as u64;
        self.stats.messages.fetch_add(n, Ordering::Relaxed);
        self.stats.synced_messages.fetch_add(n, Ordering::Relaxed);
        let mut end = start;
        let placed: Vec<(u64, bool)> = appends
            .iter()
            .map(|(frame, memory, _)| {
                end += frame.len() as u64;
                (end - frame.len() as u64, *memory)
            })
            .collect();
        if let Some(segment) = self.segments.get_mut(&seq) {
            segment.bytes += len;
            segment
                .live
                .extend(placed.iter().map(|(offset, _)| *offset));
        }
        // Live before the feed can see them (and hand them to someone who acks).
        let now = self.tail.synced(seq, &placed, end);
        for (((_, _, reply), (offset, _)), deliver_now) in appends.into_iter().zip(placed).zip(now)
        {
            let id = RecordId {
                segment: seq,
                offset,
            };
            let _ = reply.send(Ok(Appended { id, deliver_now }));
        }
    }

    fn answer_err(&mut self, appends: Vec<Pending>, len: u64, e: &Arc<io::Error>) {
        tracing::warn!(dir = %self.options.dir.display(), error = %e, records = appends.len(), "spool append failed");
        self.stats.bytes.fetch_sub(len, Ordering::AcqRel);
        for (_, _, reply) in appends {
            let _ = reply.send(Err(SpoolError::Io(Arc::clone(e))));
        }
    }

    /// At the writer's end (the sync threads are gone): whatever is still
    /// unanswered fails. Only reached if the sync threads stopped early.
    pub(crate) fn fail_unanswered(&mut self) {
        let e = Arc::new(io::Error::other("the spool writer stopped"));
        while let Some(group) = self.written.pop_front() {
            self.answer_err(group.appends, group.len, &e);
        }
        self.fail_unanswered_acks();
    }
}
