//! Every `inletd_*` metric: names, descriptions, histogram buckets and the
//! closed sets their labels come from.
//!
//! Each [`crate::App`] owns its own Prometheus recorder (no global state), so
//! several instances in one test process keep separate counts. Hot-path
//! handles are registered once; labels never carry tokens, bodies or
//! connection ids.

use std::sync::Arc;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushReason {
    Count,
    Bytes,
    Linger,
    /// The key had spare upstream capacity, so its messages were not held back (SPEC §3).
    Idle,
    Shutdown,
}

impl FlushReason {
    pub const ALL: [FlushReason; 5] = [
        Self::Count,
        Self::Bytes,
        Self::Linger,
        Self::Idle,
        Self::Shutdown,
    ];

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
    status_index(code).map_or("other", |i| STATUSES[i].1)
}

/// The code's place in [`STATUSES`]; `STATUSES.len()` stands for `other`.
fn status_index(code: u16) -> Option<usize> {
    STATUSES.iter().position(|(c, _)| *c == code)
}

const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
const BYTE_BUCKETS: &[f64] = &[
    1024.0, 4096.0, 16384.0, 65536.0, 131072.0, 262144.0, 524288.0, 786432.0, 1048576.0,
];
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Registered handles for everything inletd records.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub messages_received: Counter,
    /// One per [`STATUSES`] entry, then `other`.
    results: Vec<Counter>,
    /// One per [`FlushReason::ALL`] entry, in that order.
    batches_sent: Vec<Counter>,
    pub batch_messages: Histogram,
    pub batch_bytes: Histogram,
    pub upstream_duration: Histogram,
    pub upstream_retries: Counter,
    pub buffered_messages: Gauge,
    pub buffered_bytes: Gauge,
    pub in_flight: Gauge,
    pub message_wait: Histogram,
    pub shed: Counter,
}

static METADATA: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

impl Metrics {
    pub fn new(max_buffered_bytes: u64) -> Arc<Metrics> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(BATCH_MESSAGES.into()), SIZE_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_BYTES.into()), BYTE_BUCKETS))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(UPSTREAM_DURATION.into()), SECONDS_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(MESSAGE_WAIT.into()), SECONDS_BUCKETS)
            })
            .expect("bucket lists are non-empty constants")
            .build_recorder();
        let handle = recorder.handle();
        // Each metric is described where it is registered, so neither can be forgotten.
        let help = SharedString::const_str;
        let counter = |name: &'static str, text: &'static str| {
            recorder.describe_counter(KeyName::from_const_str(name), None, help(text));
            recorder.register_counter(&Key::from_static_name(name), &METADATA)
        };
        let gauge = |name: &'static str, unit: Option<Unit>, text: &'static str| {
            recorder.describe_gauge(KeyName::from_const_str(name), unit, help(text));
            recorder.register_gauge(&Key::from_static_name(name), &METADATA)
        };
        let histogram = |name: &'static str, unit: Option<Unit>, text: &'static str| {
            recorder.describe_histogram(KeyName::from_const_str(name), unit, help(text));
            recorder.register_histogram(&Key::from_static_name(name), &METADATA)
        };
        let labelled = |name: &'static str,
                        text: &'static str,
                        label: &'static str,
                        values: &[&'static str]| {
            recorder.describe_counter(KeyName::from_const_str(name), None, help(text));
            values
                .iter()
                .map(|value| {
                    let key = Key::from_static_parts(name, &[])
                        .with_extra_labels(vec![Label::from_static_parts(label, value)]);
                    recorder.register_counter(&key, &METADATA)
                })
                .collect::<Vec<_>>()
        };
        let statuses: Vec<&'static str> = STATUSES
            .iter()
            .map(|(_, label)| *label)
            .chain(std::iter::once("other"))
            .collect();
        let results = labelled(
            MESSAGE_RESULTS,
            "Final per-message results, by the HTTP status the producer got.",
            "status",
            &statuses,
        );
        let reasons = FlushReason::ALL.map(FlushReason::as_str);
        let batches_sent = labelled(
            BATCHES_SENT,
            "Batches flushed to the upstream, by why they were flushed.",
            "reason",
            &reasons,
        );
        // Registered per status as requests come back.
        recorder.describe_counter(
            KeyName::from_const_str(UPSTREAM_REQUESTS),
            None,
            help("Upstream HTTP requests, by status code (error, timeout: no answer)."),
        );
        gauge(
            MAX_BUFFERED_BYTES,
            Some(Unit::Bytes),
            "The configured max_buffered_bytes bound.",
        )
        .set(max_buffered_bytes as f64);
        let metrics = Metrics {
            messages_received: counter(MESSAGES_RECEIVED, "Messages accepted from producers."),
            results,
            batches_sent,
            batch_messages: histogram(BATCH_MESSAGES, None, "Messages per flushed batch."),
            batch_bytes: histogram(
                BATCH_BYTES,
                Some(Unit::Bytes),
                "Request body bytes per flushed batch.",
            ),
            upstream_duration: histogram(
                UPSTREAM_DURATION,
                Some(Unit::Seconds),
                "Upstream request duration.",
            ),
            upstream_retries: counter(
                UPSTREAM_RETRIES,
                "Upstream requests resent after a retryable failure.",
            ),
            buffered_messages: gauge(
                BUFFERED_MESSAGES,
                None,
                "Messages accepted and not yet answered.",
            ),
            buffered_bytes: gauge(
                BUFFERED_BYTES,
                Some(Unit::Bytes),
                "Bytes of messages accepted and not yet answered.",
            ),
            in_flight: gauge(IN_FLIGHT, None, "Upstream requests in flight."),
            message_wait: histogram(
                MESSAGE_WAIT,
                Some(Unit::Seconds),
                "Time from accepting a message to its result.",
            ),
            shed: counter(
                SHED,
                "Producer requests refused with 429 because the buffer was full.",
            ),
            recorder,
            handle,
        };
        Arc::new(metrics)
    }

    /// Counts one message's final result by the status its producer got (or would have got).
    pub fn message_result(&self, code: u16) {
        let index = status_index(code).unwrap_or(STATUSES.len());
        if let Some(c) = self.results.get(index) {
            c.increment(1);
        }
    }

    pub fn batch_sent(&self, reason: FlushReason, messages: usize, bytes: usize) {
        if let Some(c) = self.batches_sent.get(reason as usize) {
            c.increment(1);
        }
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

    fn upstream_counter(&self, label: &'static str) -> Counter {
        let key = Key::from_static_parts(UPSTREAM_REQUESTS, &[])
            .with_extra_labels(vec![Label::from_static_parts("status", label)]);
        self.recorder.register_counter(&key, &METADATA)
    }

    /// The Prometheus text exposition of everything above.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram buffers; run periodically so memory stays flat between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
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
