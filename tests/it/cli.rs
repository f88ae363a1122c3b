//! The `inletd` binary itself: start-up errors, --help, check-config, and a
//! real SIGTERM drain.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use aep_standin::StandInConfig;
use inletd::config::KEYS;

use crate::support::{background_standin, free_port, message};

pub fn inletd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_inletd"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("inletd runs");
    let code = out.status.code().unwrap_or(-1);
    (
        code,
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The `inletd` binary running on free 127.0.0.1 ports, once it said it is ready.
pub struct Daemon {
    pub child: std::process::Child,
    pub listen: u16,
    pub admin: u16,
    lines: Option<std::io::Lines<BufReader<std::process::ChildStderr>>>,
}

impl Daemon {
    pub fn start(mut command: Command, args: &[&str]) -> Daemon {
        let (listen, admin) = (free_port(), free_port());
        let mut child = command
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("inletd ready"));
        assert!(ready, "inletd never said it was ready");
        Daemon {
            child,
            listen,
            admin,
            lines: Some(lines),
        }
    }

    /// Reads the rest of the child's log in a thread, so a chatty child never
    /// blocks on a full stderr pipe.
    pub fn keep_reading_logs(&mut self) {
        if let Some(lines) = self.lines.take() {
            std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        }
    }

    /// The next line of the child's log that `want` accepts (panics if the log
    /// ends first). Blocks: call it once the line is due, e.g. after an answer.
    pub fn log_line(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let lines = self.lines.as_mut().expect("the log is still read here");
        lines
            .map_while(Result::ok)
            .find(|l| want(l))
            .unwrap_or_else(|| panic!("inletd's log ended without {what}"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bad_values_stop_start_up_naming_the_key() {
    let (code, _, err) = run(inletd().args(["--linger", "soon"]));
    assert_ne!(code, 0);
    assert!(err.contains("--linger"), "{err}");

    let (code, _, err) = run(inletd()
        .env("INLETD_MAX_BATCH_BYTES", "5000000")
        .arg("check-config"));
    assert_ne!(code, 0);
    assert!(err.contains("max_batch_bytes"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inletd.toml");
    std::fs::write(&file, "linger = \"5ms\"\nmax_batch_mesages = 3\n").unwrap();
    let (code, _, err) = run(inletd().arg("--config").arg(&file).arg("check-config"));
    assert_ne!(code, 0);
    assert!(err.contains("max_batch_mesages"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let (code, _, err) = run(inletd().args(["--listen", &taken, "--admin-listen", "127.0.0.1:0"]));
    assert_ne!(code, 0, "a taken port stops start-up");
    assert!(err.contains("`listen`"), "{err}");
}

#[test]
fn help_documents_every_key_with_its_default() {
    let (code, out, _) = run(inletd().arg("--help"));
    assert_eq!(code, 0);
    for key in KEYS {
        let flag = format!("--{}", key.replace('_', "-"));
        assert!(out.contains(&flag), "{flag} missing from --help");
    }
    assert!(out.contains("[default: 20ms]"), "{out}");
}

#[test]
fn version_names_the_build() {
    let (code, out, _) = run(inletd().arg("--version"));
    assert_eq!(code, 0);
    // `inletd 0.1.0 (revision 1a2b3c4d5e6f, built 2026-11-29)`, or `revision unknown` without git.
    let rest = out
        .trim()
        .strip_prefix(&format!("inletd {} (revision ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{out}"));
    let (revision, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        revision == "unknown"
            || (revision.len() >= 7 && revision.bytes().all(|b| b.is_ascii_hexdigit())),
        "{out}"
    );
    let date: Vec<&str> = date.split('-').collect();
    assert!(
        date.len() == 3 && date.iter().all(|p| p.parse::<u32>().is_ok()),
        "{out}"
    );
}

#[test]
fn check_config_prints_the_layered_values() {
    let (code, out, err) =
        run(inletd()
            .env("INLETD_LINGER", "75ms")
            .args(["--max-in-flight", "3", "check-config"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("linger = \"75ms\""), "{out}");
    assert!(out.contains("max_in_flight = 3\n"), "{out}");
    // The output is itself a valid configuration.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("effective.toml");
    let body: String = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, body).unwrap();
    let (code, again, err) = run(inletd().arg("--config").arg(&file).arg("check-config"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, out);
}

#[test]
fn check_config_warns_about_unsafe_combinations_and_unknown_variables() {
    let (code, out, err) = run(inletd()
        .env("INLETD_SHUTDOWN_GRACE", "5s")
        .env("INLETD_REQUEST_TIMEOUT", "10s")
        .env("INLETD_MAX_INFLIGHT", "3")
        .arg("check-config"));
    assert_eq!(code, 0, "warnings do not refuse: {err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        warnings[0].contains("shutdown_grace") && warnings[0].contains("request_timeout"),
        "{err}"
    );
    assert!(warnings[1].contains("INLETD_MAX_INFLIGHT"), "{err}");
    assert!(out.contains("shutdown_grace = \"5s\""), "{out}");
    assert!(
        !out.contains("warning"),
        "stdout stays a config file: {out}"
    );

    let (code, _, err) = run(inletd().arg("check-config"));
    assert_eq!(code, 0);
    assert!(
        !err.contains("warning"),
        "the defaults warn about nothing: {err}"
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let (upstream, handle) = background_standin(StandInConfig::default()).await;
    // A message with nothing in flight leaves at once (flush reason idle), whatever
    // the linger: the delay keeps it unanswered until SIGTERM, so the wait below
    // cannot miss it.
    handle.push_faults([aep_standin::Fault::Delay { ms: 1_000 }]);
    let mut daemon = Daemon::start(
        inletd(),
        &[
            "--upstream",
            &upstream,
            "--linger",
            "1h",
            // linger must be shorter than request_timeout.
            "--request-timeout",
            "2h",
            "--log-format",
            "json",
        ],
    );
    let waiting = send_one_and_wait_for(&daemon, "inletd_buffered_messages").await;
    send_signal(&daemon, "-TERM");
    let answer = waiting.await.unwrap();
    assert_eq!(
        answer.status, 200,
        "flushed at shutdown despite a 1h linger: {}",
        answer.text
    );
    let rest: Vec<String> = daemon
        .lines
        .take()
        .into_iter()
        .flatten()
        .map_while(Result::ok)
        .collect();
    let status = daemon.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("drain complete")),
        "{rest:?}"
    );
    assert_eq!(handle.delivered().len(), 1);
}

/// A one-shot HTTP proxy stand-in: records the request line, answers a 207 for one message.
async fn fake_proxy() -> (std::net::SocketAddr, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the body of the (small) request has arrived.
        while !seen.windows(2).any(|w| w == b"]}") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"inletId":"i","batchId":"b","receivedTimeMs":1,"responses":[{"xactionId":"via-proxy"}]}"#;
        let answer = format!(
            "HTTP/1.1 207 Multi-Status\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
        let text = String::from_utf8_lossy(&seen).into_owned();
        text.lines().next().unwrap_or_default().to_owned()
    });
    (addr, task)
}

#[tokio::test]
async fn the_usual_proxy_variables_are_honoured() {
    let (proxy, seen) = fake_proxy().await;
    // The upstream host does not resolve: only the proxy can have carried the request.
    let mut command = inletd();
    command.env("HTTP_PROXY", format!("http://{proxy}"));
    let daemon = Daemon::start(
        command,
        &["--upstream", "http://aep.invalid", "--linger", "1ms"],
    );
    let url = daemon.url("/collection/c");
    let answer = crate::support::post(&reqwest::Client::new(), &url, message("m", ""), &[]).await;
    drop(daemon);
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["xactionId"], "via-proxy");
    assert_eq!(
        seen.await.unwrap(),
        "POST http://aep.invalid/collection/batch/c HTTP/1.1"
    );
}

#[test]
fn healthcheck_probes_a_running_inletd() {
    let daemon = Daemon::start(inletd(), &["--upstream", "http://127.0.0.1:9"]);
    let healthz = format!("http://127.0.0.1:{}/healthz", daemon.admin);
    let (code, _, err) = run(inletd().args(["healthcheck", "--url", &healthz]));
    assert_eq!(code, 0, "{err}");
    // The producers' port has no /healthz: its 404 is unhealthy, and says so.
    let wrong = daemon.url("/healthz");
    let (code, _, err) = run(inletd().args(["healthcheck", "--url", &wrong]));
    assert_eq!(code, 1);
    assert!(err.contains("answered 404"), "{err}");
    drop(daemon);
    let (code, _, err) = run(inletd().args(["healthcheck", "--url", &healthz]));
    assert_eq!(code, 1, "nothing listens any more");
    assert!(err.contains("cannot connect"), "{err}");
}

/// Sends `signal` (`-TERM`, `-HUP`) to the daemon.
/// Sends one message in the background and waits until `gauge` reaches 1:
/// the message is held inside inletd. The task yields its answer.
async fn send_one_and_wait_for(
    daemon: &Daemon,
    gauge: &str,
) -> tokio::task::JoinHandle<crate::support::Answer> {
    let url = daemon.url("/collection/c");
    let waiting = tokio::spawn(async move {
        crate::support::post(&reqwest::Client::new(), &url, message("m", ""), &[]).await
    });
    let metrics_url = format!("http://127.0.0.1:{}/metrics", daemon.admin);
    crate::support::wait_for_metric(&metrics_url, gauge, 1.0).await;
    waiting
}

fn send_signal(daemon: &Daemon, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &daemon.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[tokio::test]
async fn an_incomplete_drain_exits_three() {
    let (upstream, handle) = background_standin(StandInConfig::default()).await;
    handle.push_faults([aep_standin::Fault::Hang]);
    let mut daemon = Daemon::start(
        inletd(),
        &[
            "--upstream",
            &upstream,
            "--linger",
            "1ms",
            "--request-timeout",
            "1h",
            "--shutdown-grace",
            "200ms",
        ],
    );
    let waiting = send_one_and_wait_for(&daemon, "inletd_in_flight_requests").await;
    send_signal(&daemon, "-TERM");
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status, 503, "{}", answer.text);
    let rest: Vec<String> = daemon
        .lines
        .take()
        .into_iter()
        .flatten()
        .map_while(Result::ok)
        .collect();
    let status = daemon.child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("drain incomplete")),
        "{rest:?}"
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let (code, out, _) = run(inletd().arg("--help"));
    assert_eq!(code, 0);
    assert!(out.contains("Exit codes:"), "{out}");
    assert!(
        out.contains("3  stopped after an incomplete drain"),
        "{out}"
    );
}

impl Daemon {
    /// The rest of the log, line by line, read in a thread (which keeps
    /// reading, so the child never blocks on a full pipe).
    fn log(&mut self) -> std::sync::mpsc::Receiver<String> {
        let lines = self.lines.take().expect("the log is still read here");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    }
}

/// The next log line that contains `text`. The bound only stops a hung test.
fn wait_for_log(log: &std::sync::mpsc::Receiver<String>, text: &str) -> String {
    loop {
        match log.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(line) if line.contains(text) => return line,
            Ok(_) => {}
            Err(e) => panic!("the log never said {text:?} ({e})"),
        }
    }
}

#[tokio::test]
async fn sighup_reloads_the_log_level_and_keeps_serving() {
    let (upstream, _) = background_standin(StandInConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inletd.toml");
    std::fs::write(&file, "log_level = \"info\"\nlinger = \"1ms\"\n").unwrap();
    let mut command = inletd();
    command.arg("--config").arg(&file);
    let mut daemon = Daemon::start(command, &["--upstream", &upstream]);

    std::fs::write(&file, "log_level = \"inletd=debug\"\nlinger = \"5ms\"\n").unwrap();
    send_signal(&daemon, "-HUP");
    // The keys that need a restart are named first, then the level applied.
    let log = daemon.log();
    let line = wait_for_log(&log, "take effect only at the next start");
    assert!(line.contains("linger"), "{line}");
    let line = wait_for_log(&log, "log level reloaded");
    assert!(line.contains("inletd=debug"), "{line}");

    let url = daemon.url("/collection/c");
    let answer = crate::support::post(&reqwest::Client::new(), &url, message("m", ""), &[]).await;
    assert_eq!(
        answer.status, 200,
        "still serving after SIGHUP: {}",
        answer.text
    );
    // The new level is in force: the batcher's debug line for the flush is written.
    let line = wait_for_log(&log, "flush");
    assert!(line.contains("DEBUG"), "{line}");
    assert!(daemon.child.try_wait().unwrap().is_none(), "still running");
}

#[test]
fn healthcheck_follows_admin_listen_of_the_layered_configuration() {
    let daemon = Daemon::start(inletd(), &["--upstream", "http://127.0.0.1:9"]);
    let admin = format!("127.0.0.1:{}", daemon.admin);
    let producers = format!("127.0.0.1:{}", daemon.listen);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inletd.toml");
    std::fs::write(&file, format!("admin_listen = \"{admin}\"\n")).unwrap();
    let (code, _, err) = run(inletd().arg("healthcheck").arg("--config").arg(&file));
    assert_eq!(code, 0, "the file's admin_listen is probed: {err}");

    let (code, _, err) = run(inletd()
        .env("INLETD_ADMIN_LISTEN", &admin)
        .arg("healthcheck"));
    assert_eq!(code, 0, "the environment's admin_listen is probed: {err}");

    // Flags win over the file: the producers' port has no /healthz.
    let (code, _, err) = run(inletd()
        .args(["--admin-listen", &producers, "healthcheck", "--config"])
        .arg(&file));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&producers) && err.contains("answered 404"),
        "{err}"
    );

    // --url wins over all of them.
    let healthz = format!("http://{admin}/healthz");
    let (code, _, err) = run(inletd().args([
        "--admin-listen",
        &producers,
        "healthcheck",
        "--url",
        &healthz,
    ]));
    assert_eq!(code, 0, "{err}");

    std::fs::write(&file, "admin_listen = \"nowhere\"\n").unwrap();
    let (code, _, err) = run(inletd().arg("healthcheck").arg("--config").arg(&file));
    assert_eq!(code, 2, "a bad configuration is reported: {err}");
    assert!(err.contains("admin_listen"), "{err}");
}
