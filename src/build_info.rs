//! What this binary is: its version, the git revision and the date it was
//! built from (stamped by `build.rs`), for `--version`, the start-up log line
//! and the `inletd_build_info` gauge.

/// The package version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision built (12 hex digits), or `unknown` when built without git.
pub const REVISION: &str = env!("INLETD_GIT_REVISION");

/// The build date, `YYYY-MM-DD` (from `SOURCE_DATE_EPOCH` when set).
pub const BUILD_DATE: &str = env!("INLETD_BUILD_DATE");

/// `--version`'s text after the program name: `0.1.0 (revision 1a2b3c4d5e6f, built 2026-11-29)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("INLETD_GIT_REVISION"),
    ", built ",
    env!("INLETD_BUILD_DATE"),
    ")"
);
