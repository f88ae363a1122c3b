//! The binary's log output on stderr (a module of `main.rs`, not of the
//! library): the filter (`log_level`, or `RUST_LOG` when set) and the format.
//!
//! Text lines carry ANSI colours only on a terminal (and not with `NO_COLOR`):
//! a container runtime or journald stores stderr as a file, where escape codes
//! are noise. JSON lines are flat — the message and the event's fields at the
//! top level (`{"level":..,"message":..,"connection_id":..}`) — so log
//! pipelines can index `connection_id` without unnesting `fields`.

use std::io::IsTerminal;

use inletd::config::LogFormat;
use inletd::Config;

pub fn init(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(colours()).init(),
    }
}

/// Colour only for a person at a terminal (<https://no-color.org>).
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
