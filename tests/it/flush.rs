//! Each flush trigger end to end, read back from the stand-in and the metrics.

use std::sync::Arc;
use std::time::Duration;

use aep_standin::StandInConfig;

use crate::support::{message, metric, ms, send_all, TestApp};

async fn send_many(app: &Arc<TestApp>, n: usize, pad: usize) -> Vec<u16> {
    let extra = format!(r#","pad":"{}""#, "p".repeat(pad));
    let bodies = (0..n).map(|i| message(&format!("m{i}"), &extra)).collect();
    send_all(app, "c", bodies)
        .await
        .iter()
        .map(|a| a.status)
        .collect()
}

#[tokio::test]
async fn count_flushes_a_full_buffer_without_waiting_for_linger() {
    let app = Arc::new(
        TestApp::start(|c| {
            c.max_batch_messages = 5;
            c.linger = ms(3_600_000);
        })
        .await,
    );
    assert!(send_many(&app, 10, 0).await.iter().all(|s| *s == 200));
    assert!(app.standin.requests().iter().all(|r| r.message_count == 5));
    let m = app.metrics().await;
    assert_eq!(
        metric(&m, r#"inletd_batches_sent_total{reason="count"}"#),
        2.0,
        "{m}"
    );
}

#[tokio::test]
async fn bytes_flush_keeps_every_request_under_max_batch_bytes() {
    let app = Arc::new(
        TestApp::start(|c| {
            c.max_batch_bytes = 2_000;
            c.max_buffered_bytes = 1 << 20;
            c.linger = ms(500);
        })
        .await,
    );
    assert!(send_many(&app, 12, 400).await.iter().all(|s| *s == 200));
    for r in app.standin.requests() {
        assert!(r.body.len() <= 2_000, "request of {} bytes", r.body.len());
    }
    let m = app.metrics().await;
    assert!(
        metric(&m, r#"inletd_batches_sent_total{reason="bytes"}"#) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_lone_message_does_not_wait_for_linger() {
    // An hour of linger: only adaptive flushing can answer this message.
    let app = TestApp::start(|c| c.linger = ms(3_600_000)).await;
    assert_eq!(app.send("c", message("alone", "")).await.status, 200);
    let m = app.metrics().await;
    assert_eq!(
        metric(&m, r#"inletd_batches_sent_total{reason="idle"}"#),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_loaded_key_gathers_until_its_batch_comes_back() {
    // max_in_flight 2: one batch per key may be in flight before messages gather.
    let standin = StandInConfig {
        latency: Duration::from_secs(1),
        ..StandInConfig::default()
    };
    let app = Arc::new(
        TestApp::start_with(standin, |c| {
            c.max_in_flight = 2;
            c.linger = ms(3_600_000);
        })
        .await,
    );
    let send = |id: &'static str| {
        let app = app.clone();
        tokio::spawn(async move { app.send("c", message(id, "")).await.status })
    };
    let first = send("first");
    app.wait_for_metric("inletd_in_flight_requests", 1.0).await;
    // One after the other, so each would leave alone if the slot were freed early.
    let second = send("second");
    app.wait_for_metric("inletd_buffered_messages", 2.0).await;
    let third = send("third");
    app.wait_for_metric("inletd_buffered_messages", 3.0).await;
    for task in [first, second, third] {
        assert_eq!(task.await.unwrap(), 200);
    }
    // The batch's delivery held its slot until it ended: the two later
    // messages waited for it, then left together.
    assert_eq!(app.standin.batch_requests(), 2);
    let m = app.metrics().await;
    assert_eq!(
        metric(&m, r#"inletd_batches_sent_total{reason="idle"}"#),
        2.0,
        "{m}"
    );
    assert_eq!(metric(&m, "inletd_batch_messages_sum"), 3.0, "{m}");
}

#[tokio::test]
async fn shutdown_flushes_what_is_buffered_and_answers_it() {
    let mut app = TestApp::start(|c| c.linger = ms(3_600_000)).await;
    let client = app.client.clone();
    let url = app.url("/collection/c");
    let waiting =
        tokio::spawn(
            async move { crate::support::post(&client, &url, message("m", ""), &[]).await },
        );
    let standin = app.standin.clone();
    app.wait_for_metric("inletd_buffered_messages", 1.0).await;
    app.begin_shutdown();
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(standin.delivered().len(), 1);
    let report = app.stop().await;
    assert!(report.complete);
}
