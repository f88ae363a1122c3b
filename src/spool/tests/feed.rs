//! The feed (tail reader): what waits on disk comes back in order, only once
//! synced, never an acked record, across segment rolls and deletions; and
//! the overflow hand-off (appends wait on disk until the feed caught up).

use std::pin::pin;
use std::sync::Arc;

use futures_util::FutureExt;

use super::*;
use crate::spool::{Appended, Feed};

/// Appends record `n`, the caller holding memory or not, and returns the answer.
async fn put(spool: &Spool, n: u64, memory: bool) -> Appended {
    spool
        .append_for(&record(n), memory)
        .await
        .expect("appended")
}

/// The ids the feed hands out now (until it is caught up).
fn drain(feed: &mut Feed) -> Vec<RecordId> {
    feed.map(|(id, _)| id).collect()
}

#[tokio::test]
async fn appends_go_straight_to_delivery_until_memory_is_short() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, mut feed) = open(options(dir.path()));
    assert!(put(&spool, 0, true).await.deliver_now);
    // Handed over directly: nothing for the feed (and it says so at once).
    assert!(feed.next_chunk(usize::MAX).is_empty());
    let first_left = put(&spool, 1, false).await;
    assert!(!first_left.deliver_now);
    let later = put(&spool, 2, true).await;
    assert!(
        !later.deliver_now,
        "once one waits on disk, later ones wait behind it (order)"
    );
    assert_eq!(spool.stats().waiting_on_disk(), 2);

    assert_eq!(drain(&mut feed), vec![first_left.id, later.id]);
    assert_eq!(spool.stats().waiting_on_disk(), 0);
    // Caught up: the overflow is over.
    assert!(put(&spool, 3, true).await.deliver_now);
    let again = put(&spool, 4, false).await;
    assert_eq!(
        drain(&mut feed),
        vec![again.id],
        "records handed over directly in between are not read again"
    );
}

#[tokio::test]
async fn the_feed_reads_only_synced_records() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(Faulty::default());
    let (spool, mut feed) = open(faulty_options(dir.path(), &faulty));
    let first = put(&spool, 0, false).await;
    let (entered, release) = faulty.hold_segment_syncs();
    let mut second = pin!(spool.append_for(&record(1), false));
    entered.recv_timeout(WAIT).expect("the second sync began");
    // Its bytes are in the file, not yet synced: the feed must not see them.
    let got: Vec<(RecordId, Record)> = feed.next_chunk(usize::MAX);
    assert_eq!(got, vec![(first.id, record(0))]);
    assert!(feed.next_chunk(usize::MAX).is_empty());
    assert!(second.as_mut().now_or_never().is_none());
    release.send(()).unwrap();
    let second = second.await.expect("durable");
    assert!(
        !second.deliver_now,
        "the overflow lasts until the feed read it"
    );
    let got = feed.next_chunk(usize::MAX);
    assert_eq!(got, vec![(second.id, record(1))]);
}

#[tokio::test]
async fn the_feed_continues_across_segment_rolls_and_deleted_segments() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let mut opts = options(dir.path());
    opts.segment_bytes = 1; // each append starts a new segment
    let (spool, mut feed) = open(opts);
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(put(&spool, n, false).await.id);
    }
    assert_eq!(segment_files(&spool_dir).len(), 3);
    let (id, got) = feed.next().expect("the first record");
    assert_eq!((id, got), (ids[0], record(0)));
    // The cursor's segment is acked whole and deleted under the feed.
    spool.ack(ids[0]).await.unwrap();
    assert_eq!(segment_files(&spool_dir).len(), 2);
    let more = put(&spool, 3, true).await;
    assert!(!more.deliver_now);
    ids.push(more.id);
    assert_eq!(drain(&mut feed), ids[1..].to_vec());
    assert!(
        ids.windows(2).all(|w| w[0].segment < w[1].segment),
        "one segment each: {ids:?}"
    );
}

#[tokio::test]
async fn at_open_the_feed_skips_acked_records_and_new_appends_wait_behind_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.segment_bytes = 300; // a few records a segment
    let (spool, _) = open(opts.clone());
    let ids = append_all(&spool, 0..8).await;
    for acked in [1, 3, 4] {
        spool.ack(ids[acked]).await.unwrap();
    }
    spool.close().await;

    let (spool, mut feed) = open(opts);
    assert_eq!(spool.stats().waiting_on_disk(), 5);
    let first = feed.next().expect("a backlog");
    assert_eq!(first, (ids[0], record(0)));
    // A producer's message during the backlog: on disk, behind it.
    let new = put(&spool, 8, true).await;
    assert!(!new.deliver_now);
    let rest: Vec<(RecordId, Record)> = feed.by_ref().collect();
    let expected: Vec<(RecordId, Record)> = [2, 5, 6, 7]
        .into_iter()
        .map(|n| (ids[n], record(n as u64)))
        .chain([(new.id, record(8))])
        .collect();
    assert_eq!(rest, expected);
    assert_eq!(spool.stats().waiting_on_disk(), 0);
    assert!(
        put(&spool, 9, true).await.deliver_now,
        "caught up: direct again"
    );
}

#[tokio::test]
async fn a_damaged_record_waiting_on_disk_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let (spool, mut feed) = open(options(dir.path()));
    let ids: Vec<RecordId> = [
        put(&spool, 0, false).await.id,
        put(&spool, 1, false).await.id,
        put(&spool, 2, false).await.id,
    ]
    .to_vec();
    // Flip a byte inside the second record's payload on disk.
    let path = &segment_files(&spool_dir)[0];
    let mut bytes = std::fs::read(path).unwrap();
    let at = usize::try_from(ids[1].offset).unwrap() + 20;
    bytes[at] ^= 0xff;
    std::fs::write(path, &bytes).unwrap();

    assert_eq!(drain(&mut feed), vec![ids[0], ids[2]]);
    assert_eq!(spool.stats().corrupt_records(), 1);
}

#[tokio::test]
async fn the_signal_wakes_the_feeder_when_a_record_is_left_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, mut feed) = open(options(dir.path()));
    assert!(feed.next_chunk(usize::MAX).is_empty());
    let signal = feed.signal();
    let mut changed = pin!(signal.changed());
    assert!(changed.as_mut().now_or_never().is_none());
    put(&spool, 0, false).await;
    tokio::time::timeout(WAIT, changed)
        .await
        .expect("woken by the record left on disk");
    assert_eq!(feed.next_chunk(usize::MAX).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_is_appended_back_to_back_and_never_split_between_the_two_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, mut feed) = open(options(dir.path()));
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            let mut requests = Vec::new();
            for request in 0..4 {
                let records: Vec<Record> = (0..5)
                    .map(|n| record(task * 100 + request * 10 + n))
                    .collect();
                let appends = spool.append_all(&records, task % 2 == 0);
                let answers = futures_util::future::join_all(appends).await;
                let answers: Vec<Appended> = answers.into_iter().map(|a| a.unwrap()).collect();
                requests.push(answers);
            }
            requests
        }));
    }
    let mut requests = Vec::new();
    for task in tasks {
        requests.extend(task.await.unwrap());
    }
    let mut all: Vec<RecordId> = requests.iter().flatten().map(|a| a.id).collect();
    all.sort_unstable();
    for answers in &requests {
        let now = answers[0].deliver_now;
        assert!(answers.iter().all(|a| a.deliver_now == now), "{answers:?}");
        let at = all.binary_search(&answers[0].id).unwrap();
        let ids: Vec<RecordId> = answers.iter().map(|a| a.id).collect();
        assert_eq!(
            ids,
            all[at..at + 5],
            "nothing of another request in between"
        );
    }
    let left: Vec<RecordId> = requests
        .iter()
        .flatten()
        .filter(|a| !a.deliver_now)
        .map(|a| a.id)
        .collect();
    let mut left_sorted = left.clone();
    left_sorted.sort_unstable();
    assert_eq!(
        drain(&mut feed),
        left_sorted,
        "the feed reads exactly those left on disk"
    );
}

#[tokio::test]
async fn a_segment_cut_short_under_the_feed_is_skipped_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let (spool, mut feed) = open(options(dir.path()));
    let first = put(&spool, 0, false).await;
    let second = put(&spool, 1, false).await;
    // Someone cuts the active segment below what was synced.
    let path = &segment_files(&spool_dir)[0];
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(second.id.offset).unwrap();
    assert_eq!(drain(&mut feed), vec![first.id]);
    assert_eq!(spool.stats().corrupt_records(), 1);
    assert!(
        put(&spool, 2, true).await.deliver_now,
        "caught up past the damage"
    );
}
