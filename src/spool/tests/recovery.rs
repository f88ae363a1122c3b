//! Opening: damage, acks, deletion order, missing files, modes and the one
//! case where open must fail (an unusable directory).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::*;
use crate::spool::record::{self, HEADER_LEN};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_torn_tail_and_a_flipped_byte_cost_only_the_damaged_records() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(options(dir.path()));
    let ids = append_all(&spool, 0..10).await;
    spool.close().await;

    let files = segment_files(&dir.path().join("spool"));
    assert_eq!(files.len(), 1);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    // A flipped byte in the body of record 4, and half a frame at the end
    // (a crash in mid-write).
    bytes[ids[4].offset as usize + HEADER_LEN + 20] ^= 0x40;
    let torn = bytes[..HEADER_LEN + 7].to_vec();
    bytes.extend_from_slice(&torn);
    std::fs::write(&files[0], &bytes).unwrap();

    let (spool, back) = replayed(options(dir.path()));
    let expected: Vec<RecordId> = ids.iter().copied().filter(|id| *id != ids[4]).collect();
    assert_eq!(back.iter().map(|(id, _)| *id).collect::<Vec<_>>(), expected);
    assert_eq!(back[4].1, record(5));
    assert_eq!(spool.stats().corrupt_records(), 2);
    assert_eq!(spool.stats().messages(), 9);
    spool
        .append(&record(10))
        .await
        .expect("appends go on after damage");
}

#[tokio::test]
async fn a_damaged_length_is_resynced_past() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(options(dir.path()));
    let ids = append_all(&spool, 0..5).await;
    spool.close().await;
    let files = segment_files(&dir.path().join("spool"));
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[ids[1].offset as usize + 5] = 0x7f; // length of record 1: now impossible
    std::fs::write(&files[0], &bytes).unwrap();

    let (spool, back) = replayed(options(dir.path()));
    let got: Vec<RecordId> = back.iter().map(|(id, _)| *id).collect();
    assert_eq!(got, vec![ids[0], ids[2], ids[3], ids[4]]);
    assert_eq!(spool.stats().corrupt_records(), 1);
}

#[tokio::test]
async fn garbage_files_never_stop_open() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    std::fs::create_dir(&spool_dir).unwrap();
    std::fs::write(
        spool_dir.join("segment-00000000000000000007.log"),
        b"not a frame at all",
    )
    .unwrap();
    std::fs::write(spool_dir.join("acks.log"), b"short").unwrap();

    let (spool, back) = replayed(options(dir.path()));
    assert!(back.is_empty());
    assert_eq!(
        spool.stats().corrupt_records(),
        2,
        "one damaged segment stretch, one torn ack"
    );
    assert!(
        segment_files(&spool_dir).is_empty(),
        "a segment with nothing to deliver is removed"
    );
    let id = spool.append(&record(0)).await.unwrap();
    assert_eq!(
        id.segment, 8,
        "a new segment never reuses a number seen at open"
    );
}

#[tokio::test]
async fn acked_records_are_not_replayed_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(options(dir.path()));
    let ids = append_all(&spool, 0..5).await;
    spool.ack(ids[1]).await.unwrap();
    spool.ack(ids[3]).await.unwrap();
    spool.ack(ids[3]).await.expect("acking twice is harmless");
    assert_eq!(spool.stats().messages(), 3);
    spool.close().await;

    let (spool, back) = replayed(options(dir.path()));
    let got: Vec<RecordId> = back.iter().map(|(id, _)| *id).collect();
    assert_eq!(got, vec![ids[0], ids[2], ids[4]]);
    assert_eq!(spool.stats().messages(), 3);
}

#[tokio::test]
async fn a_segment_is_deleted_only_after_its_acks_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let faulty = Arc::new(Faulty::default());
    let mut opts = faulty_options(dir.path(), &faulty);
    opts.segment_bytes = 1; // each append starts a new segment
    let (spool, _) = open(opts.clone());
    let ids = append_all(&spool, 0..2).await;
    let first = segment_files(&spool_dir)[0].clone();

    faulty.fail(FileKind::Ledger, Op::Write);
    assert!(spool.ack(ids[0]).await.is_err());
    assert!(first.exists(), "deleted although its ack is not on disk");
    assert_eq!(spool.stats().messages(), 2);

    faulty.heal();
    spool
        .ack(ids[0])
        .await
        .expect("the ledger is rewritten and the ack lands");
    assert!(!first.exists(), "a fully acked, closed segment is removed");
    spool.close().await;

    let (_spool, back) = replayed(opts);
    assert_eq!(
        back.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
}

#[tokio::test]
async fn the_active_segment_stays_until_it_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let (spool, _) = open(options(dir.path()));
    let ids = append_all(&spool, 0..2).await;
    for id in &ids {
        spool.ack(*id).await.unwrap();
    }
    assert_eq!(
        segment_files(&spool_dir).len(),
        1,
        "still being appended to"
    );
    spool.close().await;
    let (_spool, back) = replayed(options(dir.path()));
    assert!(back.is_empty());
    assert!(
        segment_files(&spool_dir).is_empty(),
        "removed at the next open"
    );
}

#[tokio::test]
async fn a_ledger_that_cannot_be_written_at_open_does_not_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let faulty = Arc::new(Faulty::default());
    let opts = faulty_options(dir.path(), &faulty);
    let (spool, _) = open(opts.clone());
    let done = append_all(&spool, 0..1).await;
    spool.ack(done[0]).await.unwrap();
    spool.close().await;

    faulty.fail(FileKind::Ledger, Op::Write); // a full disk at start
    let (spool, back) = replayed(opts);
    assert!(back.is_empty());
    assert_eq!(
        segment_files(&spool_dir).len(),
        1,
        "not deleted before a ledger is synced"
    );

    faulty.heal();
    let id = spool.append(&record(1)).await.unwrap();
    spool
        .ack(id)
        .await
        .expect("the ledger is rewritten at the first ack");
    let left = segment_files(&spool_dir);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with(format!("segment-{:020}.log", id.segment)));
}

#[tokio::test]
async fn the_ledger_is_compacted_and_keeps_the_acks_still_needed() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("spool").join("acks.log");
    let mut opts = options(dir.path());
    opts.segment_bytes = 1; // each append starts a new segment
    opts.ledger_rewrite_bytes = 100; // five entries
    let (spool, _) = open(opts.clone());
    let ids = append_all(&spool, 0..12).await;
    let last = spool.append(&record(12)).await.unwrap();
    spool.ack(last).await.unwrap(); // in the active segment: must survive compaction
    for id in &ids {
        spool.ack(*id).await.unwrap();
    }
    let size = std::fs::metadata(&ledger).unwrap().len();
    assert!(
        size <= 120,
        "12 acks of deleted segments were not compacted away: {size}"
    );
    spool.close().await;

    let (_spool, back) = replayed(opts);
    assert!(back.is_empty(), "{back:?}");
}

#[tokio::test]
async fn a_missing_segment_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let mut opts = options(dir.path());
    opts.segment_bytes = 1;
    let (spool, _) = open(opts.clone());
    let ids = append_all(&spool, 0..4).await;
    spool.close().await;
    std::fs::remove_file(&segment_files(&spool_dir)[1]).unwrap();

    let (_spool, mut replay) = open(opts);
    // And one that goes away between open and replay.
    std::fs::remove_file(&segment_files(&spool_dir)[1]).unwrap();
    let got: Vec<RecordId> = replay.by_ref().map(|(id, _)| id).collect();
    assert_eq!(got, vec![ids[0], ids[3]]);
}

#[tokio::test]
async fn replay_comes_in_chunks_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(options(dir.path()));
    append_all(&spool, 0..5).await;
    spool.close().await;
    let (_spool, mut replay) = open(options(dir.path()));
    let one = record(0).body.len();
    assert_eq!(replay.next_chunk(2 * one).len(), 2);
    assert_eq!(
        replay.next_chunk(1).len(),
        1,
        "at least one record per chunk"
    );
    assert_eq!(replay.next_chunk(usize::MAX).len(), 2);
    assert!(replay.next_chunk(usize::MAX).is_empty());
}

#[tokio::test]
async fn files_are_0600_in_a_0700_directory() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let (spool, _) = open(options(dir.path()));
    let ids = append_all(&spool, 0..1).await;
    spool.ack(ids[0]).await.unwrap();
    spool.dead_letter(&record(0), 400, "bad").await.unwrap();
    assert_eq!(mode(&spool_dir), 0o700);
    for name in ["acks.log", "dead-letter.jsonl"] {
        assert_eq!(mode(&spool_dir.join(name)), 0o600, "{name}");
    }
    assert_eq!(mode(&segment_files(&spool_dir)[0]), 0o600);

    // An existing directory open to others is tightened.
    spool.close().await;
    std::fs::set_permissions(&spool_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _ = open(options(dir.path()));
    assert_eq!(mode(&spool_dir), 0o700);
}

#[test]
fn open_fails_only_when_the_directory_is_unusable_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("spool");
    std::fs::write(&not_a_dir, b"a file").unwrap();
    let err = Spool::open(SpoolOptions::new(&not_a_dir)).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains(&not_a_dir.display().to_string()), "{shown}");
    assert!(shown.starts_with("spool_dir "), "{shown}");
}

#[test]
fn scan_resyncs_after_garbage_between_frames() {
    let a = record(1).encode(1 << 20).unwrap();
    let b = record(2).encode(1 << 20).unwrap();
    let mut buf = a.clone();
    buf.extend_from_slice(b"\x53\x50\x4f\x4cgarbage"); // even a stray magic
    buf.extend_from_slice(&b);
    let scan = record::scan(&buf, 1 << 20);
    let offsets: Vec<u64> = scan.frames.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, vec![0, (a.len() + 11) as u64]);
    assert_eq!(scan.damaged, vec![a.len() as u64]);
}

#[tokio::test]
async fn acking_every_replayed_record_empties_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let mut opts = options(dir.path());
    opts.segment_bytes = 300; // a few records a segment
    let (spool, _) = open(opts.clone());
    append_all(&spool, 0..20).await;
    spool.close().await;

    let (spool, mut replay) = open(opts);
    assert_eq!(spool.stats().messages(), 20);
    let mut n = 0;
    loop {
        let chunk = replay.next_chunk(200);
        if chunk.is_empty() {
            break;
        }
        for (id, _) in chunk {
            spool.ack(id).await.unwrap();
            n += 1;
        }
    }
    assert_eq!(n, 20);
    let stats = spool.stats();
    assert_eq!((stats.messages(), stats.bytes()), (0, 0));
    assert!(segment_files(&spool_dir).is_empty());
}
