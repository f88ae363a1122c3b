//! `inletd dead-letters`, the real binary against a small AEP-like server on
//! 127.0.0.1: accepted dead letters removed, failed ones kept, the header's
//! credential nowhere on disk, and a dead letter the daemon writes while the
//! resend runs not lost.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use inletd::spool::{Record, Spool, SpoolOptions};
use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::{mpsc, watch};

use crate::cli::{inletd, run};

/// What the server received: connection id, Authorization, body.
type Received = Arc<Mutex<Vec<(String, String, Bytes)>>>;

#[derive(Clone)]
struct Upstream {
    received: Received,
    arrived: mpsc::UnboundedSender<()>,
    /// Answers wait until this is true (so a test can act mid-resend).
    open: watch::Receiver<bool>,
}

/// Answers 400 to a message containing `"fail"`, 200 to the others.
async fn single(
    State(up): State<Upstream>,
    UrlPath(connection): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    up.received
        .lock()
        .unwrap()
        .push((connection, auth, body.clone()));
    let _ = up.arrived.send(());
    let mut open = up.open.clone();
    let _ = open.wait_for(|o| *o).await;
    if body.windows(6).any(|w| w == b"\"fail\"") {
        let message = r#"{"statusCode":400,"message":"still invalid"}"#;
        (StatusCode::BAD_REQUEST, message.into())
    } else {
        (StatusCode::OK, r#"{"xactionId":"x"}"#.into())
    }
}

struct Server {
    url: String,
    received: Received,
    arrived: mpsc::UnboundedReceiver<()>,
    open: watch::Sender<bool>,
}

async fn server(open_now: bool) -> Server {
    let (open, open_rx) = watch::channel(open_now);
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let received = Received::default();
    let state = Upstream {
        received: Arc::clone(&received),
        arrived: arrived_tx,
        open: open_rx,
    };
    let app = Router::new()
        .route("/collection/{id}", post(single))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        url,
        received,
        arrived,
        open,
    }
}

fn record(connection: &str, body: &str, n: u64) -> Record {
    Record {
        connection_id: connection.into(),
        credentials: vec![(
            HeaderName::from_static("authorization"),
            HeaderValue::from_static("Bearer daemon-s3cr3t"),
        )],
        body: Bytes::from(body.to_string()),
        accepted_at: UNIX_EPOCH + Duration::from_millis(1_780_000_000_000 + n),
    }
}

const GOOD: [&str; 3] = [
    r#"{"header":{"n":1},"body":{"v":1.50}}"#,
    r#"{"header":{"n":2},"body":{}}"#,
    r#"{"header":{"n":3},"body":{"s":"é"}}"#,
];
const BAD: &str = r#"{"header":{"n":4},"body":{"kind":"fail"}}"#;
const LATE: &str = r#"{"header":{"n":5},"body":{"late":true}}"#;

/// A spool with three dead letters that will be accepted and one that fails again.
async fn spool_with_dead_letters(dir: &Path) -> Spool {
    let (spool, _replay) = Spool::open(SpoolOptions::new(dir)).expect("spool opens");
    for (n, body) in GOOD.iter().chain([&BAD]).enumerate() {
        let connection = if n == 2 { "conn-b" } else { "conn-a" };
        spool
            .dead_letter(&record(connection, body, n as u64), 400, "was invalid")
            .await
            .unwrap();
    }
    spool
}

fn every_file_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    text
}

#[tokio::test]
async fn resend_removes_the_accepted_keeps_the_failed_and_loses_nothing_written_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let spool = spool_with_dead_letters(&dir).await;
    let mut server = server(false).await;

    let mut cmd = inletd();
    cmd.args(["dead-letters", "--dir"])
        .arg(&dir)
        .args(["resend", "--to", &server.url, "--concurrency", "2"])
        .args(["--header", "Authorization: Bearer resend-s3cr3t"]);
    let resend = tokio::task::spawn_blocking(move || run(&mut cmd));

    // The resend has taken the file and waits for answers: the daemon dead-letters one more.
    server.arrived.recv().await.expect("a resend request");
    spool
        .dead_letter(&record("conn-a", LATE, 9), 422, "late")
        .await
        .unwrap();
    server.open.send(true).unwrap();
    let (code, stdout, stderr) = resend.await.unwrap();

    assert_eq!(
        code, 1,
        "one failed again\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("3 accepted (removed), 1 failed (kept)"),
        "{stdout}"
    );
    assert!(stdout.contains("still invalid"), "{stdout}");

    let received = server.received.lock().unwrap().clone();
    let mut bodies: Vec<&[u8]> = received.iter().map(|(_, _, b)| &b[..]).collect();
    bodies.sort();
    let mut want: Vec<&[u8]> = GOOD.iter().chain([&BAD]).map(|s| s.as_bytes()).collect();
    want.sort();
    assert_eq!(bodies, want, "each dead letter once, byte for byte");
    assert!(received
        .iter()
        .all(|(_, auth, _)| auth == "Bearer resend-s3cr3t"));
    assert!(received
        .iter()
        .any(|(c, _, b)| c == "conn-b" && b == GOOD[2].as_bytes()));

    let left = std::fs::read_to_string(dir.join("dead-letter.jsonl")).unwrap();
    let left: Vec<serde_json::Value> = left
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut kept: Vec<String> = left.iter().map(|v| v["message"].to_string()).collect();
    kept.sort();
    let mut want_kept: Vec<String> = [BAD, LATE]
        .iter()
        .map(|s| {
            serde_json::from_str::<serde_json::Value>(s)
                .unwrap()
                .to_string()
        })
        .collect();
    want_kept.sort();
    assert_eq!(
        kept, want_kept,
        "the failed one and the late one, once each"
    );
    let bad = left
        .iter()
        .find(|v| v["message"]["body"]["kind"] == "fail")
        .unwrap();
    assert!(
        bad["lastResend"]["result"]
            .as_str()
            .is_some_and(|r| r.contains("400") && r.contains("still invalid")),
        "{bad}"
    );
    let late = left
        .iter()
        .find(|v| v["message"]["body"]["late"] == true)
        .unwrap();
    assert!(late.get("lastResend").is_none(), "not resent yet: {late}");

    let files = every_file_text(&dir);
    assert!(!files.contains("s3cr3t"), "no credential on disk");
    assert!(!stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("resending")),
        "nothing left over: {names:?}"
    );
    spool.close().await;
}

#[tokio::test]
async fn list_counts_and_dry_run_and_filter_change_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let spool = spool_with_dead_letters(&dir).await;
    spool.close().await;
    let before = std::fs::read(dir.join("dead-letter.jsonl")).unwrap();

    let (code, stdout, _) = run(inletd()
        .args(["dead-letters", "--dir"])
        .arg(&dir)
        .arg("list"));
    assert_eq!(code, 0);
    assert!(stdout.contains("conn-a"), "{stdout}");
    assert!(stdout.contains("4 dead letters"), "{stdout}");

    let (code, stdout, _) = run(inletd().args(["dead-letters", "--dir"]).arg(&dir).args([
        "list",
        "--json",
        "--connection-id",
        "conn-b",
    ]));
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    let server = server(true).await;
    let (code, stdout, _) = run(inletd().args(["dead-letters", "--dir"]).arg(&dir).args([
        "resend",
        "--dry-run",
        "--to",
        &server.url,
    ]));
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("would send 4"), "{stdout}");
    assert!(server.received.lock().unwrap().is_empty());
    assert_eq!(
        std::fs::read(dir.join("dead-letter.jsonl")).unwrap(),
        before
    );

    // Only conn-b's: sent and removed; conn-a's stay as they were.
    let url = server.url.clone();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let mut cmd = inletd();
        cmd.args(["dead-letters", "--dir"]).arg(&dir).args([
            "resend",
            "--connection-id",
            "conn-b",
            "--to",
            &url,
        ]);
        let out = run(&mut cmd);
        let left = std::fs::read_to_string(dir.join("dead-letter.jsonl")).unwrap();
        assert_eq!(left.lines().count(), 3);
        assert!(!left.contains("conn-b"));
        out
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("1 accepted"), "{stdout}");
    assert_eq!(server.received.lock().unwrap().len(), 1);
}

#[test]
fn without_a_spool_directory_it_says_so() {
    let (code, _, stderr) = run(inletd().args(["dead-letters", "list"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("no spool directory"), "{stderr}");
}

#[test]
fn a_malformed_header_is_refused_without_echoing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(inletd()
        .args(["dead-letters", "--dir"])
        .arg(tmp.path())
        .args(["resend", "--header", "Authorization Bearer s3cr3t"]));
    assert_eq!(code, 2);
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}
