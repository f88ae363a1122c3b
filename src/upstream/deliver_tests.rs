//! The delivery logic against a scripted upstream (no HTTP), on paused time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};

use super::deliver::Courier;
use super::scripted::{messages, EntryKind, Scripted, Step};
use super::RetryPolicy;
use crate::batcher::BatchKey;
use crate::metrics::Metrics;
use crate::reply::Outcome;

const PATIENCE: Duration = Duration::from_secs(60);

fn ok() -> Step {
    Step::Entries {
        kinds: vec![EntryKind::Ok],
        misalign: 0,
        retry_after: None,
    }
}

fn whole(status: u16, retry_after: Option<&str>) -> Step {
    Step::Whole {
        status,
        retry_after: retry_after.map(str::to_owned),
    }
}

/// Delivers `n` messages through `upstream`; returns their outcomes in order.
async fn deliver(upstream: &Scripted, n: usize, max_retries: u32) -> Vec<Outcome> {
    let metrics = Metrics::new(1 << 20);
    let bound = Arc::new(Semaphore::new(1 << 20));
    let (batch, receivers) = messages(n, &bound, &metrics, PATIENCE);
    let retry = RetryPolicy::new(
        max_retries,
        Duration::from_millis(100),
        Duration::from_secs(5),
    );
    let key = BatchKey::new("c", &Default::default());
    Courier {
        transport: upstream,
        retry: &retry,
        metrics: &metrics,
        key: &key,
        patience: &super::Patience::new(Duration::from_secs(10), Default::default()),
    }
    .deliver(batch)
    .await;
    collect(receivers).await
}

async fn collect(receivers: Vec<oneshot::Receiver<Outcome>>) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for rx in receivers {
        match rx.await {
            Ok(outcome) => outcomes.push(outcome),
            Err(_) => panic!("a producer was never answered"),
        }
    }
    outcomes
}

fn statuses(outcomes: &[Outcome]) -> Vec<u16> {
    outcomes.iter().map(Outcome::status).collect()
}

fn text(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Failed { message, .. } => message,
        Outcome::Delivered(_) => "delivered",
    }
}

fn sizes(upstream: &Scripted) -> Vec<usize> {
    upstream.requests().iter().map(Vec::len).collect()
}

#[tokio::test(start_paused = true)]
async fn a_part_waiting_on_retry_after_does_not_hold_up_another() {
    // 413 splits [m0, m1]; m0's half is told to come back in 30 s, m1's half
    // fails plainly and is resent after a short back-off: it must not wait
    // behind m0's sleep.
    let upstream = Scripted::new([
        whole(413, None),
        whole(429, Some("30")),
        whole(503, None),
        ok(),
        ok(),
    ]);
    let outcomes = deliver(&upstream, 2, 3).await;
    assert_eq!(statuses(&outcomes), vec![200, 200]);
    // The halves go concurrently, in either order: the one told to wait 30 s
    // must be the last request, after the other's resend.
    let requests = upstream.requests();
    let firsts: Vec<&[u8]> = requests.iter().map(|r| &r[0][..]).collect();
    let (waiting, other) = (firsts[1], firsts[2]);
    assert_ne!(waiting, other);
    assert_eq!(
        firsts[3..],
        [other, waiting],
        "the other half is resent before the Retry-After is over: {firsts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_400_that_does_not_depend_on_the_messages_is_not_bisected_to_the_end() {
    let n = 64;
    let upstream = Scripted::new((0..2 * n).map(|_| whole(400, None)));
    let outcomes = deliver(&upstream, n, 3).await;
    assert!(outcomes.iter().all(|o| o.status() == 400), "{outcomes:?}");
    assert_eq!(
        sizes(&upstream),
        vec![64, 32, 32],
        "far below 2n-1 = 127 requests"
    );
}

#[tokio::test(start_paused = true)]
async fn bisection_still_finds_the_culprit() {
    let upstream = Scripted::new([
        whole(400, None), // [m0..m3]
        ok(),             // [m0, m1]
        whole(400, None), // [m2, m3]
        whole(400, None), // [m2]
        ok(),             // [m3]
    ]);
    let outcomes = deliver(&upstream, 4, 3).await;
    assert_eq!(statuses(&outcomes), vec![200, 200, 400, 200]);
    assert_eq!(sizes(&upstream), vec![4, 2, 2, 1, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_was_never_sent_is_retried() {
    let upstream = Scripted::new([Step::NotSent, Step::ConnectionLost, ok()]);
    let outcomes = deliver(&upstream, 2, 3).await;
    assert_eq!(statuses(&outcomes), vec![200, 200]);
    assert_eq!(sizes(&upstream), vec![2, 2, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_final_429_carries_the_upstreams_retry_after() {
    let upstream = Scripted::new([whole(429, Some("7")), whole(429, Some("7"))]);
    let outcomes = deliver(&upstream, 1, 1).await;
    match &outcomes[0] {
        Outcome::Failed {
            status: 429,
            retry_after,
            ..
        } => assert_eq!(*retry_after, Some(Duration::from_secs(7))),
        other => panic!("{other:?}"),
    }
    // Without a hint from the upstream, inletd gives its own.
    let upstream = Scripted::new([whole(429, None)]);
    let outcomes = deliver(&upstream, 1, 0).await;
    assert!(matches!(
        outcomes[0],
        Outcome::Failed {
            status: 429,
            retry_after: Some(_),
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn answers_that_arrived_unreadable_are_not_confirmed_and_not_resent() {
    for step in [
        Step::Cut { status: 207 },
        whole(307, None),
        whole(302, None),
        Step::Garbage,
    ] {
        let upstream = Scripted::new([step.clone()]);
        let outcomes = deliver(&upstream, 3, 3).await;
        assert_eq!(statuses(&outcomes), vec![502; 3], "{step:?}");
        assert!(text(&outcomes[0]).contains("may or may not"), "{step:?}");
        assert_eq!(sizes(&upstream), vec![3], "{step:?}: never resent");
    }
}

#[tokio::test(start_paused = true)]
async fn absurd_retry_after_values_give_up_without_panic() {
    for value in ["99999999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"] {
        let upstream = Scripted::new([whole(503, Some(value))]);
        let outcomes = deliver(&upstream, 1, 3).await;
        assert_eq!(statuses(&outcomes), vec![503], "{value}");
        assert_eq!(sizes(&upstream), vec![1], "{value}: past the deadline");
    }
    for value in ["-3", "soon", "1.5"] {
        let upstream = Scripted::new([whole(503, Some(value)), ok()]);
        let outcomes = deliver(&upstream, 1, 3).await;
        assert_eq!(
            statuses(&outcomes),
            vec![200],
            "{value}: no hint, normal back-off"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn no_answer_before_the_deadline_is_a_504_that_may_still_arrive() {
    let upstream = Scripted::new([Step::DeadlinePassed]);
    let outcomes = deliver(&upstream, 2, 3).await;
    assert_eq!(statuses(&outcomes), vec![504, 504]);
    assert!(text(&outcomes[0]).contains("may still be delivered"));
    assert_eq!(sizes(&upstream), vec![2]);
}
