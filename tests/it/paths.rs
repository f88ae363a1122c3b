//! The connection id is one path segment: producer input never reaches
//! another upstream path, on the batched routes or the one-to-one ones.

use crate::support::{message, TestApp};

/// Paths that once reached `/stats`, `/collection/admin?a=b` and
/// `/collection/batch/a?b=c` upstream, with the producer's token.
const ESCAPES: [&str; 5] = [
    "/collection/..%2F..%2Fstats",
    "/collection/x%2F..%2F..%2Fadmin%3Fa=b",
    "/collection/a%3Fb=c",
    "/collection/batch/..%2F..%2Fstats",
    "/collection/batch/a%3Fb=c",
];

#[tokio::test]
async fn ids_that_leave_their_segment_get_400_and_reach_nothing() {
    let app = TestApp::start(|c| c.linger = crate::support::ms(1)).await;
    let auth = [("authorization", "Bearer producer-token")];
    for path in ESCAPES {
        let body = if path.contains("/batch/") {
            format!(r#"{{"messages":[{}]}}"#, message("m", ""))
        } else {
            message("m", "")
        };
        for suffix in ["", "?syncValidation=true", "?x-adobe-flow-id=f"] {
            let a = app
                .post(&format!("{path}{suffix}"), body.clone(), &auth)
                .await;
            assert_eq!(a.status, 400, "{path}{suffix}: {}", a.text);
            assert_eq!(a.body["statusCode"], 400);
            assert!(
                a.body["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("connection id"),
                "{}",
                a.text
            );
        }
        let raw = app
            .post(path, "raw,line", &[("x-adobe-flow-id", "f"), auth[0]])
            .await;
        assert_eq!(raw.status, 400, "{path}: {}", raw.text);
    }
    assert_eq!(
        app.standin.connections_accepted(),
        0,
        "the stand-in saw no request at all"
    );
    // A well-formed id still goes through, on both routes.
    assert_eq!(app.send("c-1.a_b~", message("ok", "")).await.status, 200);
    let forwarded = app
        .post("/collection/c-1?syncValidation=true", message("v", ""), &[])
        .await;
    assert_eq!(forwarded.status, 200, "{}", forwarded.text);
    let paths: Vec<String> = app.standin.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/collection/batch/c-1.a_b~", "/collection/c-1"]);
}

#[tokio::test]
async fn forwarding_drops_headers_named_in_connection() {
    let app = TestApp::start(|_| {}).await;
    let a = app
        .post(
            "/collection/c?syncValidation=true",
            message("v", ""),
            &[
                ("connection", "x-hop-secret"),
                ("x-hop-secret", "for inletd only"),
                ("x-kept", "1"),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let r = &app.standin.requests()[0];
    assert!(
        r.headers.iter().any(|(k, _)| k == "x-kept"),
        "{:?}",
        r.headers
    );
    assert!(
        !r.headers.iter().any(|(k, _)| k == "x-hop-secret"),
        "{:?}",
        r.headers
    );
}
