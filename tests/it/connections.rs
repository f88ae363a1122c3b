//! Producer connections end after an answer marked `Connection: close`: past
//! `max_connection_requests`, and once draining. Read over raw TCP, so the
//! header and the close are seen as the producer sees them.

use std::sync::Arc;

use aep_standin::Fault;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::{eventually, message, ms, TestApp};

/// Past this, a wait is a hung test.
const HUNG: std::time::Duration = std::time::Duration::from_secs(30);

/// One producer connection spoken to by hand.
struct Producer {
    stream: BufReader<TcpStream>,
}

/// An answer's status, whether it carried `Connection: close`, and its body.
#[derive(Debug)]
struct Raw {
    status: u16,
    close: bool,
    body: String,
}

impl Producer {
    async fn connect(app: &TestApp) -> Producer {
        let stream = TcpStream::connect(app.addr).await.expect("inletd accepts");
        Producer {
            stream: BufReader::new(stream),
        }
    }

    async fn send(&mut self, body: &str) {
        let request = format!(
            "POST /collection/c HTTP/1.1\r\nhost: inletd\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
    }

    async fn answer(&mut self) -> Raw {
        let mut line = String::new();
        self.stream.read_line(&mut line).await.unwrap();
        let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        let status = status.unwrap_or_else(|| panic!("no status line: {line:?}"));
        let (mut length, mut close) = (0, false);
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').expect("a header line");
            let (name, value) = (name.to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                length = value.parse().unwrap();
            } else if name == "connection" {
                close |= value.eq_ignore_ascii_case("close");
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.unwrap();
        Raw {
            status,
            close,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn exchange(&mut self, body: &str) -> Raw {
        self.send(body).await;
        self.answer().await
    }

    /// Waits for inletd to close the connection: the next read sees its end
    /// (the bound only stops a hung test: it is no claim about speed).
    async fn closed_by_inletd(&mut self) -> bool {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(HUNG, self.stream.read_to_end(&mut rest)).await;
        matches!(read, Ok(Ok(0)))
    }
}

#[tokio::test]
async fn a_connection_closes_after_max_connection_requests_answers() {
    let app = TestApp::start(|c| {
        c.linger = ms(1);
        c.max_connection_requests = 2;
    })
    .await;
    let mut producer = Producer::connect(&app).await;
    let first = producer.exchange(&message("1", "")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(!first.close, "the first answer keeps the connection");
    let second = producer.exchange(&message("2", "")).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert!(second.close, "the second answer is the last: {second:?}");
    assert!(producer.closed_by_inletd().await);
    // A new connection is served as usual.
    let mut again = Producer::connect(&app).await;
    let third = again.exchange(&message("3", "")).await;
    assert_eq!((third.status, third.close), (200, false));
}

#[tokio::test]
async fn once_draining_each_connection_closes_after_its_answer() {
    let app = Arc::new(
        TestApp::start(|c| {
            c.linger = ms(1);
            c.shutdown_grace = ms(300);
            c.request_timeout = ms(60_000);
        })
        .await,
    );
    let mut idle = Producer::connect(&app).await;
    assert_eq!(idle.exchange(&message("before", "")).await.status, 200);

    app.standin.push_faults([Fault::Hang]);
    let mut busy = Producer::connect(&app).await;
    busy.send(&message("held", "")).await;
    app.wait_for_metric("inletd_in_flight_requests", 1.0).await;

    let mut app = Arc::into_inner(app).expect("only the test holds the app");
    app.begin_shutdown();
    let admin = app.admin;
    let client = app.client.clone();
    eventually("readyz turns 503", || {
        let client = client.clone();
        async move {
            let r = client.get(format!("http://{admin}/readyz")).send().await;
            r.is_ok_and(|r| r.status().as_u16() == 503)
        }
    })
    .await;

    // An idle keep-alive connection is closed without waiting for a request.
    assert!(idle.closed_by_inletd().await);
    // A connection opened while draining gets its 503 and is closed.
    let mut late = Producer::connect(&app).await;
    let refused = late.exchange(&message("late", "")).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.close, "{refused:?}");
    assert!(late.closed_by_inletd().await);
    // The request in progress gets its answer (503 at the end of the grace
    // period, the upstream hangs), marked as the last, then the connection closes.
    let held = busy.answer().await;
    assert_eq!(held.status, 503, "{}", held.body);
    assert!(held.close, "{held:?}");
    assert!(busy.closed_by_inletd().await);
    let report = app.stop().await;
    assert!(!report.complete);
}
