//! Failure paths: per-message failures, whole-request statuses, retries,
//! splits, bisection and answers that do not line up.

use std::sync::Arc;

use aep_standin::{Fault, StandInConfig};

use crate::support::{message, refused_upstream, send_all, TestApp};

fn poison(id: &str) -> String {
    message(id, r#","standin":{"poison":true}"#)
}

#[tokio::test]
async fn partial_failure_answers_each_message_alone() {
    let app = Arc::new(TestApp::start(|c| c.max_batch_messages = 4).await);
    let no_body = r#"{"header":{"imsOrgId":"ORG@AdobeOrg"}}"#.to_owned();
    let wrong_org = r#"{"header":{"imsOrgId":"OTHER"},"body":{}}"#.to_owned();
    let app2 = TestApp::start_with(
        StandInConfig {
            ims_org: Some("ORG@AdobeOrg".into()),
            ..Default::default()
        },
        |c| c.max_batch_messages = 4,
    )
    .await;
    let answers = send_all(
        &app,
        "c",
        vec![message("a", ""), no_body.clone(), message("b", ""), no_body],
    )
    .await;
    let codes: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(codes, vec![200, 400, 200, 400]);
    assert_eq!(answers[1].body["statusCode"], 400);
    assert!(answers[1].body["message"].is_string());
    assert_eq!(
        app.standin.batch_requests(),
        1,
        "a final 400 entry is not resent"
    );
    let wrong = app2.send("c", wrong_org).await;
    assert_eq!(wrong.status, 400, "{}", wrong.text);
}

#[tokio::test]
async fn retryable_entries_are_resent_alone_and_successes_never() {
    let app = Arc::new(TestApp::start(|c| c.max_batch_messages = 3).await);
    let flaky = message(
        "flaky",
        r#","standin":{"status":503,"times":1,"as_string":true}"#,
    );
    let answers = send_all(
        &app,
        "c",
        vec![message("x", ""), flaky.clone(), message("y", "")],
    )
    .await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    let requests = app.standin.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].message_count, 1,
        "only the 503 entry was resent"
    );
    assert_eq!(
        std::str::from_utf8(&requests[1].body).unwrap(),
        format!("{{\"messages\":[{flaky}]}}")
    );
    assert_eq!(app.standin.delivered().len(), 3);
}

#[tokio::test]
async fn an_entry_that_keeps_failing_gets_its_own_status() {
    let app = TestApp::start(|c| c.max_retries = 2).await;
    let always = message("always", r#","standin":{"status":500}"#);
    let answer = app.send("c", always).await;
    assert_eq!(
        answer.status, 500,
        "that entry's status code: {}",
        answer.text
    );
    assert_eq!(app.standin.requests().len(), 3, "first try + max_retries");
}

#[tokio::test]
async fn whole_request_503_is_retried_with_back_off() {
    let app = TestApp::start(|c| c.max_retries = 3).await;
    app.standin.push_faults([
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        Fault::Status {
            status: 503,
            retry_after: None,
        },
    ]);
    let answer = app.send("c", message("m", "")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(app.standin.requests().len(), 4);
    assert_eq!(app.standin.delivered().len(), 1);
    assert_eq!(
        crate::support::metric(&app.metrics().await, "inletd_upstream_retries_total"),
        3.0
    );
}

#[tokio::test]
async fn retries_stop_at_max_retries_with_a_json_5xx() {
    let app = TestApp::start(|c| c.max_retries = 2).await;
    app.standin.push_faults(vec![
        Fault::Status {
            status: 503,
            retry_after: None
        };
        5
    ]);
    let answer = app.send("c", message("m", "")).await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_eq!(answer.body["statusCode"], 503);
    assert!(
        answer.body["message"].as_str().unwrap().contains("503"),
        "{}",
        answer.text
    );
    assert_eq!(app.standin.requests().len(), 3);
    app.standin.push_faults(vec![
        Fault::Status {
            status: 500,
            retry_after: None
        };
        3
    ]);
    let answer = app.send("c", message("n", "")).await;
    assert_eq!(
        answer.status, 502,
        "a 500 after retries is a bad gateway: {}",
        answer.text
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let app = TestApp::start(|c| c.max_retries = 1).await;
    app.standin.push_faults([Fault::Status {
        status: 429,
        retry_after: Some(1),
    }]);
    let started = std::time::Instant::now();
    let answer = app.send("c", message("m", "")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    // A lower bound (the upstream asked for 1 s), not a speed assertion.
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
}

#[tokio::test]
async fn retry_after_past_the_deadline_gives_up() {
    let app = TestApp::start(|c| c.request_timeout = crate::support::ms(2_000)).await;
    app.standin.push_faults([Fault::Status {
        status: 429,
        retry_after: Some(60),
    }]);
    let answer = app.send("c", message("m", "")).await;
    assert_eq!(answer.status, 429, "{}", answer.text);
    assert_eq!(
        app.standin.requests().len(),
        1,
        "no resend after the callers' deadline"
    );
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_with_a_reason() {
    let dead = refused_upstream();
    let app = TestApp::start(|c| {
        c.upstream = dead.url.parse().unwrap();
        c.max_retries = 1;
    })
    .await;
    let answer = app.send("c", message("m", "")).await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn answers_that_do_not_line_up_never_claim_delivery() {
    for fault in [
        Fault::ShortResponses,
        Fault::LongResponses,
        Fault::Garbage,
        Fault::PlainOk,
    ] {
        let app = Arc::new(TestApp::start(|c| c.max_batch_messages = 3).await);
        app.standin.push_faults([fault.clone()]);
        let answers = send_all(
            &app,
            "c",
            vec![message("a", ""), message("b", ""), message("c", "")],
        )
        .await;
        for a in &answers {
            assert_eq!(a.status, 502, "{fault:?}: {}", a.text);
            assert!(a.body.get("xactionId").is_none());
            assert!(
                a.body["message"]
                    .as_str()
                    .unwrap()
                    .contains("not confirmed"),
                "{}",
                a.text
            );
        }
        assert_eq!(app.standin.requests().len(), 1, "{fault:?}: not resent");
    }
}

#[tokio::test]
async fn no_answer_within_request_timeout_is_a_504_that_says_so() {
    let app = TestApp::start(|c| c.request_timeout = crate::support::ms(300)).await;
    app.standin.push_faults([Fault::Hang]);
    let answer = app.send("c", message("m", "")).await;
    assert_eq!(answer.status, 504, "{}", answer.text);
    assert!(answer.body["message"]
        .as_str()
        .unwrap()
        .contains("may still be delivered"));
}

#[tokio::test]
async fn a_413_splits_the_batch_until_it_fits() {
    let standin = StandInConfig {
        max_body_bytes: 2_000,
        ..Default::default()
    };
    let app = Arc::new(
        TestApp::start_with(standin, |c| {
            c.max_batch_messages = 8;
            c.linger = crate::support::ms(1_000);
        })
        .await,
    );
    let pad = format!(r#","pad":"{}""#, "x".repeat(300));
    let bodies: Vec<String> = (0..8).map(|i| message(&format!("s{i}"), &pad)).collect();
    let answers = send_all(&app, "c", bodies).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    assert_eq!(app.standin.delivered().len(), 8, "each delivered once");
    assert_eq!(app.standin.requests()[0].status, 413);
}

#[tokio::test]
async fn a_single_message_over_the_upstream_limit_gets_413() {
    let standin = StandInConfig {
        max_body_bytes: 200,
        ..Default::default()
    };
    let app = TestApp::start_with(standin, |_| {}).await;
    let answer = app
        .send(
            "c",
            message("big", &format!(r#","pad":"{}""#, "x".repeat(300))),
        )
        .await;
    assert_eq!(answer.status, 413, "{}", answer.text);
}

#[tokio::test]
async fn a_whole_batch_400_is_bisected_so_the_innocent_are_delivered() {
    let app = Arc::new(
        TestApp::start(|c| {
            c.max_batch_messages = 8;
            c.linger = crate::support::ms(1_000);
        })
        .await,
    );
    let mut bodies: Vec<String> = (0..8).map(|i| message(&format!("i{i}"), "")).collect();
    bodies[5] = poison("culprit");
    let answers = send_all(&app, "c", bodies).await;
    for (i, a) in answers.iter().enumerate() {
        let want = if i == 5 { 400 } else { 200 };
        assert_eq!(a.status, want, "message {i}: {}", a.text);
    }
    assert_eq!(app.standin.delivered().len(), 7);
}

#[tokio::test]
async fn upstream_401_and_403_reach_only_that_keys_callers() {
    let standin = StandInConfig {
        required_token: Some("good".into()),
        ..Default::default()
    };
    let app = Arc::new(TestApp::start_with(standin, |c| c.linger = crate::support::ms(100)).await);
    let send = |token: Option<&'static str>, id: &'static str| {
        let app = app.clone();
        tokio::spawn(async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            app.post("/collection/c", message(id, ""), &headers).await
        })
    };
    let (good, bad, none) = (
        send(Some("good"), "g"),
        send(Some("bad"), "b"),
        send(None, "n"),
    );
    let (good, bad, none) = (good.await.unwrap(), bad.await.unwrap(), none.await.unwrap());
    assert_eq!(good.status, 200, "{}", good.text);
    assert_eq!(bad.status, 403, "{}", bad.text);
    assert_eq!(none.status, 401, "{}", none.text);
    assert_eq!(bad.body["statusCode"], 403);
    let batch = format!(
        r#"{{"messages":[{},{}]}}"#,
        message("b1", ""),
        message("b2", "")
    );
    let whole = app
        .post(
            "/collection/batch/c",
            batch,
            &[("authorization", "Bearer bad")],
        )
        .await;
    assert_eq!(
        whole.status, 403,
        "a batching client with a bad token gets the whole-request 403: {}",
        whole.text
    );
    assert_eq!(whole.body["statusCode"], 403);
}

#[tokio::test]
async fn never_more_than_max_in_flight_upstream_requests() {
    let standin = StandInConfig {
        latency: std::time::Duration::from_millis(50),
        ..Default::default()
    };
    let app = Arc::new(
        TestApp::start_with(standin, |c| {
            c.max_in_flight = 2;
            c.max_batch_messages = 1;
        })
        .await,
    );
    let bodies = (0..12).map(|i| message(&format!("f{i}"), "")).collect();
    let answers = send_all(&app, "c", bodies).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    assert_eq!(app.standin.batch_requests(), 12);
    let max = app.standin.max_concurrent_requests();
    assert!(max <= 2, "the stand-in saw {max} requests at once");
    assert_eq!(max, 2, "the limit is used, not just respected");
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_kept_alive() {
    let app = TestApp::start(|c| c.linger = crate::support::ms(1)).await;
    for i in 0..20 {
        let answer = app.send("c", message(&format!("k{i}"), "")).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    assert_eq!(app.standin.batch_requests(), 20, "one batch per message");
    let connections = app.standin.connections_accepted();
    assert!(
        connections <= 2,
        "20 sequential batches opened {connections} connections"
    );
}

#[tokio::test]
async fn a_batch_refused_whole_for_every_message_is_not_bisected_to_the_end() {
    let n = 16;
    let app = TestApp::start(|c| {
        c.max_batch_messages = n;
        c.linger = crate::support::ms(1_000);
    })
    .await;
    // One producer request, so the n messages are admitted (and flushed) together.
    let bodies: Vec<String> = (0..n).map(|i| poison(&format!("p{i}"))).collect();
    let body = format!("{{\"messages\":[{}]}}", bodies.join(","));
    let answer = app.post("/collection/batch/c", body, &[]).await;
    assert_eq!(answer.status, 207, "{}", answer.text);
    let responses = answer.body["responses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(responses.len(), n, "{}", answer.text);
    assert!(
        responses.iter().all(|r| r["statusCode"] == 400),
        "{}",
        answer.text
    );
    assert_eq!(
        app.standin.batch_requests(),
        3,
        "the whole batch and its two halves, far below 2n-1 = {}",
        2 * n - 1
    );
}
