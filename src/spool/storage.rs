//! The file operations whose failure the spool must survive (writes and
//! syncs), behind a small trait so tests can inject a full disk, an EIO or a
//! sync held open; plus the helpers that create files `0600` and sync the
//! directory when its entries change.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Which of the spool's files an operation is on, so a test can fail one kind only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Segment,
    Ledger,
    DeadLetter,
}

/// Writes and syncs of the spool's files. The defaults are the real thing;
/// production uses [`RealStorage`], tests wrap it to inject faults.
pub trait Storage: Send + Sync + 'static {
    fn write_all(&self, _kind: FileKind, file: &mut File, buf: &[u8]) -> io::Result<()> {
        file.write_all(buf)
    }

    fn sync_data(&self, _kind: FileKind, file: &File) -> io::Result<()> {
        file.sync_data()
    }
}

/// The operating system's files, unmodified.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealStorage;

impl Storage for RealStorage {}

/// Creates a new file readable and writable by its owner only.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Opens (creating if needed, `0600`) a file for appending.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Makes created, renamed or removed entries of `dir` durable: without it a
/// crash can bring back a deleted segment or lose a new one.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `segment-<seq>.log`, zero-padded so names sort like numbers.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("segment-{seq:020}.log"))
}

/// The sequence number in a segment file's name, if it is one.
pub(crate) fn segment_seq(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}
