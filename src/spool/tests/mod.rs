//! Unit tests of the spool, on temporary directories, with a [`Faulty`]
//! storage that injects write and sync failures or holds a sync open.

mod ack_soon;
mod commit;
mod crash;
mod dead_letters;
mod feed;
mod overlap;
mod props;
mod recovery;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use axum::http::{HeaderName, HeaderValue};
use bytes::Bytes;

use super::{Feed, FileKind, Record, RecordId, Spool, SpoolOptions, Storage};

/// How long a test waits for the writer thread before calling it a hang.
pub(super) const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Write,
    Sync,
}

struct Gate {
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

/// One segment sync held by [`Faulty::hold_each_segment_sync`]: send
/// `false` to let it run, `true` to fail it with an injected EIO.
pub(super) struct Held {
    pub release: mpsc::Sender<bool>,
}

/// Real files, plus injected failures and an optional hold on segment syncs.
#[derive(Default)]
pub(super) struct Faulty {
    faults: Mutex<Vec<(FileKind, Op)>>,
    gate: Mutex<Option<Gate>>,
    each: Mutex<Option<(FileKind, mpsc::Sender<Held>)>>,
}

impl Faulty {
    pub(super) fn fail(&self, kind: FileKind, op: Op) {
        self.faults.lock().unwrap().push((kind, op));
    }

    pub(super) fn heal(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// From now on every segment sync reports on the first channel that it
    /// began, then waits for a message on the second before it runs.
    pub(super) fn hold_segment_syncs(&self) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (entered, entered_rx) = mpsc::channel();
        let (release_tx, release) = mpsc::channel();
        *self.gate.lock().unwrap() = Some(Gate { entered, release });
        (entered_rx, release_tx)
    }

    /// From now on every segment sync, each on its own, reports a [`Held`]
    /// and waits for its verdict: syncs can overlap and be released (or
    /// failed) in any order.
    pub(super) fn hold_each_segment_sync(&self) -> mpsc::Receiver<Held> {
        self.hold_each_sync(FileKind::Segment)
    }

    /// The same for the ledger's syncs (segment syncs run freely).
    pub(super) fn hold_each_ledger_sync(&self) -> mpsc::Receiver<Held> {
        self.hold_each_sync(FileKind::Ledger)
    }

    fn hold_each_sync(&self, kind: FileKind) -> mpsc::Receiver<Held> {
        let (held, rx) = mpsc::channel();
        *self.each.lock().unwrap() = Some((kind, held));
        rx
    }

    fn injected(&self, kind: FileKind, op: Op) -> bool {
        self.faults.lock().unwrap().contains(&(kind, op))
    }
}

impl Storage for Faulty {
    fn write_all(&self, kind: FileKind, file: &mut File, buf: &[u8]) -> io::Result<()> {
        if self.injected(kind, Op::Write) {
            // Like a disk filling up mid-write: half of it lands.
            file.write_all(&buf[..buf.len() / 2])?;
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected: disk full",
            ));
        }
        file.write_all(buf)
    }

    fn sync_data(&self, kind: FileKind, file: &File) -> io::Result<()> {
        if kind == FileKind::Segment {
            if let Some(gate) = self.gate.lock().unwrap().as_ref() {
                let _ = gate.entered.send(());
                let _ = gate.release.recv_timeout(WAIT);
            }
        }
        let each = self.each.lock().unwrap().clone();
        if let Some((held, each)) = each {
            if held == kind {
                let (release, verdict) = mpsc::channel();
                let _ = each.send(Held { release });
                if verdict.recv_timeout(WAIT) == Ok(true) {
                    return Err(io::Error::other("injected: EIO on this sync"));
                }
            }
        }
        if self.injected(kind, Op::Sync) {
            return Err(io::Error::other("injected: EIO"));
        }
        file.sync_data()
    }
}

pub(super) fn options(dir: &Path) -> SpoolOptions {
    SpoolOptions::new(dir.join("spool"))
}

pub(super) fn faulty_options(dir: &Path, faulty: &Arc<Faulty>) -> SpoolOptions {
    let mut options = options(dir);
    options.storage = Arc::clone(faulty) as Arc<dyn Storage>;
    options
}

pub(super) fn open(options: SpoolOptions) -> (Spool, Feed) {
    Spool::open(options).expect("spool opens")
}

/// A record with credentials whose values contain `s3cr3t`.
pub(super) fn record(n: u64) -> Record {
    Record {
        connection_id: format!("conn-{}", n % 3),
        credentials: vec![
            (
                HeaderName::from_static("authorization"),
                HeaderValue::from_static("Bearer s3cr3t-token"),
            ),
            (
                HeaderName::from_static("x-api-key"),
                HeaderValue::from_static("key-s3cr3t"),
            ),
        ],
        body: Bytes::from(format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(40))),
        accepted_at: UNIX_EPOCH + Duration::from_millis(1_780_000_000_000 + n),
    }
}

pub(super) async fn append_all(spool: &Spool, range: std::ops::Range<u64>) -> Vec<RecordId> {
    let mut ids = Vec::new();
    for n in range {
        ids.push(spool.append(&record(n)).await.expect("append"));
    }
    ids
}

pub(super) fn segment_files(spool_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(spool_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("segment-"))
        })
        .collect();
    files.sort();
    files
}

/// Bodies of everything a fresh open replays, with their ids.
pub(super) fn replayed(options: SpoolOptions) -> (Spool, Vec<(RecordId, Record)>) {
    let (spool, replay) = open(options);
    (spool, replay.collect())
}
