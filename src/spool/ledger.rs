//! The acknowledgement ledger: `acks.log`, an append-only list of the
//! [`RecordId`]s delivered (or dead-lettered), written and `fdatasync`ed before
//! anything depends on it. No mmap: every change is a write plus a sync.
//!
//! Entries are fixed-size (`segment u64 | offset u64 | crc32 u32`), so a
//! damaged one is skipped without losing the alignment of the rest; a lost ack
//! only means one duplicate delivery (at least once). The ledger is rewritten
//! (temp file, sync, rename, directory sync) at open and whenever it holds
//! mostly acks of deleted segments, so it stays small and aligned.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::record::RecordId;
use super::storage::{self, FileKind, Storage};
use super::writer::Segment;
use super::SpoolOptions;

pub(crate) const FILE_NAME: &str = "acks.log";
const TMP_NAME: &str = "acks.log.tmp";
const ENTRY_LEN: usize = 20;

/// Acks per segment, as read at open.
pub(crate) type Acks = HashMap<u64, HashSet<u64>>;

pub(crate) struct Ledger {
    file: File,
    /// Bytes written to the file (synced or not), to decide when a rewrite
    /// pays off, and the end the next sync covers.
    pub bytes: u64,
    storage: Arc<dyn Storage>,
    /// Tells this file from the ledgers before it (each rewrite is a new file),
    /// so the return of a sync of an older one is not taken for this one's.
    pub generation: u64,
    /// A second open file description of the file, used only by the one
    /// ledger sync in flight (see `syncer.rs` on why syncs have their own).
    pub sync_file: Arc<File>,
    /// The end covered by the latest sync started.
    pub started: u64,
}

/// Generations of ledger files, process-wide.
static GENERATION: AtomicU64 = AtomicU64::new(0);

fn encode(id: RecordId, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&id.segment.to_le_bytes());
    out.extend_from_slice(&id.offset.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Reads `acks.log` if there is one. Returns the acks and how many entries
/// were damaged (a torn tail counts as one).
pub(crate) fn read(dir: &Path) -> io::Result<(Acks, u64)> {
    let bytes = match std::fs::read(dir.join(FILE_NAME)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Acks::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut acks = Acks::new();
    let mut damaged = 0;
    let mut chunks = bytes.chunks_exact(ENTRY_LEN);
    for entry in &mut chunks {
        let crc = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]);
        if crc32fast::hash(&entry[..16]) != crc {
            damaged += 1;
            continue;
        }
        let mut seg = [0; 8];
        let mut off = [0; 8];
        seg.copy_from_slice(&entry[..8]);
        off.copy_from_slice(&entry[8..16]);
        acks.entry(u64::from_le_bytes(seg))
            .or_default()
            .insert(u64::from_le_bytes(off));
    }
    if !chunks.remainder().is_empty() {
        damaged += 1;
    }
    Ok((acks, damaged))
}

impl Ledger {
    /// Replaces the ledger with exactly `ids`, durably: the new file is synced
    /// before it is renamed over the old one, and the directory after.
    pub(crate) fn rewrite(
        dir: &Path,
        storage: Arc<dyn Storage>,
        ids: impl Iterator<Item = RecordId>,
    ) -> io::Result<Ledger> {
        let tmp: PathBuf = dir.join(TMP_NAME);
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut buf = Vec::new();
        for id in ids {
            encode(id, &mut buf);
        }
        let mut file = storage::create_new(&tmp)?;
        storage.write_all(FileKind::Ledger, &mut file, &buf)?;
        storage.sync_data(FileKind::Ledger, &file)?;
        drop(file);
        std::fs::rename(&tmp, dir.join(FILE_NAME))?;
        storage::sync_dir(dir)?;
        let file = storage::open_append(&dir.join(FILE_NAME))?;
        let sync_file = Arc::new(File::open(dir.join(FILE_NAME))?);
        let bytes = buf.len() as u64;
        Ok(Ledger {
            file,
            bytes,
            storage,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            sync_file,
            started: bytes,
        })
    }

    /// Writes acks (not synced: the caller starts a sync of `sync_file`
    /// up to [`Ledger::bytes`]). After an error the file's tail is unknown:
    /// the caller drops this ledger and rewrites it.
    pub(crate) fn write(&mut self, ids: &[RecordId]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(ids.len() * ENTRY_LEN);
        for id in ids {
            encode(*id, &mut buf);
        }
        self.storage
            .write_all(FileKind::Ledger, &mut self.file, &buf)?;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    /// Worth rewriting when it is past `at_bytes` and at least half of it is
    /// acks of segments already deleted.
    pub(crate) fn wants_rewrite(&self, live_acks: usize, at_bytes: u64) -> bool {
        let live_bytes = (live_acks * ENTRY_LEN) as u64;
        self.bytes > at_bytes && self.bytes > 2 * live_bytes
    }
}

/// Writes acks, first rewriting the ledger if the last use failed.
pub(crate) fn write_acks(
    ledger: &mut Option<Ledger>,
    segments: &BTreeMap<u64, Segment>,
    foreign_acks: &[RecordId],
    options: &SpoolOptions,
    fresh: &[RecordId],
) -> io::Result<()> {
    if ledger.is_none() {
        *ledger = Some(rewrite_ledger(segments, foreign_acks, options)?);
    }
    match ledger.as_mut() {
        Some(ledger) => ledger.write(fresh),
        None => Err(io::Error::other("ledger not open")),
    }
}

/// A fresh ledger holding every durable ack of the segments still there.
pub(crate) fn rewrite_ledger(
    segments: &BTreeMap<u64, Segment>,
    foreign_acks: &[RecordId],
    options: &SpoolOptions,
) -> io::Result<Ledger> {
    let durable = segments.iter().flat_map(|(seq, s)| {
        s.acked.iter().map(|offset| RecordId {
            segment: *seq,
            offset: *offset,
        })
    });
    let ids = durable.chain(foreign_acks.iter().copied());
    Ledger::rewrite(&options.dir, Arc::clone(&options.storage), ids)
}
