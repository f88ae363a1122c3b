//! The value parsers of `src/config.rs` (durations, the upstream URL, the log
//! format), directly and through an `INLETD_*` variable of any key.
//!
//! Properties: what parses prints back to text that parses to the same value;
//! the upstream URL is http(s), has no trailing slash, query or fragment, and
//! never shows its password; a refused variable is an error naming its key and
//! the variable.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use inletd::config::{
    ConfigError, HumanDuration, LogFormat, Sources, UpstreamUrl, ENV_PREFIX, KEYS,
};
use inletd::Config;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    key: u8,
    value: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let text = input.value;
    if let Ok(d) = text.parse::<HumanDuration>() {
        let shown = d.to_string();
        assert_eq!(shown.parse::<HumanDuration>(), Ok(d), "{shown}");
    }
    if let Ok(format) = text.parse::<LogFormat>() {
        assert_eq!(format.to_string().parse::<LogFormat>(), Ok(format));
    }
    if let Ok(url) = text.parse::<UpstreamUrl>() {
        let base = url.as_str();
        assert!(
            base.starts_with("http://") || base.starts_with("https://"),
            "{base}"
        );
        assert!(
            !base.ends_with('/') && !base.contains('?') && !base.contains('#'),
            "{base}"
        );
        assert_eq!(base.parse::<UpstreamUrl>().as_ref(), Ok(&url), "{base}");
        let shown = url.to_string();
        if shown != base {
            assert!(shown.contains("REDACTED"), "{shown} differs from {base}");
        }
    }

    let key = KEYS[usize::from(input.key) % KEYS.len()];
    let var = format!("{ENV_PREFIX}{}", key.to_ascii_uppercase());
    let env = BTreeMap::from([(var.clone(), text.to_owned())]);
    match Config::load(Sources {
        env,
        ..Sources::default()
    }) {
        Ok(config) => config.validate().expect("a loaded configuration is valid"),
        Err(ConfigError::Invalid {
            key: named, origin, ..
        }) => {
            // A value that parses but clashes with a default may be reported
            // under the key it clashes with (retry_max_backoff < retry_initial_backoff).
            if origin == "the merged configuration" {
                assert!(KEYS.contains(&named));
            } else {
                assert_eq!(named, key, "the error names another key");
                assert!(origin.contains(&var), "{origin}");
            }
        }
        // A secret file that cannot be read: the one key that reads a file.
        Err(ConfigError::Secret(e)) if key == "ims_client_secret_file" => {
            assert!(!e.to_string().is_empty());
        }
        Err(e) => panic!("only the variable was given: {e}"),
    }
});
