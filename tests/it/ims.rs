//! inletd holding the IMS credentials, end to end against the stand-in's token
//! endpoint and its check of the tokens it issued: one fetch for a crowd, the
//! form on the wire, refresh ahead of expiry, one refresh and one resend after
//! a 401, no storm for a token that keeps being refused, IMS down and
//! recovering, a wrong secret, and producers' own tokens kept apart.

use std::sync::Arc;
use std::time::Duration;

use aep_standin::{StandIn, StandInConfig, StandInIms};
use inletd::config::ImsCredentials;
use inletd::ims::ImsConfig;
use inletd::Config;

use crate::support::{
    eventually, message, metric, send_all, spooled_in, test_config, TestApp, ASYNC,
};

pub const CLIENT: &str = "inletd-client";
/// Every character that breaks a form body written by hand.
pub const SECRET: &str = "p8e-s3cr&t=+ x%y";
pub const ORG: &str = "ORG1@AdobeOrg";
const SCOPES: &str = "openid,AdobeID,read_organizations";

pub fn ims_standin(expires_in: Duration) -> StandInConfig {
    StandInConfig {
        ims: Some(StandInIms {
            client_id: CLIENT.into(),
            client_secret: SECRET.into(),
            expires_in,
            require_token: true,
        }),
        ..StandInConfig::default()
    }
}

/// Gives `config` IMS credentials with `secret`, asking the stand-in at its upstream.
fn with_ims(config: &mut Config, secret: &str) {
    let url = format!("{}{}", config.upstream.as_str(), aep_standin::TOKEN_PATH);
    let ims = ImsConfig::new(CLIENT, secret.into(), ORG, SCOPES, Some(&url)).unwrap();
    config.ims = ImsCredentials(Some(ims));
}

async fn start(standin: StandInConfig, secret: &'static str) -> TestApp {
    TestApp::start_with(standin, |c| with_ims(c, secret)).await
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn readyz(app: &TestApp) -> (u16, String) {
    let url = format!("http://{}/readyz", app.admin);
    let answer = app.client.get(url).send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

#[tokio::test]
async fn a_crowd_of_managed_producers_causes_one_token_request() {
    let app = Arc::new(start(ims_standin(Duration::from_secs(86_399)), SECRET).await);
    let bodies = (0..50).map(|i| message(&format!("m{i}"), "")).collect();
    for answer in send_all(&app, "c", bodies).await {
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    assert_eq!(
        app.standin.ims().requests(),
        1,
        "one token request for everyone"
    );
    for request in app.standin.requests() {
        let headers = &request.headers;
        assert_eq!(
            header(headers, "authorization"),
            Some("Bearer standin-ims-token-1")
        );
        assert_eq!(header(headers, "x-gw-ims-org-id"), Some(ORG));
        assert_eq!(header(headers, "x-api-key"), Some(CLIENT));
    }
    assert_eq!(app.admin_status("/readyz").await, 200);
}

#[tokio::test]
async fn the_token_request_is_a_properly_encoded_form() {
    let app = start(ims_standin(Duration::from_secs(86_399)), SECRET).await;
    assert_eq!(app.send("c", message("m", "")).await.status, 200);
    let seen = app.standin.ims().seen();
    let request = &seen[0];
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let field = |name: &str| {
        request
            .fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("grant_type"), Some("client_credentials"));
    assert_eq!(field("client_id"), Some(CLIENT));
    assert_eq!(
        field("client_secret"),
        Some(SECRET),
        "the secret arrives whole"
    );
    assert_eq!(field("scope"), Some(SCOPES));
    assert!(
        !request.raw_body.contains(SECRET),
        "sent encoded: {}",
        request.raw_body
    );
}

#[tokio::test]
async fn a_short_lived_token_is_replaced_before_it_expires() {
    let app = start(ims_standin(Duration::from_secs(3)), SECRET).await;
    assert_eq!(app.send("c", message("before", "")).await.status, 200);
    eventually("a second token is fetched ahead of expiry", || async {
        app.standin.ims().requests() >= 2
    })
    .await;
    // The stand-in refuses expired tokens: this one went with the new token.
    let after = app.send("c", message("after", "")).await;
    assert_eq!(after.status, 200, "{}", after.text);
    let last = app.standin.requests().pop().unwrap();
    let first_token = Some("Bearer standin-ims-token-1");
    assert_ne!(header(&last.headers, "authorization"), first_token);
}

#[tokio::test]
async fn an_upstream_401_causes_one_refresh_shared_and_one_resend() {
    let app = Arc::new(
        TestApp::start_with(ims_standin(Duration::from_secs(86_399)), |c| {
            with_ims(c, SECRET);
            c.linger = crate::support::ms(100);
        })
        .await,
    );
    assert_eq!(app.send("c", message("first", "")).await.status, 200);
    app.standin.ims().revoke_issued();
    let bodies: Vec<String> = (0..20).map(|i| message(&format!("m{i}"), "")).collect();
    let (c1, c2) = (bodies[..10].to_vec(), bodies[10..].to_vec());
    let (a1, a2) = (app.clone(), app.clone());
    let one = tokio::spawn(async move { send_all(&a1, "c1", c1).await });
    let two = tokio::spawn(async move { send_all(&a2, "c2", c2).await });
    for answer in one.await.unwrap().into_iter().chain(two.await.unwrap()) {
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    assert_eq!(
        app.standin.ims().requests(),
        2,
        "one refresh for every batch that met the 401"
    );
    let requests = app.standin.requests();
    let with = |token: &str, status: u16| {
        requests
            .iter()
            .filter(|r| r.status == status)
            .filter(|r| header(&r.headers, "authorization") == Some(token))
            .count()
    };
    let refused = requests.iter().filter(|r| r.status == 401).count();
    assert!(refused >= 1, "the old token met the 401");
    assert_eq!(
        with("Bearer standin-ims-token-1", 401),
        refused,
        "only the old token was refused"
    );
    assert!(
        with("Bearer standin-ims-token-2", 207) >= refused,
        "each refused request went again with the new token"
    );
    let mut delivered: Vec<String> = app
        .standin
        .delivered()
        .into_iter()
        .map(|d| d.message)
        .collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), 21, "every message delivered");
    assert_eq!(app.standin.delivered().len(), 21, "and only once");
}

#[tokio::test]
async fn a_token_that_keeps_being_refused_gives_401_without_a_storm() {
    let app = start(ims_standin(Duration::from_secs(86_399)), SECRET).await;
    app.standin.ims().reject_all(true);
    for i in 0..6 {
        let answer = app.send("c", message(&format!("m{i}"), "")).await;
        assert_eq!(answer.status, 401, "{}", answer.text);
    }
    let fetches = app.standin.ims().requests();
    assert!(fetches <= 2, "{fetches} token requests: a refresh storm");
    // The first message: refused, refreshed, resent, refused; then one request each.
    assert_eq!(app.standin.requests().len(), 2 + 5);
}

/// A stand-in whose token endpoint answers 503 until `fail_next(0, 503)`.
async fn standin_with_ims_down() -> StandIn {
    let standin = StandIn::bind(
        "127.0.0.1:0".parse().unwrap(),
        ims_standin(Duration::from_secs(86_399)),
    )
    .await
    .unwrap();
    standin.handle().ims().fail_next(usize::MAX, 503);
    standin
}

#[tokio::test]
async fn ims_down_at_start_gives_503_saying_why_then_recovers_by_itself() {
    let standin = standin_with_ims_down().await;
    let mut config = test_config(standin.local_addr());
    with_ims(&mut config, SECRET);
    let app = TestApp::start_on(standin, config).await;

    let (status, reason) = readyz(&app).await;
    assert_eq!(status, 503, "{reason}");
    let answer = app.send("c", message("m1", "")).await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_eq!(answer.headers["retry-after"], "5", "{:?}", answer.headers);
    let text = answer.body["message"].as_str().unwrap_or_default();
    assert!(text.contains("could not be obtained"), "{text}");
    assert!(text.contains("unavailable"), "{text}");
    assert!(app.standin.requests().is_empty(), "nothing went upstream");
    let (_, reason) = readyz(&app).await;
    assert!(reason.contains("unavailable"), "{reason}");
    let metrics = app.metrics().await;
    assert!(
        metric(
            &metrics,
            r#"inletd_ims_token_fetches_total{result="unavailable"}"#
        ) >= 1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "inletd_ims_token_refresh_failing"), 1.0);

    app.standin.ims().fail_next(0, 503);
    eventually("/readyz turns 200 once IMS answers", || async {
        readyz(&app).await.0 == 200
    })
    .await;
    let answer = app.send("c", message("m2", "")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "inletd_ims_token_refresh_failing"), 0.0);
    assert!(metric(&metrics, "inletd_ims_token_expiry_seconds") > 80_000.0);
}

#[tokio::test]
async fn a_wrong_secret_gives_401_saying_why_and_is_not_asked_again_at_once() {
    let app = start(ims_standin(Duration::from_secs(86_399)), "p8e-wrong&secret").await;
    for i in 0..4 {
        let answer = app.send("c", message(&format!("m{i}"), "")).await;
        assert_eq!(answer.status, 401, "{}", answer.text);
        let text = answer.body["message"].as_str().unwrap_or_default();
        assert!(text.contains("refused the credentials"), "{text}");
        assert!(text.contains("invalid_client"), "{text}");
        assert!(!answer.text.contains("p8e-wrong"), "{}", answer.text);
    }
    assert_eq!(app.standin.ims().requests(), 1, "no tight loop");
    assert!(app.standin.requests().is_empty(), "nothing went upstream");
    let (status, reason) = readyz(&app).await;
    assert_eq!(status, 503);
    assert!(reason.contains("refused the credentials"), "{reason}");
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"inletd_ims_token_fetches_total{result="refused"}"#
        ),
        1.0
    );
    assert!(!metrics.contains("p8e-wrong"));
}

#[tokio::test]
async fn a_producers_own_authorization_is_kept_and_never_shares_a_batch() {
    let mut standin = ims_standin(Duration::from_secs(86_399));
    if let Some(ims) = &mut standin.ims {
        ims.require_token = false;
    }
    let app = Arc::new(
        TestApp::start_with(standin, |c| {
            with_ims(c, SECRET);
            c.linger = crate::support::ms(200);
        })
        .await,
    );
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let body = message(&format!("m{i}"), "");
            let own = i % 2 == 0;
            let headers: &[(&str, &str)] = if own {
                &[
                    ("authorization", "Bearer producer-own"),
                    ("x-api-key", "their-key"),
                ]
            } else {
                &[]
            };
            let answer = app.post("/collection/c", body.clone(), headers).await;
            assert_eq!(answer.status, 200, "{}", answer.text);
            (body, own)
        }));
    }
    let mut own = std::collections::HashMap::new();
    for task in tasks {
        let (body, is_own) = task.await.unwrap();
        own.insert(body, is_own);
    }
    for d in app.standin.delivered() {
        let expected = if own[&d.message] {
            "Bearer producer-own"
        } else {
            "Bearer standin-ims-token-1"
        };
        assert_eq!(d.authorization.as_deref(), Some(expected));
    }
    for r in app.standin.requests() {
        let own = header(&r.headers, "authorization") == Some("Bearer producer-own");
        let key = if own { "their-key" } else { CLIENT };
        assert_eq!(header(&r.headers, "x-api-key"), Some(key));
        let orgs = r
            .headers
            .iter()
            .filter(|(k, _)| k == "x-gw-ims-org-id")
            .count();
        assert_eq!(
            orgs,
            usize::from(!own),
            "inletd's org only with its own token"
        );
    }
}

#[tokio::test]
async fn a_forwarded_request_without_authorization_goes_with_the_token() {
    let app = start(ims_standin(Duration::from_secs(86_399)), SECRET).await;
    let answer = app
        .post("/collection/c?syncValidation=true", message("m", ""), &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let request = app.standin.requests().pop().unwrap();
    assert_eq!(request.query.as_deref(), Some("syncValidation=true"));
    assert_eq!(
        header(&request.headers, "authorization"),
        Some("Bearer standin-ims-token-1")
    );
}

/// A fire-and-forget message in the spool is not the one at fault when IMS
/// is down: it waits (capped back-off, `spool_max_age`) instead of going to
/// the dead-letter file, and is delivered once a token can be had.
#[tokio::test]
async fn spooled_managed_messages_wait_out_an_ims_outage() {
    let dir = tempfile::tempdir().unwrap();
    let standin = standin_with_ims_down().await;
    let mut config = test_config(standin.local_addr());
    with_ims(&mut config, SECRET);
    spooled_in(dir.path())(&mut config);
    let app = TestApp::start_on(standin, config).await;

    let answer = app
        .post("/collection/c", message("outage-1", ""), &[ASYNC])
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert_eq!(answer.body["durable"], true);
    eventually(
        "the spooled message is tried again, not given up",
        || async { metric(&app.metrics().await, "inletd_upstream_retries_total") >= 2.0 },
    )
    .await;
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "inletd_dead_letters_total"),
        0.0,
        "{metrics}"
    );
    assert!(!dir.path().join("dead-letter.jsonl").exists());
    assert!(app.standin.requests().is_empty(), "nothing went upstream");

    app.standin.ims().fail_next(0, 503);
    eventually("delivered once IMS answers", || async {
        app.standin.deliveries_by_id().contains_key("outage-1")
    })
    .await;
    app.wait_for_metric("inletd_spool_messages", 0.0).await;
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "inletd_dead_letters_total"),
        0.0,
        "{metrics}"
    );
}
