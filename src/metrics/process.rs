//! The gauges that describe the process rather than its traffic: what build
//! runs (`inletd_build_info`), the configured limits the dashboard and alerts
//! compare against, and the standard `process_*` metrics (resident memory,
//! CPU, open fds, start time) from `metrics-process`, refreshed at each scrape.
//!
//! Everything here registers under the owning [`super::Metrics`]' local
//! recorder, like the rest of the module.

use std::time::Duration;

use metrics::{gauge, Unit};

use crate::build_info;

pub const BUILD_INFO: &str = "inletd_build_info";
pub const MAX_IN_FLIGHT: &str = "inletd_max_in_flight";
pub const REQUEST_TIMEOUT: &str = "inletd_request_timeout_seconds";

/// `inletd_build_info{version,revision} 1`: the usual info-metric shape, so a
/// dashboard can count instances per version.
pub(super) fn build_info() {
    gauge!(
        description: "Always 1; its labels name the running build (version and git revision).",
        BUILD_INFO,
        "version" => build_info::VERSION,
        "revision" => build_info::REVISION
    )
    .set(1.0);
}

/// `inletd_max_buffered_bytes`: set once, from the configuration.
pub(super) fn max_buffered(bytes: u64) {
    gauge!(
        description: "The configured max_buffered_bytes bound.",
        unit: Unit::Bytes,
        super::MAX_BUFFERED_BYTES
    )
    .set(bytes as f64);
}

/// `inletd_max_in_flight` and `inletd_request_timeout_seconds`: set once, from the configuration.
pub(super) fn limits(max_in_flight: usize, request_timeout: Duration) {
    gauge!(
        description: "The configured max_in_flight bound on upstream requests at once.",
        MAX_IN_FLIGHT
    )
    .set(max_in_flight as f64);
    gauge!(
        description: "The configured request_timeout: longest a producer waits for its answer.",
        unit: Unit::Seconds,
        REQUEST_TIMEOUT
    )
    .set(request_timeout.as_secs_f64());
}

/// The `process_*` collector, described at registration; call
/// [`metrics_process::Collector::collect`] under the recorder before rendering.
pub(super) fn process_collector() -> metrics_process::Collector {
    let collector = metrics_process::Collector::default();
    collector.describe();
    collector
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::metrics::Metrics;

    #[test]
    fn build_limits_and_process_gauges_are_exported() {
        let mut config = Config::defaults();
        config.max_in_flight = 7;
        config.request_timeout.0 = std::time::Duration::from_millis(2500);
        let text = Metrics::for_config(&config).render();
        let build = format!(
            r#"inletd_build_info{{version="{}",revision="{}"}} 1"#,
            env!("CARGO_PKG_VERSION"),
            env!("INLETD_GIT_REVISION")
        );
        for line in [
            build.as_str(),
            "inletd_max_in_flight 7",
            "inletd_request_timeout_seconds 2.5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // Read from the OS at render time: Linux has all four.
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
            let value: f64 = value.parse().unwrap();
            assert!(
                value > 0.0 || name == "process_cpu_seconds_total",
                "{name} {value}"
            );
        }
    }
}
