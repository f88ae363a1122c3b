//! Bounds: bad input refused at once, the memory bound (429), callers that
//! leave early, and request_timeout.

use std::sync::Arc;
use std::time::Duration;

use aep_standin::Fault;

use crate::support::{eventually, message, metric, ms, TestApp};

/// A memory bound with room for `message` (its bytes and its overhead) and a
/// little more, but not for a second message or a body of two.
fn room_for_one(message: &str) -> u64 {
    (message.len() + inletd::ingest::MESSAGE_OVERHEAD + 100) as u64
}

#[tokio::test]
async fn bad_bodies_get_400_and_nothing_goes_upstream() {
    let app = TestApp::start(|_| {}).await;
    for bad in ["not json", "[1,2]", "\"text\"", "{\"unterminated\":", ""] {
        let a = app.send("c", bad).await;
        assert_eq!(a.status, 400, "{bad:?}: {}", a.text);
        assert_eq!(a.body["statusCode"], 400);
        assert!(a.body["message"].is_string());
    }
    for bad in [
        "{\"messages\":{}}",
        "{\"msgs\":[]}",
        "[]",
        "{\"messages\":[]}",
        "nope",
    ] {
        let a = app.post("/collection/batch/c", bad, &[]).await;
        assert_eq!(a.status, 400, "{bad:?}: {}", a.text);
    }
    let wrong_method = app
        .client
        .get(app.url("/collection/c"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    let body: serde_json::Value =
        serde_json::from_str(&wrong_method.text().await.unwrap()).unwrap();
    assert_eq!(body["statusCode"], 405);
    let nowhere = app.post("/nowhere", "{}", &[]).await;
    assert_eq!(
        (nowhere.status, nowhere.body["statusCode"].as_u64()),
        (404, Some(404))
    );
    assert!(app.standin.requests().is_empty());
}

#[tokio::test]
async fn a_message_larger_than_max_batch_bytes_gets_413_at_once() {
    let app = TestApp::start(|c| c.max_batch_bytes = 1_000).await;
    let big = message("big", &format!(r#","pad":"{}""#, "x".repeat(1_000)));
    let a = app.send("c", big.clone()).await;
    assert_eq!(a.status, 413, "{}", a.text);
    let a = app
        .post(
            "/collection/batch/c",
            format!(r#"{{"messages":[{big},{}]}}"#, message("ok", "")),
            &[],
        )
        .await;
    assert_eq!(a.status, 207, "{}", a.text);
    assert_eq!(a.body["responses"][0]["statusCode"], 413);
    assert!(a.body["responses"][1]["xactionId"].is_string());
    let huge = format!(r#"{{"messages":[{}]}}"#, "1,".repeat(600_000) + "1");
    assert_eq!(app.post("/collection/batch/c", huge, &[]).await.status, 413);
    assert_eq!(
        app.standin.delivered().len(),
        1,
        "only the message that fits went upstream"
    );
}

#[tokio::test]
async fn a_full_buffer_answers_429_with_retry_after_at_once() {
    let pad = format!(r#","pad":"{}""#, "x".repeat(500));
    let app = Arc::new(
        TestApp::start(|c| {
            c.max_batch_bytes = 1_000;
            c.max_buffered_bytes = room_for_one(&message("held", &pad));
            c.request_timeout = ms(30_000);
        })
        .await,
    );
    app.standin.push_faults([Fault::Hang]);
    let holder = {
        let app = app.clone();
        let body = message("held", &pad);
        tokio::spawn(async move { app.send("c", body).await })
    };
    app.wait_for_metric("inletd_buffered_messages", 1.0).await;
    let refused = app.send("c", message("second", &pad)).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(refused.body["statusCode"], 429);
    assert_eq!(metric(&app.metrics().await, "inletd_shed_total"), 1.0);
    // A body larger than the whole bound could never fit: 413, not a 429 to retry forever.
    let big = format!(
        r#"{{"messages":[{},{}]}}"#,
        message("a", &pad),
        message("b", &pad)
    );
    let never = app.post("/collection/batch/c", big, &[]).await;
    assert_eq!(never.status, 413, "{}", never.text);
    holder.abort();
}

#[tokio::test]
async fn a_producer_that_leaves_early_changes_nothing_for_the_others() {
    let app = Arc::new(TestApp::start(|c| c.linger = ms(100)).await);
    app.standin.push_faults([Fault::Delay { ms: 500 }]);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let leaver = message("leaver", "");
    let gone = impatient
        .post(app.url("/collection/c"))
        .body(leaver.clone())
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up");
    let stayer = app.send("c", message("stayer", "")).await;
    assert_eq!(stayer.status, 200, "{}", stayer.text);
    let standin = app.standin.clone();
    eventually("the leaver's message is delivered", || {
        let standin = standin.clone();
        let leaver = leaver.clone();
        async move { standin.delivered().iter().any(|d| d.message == leaver) }
    })
    .await;
    let count = app
        .standin
        .delivered()
        .iter()
        .filter(|d| d.message == leaver)
        .count();
    assert_eq!(count, 1, "delivered exactly once");
}

#[tokio::test]
async fn a_body_that_cannot_fit_is_refused_before_it_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let held = message("held", &format!(r#","pad":"{}""#, "x".repeat(500)));
    let app = TestApp::start(|c| {
        c.max_batch_bytes = 1_000;
        c.max_buffered_bytes = room_for_one(&held);
        c.request_timeout = ms(60_000);
    })
    .await;
    app.standin.push_faults([Fault::Hang]);
    let holder = {
        let (client, url) = (app.client.clone(), app.url("/collection/c"));
        let body = held;
        tokio::spawn(async move { crate::support::post(&client, &url, body, &[]).await })
    };
    app.wait_for_metric("inletd_buffered_messages", 1.0).await;
    // Headers only: the body never comes. Reading it first would hang until request_timeout.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /collection/c HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 900\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = stream.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    holder.abort();
}

#[tokio::test]
async fn slow_or_idle_producer_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start(|c| c.producer_idle_timeout = ms(200)).await;
    // Headers that never finish.
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"POST /collection/c HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // A keep-alive connection that goes quiet after one request.
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let body = message("m", "");
    let request = format!(
        "POST /collection/c HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    idle.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Both are closed by inletd (read returns 0 or an error), not by the test.
    for stream in [&mut slow, &mut idle] {
        // The bound only keeps a broken build from hanging the suite.
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        });
        assert!(closed.await.is_ok(), "inletd left the connection open");
    }
    // The listener itself still serves.
    assert_eq!(app.send("c", message("after", "")).await.status, 200);
}

#[tokio::test]
async fn a_full_size_batch_of_ordinary_messages_is_charged_by_its_real_count() {
    // ~870 KB in 900 messages: charged ~870 KB + 900 × MESSAGE_OVERHEAD, well
    // inside a 2 MB bound. (A charge for the worst case a body that size could
    // hold, ~300 000 `{}`, would refuse every full-size batch.)
    let app = TestApp::start(|c| c.max_buffered_bytes = 2_000_000).await;
    let pad = format!(r#","pad":"{}""#, "x".repeat(750));
    let messages: Vec<String> = (0..900).map(|i| message(&i.to_string(), &pad)).collect();
    let body = format!(r#"{{"messages":[{}]}}"#, messages.join(","));
    assert!(
        body.len() > 800_000 && body.len() < 1_000_000,
        "{}",
        body.len()
    );
    let a = app.post("/collection/batch/c", body, &[]).await;
    assert_eq!(a.status, 207, "{}", a.text);
    let responses = a.body["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 900);
    assert!(
        responses.iter().all(|r| r["xactionId"].is_string()),
        "{}",
        a.text
    );
    app.wait_for_metric("inletd_buffered_bytes", 0.0).await;
}
