//! `{spool_dir}/dead-letter.jsonl`: messages that failed for good, one JSON
//! object a line, and the reader a `dead-letters resend` command streams back.
//!
//! A line holds `time`, `connectionId`, the upstream `status` and
//! `upstreamMessage`, `acceptedAt`, and the message exactly as received:
//! `message` (embedded as JSON) when it is one-line JSON, else `messageText`
//! (a JSON string of the exact text) or, for bytes that are not UTF-8,
//! `messageBase64`. Never credentials: they are not part of the line at all.
//! The file is written (and synced, `0600`) by the spool's writer thread,
//! one append at a time under [`DeadLetterLock`], which `dead-letters resend`
//! takes too.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::record::Record;
use super::storage::{self, FileKind, Storage};
use super::{Reply, SpoolError};

pub const FILE_NAME: &str = "dead-letter.jsonl";
/// The lock file beside it (see [`DeadLetterLock`]); never removed.
pub const LOCK_FILE_NAME: &str = "dead-letter.lock";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    time: String,
    connection_id: &'a str,
    status: u16,
    upstream_message: &'a str,
    accepted_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_base64: Option<String>,
}

/// [`Line`] read back (owned: strings may hold escapes).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LineIn {
    time: String,
    connection_id: String,
    status: u16,
    upstream_message: String,
    accepted_at: String,
    message: Option<Box<RawValue>>,
    message_text: Option<String>,
    message_base64: Option<String>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The line (with its `\n`) for one dead letter.
pub(crate) fn line(
    record: &Record,
    status: u16,
    upstream_message: &str,
    now: SystemTime,
) -> Vec<u8> {
    let body = &record.body[..];
    let raw = serde_json::from_slice::<&RawValue>(body)
        .ok()
        // Only when embedding keeps every byte and the line stays one line.
        .filter(|raw| {
            raw.get().as_bytes() == body && !body.contains(&b'\n') && !body.contains(&b'\r')
        });
    let text = match raw {
        Some(_) => None,
        None => std::str::from_utf8(body).ok(),
    };
    let line = Line {
        time: rfc3339(now),
        connection_id: &record.connection_id,
        status,
        upstream_message,
        accepted_at: rfc3339(record.accepted_at),
        message: raw,
        message_text: text,
        message_base64: (raw.is_none() && text.is_none())
            .then(|| base64::engine::general_purpose::STANDARD.encode(body)),
    };
    // Serializing this struct of strings and numbers cannot fail.
    let mut out = serde_json::to_vec(&line).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Appends dead letters for the writer thread. The file is opened per append
/// under [`DeadLetterLock`] (dead letters are rare), so `dead-letters resend`
/// can move the file aside between two appends and nothing is lost.
#[derive(Default)]
pub(crate) struct DeadLetterFile;

impl DeadLetterFile {
    /// Appends whole lines and syncs them. After a failure the file is cut
    /// back (a half line would swallow the next one).
    pub(crate) fn write(
        &mut self,
        dir: &Path,
        storage: &dyn Storage,
        lines: &[u8],
    ) -> io::Result<()> {
        let _lock = DeadLetterLock::acquire(dir)?;
        append_lines(dir, storage, lines)
    }
}

/// Appends `lines` (whole lines, each ending in `\n`) to `dead-letter.jsonl`
/// and syncs them; the caller holds the [`DeadLetterLock`].
pub(crate) fn append_lines(dir: &Path, storage: &dyn Storage, lines: &[u8]) -> io::Result<()> {
    let path = dir.join(FILE_NAME);
    let existed = path.exists();
    let mut file = storage::open_append(&path)?;
    if !existed {
        storage::sync_dir(dir)?;
    }
    let before = file.metadata()?.len();
    let mut buf = Vec::with_capacity(lines.len() + 1);
    if !ends_with_newline(&path)? {
        buf.push(b'\n'); // end a line torn by a crash so it does not swallow this one
    }
    buf.extend_from_slice(lines);
    let written = storage
        .write_all(FileKind::DeadLetter, &mut file, &buf)
        .and_then(|()| storage.sync_data(FileKind::DeadLetter, &file));
    if written.is_err() {
        let _ = file.set_len(before);
    }
    written
}

/// The exclusive `flock` on `{spool_dir}/dead-letter.lock`, held while
/// `dead-letter.jsonl` is appended to, moved aside or merged back; released
/// when dropped (the descriptor closes). A separate lock file, because the
/// lock on a file that is renamed away would not stop an append to it.
pub struct DeadLetterLock {
    _file: File,
}

impl DeadLetterLock {
    /// Blocks until the lock is free (it is held for one append or one rename).
    pub fn acquire(spool_dir: &Path) -> io::Result<DeadLetterLock> {
        let file = storage::open_append(&spool_dir.join(LOCK_FILE_NAME))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(io::Error::from)?;
        Ok(DeadLetterLock { _file: file })
    }
}

/// True for an empty file or one whose last byte ends a line.
fn ends_with_newline(path: &Path) -> io::Result<bool> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

/// One dead letter read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub time: String,
    pub connection_id: String,
    pub status: u16,
    pub upstream_message: String,
    pub accepted_at: String,
    /// The message bytes exactly as they were received.
    pub body: Bytes,
}

/// A line that could not be read back (torn by a crash, edited by hand).
#[derive(Debug, thiserror::Error)]
#[error("dead-letter.jsonl line {line}: {reason}")]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

/// Streams `dead-letter.jsonl` line by line; a bad line is an `Err` item and
/// reading goes on with the next.
pub struct DeadLetterReader {
    lines: BufReader<File>,
    line: usize,
}

impl DeadLetterReader {
    /// `Ok(None)` when there are no dead letters (no file).
    pub fn open(spool_dir: &Path) -> io::Result<Option<DeadLetterReader>> {
        match File::open(spool_dir.join(FILE_NAME)) {
            Ok(file) => Ok(Some(DeadLetterReader {
                lines: BufReader::new(file),
                line: 0,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads one line (without or with its `\n`) back.
    pub fn parse(bytes: &[u8]) -> Result<DeadLetter, String> {
        let line: LineIn = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let body = match (line.message, line.message_text, line.message_base64) {
            (Some(raw), None, None) => Bytes::copy_from_slice(raw.get().as_bytes()),
            (None, Some(text), None) => Bytes::copy_from_slice(text.as_bytes()),
            (None, None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(|e| format!("messageBase64: {e}"))?,
            _ => return Err("needs exactly one of message, messageText, messageBase64".into()),
        };
        Ok(DeadLetter {
            time: line.time,
            connection_id: line.connection_id,
            status: line.status,
            upstream_message: line.upstream_message,
            accepted_at: line.accepted_at,
            body,
        })
    }
}

impl Iterator for DeadLetterReader {
    type Item = Result<DeadLetter, BadLine>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            self.line += 1;
            let line = self.line;
            match self.lines.read_until(b'\n', &mut buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    return Some(Err(BadLine {
                        line,
                        reason: e.to_string(),
                    }))
                }
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(Self::parse(&buf).map_err(|reason| BadLine { line, reason }));
        }
    }
}

/// The writer thread's side: one write and sync for a group's dead letters.
impl super::writer::Writer {
    pub(crate) fn commit_dead_letters(&mut self, letters: Vec<(Vec<u8>, Reply<()>)>) {
        if letters.is_empty() {
            return;
        }
        let buf: Vec<u8> = letters
            .iter()
            .flat_map(|(l, _)| l.iter().copied())
            .collect();
        let options = &self.options;
        let result = self
            .dead_letters
            .write(&options.dir, options.storage.as_ref(), &buf);
        if result.is_ok() {
            let n = letters.len() as u64;
            self.stats.dead_letters.fetch_add(n, Ordering::Relaxed);
        }
        let result = result.map_err(Arc::new);
        for (_, reply) in letters {
            let _ = reply.send(result.clone().map_err(SpoolError::Io));
        }
    }
}
