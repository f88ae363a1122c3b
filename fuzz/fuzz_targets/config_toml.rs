//! A config file (`Config::load` through `Sources`) with any text.
//!
//! Properties: a bad file is an error naming the file or the key, never a panic;
//! an accepted configuration is valid, and the values `check-config` shows for
//! it (`Config::effective`) load back, as `INLETD_*` variables, to the same
//! configuration (what one source accepts and prints, every source reads back).
#![no_main]

use std::collections::BTreeMap;

use inletd::config::{ConfigError, Sources, ENV_PREFIX, KEYS};
use inletd::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // the binary reads the file as UTF-8 first and says so
    };
    let loaded = Config::load(Sources {
        file: Some(("fuzz.toml".to_owned(), text.to_owned())),
        ..Sources::default()
    });
    let config = match loaded {
        Ok(config) => config,
        Err(ConfigError::Invalid { key, reason, .. }) => {
            assert!(KEYS.contains(&key), "unknown key in an error: {key}");
            assert!(!reason.is_empty());
            return;
        }
        Err(ConfigError::File { path, reason }) => {
            assert_eq!(path, "fuzz.toml");
            assert!(!reason.is_empty());
            return;
        }
        // The IMS secret refused as a TOML key, or its file unreadable.
        Err(ConfigError::Secret(e)) => {
            assert!(!e.to_string().is_empty());
            return;
        }
        Err(e @ ConfigError::Read { .. }) => panic!("nothing was read from disk: {e}"),
    };
    config.validate().expect("a loaded configuration is valid");
    let effective = config.effective();
    assert_eq!(effective.len(), KEYS.len());
    // A password in the upstream URL is shown redacted: that one cannot load back.
    let env: BTreeMap<String, String> = effective
        .iter()
        .filter(|(key, value)| *key != "upstream" || !value.contains("REDACTED"))
        .map(|(key, value)| {
            (
                format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
                value.clone(),
            )
        })
        .collect();
    let mut reloaded = Config::load(Sources {
        env,
        ..Sources::default()
    })
    .unwrap_or_else(|e| panic!("effective values do not load back: {e}"));
    reloaded.upstream = config.upstream.clone();
    assert_eq!(reloaded, config, "effective values load back differently");
});
