//! The binary's log output on stderr (a module of `main.rs`, not of the
//! library): the filter (`log_level`, or `RUST_LOG` when set), behind a reload
//! handle so a SIGHUP can change it (see [`inletd::reload`]), and the format.
//!
//! Text lines carry ANSI colours only on a terminal (and not with `NO_COLOR`):
//! a container runtime or journald stores stderr as a file, where escape codes
//! are noise. JSON lines are flat — the message and the event's fields at the
//! top level (`{"level":..,"message":..,"connection_id":..}`) — so log
//! pipelines can index `connection_id` without unnesting `fields`.

use std::io::IsTerminal;

use inletd::config::LogFormat;
use inletd::reload::FilterHandle;
use inletd::Config;
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the subscriber and returns the handle that swaps its filter.
pub fn init(config: &Config, rust_log: Option<&str>) -> FilterHandle {
    let filter = inletd::reload::log_filter(config, rust_log)
        .or_else(|_| inletd::config::log_filter(&config.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The filter sits directly on the registry: the reload handle's type says so.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match config.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.with_ansi(colours()).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(fmt).init();
    handle
}

/// Colour only for a person at a terminal (<https://no-color.org>).
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
