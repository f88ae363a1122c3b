//! The `inletd` binary holding IMS credentials: where the secret may come
//! from (environment, file; refused in TOML and as a flag), the start-up
//! errors naming missing keys, and the secret and tokens absent from its
//! debug log, `/metrics`, `/readyz`, `check-config` and error bodies.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cli::{inletd, run};
use crate::ims::{ims_standin, CLIENT, ORG, SECRET};
use crate::support::{background_standin, eventually, free_port, message, post};

/// The secret as a form body carries it: must not show either.
fn encoded_secret() -> String {
    serde_urlencoded::to_string([("s", SECRET)]).unwrap()[2..].to_owned()
}

/// `inletd` with the IMS keys for the stand-in at `upstream` (no secret).
fn with_ims_keys(upstream: &str) -> Command {
    let mut command = inletd();
    command
        .args(["--upstream", upstream])
        .args(["--ims-client-id", CLIENT, "--ims-org-id", ORG])
        .args(["--ims-scopes", "openid,AdobeID"])
        .args(["--ims-token-url", &format!("{upstream}/ims/token/v3")]);
    command
}

/// The daemon, its stderr going to `log`; returns once it said it is ready.
struct Running {
    child: Child,
    listen: u16,
    admin: u16,
}

impl Running {
    async fn start(mut command: Command, log: &Path) -> Running {
        let (listen, admin) = (free_port(), free_port());
        let child = command
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
            .spawn()
            .unwrap();
        eventually("inletd says it is ready", || async {
            std::fs::read_to_string(log).is_ok_and(|l| l.contains("inletd ready"))
        })
        .await;
        Running {
            child,
            listen,
            admin,
        }
    }

    async fn send(&self, client: &reqwest::Client, id: &str) -> crate::support::Answer {
        let url = format!("http://127.0.0.1:{}/collection/c", self.listen);
        post(client, &url, message(id, ""), &[]).await
    }

    async fn admin(&self, client: &reqwest::Client, path: &str) -> String {
        let url = format!("http://127.0.0.1:{}{path}", self.admin);
        client.get(url).send().await.unwrap().text().await.unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_and_the_tokens_appear_in_no_log_metric_or_output() {
    let (upstream, standin) = background_standin(ims_standin(Duration::from_secs(86_399))).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("inletd.log");
    let mut command = with_ims_keys(&upstream);
    command
        .env("INLETD_IMS_CLIENT_SECRET", SECRET)
        .env("INLETD_LOG_LEVEL", "debug");
    let daemon = Running::start(command, &log).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let mut shown = Vec::new();
    let answer = daemon.send(&client, "m1").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    // A refused token: logged rejection, one refresh, one resend.
    standin.ims().revoke_issued();
    let answer = daemon.send(&client, "m2").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    // A token refused for good: the producers' error body.
    standin.ims().reject_all(true);
    let answer = daemon.send(&client, "m3").await;
    assert_eq!(answer.status, 401, "{}", answer.text);
    shown.push(answer.text);
    shown.push(daemon.admin(&client, "/metrics").await);
    shown.push(daemon.admin(&client, "/readyz").await);
    // The refusal of m3 came within the cool-down of m2's refresh: no third fetch.
    assert_eq!(standin.ims().requests(), 2);
    drop(daemon);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("IMS token obtained"), "{log}");
    assert!(log.contains("DEBUG"), "a debug log: {log}");
    shown.push(log);

    let (code, out, err) = run(with_ims_keys(&upstream)
        .env("INLETD_IMS_CLIENT_SECRET", SECRET)
        .arg("check-config"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("): set"), "{out}");
    shown.push(out + &err);

    let tokens = standin.ims().issued();
    assert_eq!(tokens.len(), 2);
    for text in &shown {
        assert!(!text.contains(SECRET), "the secret in: {text}");
        assert!(!text.contains(&encoded_secret()), "the secret in: {text}");
        for token in &tokens {
            assert!(!text.contains(token.as_str()), "a token in: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_may_come_from_a_file() {
    let (upstream, standin) = background_standin(ims_standin(Duration::from_secs(86_399))).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client-secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let mut command = with_ims_keys(&upstream);
    command.arg("--ims-client-secret-file").arg(&file);
    let daemon = Running::start(command, &dir.path().join("inletd.log")).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = daemon.send(&client, "m").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let secret = standin.ims().seen()[0].fields.clone();
    assert!(secret.contains(&("client_secret".into(), SECRET.into())));

    let (code, out, err) = run(with_ims_keys(&upstream)
        .arg("--ims-client-secret-file")
        .arg(&file)
        .arg("check-config"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("): set"), "{out}");
}

#[test]
fn the_secret_is_refused_as_a_toml_key_or_a_flag_saying_where_it_may_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("inletd.toml");
    std::fs::write(&toml, format!("ims_client_secret = {SECRET:?}\n")).unwrap();
    let from_toml = run(inletd().arg("--config").arg(&toml).arg("check-config"));
    let from_flag = run(inletd().args(["--ims-client-secret", SECRET, "check-config"]));
    for (code, out, err) in [from_toml, from_flag] {
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains("INLETD_IMS_CLIENT_SECRET"), "{err}");
        assert!(err.contains("ims_client_secret_file"), "{err}");
        assert!(!err.contains(SECRET) && !out.contains(SECRET), "{err}");
    }
}

#[test]
fn a_client_id_without_its_companions_stops_start_up_naming_the_key() {
    let upstream = "http://127.0.0.1:9";
    let (code, _, err) = run(with_ims_keys(upstream).arg("check-config"));
    assert_eq!(code, 2);
    assert!(err.contains("ims_client_secret"), "{err}");
    assert!(err.contains("INLETD_IMS_CLIENT_SECRET"), "{err}");

    let (code, _, err) = run(inletd()
        .args(["--ims-client-id", CLIENT, "--ims-scopes", "openid"])
        .env("INLETD_IMS_CLIENT_SECRET", SECRET)
        .arg("check-config"));
    assert_eq!(code, 2);
    assert!(err.contains("`ims_org_id`"), "{err}");
    assert!(!err.contains(SECRET), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, SECRET).unwrap();
    let (code, _, err) = run(with_ims_keys(upstream)
        .env("INLETD_IMS_CLIENT_SECRET", SECRET)
        .arg("--ims-client-secret-file")
        .arg(&file)
        .arg("check-config"));
    assert_eq!(code, 2, "the secret given twice");
    assert!(err.contains("twice"), "{err}");
}
