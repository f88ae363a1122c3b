//! Upstream answers that arrive but cannot be used: redirects, cut bodies, and
//! a final 429. Where the stand-in cannot misbehave that way, a raw TCP
//! upstream on 127.0.0.1 writes the answer byte by byte.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aep_standin::Fault;
use inletd::config::UpstreamUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{message, TestApp};

/// A one-answer-per-connection upstream: reads each request whole, writes
/// `answer` and closes. Returns its address and its request count.
async fn raw_upstream(answer: String) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("has an address");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = answer.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                if read_request(&mut socket).await.is_some() {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                }
            });
        }
    });
    (addr, count)
}

/// Reads one HTTP/1.1 request with a `content-length` body.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<()> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if data.len() >= end + 4 + len {
            return Some(());
        }
    }
}

fn upstream_url(addr: SocketAddr) -> UpstreamUrl {
    format!("http://{addr}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_not_confirmed() {
    // The place the redirect points to: it must never see the batch.
    let body = r#"{"responses":[{"xactionId":"x"}]}"#;
    let (elsewhere, elsewhere_count) = raw_upstream(format!(
        "HTTP/1.1 207 Multi-Status\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
    .await;
    let (addr, count) = raw_upstream(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{elsewhere}/collection/batch/c\r\ncontent-length: 0\r\n\r\n"
    ))
    .await;
    let app = TestApp::start(|c| c.upstream = upstream_url(addr)).await;
    let answer = app.send("c", message("r", "")).await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert!(answer.text.contains("may or may not"), "{}", answer.text);
    assert_eq!(count.load(Ordering::SeqCst), 1, "not resent");
    assert_eq!(
        elsewhere_count.load(Ordering::SeqCst),
        0,
        "the batch (and its credentials) never went where the redirect pointed"
    );
}

#[tokio::test]
async fn a_cut_207_body_is_not_confirmed_and_not_resent() {
    let (addr, count) = raw_upstream(
        "HTTP/1.1 207 Multi-Status\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"responses\":[{\"xac"
            .to_owned(),
    )
    .await;
    let app = TestApp::start(|c| c.upstream = upstream_url(addr)).await;
    let answer = app.send("c", message("cut", "")).await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert!(answer.text.contains("may or may not"), "{}", answer.text);
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "the request arrived: resending it could duplicate the batch"
    );
}

#[tokio::test]
async fn a_final_429_passes_retry_after_to_the_producer() {
    let app = TestApp::start(|c| c.max_retries = 0).await;
    app.standin.push_faults([Fault::Status {
        status: 429,
        retry_after: Some(3),
    }]);
    let answer = app.send("c", message("busy", "")).await;
    assert_eq!(answer.status, 429, "{}", answer.text);
    assert_eq!(
        answer.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"3"[..])
    );
}

#[tokio::test]
async fn an_oversized_answer_is_not_read_and_not_confirmed() {
    let (addr, count) = raw_upstream(
        "HTTP/1.1 207 Multi-Status\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n{\"responses\":["
            .to_owned(),
    )
    .await;
    let app = TestApp::start(|c| c.upstream = upstream_url(addr)).await;
    let answer = app.send("c", message("big", "")).await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert!(answer.text.contains("larger than"), "{}", answer.text);
    assert!(answer.text.contains("may or may not"), "{}", answer.text);
    assert_eq!(count.load(Ordering::SeqCst), 1, "not resent");
}
