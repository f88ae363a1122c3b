//! `inletd dead-letters`: the operator's tool for `{spool_dir}/dead-letter.jsonl`.
//!
//! - `list`: counts per connection id and upstream status, or the lines
//!   themselves with `--json`.
//! - `resend`: each dead letter back through a running inletd (or any
//!   AEP-compatible endpoint), removing from the files exactly those that got
//!   a 2xx. How the files are taken and merged back while the daemon keeps
//!   appending is in [`files`]; the HTTP side is in [`resend`], its report in
//!   [`summary`].
//!
//! It works on the files alone: the daemon may run or not.

pub mod files;
pub mod resend;
pub mod summary;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::spool::DeadLetter;

/// `inletd dead-letters`.
#[derive(clap::Args, Debug)]
pub struct DeadLettersArgs {
    /// The spool directory holding dead-letter.jsonl [default: `spool_dir` of the
    /// layered configuration].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Count dead letters per connection id and upstream status.
    List {
        /// Print the dead-letter lines themselves (JSON, one a line) instead of counts.
        #[arg(long)]
        json: bool,
        /// Only dead letters of this connection id.
        #[arg(long, value_name = "ID")]
        connection_id: Option<String>,
    },
    /// Send each dead letter again (POST {to}/collection/{connectionId}); remove
    /// those answered 2xx, keep the others. Exit 1 if any failed.
    Resend(resend::ResendArgs),
}

/// Exit code of a usage error (as for the daemon's configuration errors).
const USAGE: u8 = 2;

/// Runs the subcommand. `listen` is the configuration's producer address
/// (resend's default target), `configured_dir` its `spool_dir` if set.
pub fn run(args: DeadLettersArgs, listen: SocketAddr, configured_dir: Option<PathBuf>) -> ExitCode {
    let Some(dir) = args.dir.or(configured_dir) else {
        eprintln!("inletd dead-letters: no spool directory: set spool_dir or pass --dir");
        return ExitCode::from(USAGE);
    };
    if !dir.is_dir() {
        eprintln!(
            "inletd dead-letters: {} is not a directory (spool_dir)",
            dir.display()
        );
        return ExitCode::from(USAGE);
    }
    match args.action {
        Action::List {
            json,
            connection_id,
        } => report(list(&dir, json, connection_id.as_deref())),
        Action::Resend(resend_args) => resend::run(&dir, resend_args, &default_target(listen)),
    }
}

fn report(result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inletd dead-letters: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `http://{listen}`, with a wildcard address replaced by the loopback one.
pub fn default_target(listen: SocketAddr) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

/// One line of a dead-letter file, read back.
pub struct Entry {
    /// The file's line number (1-based), for messages.
    pub line: usize,
    /// The line exactly as in the file, without its `\n`.
    pub raw: Vec<u8>,
    pub letter: Result<DeadLetter, String>,
}

/// The lines of one file, parsed.
pub fn read_entries(path: &Path) -> io::Result<Vec<Entry>> {
    Ok(files::read_lines(path)?
        .into_iter()
        .enumerate()
        .map(|(n, raw)| Entry {
            line: n + 1,
            letter: crate::spool::DeadLetterReader::parse(&raw),
            raw,
        })
        .collect())
}

fn list(dir: &Path, json: bool, connection_id: Option<&str>) -> io::Result<()> {
    let mut counts: BTreeMap<(String, u16), u64> = BTreeMap::new();
    let mut unreadable = 0u64;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for path in files::all_files(dir)? {
        for entry in read_entries(&path)? {
            let letter = match entry.letter {
                Ok(letter) => letter,
                Err(reason) => {
                    eprintln!(
                        "inletd dead-letters: {} line {}: unreadable ({reason})",
                        path.display(),
                        entry.line
                    );
                    unreadable += 1;
                    continue;
                }
            };
            if connection_id.is_some_and(|c| c != letter.connection_id) {
                continue;
            }
            if json {
                out.write_all(&entry.raw)?;
                out.write_all(b"\n")?;
            } else {
                *counts
                    .entry((letter.connection_id, letter.status))
                    .or_default() += 1;
            }
        }
    }
    if !json {
        let total: u64 = counts.values().sum();
        writeln!(
            out,
            "{:<40} {:>6} {:>10}",
            "CONNECTION ID", "STATUS", "COUNT"
        )?;
        for ((connection, status), n) in &counts {
            writeln!(out, "{connection:<40} {status:>6} {n:>10}")?;
        }
        writeln!(out, "{total} dead letters, {unreadable} unreadable lines")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests;
