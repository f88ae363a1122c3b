//! Delivery of spooled messages against a scripted upstream, on paused time:
//! no retry limit but their age, resends after an unanswered send (theirs
//! only), nothing resent once shutdown began, dead letters at the age limit.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::deliver::Courier;
use super::scripted::{messages, Scripted, Step};
use super::{Patience, RetryPolicy};
use crate::batcher::{BatchKey, Message};
use crate::metrics::Metrics;
use crate::reply::{Held, Reply, Spooled};
use crate::spool::{Record, Spool, SpoolOptions};

struct Rig {
    _dir: tempfile::TempDir,
    spool: Spool,
    metrics: Arc<Metrics>,
    bound: Arc<Semaphore>,
    work: TaskTracker,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(SpoolOptions::new(dir.path())).unwrap();
        Rig {
            _dir: dir,
            spool,
            metrics: Metrics::new(1 << 20),
            bound: Arc::new(Semaphore::new(1 << 20)),
            work: TaskTracker::new(),
        }
    }

    /// `n` spooled messages (`"s0"`, …) whose age limit is `max_age` from now.
    async fn spooled(&self, n: usize, max_age: Duration) -> Vec<Message> {
        let mut out = Vec::new();
        for i in 0..n {
            let body = Bytes::from(format!("\"s{i}\""));
            let record = Record {
                connection_id: "c".into(),
                credentials: Vec::new(),
                body: body.clone(),
                accepted_at: SystemTime::now(),
            };
            let id = self.spool.append(&record).await.unwrap();
            let now = Instant::now();
            let held = Held {
                accepted: now,
                deadline: now + max_age,
                bytes: body.len(),
                metrics: self.metrics.clone(),
                permit: self.bound.clone().try_acquire_many_owned(10).unwrap(),
                drain: self.work.token(),
            };
            let spooled = Spooled {
                id,
                spool: self.spool.clone(),
                record,
                quota: None,
            };
            out.push(Message {
                body,
                reply: Reply::spooled(held, spooled),
            });
        }
        out
    }

    async fn deliver(&self, upstream: &Scripted, batch: Vec<Message>, draining: CancellationToken) {
        let retry = RetryPolicy::new(2, Duration::from_millis(100), Duration::from_secs(1));
        let key = BatchKey::new("c", &Default::default());
        let patience = Patience::new(Duration::from_secs(10), draining);
        Courier {
            transport: upstream,
            retry: &retry,
            metrics: &self.metrics,
            key: &key,
            patience: &patience,
        }
        .deliver(batch)
        .await;
        // Acks and dead letters are written after the outcome.
        self.work.close();
        self.work.wait().await;
    }
}

fn whole(status: u16) -> Step {
    Step::Whole {
        status,
        retry_after: None,
    }
}

#[tokio::test(start_paused = true)]
async fn spooled_messages_outlast_max_retries() {
    let rig = Rig::new();
    let batch = rig.spooled(2, Duration::from_secs(3600)).await;
    let upstream = Scripted::new((0..8).map(|_| whole(503)));
    rig.deliver(&upstream, batch, CancellationToken::new())
        .await;
    assert_eq!(upstream.requests().len(), 9, "8 failures, then delivered");
    assert_eq!(rig.spool.stats().messages(), 0, "both acked");
    assert_eq!(rig.spool.stats().dead_letters(), 0);
}

#[tokio::test(start_paused = true)]
async fn only_spooled_messages_are_resent_after_an_unanswered_send() {
    let rig = Rig::new();
    let (mut batch, waiting) = messages(1, &rig.bound, &rig.metrics, Duration::from_secs(60));
    batch.extend(rig.spooled(1, Duration::from_secs(3600)).await);
    let upstream = Scripted::new([Step::Garbage]);
    rig.deliver(&upstream, batch, CancellationToken::new())
        .await;
    let outcome = waiting.into_iter().next().unwrap().await.unwrap();
    assert_eq!(outcome.status(), 502, "the waiting producer: not confirmed");
    assert_eq!(
        upstream.resent_after_settled(),
        vec![Bytes::from_static(b"\"s0\"")],
        "only the spooled message went again"
    );
    assert_eq!(rig.spool.stats().messages(), 0, "delivered the second time");
    assert!(rig
        .metrics
        .render()
        .contains("inletd_spool_resent_unconfirmed_total 1"));
}

#[tokio::test(start_paused = true)]
async fn once_draining_spooled_messages_stay_on_disk() {
    let rig = Rig::new();
    let batch = rig.spooled(3, Duration::from_secs(3600)).await;
    let upstream = Scripted::new((0..100).map(|_| whole(503)));
    let draining = CancellationToken::new();
    let stop = draining.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.cancel();
    });
    rig.deliver(&upstream, batch, draining).await;
    assert!(upstream.requests().len() < 100, "stopped resending");
    assert_eq!(rig.spool.stats().messages(), 3, "neither acked...");
    assert_eq!(rig.spool.stats().dead_letters(), 0, "...nor dead-lettered");
}

#[tokio::test(start_paused = true)]
async fn spooled_messages_past_their_age_are_dead_lettered() {
    let rig = Rig::new();
    let batch = rig.spooled(2, Duration::from_secs(30)).await;
    let upstream = Scripted::new((0..10_000).map(|_| whole(503)));
    rig.deliver(&upstream, batch, CancellationToken::new())
        .await;
    assert_eq!(rig.spool.stats().dead_letters(), 2);
    assert_eq!(
        rig.spool.stats().messages(),
        0,
        "acked after the dead letter"
    );
    assert!(upstream.requests().len() > 3, "more than max_retries");
}
