//! One-to-one forwarding: syncValidation=true and raw data.

use crate::support::{message, TestApp};

#[tokio::test]
async fn sync_validation_goes_one_to_one_and_comes_back_as_it_came() {
    let app = TestApp::start(|_| {}).await;
    let body = message("v", "");
    let a = app
        .post(
            "/collection/c?syncValidation=True",
            body.clone(),
            &[("authorization", "Bearer t"), ("x-custom", "1")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.body["syncValidation"]["status"], "pass",
        "the upstream's own answer: {}",
        a.text
    );
    let r = &app.standin.requests()[0];
    assert_eq!(r.path, "/collection/c");
    assert_eq!(r.query.as_deref(), Some("syncValidation=True"));
    assert_eq!(&r.body[..], body.as_bytes());
    assert!(
        r.headers.iter().any(|(k, v)| k == "x-custom" && v == "1"),
        "headers unchanged"
    );
    assert_eq!(app.standin.batch_requests(), 0);
    let invalid = app
        .post("/collection/c?syncValidation=true", r#"{"header":{}}"#, &[])
        .await;
    assert_eq!(
        invalid.status, 400,
        "the upstream's validation answer: {}",
        invalid.text
    );
}

#[tokio::test]
async fn raw_data_with_a_flow_id_is_forwarded_unchanged() {
    let app = TestApp::start(|_| {}).await;
    let a = app
        .post(
            "/collection/c",
            "raw,csv,line",
            &[("x-adobe-flow-id", "flow-1")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(&app.standin.requests()[0].body[..], b"raw,csv,line");
    let a = app
        .post("/collection/c?x-adobe-flow-id=flow-2", "{\"any\":1}", &[])
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(app.standin.requests()[1].path, "/collection/c");
}

#[tokio::test]
async fn sync_validation_false_is_batched_as_usual() {
    let app = TestApp::start(|_| {}).await;
    let a = app
        .post("/collection/c?syncValidation=False", message("m", ""), &[])
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["syncValidation"]["skipped"], true);
    assert_eq!(app.standin.batch_requests(), 1);
}
