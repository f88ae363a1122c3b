//! Opening a spool: prepare `spool_dir` (`0700`), read the ledger, scan every
//! segment in order, skip (count, log) whatever is damaged, delete segments
//! with nothing left to deliver (after the rewritten ledger is synced), start
//! the writer, and hand back a [`Feed`] that starts with the undelivered records.
//!
//! Open fails only when the directory itself cannot be used; damaged content,
//! unreadable or missing segments never stop a start. Memory: the scan holds
//! one segment's bytes at a time, the feed one record at a time plus 8 bytes
//! per record undelivered at open (its offset).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::feed::Feed;
use super::ledger;
use super::record::{self, Record, RecordId, HEADER_LEN};
use super::storage::{segment_path, segment_seq};
use super::syncer::Syncer;
use super::tail::{State, Tail};
use super::writer::{Segment, Writer};
use super::{OpenError, Spool, SpoolOptions, SpoolStats};

pub(crate) fn open(options: SpoolOptions) -> Result<(Spool, Feed), OpenError> {
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

    let bytes: u64 = segments.values().map(|s| s.bytes).sum();
    let live: usize = segments.values().map(|s| s.live.len()).sum();
    stats.bytes.store(bytes, Ordering::Relaxed);
    stats.messages.store(live as u64, Ordering::Relaxed);
    stats.waiting.store(live as u64, Ordering::Relaxed);
    // Start-up is an overflow from the first undelivered record: everything
    // is on disk only, and new appends wait behind it until the feed catches up.
    let known: VecDeque<(u64, VecDeque<u64>)> = segments
        .iter()
        .filter(|(_, s)| !s.live.is_empty())
        .map(|(seq, s)| {
            let mut offsets: Vec<u64> = s.live.iter().copied().collect();
            offsets.sort_unstable();
            (*seq, offsets.into())
        })
        .collect();
    let first_new = max_seen + 1;
    let start = |segment| RecordId { segment, offset: 0 };
    let tail = Arc::new(Tail::new(
        State {
            end: start(first_new),
            overflow: known.front().map(|(seq, _)| start(*seq)),
        },
        Arc::clone(&stats),
    ));
    let feed = Feed {
        tail: Arc::clone(&tail),
        cursor: start(known.front().map_or(first_new, |(seq, _)| *seq)),
        known,
        first_new,
        dir: dir.clone(),
        file: None,
        max_payload: options.max_record_bytes,
        stats: Arc::clone(&stats),
    };

    let syncer =
        Syncer::start(&options.storage).map_err(fail("cannot start the spool sync threads"))?;
    let mut writer = Writer {
        options,
        stats: Arc::clone(&stats),
        segments,
        active: None,
        next_seq: first_new,
        ledger: None,
        foreign_acks,
        dead_letters: Default::default(),
        tail,
        syncer,
        written: Default::default(),
        ack_groups: Default::default(),
        ack_queue: Default::default(),
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
    if writer.ledger.is_some() {
        writer.delete_finished();
    }
    tracing::info!(dir = %dir.display(), segments = writer.segments.len(), undelivered = live, bytes, "spool opened");

    let (tx, rx) = crossbeam_channel::unbounded();
    let spool = Spool {
        tx,
        queueing: Default::default(),
        acks: Arc::clone(&writer.ack_queue),
        stats,
        max_spool_bytes: writer.options.max_spool_bytes,
        max_record_bytes: writer.options.max_record_bytes,
    };
    std::thread::Builder::new()
        .name("inletd-spool".into())
        .spawn(move || writer.run(rx))
        .map_err(fail("cannot start the spool writer thread"))?;
    Ok((spool, feed))
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
        sync: Default::default(),
    })
}
