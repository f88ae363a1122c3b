//! [`Spool::ack_soon`]: acks made together reach the ledger as one group,
//! each caller's `keep` lives until its ack is durable, and a close finishes
//! the acks queued before it.

use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::spool::syncer::SYNC_DEPTH;

fn held(syncs: &mpsc::Receiver<Held>, what: &str) -> Held {
    syncs
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("{what}"))
}

/// Waits until only `keep` itself holds it (every copy given away was dropped).
async fn wait_dropped(keep: &Arc<()>) {
    let began = Instant::now();
    while Arc::strong_count(keep) > 1 {
        assert!(began.elapsed() < WAIT, "a keep was never dropped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn acks_queued_together_are_one_ledger_write_and_keep_until_durable() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(Faulty::default());
    let opts = faulty_options(dir.path(), &faulty);
    let (spool, _) = open(opts.clone());
    let ids = append_all(&spool, 0..10).await;

    // Every sync thread busy: the writer takes no command until one returns,
    // so all ten acks are queued by then.
    let segment_syncs = faulty.hold_each_segment_sync();
    let busy: Vec<_> = (10..10 + SYNC_DEPTH as u64)
        .map(|n| {
            let append = spool.append(&record(n));
            (append, held(&segment_syncs, "a segment sync began"))
        })
        .collect();
    let ledger_syncs = faulty.hold_each_ledger_sync();
    let keep = Arc::new(());
    for id in &ids {
        spool.ack_soon(*id, Box::new(Arc::clone(&keep)));
    }
    assert_eq!(Arc::strong_count(&keep), 11);

    let mut appends = Vec::new();
    for (append, hold) in busy {
        hold.release.send(false).unwrap();
        appends.push(append);
    }
    for append in appends {
        append.await.expect("durable");
    }
    let ledger_sync = held(&ledger_syncs, "the acks' ledger sync began");
    assert_eq!(
        Arc::strong_count(&keep),
        11,
        "kept until the ack is durable"
    );
    assert_eq!(spool.stats().messages(), 13, "not acked until durable");
    ledger_sync.release.send(false).unwrap();
    wait_dropped(&keep).await;
    assert_eq!(spool.stats().messages(), 3);
    assert!(
        ledger_syncs.try_recv().is_err(),
        "the ten acks were one group with one ledger sync"
    );
    assert_eq!(
        std::fs::metadata(opts.dir.join(crate::spool::ledger::FILE_NAME))
            .unwrap()
            .len(),
        10 * 20,
        "one entry per ack"
    );
    spool.close().await;
    let (_spool, back) = replayed(options(dir.path()));
    assert_eq!(back.len(), SYNC_DEPTH, "only the unacked appends come back");
}

#[tokio::test]
async fn close_finishes_the_acks_queued_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(options(dir.path()));
    let ids = append_all(&spool, 0..5).await;
    let keep = Arc::new(());
    for id in &ids[..4] {
        spool.ack_soon(*id, Box::new(Arc::clone(&keep)));
    }
    spool.close().await;
    assert_eq!(Arc::strong_count(&keep), 1, "settled by the close");
    assert_eq!(spool.stats().messages(), 1);
    let (_spool, back) = replayed(options(dir.path()));
    let back: Vec<RecordId> = back.into_iter().map(|(id, _)| id).collect();
    assert_eq!(back, [ids[4]]);
}

#[tokio::test]
async fn a_failed_ack_write_drops_its_keeps_and_the_records_stay() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(Faulty::default());
    let (spool, _) = open(faulty_options(dir.path(), &faulty));
    let ids = append_all(&spool, 0..3).await;
    faulty.fail(FileKind::Ledger, Op::Write);
    let keep = Arc::new(());
    // One ack: the injected failure tears its only entry (half of it lands).
    spool.ack_soon(ids[0], Box::new(Arc::clone(&keep)));
    wait_dropped(&keep).await;
    assert_eq!(spool.stats().messages(), 3, "not acked");
    faulty.heal();
    spool.close().await;
    let (_spool, back) = replayed(options(dir.path()));
    assert_eq!(back.len(), 3, "delivered again after a restart, not lost");
}
