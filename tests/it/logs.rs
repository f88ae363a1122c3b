//! What the `inletd` binary writes to stderr: plain text off a terminal, flat
//! JSON, and a line naming the producer's connection id for each answer that
//! is not a success (the runbook's "find the producer in inletd's logs").

use aep_standin::StandInConfig;
use serde_json::Value;

use crate::cli::{inletd, Daemon};
use crate::support::{background_standin, message, post};

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_400_and_a_per_message_4xx_are_logged_as_flat_json_naming_the_producer() {
    let upstream = background_standin(StandInConfig::default()).await.0;
    let mut daemon = Daemon::start(inletd(), &["--upstream", &upstream, "--log-format", "json"]);
    let client = reqwest::Client::new();

    let body = r#"{"secret-body-text": "#.to_owned();
    let a = post(&client, &daemon.url("/collection/shop-checkout"), body, &[]).await;
    assert_eq!(a.status, 400, "{}", a.text);
    let line = daemon.log_line("the 400's line", |l| l.contains("shop-checkout"));
    let v = json(&line);
    assert_eq!(v["connection_id"], "shop-checkout", "{line}");
    assert_eq!(v["status"], 400, "{line}");
    assert_eq!(v["level"], "WARN", "{line}");
    assert!(
        v["reason"].as_str().is_some_and(|r| r.contains("JSON")),
        "{line}"
    );
    assert!(
        v["message"].is_string(),
        "flat: the message at the top level: {line}"
    );
    assert!(
        v.get("fields").is_none(),
        "flat: nothing nested under fields: {line}"
    );
    assert!(!line.contains("secret-body-text"), "never a body: {line}");

    // An id that fails its check is logged escaped: no line can be forged.
    let forged = "/collection/x%0A%7B%22level%22:%22INFO%22%7D";
    let a = post(&client, &daemon.url(forged), message("m", ""), &[]).await;
    assert_eq!(a.status, 400, "{}", a.text);
    let line = daemon.log_line("the bad id's line", |l| l.contains("connection id"));
    assert_eq!(
        json(&line)["connection_id"],
        r#"x\n{\"level\":\"INFO\"}"#,
        "{line}"
    );

    let rejected = message("bad", r#","standin":{"status":400}"#);
    let batch = format!(r#"{{"messages":[{},{rejected}]}}"#, message("ok", ""));
    let a = post(
        &client,
        &daemon.url("/collection/batch/shop-cart"),
        batch,
        &[],
    )
    .await;
    assert_eq!(a.status, 207, "{}", a.text);
    assert_eq!(a.body["responses"][1]["statusCode"], 400, "{}", a.text);
    let line = daemon.log_line("the per-message 400's line", |l| l.contains("shop-cart"));
    let v = json(&line);
    assert_eq!(v["connection_id"], "shop-cart", "{line}");
    assert_eq!(v["status"], 400, "{line}");
    assert_eq!(
        (v["messages"].as_u64(), v["of"].as_u64()),
        (Some(1), Some(2)),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn text_logs_off_a_terminal_carry_no_colour_codes() {
    let upstream = background_standin(StandInConfig::default()).await.0;
    let mut daemon = Daemon::start(inletd(), &["--upstream", &upstream]);
    let client = reqwest::Client::new();
    let a = post(
        &client,
        &daemon.url("/collection/plain-text"),
        "[".into(),
        &[],
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.text);
    let line = daemon.log_line("the 400's line", |l| l.contains("plain-text"));
    assert!(
        !line.contains('\u{1b}'),
        "ANSI escape in a piped log: {line:?}"
    );
    assert!(
        line.contains("WARN") && line.contains("status=400"),
        "{line}"
    );
}
