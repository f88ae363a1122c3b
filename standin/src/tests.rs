//! End-to-end tests of the stand-in over 127.0.0.1 with a real HTTP client.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Fault, StandIn, StandInConfig, StandInHandle};

pub(crate) struct Running {
    pub base: String,
    pub handle: StandInHandle,
    pub client: reqwest::Client,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

pub(crate) async fn start(config: StandInConfig) -> Running {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let standin = StandIn::bind(addr, config).await.expect("bind");
    let base = format!("http://{}", standin.local_addr());
    let handle = standin.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(standin.run(async move {
        let _ = stopped.await;
    }));
    Running {
        base,
        handle,
        client: reqwest::Client::new(),
        stop,
        task,
    }
}

impl Running {
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.expect("body"))
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("join").expect("serve");
    }
}

pub(crate) fn json_of(text: &str) -> Value {
    serde_json::from_str(text).expect("json answer")
}

fn batch(messages: &[Value]) -> String {
    serde_json::to_string(&json!({ "messages": messages })).expect("serialize")
}

#[tokio::test]
async fn batch_answers_207_by_position_and_records_deliveries() {
    let s = start(StandInConfig::default()).await;
    let body = r#"{"messages":[{"header":{},"body":{"n" : 1}},{"body":{}},{"header":{},"body":{"standin":{"status":503,"times":1}}}]}"#;
    let (status, _, text) = s
        .post("/collection/batch/conn-1?syncValidation=True", body)
        .await;
    assert_eq!(status, 207);
    let answer = json_of(&text);
    let responses = answer["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 3);
    let xaction = responses[0]["xactionId"].as_str().expect("xactionId");
    let batch_id = answer["batchId"].as_str().expect("batchId");
    assert!(!xaction.starts_with(batch_id) && !batch_id.starts_with(&xaction[..4]));
    assert_eq!(responses[1]["statusCode"], 400);
    assert_eq!(responses[2]["statusCode"], 503);
    assert!(answer["inletId"].is_string() && answer["receivedTimeMs"].is_u64());

    let delivered = s.handle.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].message, r#"{"header":{},"body":{"n" : 1}}"#);
    assert_eq!(delivered[0].connection_id, "conn-1");
    assert_eq!(delivered[0].xaction_id, xaction);

    // Resent alone, the directive message now goes through.
    let again = r#"{"messages":[{"header":{},"body":{"standin":{"status":503,"times":1}}}]}"#;
    let (_, _, text) = s.post("/collection/batch/conn-1", again).await;
    assert!(json_of(&text)["responses"][0]["xactionId"].is_string());

    let requests = s.handle.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/collection/batch/conn-1");
    assert_eq!(requests[0].query.as_deref(), Some("syncValidation=True"));
    assert_eq!((requests[0].status, requests[0].message_count), (207, 3));
    assert_eq!(requests[0].body, body.as_bytes());
    assert!(requests[0]
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/json"));
    assert_eq!(s.handle.batch_requests(), 2);
    s.stop().await;
}

#[tokio::test]
async fn whole_request_failures() {
    let config = StandInConfig {
        max_body_bytes: 2_000,
        required_token: Some("secret".into()),
        ..StandInConfig::default()
    };
    let s = start(config).await;
    let ok = batch(&[json!({"header":{},"body":{}})]);
    let (status, _, text) = s.post("/collection/batch/c", ok.clone()).await;
    assert_eq!(
        (status, json_of(&text)["statusCode"].clone()),
        (401, json!(401))
    );

    let send = |body: String, token: &'static str| {
        s.client
            .post(format!("{}/collection/batch/c", s.base))
            .header("authorization", format!("Bearer {token}"))
            .body(body)
            .send()
    };
    let status = |r: reqwest::Result<reqwest::Response>| r.expect("send").status().as_u16();
    assert_eq!(status(send(ok.clone(), "wrong").await), 403);
    assert_eq!(status(send(ok.clone(), "secret").await), 207);
    assert_eq!(status(send("x".repeat(2_001), "secret").await), 413);
    assert_eq!(status(send("{\"messages\":3}".into(), "secret").await), 400);
    let poison = batch(&[
        json!({"header":{},"body":{}}),
        json!({"header":{},"body":{"standin":{"poison":true}}}),
    ]);
    assert_eq!(status(send(poison, "secret").await), 400);

    let delivered = s.handle.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].authorization.as_deref(), Some("Bearer secret"));
    s.stop().await;
}

#[tokio::test]
async fn faults_are_applied_in_order() {
    let s = start(StandInConfig::default()).await;
    s.handle.push_faults([
        Fault::Status {
            status: 503,
            retry_after: Some(1),
        },
        Fault::ShortResponses,
        Fault::LongResponses,
        Fault::Garbage,
        Fault::PlainOk,
        Fault::Delay { ms: 1 },
    ]);
    let two = batch(&[
        json!({"header":{},"body":{"i":1}}),
        json!({"header":{},"body":{"i":2}}),
    ]);
    let (status, headers, text) = s.post("/collection/batch/c", two.clone()).await;
    assert_eq!(
        (status, json_of(&text)["statusCode"].clone()),
        (503, json!(503))
    );
    assert_eq!(headers["retry-after"], "1");

    let (status, _, text) = s.post("/collection/batch/c", two.clone()).await;
    assert_eq!(
        (status, json_of(&text)["responses"].as_array().map(Vec::len)),
        (207, Some(1))
    );
    assert!(s.handle.delivered().is_empty());

    let (status, _, text) = s.post("/collection/batch/c", two.clone()).await;
    assert_eq!(
        (status, json_of(&text)["responses"].as_array().map(Vec::len)),
        (207, Some(3))
    );
    assert_eq!(s.handle.delivered().len(), 2);

    let (status, _, text) = s.post("/collection/batch/c", two.clone()).await;
    assert_eq!(status, 207);
    assert!(serde_json::from_str::<Value>(&text).is_err());

    let (status, _, text) = s.post("/collection/c", r#"{"header":{},"body":{}}"#).await;
    assert_eq!((status, json_of(&text)), (200, json!({"ok": true})));

    let (status, _, text) = s.post("/collection/batch/c", two).await;
    assert_eq!(
        (status, json_of(&text)["responses"].as_array().map(Vec::len)),
        (207, Some(2))
    );
    assert_eq!(s.handle.delivered().len(), 4);

    let stats = s
        .client
        .get(format!("{}/standin/stats", s.base))
        .send()
        .await
        .expect("stats");
    let stats = json_of(&stats.text().await.expect("body"));
    assert_eq!(
        stats,
        json!({"requests": 6, "batch_requests": 5, "delivered": 4})
    );
    s.stop().await;
}

#[tokio::test]
async fn single_endpoint_modes() {
    let config = StandInConfig {
        ims_org: Some("ORG@AdobeOrg".into()),
        ..StandInConfig::default()
    };
    let s = start(config).await;
    let good = r#"{"header":{"imsOrgId":"ORG@AdobeOrg"},"body":{}}"#;
    let (status, _, text) = s.post("/collection/c", good).await;
    let answer = json_of(&text);
    assert_eq!(
        (status, answer["syncValidation"].clone()),
        (200, json!({"skipped": true}))
    );
    assert!(answer["xactionId"].is_string());

    let (status, _, text) = s.post("/collection/c?syncValidation=TRUE", good).await;
    assert_eq!(
        (status, json_of(&text)["syncValidation"].clone()),
        (200, json!({"status": "pass"}))
    );

    let wrong = r#"{"header":{"imsOrgId":"X@AdobeOrg"},"body":{}}"#;
    let (status, _, text) = s.post("/collection/c?syncValidation=true", wrong).await;
    assert_eq!(
        (status, json_of(&text)["statusCode"].clone()),
        (400, json!(400))
    );

    let directed = r#"{"header":{},"body":{"standin":{"status":429,"as_string":true}}}"#;
    let (status, _, text) = s.post("/collection/c", directed).await;
    assert_eq!(
        (status, json_of(&text)["statusCode"].clone()),
        (429, json!("429"))
    );

    let (status, _, text) = s
        .post("/collection/c?x-adobe-flow-id=f", "a,b,c\n1,2,3")
        .await;
    assert_eq!(status, 200);
    assert!(json_of(&text)["xactionId"].is_string());

    let messages: Vec<String> = s
        .handle
        .delivered()
        .into_iter()
        .map(|d| d.message)
        .collect();
    assert_eq!(messages, [good, good, "a,b,c\n1,2,3"]);
    assert_eq!(s.handle.batch_requests(), 0);
    s.stop().await;
}

#[tokio::test]
async fn control_endpoints_and_hang_released_on_shutdown() {
    let s = start(StandInConfig {
        latency: Duration::from_millis(5),
        ..StandInConfig::default()
    })
    .await;
    let (status, _, _) = s.post("/standin/faults", r#"[{"kind":"hang"}]"#).await;
    assert_eq!(status, 200);
    let (status, _, _) = s.post("/standin/faults", r#"{"kind":"hang"}"#).await;
    assert_eq!(status, 400);

    let client = s.client.clone();
    let url = format!("{}/collection/batch/c", s.base);
    let hung = tokio::spawn(async move {
        client
            .post(url)
            .body(batch(&[json!({"header":{},"body":{}})]))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // Wait for the request to arrive rather than sleeping a fixed time.
    while s.handle.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(s.handle.requests()[0].status, 0);

    let (status, _, _) = s.post("/standin/reset", "").await;
    assert_eq!(status, 200);
    assert!(s.handle.requests().is_empty());
    s.stop().await;
    assert_eq!(hung.await.expect("join").expect("answered"), 503);
}

#[tokio::test]
async fn no_record_keeps_only_counters() {
    let s = start(StandInConfig {
        record: false,
        ..StandInConfig::default()
    })
    .await;
    let body = batch(&[
        json!({"header":{},"body":{}}),
        json!({"header":{},"body":{}}),
    ]);
    let (status, _, _) = s.post("/collection/batch/c", body).await;
    assert_eq!(status, 207);
    assert!(s.handle.requests().is_empty() && s.handle.delivered().is_empty());
    assert_eq!(s.handle.batch_requests(), 1);
    let stats = s
        .client
        .get(format!("{}/standin/stats", s.base))
        .send()
        .await;
    let stats = json_of(&stats.expect("stats").text().await.expect("body"));
    assert_eq!(stats["delivered"], 2);
    s.stop().await;
}

#[tokio::test]
async fn answers_name_the_connection_and_org_as_aep_does() {
    let s = start(StandInConfig {
        ims_org: Some("CONF@AdobeOrg".into()),
        ..StandInConfig::default()
    })
    .await;
    let body = batch(&[
        json!({"header":{"imsOrgId":"ORG@AdobeOrg"},"body":{}}),
        json!({"header":{"imsOrgId":"ORG@AdobeOrg"}}),
        json!({"header":{},"body":{"standin":{"status":429}}}),
    ]);
    let (status, _, text) = s.post("/collection/batch/conn-7", body).await;
    assert_eq!(status, 207);
    let answer = json_of(&text);
    assert_eq!(answer["inletId"], "conn-7");
    assert_eq!(
        answer["responses"][1]["message"],
        "inletId: [conn-7] imsOrgId: [ORG@AdobeOrg] Message has unknown xdm format: message has no body"
    );
    assert_eq!(
        answer["responses"][2]["message"],
        "inletId: [conn-7] imsOrgId: [CONF@AdobeOrg] aep-standin directive: status 429"
    );

    let (status, _, text) = s
        .post("/collection/conn-8", r#"{"header":{},"body":{}}"#)
        .await;
    assert_eq!(
        (status, json_of(&text)["inletId"].clone()),
        (200, json!("conn-8"))
    );
    let (status, _, text) = s.post("/collection/conn-8", r#"{"body":{}}"#).await;
    assert_eq!(status, 400);
    assert_eq!(
        json_of(&text)["message"],
        "inletId: [conn-8] imsOrgId: [CONF@AdobeOrg] Message has unknown xdm format: message has no header"
    );
    s.stop().await;
}

fn with_id(id: &str) -> Value {
    json!({"header":{},"body":{"xdmEntity":{"_id": id}}})
}

#[tokio::test]
async fn cut_and_slow_bodies_deliver_then_spoil_the_answer() {
    let s = start(StandInConfig::default()).await;
    s.handle
        .push_faults([Fault::CutBody, Fault::SlowBody { ms: 1 }]);
    let url = format!("{}/collection/batch/c", s.base);

    let response = s
        .client
        .post(&url)
        .body(batch(&[with_id("a"), with_id("b")]))
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(response.status(), 207);
    let declared = response.content_length().expect("declared length");
    assert!(declared > 0);
    assert!(response.text().await.is_err(), "the body is cut");

    let mut response = s
        .client
        .post(&url)
        .body(batch(&[with_id("c")]))
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(response.status(), 207);
    let first = response.chunk().await.expect("chunk").expect("some body");
    assert_eq!(first.len(), 1, "trickled byte by byte");
    let mut rest = first.to_vec();
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        rest.extend_from_slice(&chunk);
    }
    let answer: Value = serde_json::from_slice(&rest).expect("whole answer in the end");
    let xaction = answer["responses"][0]["xactionId"].clone();

    let by_id = s.handle.deliveries_by_id();
    assert_eq!(by_id["a"].len(), 1);
    assert_eq!(by_id["b"].len(), 1);
    assert_eq!(json!(by_id["c"]), json!([xaction]));
    s.stop().await;
}

#[tokio::test]
async fn redirect_points_to_a_recording_target_and_delivers_nothing() {
    let s = start(StandInConfig::default()).await;
    s.handle.push_faults([Fault::Redirect, Fault::Redirect]);
    let body = batch(&[with_id("r1")]);
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = no_follow
        .post(format!("{}/collection/batch/c?x=1", s.base))
        .body(body.clone())
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 307);
    let location = response.headers()["location"].to_str().expect("ascii");
    assert!(
        location.starts_with("http://127.0.0.1:") && location.ends_with("/collection/batch/c?x=1")
    );
    assert!(!location.starts_with(&s.base));
    assert!(s.handle.redirected().is_empty());

    // A client that follows it lands on the target, which records it.
    let response = s
        .client
        .post(format!("{}/collection/batch/c", s.base))
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 207);
    let redirected = s.handle.redirected();
    assert_eq!(redirected.len(), 1);
    assert_eq!(redirected[0].path, "/collection/batch/c");
    assert_eq!(redirected[0].message_count, 1);
    assert!(s.handle.delivered().is_empty() && s.handle.deliveries_by_id().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn reset_mid_request_closes_without_an_answer() {
    let s = start(StandInConfig::default()).await;
    s.handle.push_faults([Fault::ResetMidRequest]);
    let big = batch(
        &(0..2000)
            .map(|i| with_id(&i.to_string()))
            .collect::<Vec<_>>(),
    );
    let result = s
        .client
        .post(format!("{}/collection/batch/c", s.base))
        .body(big)
        .send()
        .await;
    assert!(result.is_err(), "no answer: {result:?}");
    assert!(s.handle.delivered().is_empty());
    let requests = s.handle.requests();
    assert_eq!((requests.len(), requests[0].status), (1, 0));

    // The stand-in itself carries on.
    let (status, _, _) = s.post("/collection/batch/c", batch(&[with_id("ok")])).await;
    assert_eq!(status, 207);
    assert_eq!(s.handle.deliveries_by_id().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn odd_codes_deliver_nothing() {
    let s = start(StandInConfig::default()).await;
    s.handle.push_faults([Fault::OddCodes]);
    let messages: Vec<Value> = (0..6).map(|i| with_id(&format!("o{i}"))).collect();
    let (status, _, text) = s.post("/collection/batch/c", batch(&messages)).await;
    assert_eq!(status, 207);
    let responses = json_of(&text)["responses"].clone();
    let codes: Vec<Value> = (0..6).map(|i| responses[i]["statusCode"].clone()).collect();
    assert_eq!(
        codes,
        [
            json!("abc"),
            json!(400.0),
            json!(0),
            json!(199),
            json!(302),
            json!("n/a")
        ]
    );
    assert!(responses[5]["xactionId"].is_string());
    assert!(s.handle.delivered().is_empty());
    s.stop().await;
}
