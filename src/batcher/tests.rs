//! Worker tests under paused time: each flush trigger, key isolation, shutdown.
//! The fixed-delay tests run with adaptive flushing off (no batch may be
//! sent early); the adaptive ones are in `tests_adaptive`.

use std::time::Duration;

use super::*;
use crate::reply::tests::test_reply;
use axum::http::{HeaderMap, HeaderValue};

pub(super) struct Rig {
    // Fields are used by tests_adaptive too.
    pub handle: BatcherHandle,
    pub batches: mpsc::UnboundedReceiver<Batch>,
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub _receivers: Vec<tokio::sync::oneshot::Receiver<crate::reply::Outcome>>,
}

fn rig(max_messages: usize, max_bytes: usize, linger_ms: u64) -> Rig {
    paced_rig(max_messages, max_bytes, linger_ms, 0, 0)
}

pub(super) fn paced_rig(
    max_messages: usize,
    max_bytes: usize,
    linger_ms: u64,
    eager_in_flight: usize,
    max_in_flight: usize,
) -> Rig {
    let metrics = Metrics::new(1 << 30);
    let shutdown = CancellationToken::new();
    let limits = Limits {
        max_messages,
        max_bytes,
    };
    let (handle, worker, batches) = batcher(
        limits,
        Pacing {
            linger: Duration::from_millis(linger_ms),
            eager_in_flight,
            max_in_flight,
        },
        shutdown.clone(),
        metrics.clone(),
    );
    tokio::spawn(worker.run());
    Rig {
        handle,
        batches,
        shutdown,
        metrics,
        _receivers: Vec::new(),
    }
}

impl Rig {
    pub(super) fn send(&mut self, key: &BatchKey, body: &'static str) {
        let (reply, rx) = test_reply(&self.metrics);
        self._receivers.push(rx);
        let message = Message {
            body: Bytes::from_static(body.as_bytes()),
            reply,
        };
        self.handle
            .submit(key.clone(), vec![message])
            .expect("worker runs");
    }
}

pub(super) fn key(conn: &str, token: Option<&'static str>) -> BatchKey {
    let mut h = HeaderMap::new();
    if let Some(t) = token {
        h.insert("authorization", HeaderValue::from_static(t));
    }
    BatchKey::new(conn, &h)
}

pub(super) fn bodies(batch: &Batch) -> Vec<&[u8]> {
    batch.messages.iter().map(|m| &m.body[..]).collect()
}

#[tokio::test(start_paused = true)]
async fn flushes_by_count() {
    let mut r = rig(3, 10_000, 1_000);
    let k = key("c", None);
    for body in ["{1}", "{2}", "{3}", "{4}"] {
        r.send(&k, body);
    }
    let b = r.batches.recv().await.unwrap();
    assert_eq!(b.reason, FlushReason::Count);
    assert_eq!(bodies(&b), vec![&b"{1}"[..], b"{2}", b"{3}"], "order kept");
    // the fourth waits for linger, which paused time reaches without real waiting
    let b = r.batches.recv().await.unwrap();
    assert_eq!(b.reason, FlushReason::Linger);
    assert_eq!(bodies(&b), vec![&b"{4}"[..]]);
}

#[tokio::test(start_paused = true)]
async fn flushes_by_bytes_before_passing_the_limit() {
    // envelope 15 + "{aaaa}"(6) + "," + "{bbbb}"(6) = 28; a third would be 35 > 30
    let mut r = rig(100, 30, 1_000);
    let k = key("c", None);
    r.send(&k, "{aaaa}");
    r.send(&k, "{bbbb}");
    r.send(&k, "{cccc}");
    let b = r.batches.recv().await.unwrap();
    assert_eq!(b.reason, FlushReason::Bytes);
    assert_eq!(b.messages.len(), 2);
    assert!(body_len(2, 12) <= 30);
}

#[tokio::test(start_paused = true)]
async fn linger_starts_with_the_first_message() {
    let mut r = rig(100, 10_000, 50);
    let k = key("c", None);
    let start = tokio::time::Instant::now();
    r.send(&k, "{1}");
    tokio::time::sleep(Duration::from_millis(30)).await;
    r.send(&k, "{2}");
    let b = r.batches.recv().await.unwrap();
    assert_eq!(b.reason, FlushReason::Linger);
    assert_eq!(b.messages.len(), 2);
    // paused clock: the flush happened at exactly first message + linger
    assert_eq!(start.elapsed(), Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn keys_never_share_a_batch() {
    let mut r = rig(2, 10_000, 1_000);
    let (a, b, c) = (
        key("c", Some("Bearer a")),
        key("c", Some("Bearer b")),
        key("d", Some("Bearer a")),
    );
    r.send(&a, "{a1}");
    r.send(&b, "{b1}");
    r.send(&c, "{c1}");
    r.send(&a, "{a2}");
    let full = r.batches.recv().await.unwrap();
    assert_eq!(*full.key, a);
    assert_eq!(bodies(&full), vec![&b"{a1}"[..], b"{a2}"]);
    let mut rest = [
        r.batches.recv().await.unwrap(),
        r.batches.recv().await.unwrap(),
    ];
    rest.sort_by_key(|b| b.key.connection_id().to_owned());
    assert_eq!((*rest[0].key == b, *rest[1].key == c), (true, true));
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_at_once_and_later_messages_go_straight_out() {
    let mut r = rig(100, 10_000, 3_600_000);
    let k = key("c", None);
    r.send(&k, "{1}");
    r.send(&key("other", None), "{x}");
    tokio::task::yield_now().await;
    r.shutdown.cancel();
    let mut got = vec![
        r.batches.recv().await.unwrap(),
        r.batches.recv().await.unwrap(),
    ];
    assert!(got.iter().all(|b| b.reason == FlushReason::Shutdown));
    r.send(&k, "{late}");
    got.push(r.batches.recv().await.unwrap());
    assert_eq!(bodies(&got[2]), vec![&b"{late}"[..]]);
    assert_eq!(got[2].reason, FlushReason::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn closing_input_flushes_partial_buffers() {
    let mut r = rig(100, 10_000, 3_600_000);
    r.send(&key("c", None), "{1}");
    let Rig {
        handle,
        mut batches,
        _receivers,
        ..
    } = r;
    drop(handle);
    let b = batches.recv().await.expect("partial buffer flushed");
    assert_eq!(b.reason, FlushReason::Shutdown);
    assert!(batches.recv().await.is_none(), "worker ended");
    drop(_receivers);
}
