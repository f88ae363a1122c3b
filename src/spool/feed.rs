//! The [`Feed`]: spooled records that wait on disk only, read back in order
//! for delivery. At open that is everything undelivered (the segments found
//! then, minus what the ledger acks); afterwards, every record appended while
//! the overflow lasts (see `tail`), read from the segments the writer has
//! synced. The writer thread owns the files; the feed reads synced bytes with
//! `pread` on its own descriptor and never past the durable end.
//!
//! State: a cursor (segment, offset) and one open file, plus 8 bytes per
//! record undelivered at open (the offsets the scan at open found live, so
//! acked ones are skipped). Reading holds one record at a time; after damage,
//! the rest of that segment once, to find the next intact frame.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::record::{self, Record, RecordId, HEADER_LEN};
use super::storage::segment_path;
use super::tail::{FeedSignal, Tail};
use super::SpoolStats;

/// Records waiting on disk, oldest first. Blocking file reads: drive it
/// from `spawn_blocking` or a thread.
pub struct Feed {
    pub(crate) tail: Arc<Tail>,
    /// Everything before this was handed over (or acked, or damaged).
    pub(crate) cursor: RecordId,
    /// Segments present at open with undelivered records: their live offsets, sorted.
    pub(crate) known: VecDeque<(u64, VecDeque<u64>)>,
    /// The first segment created after open.
    pub(crate) first_new: u64,
    pub(crate) dir: PathBuf,
    pub(crate) file: Option<(u64, File)>,
    pub(crate) max_payload: usize,
    pub(crate) stats: Arc<SpoolStats>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("cursor", &self.cursor)
            .field("known_segments", &self.known.len())
            .finish_non_exhaustive()
    }
}

/// How reading at the cursor went.
enum Step {
    Got(RecordId, Record),
    /// The cursor moved (always forward: no step can loop); look again.
    Moved,
}

impl Feed {
    /// Up to `max_bytes` of bodies (at least one record if any waits), in
    /// order. Empty when nothing waits on disk: then, since the caller has
    /// handed over every earlier chunk, the overflow is ended, and
    /// [`FeedSignal::changed`] says when to ask again.
    pub fn next_chunk(&mut self, max_bytes: usize) -> Vec<(RecordId, Record)> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while bytes < max_bytes || out.is_empty() {
            let Some((id, record)) = self.next_waiting() else {
                if out.is_empty() && !self.tail.caught_up(self.cursor) {
                    continue; // more was synced meanwhile
                }
                break;
            };
            bytes += record.body.len();
            out.push((id, record));
        }
        out
    }

    /// What to wait on when [`Feed::next_chunk`] came back empty.
    pub fn signal(&self) -> FeedSignal {
        FeedSignal(Arc::clone(&self.tail))
    }

    /// The next record left on disk before the durable end, if any.
    fn next_waiting(&mut self) -> Option<(RecordId, Record)> {
        loop {
            let state = self.tail.state();
            let from = state.overflow?;
            if self.cursor < from {
                self.cursor = from;
            }
            if self.cursor >= state.end {
                return None;
            }
            let step = if self.known.is_empty() {
                self.sequential(state.end)
            } else {
                self.in_known()
            };
            match step {
                Step::Got(id, record) => {
                    self.unwait(1);
                    return Some((id, record));
                }
                Step::Moved => {}
            }
        }
    }

    /// In a segment present at open: the next live offset there.
    fn in_known(&mut self) -> Step {
        let Some((seq, offsets)) = self.known.front_mut() else {
            return Step::Moved; // on to the segments created since
        };
        let seq = *seq;
        if self.cursor.segment > seq {
            self.drop_known();
            return Step::Moved;
        }
        if self.cursor.segment < seq {
            self.cursor = RecordId {
                segment: seq,
                offset: 0,
            };
        }
        let mut skipped = 0;
        while offsets.front().is_some_and(|o| *o < self.cursor.offset) {
            offsets.pop_front();
            skipped += 1;
        }
        let next = offsets.pop_front();
        self.unwait(skipped);
        let Some(offset) = next else {
            self.known.pop_front();
            self.next_segment(seq);
            return Step::Moved;
        };
        self.cursor.offset = offset + 1;
        let max_payload = self.max_payload;
        let read = match self.open(seq) {
            Ok(file) => read_at(file, offset, None, max_payload),
            Err(e) => {
                // Missing or unreadable since open: skip the whole segment.
                tracing::warn!(segment = seq, error = %e, "a spool segment is missing or unreadable; skipped");
                self.unwait(1);
                self.drop_known();
                self.next_segment(seq);
                return Step::Moved;
            }
        };
        match read {
            Ok(Some((record, _))) => Step::Got(
                RecordId {
                    segment: seq,
                    offset,
                },
                record,
            ),
            Ok(None) => {
                self.damaged(seq, offset, "the segment is shorter than at open");
                Step::Moved
            }
            Err(why) => {
                self.damaged(seq, offset, &why);
                Step::Moved
            }
        }
    }

    /// Forgets the first known segment, its records no longer waiting.
    fn drop_known(&mut self) {
        if let Some((_, offsets)) = self.known.pop_front() {
            self.unwait(offsets.len());
        }
    }

    /// `n` records no longer wait on disk (handed over or skipped).
    fn unwait(&self, n: usize) {
        let n = n as u64;
        let _ = (self.stats.waiting).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
            Some(now.saturating_sub(n))
        });
    }

    /// In a segment created after open: the frame at the cursor, within the
    /// durable end (a segment before the end's is sealed: read to its end).
    fn sequential(&mut self, end: RecordId) -> Step {
        if self.cursor.segment < self.first_new {
            self.cursor = RecordId {
                segment: self.first_new,
                offset: 0,
            };
            return Step::Moved;
        }
        let RecordId {
            segment: seq,
            offset,
        } = self.cursor;
        let limit = (seq == end.segment).then_some(end.offset);
        let max_payload = self.max_payload;
        let file = match self.open(seq) {
            Ok(file) => file,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(segment = seq, error = %e, "cannot read a spool segment; its records wait for the next start");
                }
                // The segment still written to: past what is synced, so a
                // later overflow there is read from its own start.
                match limit {
                    Some(end) => self.cursor.offset = end,
                    None => self.next_segment(seq),
                }
                return Step::Moved;
            }
        };
        match read_at(file, offset, limit, max_payload) {
            Ok(Some((record, len))) => {
                self.cursor.offset = offset + (HEADER_LEN + len) as u64;
                Step::Got(
                    RecordId {
                        segment: seq,
                        offset,
                    },
                    record,
                )
            }
            Ok(None) if limit.is_some() => {
                // Shorter than what was synced: changed under us. Skip to the end.
                self.damaged(seq, offset, "the segment is shorter than what was synced");
                self.cursor.offset = end.offset;
                Step::Moved
            }
            Ok(None) => {
                self.next_segment(seq);
                Step::Moved
            }
            Err(why) => {
                self.damaged(seq, offset, &why);
                self.resync(limit);
                Step::Moved
            }
        }
    }

    /// After damage at the cursor: on to the next intact frame of the segment
    /// (or its end). Reads the rest of the segment once.
    fn resync(&mut self, limit: Option<u64>) {
        let RecordId {
            segment: seq,
            offset,
        } = self.cursor;
        let rest = self.file.as_ref().and_then(|(_, file)| {
            let len = limit.or_else(|| file.metadata().ok().map(|m| m.len()))?;
            let mut buf = vec![0; usize::try_from(len.saturating_sub(offset)).ok()?];
            file.read_exact_at(&mut buf, offset).ok().map(|()| buf)
        });
        let next = rest.and_then(|buf| {
            let scan = record::scan(buf.get(1..)?, self.max_payload);
            scan.frames.first().map(|(at, _)| offset + 1 + at)
        });
        match (next, limit) {
            (Some(at), _) => self.cursor.offset = at,
            (None, Some(end)) => self.cursor.offset = end,
            (None, None) => self.next_segment(seq),
        }
    }

    fn damaged(&mut self, seq: u64, offset: u64, why: &str) {
        tracing::warn!(
            segment = seq,
            offset,
            why,
            "a spool record could not be read back; skipped"
        );
        self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
        self.unwait(1);
    }

    /// The cursor moves to the start of the segment after `seq`.
    fn next_segment(&mut self, seq: u64) {
        let next = match self.known.front() {
            Some((known, _)) if *known > seq => *known,
            _ => (seq + 1).max(self.first_new),
        };
        self.cursor = RecordId {
            segment: next,
            offset: 0,
        };
        self.file = None;
    }

    /// The open file of segment `seq` (opened if needed).
    fn open(&mut self, seq: u64) -> io::Result<&File> {
        if self.file.as_ref().is_none_or(|(open, _)| *open != seq) {
            self.file = None;
            let file = File::open(segment_path(&self.dir, seq))?;
            self.file = Some((seq, file));
        }
        match &self.file {
            Some((_, file)) => Ok(file),
            None => Err(io::Error::other("no segment open")),
        }
    }
}

/// The record framed at `offset`, and its payload length. `Ok(None)`: no
/// frame starts there (the end of the file, or `limit`).
fn read_at(
    file: &File,
    offset: u64,
    limit: Option<u64>,
    max_payload: usize,
) -> Result<Option<(Record, usize)>, String> {
    if limit.is_some_and(|end| offset >= end) {
        return Ok(None);
    }
    let mut header = [0; HEADER_LEN];
    match file.read_exact_at(&mut header, offset) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let frame_end = offset + (HEADER_LEN + len) as u64;
    if len > max_payload || limit.is_some_and(|end| frame_end > end) {
        return Err("impossible length".into());
    }
    let mut frame = header.to_vec();
    frame.resize(HEADER_LEN + len, 0);
    file.read_exact_at(&mut frame[HEADER_LEN..], offset + HEADER_LEN as u64)
        .map_err(|e| e.to_string())?;
    if record::frame_at(&frame, 0, max_payload).is_none() {
        return Err("CRC mismatch".into());
    }
    let record = Record::decode(&frame[HEADER_LEN..]).map_err(str::to_owned)?;
    Ok(Some((record, len)))
}

impl Iterator for Feed {
    type Item = (RecordId, Record);

    /// The next record waiting on disk; `None` once caught up (which ends
    /// the overflow, as an empty [`Feed::next_chunk`] does).
    fn next(&mut self) -> Option<(RecordId, Record)> {
        self.next_chunk(1).pop()
    }
}
