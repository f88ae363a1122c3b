//! The memory bound holds for the smallest messages there are: the real
//! `inletd` binary, a stalled upstream, and many concurrent bodies of `{}`
//! messages. Peak RSS (`VmHWM` of the child) must stay within
//! 1.5 × `max_buffered_bytes` + 20 MB, the figure the operations guide promises,
//! once the binary's own file-backed pages are taken off: this is the debug
//! build, whose 150 MB of code and debug info keep ~18 MB resident at idle
//! where the release build keeps ~5 MB (`bench/run.sh` measures the release
//! build's whole RSS against the same figure).

use std::sync::Arc;

use crate::cli::{inletd, Daemon};

const BOUND: u64 = 16 * 1024 * 1024;
const LIMIT: u64 = BOUND * 3 / 2 + 20_000_000;

/// An upstream that accepts connections and never answers (nor reads).
async fn stalled_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// `kB` figures of `/proc/<pid>/status` lines such as `VmHWM:`, in bytes.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Sends `copies` bodies of `n` `{}` messages at once; their statuses. A body
/// refused at the door (429, 413) may be answered before it is read, and the
/// connection then closed under the client's upload: that is `None`.
async fn send_tiny(url: &Arc<String>, copies: usize, n: usize) -> Vec<Option<u16>> {
    let body = Arc::new(format!(r#"{{"messages":[{}{{}}]}}"#, "{},".repeat(n - 1)));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let tasks: Vec<_> = (0..copies)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let response = client
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body.as_str().to_owned())
                    .send()
                    .await
                    .ok()?;
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                Some(status)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tiny_messages_stay_inside_the_memory_bound() {
    let upstream = stalled_upstream().await;
    let mut daemon = Daemon::start(
        inletd(),
        &[
            "--upstream",
            &format!("http://{upstream}"),
            "--max-buffered-bytes",
            &BOUND.to_string(),
            "--request-timeout",
            "3s",
            "--linger",
            "5ms",
            // A loaded machine must not turn a 1 MB upload into a 408.
            "--body-read-timeout",
            "60s",
        ],
    );
    daemon.keep_reading_logs();
    let pid = daemon.child.id();
    let url = Arc::new(daemon.url("/collection/batch/c1"));

    // The issue's case: 24 bodies of ~330 000 two-byte messages, each under 1 MB.
    // Their real cost (hundreds of MB each) can never fit: 413, or 429 at the door.
    let statuses = send_tiny(&url, 24, 330_000).await;
    assert!(
        statuses
            .iter()
            .all(|s| matches!(s, None | Some(413) | Some(429))),
        "{statuses:?}"
    );
    assert!(statuses.contains(&Some(413)), "{statuses:?}");

    // Bodies that fit: the bound fills with the smallest messages there are,
    // they wait on the stalled upstream, and every one is answered (207 of 504s).
    // These small bodies are read before any answer: each gets one.
    let statuses = send_tiny(&url, 24, 1_500).await;
    assert!(statuses.contains(&Some(207)), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| matches!(s, Some(207) | Some(429))),
        "{statuses:?}"
    );

    let (peak, now) = (proc_status(pid, "VmHWM:"), proc_status(pid, "VmRSS:"));
    // Code pages only grow (nothing here pressures the page cache), so the
    // file-backed figure now is at least what it was at the peak.
    let code = proc_status(pid, "RssFile:");
    let held = peak.saturating_sub(code);
    eprintln!("inletd peak RSS {peak} bytes ({code} of it the binary's file pages), now {now}; limit {LIMIT}");
    assert!(
        held <= LIMIT,
        "peak RSS {peak} bytes less the binary's {code} file-backed bytes passed 1.5 × max_buffered_bytes + 20 MB = {LIMIT}"
    );
    drop(daemon);
}
