//! The fire-and-forget sinks' invariants: the share of the bound and the
//! drain token go exactly when the message is settled; a spooled reply acks
//! when delivered, dead-letters then acks when failed, and touches nothing on
//! disk when dropped.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::*;
use crate::spool::{DeadLetterReader, SpoolOptions};

struct Rig {
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    work: TaskTracker,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            metrics: Metrics::new(1 << 20),
            permits: Arc::new(Semaphore::new(100)),
            work: TaskTracker::new(),
        }
    }

    fn held(&self) -> Held {
        let now = Instant::now();
        Held {
            accepted: now,
            deadline: now + Duration::from_secs(60),
            bytes: 2,
            metrics: self.metrics.clone(),
            permit: self
                .permits
                .clone()
                .try_acquire_many_owned(40)
                .expect("permits"),
            drain: self.work.token(),
        }
    }

    /// Waits until every reply let go of its drain token (settling included).
    async fn settled(&self) {
        self.work.close();
        self.work.wait().await;
    }
}

async fn spool_with_one(dir: &std::path::Path) -> (Spool, Spooled) {
    let (spool, _replay) = Spool::open(SpoolOptions::new(dir)).expect("spool opens");
    let record = Record {
        connection_id: "conn".into(),
        credentials: vec![(
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderValue::from_static("Bearer secret"),
        )],
        body: Bytes::from_static(br#"{"m":1}"#),
        accepted_at: SystemTime::now(),
    };
    let id = spool.append(&record).await.expect("appended");
    let record = Record {
        credentials: Vec::new(),
        ..record
    };
    let spooled = Spooled {
        id,
        spool: spool.clone(),
        record,
        quota: None,
    };
    (spool, spooled)
}

fn dead_letters(dir: &std::path::Path) -> usize {
    match DeadLetterReader::open(dir) {
        Ok(Some(reader)) => reader.count(),
        _ => 0,
    }
}

#[tokio::test]
async fn a_delivered_spooled_message_is_acked_and_releases_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, spooled) = spool_with_one(dir.path()).await;
    let rig = Rig::new();
    let reply = Reply::spooled(rig.held(), spooled);
    assert!(reply.is_spooled());
    assert_eq!(rig.permits.available_permits(), 60);
    reply.send(Outcome::Delivered(Delivery {
        xaction_id: "x".into(),
        receipt: Default::default(),
    }));
    assert_eq!(rig.permits.available_permits(), 100);
    rig.settled().await;
    assert_eq!(spool.stats().messages(), 0, "acked");
    assert_eq!(dead_letters(dir.path()), 0);
    let text = rig.metrics.render();
    assert!(
        text.contains(r#"inletd_async_results_total{durable="true",result="delivered"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_failed_spooled_message_is_dead_lettered_then_acked() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, spooled) = spool_with_one(dir.path()).await;
    let rig = Rig::new();
    Reply::spooled(rig.held(), spooled).send(Outcome::failed(400, "bad field"));
    rig.settled().await;
    assert_eq!(spool.stats().messages(), 0, "acked after the dead letter");
    assert_eq!(spool.stats().dead_letters(), 1);
    let text = std::fs::read_to_string(dir.path().join("dead-letter.jsonl")).unwrap();
    assert!(
        text.contains("bad field") && text.contains("conn"),
        "{text}"
    );
    assert!(!text.contains("secret"), "never credentials: {text}");
}

#[tokio::test]
async fn a_dropped_spooled_reply_neither_acks_nor_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, spooled) = spool_with_one(dir.path()).await;
    let rig = Rig::new();
    drop(Reply::spooled(rig.held(), spooled));
    rig.settled().await;
    assert_eq!(
        rig.permits.available_permits(),
        100,
        "its share is released"
    );
    spool.close().await;
    assert_eq!(spool.stats().messages(), 1, "still spooled");
    assert_eq!(dead_letters(dir.path()), 0);
    let text = rig.metrics.render();
    assert!(text.contains("inletd_buffered_messages 0"), "{text}");
    assert!(
        !text.contains(r#"inletd_message_results_total{status="503"} 1"#),
        "{text}"
    );
    // And the next open replays it.
    let (_again, mut replay) = Spool::open(SpoolOptions::new(dir.path())).unwrap();
    assert_eq!(replay.next_chunk(1 << 20).len(), 1);
}

#[tokio::test]
async fn an_in_memory_fire_and_forget_outcome_is_counted() {
    let rig = Rig::new();
    let delivered = Reply::in_memory(rig.held(), "c".into());
    assert!(!delivered.is_spooled());
    delivered.send(Outcome::Delivered(Delivery {
        xaction_id: "x".into(),
        receipt: Default::default(),
    }));
    Reply::in_memory(rig.held(), "c".into()).send(Outcome::failed(400, "bad"));
    // Dropped unanswered (a drain abort): lost, and counted as such.
    drop(Reply::in_memory(rig.held(), "c".into()));
    rig.settled().await;
    assert_eq!(rig.permits.available_permits(), 100);
    let text = rig.metrics.render();
    for line in [
        r#"inletd_async_results_total{durable="false",result="delivered"} 1"#,
        r#"inletd_async_results_total{durable="false",result="failed"} 2"#,
        r#"inletd_message_results_total{status="400"} 1"#,
        r#"inletd_message_results_total{status="503"} 1"#,
        "inletd_buffered_messages 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
}
