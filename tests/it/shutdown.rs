//! The drain: not ready, new requests refused with 503, accepted work
//! delivered, and a deadline after which what is left is answered 503.

use std::sync::Arc;

use aep_standin::Fault;

use crate::support::{eventually, message, ms, post, TestApp};

#[tokio::test]
async fn drain_refuses_new_work_and_delivers_accepted_work() {
    let mut app = TestApp::start(|c| c.linger = ms(10)).await;
    app.standin.push_faults([Fault::Delay { ms: 700 }]);
    let client = reqwest::Client::new();
    let (c, url) = (client.clone(), app.url("/collection/c"));
    let accepted = tokio::spawn(async move { post(&c, &url, message("accepted", ""), &[]).await });
    app.wait_for_metric("inletd_in_flight_requests", 1.0).await;
    let admin = app.admin;
    app.begin_shutdown();
    eventually("readyz turns 503", || {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://{admin}/readyz"))
                .send()
                .await
                .unwrap();
            r.status().as_u16() == 503
        }
    })
    .await;
    let late = post(&client, &app.url("/collection/c"), message("late", ""), &[]).await;
    assert_eq!(late.status, 503, "{}", late.text);
    assert!(late.headers.contains_key("retry-after"));
    assert_eq!(late.body["statusCode"], 503);
    let accepted = accepted.await.unwrap();
    assert_eq!(
        accepted.status, 200,
        "accepted work is still delivered: {}",
        accepted.text
    );
    let standin = app.standin.clone();
    let report = app.stop().await;
    assert!(report.complete, "{report:?}");
    assert_eq!(
        standin.delivered().len(),
        1,
        "the late message never went upstream"
    );
}

#[tokio::test]
async fn past_the_grace_period_what_is_left_is_answered_503() {
    let app = Arc::new(
        TestApp::start(|c| {
            c.shutdown_grace = ms(300);
            c.request_timeout = ms(60_000);
        })
        .await,
    );
    app.standin.push_faults([Fault::Hang]);
    let (client, url) = (app.client.clone(), app.url("/collection/c"));
    let waiting = tokio::spawn(async move { post(&client, &url, message("stuck", ""), &[]).await });
    app.wait_for_metric("inletd_in_flight_requests", 1.0).await;
    let app = Arc::into_inner(app).expect("only the test holds the app");
    let report = app.stop().await;
    assert!(!report.complete, "{report:?}");
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .contains("may or may not"),
        "{}",
        answer.text
    );
}
