//! Fan-out: every producer gets the result of its own message.

use std::collections::HashMap;
use std::sync::Arc;

use crate::support::{message, TestApp};

#[tokio::test]
async fn concurrent_producers_each_get_their_own_xaction_id() {
    let app = Arc::new(TestApp::start(|c| c.max_batch_messages = 50).await);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let body = message(&format!("m{i}"), "");
            let answer = app.send("conn1", body.clone()).await;
            (body, answer)
        }));
    }
    let mut given = HashMap::new();
    for t in tasks {
        let (body, answer) = t.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body["syncValidation"]["skipped"], true);
        assert!(
            answer.body["inletId"].is_string() && answer.body["receivedTimeMs"].is_u64(),
            "{}",
            answer.text
        );
        given.insert(body, answer.body["xactionId"].as_str().unwrap().to_owned());
    }
    let delivered = app.standin.delivered();
    assert_eq!(delivered.len(), 300, "each message delivered exactly once");
    for d in &delivered {
        assert_eq!(
            given.get(&d.message),
            Some(&d.xaction_id),
            "producer got another message's id"
        );
    }
    let batches = app.standin.batch_requests();
    assert!(
        batches < 300,
        "messages travelled in batches ({batches} requests)"
    );
    assert!(app
        .standin
        .requests()
        .iter()
        .all(|r| r.path.starts_with("/collection/batch/conn1")));
}

#[tokio::test]
async fn message_bytes_travel_as_received() {
    let app = TestApp::start(|_| {}).await;
    let odd = "{ \"header\" : {\"imsOrgId\":\"ORG@AdobeOrg\"},\n \"body\":{\"n\":1.50,\"e\":1e3,\"u\":\"\\u00e9\"} }";
    let answer = app.send("c", format!("  {odd}\n")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        app.standin.delivered()[0].message,
        odd,
        "no re-serialisation"
    );
    let sent = &app.standin.requests()[0];
    assert_eq!(
        &sent.body[..],
        format!("{{\"messages\":[{odd}]}}").as_bytes()
    );
}

#[tokio::test]
async fn a_batching_client_gets_one_entry_per_message_in_its_order() {
    let app = TestApp::start(|c| c.max_batch_messages = 2).await;
    let ok = |i: usize| message(&format!("b{i}"), "");
    let no_body = r#"{"header":{"imsOrgId":"ORG@AdobeOrg"}}"#;
    let body = format!(
        r#"{{"messages":[{},{},7,{},{no_body},{}]}}"#,
        ok(0),
        ok(1),
        ok(2),
        ok(3)
    );
    let answer = app.post("/collection/batch/c", body, &[]).await;
    assert_eq!(answer.status, 207, "{}", answer.text);
    let r = answer.body["responses"].as_array().unwrap();
    assert_eq!(r.len(), 6);
    let delivered = app.standin.delivered();
    let id_of = |m: &str| {
        delivered
            .iter()
            .find(|d| d.message == m)
            .map(|d| d.xaction_id.clone())
    };
    for (pos, i) in [(0, 0), (1, 1), (3, 2), (5, 3)] {
        assert_eq!(
            r[pos]["xactionId"].as_str().map(str::to_owned),
            id_of(&ok(i)),
            "entry {pos}"
        );
    }
    assert_eq!(
        r[2]["statusCode"], 400,
        "a non-object entry is refused alone"
    );
    assert_eq!(
        r[4]["statusCode"], 400,
        "the upstream's per-message 400 is passed on"
    );
    assert!(
        app.standin.batch_requests() >= 2,
        "its messages travelled in several upstream batches"
    );
}
