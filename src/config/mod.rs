//! Configuration: every key's name, default and meaning, and the layering
//! defaults < TOML file < `INLETD_*` environment < command-line flags.
//!
//! - [`keys`]: the one declaration of each key (and the [`Layer`] and
//!   [`Config`] derived from it); [`values`]: the value types and their parsers.
//! - [`sources`]: the injected inputs ([`Sources`]) and their stacking.
//! - [`validate`]: what parses but cannot work together (refused).
//! - [`ims`]: the `ims_*` keys and the secret brought together.
//!
//! Every error names the key and the source it came from.

mod ims;
mod keys;
mod sources;
#[cfg(test)]
mod tests;
mod validate;
mod values;

pub use ims::{ImsCredentials, SECRET_KEY};
pub use keys::{unknown_env_vars, Config, Layer, KEYS};
pub use sources::Sources;
pub use validate::log_filter;
pub use values::{HumanDuration, LogFormat, OptionalPath, Switch, UpstreamUrl};

/// Prefix of the environment variables that set keys (`INLETD_LINGER=50ms`).
pub const ENV_PREFIX: &str = "INLETD_";

/// The upstream's limit on a request body (AEP: "over 1 MB" is refused with 413).
/// It bounds `max_batch_bytes` and a producer's batch body.
pub const MAX_REQUEST_BYTES: usize = 1_048_576;

/// Bytes the batch envelope `{"messages":[` … `]}` adds around the messages.
pub const ENVELOPE_OVERHEAD: usize = r#"{"messages":[]}"#.len();

/// A configuration problem, naming the key and where its value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value for `{key}` (from {origin}): {reason}")]
    Invalid {
        key: &'static str,
        origin: String,
        reason: String,
    },
    #[error("cannot read the config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    /// The IMS client secret given where it must not be, twice, or unreadable.
    #[error(transparent)]
    Secret(crate::ims::SecretError),
}
