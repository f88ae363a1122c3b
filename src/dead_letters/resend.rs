//! `inletd dead-letters resend`: each dead letter, byte for byte, as
//! `POST {to}/collection/{connectionId}`, a bounded number at once, waiting
//! for every answer. A 2xx (200; or 202 from an inletd with `spool_dir`, where
//! it is durable) removes the line; anything else keeps it, noted with
//! `lastResend` (time, target, result).
//!
//! The `--header` values (typically `Authorization`) are sent and nothing
//! else: never written to a file, printed or logged; `Debug` redacts them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Url;
use serde_json::value::RawValue;

use super::summary::Summary;
use super::{files, read_entries, Entry};
use crate::spool::DeadLetter;

/// Most bytes of a failure answer read to report its message.
const MAX_ANSWER_BYTES: usize = 4096;
/// Longest upstream message shown in the summary.
const MAX_REASON_CHARS: usize = 200;

#[derive(clap::Args)]
pub struct ResendArgs {
    /// Base URL of a running inletd or any AEP-compatible endpoint
    /// [default: http:// and `listen` of the layered configuration].
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// A header for every request, as 'Name: value' (repeatable), e.g. Authorization.
    /// Never written or logged; prefer --header-file, which keeps it out of `ps`.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// A file of such headers, one a line.
    #[arg(long, value_name = "PATH")]
    pub header_file: Option<PathBuf>,
    /// Requests at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Longest wait for each answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Show what would be sent; send nothing, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only dead letters of this connection id (the others stay as they are).
    #[arg(long, value_name = "ID")]
    pub connection_id: Option<String>,
}

impl fmt::Debug for ResendArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResendArgs")
            .field("to", &self.to)
            .field(
                "headers",
                &format_args!("[{} redacted]", self.headers.len()),
            )
            .field("header_file", &self.header_file)
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .field("dry_run", &self.dry_run)
            .field("connection_id", &self.connection_id)
            .finish()
    }
}

/// Parses `Name: value` lines into headers marked sensitive. An error names
/// the header (or the line number), never the value.
pub fn parse_headers<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (n, line) in lines.into_iter().enumerate() {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("header {}: expected 'Name: value'", n + 1));
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("header {}: invalid header name", n + 1))?;
        let mut value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("header {name}: invalid value (not shown)"))?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

/// `{base}/collection/{connectionId}`, the id one path segment (escaped).
pub fn collection_url(base: &Url, connection_id: &str) -> Result<Url, String> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| format!("{base} cannot take a path"))?
        .pop_if_empty()
        .push("collection")
        .push(connection_id);
    Ok(url)
}

pub fn run(dir: &Path, args: ResendArgs, default_to: &str) -> ExitCode {
    match try_run(dir, args, default_to) {
        Ok(summary) => {
            print!("{summary}");
            if summary.dry_run || summary.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(Fatal::Usage(e)) => {
            eprintln!("inletd dead-letters resend: {e}");
            ExitCode::from(2)
        }
        Err(Fatal::Files(e)) => {
            eprintln!("inletd dead-letters resend: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Fatal {
    Usage(String),
    Files(String),
}

fn try_run(dir: &Path, args: ResendArgs, default_to: &str) -> Result<Summary, Fatal> {
    let mut header_lines = args.headers.clone();
    if let Some(path) = &args.header_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Fatal::Usage(format!("--header-file {}: {e}", path.display())))?;
        header_lines.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
    }
    let headers = parse_headers(header_lines.iter().map(String::as_str)).map_err(Fatal::Usage)?;
    let to = args.to.as_deref().unwrap_or(default_to);
    // The value is not echoed: it may carry a password.
    let base = Url::parse(to).map_err(|e| Fatal::Usage(format!("--to: not a URL ({e})")))?;
    if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
        return Err(Fatal::Usage(format!(
            "--to {}: not an http(s) base URL",
            shown(&base)
        )));
    }
    let mut summary = Summary {
        target: shown(&base),
        dry_run: args.dry_run,
        ..Summary::default()
    };
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        // A redirect is a failure to report, not a reason to carry the headers elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Fatal::Usage(format!("HTTP client: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fatal::Usage(format!("async runtime: {e}")))?;
    let files_error = |e: std::io::Error| Fatal::Files(format!("{}: {e}", dir.display()));
    // One resend at a time: a second would take the first one's file as a leftover.
    // A dry run changes nothing, the lock file included.
    let _guard = match args.dry_run {
        true => None,
        false => match files::ResendGuard::try_acquire(dir).map_err(files_error)? {
            Some(guard) => Some(guard),
            None => {
                return Err(Fatal::Files(
                    "another `inletd dead-letters resend` is running on this directory".into(),
                ))
            }
        },
    };
    // Files are taken last, once nothing else can fail before they are processed.
    let taken = if args.dry_run {
        files::all_files(dir).map_err(files_error)?
    } else {
        files::take(dir).map_err(files_error)?
    };
    let mut problems = Vec::new();
    for path in taken {
        let file_error = |e: std::io::Error| format!("{}: {e}", path.display());
        let entries = read_entries(&path).map_err(|e| Fatal::Files(file_error(e)))?;
        let send = Send {
            client: &client,
            base: &base,
            headers: &headers,
            concurrency: usize::from(args.concurrency),
            dry_run: args.dry_run,
            connection_id: args.connection_id.as_deref(),
        };
        let kept = runtime.block_on(send.file(&path, entries, &mut summary));
        if !args.dry_run {
            if let Err(e) = files::finish(dir, &path, &kept) {
                problems.push(file_error(e));
            }
        }
    }
    if problems.is_empty() {
        Ok(summary)
    } else {
        print!("{summary}");
        Err(Fatal::Files(format!(
            "could not put kept dead letters back (they stay in the file named; the next resend takes it): {}",
            problems.join("; ")
        )))
    }
}

struct Send<'a> {
    client: &'a reqwest::Client,
    base: &'a Url,
    headers: &'a HeaderMap,
    concurrency: usize,
    dry_run: bool,
    connection_id: Option<&'a str>,
}

impl Send<'_> {
    /// Sends the file's dead letters; returns the lines to keep, in order.
    async fn file(&self, path: &Path, entries: Vec<Entry>, summary: &mut Summary) -> Vec<Vec<u8>> {
        let wanted = entries
            .iter()
            .enumerate()
            .filter_map(|(i, entry)| match &entry.letter {
                Ok(letter) if self.connection_id.is_none_or(|c| c == letter.connection_id) => {
                    Some((i, letter))
                }
                _ => None,
            });
        let outcomes: Vec<(usize, Result<u16, String>)> = futures_util::stream::iter(wanted)
            .map(|(i, letter)| async move {
                if self.dry_run {
                    return (i, Err("dry run: not sent".to_string()));
                }
                (i, self.one(letter).await)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut accepted = vec![false; entries.len()];
        let mut failed: Vec<Option<String>> = vec![None; entries.len()];
        for (i, outcome) in outcomes {
            let Ok(letter) = &entries[i].letter else {
                continue;
            };
            match outcome {
                Ok(_) => {
                    accepted[i] = true;
                    summary.accepted += 1;
                }
                Err(reason) => {
                    let key = (letter.connection_id.clone(), reason.clone());
                    *summary.failed.entry(key).or_default() += 1;
                    failed[i] = Some(reason);
                }
            }
        }
        let now = SystemTime::now();
        let mut kept = Vec::new();
        for ((entry, accepted), failed) in entries.into_iter().zip(accepted).zip(failed) {
            match &entry.letter {
                Err(reason) => {
                    eprintln!(
                        "inletd dead-letters resend: {} line {}: unreadable, kept ({reason})",
                        path.display(),
                        entry.line
                    );
                    summary.unreadable += 1;
                }
                Ok(letter)
                    if self
                        .connection_id
                        .is_some_and(|c| c != letter.connection_id) =>
                {
                    summary.other_connections += 1;
                }
                Ok(_) => {}
            }
            match failed {
                Some(reason) if !self.dry_run => {
                    kept.push(noted(&entry.raw, &summary.target, &reason, now));
                }
                _ if !accepted => kept.push(entry.raw),
                _ => {}
            }
        }
        kept
    }

    /// One dead letter: its 2xx status, or why it failed.
    async fn one(&self, letter: &DeadLetter) -> Result<u16, String> {
        let url = collection_url(self.base, &letter.connection_id)?;
        let mut request = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .body(letter.body.clone());
        if !self.headers.contains_key(CONTENT_TYPE) {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| format!("not sent: {}", e.without_url()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= MAX_ANSWER_BYTES {
                break;
            }
        }
        Err(format!("{}: {}", status.as_u16(), reason(&body)))
    }
}

/// The line with `lastResend` set to when, to where and what came back; the
/// other fields keep their exact bytes (the message above all).
pub fn noted(raw: &[u8], target: &str, reason: &str, now: SystemTime) -> Vec<u8> {
    let Ok(mut fields) = serde_json::from_slice::<BTreeMap<String, Box<RawValue>>>(raw) else {
        return raw.to_vec();
    };
    let note = serde_json::json!({
        "time": humantime::format_rfc3339_millis(now).to_string(),
        "to": target,
        "result": reason,
    });
    let Ok(note) = serde_json::value::to_raw_value(&note) else {
        return raw.to_vec();
    };
    fields.insert("lastResend".into(), note);
    serde_json::to_vec(&fields).unwrap_or_else(|_| raw.to_vec())
}

/// `url` without user name and password, for the summary and the notes.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// The `message` of a JSON error body, else the text, on one short line.
fn reason(body: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let one_line: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(MAX_REASON_CHARS).collect()
}

#[cfg(test)]
mod tests;
