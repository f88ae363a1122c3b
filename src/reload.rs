//! SIGHUP: re-reads the configuration from the same sources as at start (the
//! file, the `INLETD_*` environment captured then, the flags) and applies what
//! can change safely in a running process, the log filter (`log_level`),
//! through a `tracing_subscriber` reload handle. Every other key takes effect
//! at the next start only; a SIGHUP that finds them changed says so. A SIGHUP
//! never stops inletd (without a handler, its default action kills the process
//! at once, with no drain).

use std::collections::BTreeSet;

use tracing_subscriber::reload::Handle;
use tracing_subscriber::{EnvFilter, Registry};

use crate::config::{Config, ConfigError};

/// The handle that swaps the log filter of the installed subscriber.
pub type FilterHandle = Handle<EnvFilter, Registry>;

/// The log filter inletd runs with: `RUST_LOG` when set, else `log_level`.
/// `Err` when `RUST_LOG` is set but not a valid filter; the caller falls back.
pub fn log_filter(config: &Config, rust_log: Option<&str>) -> Result<EnvFilter, String> {
    match rust_log {
        Some(directives) => crate::config::log_filter(directives)
            .map_err(|e| format!("RUST_LOG `{directives}` is not a valid filter: {e}")),
        // Validated with the rest of the configuration.
        None => crate::config::log_filter(&config.log_level),
    }
}

/// What a SIGHUP re-reads and where it applies it.
pub struct Reloader<R> {
    handle: FilterHandle,
    /// `RUST_LOG` as it was at start: the process environment does not change.
    rust_log: Option<String>,
    /// The configuration last loaded, to report keys that changed.
    current: Config,
    reread: R,
}

impl<R: FnMut() -> Result<Config, ConfigError>> Reloader<R> {
    pub fn new(handle: FilterHandle, rust_log: Option<String>, current: Config, reread: R) -> Self {
        Reloader {
            handle,
            rust_log,
            current,
            reread,
        }
    }

    /// Handles one SIGHUP: logs what it did; a bad configuration changes nothing.
    pub fn reload(&mut self) {
        let config = match (self.reread)() {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP received: the configuration is invalid; nothing changed, still serving");
                return;
            }
        };
        let restart_needed = changed_keys(&self.current, &config);
        if !restart_needed.is_empty() {
            tracing::warn!(
                keys = ?restart_needed,
                "SIGHUP received: these keys changed and take effect only at the next start"
            );
        }
        if self.rust_log.is_some() {
            tracing::info!("SIGHUP received: RUST_LOG is set and wins over log_level; log filter unchanged, still serving");
        } else {
            match log_filter(&config, None)
                .and_then(|f| self.handle.reload(f).map_err(|e| e.to_string()))
            {
                Ok(()) => tracing::info!(
                    log_level = %config.log_level,
                    "SIGHUP received: log level reloaded, still serving"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP received: cannot apply log_level; log filter unchanged");
                    return;
                }
            }
        }
        self.current = config;
    }
}

/// Keys whose value differs, other than `log_level` (applied at once).
fn changed_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let before: BTreeSet<_> = old.effective().into_iter().collect();
    new.effective()
        .into_iter()
        .filter(|(key, _)| *key != "log_level")
        .filter(|pair| !before.contains(pair))
        .map(|(key, _)| key)
        .collect()
}

/// Calls `on_hangup` on every SIGHUP, from the moment it is called (call it
/// inside the runtime, before announcing readiness: until a handler is
/// installed, a SIGHUP kills the process). Elsewhere than Unix, does nothing.
pub fn on_hangup(mut on_hangup: impl FnMut() + Send + 'static) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        on_hangup();
                    }
                });
            }
            Err(e) => tracing::error!(error = %e, "cannot listen for SIGHUP"),
        }
    }
    #[cfg(not(unix))]
    let _ = &mut on_hangup;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::reload;

    fn handle(initial: &str) -> (reload::Layer<EnvFilter, Registry>, FilterHandle) {
        reload::Layer::new(EnvFilter::new(initial))
    }

    fn with_level(level: &str) -> Config {
        let mut c = Config::defaults();
        c.log_level = level.into();
        c
    }

    fn current(handle: &FilterHandle) -> String {
        handle.with_current(|f| f.to_string()).unwrap()
    }

    #[test]
    fn reload_applies_the_new_log_level() {
        let (_layer, h) = handle("info");
        let mut r = Reloader::new(h.clone(), None, with_level("info"), || {
            Ok(with_level("inletd=debug"))
        });
        r.reload();
        assert_eq!(current(&h), "inletd=debug");
        assert_eq!(r.current.log_level, "inletd=debug");
    }

    #[test]
    fn an_invalid_configuration_changes_nothing() {
        let (_layer, h) = handle("info");
        let mut r = Reloader::new(h.clone(), None, with_level("info"), || {
            Err(ConfigError::Read {
                path: "inletd.toml".into(),
                reason: "gone".into(),
            })
        });
        r.reload();
        assert_eq!(current(&h), "info");
    }

    #[test]
    fn rust_log_wins_over_a_reloaded_log_level() {
        let (_layer, h) = handle("warn");
        let mut r = Reloader::new(h.clone(), Some("warn".into()), with_level("info"), || {
            Ok(with_level("debug"))
        });
        r.reload();
        assert_eq!(current(&h), "warn");
    }

    #[test]
    fn other_changed_keys_are_named() {
        let mut new = with_level("debug");
        new.max_in_flight = 3;
        assert_eq!(
            changed_keys(&with_level("info"), &new),
            vec!["max_in_flight"]
        );
        assert!(changed_keys(&with_level("info"), &with_level("debug")).is_empty());
    }
}
