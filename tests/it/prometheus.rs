//! A real Prometheus scrapes a running inletd; the values read back through
//! its query API must match the traffic. Also: every metric name used by the
//! alert rules and the dashboard (`inletd_*` and `process_*`, as
//! `deploy/metric-names.py` reads them) exists in `/metrics`.
//!
//! Needs Debian's `prometheus` (installed by `.ci/run`). Without it the test
//! says loudly what it skipped, except under CI, where it fails.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use serde_json::Value;

use crate::support::{background_standin, eventually, free_port, message, TestApp};

/// Every `inletd_*` and `process_*` name in the dashboard and alert rules,
/// histogram suffixes removed.
fn names_used_in_deploy() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut names = Vec::new();
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/inletd-dashboard.json",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}"))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        names.extend(names_in(&text, "inletd_"));
        names.extend(names_in(&text, "process_"));
    }
    names.sort();
    names.dedup();
    assert!(
        names.len() >= 5 && names.iter().any(|n| n.starts_with("process_")),
        "found too few names in deploy/: {names:?}"
    );
    names
}

/// Names starting with `prefix` that are not part of a longer identifier.
fn names_in(text: &str, prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find(prefix) {
        let start = i + pos;
        let before = start.checked_sub(1).map(|b| bytes[b]);
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        i = end;
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            continue;
        }
        let mut name = text[start..end].trim_end_matches('_').to_owned();
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(stem) = name.strip_suffix(suffix) {
                name = stem.to_owned();
            }
        }
        names.push(name);
    }
    names
}

/// The spool's metrics, which exist only where `spool_dir` is set.
fn is_spool_metric(name: &str) -> bool {
    name.starts_with("inletd_spool_") || name == "inletd_dead_letters_total"
}

#[tokio::test]
async fn every_metric_in_alerts_and_dashboard_exists() {
    let app = TestApp::start(|_| {}).await;
    assert_eq!(app.send("c", message("m", "")).await.status, 200);
    let text = app.metrics().await;
    for name in names_used_in_deploy()
        .into_iter()
        .filter(|n| !is_spool_metric(n))
    {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "deploy/ uses {name}, which /metrics lacks:\n{text}"
        );
    }
}

/// The spool's names in deploy/ against the binary run with `spool_dir` and
/// one fire-and-forget message (so the sync histogram has a sample).
#[tokio::test(flavor = "multi_thread")]
async fn every_spool_metric_in_alerts_and_dashboard_exists() {
    use aep_standin::StandInConfig;

    use crate::cli::{inletd, Daemon};

    let (upstream, _) = background_standin(StandInConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let mut command = inletd();
    command.env("INLETD_SPOOL_DIR", &spool_dir);
    let mut daemon =
        tokio::task::block_in_place(|| Daemon::start(command, &["--upstream", &upstream]));
    daemon.keep_reading_logs();
    let client = reqwest::Client::new();
    let answer = client
        .post(daemon.url("/collection/c"))
        .header("prefer", "respond-async")
        .body(message("m", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202, "fire-and-forget with spool_dir");
    let metrics_url = format!("http://127.0.0.1:{}/metrics", daemon.admin);
    let text = client
        .get(metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spool: Vec<String> = names_used_in_deploy()
        .into_iter()
        .filter(|n| is_spool_metric(n))
        .collect();
    assert!(spool.len() >= 5, "{spool:?}");
    for name in spool {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "deploy/ uses {name}, which /metrics with spool_dir lacks:\n{text}"
        );
    }
}

struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus_available() -> bool {
    let found = Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let msg = "SKIPPED real-Prometheus test: `prometheus` is not installed. \
                   Install it with `apt-get install prometheus` (Debian) or run .ci/run.";
        assert!(std::env::var_os("CI").is_none(), "{msg} (CI must run it)");
        eprintln!("\n!!!!!!!! {msg}\n");
    }
    found
}

fn start_prometheus(target: std::net::SocketAddr, listen: u16) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: inletd\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{listen}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    Prometheus { child, _dir: dir }
}

async fn query(client: &reqwest::Client, port: u16, q: &str) -> Option<f64> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    let response = client.get(url).query(&[("query", q)]).send().await.ok()?;
    let body: Value = serde_json::from_str(&response.text().await.ok()?).ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn a_real_prometheus_reads_the_right_values() {
    if !prometheus_available() {
        return;
    }
    let app = Arc::new(TestApp::start(|c| c.max_batch_messages = 10).await);
    let port = free_port();
    let _prometheus = start_prometheus(app.admin, port);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { app.send("c", message(&format!("p{i}"), "")).await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let batches = app.standin.batch_requests() as f64;
    let client = reqwest::Client::new();
    let expect = [
        ("inletd_messages_received_total", 40.0),
        (r#"inletd_message_results_total{status="200"}"#, 40.0),
        ("sum(inletd_batches_sent_total)", batches),
        (r#"inletd_upstream_requests_total{status="207"}"#, batches),
        ("inletd_batch_messages_count", batches),
        ("inletd_batch_messages_sum", 40.0),
        ("inletd_message_wait_seconds_count", 40.0),
        ("inletd_buffered_messages", 0.0),
    ];
    for (q, want) in expect {
        let client = client.clone();
        eventually(&format!("prometheus reports {q} = {want}"), || {
            let client = client.clone();
            async move { query(&client, port, q).await == Some(want) }
        })
        .await;
    }
    let p99 = "histogram_quantile(0.99, sum by (le) (inletd_message_wait_seconds_bucket))";
    let client2 = client.clone();
    eventually("a p99 wait can be computed from the histogram", || {
        let client = client2.clone();
        async move { query(&client, port, p99).await.is_some_and(|v| v > 0.0) }
    })
    .await;
}
