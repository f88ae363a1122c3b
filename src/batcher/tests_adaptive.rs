//! Adaptive flushing under paused time: a lone message leaves at once, a
//! loaded key's batches are paced and fill until a slot comes back, linger
//! is still the cap, shutdown still flushes. Holding a [`Batch`] here stands for its
//! delivery being under way; dropping it, for the delivery ending.

use std::time::Duration;

use tokio::time::{timeout, Instant};

use super::tests::{bodies, key, paced_rig};
use super::*;

/// Under paused time this waits `ms` of virtual time: `None` means nothing was flushed meanwhile.
async fn within(r: &mut super::tests::Rig, ms: u64) -> Option<Batch> {
    timeout(Duration::from_millis(ms), r.batches.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(start_paused = true)]
async fn a_lone_message_leaves_at_once() {
    let mut r = paced_rig(100, 10_000, 1_000, 2, 2);
    let start = Instant::now();
    r.send(&key("c", None), "{1}");
    let b = r.batches.recv().await.unwrap();
    assert_eq!(b.reason, FlushReason::Idle);
    assert_eq!(bodies(&b), vec![&b"{1}"[..]]);
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no linger for a lone message"
    );
}

#[tokio::test(start_paused = true)]
async fn a_burst_after_idle_leaves_together() {
    let mut r = paced_rig(100, 10_000, 1_000, 2, 2);
    let k = key("c", None);
    // Queued before the worker runs: one input run, so not "first alone, rest wait".
    for body in ["{1}", "{2}", "{3}", "{4}", "{5}"] {
        r.send(&k, body);
    }
    let b = r.batches.recv().await.unwrap();
    assert_eq!((b.reason, b.messages.len()), (FlushReason::Idle, 5));
}

#[tokio::test(start_paused = true)]
async fn under_load_batches_fill_until_a_slot_comes_back() {
    let mut r = paced_rig(100, 10_000, 1_000, 2, 2);
    let k = key("c", None);
    r.send(&k, "{a}");
    let a = r.batches.recv().await.unwrap();
    r.send(&k, "{b}");
    let b = r.batches.recv().await.unwrap();
    assert_eq!((a.reason, b.reason), (FlushReason::Idle, FlushReason::Idle));
    // Two in flight: the key is loaded, later messages gather.
    for body in ["{1}", "{2}", "{3}"] {
        r.send(&k, body);
        tokio::task::yield_now().await;
    }
    assert!(within(&mut r, 100).await.is_none(), "held back to fill");
    drop(a);
    let filled = r.batches.recv().await.unwrap();
    assert_eq!(filled.reason, FlushReason::Idle);
    assert_eq!(
        bodies(&filled),
        vec![&b"{1}"[..], b"{2}", b"{3}"],
        "order kept"
    );
    // Still two in flight (b and filled): the next one waits again.
    r.send(&k, "{4}");
    assert!(within(&mut r, 100).await.is_none());
    drop(b);
    assert_eq!(bodies(&r.batches.recv().await.unwrap()), vec![&b"{4}"[..]]);
}

#[tokio::test(start_paused = true)]
async fn linger_is_still_the_cap() {
    let mut r = paced_rig(100, 10_000, 50, 1, 1);
    let k = key("c", None);
    r.send(&k, "{a}");
    let _held = r.batches.recv().await.unwrap();
    let start = Instant::now();
    r.send(&k, "{1}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    r.send(&k, "{2}");
    let b = r.batches.recv().await.unwrap();
    assert_eq!((b.reason, b.messages.len()), (FlushReason::Linger, 2));
    assert_eq!(start.elapsed(), Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn count_still_flushes_a_loaded_key() {
    let mut r = paced_rig(3, 10_000, 1_000, 1, 1);
    let k = key("c", None);
    r.send(&k, "{a}");
    let _held = r.batches.recv().await.unwrap();
    for body in ["{1}", "{2}", "{3}"] {
        r.send(&k, body);
    }
    let b = r.batches.recv().await.unwrap();
    assert_eq!((b.reason, b.messages.len()), (FlushReason::Count, 3));
}

#[tokio::test(start_paused = true)]
async fn keys_are_paced_apart() {
    let mut r = paced_rig(100, 10_000, 1_000, 1, 1);
    let (a, b) = (key("c", Some("Bearer a")), key("c", Some("Bearer b")));
    r.send(&a, "{a1}");
    let _held = r.batches.recv().await.unwrap();
    r.send(&a, "{a2}");
    tokio::task::yield_now().await;
    // a is loaded, b is not: b's message does not wait behind a's.
    r.send(&b, "{b1}");
    let got = r.batches.recv().await.unwrap();
    assert_eq!((*got.key == b, got.reason), (true, FlushReason::Idle));
}

#[tokio::test(start_paused = true)]
async fn shutdown_still_flushes_a_loaded_key() {
    let mut r = paced_rig(100, 10_000, 3_600_000, 1, 1);
    let k = key("c", None);
    r.send(&k, "{a}");
    let _held = r.batches.recv().await.unwrap();
    r.send(&k, "{1}");
    r.send(&k, "{2}");
    tokio::task::yield_now().await;
    r.shutdown.cancel();
    let b = r.batches.recv().await.unwrap();
    assert_eq!((b.reason, b.messages.len()), (FlushReason::Shutdown, 2));
}

#[tokio::test(start_paused = true)]
async fn a_batch_dropped_unsent_frees_its_slot() {
    let mut r = paced_rig(100, 10_000, 1_000, 1, 1);
    let k = key("c", None);
    r.send(&k, "{a}");
    drop(r.batches.recv().await.unwrap());
    r.send(&k, "{b}");
    let b = r.batches.recv().await.unwrap();
    assert_eq!(
        b.reason,
        FlushReason::Idle,
        "the slot came back with the drop"
    );
}

#[tokio::test(start_paused = true)]
async fn a_loaded_key_is_paced_over_the_round_trip() {
    // One batch may leave at once; up to four paced by round trip / 4.
    let mut r = paced_rig(100, 10_000, 800, 1, 4);
    let k = key("c", None);
    let start = Instant::now();
    r.send(&k, "{a}");
    let a = r.batches.recv().await.unwrap();
    r.send(&k, "{b}");
    let b = r.batches.recv().await.unwrap();
    assert_eq!(b.reason, FlushReason::Idle);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(200),
        "no round trip known yet: linger / 4"
    );
    drop(a); // a 200 ms round trip: one batch per 50 ms while loaded
    let start = Instant::now();
    r.send(&k, "{1}");
    tokio::time::sleep(Duration::from_millis(30)).await;
    r.send(&k, "{2}");
    let paced = r.batches.recv().await.unwrap();
    assert_eq!(paced.reason, FlushReason::Idle);
    assert_eq!(bodies(&paced), vec![&b"{1}"[..], b"{2}"]);
    assert_eq!(start.elapsed(), Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn a_paced_key_sends_at_once_once_a_gap_has_passed() {
    // One batch leaves eagerly; up to four paced by linger / 4 = 200 ms
    // (no round trip known yet), counted from the previous batch.
    let mut r = paced_rig(100, 10_000, 800, 1, 4);
    let k = key("c", None);
    r.send(&k, "{a}");
    let _a = r.batches.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    r.send(&k, "{b}");
    let b = r.batches.recv().await.unwrap();
    assert_eq!(b.reason, FlushReason::Idle);
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "the gap had passed already"
    );
    // Right after b, the next one waits for the rest of the gap.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    r.send(&k, "{c}");
    let c = r.batches.recv().await.unwrap();
    assert_eq!(bodies(&c), vec![&b"{c}"[..]]);
    assert_eq!(start.elapsed(), Duration::from_millis(150));
}

#[tokio::test(start_paused = true)]
async fn a_paced_key_holding_a_gaps_worth_does_not_wait_out_the_gap() {
    // One batch leaves eagerly; up to four paced.
    let mut r = paced_rig(100, 10_000, 800, 1, 4);
    let k = key("c", None);
    let eight = ["{1}", "{2}", "{3}", "{4}", "{5}", "{6}", "{7}", "{8}"];
    for body in eight {
        r.send(&k, body);
    }
    let a = r.batches.recv().await.unwrap();
    for body in eight {
        r.send(&k, body);
    }
    // No round trip known yet: linger / 4 after a.
    let b = r.batches.recv().await.unwrap();
    assert_eq!((a.messages.len(), b.messages.len()), (8, 8));
    drop(a);
    // Now: 8 messages a batch, one batch per 200 ms, a 200 ms round trip
    // over 4 slots: a gap of 50 ms brings 2 messages; 1.5 gaps' worth is 3.
    let start = Instant::now();
    r.send(&k, "{x}");
    r.send(&k, "{y}");
    assert!(within(&mut r, 10).await.is_none(), "two wait for the gap");
    r.send(&k, "{z}");
    let early = r.batches.recv().await.unwrap();
    assert_eq!(early.reason, FlushReason::Idle);
    assert_eq!(bodies(&early), vec![&b"{x}"[..], b"{y}", b"{z}"]);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(10),
        "before the gap's end"
    );
    drop(b);
}
