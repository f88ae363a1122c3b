//! Credentials held by inletd (SPEC §6): Adobe IMS OAuth server-to-server
//! access tokens, fetched, cached and refreshed for the producers that send
//! no `Authorization` of their own.
//!
//! - [`config`]: [`ImsConfig`], its validation, and where the secret may come
//!   from ([`resolve_secret`]); the secret never prints.

pub mod config;

pub use config::{not_allowed_here, resolve_secret, secret_shown, ImsConfig, ImsConfigError};
pub use config::{SecretError, DEFAULT_TOKEN_URL, SECRET_ENV, SECRET_FILE_KEY};
