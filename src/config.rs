//! Configuration: every key's name, default and meaning, and the layering
//! defaults < TOML file < `INLETD_*` environment < command-line flags.
//!
//! Sources are injected ([`Sources`]) so tests never touch the process
//! environment. Each layer is a [`Layer`] (every key optional); the layers are
//! stacked and then [`Config::validate`]d, and every error names the key and
//! the source it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written the human way: `20ms`, `5s`, `1m 30s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| format!("`{s}` is not a duration like `20ms` or `5s` ({e})"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// The upstream's base URL (`http` or `https`, no query).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    text: String,
    url: reqwest::Url,
}

impl UpstreamUrl {
    /// The base without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `{base}/{segments…}?{query}`. Each segment is percent-encoded as exactly
    /// one path segment, so no value can turn into path structure (`/`, `..`, `?`).
    pub fn endpoint(&self, segments: &[&str], query: Option<&str>) -> reqwest::Url {
        let mut url = self.url.clone();
        // Only cannot-be-a-base URLs refuse; `from_str` admits http(s) alone, which never are.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url.set_query(query);
        url
    }
}

impl FromStr for UpstreamUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = reqwest::Url::parse(s.trim()).map_err(|e| format!("`{s}` is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`{s}` must start with http:// or https://"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("`{s}` must not carry a query or fragment"));
        }
        let text = url.as_str().trim_end_matches('/').to_owned();
        Ok(UpstreamUrl { text, url })
    }
}

/// Shown in logs and `check-config`: a password in the URL is redacted.
impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.url.password().is_some() {
            let mut url = self.url.clone();
            let _ = url.set_password(Some("REDACTED"));
            f.write_str(url.as_str().trim_end_matches('/'))
        } else {
            f.write_str(&self.text)
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("`{s}` is not `text` or `json`")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// A value written as text in TOML goes through the same parser as one from the
/// environment or the command line, so every source accepts the same values.
macro_rules! deserialize_from_str {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

deserialize_from_str!(HumanDuration, UpstreamUrl, LogFormat);

/// Declares every key once: its type, default (as text, parsed by the same
/// parser a user's value goes through) and its `--help` line.
macro_rules! config_keys {
    ($( $key:ident : $ty:ty = $default:literal, $help:literal; )*) => {
        /// One layer of configuration: every key optional. The TOML file, the
        /// environment and the command line each produce one.
        #[derive(Clone, Debug, Default, Deserialize, clap::Args)]
        #[serde(deny_unknown_fields)]
        pub struct Layer {
            $(
                #[doc = $help]
                #[arg(long, help = concat!($help, " [default: ", $default, "]"))]
                pub $key: Option<$ty>,
            )*
        }

        /// The effective configuration, after layering and validation.
        #[derive(Clone, Debug, PartialEq)]
        pub struct Config {
            $( #[doc = $help] pub $key: $ty, )*
        }

        /// Every key name, in declaration order.
        pub const KEYS: &[&str] = &[$(stringify!($key)),*];

        impl Layer {
            /// Keys set in `upper` replace those here.
            fn overlay(&mut self, upper: Layer) {
                $( if upper.$key.is_some() { self.$key = upper.$key; } )*
            }

            fn from_env_map(vars: &BTreeMap<String, String>) -> Result<Layer, ConfigError> {
                let mut layer = Layer::default();
                for (name, value) in vars {
                    let Some(key) = name.strip_prefix(ENV_PREFIX) else { continue };
                    let key = key.to_ascii_lowercase();
                    match key.as_str() {
                        $( stringify!($key) => {
                            layer.$key = Some(value.parse::<$ty>().map_err(|e| ConfigError::Invalid {
                                key: stringify!($key),
                                origin: format!("environment variable {name}"),
                                reason: e.to_string(),
                            })?);
                        } )*
                        // Others (typos, Kubernetes' service links such as INLETD_PORT) are
                        // reported by `unknown_env_vars`, not fatal.
                        _ => {}
                    }
                }
                Ok(layer)
            }

            fn into_config(self) -> Config {
                Config { $( $key: self.$key.unwrap_or_else(|| {
                    $default.parse::<$ty>().unwrap_or_else(|e| {
                        panic!("built-in default of {} does not parse: {e}", stringify!($key))
                    })
                }), )* }
            }
        }

        /// `INLETD_*` variables that name no key: worth a warning at start-up.
        /// (Kubernetes injects `INLETD_PORT`, `INLETD_SERVICE_HOST`, … for a Service
        /// named `inletd`, so these cannot be fatal.)
        pub fn unknown_env_vars(vars: &BTreeMap<String, String>) -> Vec<String> {
            vars.keys()
                .filter(|name| {
                    name.strip_prefix(ENV_PREFIX).is_some_and(|key| {
                        let key = key.to_ascii_lowercase();
                        key != "config" && !KEYS.contains(&key.as_str())
                    })
                })
                .cloned()
                .collect()
        }

        impl Config {
            /// `(key, value)` for every key, secrets redacted, for `check-config` and logs.
            pub fn effective(&self) -> Vec<(&'static str, String)> {
                vec![$( (stringify!($key), self.$key.to_string()), )*]
            }
        }
    };
}

config_keys! {
    listen: SocketAddr = "127.0.0.1:8080", "Address producers send their messages to.";
    admin_listen: SocketAddr = "127.0.0.1:9464", "Address of /metrics, /healthz and /readyz.";
    upstream: UpstreamUrl = "https://dcs.adobedc.net", "Base URL of the AEP streaming ingestion endpoint.";
    max_batch_messages: usize = "500", "Flush a key's buffer when it holds this many messages.";
    max_batch_bytes: usize = "1000000", "Flush before the upstream request body (envelope included) would pass this many bytes; a single message that cannot fit is refused with 413.";
    linger: HumanDuration = "20ms", "Longest a message waits in the buffer before its batch is sent.";
    max_in_flight: usize = "16", "Most upstream requests at once.";
    max_retries: u32 = "3", "Retries per batch for retryable failures (429, 5xx, connection errors).";
    retry_initial_backoff: HumanDuration = "100ms", "Ceiling of the first retry's random (full-jitter) delay; it doubles per retry.";
    retry_max_backoff: HumanDuration = "5s", "Largest ceiling of a retry's random delay.";
    request_timeout: HumanDuration = "10s", "Longest a producer waits for its answer (then 504: the message may still be delivered).";
    max_buffered_bytes: u64 = "67108864", "Memory bound: bytes of messages accepted and not yet answered; past it producers get 429.";
    shutdown_grace: HumanDuration = "20s", "How long SIGTERM waits for buffered and in-flight work before exiting.";
    body_read_timeout: HumanDuration = "5s", "Longest a producer may take to send a request body once its headers arrived (then 408), so slow uploads cannot hold the memory bound.";
    max_connections: usize = "4096", "Most producer connections at once; further connections wait in the listen backlog until one closes.";
    producer_idle_timeout: HumanDuration = "30s", "Longest a producer connection may take to send a request's headers, or sit idle between requests, before it is closed.";
    max_connection_age: HumanDuration = "0s", "Once a producer connection is this old, its next answer carries `Connection: close` and it is closed, so replicas added by an autoscaler get traffic from producers already connected (a gateway: e.g. 5m); 0s: no limit.";
    max_connection_requests: u64 = "0", "After this many answers a producer connection is closed (`Connection: close` on the last); 0: no limit.";
    log_format: LogFormat = "text", "Log line format: text or json.";
    log_level: String = "info", "Log filter (tracing EnvFilter syntax, e.g. `info,inletd=debug`); RUST_LOG wins when set.";
}

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
}

/// The injected inputs of [`Config::load`].
#[derive(Debug, Default)]
pub struct Sources {
    /// The config file's path and text, if one was named.
    pub file: Option<(String, String)>,
    /// `INLETD_*` variables (others are ignored).
    pub env: BTreeMap<String, String>,
    /// Keys given on the command line.
    pub flags: Layer,
}

impl Sources {
    /// Reads the config file named by `--config` or else `INLETD_CONFIG`.
    pub fn read(
        config_path: Option<String>,
        env: BTreeMap<String, String>,
        flags: Layer,
    ) -> Result<Sources, ConfigError> {
        let path = config_path.or_else(|| env.get("INLETD_CONFIG").cloned());
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Read {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                Some((path, text))
            }
            None => None,
        };
        Ok(Sources { file, env, flags })
    }
}

impl Config {
    /// Stacks defaults < file < environment < flags, then validates.
    pub fn load(sources: Sources) -> Result<Config, ConfigError> {
        let mut layer = Layer::default();
        if let Some((path, text)) = &sources.file {
            let file: Layer = toml::from_str(text).map_err(|e| ConfigError::File {
                path: path.clone(),
                reason: e.to_string().trim_end().to_owned(),
            })?;
            layer.overlay(file);
        }
        layer.overlay(Layer::from_env_map(&sources.env)?);
        layer.overlay(sources.flags);
        let config = layer.into_config();
        config.validate()?;
        Ok(config)
    }

    /// The built-in defaults (what `load` gives with no sources).
    pub fn defaults() -> Config {
        Layer::default().into_config()
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(
        file: Option<&str>,
        vars: &[(&str, &str)],
        flags: Layer,
    ) -> Result<Config, ConfigError> {
        Config::load(Sources {
            file: file.map(|t| ("test.toml".to_owned(), t.to_owned())),
            env: env(vars),
            flags,
        })
    }

    #[test]
    fn defaults_parse_and_validate() {
        let c = Config::defaults();
        c.validate().expect("defaults are valid");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.linger.0, Duration::from_millis(20));
        assert_eq!(c.upstream.as_str(), "https://dcs.adobedc.net");
        assert!(c.max_batch_bytes <= 1_000_000);
    }

    #[test]
    fn layers_stack_in_order() {
        let file = "linger = \"50ms\"\nmax_batch_messages = 7\nmax_in_flight = 3\n";
        let vars = [
            ("INLETD_MAX_BATCH_MESSAGES", "8"),
            ("INLETD_MAX_IN_FLIGHT", "4"),
        ];
        let flags = Layer {
            max_in_flight: Some(5),
            ..Layer::default()
        };
        let c = load(Some(file), &vars, flags).unwrap();
        assert_eq!(c.linger.0, Duration::from_millis(50), "file beats default");
        assert_eq!(c.max_batch_messages, 8, "env beats file");
        assert_eq!(c.max_in_flight, 5, "flag beats env");
    }

    #[test]
    fn errors_name_the_key() {
        let err = load(None, &[("INLETD_LINGER", "soon")], Layer::default()).unwrap_err();
        assert!(err.to_string().contains("`linger`"), "{err}");
        assert!(err.to_string().contains("INLETD_LINGER"), "{err}");

        let err = load(Some("max_batch_bytes = 5000000\n"), &[], Layer::default()).unwrap_err();
        assert!(err.to_string().contains("`max_batch_bytes`"), "{err}");

        let err = load(Some("lingerr = \"5ms\"\n"), &[], Layer::default()).unwrap_err();
        assert!(err.to_string().contains("lingerr"), "{err}");

        let err = load(Some("linger = \"5 parsecs\"\n"), &[], Layer::default()).unwrap_err();
        assert!(err.to_string().contains("linger"), "{err}");

        // Unknown variables are not fatal (Kubernetes service links look like them) but are reported.
        let vars = env(&[
            ("INLETD_LINGERR", "5ms"),
            ("INLETD_LINGER", "5ms"),
            ("INLETD_CONFIG", "x"),
            ("HOME", "/"),
        ]);
        assert!(Layer::from_env_map(&vars).is_ok());
        assert_eq!(unknown_env_vars(&vars), vec!["INLETD_LINGERR".to_owned()]);
    }

    #[test]
    fn value_parsers() {
        assert_eq!(
            "5s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(5)
        );
        assert!("5".parse::<HumanDuration>().is_err());
        assert_eq!(
            "http://127.0.0.1:9/"
                .parse::<UpstreamUrl>()
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9"
        );
        assert!("ftp://x".parse::<UpstreamUrl>().is_err());
        let secret: UpstreamUrl = "https://user:s3cret@aep.example".parse().unwrap();
        assert_eq!(secret.to_string(), "https://user:REDACTED@aep.example");
        assert!(secret.as_str().contains("s3cret"), "requests still use it");
        assert!("http://x/?a=b".parse::<UpstreamUrl>().is_err());
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn cross_key_validation() {
        let err = load(
            None,
            &[("INLETD_MAX_BUFFERED_BYTES", "10")],
            Layer::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`max_buffered_bytes`"), "{err}");
        let err = load(
            None,
            &[("INLETD_MAX_BATCH_MESSAGES", "0")],
            Layer::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`max_batch_messages`"), "{err}");
        let err = load(
            None,
            &[("INLETD_LINGER", "10s"), ("INLETD_REQUEST_TIMEOUT", "10s")],
            Layer::default(),
        )
        .unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("`linger`") && err.contains("request_timeout"),
            "{err}"
        );
        for (var, key) in [
            ("INLETD_BODY_READ_TIMEOUT", "`body_read_timeout`"),
            ("INLETD_MAX_CONNECTIONS", "`max_connections`"),
        ] {
            let value = if key.contains("timeout") { "0s" } else { "0" };
            let err = load(None, &[(var, value)], Layer::default()).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn endpoints_are_built_from_encoded_segments() {
        let base: UpstreamUrl = "http://127.0.0.1:9/prefix/".parse().unwrap();
        let url = base.endpoint(&["collection", "batch", "c1"], None);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/prefix/collection/batch/c1"
        );
        // Even a value that slipped past the door stays one segment.
        let url = base.endpoint(
            &["collection", "../../stats?a=b"],
            Some("syncValidation=true"),
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/prefix/collection/..%2F..%2Fstats%3Fa=b?syncValidation=true"
        );
    }

    #[test]
    fn example_file_is_complete_and_valid() {
        let text = include_str!("../config/inletd.toml");
        let c = load(Some(text), &[], Layer::default()).expect("config/inletd.toml loads");
        c.validate().unwrap();
        for key in KEYS {
            assert!(
                text.lines().any(|l| l
                    .trim_start_matches('#')
                    .trim_start()
                    .starts_with(&format!("{key} ="))),
                "config/inletd.toml does not mention `{key}`"
            );
        }
    }
}
