//! Fire-and-forget, in process: `Prefer: respond-async` and `async_default`
//! answer 202 with `Preference-Applied`; without `spool_dir` the message is
//! held in memory, with it the 202 waits for the disk. Delivery, the 429s of
//! both bounds, dead letters without credentials, file modes, a failing disk
//! (503, recovery after) and SIGTERM leaving spooled messages for the next start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aep_standin::{Fault, StandInConfig};
use inletd::spool::{FileKind, Storage};
use serde_json::json;

use crate::support::{
    eventually, message, metric, refused_upstream, spool_backlog, spooled_in,
    stop_keeping_the_spool, Answer, TestApp, ASYNC,
};

async fn delivered(app: &TestApp, ids: &[String]) {
    eventually("every accepted message delivered", || async {
        let by_id = app.standin.deliveries_by_id();
        ids.iter().all(|id| by_id.contains_key(id))
    })
    .await;
}

#[tokio::test]
async fn in_memory_fire_and_forget_answers_202_and_delivers() {
    let app = TestApp::start(|_| {}).await;
    let answer = app
        .post("/collection/c1", message("mem-1", ""), &[ASYNC])
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert_eq!(answer.headers["preference-applied"], "respond-async");
    assert_eq!(answer.body, json!({"accepted": 1, "durable": false}));
    let batch = format!(
        r#"{{"messages":[{},{}]}}"#,
        message("mem-2", ""),
        message("mem-3", "")
    );
    let answer = app
        .post(
            "/collection/batch/c1",
            batch,
            &[("Prefer", "wait=5, Respond-Async")],
        )
        .await;
    assert_eq!(
        answer.status, 202,
        "one 202 for the whole batch: {}",
        answer.text
    );
    assert_eq!(answer.body["accepted"], 2);
    delivered(&app, &["mem-1".into(), "mem-2".into(), "mem-3".into()]).await;
    app.wait_for_metric(
        r#"inletd_async_results_total{durable="false",result="delivered"}"#,
        3.0,
    )
    .await;
    let text = app.metrics().await;
    assert_eq!(
        metric(&text, r#"inletd_async_accepted_total{durable="false"}"#),
        3.0
    );
}

#[tokio::test]
async fn in_memory_fire_and_forget_drains_like_waiting_messages() {
    let app = TestApp::start(|_| {}).await;
    // Still on its way upstream when the drain begins.
    app.standin.push_faults([Fault::Delay { ms: 500 }]);
    let answer = app
        .post("/collection/c1", message("drained-1", ""), &[ASYNC])
        .await;
    assert_eq!(answer.status, 202);
    app.wait_for_metric("inletd_in_flight_requests", 1.0).await;
    let standin = app.standin.clone();
    let report = app.stop().await;
    assert!(report.complete, "{report:?}");
    assert!(standin.deliveries_by_id().contains_key("drained-1"));
}

#[tokio::test]
async fn a_bad_entry_refuses_the_whole_async_batch() {
    let app = TestApp::start(|_| {}).await;
    let batch = format!(r#"{{"messages":[{},42]}}"#, message("bad-batch", ""));
    let answer = app.post("/collection/batch/c1", batch, &[ASYNC]).await;
    assert_eq!(answer.status, 400, "{}", answer.text);
    let answer = app.post("/collection/c1", "not json", &[ASYNC]).await;
    assert_eq!(answer.status, 400);
    // A later message goes through, and the refused one never did.
    let answer = app
        .post("/collection/c1", message("after", ""), &[ASYNC])
        .await;
    assert_eq!(answer.status, 202);
    delivered(&app, &["after".into()]).await;
    assert!(!app.standin.deliveries_by_id().contains_key("bad-batch"));
}

#[tokio::test]
async fn async_default_keeps_sync_validation_and_raw_data_synchronous() {
    let app = TestApp::start(|c| c.async_default = inletd::config::Switch(true)).await;
    let answer = app.send("c1", message("default-async", "")).await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    let answer = app
        .post(
            "/collection/c1?syncValidation=true",
            message("sync-1", ""),
            &[ASYNC],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.body["xactionId"].is_string(), "{}", answer.text);
    assert!(!answer.headers.contains_key("preference-applied"));
    let answer = app
        .post(
            "/collection/c1",
            message("raw-1", ""),
            &[("x-adobe-flow-id", "f"), ASYNC],
        )
        .await;
    assert_ne!(answer.status, 202, "raw data is forwarded: {}", answer.text);
    delivered(&app, &["default-async".into()]).await;
}

#[tokio::test]
async fn in_memory_fire_and_forget_stays_inside_the_memory_bound() {
    let app = TestApp::start(|c| {
        c.max_batch_bytes = 4_000;
        c.max_buffered_bytes = 8_000;
        c.max_batch_messages = 1;
        c.max_in_flight = 1;
    })
    .await;
    app.standin.push_faults((0..4).map(|_| Fault::Hang));
    let mut refused = None;
    for i in 0..100 {
        let answer = app
            .post(
                "/collection/c1",
                message(&format!("full-{i}"), ""),
                &[ASYNC],
            )
            .await;
        if answer.status == 429 {
            refused = Some(answer);
            break;
        }
        assert_eq!(answer.status, 202, "{}", answer.text);
    }
    let refused = refused.expect("the memory bound refuses fire-and-forget too");
    assert!(refused.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_spooled_message_is_on_disk_before_its_202_and_acked_once_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let app = TestApp::start(spooled_in(&spool)).await;
    let answer = app
        .post("/collection/c1", message("disk-1", ""), &[ASYNC])
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert_eq!(answer.body, json!({"accepted": 1, "durable": true}));
    delivered(&app, &["disk-1".into()]).await;
    app.wait_for_metric("inletd_spool_messages", 0.0).await;
    app.wait_for_metric(
        r#"inletd_async_results_total{durable="true",result="delivered"}"#,
        1.0,
    )
    .await;
    let text = app.metrics().await;
    assert!(metric(&text, "inletd_spool_syncs_total") >= 1.0, "{text}");
    assert_eq!(metric(&text, "inletd_spool_max_bytes"), 1073741824.0);
    assert!(text.contains("inletd_spool_sync_seconds_bucket"), "{text}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&spool), 0o700);
    for entry in std::fs::read_dir(&spool).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[tokio::test]
async fn a_refused_entry_is_dead_lettered_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(spooled_in(dir.path())).await;
    let bad = message("dead-1", r#","standin":{"status":400}"#);
    let headers = [ASYNC, ("authorization", "Bearer very-secret-token")];
    let answer = app.post("/collection/c1", bad, &headers).await;
    assert_eq!(answer.status, 202);
    app.wait_for_metric("inletd_dead_letters_total", 1.0).await;
    app.wait_for_metric("inletd_spool_messages", 0.0).await;
    let text = std::fs::read_to_string(dir.path().join("dead-letter.jsonl")).unwrap();
    assert!(text.contains("dead-1") && text.contains("c1"), "{text}");
    assert!(text.contains("400"), "{text}");
    assert!(!text.contains("very-secret-token"), "{text}");
}

#[tokio::test]
async fn a_full_spool_answers_429_and_loses_nothing_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(|c| {
        spooled_in(dir.path())(c);
        c.max_spool_bytes = 4_000;
    })
    .await;
    // The upstream refuses for a while, so the spool fills.
    app.standin.push_faults((0..40).map(|_| Fault::Status {
        status: 503,
        retry_after: None,
    }));
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..100 {
        let id = format!("bound-{i}");
        let answer = app.post("/collection/c1", message(&id, ""), &[ASYNC]).await;
        match answer.status {
            202 => accepted.push(id),
            429 => {
                refused = Some(answer);
                break;
            }
            other => panic!("unexpected {other}: {}", answer.text),
        }
    }
    let refused = refused.expect("max_spool_bytes refuses");
    assert_eq!(refused.headers["retry-after"], "5");
    assert!(refused.text.contains("spool is full"), "{}", refused.text);
    assert!(!accepted.is_empty());
    delivered(&app, &accepted).await;
    app.wait_for_metric("inletd_spool_messages", 0.0).await;
}

/// Fails every segment write while `failing` is set.
struct FlakyDisk {
    failing: Arc<AtomicBool>,
}

impl Storage for FlakyDisk {
    fn write_all(
        &self,
        kind: FileKind,
        file: &mut std::fs::File,
        buf: &[u8],
    ) -> std::io::Result<()> {
        if kind == FileKind::Segment && self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        std::io::Write::write_all(file, buf)
    }
}

#[tokio::test]
async fn a_failed_write_answers_503_and_the_spool_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let disk = Arc::new(FlakyDisk {
        failing: failing.clone(),
    });
    let app = TestApp::start_adjusted(StandInConfig::default(), spooled_in(dir.path()), |app| {
        app.with_spool_storage(disk)
    })
    .await;
    failing.store(true, Ordering::SeqCst);
    let batch = format!(
        r#"{{"messages":[{},{}]}}"#,
        message("lost-1", ""),
        message("lost-2", "")
    );
    let answer = app.post("/collection/batch/c1", batch, &[ASYNC]).await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert!(answer.headers.contains_key("retry-after"));
    failing.store(false, Ordering::SeqCst);
    let answer = app
        .post("/collection/c1", message("kept-1", ""), &[ASYNC])
        .await;
    assert_eq!(answer.status, 202, "recovered: {}", answer.text);
    delivered(&app, &["kept-1".into()]).await;
    app.wait_for_metric("inletd_spool_messages", 0.0).await;
    let by_id = app.standin.deliveries_by_id();
    assert!(!by_id.contains_key("lost-1") && !by_id.contains_key("lost-2"));
}

/// Holds every segment sync, once armed, until opened; counts the syncs held.
#[derive(Default)]
struct HeldSync {
    armed: AtomicBool,
    held: std::sync::Mutex<usize>,
    open: std::sync::Mutex<bool>,
    changed: std::sync::Condvar,
}

impl Storage for HeldSync {
    fn sync_data(&self, kind: FileKind, file: &std::fs::File) -> std::io::Result<()> {
        if kind == FileKind::Segment && self.armed.load(Ordering::SeqCst) {
            *self.held.lock().unwrap() += 1;
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.changed.wait(open).unwrap();
            }
        }
        file.sync_data()
    }
}

impl HeldSync {
    /// inletd spooling in `dir` on this storage, armed: every segment sync
    /// from now on is held until [`HeldSync::open`].
    async fn start(dir: &Path) -> (Arc<TestApp>, Arc<HeldSync>) {
        let gate = Arc::new(HeldSync::default());
        let storage = gate.clone();
        let app = TestApp::start_adjusted(StandInConfig::default(), spooled_in(dir), |app| {
            app.with_spool_storage(storage)
        })
        .await;
        gate.armed.store(true, Ordering::SeqCst);
        (Arc::new(app), gate)
    }

    async fn until_held(&self) {
        eventually("a segment sync is under way", || async {
            *self.held.lock().unwrap() > 0
        })
        .await;
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }
}

/// Sends message `id` fire-and-forget from its own task.
fn send_async(app: &Arc<TestApp>, id: &str) -> tokio::task::JoinHandle<Answer> {
    let (sender, body) = (app.clone(), message(id, ""));
    tokio::spawn(async move { sender.post("/collection/c1", body, &[ASYNC]).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_202_before_the_sync_covering_the_message_returned() {
    let dir = tempfile::tempdir().unwrap();
    let (app, gate) = HeldSync::start(dir.path()).await;
    let answer = send_async(&app, "synced-1");
    gate.until_held().await;
    assert!(!answer.is_finished(), "answered before its sync returned");
    gate.open();
    let answer = answer.await.unwrap();
    assert_eq!(answer.status, 202, "{}", answer.text);
    delivered(&app, &["synced-1".into()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_hanging_up_during_the_sync_strands_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (app, gate) = HeldSync::start(dir.path()).await;
    let request = send_async(&app, "hung-up");
    gate.until_held().await;
    // The producer goes away (its connection closes) while the sync runs.
    request.abort();
    let _ = request.await;
    gate.open();
    // Written, so it must be delivered now, not only after a restart.
    delivered(&app, &["hung-up".into()]).await;
    app.wait_for_metric("inletd_spool_messages", 0.0).await;
}

#[tokio::test]
async fn sigterm_leaves_undelivered_spooled_messages_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let dead = refused_upstream();
    let app = TestApp::start(|c| {
        spooled_in(dir.path())(c);
        c.upstream = dead.url.parse().unwrap();
    })
    .await;
    let ids: Vec<String> = (0..5).map(|i| format!("term-{i}")).collect();
    for id in &ids {
        let answer = app.post("/collection/c1", message(id, ""), &[ASYNC]).await;
        assert_eq!(answer.status, 202, "{}", answer.text);
    }
    app.wait_for_metric("inletd_spool_messages", 5.0).await;
    eventually("the refused sends are being retried", || async {
        metric(&app.metrics().await, "inletd_upstream_retries_total") >= 5.0
    })
    .await;
    stop_keeping_the_spool(app, dir.path()).await;

    let app = TestApp::start(spooled_in(dir.path())).await;
    delivered(&app, &ids).await;
    app.wait_for_metric("inletd_spool_messages", 0.0).await;
    let by_id = app.standin.deliveries_by_id();
    for id in &ids {
        assert_eq!(by_id[id].len(), 1, "{id} delivered once");
    }
    assert_eq!(
        metric(&app.metrics().await, "inletd_spool_replayed_total"),
        5.0
    );
}

#[tokio::test]
async fn replay_stays_inside_the_memory_bound() {
    const BOUND: u64 = 4096;
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..40).map(|i| format!("replay-{i}")).collect();
    spool_backlog(dir.path(), &ids).await;

    let app = TestApp::start(|c| {
        spooled_in(dir.path())(c);
        c.max_batch_bytes = 2048;
        c.max_buffered_bytes = BOUND;
    })
    .await;
    // Each held message costs at least MESSAGE_OVERHEAD (512) of the bound.
    let most = (BOUND / 512) as f64;
    let mut peak = 0.0f64;
    for round in 0.. {
        assert!(round < 12_000, "the replay never finished");
        let text = app.metrics().await;
        let held = metric(&text, "inletd_buffered_messages");
        peak = peak.max(held);
        assert!(held <= most, "{held} messages held, bound allows {most}");
        if metric(&text, "inletd_spool_messages") == 0.0
            && metric(&text, "inletd_spool_replayed_total") == 40.0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    delivered(&app, &ids).await;
    println!("replay of 40 held at most {peak} messages at once (bound: {most})");
}
