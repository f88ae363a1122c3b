//! Each flush trigger end to end, read back from the stand-in and the metrics.

use std::sync::Arc;

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
async fn linger_sends_a_lone_message() {
    let app = TestApp::start(|c| c.linger = ms(50)).await;
    assert_eq!(app.send("c", message("alone", "")).await.status, 200);
    let m = app.metrics().await;
    assert_eq!(
        metric(&m, r#"inletd_batches_sent_total{reason="linger"}"#),
        1.0,
        "{m}"
    );
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
