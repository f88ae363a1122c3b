//! Overlapping syncs: each segment sync is held on its own
//! ([`Faulty::hold_each_segment_sync`]) and released or failed in the
//! order a test chooses.

use std::pin::pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;

use super::*;
use crate::spool::syncer::SYNC_DEPTH;
use crate::spool::SpoolError;

fn frame_len() -> u64 {
    record(0)
        .encode(options(Path::new("/")).max_record_bytes)
        .unwrap()
        .len() as u64
}

fn held(syncs: &mpsc::Receiver<Held>, what: &str) -> Held {
    syncs
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("{what}"))
}

/// Waits until the segment files hold `bytes` in all (the writer wrote them).
fn wait_for_written(spool_dir: &Path, bytes: u64) {
    let began = Instant::now();
    loop {
        let on_disk: u64 = segment_files(spool_dir)
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        if on_disk == bytes {
            return;
        }
        assert!(began.elapsed() < WAIT, "{on_disk} of {bytes} bytes written");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test]
async fn with_two_syncs_overlapping_each_answer_waits_for_its_covering_sync() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(Faulty::default());
    let syncs = faulty.hold_each_segment_sync();
    let (spool, _) = open(faulty_options(dir.path(), &faulty));

    let mut a = pin!(spool.append(&record(0)));
    let sync_a = held(&syncs, "a's sync began");
    let mut b = pin!(spool.append(&record(1)));
    let sync_b = held(&syncs, "b's sync began while a's still runs");
    assert!(
        a.as_mut().now_or_never().is_none(),
        "a answered in its sync"
    );
    assert!(
        b.as_mut().now_or_never().is_none(),
        "b answered in its sync"
    );

    sync_a.release.send(false).unwrap();
    let a = a.await.expect("a is durable");
    assert!(
        b.as_mut().now_or_never().is_none(),
        "b answered by a sync that began before it was written"
    );
    sync_b.release.send(false).unwrap();
    let b = b.await.expect("b is durable");
    assert_eq!(a.segment, b.segment);
    assert!(a.offset < b.offset);
    let stats = spool.stats();
    assert_eq!((stats.syncs(), stats.synced_messages()), (2, 2));
}

#[tokio::test]
async fn a_sync_that_returns_first_still_answers_in_write_order() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(Faulty::default());
    let syncs = faulty.hold_each_segment_sync();
    let mut opts = faulty_options(dir.path(), &faulty);
    opts.segment_bytes = 1; // each group its own segment: b's sync cannot cover a
    let (spool, _) = open(opts.clone());

    let mut a = pin!(spool.append(&record(0)));
    let sync_a = held(&syncs, "a's sync began");
    let mut b = pin!(spool.append(&record(1)));
    let sync_b = held(&syncs, "b's sync began");
    assert_eq!(
        segment_files(&opts.dir).len(),
        2,
        "a's segment, sealed by the roll with nothing live yet, is kept while its sync runs"
    );

    sync_b.release.send(false).unwrap();
    // b's sync returns first; b must still wait for a (file order).
    let began = Instant::now();
    while spool.stats().syncs() < 1 {
        assert!(began.elapsed() < WAIT, "b's sync never returned");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(b.as_mut().now_or_never().is_none(), "b answered before a");
    assert!(a.as_mut().now_or_never().is_none());
    sync_a.release.send(false).unwrap();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(a < b, "{a:?} {b:?}");
    assert_eq!(spool.stats().synced_messages(), 2);
    spool.close().await;
    let (_spool, back) = replayed(opts);
    assert_eq!(back.len(), 2);
}

/// While every sync thread is busy nothing is written: a sync started now
/// could not cover it anyway. What arrives meanwhile is written as one group
/// (one `write`) once a sync returns, and shares the next sync.
#[tokio::test]
async fn appends_queued_while_every_sync_thread_is_busy_share_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let faulty = Arc::new(Faulty::default());
    let syncs = faulty.hold_each_segment_sync();
    let (spool, _) = open(faulty_options(dir.path(), &faulty));
    let depth = SYNC_DEPTH as u64;

    let mut busy = Vec::new();
    let mut holds = Vec::new();
    for n in 0..depth {
        busy.push(spool.append(&record(n)));
        holds.push(held(&syncs, "a sync began"));
    }
    wait_for_written(&spool_dir, depth * frame_len());
    let x = spool.append(&record(depth));
    let y = spool.append(&record(depth + 1));
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        syncs.try_recv().is_err(),
        "no sync beyond the depth started"
    );
    wait_for_written(&spool_dir, depth * frame_len());
    for hold in holds {
        hold.release.send(false).unwrap();
    }
    for append in busy {
        append.await.unwrap();
    }
    let shared = held(&syncs, "the sync of x and y began");
    let (mut x, mut y) = (pin!(x), pin!(y));
    assert!(x.as_mut().now_or_never().is_none());
    assert!(y.as_mut().now_or_never().is_none());
    shared.release.send(false).unwrap();
    x.await.unwrap();
    y.await.unwrap();
    // The shared sync covers the busy groups too, so x and y may be answered
    // before the writer has seen the busy syncs return: count once it has.
    spool.close().await;
    assert!(syncs.try_recv().is_err(), "x and y needed no other sync");
    let stats = spool.stats();
    assert_eq!(
        (stats.syncs(), stats.synced_messages()),
        (depth + 1, depth + 2),
        "x and y shared one sync"
    );
}

#[tokio::test]
async fn a_failed_sync_fails_every_undurable_group_of_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let faulty = Arc::new(Faulty::default());
    let syncs = faulty.hold_each_segment_sync();
    let opts = faulty_options(dir.path(), &faulty);
    let (spool, _) = open(opts.clone());
    let frame = frame_len();

    let a = spool.append(&record(0));
    let sync_a = held(&syncs, "a's sync began");
    let b = spool.append(&record(1));
    let sync_b = held(&syncs, "b's sync began");
    let first = segment_files(&spool_dir)[0].clone();

    sync_a.release.send(true).unwrap();
    assert!(matches!(a.await, Err(SpoolError::Io(_))));
    // b's own sync is still running; it fails all the same.
    assert!(matches!(b.await, Err(SpoolError::Io(_))));
    assert_eq!(
        std::fs::metadata(&first).unwrap().len(),
        2 * frame,
        "not cut while a sync of it runs"
    );
    sync_b.release.send(false).unwrap();
    // Once b's sync returned (Ok, but too late), the segment is cut back
    // to its durable end (nothing): it is empty and sealed, so deleted.
    let began = Instant::now();
    while std::fs::metadata(&first).is_ok_and(|m| m.len() > 0) {
        assert!(began.elapsed() < WAIT, "the failed segment was never cut");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let c = spool.append(&record(2));
    held(&syncs, "c's sync began").release.send(false).unwrap();
    let c = c.await.expect("the next append works");
    assert_ne!(
        segment_files(&spool_dir).first(),
        Some(&first),
        "c went to a new segment"
    );
    let stats = spool.stats();
    assert_eq!((stats.messages(), stats.bytes()), (1, frame));
    spool.close().await;

    let (_spool, back) = replayed(opts);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].0, c);
    assert_eq!(back[0].1.body, record(2).body);
}

#[tokio::test]
async fn close_waits_for_the_syncs_in_flight_and_answers_them() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(Faulty::default());
    let syncs = faulty.hold_each_segment_sync();
    let opts = faulty_options(dir.path(), &faulty);
    let (spool, _) = open(opts.clone());

    let a = spool.append(&record(0));
    let sync_a = held(&syncs, "a's sync began");
    let mut closed = pin!(spool.close());
    assert!(closed.as_mut().now_or_never().is_none(), "closed mid-sync");
    sync_a.release.send(false).unwrap();
    closed.await;
    let a = a.await.expect("a is answered before the close ends");
    let (_spool, back) = replayed(opts);
    assert_eq!(back.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [a]);
}

#[tokio::test]
async fn an_ack_waiting_for_the_ledger_sync_does_not_hold_up_appends() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(Faulty::default());
    let opts = faulty_options(dir.path(), &faulty);
    let (spool, _) = open(opts.clone());
    let first = spool.append(&record(0)).await.unwrap();

    let ledger_syncs = faulty.hold_each_ledger_sync();
    let mut acked = pin!(spool.ack(first));
    let ledger_sync = held(&ledger_syncs, "the ledger sync began");
    spool
        .append(&record(1))
        .await
        .expect("an append is answered while the ledger sync runs");
    assert!(
        acked.as_mut().now_or_never().is_none(),
        "the ack answered inside its sync"
    );
    assert_eq!(spool.stats().messages(), 2, "not acked until durable");
    ledger_sync.release.send(false).unwrap();
    acked.await.expect("the ack is durable");
    assert_eq!(spool.stats().messages(), 1);
    spool.close().await;
    let (_spool, back) = replayed(options(dir.path()));
    let bodies: Vec<Bytes> = back.into_iter().map(|(_, r)| r.body).collect();
    assert_eq!(bodies, vec![record(1).body]);
}

#[tokio::test]
async fn a_failed_ledger_sync_fails_its_acks_and_the_next_ack_lands() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(Faulty::default());
    let mut opts = faulty_options(dir.path(), &faulty);
    opts.segment_bytes = 1; // each append its own segment, deleted once acked
    let spool_dir = opts.dir.clone();
    let (spool, _) = open(opts.clone());
    let ids = append_all(&spool, 0..3).await;
    let first = segment_files(&spool_dir)[0].clone();

    let ledger_syncs = faulty.hold_each_ledger_sync();
    let acked = spool.ack(ids[0]);
    held(&ledger_syncs, "the ledger sync began")
        .release
        .send(true)
        .unwrap();
    assert!(matches!(acked.await, Err(SpoolError::Io(_))));
    assert!(first.exists(), "kept: its ack is not durable");
    assert_eq!(spool.stats().messages(), 3);

    // The ledger is rewritten (synced on the writer thread), then the ack
    // written to it is synced on the pool.
    let again = spool.ack(ids[0]);
    for what in ["the rewrite's sync began", "the ack's sync began"] {
        held(&ledger_syncs, what).release.send(false).unwrap();
    }
    again.await.expect("the next ack lands");
    assert!(!first.exists(), "deleted once its ack is durable");
    assert_eq!(spool.stats().messages(), 2);
    spool.close().await;
    let (_spool, back) = replayed(options(dir.path()));
    let replayed_ids: Vec<RecordId> = back.into_iter().map(|(id, _)| id).collect();
    assert_eq!(replayed_ids, ids[1..]);
}
