//! The production path: HTTPS to the upstream. The stand-in serves TLS with a
//! CA generated for the test; inletd trusts it only through
//! `upstream_ca_file`, as it would a corporate proxy's CA.

use std::io::Write;

use aep_standin::{Alpn, StandIn, StandInConfig, StandInTls};
use inletd::config::{OptionalPath, UpstreamUrl};

use crate::cli::{inletd, Daemon};
use crate::connect_proxy::ConnectProxy;
use crate::support::{message, post, TestApp};

/// A fresh CA and server certificate, and a file holding the CA in PEM.
fn standin_tls(alpn: Alpn) -> (StandInTls, tempfile::NamedTempFile) {
    standin_tls_named("inletd-it", alpn)
}

fn standin_tls_named(name: &str, alpn: Alpn) -> (StandInTls, tempfile::NamedTempFile) {
    let tls = StandInTls::generate(name, alpn).expect("certificates generate");
    let file = ca_file(tls.ca_pem());
    (tls, file)
}

fn ca_file(pem: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(pem.as_bytes()).expect("CA written");
    file
}

fn https(upstream: &UpstreamUrl) -> UpstreamUrl {
    let text = upstream.as_str().replacen("http://", "https://", 1);
    text.parse().expect("https URL")
}

/// inletd over HTTPS to a stand-in that offers `alpn`, trusting `ca`.
async fn start(tls: StandInTls, ca: &tempfile::NamedTempFile) -> TestApp {
    let standin = StandInConfig {
        tls: Some(tls),
        ..StandInConfig::default()
    };
    let ca = ca.path().to_owned();
    TestApp::start_with(standin, move |c| {
        c.upstream = https(&c.upstream);
        c.upstream_ca_file = OptionalPath(Some(ca));
    })
    .await
}

async fn delivered_over(alpn: Alpn) -> String {
    let (tls, ca) = standin_tls(alpn);
    let app = start(tls, &ca).await;
    let answer = app.send("c", message("m1", "")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.body["xactionId"].is_string(), "{}", answer.text);
    let requests = app.standin.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(app.standin.delivered().len(), 1);
    app.stop().await;
    requests[0].version.clone()
}

#[tokio::test]
async fn delivers_over_https_with_h2_when_offered() {
    assert_eq!(delivered_over(Alpn::Both).await, "HTTP/2.0");
    assert_eq!(delivered_over(Alpn::H2).await, "HTTP/2.0");
}

#[tokio::test]
async fn delivers_over_https_with_http1_when_only_that_is_offered() {
    assert_eq!(delivered_over(Alpn::Http1).await, "HTTP/1.1");
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_is_refused_naming_the_key() {
    let (tls, _right) = standin_tls(Alpn::Both);
    // As a re-signing proxy's CA would be: not the one that signed the certificate.
    let (_, wrong) = standin_tls_named("corporate-proxy", Alpn::Both);
    let app = start(tls, &wrong).await;
    let answer = app.send("c", message("m1", "")).await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    let error = answer.body["message"].as_str().unwrap_or(&answer.text);
    assert!(error.contains("`upstream_ca_file`"), "{error}");
    assert!(
        error.contains("not signed by a trusted root (UnknownIssuer)"),
        "{error}"
    );
    assert!(app.standin.requests().is_empty(), "nothing got through");
}

#[tokio::test]
async fn without_the_ca_file_the_compiled_in_roots_do_not_trust_a_private_ca() {
    let (tls, _ca) = standin_tls(Alpn::Both);
    let standin = StandInConfig {
        tls: Some(tls),
        ..StandInConfig::default()
    };
    let app = TestApp::start_with(standin, |c| c.upstream = https(&c.upstream)).await;
    let answer = app.send("c", message("m1", "")).await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert!(answer.text.contains("upstream_ca_file"), "{}", answer.text);
    assert!(answer.text.contains("now unset"), "{}", answer.text);
}

#[test]
fn a_missing_or_bad_ca_file_stops_start_up_naming_the_key() {
    let garbage = ca_file("not a certificate\n");
    let garbage = garbage.path().to_str().expect("UTF-8 temp path");
    for path in ["/nonexistent/inletd-ca.pem", garbage] {
        let out = inletd()
            .args(["--upstream-ca-file", path])
            .output()
            .expect("inletd runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains("upstream_ca_file") && err.contains(path),
            "{err}"
        );
    }
}

/// The daemon with `HTTPS_PROXY` set: the batch goes through one CONNECT
/// tunnel to the stand-in, TLS inside it checked against `upstream_ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_tunnels_with_connect() {
    let (tls, ca) = standin_tls(Alpn::Both);
    let config = StandInConfig {
        tls: Some(tls),
        ..StandInConfig::default()
    };
    let standin = StandIn::bind("127.0.0.1:0".parse().expect("address"), config)
        .await
        .expect("stand-in binds");
    let backend = standin.local_addr();
    let handle = standin.handle();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(standin.run(async move { stopped.cancelled().await }));
    let proxy = ConnectProxy::start(backend).await;

    let mut command = inletd();
    command.env("HTTPS_PROXY", format!("http://{}", proxy.addr));
    // `localhost` is in the certificate; the proxy, not DNS, decides where it goes.
    let upstream = format!("https://localhost:{}", backend.port());
    let ca = ca.path().to_str().expect("UTF-8 temp path").to_owned();
    let mut daemon = tokio::task::spawn_blocking(move || {
        Daemon::start(
            command,
            &[
                "--upstream",
                &upstream,
                "--upstream-ca-file",
                &ca,
                "--linger",
                "1ms",
            ],
        )
    })
    .await
    .expect("daemon starts");
    daemon.keep_reading_logs();

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let answer = post(
        &client,
        &daemon.url("/collection/c"),
        message("m1", ""),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        proxy.targets(),
        vec![format!("localhost:{}", backend.port())]
    );
    assert_eq!(handle.delivered().len(), 1);
    drop(daemon);
    stop.cancel();
}

/// `upstream_system_roots` trusts the system store, which `SSL_CERT_FILE`
/// points at here (the test cannot change the machine's store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_store_is_trusted_only_when_asked() {
    let (tls, ca) = standin_tls(Alpn::Both);
    let config = StandInConfig {
        tls: Some(tls),
        ..StandInConfig::default()
    };
    let standin = StandIn::bind("127.0.0.1:0".parse().expect("address"), config)
        .await
        .expect("stand-in binds");
    let upstream = format!("https://{}", standin.local_addr());
    let handle = standin.handle();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(standin.run(async move { stopped.cancelled().await }));
    let ca = ca.path().to_str().expect("UTF-8 temp path").to_owned();

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for (system_roots, expected) in [("false", 502), ("true", 200)] {
        let mut command = inletd();
        command.env("SSL_CERT_FILE", &ca);
        let args = [
            "--upstream",
            upstream.as_str(),
            "--upstream-system-roots",
            system_roots,
            "--linger",
            "1ms",
            "--max-retries",
            "0",
        ]
        .map(str::to_owned);
        let mut daemon = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Daemon::start(command, &args)
        })
        .await
        .expect("daemon starts");
        daemon.keep_reading_logs();
        let answer = post(
            &client,
            &daemon.url("/collection/c"),
            message(system_roots, ""),
            &[],
        )
        .await;
        assert_eq!(answer.status, expected, "{system_roots}: {}", answer.text);
    }
    assert_eq!(handle.delivered().len(), 1, "only with the system store");
    stop.cancel();

    // Asked for, but the store holds nothing usable: start-up stops.
    let empty = ca_file("no certificates here\n");
    let out = inletd()
        .env("SSL_CERT_FILE", empty.path())
        .env("SSL_CERT_DIR", "/nonexistent")
        .args(["--upstream-system-roots", "true", "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .output()
        .expect("inletd runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("`upstream_system_roots`"), "{err}");
}
