//! Values that parse but cannot work together: refused with an error that
//! names the key.

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
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1".into()));
        }
        if self.retry_initial_backoff.0 > self.retry_max_backoff.0 {
            return Err(invalid(
                "retry_initial_backoff",
                "must not be larger than retry_max_backoff".into(),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(invalid("log_level", e.to_string()));
        }
        Ok(())
    }
}
