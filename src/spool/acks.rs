//! The writer's side of acknowledgements: acks are written to the ledger on
//! the writer thread, synced on the sync pool (one ledger sync at a time,
//! never holding up appends) and answered in order once a sync that started
//! after their write returned `Ok`.
//!
//! A record stays in its segment's `live` set until its ack is durable, so a
//! segment is never deleted on an ack that a crash could still lose. After a
//! failed ledger write or sync every ack not yet durable fails (the caller
//! may ack again; at worst a duplicate after a restart) and the ledger is
//! rewritten, from the durable acks only, before its next use.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::ack_queue::Keep;
use super::ledger::write_acks;
use super::record::RecordId;
use super::syncer::Target;
use super::writer::Writer;
use super::{Reply, SpoolError};

/// Acks written to the ledger file `generation` up to `end`, waiting for a
/// sync that covers them.
pub(crate) struct AckGroup {
    acks: Vec<(RecordId, Reply<()>)>,
    /// Of the acks without a reply (`ack_soon`): dropped when they are settled.
    keeps: Vec<Keep>,
    fresh: Vec<RecordId>,
    generation: u64,
    end: u64,
}

impl Writer {
    /// Writes a group's acks to the ledger and starts its sync (or leaves it
    /// to the next one when a ledger sync is running).
    /// `acks` are answered; `ids` (queued by `ack_soon`) only drop their `keeps`.
    pub(crate) fn queue_acks(
        &mut self,
        acks: Vec<(RecordId, Reply<()>)>,
        ids: Vec<RecordId>,
        keeps: Vec<Keep>,
    ) {
        let all = acks.iter().map(|(id, _)| *id).chain(ids);
        let fresh = self.fresh_acks(all);
        if fresh.is_empty() {
            // Acked before (durably) or never spooled: nothing to write.
            self.finish_acks(acks, keeps, fresh, Ok(()));
            return;
        }
        let written = write_acks(
            &mut self.ledger,
            &self.segments,
            &self.foreign_acks,
            &self.options,
            &fresh,
        );
        match (written, self.ledger.as_ref()) {
            (Ok(()), Some(ledger)) => {
                self.ack_groups.push_back(AckGroup {
                    acks,
                    keeps,
                    fresh,
                    generation: ledger.generation,
                    end: ledger.bytes,
                });
                self.start_ledger_sync();
            }
            (Err(e), _) => {
                self.ledger_failed(&e);
                self.finish_acks(acks, keeps, fresh, Err(e));
            }
            (Ok(()), None) => {
                let e = io::Error::other("ledger not open");
                self.finish_acks(acks, keeps, fresh, Err(e));
            }
        }
    }

    /// Starts a ledger sync if none runs and acks were written past the last.
    pub(crate) fn start_ledger_sync(&mut self) {
        if self.syncer.ledger_in_flight {
            return;
        }
        let Some(ledger) = self.ledger.as_mut() else {
            return;
        };
        if ledger.bytes <= ledger.started {
            return;
        }
        let (target, end) = (Target::Ledger(ledger.generation), ledger.bytes);
        match self
            .syncer
            .start_sync(target, end, Arc::clone(&ledger.sync_file))
        {
            Ok(()) => ledger.started = end,
            Err(e) => self.ledger_failed(&e),
        }
    }

    /// A ledger sync returned.
    pub(crate) fn ledger_synced(&mut self, generation: u64, end: u64, result: io::Result<()>) {
        self.syncer.ledger_in_flight = false;
        let current = self.ledger.as_ref().map(|l| l.generation);
        if current == Some(generation) {
            match result {
                Ok(()) => {
                    while self
                        .ack_groups
                        .front()
                        .is_some_and(|g| g.generation == generation && g.end <= end)
                    {
                        if let Some(group) = self.ack_groups.pop_front() {
                            self.finish_acks(group.acks, group.keeps, group.fresh, Ok(()));
                        }
                    }
                }
                Err(e) => self.ledger_failed(&e),
            }
        }
        // A sync of a ledger since replaced: its acks were failed already.
        self.start_ledger_sync();
    }

    /// The ledger cannot be trusted: every ack not yet durable fails and the
    /// ledger is rewritten before the next use.
    fn ledger_failed(&mut self, e: &io::Error) {
        tracing::warn!(dir = %self.options.dir.display(), error = %e, "spool ack failed; the ledger is rewritten before the next ack");
        self.ledger = None;
        while let Some(group) = self.ack_groups.pop_front() {
            let e = io::Error::new(e.kind(), e.to_string());
            self.finish_acks(group.acks, group.keeps, group.fresh, Err(e));
        }
    }

    /// The acked records still live (the others are durably acked already,
    /// or were never spooled).
    fn fresh_acks(&self, ids: impl Iterator<Item = RecordId>) -> Vec<RecordId> {
        ids.filter(|id| {
            self.segments
                .get(&id.segment)
                .is_some_and(|s| s.live.contains(&id.offset))
        })
        .collect()
    }

    /// Answers acks; on success their records leave `live` (which may free
    /// their segments).
    pub(crate) fn finish_acks(
        &mut self,
        acks: Vec<(RecordId, Reply<()>)>,
        keeps: Vec<Keep>,
        fresh: Vec<RecordId>,
        result: io::Result<()>,
    ) {
        if result.is_ok() {
            let mut n = 0;
            for id in &fresh {
                if let Some(segment) = self.segments.get_mut(&id.segment) {
                    // An id acked twice in flight is counted once.
                    if segment.live.remove(&id.offset) {
                        segment.acked.push(id.offset);
                        n += 1;
                    }
                }
            }
            self.stats.messages.fetch_sub(n, Ordering::Relaxed);
            // Before answering, so an answered ack has also freed its segment.
            self.delete_finished();
            self.compact_ledger();
        }
        let result = result.map_err(Arc::new);
        for (_, reply) in acks {
            let _ = reply.send(result.clone().map_err(SpoolError::Io));
        }
        drop(keeps);
    }

    fn compact_ledger(&mut self) {
        // Not while acks wait for a sync: the new file would not hold them.
        if !self.ack_groups.is_empty() {
            return;
        }
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

    /// At the writer's end: acks still waiting fail (a duplicate at worst).
    pub(crate) fn fail_unanswered_acks(&mut self) {
        let groups: Vec<AckGroup> = self.ack_groups.drain(..).collect();
        for group in groups {
            let e = io::Error::other("the spool writer stopped");
            self.finish_acks(group.acks, group.keeps, group.fresh, Err(e));
        }
    }
}
