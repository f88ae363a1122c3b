//! Credential isolation: nobody's message travels under another's token, and
//! the upstream request carries exactly its key's headers.

use std::sync::Arc;

use crate::support::{message, TestApp};

#[tokio::test]
async fn each_token_travels_only_with_its_own_messages() {
    let app = Arc::new(TestApp::start(|c| c.max_batch_messages = 10).await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let token = format!("Bearer token-{}", i % 4);
            let body = message(&format!("m{i}"), "");
            let a = app
                .post("/collection/c", body.clone(), &[("authorization", &token)])
                .await;
            assert_eq!(a.status, 200, "{}", a.text);
            (body, token)
        }));
    }
    let mut sent = std::collections::HashMap::new();
    for t in tasks {
        let (body, token) = t.await.unwrap();
        sent.insert(body, token);
    }
    for d in app.standin.delivered() {
        assert_eq!(
            d.authorization.as_ref(),
            sent.get(&d.message),
            "message sent under another token"
        );
    }
    for r in app.standin.requests() {
        let auths: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k == "authorization")
            .collect();
        assert_eq!(auths.len(), 1, "exactly one token per upstream request");
    }
}

#[tokio::test]
async fn upstream_requests_carry_exactly_the_keys_headers() {
    let app = TestApp::start(|_| {}).await;
    let headers = [
        ("authorization", "Bearer abc"),
        ("x-gw-ims-org-id", "ORG@AdobeOrg"),
        ("x-api-key", "key1"),
        ("x-sandbox-name", "dev"),
        ("x-private", "not for the upstream"),
        ("cookie", "session=1"),
    ];
    let a = app.post("/collection/c", message("m", ""), &headers).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let r = &app.standin.requests()[0];
    let get = |name: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("authorization"), Some("Bearer abc"));
    assert_eq!(get("x-gw-ims-org-id"), Some("ORG@AdobeOrg"));
    assert_eq!(get("x-api-key"), Some("key1"));
    assert_eq!(get("x-sandbox-name"), Some("dev"));
    assert_eq!(get("x-private"), None);
    assert_eq!(get("cookie"), None);
    assert_eq!(get("content-type"), Some("application/json"));
}

#[tokio::test]
async fn different_sandboxes_are_different_batches() {
    let app = Arc::new(TestApp::start(|c| c.linger = crate::support::ms(200)).await);
    let (a1, a2) = (app.clone(), app.clone());
    let one = tokio::spawn(async move {
        a1.post(
            "/collection/c",
            message("1", ""),
            &[("x-sandbox-name", "prod")],
        )
        .await
    });
    let two = tokio::spawn(async move {
        a2.post(
            "/collection/c",
            message("2", ""),
            &[("x-sandbox-name", "dev")],
        )
        .await
    });
    assert_eq!(one.await.unwrap().status, 200);
    assert_eq!(two.await.unwrap().status, 200);
    assert_eq!(app.standin.batch_requests(), 2);
}
