//! Slow producers: a trickled body gets 408 and frees its share of the bound,
//! the deadline runs from the request's arrival, and connections over
//! `max_connections` wait until one closes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{message, ms, TestApp};

/// Reads one HTTP answer's head (enough for the status line).
async fn status_line(stream: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_frees_the_bound() {
    let app = TestApp::start(|c| {
        c.max_batch_bytes = 1_000;
        c.max_buffered_bytes = 2_000;
        c.body_read_timeout = ms(300);
    })
    .await;
    // Declares most of the bound, then sends a few bytes and stalls.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /collection/c HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 900\r\n\r\n{\"hea";
    slow.write_all(head.as_bytes()).await.unwrap();
    let line = status_line(&mut slow).await;
    assert!(line.starts_with("HTTP/1.1 408"), "{line}");
    // Its reservation is gone: two messages that need most of the bound fit again.
    let pad = format!(r#","pad":"{}""#, "x".repeat(400));
    for id in ["a", "b"] {
        let a = app.send("c", message(id, &pad)).await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
}

#[tokio::test]
async fn the_deadline_runs_from_arrival_not_from_the_end_of_the_body() {
    // The body may take longer than request_timeout to arrive only if the
    // deadline started after it; here it starts at arrival, so it is refused.
    let app = TestApp::start(|c| {
        c.request_timeout = ms(300);
        c.linger = ms(5);
        c.body_read_timeout = ms(60_000);
    })
    .await;
    let body = message("late", "");
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /collection/c HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Not a speed assertion: the body is sent only after the deadline has passed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let line = status_line(&mut stream).await;
    assert!(line.starts_with("HTTP/1.1 408"), "{line}");
    assert!(app.standin.requests().is_empty(), "nothing went upstream");
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_closes() {
    let app = TestApp::start(|c| c.max_connections = 2).await;
    // Two keep-alive connections that each completed a request hold both slots.
    let mut held = Vec::new();
    for id in ["a", "b"] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let body = message(id, "");
        let request = format!(
            "POST /collection/c HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let line = status_line(&mut stream).await;
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        held.push(stream);
    }
    let third = {
        let (client, url) = (app.client.clone(), app.url("/collection/c"));
        tokio::spawn(
            async move { crate::support::post(&client, &url, message("third", ""), &[]).await },
        )
    };
    // A negative check, not a speed one: while both slots are held, no answer comes.
    let mut third = third;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "a third connection was served past max_connections = 2"
    );
    drop(held.pop());
    let answer = third.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(app.standin.delivered().len(), 3);
}

#[tokio::test]
async fn a_request_that_arrived_before_the_drain_is_delivered_and_waited_for() {
    let mut app = TestApp::start(|c| c.body_read_timeout = ms(60_000)).await;
    let body = message("straddler", "");
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /collection/c HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Gives the headers time to be read, so the request has arrived (its handler
    // waits for the body) before the drain begins; no assertion depends on speed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.begin_shutdown();
    let admin = app.admin;
    crate::support::eventually("/readyz turns 503", || async move {
        let url = format!("http://{admin}/readyz");
        match reqwest::Client::new().get(url).send().await {
            Ok(r) => r.status() == 503,
            Err(_) => true,
        }
    })
    .await;
    stream.write_all(body.as_bytes()).await.unwrap();
    let line = status_line(&mut stream).await;
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let delivered = app.standin.delivered();
    assert!(delivered.iter().any(|d| d.message == body), "delivered");
    let report = app.stop().await;
    assert!(report.complete, "{report:?}");
}
