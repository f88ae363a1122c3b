//! Property test of the delivery logic: for any sequence of upstream answers
//! (scripted through the [`Transport`](super::Transport) seam, on paused time),
//! no producer hears "delivered" unless its own entry said so, every producer
//! is answered exactly once, nothing settled is sent again, and every memory
//! permit comes back.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::deliver::Courier;
use super::scripted::{messages, EntryKind, Scripted, Step};
use super::RetryPolicy;
use crate::batcher::BatchKey;
use crate::metrics::Metrics;
use crate::reply::Outcome;

const BOUND: usize = 1 << 16;

fn code() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            0u64, 100, 200, 201, 302, 400, 404, 413, 429, 500, 502, 503, 599, 600, 70000,
        ])
        .prop_map(|c| json!(c)),
        prop::sample::select(vec!["400", " 503 ", "429", "200", "abc", "", "1e3"])
            .prop_map(|s| json!(s)),
        Just(json!(400.0)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(Value::Null),
        Just(json!({"x": 1})),
    ]
}

fn entry() -> impl Strategy<Value = EntryKind> {
    prop_oneof![
        3 => Just(EntryKind::Ok),
        2 => code().prop_map(EntryKind::Code),
        1 => code().prop_map(EntryKind::CodeWithId),
    ]
}

fn retry_after() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::sample::select(vec![
            "0",
            "1",
            "30",
            "-5",
            "soon",
            "18446744073709551615",
            "99999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ])
        .prop_map(str::to_owned),
    )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => Just(Step::NotSent),
        1 => Just(Step::ConnectionLost),
        1 => Just(Step::DeadlinePassed),
        2 => (
            prop::sample::select(vec![
                200u16, 204, 301, 307, 400, 401, 403, 404, 413, 429, 500, 502, 503, 504, 599
            ]),
            retry_after()
        )
            .prop_map(|(status, retry_after)| Step::Whole {
                status,
                retry_after
            }),
        1 => prop::sample::select(vec![200u16, 207, 400, 503]).prop_map(|status| Step::Cut { status }),
        1 => Just(Step::Garbage),
        3 => (prop::collection::vec(entry(), 1..4), -1i8..=1, retry_after()).prop_map(
            |(kinds, misalign, retry_after)| Step::Entries {
                kinds,
                // Mostly aligned, so the per-entry paths are walked.
                misalign: if misalign == 1 { 0 } else { misalign },
                retry_after
            }
        ),
    ]
}

fn run(n: usize, steps: Vec<Step>, max_retries: u32) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    runtime.block_on(async {
        let upstream = Scripted::new(steps);
        let metrics = Metrics::new(BOUND as u64);
        let bound = Arc::new(Semaphore::new(BOUND));
        let (batch, receivers) = messages(n, &bound, &metrics, Duration::from_secs(10));
        let bodies: Vec<_> = batch.iter().map(|m| m.body.clone()).collect();
        let retry = RetryPolicy::new(
            max_retries,
            Duration::from_millis(100),
            Duration::from_secs(2),
        );
        let key = BatchKey::new("c", &Default::default());
        Courier {
            transport: &upstream,
            retry: &retry,
            metrics: &metrics,
            key: &key,
            patience: &super::Patience::new(Duration::from_secs(10), Default::default()),
        }
        .deliver(batch)
        .await;
        for (rx, body) in receivers.into_iter().zip(&bodies) {
            // Answered exactly once: a oneshot holds one value, and a reply
            // dropped unanswered would say "stopped tracking" with a 503.
            let outcome = rx
                .await
                .map_err(|_| TestCaseError::fail("a producer was never answered"))?;
            match &outcome {
                Outcome::Delivered(d) => prop_assert!(
                    upstream.confirmed(body, &d.xaction_id),
                    "{body:?} delivered as {} without its own entry saying so",
                    d.xaction_id
                ),
                Outcome::Failed { message, .. } => {
                    prop_assert!(!message.contains("stopped tracking"), "{message}")
                }
            }
        }
        prop_assert_eq!(upstream.resent_after_settled(), Vec::<bytes::Bytes>::new());
        prop_assert_eq!(bound.available_permits(), BOUND, "every permit released");
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn delivery_never_claims_success_loses_a_producer_or_resends_what_is_settled(
        n in 1usize..9,
        steps in prop::collection::vec(step(), 0..14),
        max_retries in 0u32..4,
    ) {
        run(n, steps, max_retries)?;
    }
}
