//! The dead-letter files as `dead-letters resend` handles them, so that the
//! daemon may append while a resend runs and no dead letter is lost or left
//! twice in the files.
//!
//! 1. [`take`], under [`DeadLetterLock`]: `dead-letter.jsonl` is renamed to
//!    `dead-letter.resending-<ms>.jsonl`; the daemon's next append creates a
//!    fresh `dead-letter.jsonl`. Files left by a resend that crashed are taken
//!    too (and first cleared of lines it had already merged back).
//! 2. The resend sends the lines, without the lock.
//! 3. [`finish`]: the taken file is rewritten (temp file, rename) to the lines
//!    kept; then, under the lock, those lines are appended to
//!    `dead-letter.jsonl` and the taken file is removed. A crash between the
//!    append and the removal leaves kept lines in both: step 1 of the next
//!    resend drops them from the taken file, as they are found in
//!    `dead-letter.jsonl` byte for byte.
//!
//! Files are created `0600`; every rename, creation and removal is followed by
//! a sync of the directory.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::spool::dead_letter::{self, DeadLetterLock, FILE_NAME};
use crate::spool::RealStorage;

const TAKEN_PREFIX: &str = "dead-letter.resending-";
const TAKEN_SUFFIX: &str = ".jsonl";
const TEMP_SUFFIX: &str = ".tmp";
const RESEND_LOCK_NAME: &str = "dead-letter.resend.lock";

/// Held by a running resend (`flock` on `dead-letter.resend.lock`, released
/// when dropped or when the process dies), so two resends never work on the
/// same files. The daemon never takes it.
pub struct ResendGuard {
    _file: File,
}

impl ResendGuard {
    /// `None` when another resend holds it.
    pub fn try_acquire(dir: &Path) -> io::Result<Option<ResendGuard>> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(dir.join(RESEND_LOCK_NAME))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(ResendGuard { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The lines of one file, each without its `\n`.
pub fn read_lines(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(<[u8]>::to_vec)
        .collect())
}

/// Files of a resend that did not finish, oldest first.
pub fn leftovers(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(TAKEN_PREFIX) && name.ends_with(TAKEN_SUFFIX) {
            found.push(dir.join(name));
        }
    }
    found.sort();
    Ok(found)
}

/// Every file holding dead letters: `dead-letter.jsonl` (if present) and leftovers.
pub fn all_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = leftovers(dir)?;
    let main = dir.join(FILE_NAME);
    if main.exists() {
        files.push(main);
    }
    Ok(files)
}

/// Step 1: moves `dead-letter.jsonl` aside and returns every file to resend.
pub fn take(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let _lock = DeadLetterLock::acquire(dir)?;
    remove_temp_files(dir)?;
    let main = dir.join(FILE_NAME);
    let mut taken = Vec::new();
    let merged = read_lines(&main)?;
    for path in leftovers(dir)? {
        if drop_merged(&path, &merged)? {
            taken.push(path);
        }
    }
    if fs::metadata(&main).is_ok_and(|m| m.len() > 0) {
        let to = fresh_name(dir)?;
        fs::rename(&main, &to)?;
        taken.push(to);
    }
    sync_dir(dir)?;
    Ok(taken)
}

/// Step 3: `kept` (the taken file's lines not accepted, in order) goes back.
pub fn finish(dir: &Path, taken: &Path, kept: &[Vec<u8>]) -> io::Result<()> {
    // First the taken file shrinks to what is kept: a crash after this resends
    // only those, never the ones already accepted.
    rewrite(taken, kept)?;
    let _lock = DeadLetterLock::acquire(dir)?;
    if !kept.is_empty() {
        dead_letter::append_lines(dir, &RealStorage, &joined(kept))?;
    }
    fs::remove_file(taken)?;
    sync_dir(dir)
}

/// Removes from a leftover the lines that are also in `dead-letter.jsonl`
/// (merged back by the crashed resend). False when nothing is left of it.
fn drop_merged(path: &Path, merged: &[Vec<u8>]) -> io::Result<bool> {
    let mut present: HashMap<&[u8], usize> = HashMap::new();
    for line in merged {
        *present.entry(line).or_default() += 1;
    }
    let lines = read_lines(path)?;
    let before = lines.len();
    let rest: Vec<Vec<u8>> = lines
        .into_iter()
        .filter(|line| match present.get_mut(&line[..]) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect();
    if rest.is_empty() {
        fs::remove_file(path)?;
        return Ok(false);
    }
    if rest.len() != before {
        rewrite(path, &rest)?;
    }
    Ok(true)
}

/// Replaces `path` by `lines` atomically (temp file, sync, rename, sync dir).
fn rewrite(path: &Path, lines: &[Vec<u8>]) -> io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(TEMP_SUFFIX);
    let temp = PathBuf::from(temp);
    let mut file = create_truncated(&temp)?;
    file.write_all(&joined(lines))?;
    file.sync_all()?;
    fs::rename(&temp, path)?;
    sync_dir(parent(path))
}

fn joined(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// A crash in the middle of [`rewrite`] leaves a temp file; the file it was
/// to replace is still whole, so the temp file is only removed.
fn remove_temp_files(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(TAKEN_PREFIX) && name.ends_with(TEMP_SUFFIX) {
            fs::remove_file(dir.join(name))?;
        }
    }
    Ok(())
}

/// `dead-letter.resending-<unix ms>.jsonl`, a later number if that one exists.
fn fresh_name(dir: &Path) -> io::Result<PathBuf> {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    for n in 0..1000 {
        let path = dir.join(format!("{TAKEN_PREFIX}{:015}{TAKEN_SUFFIX}", ms + n));
        if !path.exists() {
            return Ok(path);
        }
    }
    Err(io::Error::other(
        "too many dead-letter.resending-*.jsonl files",
    ))
}

fn create_truncated(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
