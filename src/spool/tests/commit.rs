//! Appends: round trip, group commit, the size bound and write/sync failures.

use std::pin::pin;
use std::sync::Arc;

use futures_util::FutureExt;

use super::*;
use crate::spool::SpoolError;

#[tokio::test]
async fn a_record_comes_back_after_reopen_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let observed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut opts = options(dir.path());
    let seen = Arc::clone(&observed);
    opts.on_sync = Some(Arc::new(move |_| {
        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }));
    let (spool, replay) = open(opts);
    assert_eq!(replay.count(), 0);
    let ids = append_all(&spool, 0..3).await;
    assert_eq!(
        observed.load(std::sync::atomic::Ordering::Relaxed),
        spool.stats().syncs()
    );
    assert_eq!(spool.stats().syncs(), 3, "one at a time: one sync each");
    spool.close().await;

    let (_spool, back) = replayed(options(dir.path()));
    let expected: Vec<(RecordId, Record)> = ids.into_iter().zip((0..3).map(record)).collect();
    assert_eq!(back, expected);
}

#[tokio::test]
async fn group_commit_answers_only_after_the_sync_covering_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(Faulty::default());
    // This hold lets one sync through at a time: the next waits to begin.
    let (entered, release) = faulty.hold_segment_syncs();
    let (spool, _) = open(faulty_options(dir.path(), &faulty));

    let mut a = pin!(spool.append(&record(0)));
    entered.recv_timeout(WAIT).expect("the sync for a began");
    // b arrives while a's sync runs: a's sync does not cover it.
    let mut b = pin!(spool.append(&record(1)));
    assert!(
        a.as_mut().now_or_never().is_none(),
        "a answered inside its sync"
    );
    assert!(b.as_mut().now_or_never().is_none());
    release.send(()).unwrap();
    a.await.expect("a is durable");

    entered.recv_timeout(WAIT).expect("the sync for b began");
    assert!(
        b.as_mut().now_or_never().is_none(),
        "b answered inside its sync"
    );
    release.send(()).unwrap();
    b.await.expect("b is durable");

    let stats = spool.stats();
    assert_eq!((stats.syncs(), stats.synced_messages()), (2, 2));
    assert_eq!(stats.messages(), 2);
}

#[tokio::test]
async fn full_fails_at_once_and_loses_nothing_spooled_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    let frame = record(0).encode(opts.max_record_bytes).unwrap().len() as u64;
    opts.max_spool_bytes = 3 * frame;
    let (spool, _) = open(opts.clone());
    let ids = append_all(&spool, 0..3).await;

    let refused = spool.append(&record(3)).now_or_never();
    assert!(
        matches!(refused, Some(Err(SpoolError::Full { max })) if max == 3 * frame),
        "got {refused:?}"
    );
    assert_eq!(spool.stats().bytes(), 3 * frame);
    spool.close().await;

    let (_spool, back) = replayed(opts);
    assert_eq!(back.into_iter().map(|(id, _)| id).collect::<Vec<_>>(), ids);
}

#[tokio::test]
async fn space_comes_back_when_a_delivered_segment_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    let frame = record(0).encode(opts.max_record_bytes).unwrap().len() as u64;
    opts.max_spool_bytes = 2 * frame;
    opts.segment_bytes = 1; // every group starts a new segment
    let (spool, _) = open(opts);
    let ids = append_all(&spool, 0..2).await;
    assert!(matches!(
        spool.append(&record(2)).await,
        Err(SpoolError::Full { .. })
    ));

    spool.ack(ids[0]).await.unwrap();
    assert_eq!(
        spool.stats().bytes(),
        frame,
        "the first segment was deleted"
    );
    spool.append(&record(2)).await.expect("room again");
}

async fn a_failure_answers_io_then_the_spool_recovers(op: Op) {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(Faulty::default());
    let (spool, _) = open(faulty_options(dir.path(), &faulty));
    let before = spool.append(&record(0)).await.unwrap();

    faulty.fail(FileKind::Segment, op);
    let failed = spool.append(&record(1)).await;
    assert!(matches!(failed, Err(SpoolError::Io(_))), "got {failed:?}");
    faulty.heal();
    let after = spool
        .append(&record(2))
        .await
        .expect("the next append works");
    assert_ne!(
        after.segment, before.segment,
        "a failed segment is not written again"
    );
    assert_eq!(spool.stats().messages(), 2);
    spool.close().await;

    // The record answered with an error is not replayed; the others are.
    let (spool, back) = replayed(faulty_options(dir.path(), &faulty));
    let bodies: Vec<Bytes> = back.into_iter().map(|(_, r)| r.body).collect();
    assert_eq!(bodies, vec![record(0).body, record(2).body]);
    assert_eq!(
        spool.stats().corrupt_records(),
        0,
        "the failed write was cut off"
    );
}

#[tokio::test]
async fn a_write_error_answers_io_then_the_spool_recovers() {
    a_failure_answers_io_then_the_spool_recovers(Op::Write).await;
}

#[tokio::test]
async fn a_sync_error_answers_io_then_the_spool_recovers() {
    a_failure_answers_io_then_the_spool_recovers(Op::Sync).await;
}

#[tokio::test]
async fn a_closed_spool_refuses_and_keeps_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(options(dir.path()));
    append_all(&spool, 0..2).await;
    spool.close().await;
    assert!(matches!(
        spool.append(&record(9)).await,
        Err(SpoolError::Closed)
    ));
    let (_spool, back) = replayed(options(dir.path()));
    assert_eq!(back.len(), 2);
}

#[test]
fn debug_never_prints_credential_values() {
    let printed = format!("{:?}", record(1));
    assert!(!printed.contains("s3cr3t"), "{printed}");
    assert!(printed.contains("authorization"), "{printed}");
}

#[test]
fn a_record_too_large_is_refused_before_any_io() {
    let mut r = record(0);
    r.body = Bytes::from(vec![b'x'; 100]);
    assert!(matches!(
        r.encode(64),
        Err(crate::spool::EncodeError::TooLarge { max: 64, .. })
    ));
}

/// Appends and acks of one group: the segment and the ledger are synced side
/// by side; each side's failure stays its own.
async fn appends_and_acks_in_one_group(ledger_fails: bool) {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let faulty = Arc::new(Faulty::default());
    let mut opts = faulty_options(dir.path(), &faulty);
    opts.segment_bytes = 1; // each group starts a new segment
    let (spool, _) = open(opts.clone());
    let ids = append_all(&spool, 0..2).await;
    let first = segment_files(&spool_dir)[0].clone();

    let (entered, release) = faulty.hold_segment_syncs();
    if ledger_fails {
        faulty.fail(FileKind::Ledger, Op::Write);
    }
    let blocker = spool.append(&record(2));
    entered
        .recv_timeout(WAIT)
        .expect("the blocker's sync began");
    let mut appended = pin!(spool.append(&record(3)));
    let acked = spool.ack(ids[0]);
    release.send(()).unwrap();
    blocker.await.unwrap();
    entered
        .recv_timeout(WAIT)
        .expect("the sync of the next group began");
    assert!(appended.as_mut().now_or_never().is_none());
    release.send(()).unwrap();
    appended
        .await
        .expect("an append does not share an ack's failure");
    let acked = acked.await;
    assert_eq!(acked.is_err(), ledger_fails, "{acked:?}");
    assert_eq!(
        first.exists(),
        ledger_fails,
        "deleted exactly when its ack is durable"
    );

    faulty.heal();
    spool.ack(ids[0]).await.unwrap();
    assert!(!first.exists());
    spool.close().await;
    let (_spool, back) = replayed(opts);
    let bodies: Vec<Bytes> = back.into_iter().map(|(_, r)| r.body).collect();
    assert_eq!(bodies, (1..4).map(|n| record(n).body).collect::<Vec<_>>());
}

#[tokio::test]
async fn appends_and_acks_of_one_group_both_land() {
    appends_and_acks_in_one_group(false).await;
}

#[tokio::test]
async fn an_ack_failure_does_not_fail_the_appends_of_its_group() {
    appends_and_acks_in_one_group(true).await;
}

#[test]
fn handles_and_futures_can_move_between_tasks() {
    fn send_static<T: Send + 'static>(_: &T) {}
    fn shared<T: Send + Sync + Clone + 'static>() {}
    shared::<Spool>();
    let dir = tempfile::tempdir().unwrap();
    let (spool, replay) = open(options(dir.path()));
    send_static(&replay);
    let id = RecordId {
        segment: 1,
        offset: 0,
    };
    let (append, ack, letter) = (
        spool.append(&record(0)),
        spool.ack(id),
        spool.dead_letter(&record(0), 400, "x"),
    );
    send_static(&append);
    send_static(&ack);
    send_static(&letter);
}
