//! Spooled messages beyond the memory bound wait on disk: with a tiny
//! `max_buffered_bytes` and the upstream refusing, spooled fire-and-forget
//! producers get 202 up to `max_spool_bytes` (then 429) while the memory
//! held stays inside the bound; after a restart with a backlog, new spooled
//! messages get 202 while the backlog streams from disk. When the upstream
//! comes back, everything is delivered once, in order.

use aep_standin::{Fault, StandIn, StandInConfig};

use crate::support::{
    eventually, message, metric, spool_backlog, spooled_in, stop_keeping_the_spool, test_config,
    TestApp, ASYNC,
};

/// What holding one message costs the bound at least (`MESSAGE_OVERHEAD`).
const OVERHEAD: f64 = 512.0;

/// inletd in front of an upstream that answers 503 until `standin.reset()`
/// (far more faults than any test sends batches), down before inletd starts:
/// a backlog replayed at start must not reach it first.
async fn start_with_upstream_down(tweak: impl FnOnce(&mut inletd::Config)) -> TestApp {
    let standin = StandIn::bind("127.0.0.1:0".parse().unwrap(), StandInConfig::default())
        .await
        .unwrap();
    standin
        .handle()
        .push_faults((0..200_000).map(|_| Fault::Status {
            status: 503,
            retry_after: None,
        }));
    let mut config = test_config(standin.local_addr());
    tweak(&mut config);
    TestApp::start_on(standin, config).await
}

/// Checks the memory held against `bound` and returns how many messages
/// wait on disk.
async fn inside_the_bound(app: &TestApp, bound: u64) -> f64 {
    let text = app.metrics().await;
    let bytes = metric(&text, "inletd_buffered_bytes");
    let messages = metric(&text, "inletd_buffered_messages");
    assert!(bytes <= bound as f64, "{bytes} bytes held, bound {bound}");
    assert!(
        messages * OVERHEAD <= bound as f64,
        "{messages} messages held, the bound allows {}",
        bound as f64 / OVERHEAD
    );
    metric(&text, "inletd_spool_waiting_on_disk_messages")
}

/// Every id delivered exactly once, in the order of `ids` except among
/// messages less than `window` apart: those may have been in memory
/// together, and retries (the upstream was down) do not keep their order.
async fn delivered_once_in_order(app: &TestApp, ids: &[String], window: usize) {
    eventually("every accepted message delivered", || async {
        let by_id = app.standin.deliveries_by_id();
        ids.iter().all(|id| by_id.contains_key(id))
    })
    .await;
    app.wait_for_metric("inletd_spool_messages", 0.0).await;
    let by_id = app.standin.deliveries_by_id();
    for id in ids {
        assert_eq!(by_id[id].len(), 1, "{id} delivered once");
    }
    let mut position = std::collections::HashMap::new();
    for delivered in app.standin.delivered() {
        let json: serde_json::Value = serde_json::from_str(&delivered.message).unwrap();
        if let Some(id) = json["body"]["xdmEntity"]["_id"].as_str() {
            let next = position.len();
            position.entry(id.to_owned()).or_insert(next);
        }
    }
    let mut latest_before = None;
    for (i, id) in ids.iter().enumerate() {
        if let Some(earlier) = i.checked_sub(window).map(|j| position[&ids[j]]) {
            latest_before = latest_before.max(Some(earlier));
        }
        assert!(
            latest_before.is_none_or(|before| position[id] > before),
            "{id} was delivered before a message accepted {window}+ earlier"
        );
    }
}

#[tokio::test]
async fn spooled_producers_meet_max_spool_bytes_not_the_memory_bound() {
    const BOUND: u64 = 8_000;
    let dir = tempfile::tempdir().unwrap();
    let app = start_with_upstream_down(|c| {
        spooled_in(dir.path())(c);
        c.max_buffered_bytes = BOUND;
        c.max_spool_bytes = 96_000;
        c.max_batch_bytes = 4_000;
        c.max_in_flight = 1; // one batch at a time: delivery keeps the order
    })
    .await;
    let mut accepted = Vec::new();
    let mut refused = None;
    let mut waited_on_disk = 0.0f64;
    for i in 0..2_000 {
        let id = format!("over-{i:04}");
        let answer = app.post("/collection/c1", message(&id, ""), &[ASYNC]).await;
        match answer.status {
            202 => accepted.push(id),
            429 => {
                refused = Some(answer);
                break;
            }
            other => panic!("unexpected {other} after {i}: {}", answer.text),
        }
        waited_on_disk = waited_on_disk.max(inside_the_bound(&app, BOUND).await);
    }
    let refused = refused.expect("max_spool_bytes refuses in the end");
    assert!(refused.text.contains("spool is full"), "{}", refused.text);
    let in_memory = BOUND as f64 / OVERHEAD;
    assert!(
        accepted.len() as f64 > 10.0 * in_memory,
        "only {} accepted: the memory bound ({in_memory} messages) still limits",
        accepted.len()
    );
    assert!(waited_on_disk > 0.0, "nothing was left on disk");

    app.standin.reset(); // the upstream is back
    delivered_once_in_order(&app, &accepted, in_memory as usize).await;
    app.wait_for_metric("inletd_spool_waiting_on_disk_messages", 0.0)
        .await;
}

#[tokio::test]
async fn after_a_restart_the_backlog_streams_and_new_spooled_messages_get_202() {
    const BOUND: u64 = 4_096;
    let dir = tempfile::tempdir().unwrap();
    let old: Vec<String> = (0..120).map(|i| format!("backlog-{i:03}")).collect();
    spool_backlog(dir.path(), &old).await;

    let app = start_with_upstream_down(|c| {
        spooled_in(dir.path())(c);
        c.max_buffered_bytes = BOUND;
        c.max_batch_bytes = 2_048;
        c.max_in_flight = 1;
    })
    .await;
    let new: Vec<String> = (0..40).map(|i| format!("during-{i:03}")).collect();
    for id in &new {
        let answer = app.post("/collection/c1", message(id, ""), &[ASYNC]).await;
        assert_eq!(answer.status, 202, "during the backlog: {}", answer.text);
        let waiting = inside_the_bound(&app, BOUND).await;
        assert!(waiting > 0.0, "the backlog waits on disk, not in memory");
    }
    app.standin.reset(); // the upstream is back
    let all: Vec<String> = old.into_iter().chain(new).collect();
    delivered_once_in_order(&app, &all, (BOUND as f64 / OVERHEAD) as usize).await;
    assert_eq!(
        metric(&app.metrics().await, "inletd_spool_replayed_total"),
        all.len() as f64,
        "the backlog and the messages sent during it came from disk"
    );
}

#[tokio::test]
async fn sigterm_with_messages_waiting_on_disk_leaves_them_for_the_next_start() {
    const BOUND: u64 = 4_096;
    let dir = tempfile::tempdir().unwrap();
    let app = start_with_upstream_down(|c| {
        spooled_in(dir.path())(c);
        c.max_buffered_bytes = BOUND;
        c.max_batch_bytes = 2_048;
        c.shutdown_grace = crate::support::ms(200);
    })
    .await;
    let ids: Vec<String> = (0..60).map(|i| format!("stop-{i:02}")).collect();
    for id in &ids {
        let answer = app.post("/collection/c1", message(id, ""), &[ASYNC]).await;
        assert_eq!(answer.status, 202, "{}", answer.text);
    }
    assert!(
        inside_the_bound(&app, BOUND).await > 0.0,
        "some wait on disk"
    );
    stop_keeping_the_spool(app, dir.path()).await;

    let app = TestApp::start(spooled_in(dir.path())).await;
    delivered_once_in_order(&app, &ids, ids.len()).await;
}
