//! Metrics read back after traffic: counts agree with what the stand-in saw.

use std::sync::Arc;

use crate::support::{message, metric, TestApp};

#[tokio::test]
async fn counters_and_histograms_match_the_traffic() {
    let app = Arc::new(TestApp::start(|c| c.max_batch_messages = 10).await);
    let tasks: Vec<_> = (0..25)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let body = if i == 0 {
                    r#"{"header":{}}"#.to_owned()
                } else {
                    message(&format!("m{i}"), "")
                };
                app.post(
                    "/collection/conn-xyz42",
                    body,
                    &[("authorization", "Bearer sekrit-token")],
                )
                .await
                .status
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(app.send("conn-xyz42", "not json").await.status, 400);
    let m = app.metrics().await;
    assert_eq!(
        metric(&m, "inletd_messages_received_total"),
        25.0,
        "refusals are not received: {m}"
    );
    assert_eq!(
        metric(&m, r#"inletd_message_results_total{status="200"}"#),
        24.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"inletd_message_results_total{status="400"}"#),
        2.0,
        "the upstream's per-message 400 and the refusal at the door: {m}"
    );
    let batches = app.standin.batch_requests() as f64;
    let sent: f64 = ["count", "bytes", "linger", "idle", "shutdown"]
        .iter()
        .map(|r| metric(&m, &format!(r#"inletd_batches_sent_total{{reason="{r}"}}"#)))
        .sum();
    assert_eq!(sent, batches, "{m}");
    assert_eq!(
        metric(&m, r#"inletd_upstream_requests_total{status="207"}"#),
        batches,
        "{m}"
    );
    assert_eq!(metric(&m, "inletd_batch_messages_count"), batches, "{m}");
    assert_eq!(metric(&m, "inletd_batch_messages_sum"), 25.0, "{m}");
    assert_eq!(metric(&m, "inletd_message_wait_seconds_count"), 25.0, "{m}");
    assert_eq!(metric(&m, "inletd_buffered_messages"), 0.0, "{m}");
    assert_eq!(metric(&m, "inletd_buffered_bytes"), 0.0, "{m}");
    assert_eq!(metric(&m, "inletd_in_flight_requests"), 0.0, "{m}");
    for name in [
        "inletd_batch_bytes_bucket",
        "inletd_upstream_request_duration_seconds_bucket",
        "inletd_upstream_retries_total",
        "inletd_max_buffered_bytes",
    ] {
        assert!(m.contains(name), "{name} missing:\n{m}");
    }
    assert!(!m.contains("sekrit"), "a token leaked into metrics");
    assert!(!m.contains("xyz42"), "no connection ids in labels");
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::start(|_| {}).await;
    assert_eq!(app.admin_status("/healthz").await, 200);
    assert_eq!(app.admin_status("/readyz").await, 200);
}
