//! The spool against the real binary: `kill -9` under load (every 202 is
//! delivered after the last restart, duplicates bounded by what was in
//! flight), `kill -9` while the upstream is down (each message exactly once
//! after a restart), and damaged segment files (start-up succeeds, intact
//! records are delivered, the damage is counted).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aep_standin::StandInConfig;

use crate::cli::{inletd, Daemon};
use crate::support::{background_standin, message, metric, refused_upstream};

const MAX_BATCH_MESSAGES: usize = 20;
const MAX_IN_FLIGHT: usize = 4;

/// The binary with a spool in `dir`, sending to `upstream`.
fn start(dir: &Path, upstream: &str) -> Daemon {
    let dir = dir.display().to_string();
    let args = [
        "--upstream",
        upstream,
        "--spool-dir",
        &dir,
        "--max-batch-messages",
        &MAX_BATCH_MESSAGES.to_string(),
        "--max-in-flight",
        &MAX_IN_FLIGHT.to_string(),
        "--linger",
        "5ms",
        "--retry-initial-backoff",
        "10ms",
        "--retry-max-backoff",
        "100ms",
        "--log-level",
        "warn,inletd=info",
    ];
    let mut daemon = tokio::task::block_in_place(|| Daemon::start(inletd(), &args));
    daemon.keep_reading_logs();
    daemon
}

fn kill_9(mut daemon: Daemon) {
    daemon.child.kill().expect("SIGKILL");
    daemon.child.wait().expect("reaped");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn metrics(daemon: &Daemon) -> String {
    let url = format!("http://127.0.0.1:{}/metrics", daemon.admin);
    match client().get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Posts one message fire-and-forget; true on a 202.
async fn fire(client: &reqwest::Client, url: &str, id: &str) -> bool {
    let sent = client
        .post(url)
        .header("prefer", "respond-async")
        .header("content-type", "application/json")
        .body(message(id, ""))
        .send()
        .await;
    matches!(sent, Ok(r) if r.status() == 202)
}

/// Polls `check` for up to two minutes (a debug binary replaying a backlog on a busy machine).
async fn within_minutes(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

fn missing(by_id: &HashMap<String, Vec<String>>, ids: &[String]) -> Vec<String> {
    ids.iter()
        .filter(|id| !by_id.contains_key(*id))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_accepted_message() {
    const CYCLES: usize = 10;
    const PRODUCERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let (upstream, standin) = background_standin(StandInConfig::default()).await;
    let target: Arc<Mutex<Option<String>>> = Arc::default();
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (target, accepted, stop) = (target.clone(), accepted.clone(), stop.clone());
            tokio::spawn(async move {
                let client = client();
                let mut n = 0;
                while !stop.is_cancelled() {
                    let url = target.lock().unwrap().clone();
                    let Some(url) = url else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    let id = format!("load-{p}-{n}");
                    n += 1;
                    if fire(&client, &url, &id).await {
                        accepted.lock().unwrap().push(id);
                    }
                }
            })
        })
        .collect();
    let (mut syncs, mut synced) = (0.0, 0.0);
    for cycle in 0..CYCLES {
        let daemon = start(dir.path(), &upstream);
        let before = accepted.lock().unwrap().len();
        *target.lock().unwrap() = Some(daemon.url("/collection/load"));
        within_minutes("more messages accepted in this cycle", || {
            accepted.lock().unwrap().len() >= before + 100
        })
        .await;
        let text = metrics(&daemon).await;
        syncs += metric(&text, "inletd_spool_syncs_total");
        synced += metric(&text, "inletd_spool_synced_messages_total");
        *target.lock().unwrap() = None;
        kill_9(daemon);
        println!(
            "cycle {cycle}: {} accepted so far",
            accepted.lock().unwrap().len()
        );
    }
    stop.cancel();
    for p in producers {
        p.await.unwrap();
    }
    let daemon = start(dir.path(), &upstream);
    let ids = accepted.lock().unwrap().clone();
    within_minutes("every accepted message delivered", || {
        missing(&standin.deliveries_by_id(), &ids).is_empty()
    })
    .await;
    let by_id = standin.deliveries_by_id();
    let duplicates: usize = ids.iter().map(|id| by_id[id].len() - 1).sum();
    let bound = CYCLES * MAX_BATCH_MESSAGES * MAX_IN_FLIGHT;
    println!(
        "kill -9 x{CYCLES}: {} accepted, all delivered, {duplicates} duplicates (bound {bound}); {synced} messages in {syncs} syncs ({:.1} per fsync)",
        ids.len(),
        synced / syncs.max(1.0)
    );
    assert!(duplicates <= bound, "{duplicates} duplicates > {bound}");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_the_upstream_down_delivers_each_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dead = refused_upstream();
    let daemon = start(dir.path(), &dead.url);
    let client = client();
    let url = daemon.url("/collection/down");
    let ids: Vec<String> = (0..30).map(|i| format!("down-{i}")).collect();
    for id in &ids {
        assert!(fire(&client, &url, id).await, "{id} accepted");
    }
    kill_9(daemon);
    let (upstream, standin) = background_standin(StandInConfig::default()).await;
    let daemon = start(dir.path(), &upstream);
    within_minutes("every message delivered after the restart", || {
        missing(&standin.deliveries_by_id(), &ids).is_empty()
    })
    .await;
    let by_id = standin.deliveries_by_id();
    for id in &ids {
        assert_eq!(by_id[id].len(), 1, "{id} delivered exactly once");
    }
    assert_eq!(
        metric(&metrics(&daemon).await, "inletd_spool_replayed_total"),
        30.0
    );
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("segment-")
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_segments_are_skipped_counted_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let dead = refused_upstream();
    let daemon = start(dir.path(), &dead.url);
    let client = client();
    let url = daemon.url("/collection/damage");
    let ids: Vec<String> = (0..40).map(|i| format!("dmg-{i:02}")).collect();
    for id in &ids {
        assert!(fire(&client, &url, id).await, "{id} accepted");
    }
    kill_9(daemon);
    let segment = segments(dir.path()).pop().expect("a segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    // A flipped byte inside a record in the middle, and a torn last record.
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    bytes.truncate(bytes.len() - 7);
    std::fs::write(&segment, &bytes).unwrap();

    let (upstream, standin) = background_standin(StandInConfig::default()).await;
    let daemon = start(dir.path(), &upstream);
    within_minutes("the intact messages delivered", || {
        missing(&standin.deliveries_by_id(), &ids).len() <= 2
    })
    .await;
    let text = metrics(&daemon).await;
    let lost = missing(&standin.deliveries_by_id(), &ids);
    println!("damaged records not delivered: {lost:?}");
    assert_eq!(lost.len(), 2, "the flipped and the torn record: {lost:?}");
    assert_eq!(lost.last(), ids.last(), "the torn one is the last");
    assert!(
        metric(&text, "inletd_spool_corrupt_records_total") >= 2.0,
        "{text}"
    );
}
