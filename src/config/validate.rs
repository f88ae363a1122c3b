//! Values that parse but cannot work together: refused with an error that
//! names the key ([`Config::validate`]). Combinations that work but not as
//! their author likely meant are warnings ([`Config::warnings`]): printed by
//! `check-config` and logged at start, never fatal.

use super::{Config, ConfigError, ENVELOPE_OVERHEAD, MAX_REQUEST_BYTES};

impl Config {
    /// Checks values that parse but make no sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| ConfigError::Invalid {
            key,
            origin: "the merged configuration".into(),
            reason,
        };
        if self.max_batch_messages == 0 {
            return Err(invalid("max_batch_messages", "must be at least 1".into()));
        }
        // The upstream refuses bodies over 1 MB; a larger batch would only come back 413.
        if self.max_batch_bytes <= ENVELOPE_OVERHEAD || self.max_batch_bytes > MAX_REQUEST_BYTES {
            return Err(invalid(
                "max_batch_bytes",
                format!(
                    "must be between {} and {MAX_REQUEST_BYTES} (the upstream's 1 MB limit)",
                    ENVELOPE_OVERHEAD + 1
                ),
            ));
        }
        if self.max_buffered_bytes < self.max_batch_bytes as u64 {
            return Err(invalid(
                "max_buffered_bytes",
                format!(
                    "must be at least max_batch_bytes ({})",
                    self.max_batch_bytes
                ),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight", "must be at least 1".into()));
        }
        if self.linger.0.is_zero() {
            return Err(invalid(
                "linger",
                "must be more than 0 (use 1ms to send almost at once)".into(),
            ));
        }
        if self.producer_idle_timeout.0.is_zero() {
            return Err(invalid(
                "producer_idle_timeout",
                "must be more than 0".into(),
            ));
        }
        if self.request_timeout.0.is_zero() {
            return Err(invalid("request_timeout", "must be more than 0".into()));
        }
        // A message lingering as long as its producer waits would always time out.
        if self.linger.0 >= self.request_timeout.0 {
            return Err(invalid(
                "linger",
                format!(
                    "must be shorter than request_timeout ({}), or every message times out before its batch is sent",
                    self.request_timeout
                ),
            ));
        }
        if self.body_read_timeout.0.is_zero() {
            return Err(invalid("body_read_timeout", "must be more than 0".into()));
        }
        // Two listeners cannot bind one port on one address, nor on a wildcard
        // address and another (port 0 picks two free ports).
        let (a, b) = (self.listen, self.admin_listen);
        let overlap = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
        if a.port() == b.port() && a.port() != 0 && overlap {
            return Err(invalid(
                "admin_listen",
                format!("must differ from listen ({})", self.listen),
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1".into()));
        }
        if self.retry_initial_backoff.0 > self.retry_max_backoff.0 {
            return Err(invalid(
                "retry_initial_backoff",
                "must not be larger than retry_max_backoff".into(),
            ));
        }
        if let Some(path) = &self.upstream_ca_file.0 {
            if let Err(crate::upstream::tls::TlsError::CaFile(reason)) =
                crate::upstream::tls::read_roots(path)
            {
                return Err(invalid("upstream_ca_file", reason));
            }
        }
        if self.spool_max_age.0.is_zero() {
            return Err(invalid("spool_max_age", "must be more than 0".into()));
        }
        if self.max_spool_bytes == 0 {
            return Err(invalid("max_spool_bytes", "must be at least 1".into()));
        }
        if let Err(e) = log_filter(&self.log_level) {
            return Err(invalid("log_level", e));
        }
        Ok(())
    }

    /// Combinations that are accepted but unsafe or ineffective, one sentence
    /// each, naming the keys. Empty for the defaults.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        // A message accepted just before SIGTERM may rightly wait request_timeout.
        if self.shutdown_grace.0 < self.request_timeout.0 {
            out.push(format!(
                "shutdown_grace ({}) is shorter than request_timeout ({}): messages accepted just before a shutdown may be cut off by the drain (answered 503) while their producers would still have waited",
                self.shutdown_grace, self.request_timeout
            ));
        }
        if self.linger.0 * 2 > self.request_timeout.0 {
            out.push(format!(
                "linger ({}) is more than half of request_timeout ({}): messages may spend most of their producer's wait in the buffer, leaving little time for the upstream and its retries (more 504s)",
                self.linger, self.request_timeout
            ));
        }
        if self.body_read_timeout.0 >= self.request_timeout.0 {
            out.push(format!(
                "body_read_timeout ({}) is not shorter than request_timeout ({}): it never applies, request_timeout cuts a slow body first",
                self.body_read_timeout, self.request_timeout
            ));
        }
        let full_batches = (self.max_in_flight as u64).saturating_mul(self.max_batch_bytes as u64);
        if self.max_buffered_bytes < full_batches {
            out.push(format!(
                "max_buffered_bytes ({}) is less than max_in_flight ({}) full batches of max_batch_bytes ({}): the memory bound fills (429s) before the upstream concurrency is used",
                self.max_buffered_bytes, self.max_in_flight, self.max_batch_bytes
            ));
        }
        out
    }
}

/// A log filter (`log_level`, `RUST_LOG`) from its text. tracing-subscriber
/// panics on some non-ASCII directives (a byte index inside a character: found
/// by fuzzing), and every valid directive is ASCII, so anything else is refused first.
///
/// Field values in a directive (`[span{field=value}]`) are matched as plain
/// text, not as regular expressions: a pattern such as `[{f=a.....x}]` made
/// the regex engine ask for 2 GiB while the filter was being built (found by
/// fuzzing `log_level`), and a SIGHUP re-reads this key in a running daemon.
pub fn log_filter(text: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    if !text.is_ascii() {
        return Err(format!(
            "`{text}` is not a log filter: only ASCII is allowed"
        ));
    }
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(text)
        .map_err(|e| e.to_string())
}
