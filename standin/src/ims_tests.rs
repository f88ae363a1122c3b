//! The IMS token endpoint and the ingestion check of its tokens, over 127.0.0.1.

use std::time::Duration;

use serde_json::json;

use crate::tests::{json_of, start, Running};
use crate::{StandInConfig, StandInIms};

const MESSAGE: &str = r#"{"header":{},"body":{}}"#;

async fn token(s: &Running, secret: &str) -> (u16, serde_json::Value) {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "c1"),
        ("client_secret", secret),
        ("scope", "openid,AdobeID"),
    ];
    let response = s
        .client
        .post(format!("{}/ims/token/v3", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).expect("form"))
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    // A fault's answer is plain text.
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or_default())
}

async fn ingest(s: &Running, bearer: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = s
        .client
        .post(format!("{}/collection/c", s.base))
        .header("content-type", "application/json")
        .body(MESSAGE);
    if let Some(bearer) = bearer {
        request = request.header("authorization", format!("Bearer {bearer}"));
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    (status, json_of(&response.text().await.expect("body")))
}

#[tokio::test]
async fn issues_tokens_to_its_client_and_ingestion_takes_only_those() {
    let s = start(StandInConfig {
        ims: Some(StandInIms {
            client_id: "c1".into(),
            client_secret: "s&=+ 1".into(),
            expires_in: Duration::from_secs(60),
            require_token: true,
        }),
        ..StandInConfig::default()
    })
    .await;
    let (status, body) = ingest(&s, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["statusCode"], 401);

    let (status, refused) = token(&s, "wrong").await;
    assert_eq!((status, &refused["error"]), (401, &json!("invalid_client")));

    let (status, granted) = token(&s, "s&=+ 1").await;
    assert_eq!(status, 200, "{granted}");
    assert_eq!(granted["expires_in"], 60);
    let bearer = granted["access_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    assert_eq!(ingest(&s, Some(&bearer)).await.0, 200);
    assert_eq!(ingest(&s, Some("made-up")).await.0, 401);

    s.handle.ims().revoke_issued();
    assert_eq!(ingest(&s, Some(&bearer)).await.0, 401, "revoked");
    let fresh = token(&s, "s&=+ 1").await.1["access_token"].clone();
    assert_eq!(ingest(&s, fresh.as_str()).await.0, 200);

    let (status, _, _) = s.post("/standin/ims", r#"{"fail_next":1}"#).await;
    assert_eq!(status, 200);
    assert_eq!(token(&s, "s&=+ 1").await.0, 503);
    assert_eq!(token(&s, "s&=+ 1").await.0, 200);
    assert_eq!(s.handle.ims().requests(), 5);
    let fields = &s.handle.ims().seen()[1].fields;
    assert!(fields.contains(&("client_secret".into(), "s&=+ 1".into())));
    s.stop().await;
}

#[tokio::test]
async fn without_ims_settings_there_is_no_token_endpoint() {
    let s = start(StandInConfig::default()).await;
    assert_eq!(token(&s, "x").await.0, 404);
    assert_eq!(ingest(&s, None).await.0, 200, "no token required");
    s.stop().await;
}
