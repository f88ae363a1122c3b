//! Every `inletd_*` metric: names, descriptions, histogram buckets and the
//! closed sets their labels come from.
//!
//! Each [`crate::App`] owns its own Prometheus recorder (no global state), so
//! several instances in one test process keep separate counts: registration
//! runs the `metrics` macros under [`metrics::with_local_recorder`]. Hot-path
//! handles are registered once, a labelled family as one handle per label
//! value keyed by a type (never by a position); labels never carry tokens,
//! bodies or connection ids. The process-level gauges (build, limits,
//! `process_*`) are in [`process`].

use std::sync::Arc;
use std::time::Duration;

use enum_map::{Enum, EnumMap};
use metrics::{counter, describe_counter, gauge, histogram, Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

mod ims;
mod process;
pub use ims::{IMS_TOKEN_EXPIRY, IMS_TOKEN_FETCHES, IMS_TOKEN_REFRESH_FAILING};
mod spool;
pub use process::{BUILD_INFO, MAX_IN_FLIGHT, REQUEST_TIMEOUT};
pub use spool::*;

pub const MESSAGES_RECEIVED: &str = "inletd_messages_received_total";
pub const MESSAGE_RESULTS: &str = "inletd_message_results_total";
pub const BATCHES_SENT: &str = "inletd_batches_sent_total";
pub const BATCH_MESSAGES: &str = "inletd_batch_messages";
pub const BATCH_BYTES: &str = "inletd_batch_bytes";
pub const UPSTREAM_REQUESTS: &str = "inletd_upstream_requests_total";
pub const UPSTREAM_DURATION: &str = "inletd_upstream_request_duration_seconds";
pub const UPSTREAM_RETRIES: &str = "inletd_upstream_retries_total";
pub const BUFFERED_MESSAGES: &str = "inletd_buffered_messages";
pub const BUFFERED_BYTES: &str = "inletd_buffered_bytes";
pub const MAX_BUFFERED_BYTES: &str = "inletd_max_buffered_bytes";
pub const IN_FLIGHT: &str = "inletd_in_flight_requests";
pub const MESSAGE_WAIT: &str = "inletd_message_wait_seconds";
pub const SHED: &str = "inletd_shed_total";

/// Why a batch left its buffer (`reason` label of `inletd_batches_sent_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum FlushReason {
    Count,
    Bytes,
    Linger,
    /// The key had spare upstream capacity, so its messages were not held back.
    Idle,
    Shutdown,
}

impl FlushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Bytes => "bytes",
            Self::Linger => "linger",
            Self::Idle => "idle",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Status labels: the HTTP codes inletd answers or meets, anything else is `other`.
const STATUSES: [(u16, &str); 12] = [
    (200, "200"),
    (207, "207"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (413, "413"),
    (429, "429"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
];

/// The closed-set label for an HTTP status code.
pub fn status_label(code: u16) -> &'static str {
    STATUSES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("other", |(_, label)| label)
}

const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
const BYTE_BUCKETS: &[f64] = &[
    1024.0, 4096.0, 16384.0, 65536.0, 131072.0, 262144.0, 524288.0, 786432.0, 1048576.0,
];
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A counter family over [`STATUSES`] plus `other`, looked up by the code itself.
struct ByStatus {
    known: [(u16, Counter); STATUSES.len()],
    other: Counter,
}

impl ByStatus {
    /// Registers one counter per status label of `name` (call under the local recorder).
    fn register(name: &'static str) -> ByStatus {
        ByStatus {
            known: STATUSES.map(|(code, label)| (code, counter!(name, "status" => label))),
            other: counter!(name, "status" => "other"),
        }
    }

    fn get(&self, code: u16) -> &Counter {
        self.known
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(&self.other, |(_, counter)| counter)
    }
}

/// Registered handles for everything inletd records.
pub struct Metrics {
    /// Kept for the families registered as their labels turn up (upstream statuses).
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    pub messages_received: Counter,
    results: ByStatus,
    batches_sent: EnumMap<FlushReason, Counter>,
    pub batch_messages: Histogram,
    pub batch_bytes: Histogram,
    pub upstream_duration: Histogram,
    pub upstream_retries: Counter,
    pub buffered_messages: Gauge,
    pub buffered_bytes: Gauge,
    pub in_flight: Gauge,
    pub message_wait: Histogram,
    pub shed: Counter,
    /// Fire-and-forget and the spool (see [`SpoolMetrics`]).
    pub spool: SpoolMetrics,
    /// `process_*`, refreshed at each [`Metrics::render`].
    process: metrics_process::Collector,
    /// The IMS token provider, read at each [`Metrics::render`] (see [`ims`]).
    ims: std::sync::OnceLock<crate::ims::TokenProvider>,
}

impl Metrics {
    /// A fresh recorder with every family registered and described.
    pub fn new(max_buffered_bytes: u64) -> Arc<Metrics> {
        let recorder = Arc::new(recorder());
        // Each metric is described where it is registered, so neither can be forgotten.
        metrics::with_local_recorder(recorder.as_ref(), || {
            process::max_buffered(max_buffered_bytes);
            process::build_info();
            describe_upstream_requests();
            ims::register();
            Arc::new(Metrics {
                recorder: recorder.clone(),
                handle: recorder.handle(),
                messages_received: counter!(
                    description: "Messages accepted from producers.",
                    MESSAGES_RECEIVED
                ),
                results: message_results(),
                batches_sent: batches_sent(),
                batch_messages: histogram!(
                    description: "Messages per flushed batch.",
                    BATCH_MESSAGES
                ),
                batch_bytes: histogram!(
                    description: "Request body bytes per flushed batch.",
                    unit: Unit::Bytes,
                    BATCH_BYTES
                ),
                upstream_duration: histogram!(
                    description: "Upstream request duration.",
                    unit: Unit::Seconds,
                    UPSTREAM_DURATION
                ),
                upstream_retries: counter!(
                    description: "Upstream requests resent after a retryable failure.",
                    UPSTREAM_RETRIES
                ),
                buffered_messages: gauge!(
                    description: "Messages accepted and not yet answered.",
                    BUFFERED_MESSAGES
                ),
                buffered_bytes: gauge!(
                    description: "Bytes of messages accepted and not yet answered.",
                    unit: Unit::Bytes,
                    BUFFERED_BYTES
                ),
                in_flight: gauge!(description: "Upstream requests in flight.", IN_FLIGHT),
                message_wait: histogram!(
                    description: "Time from accepting a message to its result.",
                    unit: Unit::Seconds,
                    MESSAGE_WAIT
                ),
                shed: counter!(
                    description: "Producer requests refused with 429 because the buffer was full.",
                    SHED
                ),
                spool: SpoolMetrics::register(),
                process: process::process_collector(),
                ims: std::sync::OnceLock::new(),
            })
        })
    }

    /// [`Metrics::new`] with the configured limits exported as gauges too.
    pub fn for_config(config: &Config) -> Arc<Metrics> {
        let m = Metrics::new(config.max_buffered_bytes);
        metrics::with_local_recorder(m.recorder.as_ref(), || {
            process::limits(config.max_in_flight, config.request_timeout.0);
        });
        m
    }

    /// Counts one message's final result by the status its producer got (or would have got).
    pub fn message_result(&self, code: u16) {
        self.results.get(code).increment(1);
    }

    pub fn batch_sent(&self, reason: FlushReason, messages: usize, bytes: usize) {
        self.batches_sent[reason].increment(1);
        self.batch_messages.record(messages as f64);
        self.batch_bytes.record(bytes as f64);
    }

    /// Counts one upstream request by its status code.
    pub fn upstream_request(&self, code: u16) {
        self.upstream_counter(status_label(code)).increment(1);
    }

    /// Counts one upstream request that got no HTTP answer (`error` or `timeout`).
    pub fn upstream_failure(&self, label: &'static str) {
        self.upstream_counter(label).increment(1);
    }

    pub fn upstream_latency(&self, elapsed: Duration) {
        self.upstream_duration.record(elapsed.as_secs_f64());
    }

    /// Upstream statuses are registered as they come back, so `/metrics` shows only those met.
    fn upstream_counter(&self, label: &'static str) -> Counter {
        metrics::with_local_recorder(
            self.recorder.as_ref(),
            || counter!(UPSTREAM_REQUESTS, "status" => label),
        )
    }

    /// Exports `provider`'s token metrics from now on (once; a second call is ignored).
    pub fn watch_ims(&self, provider: crate::ims::TokenProvider) {
        let _ = self.ims.set(provider);
    }

    /// The Prometheus text exposition of everything above, `process_*` (and
    /// the IMS token's state) read just now.
    pub fn render(&self) -> String {
        self.spool.refresh();
        metrics::with_local_recorder(self.recorder.as_ref(), || {
            self.process.collect();
            if let Some(provider) = self.ims.get() {
                ims::collect(provider);
            }
        });
        self.handle.render()
    }

    /// Drains histogram buffers; run periodically so memory stays flat between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// How often histogram buffers are drained. Well under any scrape interval, so
/// a scrape never finds much to fold in, and cheap enough to run when idle.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Keeps the histogram buffers drained between scrapes, until `stop`.
pub async fn upkeep(metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => metrics.upkeep(),
            _ = stop.cancelled() => return,
        }
    }
}

/// The recorder, with each histogram's buckets.
fn recorder() -> PrometheusRecorder {
    let buckets = [
        (BATCH_MESSAGES, SIZE_BUCKETS),
        (BATCH_BYTES, BYTE_BUCKETS),
        (UPSTREAM_DURATION, SECONDS_BUCKETS),
        (MESSAGE_WAIT, SECONDS_BUCKETS),
        (SPOOL_SYNC, SYNC_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, values) in buckets {
        // Fails only for an empty list, and these are non-empty constants.
        builder = match builder.set_buckets_for_metric(Matcher::Full(name.into()), values) {
            Ok(b) => b,
            Err(e) => unreachable!("buckets of {name}: {e}"),
        };
    }
    builder.build_recorder()
}

// One function per family that is more than a single registration; each runs
// under the local recorder set in `Metrics::new`.

/// `inletd_message_results_total{status}`, every label registered up front.
fn message_results() -> ByStatus {
    describe_counter!(
        MESSAGE_RESULTS,
        "Final per-message results, by the HTTP status the producer got."
    );
    ByStatus::register(MESSAGE_RESULTS)
}

/// `inletd_batches_sent_total{reason}`, every reason registered up front.
fn batches_sent() -> EnumMap<FlushReason, Counter> {
    describe_counter!(
        BATCHES_SENT,
        "Batches flushed to the upstream, by why they were flushed."
    );
    EnumMap::from_fn(|reason: FlushReason| counter!(BATCHES_SENT, "reason" => reason.as_str()))
}

/// `inletd_upstream_requests_total{status}`: described only, its labels are
/// registered as requests come back ([`Metrics::upstream_request`]).
fn describe_upstream_requests() {
    describe_counter!(
        UPSTREAM_REQUESTS,
        "Upstream HTTP requests, by status code (error, timeout: no answer)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_a_closed_set() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(418), "other");
        assert_eq!(status_label(0), "other");
        for (code, label) in STATUSES {
            assert_eq!(code.to_string(), label);
        }
    }

    #[test]
    fn each_label_value_counts_in_its_own_series() {
        let m = Metrics::new(1000);
        m.message_result(413);
        m.message_result(418);
        m.message_result(0);
        for reason in [FlushReason::Idle, FlushReason::Count, FlushReason::Idle] {
            m.batch_sent(reason, 1, 10);
        }
        m.upstream_failure("timeout");
        let text = m.render();
        for line in [
            r#"inletd_message_results_total{status="413"} 1"#,
            r#"inletd_message_results_total{status="other"} 2"#,
            r#"inletd_message_results_total{status="200"} 0"#,
            r#"inletd_batches_sent_total{reason="idle"} 2"#,
            r#"inletd_batches_sent_total{reason="count"} 1"#,
            r#"inletd_batches_sent_total{reason="shutdown"} 0"#,
            r#"inletd_upstream_requests_total{status="timeout"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(
            !text.contains(r#"inletd_upstream_requests_total{status="200"}"#),
            "upstream statuses appear once met:\n{text}"
        );
    }

    #[test]
    fn instances_keep_separate_counts() {
        let (a, b) = (Metrics::new(1), Metrics::new(2));
        a.messages_received.increment(5);
        assert!(a.render().contains("inletd_messages_received_total 5"));
        assert!(b.render().contains("inletd_messages_received_total 0"));
        assert!(b.render().contains("inletd_max_buffered_bytes 2"));
    }

    #[test]
    fn renders_every_name_with_buckets() {
        let m = Metrics::new(1000);
        m.messages_received.increment(3);
        m.message_result(200);
        m.batch_sent(FlushReason::Linger, 3, 300);
        m.upstream_request(207);
        m.upstream_latency(Duration::from_millis(20));
        m.message_wait.record(0.02);
        let text = m.render();
        for name in [
            MESSAGES_RECEIVED,
            MAX_BUFFERED_BYTES,
            BUFFERED_BYTES,
            IN_FLIGHT,
            SHED,
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        assert!(text.contains("inletd_messages_received_total 3"), "{text}");
        assert!(
            text.contains(r#"inletd_batches_sent_total{reason="linger"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"inletd_message_results_total{status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"inletd_batch_messages_bucket{le="5"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("inletd_upstream_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("inletd_message_wait_seconds_bucket"),
            "{text}"
        );
    }
}
