//! Opening a spool: prepare `spool_dir` (`0700`), read the ledger, scan every
//! segment in order, skip (count, log) whatever is damaged, delete segments
//! with nothing left to deliver (after the rewritten ledger is synced), start
//! the writer, and hand back a [`Replay`] of the undelivered records.
//!
//! Open fails only when the directory itself cannot be used; damaged content,
//! unreadable or missing segments never stop a start. Memory: the scan holds
//! one segment's bytes at a time, the replay one record at a time plus 8 bytes
//! per undelivered record (its offset).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::ledger;
use super::record::{self, Record, RecordId, HEADER_LEN};
use super::storage::{segment_path, segment_seq};
use super::writer::{Segment, Writer};
use super::{OpenError, Spool, SpoolOptions, SpoolStats};

pub(crate) fn open(options: SpoolOptions) -> Result<(Spool, Replay), OpenError> {
    let dir = options.dir.clone();
    let fail = |what: &'static str| {
        let dir = dir.clone();
        move |source: io::Error| OpenError { dir, what, source }
    };
    prepare_dir(&dir).map_err(fail("cannot create or use the directory"))?;
    let (mut acks, damaged_acks) =
        ledger::read(&dir).map_err(fail("cannot read the ack ledger"))?;
    let stats = Arc::new(SpoolStats::default());
    if damaged_acks > 0 {
        tracing::warn!(dir = %dir.display(), damaged = damaged_acks, "skipped damaged spool ack entries; their records may be delivered twice");
        stats.corrupt.fetch_add(damaged_acks, Ordering::Relaxed);
    }
    let seqs = list_segments(&dir).map_err(fail("cannot list the directory"))?;
    let max_seen = seqs.iter().chain(acks.keys()).max().copied().unwrap_or(0);

    let mut segments = BTreeMap::new();
    let mut foreign_acks = Vec::new();
    for seq in seqs {
        let path = segment_path(&dir, seq);
        let segment_acks = acks.remove(&seq).unwrap_or_default();
        match load_segment(&path, options.max_record_bytes, &segment_acks, &stats) {
            Ok(segment) => {
                segments.insert(seq, segment);
            }
            Err(e) => {
                // Left alone (never deleted) and its acks kept: a later start may read it.
                tracing::warn!(path = %path.display(), error = %e, "cannot read a spool segment; skipped");
                foreign_acks.extend(segment_acks.into_iter().map(|offset| RecordId {
                    segment: seq,
                    offset,
                }));
            }
        }
    }

    let mut writer = Writer {
        options,
        stats: Arc::clone(&stats),
        segments,
        active: None,
        next_seq: max_seen + 1,
        ledger: None,
        foreign_acks,
        dead_letters: Default::default(),
    };
    // Acks of segments already gone are dropped here; the rewrite is synced
    // before any segment is deleted below.
    match writer.rewrite_ledger() {
        Ok(ledger) => writer.ledger = Some(ledger),
        Err(e) if unusable(&e) => return Err(fail("cannot write the ack ledger")(e)),
        // A full disk must not stop a start: replay and delivery go on, and
        // the rewrite is retried at the first ack.
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot rewrite the spool ack ledger; retried at the next ack")
        }
    }
    let bytes: u64 = writer.segments.values().map(|s| s.bytes).sum();
    let live: usize = writer.segments.values().map(|s| s.live.len()).sum();
    stats.bytes.store(bytes, Ordering::Relaxed);
    stats.messages.store(live as u64, Ordering::Relaxed);

    let replay = Replay {
        pending: writer
            .segments
            .iter()
            .filter(|(_, s)| !s.live.is_empty())
            .map(|(seq, s)| {
                let mut offsets: Vec<u64> = s.live.iter().copied().collect();
                offsets.sort_unstable();
                (*seq, s.path.clone(), offsets)
            })
            .collect(),
        current: None,
        max_payload: writer.options.max_record_bytes,
        stats: Arc::clone(&stats),
    };
    if writer.ledger.is_some() {
        writer.delete_finished();
    }
    tracing::info!(dir = %dir.display(), segments = writer.segments.len(), undelivered = live, bytes, "spool opened");

    let (tx, rx) = mpsc::unbounded_channel();
    let spool = Spool {
        tx,
        stats,
        max_spool_bytes: writer.options.max_spool_bytes,
        max_record_bytes: writer.options.max_record_bytes,
    };
    std::thread::Builder::new()
        .name("inletd-spool".into())
        .spawn(move || writer.run(rx))
        .map_err(fail("cannot start the spool writer thread"))?;
    Ok((spool, replay))
}

/// Errors that say the directory cannot be used at all (rather than "not now").
fn unusable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied
            | io::ErrorKind::ReadOnlyFilesystem
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::NotFound
    )
}

/// Creates the directory `0700`, or tightens an existing one to `0700`.
fn prepare_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(segment_seq) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

fn load_segment(
    path: &Path,
    max_payload: usize,
    acks: &HashSet<u64>,
    stats: &SpoolStats,
) -> io::Result<Segment> {
    let bytes = fs::read(path)?;
    let scan = record::scan(&bytes, max_payload);
    let mut damaged = scan.damaged.len() as u64;
    for at in &scan.damaged {
        tracing::warn!(path = %path.display(), offset = at, "skipped a damaged stretch of a spool segment (torn write or corruption)");
    }
    let mut live = HashSet::new();
    let mut acked = Vec::new();
    for (offset, len) in scan.frames {
        let start = offset as usize + HEADER_LEN;
        if let Err(why) = Record::decode(&bytes[start..start + len]) {
            tracing::warn!(path = %path.display(), offset, why, "skipped an unreadable spool record");
            damaged += 1;
        } else if acks.contains(&offset) {
            acked.push(offset);
        } else {
            live.insert(offset);
        }
    }
    stats.corrupt.fetch_add(damaged, Ordering::Relaxed);
    Ok(Segment {
        path: path.to_path_buf(),
        bytes: bytes.len() as u64,
        live,
        acked,
        sealed: true,
    })
}

/// The records that were undelivered at open, oldest first, read lazily one
/// at a time. Blocking file reads: drive it from `spawn_blocking` or a thread.
pub struct Replay {
    pending: VecDeque<(u64, PathBuf, Vec<u64>)>,
    current: Option<(u64, File, std::vec::IntoIter<u64>)>,
    max_payload: usize,
    stats: Arc<SpoolStats>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("segments_left", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Replay {
    /// Up to `max_bytes` of bodies (at least one record if any remain), so a
    /// caller can stay inside `max_buffered_bytes`. Empty when done.
    pub fn next_chunk(&mut self, max_bytes: usize) -> Vec<(RecordId, Record)> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while bytes < max_bytes || out.is_empty() {
            let Some((id, record)) = self.next() else {
                break;
            };
            bytes += record.body.len();
            out.push((id, record));
        }
        out
    }

    fn read(file: &File, offset: u64, max_payload: usize) -> Result<Record, String> {
        let mut header = [0; HEADER_LEN];
        file.read_exact_at(&mut header, offset)
            .map_err(|e| e.to_string())?;
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len > max_payload {
            return Err("impossible length".into());
        }
        let mut frame = header.to_vec();
        frame.resize(HEADER_LEN + len, 0);
        file.read_exact_at(&mut frame[HEADER_LEN..], offset + HEADER_LEN as u64)
            .map_err(|e| e.to_string())?;
        if record::frame_at(&frame, 0, max_payload).is_none() {
            return Err("CRC mismatch".into());
        }
        Record::decode(&frame[HEADER_LEN..]).map_err(str::to_owned)
    }
}

impl Iterator for Replay {
    type Item = (RecordId, Record);

    fn next(&mut self) -> Option<(RecordId, Record)> {
        loop {
            if let Some((seq, file, offsets)) = self.current.as_mut() {
                let Some(offset) = offsets.next() else {
                    self.current = None;
                    continue;
                };
                match Self::read(file, offset, self.max_payload) {
                    Ok(record) => {
                        let id = RecordId {
                            segment: *seq,
                            offset,
                        };
                        return Some((id, record));
                    }
                    Err(why) => {
                        // Changed since the scan at open: skip it like any damage.
                        tracing::warn!(
                            segment = *seq,
                            offset,
                            why,
                            "a spool record could not be read back; skipped"
                        );
                        self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            let (seq, path, offsets) = self.pending.pop_front()?;
            match File::open(&path) {
                Ok(file) => self.current = Some((seq, file, offsets.into_iter())),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "a spool segment is missing or unreadable; skipped");
                }
            }
        }
    }
}
