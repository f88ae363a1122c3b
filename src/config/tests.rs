//! The configuration's unit tests: layering, parsers, validation, and the
//! example file.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(file: Option<&str>, vars: &[(&str, &str)], flags: Layer) -> Result<Config, ConfigError> {
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
        ("INLETD_SPOOL_MAX_AGE", "`spool_max_age`"),
        ("INLETD_MAX_SPOOL_BYTES", "`max_spool_bytes`"),
    ] {
        let value = if key.contains("timeout") || key.contains("age") {
            "0s"
        } else {
            "0"
        };
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
    let text = include_str!("../../config/inletd.toml");
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

#[test]
fn unsafe_combinations_are_warnings_not_errors() {
    assert_eq!(Config::defaults().warnings(), Vec::<String>::new());
    let c = load(
        None,
        &[
            ("INLETD_SHUTDOWN_GRACE", "5s"),
            ("INLETD_REQUEST_TIMEOUT", "10s"),
            ("INLETD_LINGER", "6s"),
            ("INLETD_BODY_READ_TIMEOUT", "10s"),
            ("INLETD_MAX_IN_FLIGHT", "100"),
        ],
        Layer::default(),
    )
    .expect("accepted");
    let warnings = c.warnings();
    assert_eq!(warnings.len(), 4, "{warnings:#?}");
    for (warning, keys) in warnings.iter().zip([
        ["shutdown_grace", "request_timeout"],
        ["linger", "request_timeout"],
        ["body_read_timeout", "request_timeout"],
        ["max_buffered_bytes", "max_in_flight"],
    ]) {
        assert!(keys.iter().all(|k| warning.contains(k)), "{warning}");
    }
}

#[test]
fn the_listeners_need_two_addresses() {
    let same = [
        ("INLETD_LISTEN", "127.0.0.1:7000"),
        ("INLETD_ADMIN_LISTEN", "127.0.0.1:7000"),
    ];
    let err = load(None, &same, Layer::default()).unwrap_err();
    assert!(err.to_string().contains("`admin_listen`"), "{err}");
    let wildcard = [
        ("INLETD_LISTEN", "0.0.0.0:7000"),
        ("INLETD_ADMIN_LISTEN", "127.0.0.1:7000"),
    ];
    assert!(load(None, &wildcard, Layer::default()).is_err());
    let two_ports = [
        ("INLETD_LISTEN", "0.0.0.0:7000"),
        ("INLETD_ADMIN_LISTEN", "127.0.0.1:7001"),
    ];
    assert!(load(None, &two_ports, Layer::default()).is_ok());
    let both_free = [
        ("INLETD_LISTEN", "127.0.0.1:0"),
        ("INLETD_ADMIN_LISTEN", "127.0.0.1:0"),
    ];
    assert!(load(None, &both_free, Layer::default()).is_ok());
}

#[test]
fn a_trailing_slash_makes_no_other_base() {
    let with: UpstreamUrl = "http://u:p@127.0.0.1:8081/base/".parse().unwrap();
    let without: UpstreamUrl = "http://u:p@127.0.0.1:8081/base".parse().unwrap();
    assert_eq!(with, without);
    assert_eq!(with.as_str().parse::<UpstreamUrl>(), Ok(with));
}

#[test]
fn a_non_ascii_log_level_is_refused_not_a_panic() {
    let mut config = Config::defaults();
    config.log_level = "inletd=В".into();
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("log_level"), "{err}");
}

/// Field values in a log filter are plain text: the regular expression the
/// fuzzer found (tens of `.` around a literal) made the regex engine ask for
/// 2 GiB while the filter was built. As text it is an ordinary directive.
#[test]
fn log_filter_field_values_are_text_not_regular_expressions() {
    let pattern = format!(
        "[{{http:p@128.=3ma{}x_batch_messages11@.}}]",
        ".".repeat(54)
    );
    let filter = super::log_filter(&pattern).expect("a directive with a field value");
    assert!(
        filter.to_string().contains("x_batch_messages11"),
        "{filter}"
    );
    assert!(super::log_filter("info,inletd=debug").is_ok());
}
