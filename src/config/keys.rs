//! The one declaration of every key: its name, type, default and `--help`
//! line. From it the macro derives the [`Layer`] (every key optional, one per
//! source), the [`Config`] (every key set), [`KEYS`] and the per-key code the
//! sources need (overlaying, reading `INLETD_*`, listing the effective values).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

use super::ims::{ImsCredentials, SECRET_KEY};
use super::{ConfigError, HumanDuration, LogFormat, OptionalPath, Switch, UpstreamUrl, ENV_PREFIX};

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
            /// The IMS credentials, secret included, built by `load` from the
            /// `ims_*` keys (see `super::ims`); none unless `ims_client_id` is set.
            pub ims: ImsCredentials,
        }

        /// Every key name, in declaration order.
        pub const KEYS: &[&str] = &[$(stringify!($key)),*];

        impl Layer {
            /// Keys set in `upper` replace those here.
            pub(super) fn overlay(&mut self, upper: Layer) {
                $( if upper.$key.is_some() { self.$key = upper.$key; } )*
            }

            pub(crate) fn from_env_map(vars: &BTreeMap<String, String>) -> Result<Layer, ConfigError> {
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

            pub(super) fn into_config(self) -> Config {
                Config { $( $key: self.$key.unwrap_or_else(|| {
                    $default.parse::<$ty>().unwrap_or_else(|e| {
                        panic!("built-in default of {} does not parse: {e}", stringify!($key))
                    })
                }), )* ims: ImsCredentials::default() }
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
                        key != "config"
                            && key != SECRET_KEY
                            && !KEYS.contains(&key.as_str())
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
    upstream_system_roots: Switch = "false", "Also trust the operating system's certificate store (read at start-up; SSL_CERT_FILE / SSL_CERT_DIR override where), besides the compiled-in roots and upstream_ca_file.";
    upstream_ca_file: OptionalPath = "", "PEM file of extra CA certificates to trust for the upstream, added to the compiled-in Mozilla roots (e.g. the CA of an egress proxy that re-signs TLS); empty: none.";
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
    ims_client_id: String = "", "Adobe OAuth server-to-server client id: when set, inletd fetches IMS access tokens itself for producers that send no Authorization (also sent as x-api-key); empty: off.";
    ims_org_id: String = "", "IMS organization id (…@AdobeOrg), sent as x-gw-ims-org-id with inletd's token; required with ims_client_id.";
    ims_scopes: String = "", "The credential's scopes as one comma-separated value, e.g. `openid,AdobeID,read_organizations`; required with ims_client_id.";
    ims_token_url: String = "https://ims-na1.adobelogin.com/ims/token/v3", "IMS token endpoint (https://; http:// only to 127.0.0.1 or localhost).";
    ims_client_secret_file: OptionalPath = "", "File holding the IMS client secret; else INLETD_IMS_CLIENT_SECRET. Never a flag or TOML key. Empty: none.";
    async_default: Switch = "false", "Answer every producer 202 Accepted without waiting for the upstream (fire-and-forget), as if each sent `Prefer: respond-async`; `?syncValidation=true` and raw data stay synchronous.";
    spool_dir: OptionalPath = "", "Directory of the durable spool: with it a fire-and-forget 202 means the message is fdatasync'd there and survives a crash or restart; empty: fire-and-forget messages are held in memory only (lost if the process dies).";
    max_spool_bytes: u64 = "1073741824", "Bound of the spool on disk; past it fire-and-forget producers get 429 with Retry-After.";
    spool_max_age: HumanDuration = "24h", "A spooled message still undelivered this long after it was accepted goes to the dead-letter file.";
    log_format: LogFormat = "text", "Log line format: text or json.";
    log_level: String = "info", "Log filter (tracing EnvFilter syntax, e.g. `info,inletd=debug`); RUST_LOG wins when set.";
}
